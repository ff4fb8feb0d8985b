//! The typed calls of each world on a loaded [`Plugin`]: what the host asks a scorer, an
//! authorizer and an adapter, and the bounds it puts on their answers. The machinery they share
//! (instances, deadlines, failure classes) is in the parent module.

use super::*;

impl Plugin {
    // -----------------------------------------------------------------------------------------
    // World `scorer`

    /// Score one path with the operator's `weights`. The plugin refusing (e.g. an unknown
    /// weight) is [`CallFailure::Rejected`]; a non-finite value is [`CallFailure::InvalidAnswer`].
    pub fn score(
        &self,
        metrics: &scoring::PathMetrics,
        weights: &[types::NamedValue],
    ) -> Result<scoring::Preference, CallError> {
        let preference = self.call("score", |store, exports| match exports {
            Exports::Scorer(s) => Ok(s
                .skybridge_plugin_scoring()
                .call_score(store, metrics, weights)?
                .map_err(CallFailure::Rejected)),
            _ => Ok(Err(self.wrong_world(World::Scorer))),
        })?;
        if !preference.value.is_finite() {
            return Err(self.error(
                "score",
                CallFailure::InvalidAnswer(format!("preference value {} is not finite", preference.value)),
            ));
        }
        self.short_text("score", "explanation", &preference.explanation)?;
        Ok(preference)
    }

    /// An explanation or reason a plugin answers goes into records (decisions, the audit) and
    /// logs: more than [`MAX_ANSWER_TEXT`] bytes is an invalid answer, not a record's bloat.
    fn short_text(&self, call: &'static str, what: &str, text: &str) -> Result<(), CallError> {
        if text.len() > MAX_ANSWER_TEXT {
            return Err(self.error(
                call,
                CallFailure::InvalidAnswer(format!(
                    "the {what} is {} bytes long, more than {MAX_ANSWER_TEXT}",
                    text.len()
                )),
            ));
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // World `authorizer`

    /// Decide an authorization request.
    pub fn authorize(
        &self,
        request: &authorization::AuthorizationRequest,
    ) -> Result<authorization::Decision, CallError> {
        let decision = self.call("authorize", |store, exports| match exports {
            Exports::Authorizer(a, _) => {
                Ok(Ok(a.skybridge_plugin_authorization().call_authorize(store, request)?))
            }
            _ => Ok(Err(self.wrong_world(World::Authorizer))),
        })?;
        let (authorization::Decision::Grant(why) | authorization::Decision::Refuse(why)) = &decision;
        self.short_text("authorize", "reason", why)?;
        Ok(decision)
    }

    /// Decide an authorization request, or learn that it is not decided yet: through
    /// `deferring.decide` when the authorizer exports it, else `authorize` (grant or refuse).
    pub fn decide(&self, request: &authorization::AuthorizationRequest) -> Result<Consent, CallError> {
        let consent = self.call("decide", |store, exports| match exports {
            Exports::Authorizer(_, Some(decide)) => Ok(Ok(decide.call(&mut *store, (request.clone(),))?.0)),
            Exports::Authorizer(a, None) => {
                Ok(Ok(match a.skybridge_plugin_authorization().call_authorize(store, request)? {
                    authorization::Decision::Grant(why) => Consent::Grant(why),
                    authorization::Decision::Refuse(why) => Consent::Refuse(why),
                }))
            }
            _ => Ok(Err(self.wrong_world(World::Authorizer))),
        })?;
        let why = match &consent {
            Consent::Grant(why) | Consent::Refuse(why) => why,
            Consent::Pending(p) => &p.reason,
        };
        self.short_text("decide", "reason", why)?;
        Ok(consent)
    }

    // -----------------------------------------------------------------------------------------
    // World `adapter`

    /// Turn a cloud's native service description into service records.
    pub fn parse_service_info(
        &self,
        document: &[u8],
        content_type: &str,
    ) -> Result<Vec<adapting::ServiceRecord>, CallError> {
        self.call("parse-service-info", |store, exports| match exports {
            Exports::Adapter(a, _) => Ok(a
                .skybridge_plugin_adapting()
                .call_parse_service_info(store, document, content_type)?
                .map_err(CallFailure::Rejected)),
            _ => Ok(Err(self.wrong_world(World::Adapter))),
        })
    }

    /// The capabilities a service offers.
    pub fn select_capabilities(
        &self,
        service: &adapting::ServiceRecord,
    ) -> Result<Vec<types::Capability>, CallError> {
        self.call("select-capabilities", |store, exports| match exports {
            Exports::Adapter(a, _) => {
                Ok(Ok(a.skybridge_plugin_adapting().call_select_capabilities(store, service)?))
            }
            _ => Ok(Err(self.wrong_world(World::Adapter))),
        })
    }

    /// Rewrite a proxied request for the target session.
    pub fn rewrite_request(
        &self,
        head: &adapting::RequestHead,
        credentials: &adapting::TargetCredentials,
    ) -> Result<adapting::RequestHead, CallError> {
        let rewritten = self.call("rewrite-request", |store, exports| match exports {
            Exports::Adapter(a, _) => Ok(a
                .skybridge_plugin_adapting()
                .call_rewrite_request(store, head, credentials)?
                .map_err(CallFailure::Rejected)),
            _ => Ok(Err(self.wrong_world(World::Adapter))),
        });
        let rewritten = self.short_rejection("rewrite-request", rewritten)?;
        let size = rewritten.path.len()
            + rewritten.query.len()
            + rewritten.headers.iter().map(|p| p.key.len() + p.value.len() + 4).sum::<usize>();
        if size > MAX_REWRITTEN_HEAD || rewritten.headers.len() > MAX_REWRITTEN_HEADERS {
            let why = format!(
                "the rewritten request head is {size} bytes in {} headers, more than {MAX_REWRITTEN_HEAD} bytes or {MAX_REWRITTEN_HEADERS} headers",
                rewritten.headers.len()
            );
            return Err(self.error("rewrite-request", CallFailure::InvalidAnswer(why)));
        }
        Ok(rewritten)
    }

    /// A rejection's reason goes to the client: one longer than [`MAX_ANSWER_TEXT`] is an
    /// invalid answer instead.
    fn short_rejection<T>(&self, call: &'static str, answer: Result<T, CallError>) -> Result<T, CallError> {
        if let Err(CallError { cause: CallFailure::Rejected(reason), .. }) = &answer {
            self.short_text(call, "rejection", reason)?;
        }
        answer
    }

    /// Whether this adapter authenticates clients in its cloud's native scheme.
    pub fn authenticates_clients(&self) -> bool {
        matches!(&self.pre, WorldPre::Adapter(_, extras) if extras.authenticating.is_some())
    }

    /// The Skybridge account a client's request claims, read from its native authentication.
    /// `None` when the request carries none the adapter understands, or the adapter does not
    /// authenticate clients at all.
    pub fn claimed_account(&self, head: &adapting::RequestHead) -> Result<Option<String>, CallError> {
        let claimed = self.call("claimed-account", |store, exports| match exports {
            Exports::Adapter(_, funcs) => match &funcs.authenticating {
                Some(auth) => Ok(Ok(auth.claimed_account.call(&mut *store, (head.clone(),))?.0)),
                None => Ok(Ok(None)),
            },
            _ => Ok(Err(self.wrong_world(World::Adapter))),
        })?;
        if let Some(account) = &claimed
            && account.len() > MAX_CLAIMED_ACCOUNT
        {
            let why = format!(
                "the claimed account is {} bytes long, more than {MAX_CLAIMED_ACCOUNT}",
                account.len()
            );
            return Err(self.error("claimed-account", CallFailure::InvalidAnswer(why)));
        }
        Ok(claimed)
    }

    /// Check a client's native authentication with its account's secret. A failed check is
    /// [`CallFailure::Rejected`] with the adapter's reason.
    pub fn verify_client(&self, head: &adapting::RequestHead, account_secret: &str) -> Result<(), CallError> {
        let verified = self.call("verify-client", |store, exports| match exports {
            Exports::Adapter(_, funcs) => match &funcs.authenticating {
                Some(auth) => Ok(auth
                    .verify_client
                    .call(&mut *store, (head.clone(), account_secret.to_owned()))?
                    .0
                    .map_err(CallFailure::Rejected)),
                None => Ok(Err(CallFailure::Rejected("this adapter does not authenticate clients".into()))),
            },
            _ => Ok(Err(self.wrong_world(World::Adapter))),
        });
        self.short_rejection("verify-client", verified)
    }

    /// The token request for `credentials`, if this adapter exchanges tokens and these
    /// credentials need one.
    pub fn request_token(
        &self,
        credentials: &adapting::TargetCredentials,
    ) -> Result<Option<TokenRequest>, CallError> {
        self.call("request-token", |store, exports| match exports {
            Exports::Adapter(_, funcs) => match &funcs.token_exchange {
                Some(t) => Ok(Ok(t.request_token.call(&mut *store, (credentials.clone(),))?.0)),
                None => Ok(Ok(None)),
            },
            _ => Ok(Err(self.wrong_world(World::Adapter))),
        })
    }

    /// Read a token from the identity service's answer. The plugin refusing the answer is
    /// [`CallFailure::Rejected`].
    pub fn read_token(&self, status: u16, headers: &[types::Pair], body: &[u8]) -> Result<Token, CallError> {
        let token = self.call("read-token", |store, exports| match exports {
            Exports::Adapter(_, funcs) => match &funcs.token_exchange {
                Some(t) => Ok(t
                    .read_token
                    .call(&mut *store, (status, headers.to_vec(), body.to_vec()))?
                    .0
                    .map_err(CallFailure::Rejected)),
                None => Ok(Err(CallFailure::Rejected("this adapter does not exchange tokens".into()))),
            },
            _ => Ok(Err(self.wrong_world(World::Adapter))),
        });
        let token = self.short_rejection("read-token", token)?;
        if token.value.len() > MAX_TOKEN {
            let why = format!("the token is {} bytes long, more than {MAX_TOKEN}", token.value.len());
            return Err(self.error("read-token", CallFailure::InvalidAnswer(why)));
        }
        Ok(token)
    }

    /// Whether this adapter discovers its cloud's services.
    pub fn discovers(&self) -> bool {
        matches!(&self.pre, WorldPre::Adapter(_, extras) if extras.discovering.is_some())
    }

    /// Begin discovery with the site's `context`. Runs under the discovery limits.
    pub fn start_discovery(&self, context: &[types::Pair]) -> Result<DiscoveryStep, CallError> {
        self.discovery_call("start-discovery", |store, funcs| {
            Ok(funcs.start.call(&mut *store, (context.to_vec(),))?.0.map_err(CallFailure::Rejected))
        })
    }

    /// Hand the cloud's `response` and the adapter's `cursor` back; the next step.
    pub fn continue_discovery(
        &self,
        context: &[types::Pair],
        cursor: &str,
        response: CloudResponse,
    ) -> Result<DiscoveryStep, CallError> {
        self.discovery_call("continue-discovery", |store, funcs| {
            Ok(funcs
                .next
                .call(&mut *store, (context.to_vec(), cursor.to_owned(), response))?
                .0
                .map_err(CallFailure::Rejected))
        })
    }

    /// A discovery call: on a fresh instance under the discovery limits (a listing answer may
    /// be megabytes; the instance is dropped afterwards so its grown memory never joins the
    /// warm pool).
    fn discovery_call<R>(
        &self,
        call: &'static str,
        f: impl FnOnce(&mut Store<Sandbox>, &Discovering) -> wasmtime::Result<Result<R, CallFailure>>,
    ) -> Result<R, CallError> {
        let _span = tracing::debug_span!("plugin_call", plugin = %self.name, export = call).entered();
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let limits = self.limits.for_discovery();
        let mut warm = self.instantiate_with(&limits, self.discovery_ticks)?;
        let Exports::Adapter(_, funcs) = &warm.exports else {
            return Err(self.error(call, self.wrong_world(World::Adapter)));
        };
        let Some(funcs) = &funcs.discovering else {
            return Err(
                self.error(call, CallFailure::Rejected("this adapter does not discover services".into()))
            );
        };
        let store = &mut warm.store;
        store.data_mut().begin(call);
        store.set_epoch_deadline(self.discovery_ticks);
        let outcome = f(store, funcs);
        store.data_mut().end();
        let result = match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(failure)) => {
                if matches!(failure, CallFailure::Rejected(_)) {
                    self.stats.rejections.fetch_add(1, Ordering::Relaxed);
                }
                Err(self.error(call, failure))
            }
            Err(e) => {
                self.stats.faults.fetch_add(1, Ordering::Relaxed);
                let failure = match self.classify(&e, warm.store.data()) {
                    CallFailure::DeadlineExceeded { .. } => {
                        CallFailure::DeadlineExceeded { limit: limits.deadline() }
                    }
                    other => other,
                };
                Err(self.error(call, failure))
            }
        };
        if let Err(e) = &result {
            self.stats.count_failure(&e.cause);
        }
        result
    }
}
