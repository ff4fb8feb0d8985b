//! The site's side of the authorization handshake: the platform decides, with its own
//! authorizer plugin, whether a capability it offers may be used — and keeps an audit of
//! every decision (JSON lines, one per decision, flushed to disk before the answer goes out).
//!
//! The request id is the idempotency key: a request asked again gets the decision recorded
//! for it, not a new one. A pending answer is audited but not final: it is decided afresh
//! when asked again. A grant the controller gave up on is marked released. With no
//! authorizer configured, nothing is granted (fail closed).
//!
//! Tunnels are authorized too ([`SiteConsent::authorize_tunnel`]): when the controller sets
//! up the last hop of a tunnel, the authorizer decides whether the tunnel's account may use
//! the capability it was made for, or else the endpoint (`endpoint/NAME`). Those decisions are
//! audited on lines of their own (with `tunnel`). A site with no authorizer lets every account
//! the controller admits use its published endpoints.
//!
//! Grants are decided again from time to time ([`SiteConsent::reevaluate`]; the site runs it
//! every `reevaluate_every_s`): one the authorizer now refuses — its policy changed, a rule
//! expired — is revoked, audited, and the controller told at once, which cuts the bindings
//! to it.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::reporter::AUTHORIZER;
use crate::blocking::Pool;
use crate::catalog::{CapabilityInfo, Consent, ServiceInfo};
use crate::mesh::messages::{HopGrant, Next, Refusal, RefusalCode};
use crate::plugin::{self, PluginRegistry, authorization, types};
use crate::time::now_unix_ms;

/// Longest audit line read back at start (longer ones are skipped with a warning).
const MAX_LINE: usize = 64 << 10;

/// One line of the site's audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteAuditLine {
    /// When (Unix ms).
    pub at_ms: u64,
    /// The request.
    pub request_id: String,
    /// The account it was asked for.
    pub account: String,
    /// The capability's match key.
    pub capability: String,
    /// The service's native id.
    pub native_id: String,
    /// The decision; `None` on a release line.
    pub consent: Option<Consent>,
    /// Set on the line that releases a grant.
    #[serde(default)]
    pub released: bool,
    /// Set on the line that revokes a grant (its consent is the refusal, with the reason).
    #[serde(default)]
    pub revoked: bool,
    /// What was asked, on decision lines: so that a grant can be decided again later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Asked>,
    /// Set on the line of a tunnel's authorization: the tunnel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<u64>,
}

/// A request as the site keeps it, to decide it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asked {
    /// The capability.
    pub capability: CapabilityInfo,
    /// The service offering it.
    pub service: ServiceInfo,
}

/// What the site decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decided {
    consent: Consent,
    released: bool,
    revoked: bool,
    account: String,
    request: Option<Asked>,
}

/// A site's decisions and their audit.
pub struct SiteConsent {
    platform: String,
    plugins: Option<Arc<PluginRegistry>>,
    pool: Pool,
    file: Option<PathBuf>,
    /// Final decisions by request id.
    decided: Mutex<HashMap<String, Decided>>,
    /// Revocations the controller has not acknowledged yet: (request id, reason).
    undelivered: Mutex<Vec<(String, String)>>,
}

impl SiteConsent {
    /// Decide with the registry's authorizer (if any), auditing to `file` (if any), reading
    /// back the decisions it already holds.
    pub fn open(
        platform: &str,
        plugins: Option<Arc<PluginRegistry>>,
        pool: Pool,
        file: Option<PathBuf>,
    ) -> anyhow::Result<SiteConsent> {
        let mut decided = HashMap::new();
        match &file {
            Some(path) if path.exists() => {
                let reader = std::io::BufReader::new(std::fs::File::open(path)?);
                for (n, line) in reader.split(b'\n').enumerate() {
                    let line = line?;
                    let parsed = (line.len() <= MAX_LINE)
                        .then(|| serde_json::from_slice::<SiteAuditLine>(&line).ok())
                        .flatten();
                    match parsed {
                        Some(l) => apply(&mut decided, &l),
                        None if line.is_empty() => {}
                        None => {
                            tracing::warn!(file = %path.display(), line = n + 1, "an audit line that does not parse is skipped")
                        }
                    }
                }
            }
            Some(_) => {}
            None => {
                tracing::warn!(%platform, "no audit file configured: authorization decisions are kept in memory only")
            }
        }
        Ok(SiteConsent {
            platform: platform.to_owned(),
            plugins,
            pool,
            file,
            decided: Mutex::new(decided),
            undelivered: Mutex::default(),
        })
    }

    fn append(&self, line: &SiteAuditLine) -> std::io::Result<()> {
        let Some(path) = &self.file else { return Ok(()) };
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let mut bytes = serde_json::to_vec(line).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        f.write_all(&bytes)?;
        f.sync_data()
    }

    /// Decide request `request_id` (or answer the decision recorded for it). An error: the
    /// authorizer failed (the controller asks again later).
    pub async fn decide(
        &self,
        request_id: &str,
        account: &str,
        capability: &CapabilityInfo,
        service: &ServiceInfo,
    ) -> Result<Consent, String> {
        if let Some(d) = lock(&self.decided).get(request_id).cloned() {
            return Ok(if d.released {
                Consent::Refuse { reason: "released: the controller gave up on this request".into() }
            } else {
                d.consent
            });
        }
        let consent = self.ask_authorizer(request_id, account, capability, service).await?;
        let line = SiteAuditLine {
            at_ms: now_unix_ms(),
            request_id: request_id.to_owned(),
            account: account.to_owned(),
            capability: capability.match_key(),
            native_id: service.native_id.clone(),
            consent: Some(consent.clone()),
            released: false,
            revoked: false,
            request: Some(Asked { capability: capability.clone(), service: service.clone() }),
            tunnel: None,
        };
        self.append(&line).map_err(|e| format!("cannot write the audit: {e}"))?;
        apply(&mut lock(&self.decided), &line);
        tracing::info!(platform = %self.platform, request = %request_id, capability = %line.capability, ?consent, "capability decided");
        Ok(consent)
    }

    /// Decide every recorded grant again; revoke (and audit) those the authorizer now refuses.
    /// Returns the revocations the controller has yet to hear of, this round's and earlier
    /// undelivered ones.
    pub async fn reevaluate(&self) -> Vec<(String, String)> {
        let granted: Vec<(String, Decided)> = lock(&self.decided)
            .iter()
            .filter(|(_, d)| matches!(d.consent, Consent::Grant { .. }) && !d.released && !d.revoked)
            .map(|(id, d)| (id.clone(), d.clone()))
            .collect();
        for (request_id, d) in granted {
            let Some(asked) = &d.request else { continue };
            let now = match self
                .ask_authorizer(&request_id, &d.account, &asked.capability, &asked.service)
                .await
            {
                Ok(consent) => consent,
                Err(e) => {
                    tracing::warn!(platform = %self.platform, request = %request_id, "cannot decide a grant again: {e}");
                    continue;
                }
            };
            let Consent::Refuse { reason } = now else { continue };
            let reason = format!("revoked: {reason}");
            let line = SiteAuditLine {
                at_ms: now_unix_ms(),
                request_id: request_id.clone(),
                account: d.account.clone(),
                capability: asked.capability.match_key(),
                native_id: asked.service.native_id.clone(),
                consent: Some(Consent::Refuse { reason: reason.clone() }),
                released: false,
                revoked: true,
                request: None,
                tunnel: None,
            };
            if let Err(e) = self.append(&line) {
                tracing::warn!(platform = %self.platform, "cannot write the audit; the revocation waits: {e}");
                continue;
            }
            apply(&mut lock(&self.decided), &line);
            tracing::info!(platform = %self.platform, request = %request_id, capability = %line.capability, %reason, "grant revoked");
            lock(&self.undelivered).push((request_id, reason));
        }
        lock(&self.undelivered).clone()
    }

    /// The controller acknowledged the revocation of `request_id`.
    pub fn delivered(&self, request_id: &str) {
        lock(&self.undelivered).retain(|(id, _)| id != request_id);
    }

    async fn ask_authorizer(
        &self,
        request_id: &str,
        account: &str,
        capability: &CapabilityInfo,
        service: &ServiceInfo,
    ) -> Result<Consent, String> {
        Ok(match self.plugins.as_ref().and_then(|p| p.get(AUTHORIZER)) {
            None => Consent::Refuse {
                reason: format!("platform `{}` has no authorizer: nothing is granted", self.platform),
            },
            Some(authorizer) => {
                let request = authorization::AuthorizationRequest {
                    account: account.to_owned(),
                    platform: self.platform.clone(),
                    capability: types::Capability {
                        kind: capability.kind.clone(),
                        name: capability.name.clone(),
                        attributes: pairs(&capability.attributes),
                    },
                    context: [
                        ("request-id", request_id),
                        ("native-id", service.native_id.as_str()),
                        ("service-kind", service.kind.as_str()),
                        ("service-name", service.name.as_str()),
                        ("endpoint", service.endpoint.as_str()),
                        ("region", service.region.as_deref().unwrap_or("")),
                    ]
                    .into_iter()
                    .map(|(k, v)| types::Pair { key: k.into(), value: v.into() })
                    .collect(),
                };
                self.consult(authorizer, request).await?
            }
        })
    }

    /// Put `request` to `authorizer` on the plugin pool.
    async fn consult(
        &self,
        authorizer: Arc<plugin::Plugin>,
        request: authorization::AuthorizationRequest,
    ) -> Result<Consent, String> {
        let decision = self
            .pool
            .run(move || authorizer.decide(&request))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("the authorizer failed: {e}"))?;
        Ok(match decision {
            plugin::Consent::Grant(reason) => Consent::Grant { reason },
            plugin::Consent::Refuse(reason) => Consent::Refuse { reason },
            plugin::Consent::Pending(p) => {
                Consent::Pending { reason: p.reason, retry_after_s: u64::from(p.retry_after_s) }
            }
        })
    }

    /// Whether the account of `grant` — the target site's grant of a tunnel — may use what
    /// the tunnel leads to: the capability it was made for, else its endpoint
    /// (`endpoint/NAME`). Decided by the authorizer and audited before the answer; a pending
    /// answer refuses for now. With no authorizer, every account the controller admits may.
    pub async fn authorize_tunnel(&self, grant: &HopGrant) -> Result<(), Refusal> {
        let Next::Endpoint(endpoint) = &grant.next else { return Ok(()) };
        let Some(authorizer) = self.plugins.as_ref().and_then(|p| p.get(AUTHORIZER)) else { return Ok(()) };
        let (kind, name) = match grant.capability.as_deref().and_then(|key| key.split_once('/')) {
            Some((kind, name)) => (kind, name),
            None => ("endpoint", endpoint.as_str()),
        };
        let tunnel = grant.tunnel.to_string();
        let request = authorization::AuthorizationRequest {
            account: grant.account.clone(),
            platform: self.platform.clone(),
            capability: types::Capability { kind: kind.into(), name: name.into(), attributes: vec![] },
            context: [("tunnel", tunnel.as_str()), ("endpoint", endpoint.as_str())]
                .into_iter()
                .map(|(k, v)| types::Pair { key: k.into(), value: v.into() })
                .collect(),
        };
        let consent =
            self.consult(authorizer, request).await.map_err(|e| Refusal::new(RefusalCode::Unavailable, e))?;
        let line = SiteAuditLine {
            at_ms: now_unix_ms(),
            request_id: format!("tunnel-{tunnel}"),
            account: grant.account.clone(),
            capability: format!("{kind}/{name}"),
            native_id: String::new(),
            consent: Some(consent.clone()),
            released: false,
            revoked: false,
            request: None,
            tunnel: Some(grant.tunnel),
        };
        self.append(&line)
            .map_err(|e| Refusal::new(RefusalCode::Internal, format!("cannot write the audit: {e}")))?;
        match consent {
            Consent::Grant { .. } => Ok(()),
            Consent::Refuse { reason } => {
                tracing::info!(platform = %self.platform, tunnel = grant.tunnel, account = %grant.account, capability = %line.capability, %reason, "tunnel refused");
                Err(Refusal::new(RefusalCode::Denied, reason))
            }
            Consent::Pending { reason, .. } => {
                Err(Refusal::new(RefusalCode::Denied, format!("not decided yet: {reason}")))
            }
        }
    }

    /// Release the grant recorded for `request_id`; whether there was one.
    pub fn release(&self, request_id: &str) -> Result<bool, String> {
        let existed = lock(&self.decided)
            .get(request_id)
            .is_some_and(|d| matches!(d.consent, Consent::Grant { .. }) && !d.released && !d.revoked);
        if existed {
            let line = SiteAuditLine {
                at_ms: now_unix_ms(),
                request_id: request_id.to_owned(),
                account: String::new(),
                capability: String::new(),
                native_id: String::new(),
                consent: None,
                released: true,
                revoked: false,
                request: None,
                tunnel: None,
            };
            self.append(&line).map_err(|e| format!("cannot write the audit: {e}"))?;
            apply(&mut lock(&self.decided), &line);
        }
        Ok(existed)
    }
}

fn pairs(map: &std::collections::BTreeMap<String, String>) -> Vec<types::Pair> {
    map.iter().map(|(k, v)| types::Pair { key: k.clone(), value: v.clone() }).collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Apply one audit line to the decisions: final ones are kept (with what was asked); a
/// revocation replaces the grant with its refusal; a release marks a grant.
fn apply(decided: &mut HashMap<String, Decided>, line: &SiteAuditLine) {
    if line.tunnel.is_some() {
        // A tunnel's authorization: audited, nothing to keep.
        return;
    }
    match &line.consent {
        Some(c) if line.revoked => {
            if let Some(d) = decided.get_mut(&line.request_id) {
                d.consent = c.clone();
                d.revoked = true;
            }
        }
        Some(c @ (Consent::Grant { .. } | Consent::Refuse { .. })) => {
            let d = Decided {
                consent: c.clone(),
                released: false,
                revoked: false,
                account: line.account.clone(),
                request: line.request.clone(),
            };
            decided.insert(line.request_id.clone(), d);
        }
        Some(Consent::Pending { .. }) => {}
        None if line.released => {
            if let Some(d) = decided.get_mut(&line.request_id) {
                d.released = true;
            }
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> ServiceInfo {
        ServiceInfo {
            native_id: "n".into(),
            kind: "object-store".into(),
            name: "b".into(),
            endpoint: "e".into(),
            region: None,
            attributes: Default::default(),
            capabilities: vec![],
        }
    }

    /// The audit line of a grant of `cap` under `request_id`, as `decide` writes it.
    fn grant_line(request_id: &str, cap: &CapabilityInfo) -> SiteAuditLine {
        SiteAuditLine {
            at_ms: 1,
            request_id: request_id.into(),
            account: "op".into(),
            capability: cap.match_key(),
            native_id: "n".into(),
            consent: Some(Consent::Grant { reason: "ok".into() }),
            released: false,
            revoked: false,
            request: Some(Asked { capability: cap.clone(), service: service() }),
            tunnel: None,
        }
    }

    #[tokio::test]
    async fn a_tunnels_authorization_is_audited_but_never_kept_as_a_grant() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("audit.jsonl");
        let cap =
            CapabilityInfo { kind: "object-store".into(), name: "b".into(), attributes: Default::default() };
        let site = SiteConsent::open("p", None, Pool::new("t", 1), Some(file.clone())).unwrap();
        // No authorizer: the site's published endpoints are open to whom the controller admits.
        let grant = HopGrant {
            tunnel: 5,
            hop: "p".into(),
            prev: "r1".into(),
            next: Next::Endpoint("web".into()),
            account: "acme".into(),
            expires_unix_ms: u64::MAX,
            capability: None,
            fence: None,
            replaces: None,
        };
        assert_eq!(site.authorize_tunnel(&grant).await, Ok(()));
        // A tunnel's line read back is not a grant to decide again or to answer with.
        let line =
            SiteAuditLine { tunnel: Some(5), request_id: "tunnel-5".into(), ..grant_line("tunnel-5", &cap) };
        site.append(&line).unwrap();
        let again = SiteConsent::open("p", None, Pool::new("t", 1), Some(file)).unwrap();
        assert!(again.reevaluate().await.is_empty());
        let answer = again.decide("tunnel-5", "op", &cap, &service()).await.unwrap();
        assert!(
            matches!(&answer, Consent::Refuse { reason } if reason.contains("no authorizer")),
            "{answer:?}"
        );
    }

    #[tokio::test]
    async fn without_an_authorizer_nothing_is_granted_and_decisions_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("audit.jsonl");
        let cap =
            CapabilityInfo { kind: "object-store".into(), name: "b".into(), attributes: Default::default() };
        let site = SiteConsent::open("p", None, Pool::new("t", 1), Some(file.clone())).unwrap();
        let first = site.decide("r1", "op", &cap, &service()).await.unwrap();
        assert!(
            matches!(&first, Consent::Refuse { reason } if reason.contains("no authorizer")),
            "{first:?}"
        );
        // A recorded grant (written as an operator's tool would) is answered as recorded, and
        // released once.
        let grant = grant_line("r2", &cap);
        site.append(&grant).unwrap();
        std::fs::OpenOptions::new().append(true).open(&file).unwrap().write_all(b"{garbage\n").unwrap();
        let again = SiteConsent::open("p", None, Pool::new("t", 1), Some(file.clone())).unwrap();
        assert_eq!(again.decide("r1", "op", &cap, &service()).await.unwrap(), first, "same id, same answer");
        assert_eq!(
            again.decide("r2", "op", &cap, &service()).await.unwrap(),
            Consent::Grant { reason: "ok".into() }
        );
        assert!(again.release("r2").unwrap());
        assert!(!again.release("r2").unwrap(), "released once");
        let third = SiteConsent::open("p", None, Pool::new("t", 1), Some(file.clone())).unwrap();
        let released = third.decide("r2", "op", &cap, &service()).await.unwrap();
        assert!(
            matches!(&released, Consent::Refuse { reason } if reason.contains("released")),
            "{released:?}"
        );
    }

    #[tokio::test]
    async fn a_grant_the_authorizer_now_refuses_is_revoked_audited_and_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("audit.jsonl");
        let cap =
            CapabilityInfo { kind: "object-store".into(), name: "b".into(), attributes: Default::default() };
        let grant = grant_line("r1", &cap);
        let site = SiteConsent::open("p", None, Pool::new("t", 1), Some(file.clone())).unwrap();
        site.append(&grant).unwrap();
        // No authorizer any more: the grant is decided again, refused, and so revoked.
        let site = SiteConsent::open("p", None, Pool::new("t", 1), Some(file.clone())).unwrap();
        let revoked = site.reevaluate().await;
        assert_eq!(revoked.len(), 1);
        assert!(
            revoked[0].1.starts_with("revoked: ") && revoked[0].1.contains("no authorizer"),
            "{revoked:?}"
        );
        assert_eq!(site.reevaluate().await.len(), 1, "undelivered: offered again");
        site.delivered("r1");
        assert!(site.reevaluate().await.is_empty(), "delivered, and not revoked twice");
        let again = SiteConsent::open("p", None, Pool::new("t", 1), Some(file)).unwrap();
        let answer = again.decide("r1", "op", &cap, &service()).await.unwrap();
        assert!(matches!(&answer, Consent::Refuse { reason } if reason.starts_with("revoked")), "{answer:?}");
        assert!(!again.release("r1").unwrap(), "a revoked grant is not released");
    }
}
