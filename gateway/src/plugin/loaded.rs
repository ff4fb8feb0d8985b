//! A loaded plugin: its compiled component pre-linked for its world, a small pool of warm
//! instances, and the typed calls of that world.
//!
//! Every call takes a warm instance (or instantiates one through `InstancePre` from the
//! pooling allocator), sets the CPU deadline, calls, and puts the instance back only if the
//! call succeeded: an instance that trapped or breached a limit is dropped, so the next call
//! starts clean.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{ComponentExportIndex, TypedFunc};
use wasmtime::{Engine, Store, Trap};

use super::bindings::{adapter, adapting, authorization, authorizer, scorer, scoring, types};
use super::engine::PluginEngine;
use super::error::{CallError, CallFailure, LoadError};
use super::optional::{CloudResponse, Consent, DiscoveryStep, Token, TokenRequest};
use super::sandbox::{LogBucket, PluginStats, Sandbox, StatsSnapshot, TIME_ONE_IN};
use super::{PluginLimits, PluginSpec, World};

/// Host interfaces a plugin may import (the `types` interface carries only types).
const HOST_IMPORTS: [&str; 5] = [
    "skybridge:plugin/types@0.1.0",
    "skybridge:plugin/log@0.1.0",
    "skybridge:plugin/config@0.1.0",
    "skybridge:plugin/clock@0.1.0",
    "skybridge:plugin/crypto@0.1.0",
];

/// The optional adapter interfaces: authenticating clients, exchanging tokens.
const AUTHENTICATING: &str = "skybridge:plugin/authenticating@0.1.0";
const TOKEN_EXCHANGE: &str = "skybridge:plugin/token-exchange@0.1.0";
const DISCOVERING: &str = "skybridge:plugin/discovering@0.1.0";
/// The optional authorizer interface: decisions that may wait for a person.
const DEFERRING: &str = "skybridge:plugin/deferring@0.1.0";

/// Warm instances kept per plugin; more concurrent calls instantiate fresh ones.
const MAX_WARM: usize = 16;

/// The longest explanation or reason a plugin may answer, bytes (the WIT asks for one line).
pub const MAX_ANSWER_TEXT: usize = 4 * 1024;
/// The largest request head an adapter's rewrite may answer (path, query and headers), and
/// the most headers in it: it is sent on to the target as is.
pub const MAX_REWRITTEN_HEAD: usize = 64 * 1024;
/// See [`MAX_REWRITTEN_HEAD`].
pub const MAX_REWRITTEN_HEADERS: usize = 256;
/// The longest account id an adapter may read from a client's request.
pub const MAX_CLAIMED_ACCOUNT: usize = 256;
/// The longest token an adapter may read from an identity service's answer: it is cached and
/// put in every request.
pub const MAX_TOKEN: usize = 16 * 1024;

/// What `describe()` said when the plugin was loaded.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "world", rename_all = "lowercase")]
pub enum Description {
    /// A scorer's name, version and weights.
    Scorer(scoring::ScorerInfo),
    /// An authorizer's name and version.
    Authorizer(authorization::AuthorizerInfo),
    /// An adapter's cloud, name, version and needs.
    Adapter(adapting::AdapterInfo),
}

impl Description {
    /// The plugin's own name and version.
    pub fn name_version(&self) -> (&str, &str) {
        match self {
            Description::Scorer(i) => (&i.name, &i.version),
            Description::Authorizer(i) => (&i.name, &i.version),
            Description::Adapter(i) => (&i.name, &i.version),
        }
    }
}

/// What a plugin file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// A WebAssembly component (e.g. built for `wasm32-wasip2`).
    Component,
    /// A core module carrying the SDK's WIT metadata (built for `wasm32-unknown-unknown`),
    /// wrapped into a component when loaded.
    CoreModule,
}

/// How an import of the component is satisfied.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImportStatus {
    /// A Skybridge host interface.
    Provided,
    /// A WASI interface (typically pulled in by a language's standard library). The sandbox
    /// withholds it: every function traps if called.
    WithheldTraps,
}

/// What is known about a loaded plugin.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginInfo {
    /// The operator's name for this plugin instance.
    pub name: String,
    /// The world it implements.
    pub world: World,
    /// What `describe()` returned.
    pub description: Description,
    /// Lower-case hex SHA-256 of the component file.
    pub sha256: String,
    /// Size of the file in bytes.
    pub size: usize,
    /// What the file held.
    pub format: Format,
    /// The component's exports.
    pub exports: Vec<String>,
    /// The component's imports and how each is satisfied.
    pub imports: Vec<(String, ImportStatus)>,
}

enum WorldPre {
    Scorer(scorer::ScorerPre<Sandbox>),
    /// With where `deferring.decide` is, when the authorizer exports it.
    Authorizer(authorizer::AuthorizerPre<Sandbox>, Option<ComponentExportIndex>),
    Adapter(adapter::AdapterPre<Sandbox>, AdapterExtras),
}

/// Where an adapter's optional functions are (found once at load).
#[derive(Clone, Default)]
struct AdapterExtras {
    authenticating: Option<AuthenticatingIndices>,
    token_exchange: Option<TokenExchangeIndices>,
    discovering: Option<DiscoveringIndices>,
}

#[derive(Clone)]
struct DiscoveringIndices {
    start: ComponentExportIndex,
    next: ComponentExportIndex,
}

#[derive(Clone)]
struct TokenExchangeIndices {
    request_token: ComponentExportIndex,
    read_token: ComponentExportIndex,
}

/// Where an adapter's `authenticating` functions are (found once at load).
#[derive(Clone)]
struct AuthenticatingIndices {
    claimed_account: ComponentExportIndex,
    verify_client: ComponentExportIndex,
}

enum Exports {
    Scorer(scorer::Scorer),
    Authorizer(authorizer::Authorizer, Option<DecideFunc>),
    Adapter(adapter::Adapter, Box<AdapterFuncs>),
}

/// `deferring.decide`.
type DecideFunc = TypedFunc<(authorization::AuthorizationRequest,), (Consent,)>;

/// An adapter instance's optional functions.
#[derive(Default)]
struct AdapterFuncs {
    authenticating: Option<Authenticating>,
    token_exchange: Option<TokenExchange>,
    discovering: Option<Discovering>,
}

/// An adapter instance's `discovering` functions.
struct Discovering {
    start: TypedFunc<(Vec<types::Pair>,), (Result<DiscoveryStep, String>,)>,
    next: TypedFunc<ContinueDiscoveryArgs, (Result<DiscoveryStep, String>,)>,
}

/// `continue-discovery`'s parameters: context, cursor, the cloud's answer.
type ContinueDiscoveryArgs = (Vec<types::Pair>, String, CloudResponse);

/// An adapter instance's `token-exchange` functions.
struct TokenExchange {
    request_token: TypedFunc<(adapting::TargetCredentials,), (Option<TokenRequest>,)>,
    read_token: TypedFunc<ReadTokenArgs, (Result<Token, String>,)>,
}

/// `read-token`'s parameters: status, headers, body.
type ReadTokenArgs = (u16, Vec<types::Pair>, Vec<u8>);

/// An adapter instance's `authenticating` functions (hand-bound: bindgen's per-world types
/// would not share `request-head` with the `adapter` world's bindings).
struct Authenticating {
    claimed_account: TypedFunc<(adapting::RequestHead,), (Option<String>,)>,
    verify_client: TypedFunc<(adapting::RequestHead, String), (Result<(), String>,)>,
}

struct Warm {
    store: Store<Sandbox>,
    exports: Exports,
}

/// A plugin ready to be called. Cheap to share behind an `Arc`; calls may run concurrently.
pub struct Plugin {
    info: PluginInfo,
    pre: WorldPre,
    engine: Engine,
    limits: PluginLimits,
    deadline_ticks: u64,
    /// The CPU deadline of one discovery call (larger: it parses whole listings).
    discovery_ticks: u64,
    name: Arc<str>,
    config: Arc<BTreeMap<String, String>>,
    stats: Arc<PluginStats>,
    log_bucket: Arc<LogBucket>,
    warm: Mutex<Vec<Warm>>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("info", &self.info).finish_non_exhaustive()
    }
}

impl Plugin {
    pub(crate) fn load(host: &PluginEngine, spec: &PluginSpec, bytes: &[u8]) -> Result<Plugin, LoadError> {
        let plugin = spec.name.clone();
        host.check_limits(&plugin, &spec.limits)?;
        let format = match wasm_format(bytes) {
            Ok(format) => format,
            Err(reason) => return Err(LoadError::Invalid { plugin, reason }),
        };
        let sha256 = hex::encode(Sha256::digest(bytes));
        let component = host
            .compile(&sha256, || match format {
                Format::Component => Ok(bytes.to_vec()),
                Format::CoreModule => wrap_core_module(bytes),
            })
            .map_err(|reason| LoadError::Invalid { plugin: plugin.clone(), reason })?;
        let engine = host.engine().clone();
        let ty = component.component_type();

        let exports: Vec<String> = ty.exports(&engine).map(|(n, _)| n.to_owned()).collect();
        let worlds: Vec<World> =
            World::ALL.into_iter().filter(|w| exports.iter().any(|e| e == w.export())).collect();
        let world = match worlds[..] {
            [world] => world,
            [] => {
                return Err(LoadError::UnknownWorld {
                    plugin,
                    expected: World::ALL
                        .iter()
                        .map(|w| format!("`{}` (world `{}`)", w.export(), w.name()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    found: if exports.is_empty() { "nothing".into() } else { exports.join(", ") },
                });
            }
            _ => {
                return Err(LoadError::WorldMismatch {
                    plugin,
                    world: worlds[0].name(),
                    reason: "a plugin must implement exactly one world, this one exports several".into(),
                });
            }
        };

        // Imports: host interfaces are provided; WASI is withheld (calls trap); anything else
        // would be a capability we do not grant, so the plugin is refused up front.
        let mut imports = Vec::new();
        for (name, item) in ty.imports(&engine) {
            let status = if HOST_IMPORTS.contains(&name) {
                ImportStatus::Provided
            } else if name.starts_with("wasi:") && matches!(item.ty, ComponentItem::ComponentInstance(_)) {
                ImportStatus::WithheldTraps
            } else {
                return Err(LoadError::UnsupportedImport { plugin, import: name.to_owned() });
            };
            imports.push((name.to_owned(), status));
        }
        let mut linker = host.linker().clone();
        if imports.iter().any(|(_, s)| *s == ImportStatus::WithheldTraps) {
            linker
                .define_unknown_imports_as_traps(&component)
                .map_err(|e| LoadError::Engine { plugin: plugin.clone(), reason: format!("{e:#}") })?;
        }
        let instance_pre = linker.instantiate_pre(&component).map_err(|e| LoadError::WorldMismatch {
            plugin: plugin.clone(),
            world: world.name(),
            reason: format!("{e:#}"),
        })?;
        let mismatch = |e: wasmtime::Error| LoadError::WorldMismatch {
            plugin: plugin.clone(),
            world: world.name(),
            reason: format!("{e:#}"),
        };
        let pre = match world {
            World::Scorer => WorldPre::Scorer(scorer::ScorerPre::new(instance_pre).map_err(mismatch)?),
            World::Authorizer => {
                let decide = component
                    .get_export_index(None, DEFERRING)
                    .and_then(|i| component.get_export_index(Some(&i), "decide"));
                WorldPre::Authorizer(authorizer::AuthorizerPre::new(instance_pre).map_err(mismatch)?, decide)
            }
            World::Adapter => {
                let index = |iface: &str, name: &str| {
                    let lacks = || LoadError::WorldMismatch {
                        plugin: plugin.clone(),
                        world: world.name(),
                        reason: format!("`{iface}` lacks `{name}`"),
                    };
                    let i = component.get_export_index(None, iface).ok_or_else(lacks)?;
                    component.get_export_index(Some(&i), name).ok_or_else(lacks)
                };
                let exports_iface = |iface: &str| component.get_export_index(None, iface).is_some();
                let mut extras = AdapterExtras::default();
                if exports_iface(AUTHENTICATING) {
                    extras.authenticating = Some(AuthenticatingIndices {
                        claimed_account: index(AUTHENTICATING, "claimed-account")?,
                        verify_client: index(AUTHENTICATING, "verify-client")?,
                    });
                }
                if exports_iface(DISCOVERING) {
                    extras.discovering = Some(DiscoveringIndices {
                        start: index(DISCOVERING, "start-discovery")?,
                        next: index(DISCOVERING, "continue-discovery")?,
                    });
                }
                if exports_iface(TOKEN_EXCHANGE) {
                    extras.token_exchange = Some(TokenExchangeIndices {
                        request_token: index(TOKEN_EXCHANGE, "request-token")?,
                        read_token: index(TOKEN_EXCHANGE, "read-token")?,
                    });
                }
                WorldPre::Adapter(adapter::AdapterPre::new(instance_pre).map_err(mismatch)?, extras)
            }
        };

        let mut loaded = Plugin {
            info: PluginInfo {
                name: plugin.clone(),
                world,
                // Replaced by the real description just below.
                description: Description::Authorizer(authorization::AuthorizerInfo {
                    name: String::new(),
                    version: String::new(),
                }),
                sha256,
                size: bytes.len(),
                format,
                exports,
                imports,
            },
            pre,
            engine,
            deadline_ticks: host.ticks_for(spec.limits.deadline()),
            discovery_ticks: host.ticks_for(spec.limits.discovery_deadline()),
            limits: spec.limits.clone(),
            name: Arc::from(plugin.as_str()),
            config: Arc::new(spec.config.clone()),
            stats: Arc::new(PluginStats::default()),
            log_bucket: Arc::new(LogBucket::new(spec.limits.log_per_second, spec.limits.log_burst)),
            warm: Mutex::new(Vec::new()),
        };
        loaded.info.description = loaded
            .describe()
            .map_err(|e| LoadError::Describe { plugin: plugin.clone(), source: Box::new(e) })?;
        Ok(loaded)
    }

    /// What is known about this plugin.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The world it implements.
    pub fn world(&self) -> World {
        self.info.world
    }

    /// Its counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// The times of its timed calls (one in 16, the first always), seconds.
    pub fn call_times(&self) -> crate::metrics::HistogramSnapshot {
        self.stats.call_times.0.snapshot()
    }

    /// The limits it runs under.
    pub fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    fn describe(&self) -> Result<Description, CallError> {
        self.call("describe", |store, exports| {
            Ok(Ok(match exports {
                Exports::Scorer(s) => Description::Scorer(s.skybridge_plugin_scoring().call_describe(store)?),
                Exports::Authorizer(a, _) => {
                    Description::Authorizer(a.skybridge_plugin_authorization().call_describe(store)?)
                }
                Exports::Adapter(a, _) => {
                    Description::Adapter(a.skybridge_plugin_adapting().call_describe(store)?)
                }
            }))
        })
    }

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

    // -----------------------------------------------------------------------------------------
    // The call machinery

    /// Run `f` on an instance under the sandbox's deadline and limits. `f` returns the wasm
    /// result (trap or not) wrapping the plugin's own answer (accepted or refused).
    fn call<R>(
        &self,
        call: &'static str,
        f: impl FnOnce(&mut Store<Sandbox>, &Exports) -> wasmtime::Result<Result<R, CallFailure>>,
    ) -> Result<R, CallError> {
        let _span = tracing::debug_span!("plugin_call", plugin = %self.name, export = call).entered();
        let n = self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let started = n.is_multiple_of(TIME_ONE_IN).then(std::time::Instant::now);
        let result = self.call_timed(call, f);
        if let Some(started) = started {
            let elapsed = started.elapsed();
            self.stats.call_times.0.observe(elapsed);
            let took = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            self.stats.timed_ns.fetch_add(took, Ordering::Relaxed);
            self.stats.timed_calls.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = &result {
            self.stats.count_failure(&e.cause);
        }
        result
    }

    fn call_timed<R>(
        &self,
        call: &'static str,
        f: impl FnOnce(&mut Store<Sandbox>, &Exports) -> wasmtime::Result<Result<R, CallFailure>>,
    ) -> Result<R, CallError> {
        let reused = if self.limits.reuse_instances { self.take_warm() } else { None };
        let mut warm = match reused {
            Some(warm) => warm,
            None => self.instantiate()?,
        };
        let store = &mut warm.store;
        store.data_mut().begin(call);
        store.set_epoch_deadline(self.deadline_ticks);
        let outcome = f(store, &warm.exports);
        store.data_mut().end();
        match outcome {
            Ok(Ok(value)) => {
                self.put_warm(warm);
                Ok(value)
            }
            Ok(Err(failure)) => {
                // The plugin answered; its instance is healthy and can be reused.
                if matches!(failure, CallFailure::Rejected(_)) {
                    self.stats.rejections.fetch_add(1, Ordering::Relaxed);
                }
                self.put_warm(warm);
                Err(self.error(call, failure))
            }
            Err(e) => {
                // The instance trapped: it is dropped here, never reused.
                self.stats.faults.fetch_add(1, Ordering::Relaxed);
                Err(self.error(call, self.classify(&e, warm.store.data())))
            }
        }
    }

    fn instantiate(&self) -> Result<Warm, CallError> {
        self.instantiate_with(&self.limits, self.deadline_ticks)
    }

    fn instantiate_with(&self, limits: &PluginLimits, deadline_ticks: u64) -> Result<Warm, CallError> {
        let sandbox = Sandbox::new(
            self.name.clone(),
            self.config.clone(),
            self.stats.clone(),
            self.log_bucket.clone(),
            limits,
        );
        let mut store = Store::new(&self.engine, sandbox);
        store.limiter(|s| s);
        store.set_epoch_deadline(deadline_ticks);
        let exports = match &self.pre {
            WorldPre::Scorer(pre) => pre.instantiate(&mut store).map(Exports::Scorer),
            WorldPre::Authorizer(pre, decide) => instantiate_authorizer(&mut store, pre, decide.as_ref()),
            WorldPre::Adapter(pre, extras) => instantiate_adapter(&mut store, pre, extras),
        };
        match exports {
            Ok(exports) => Ok(Warm { store, exports }),
            Err(e) => {
                self.stats.faults.fetch_add(1, Ordering::Relaxed);
                Err(self.error("instantiate", self.classify(&e, store.data())))
            }
        }
    }

    fn take_warm(&self) -> Option<Warm> {
        self.warm.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn put_warm(&self, warm: Warm) {
        if self.limits.reuse_instances {
            let mut pool = self.warm.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < MAX_WARM {
                pool.push(warm);
            }
        }
    }

    fn classify(&self, e: &wasmtime::Error, sandbox: &Sandbox) -> CallFailure {
        if let Some(breach) = sandbox.breach_failure() {
            return breach;
        }
        if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return CallFailure::DeadlineExceeded { limit: self.limits.deadline() };
        }
        let cause = e.root_cause().to_string();
        let cause = match cause.strip_prefix("unknown import: `") {
            // Our trap stubs for withheld WASI functions.
            Some(rest) => format!(
                "called `{}`, which the sandbox withholds (no ambient WASI)",
                rest.split('`').next().unwrap_or(rest)
            ),
            None => cause,
        };
        match &sandbox.last_error_log {
            Some(said) => CallFailure::Trap(format!("{cause} (the plugin's last error log: {said})")),
            None => CallFailure::Trap(cause),
        }
    }

    fn wrong_world(&self, expected: World) -> CallFailure {
        CallFailure::WrongWorld { expected: expected.name(), actual: self.info.world.name() }
    }

    fn error(&self, call: &'static str, cause: CallFailure) -> CallError {
        if cause.is_fault() {
            tracing::warn!(plugin = %self.name, call, %cause, "plugin call failed");
        }
        CallError { plugin: self.name.to_string(), call, cause }
    }
}

/// Instantiate an authorizer, binding `deferring.decide` when it has it.
fn instantiate_authorizer(
    store: &mut Store<Sandbox>,
    pre: &authorizer::AuthorizerPre<Sandbox>,
    decide: Option<&ComponentExportIndex>,
) -> wasmtime::Result<Exports> {
    let instance = pre.instance_pre().instantiate(&mut *store)?;
    let exports = authorizer::Authorizer::new(&mut *store, &instance)?;
    let decide = match decide {
        Some(i) => Some(instance.get_typed_func(&mut *store, i)?),
        None => None,
    };
    Ok(Exports::Authorizer(exports, decide))
}

/// Instantiate an adapter, binding its optional functions when it has them.
fn instantiate_adapter(
    store: &mut Store<Sandbox>,
    pre: &adapter::AdapterPre<Sandbox>,
    extras: &AdapterExtras,
) -> wasmtime::Result<Exports> {
    let instance = pre.instance_pre().instantiate(&mut *store)?;
    let adapter = adapter::Adapter::new(&mut *store, &instance)?;
    let mut funcs = AdapterFuncs::default();
    if let Some(i) = &extras.authenticating {
        funcs.authenticating = Some(Authenticating {
            claimed_account: instance.get_typed_func(&mut *store, i.claimed_account)?,
            verify_client: instance.get_typed_func(&mut *store, i.verify_client)?,
        });
    }
    if let Some(i) = &extras.discovering {
        funcs.discovering = Some(Discovering {
            start: instance.get_typed_func(&mut *store, i.start)?,
            next: instance.get_typed_func(&mut *store, i.next)?,
        });
    }
    if let Some(i) = &extras.token_exchange {
        funcs.token_exchange = Some(TokenExchange {
            request_token: instance.get_typed_func(&mut *store, i.request_token)?,
            read_token: instance.get_typed_func(&mut *store, i.read_token)?,
        });
    }
    Ok(Exports::Adapter(adapter, Box::new(funcs)))
}

fn wasm_format(bytes: &[u8]) -> Result<Format, String> {
    // Magic `\0asm`, then a version/layer word: 0x0d/1 for components, 1/0 for core modules.
    if bytes.len() < 8 {
        return Err(format!("file is only {} bytes long", bytes.len()));
    }
    if bytes[..4] != *b"\0asm" {
        return Err("file does not start with the wasm magic number".into());
    }
    match bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(Format::Component),
        [0x01, 0x00, 0x00, 0x00] => Ok(Format::CoreModule),
        _ => Err(format!("unknown wasm version/layer {:02x?}", &bytes[4..8])),
    }
}

/// Wrap a core module into a component using the WIT world the SDK embedded in it.
fn wrap_core_module(bytes: &[u8]) -> Result<Vec<u8>, String> {
    // wit-bindgen embeds the world in custom sections named `component-type…`; without one
    // the module would wrap into an empty component, which helps nobody.
    if !bytes.windows(14).any(|w| w == b"component-type") {
        return Err("a core wasm module without component metadata: build plugins with \
                    skybridge-plugin-sdk (for wasm32-unknown-unknown), or as a component"
            .into());
    }
    let mut encoder = wit_component::ComponentEncoder::default();
    encoder.module(bytes).and_then(|e| e.validate(true).encode()).map_err(|e| {
        format!(
            "a core wasm module that cannot be wrapped into a component ({e:#}); build plugins \
                 with skybridge-plugin-sdk for wasm32-unknown-unknown, or as a component for wasm32-wasip2"
        )
    })
}

/// Limits as the deadline type.
impl PluginLimits {
    /// The CPU deadline per call.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// The memory limit in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory_mib << 20
    }

    /// The CPU deadline of one discovery call.
    pub fn discovery_deadline(&self) -> Duration {
        Duration::from_millis(self.discovery_deadline_ms)
    }

    /// These limits with the discovery deadline and memory in place of the per-call ones.
    pub fn for_discovery(&self) -> PluginLimits {
        PluginLimits {
            deadline_ms: self.discovery_deadline_ms,
            memory_mib: self.discovery_memory_mib,
            reuse_instances: false,
            ..self.clone()
        }
    }
}
