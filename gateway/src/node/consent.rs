//! The site's side of the authorization handshake: the platform decides, with its own
//! authorizer plugin, whether a capability it offers may be used — and keeps an audit of
//! every decision (JSON lines, one per decision, flushed to disk before the answer goes out).
//!
//! The request id is the idempotency key: a request asked again gets the decision recorded
//! for it, not a new one. A pending answer is audited but not final: it is decided afresh
//! when asked again. A grant the controller gave up on is marked released. With no
//! authorizer configured, nothing is granted (fail closed).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::reporter::AUTHORIZER;
use crate::blocking::Pool;
use crate::catalog::{CapabilityInfo, Consent, ServiceInfo};
use crate::plugin::{PluginRegistry, authorization, types};
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
}

/// A site's decisions and their audit.
pub struct SiteConsent {
    platform: String,
    plugins: Option<Arc<PluginRegistry>>,
    pool: Pool,
    file: Option<PathBuf>,
    /// Final decisions by request id, and whether the grant was released.
    decided: Mutex<HashMap<String, (Consent, bool)>>,
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
        Ok(SiteConsent { platform: platform.to_owned(), plugins, pool, file, decided: Mutex::new(decided) })
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
        if let Some((consent, released)) = lock(&self.decided).get(request_id).cloned() {
            return Ok(if released {
                Consent::Refuse { reason: "released: the controller gave up on this request".into() }
            } else {
                consent
            });
        }
        let consent = match self.plugins.as_ref().and_then(|p| p.get(AUTHORIZER)) {
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
                let decision = self
                    .pool
                    .run(move || authorizer.authorize(&request))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("the authorizer failed: {e}"))?;
                match decision {
                    authorization::Decision::Grant(reason) => Consent::Grant { reason },
                    authorization::Decision::Refuse(reason) => Consent::Refuse { reason },
                }
            }
        };
        let line = SiteAuditLine {
            at_ms: now_unix_ms(),
            request_id: request_id.to_owned(),
            account: account.to_owned(),
            capability: capability.match_key(),
            native_id: service.native_id.clone(),
            consent: Some(consent.clone()),
            released: false,
        };
        self.append(&line).map_err(|e| format!("cannot write the audit: {e}"))?;
        apply(&mut lock(&self.decided), &line);
        tracing::info!(platform = %self.platform, request = %request_id, capability = %line.capability, ?consent, "capability decided");
        Ok(consent)
    }

    /// Release the grant recorded for `request_id`; whether there was one.
    pub fn release(&self, request_id: &str) -> Result<bool, String> {
        let existed = matches!(lock(&self.decided).get(request_id), Some((Consent::Grant { .. }, false)));
        if existed {
            let line = SiteAuditLine {
                at_ms: now_unix_ms(),
                request_id: request_id.to_owned(),
                account: String::new(),
                capability: String::new(),
                native_id: String::new(),
                consent: None,
                released: true,
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

/// Apply one audit line to the decisions: final ones are kept; a release marks a grant.
fn apply(decided: &mut HashMap<String, (Consent, bool)>, line: &SiteAuditLine) {
    match &line.consent {
        Some(c @ (Consent::Grant { .. } | Consent::Refuse { .. })) => {
            decided.insert(line.request_id.clone(), (c.clone(), false));
        }
        Some(Consent::Pending { .. }) => {}
        None if line.released => {
            if let Some(entry) = decided.get_mut(&line.request_id) {
                entry.1 = true;
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
        let grant = SiteAuditLine {
            at_ms: 1,
            request_id: "r2".into(),
            account: "op".into(),
            capability: "object-store/b".into(),
            native_id: "n".into(),
            consent: Some(Consent::Grant { reason: "ok".into() }),
            released: false,
        };
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
        let third = SiteConsent::open("p", None, Pool::new("t", 1), Some(file)).unwrap();
        let released = third.decide("r2", "op", &cap, &service()).await.unwrap();
        assert!(
            matches!(&released, Consent::Refuse { reason } if reason.contains("released")),
            "{released:?}"
        );
    }
}
