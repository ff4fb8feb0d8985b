//! Tunnel setup and teardown on the hops of a chosen path (DESIGN.md step 5). The plan and
//! the outcome are decided by [`crate::tunnel::setup`]; this sends each hop its request, all
//! at once, and collects the answers. A hop that says a retry may help (it had no key yet)
//! gets the whole setup tried once more.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Controller, join_all};
use crate::mesh::messages::{Control, Refusal, RefusalCode};
use crate::mesh::stream;
use crate::path::DecisionRecord;
use crate::tunnel::HopKey;
use crate::tunnel::setup::{self, HopAnswer, SetupFailed, Target};

/// How long each hop has to acknowledge a tunnel setup.
const SETUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait before the one retry of a setup that failed transiently.
const SETUP_RETRY_AFTER: Duration = Duration::from_millis(200);

/// A tunnel as the controller keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TunnelRecord {
    /// Its id.
    pub id: u64,
    /// The decision that chose its path.
    #[serde(alias = "connection")]
    pub decision: u64,
    /// The hops: relays in order, then the target site.
    pub hops: Vec<String>,
    /// The endpoint at the target site.
    pub endpoint: String,
    /// The account it carries traffic for.
    pub account: String,
    /// Made for a capability of the catalog: its match key, which the target site's
    /// authorizer decided on (else it decided on the endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// When it expires (Unix ms).
    pub expires_unix_ms: u64,
    /// The target site's token, presented on the end-to-end connection's streams.
    #[serde(skip)]
    pub(crate) site_token: String,
}

/// The tunnel secret (every hop key derives from it) and tunnel ids.
pub struct Tunnels {
    secret: [u8; 32],
    ids: super::ids::Ids,
}

impl Tunnels {
    /// Tunnels whose hop keys derive from `secret` (the group's, or a fresh random one when
    /// `None`), numbered from `ids`.
    pub(super) fn new(secret: Option<[u8; 32]>, ids: super::ids::Ids) -> anyhow::Result<Tunnels> {
        let secret = match secret {
            Some(secret) => secret,
            None => {
                let mut fresh = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut fresh)
                    .map_err(|_| anyhow::anyhow!("no system randomness for the tunnel secret"))?;
                fresh
            }
        };
        Ok(Tunnels { secret, ids })
    }

    /// Node `name`'s hop key.
    pub fn hop_key(&self, name: &str) -> HopKey {
        HopKey::derive(&self.secret, name)
    }
}

impl Controller {
    /// Set up a tunnel along `decision`'s chosen path to `target` at its target site.
    pub(crate) async fn setup_tunnel(
        &self,
        decision: &DecisionRecord,
        target: Target<'_>,
        expires_unix_ms: u64,
    ) -> Result<TunnelRecord, SetupFailed> {
        match self.try_setup_tunnel(decision, target, expires_unix_ms).await {
            Err(e) if e.retry => {
                tracing::info!("tunnel setup failed transiently, once more: {e}");
                tokio::time::sleep(SETUP_RETRY_AFTER).await;
                self.try_setup_tunnel(decision, target, expires_unix_ms).await
            }
            done => done,
        }
    }

    async fn try_setup_tunnel(
        &self,
        decision: &DecisionRecord,
        target: Target<'_>,
        expires_unix_ms: u64,
    ) -> Result<TunnelRecord, SetupFailed> {
        let id = self.tunnels.ids.next().await.map_err(|e| SetupFailed {
            failed: vec![("store".into(), format!("no id for the tunnel: {e}"))],
            rolled_back: Vec::new(),
            retry: true,
            denied: false,
        })?;
        let mut path = decision.decision.chosen().path.clone();
        path.push(decision.to.clone());
        let plan =
            setup::plan(id, &self.name, &path, target, expires_unix_ms, |hop| self.tunnels.hop_key(hop));
        let span = tracing::info_span!("tunnel", tunnel = id, hops = ?path);
        let requests = plan.hops.iter().map(|hop| {
            let request = Control::TunnelSetup { grant: hop.grant.clone(), token: hop.token.clone() };
            let conn = self.nodes.connection(&hop.grant.hop);
            async move {
                let Some(conn) = conn else {
                    return HopAnswer::Failed {
                        reason: "not connected to the controller".into(),
                        retry: false,
                    };
                };
                match tokio::time::timeout(SETUP_TIMEOUT, stream::request(&conn, &request)).await {
                    Err(_) => HopAnswer::Failed {
                        reason: format!("no answer within {SETUP_TIMEOUT:?}"),
                        retry: false,
                    },
                    Ok(Ok(Control::TunnelReady { tunnel })) if tunnel == id => HopAnswer::Ready,
                    Ok(Ok(other)) => {
                        HopAnswer::Failed { reason: format!("unexpected answer {other:?}"), retry: false }
                    }
                    Ok(Err(e)) => match e.downcast_ref::<Refusal>() {
                        Some(r) if r.code == RefusalCode::Denied => {
                            HopAnswer::Denied { reason: r.reason.clone() }
                        }
                        Some(r) => HopAnswer::Failed { reason: r.reason.clone(), retry: r.retry },
                        None => HopAnswer::Failed { reason: format!("{e:#}"), retry: false },
                    },
                }
            }
        });
        let answers = join_all(requests).await;
        let record = TunnelRecord {
            id,
            decision: decision.id,
            hops: plan.hop_names(),
            endpoint: target.endpoint.to_owned(),
            account: target.account.to_owned(),
            capability: target.capability.map(str::to_owned),
            expires_unix_ms,
            site_token: plan.site_token().unwrap_or_default().to_owned(),
        };
        match plan.outcome(&answers) {
            Ok(()) => {
                tracing::info!(parent: &span, "tunnel set up");
                Ok(record)
            }
            Err(failed) => {
                tracing::warn!(parent: &span, "{failed}");
                self.teardown_on(id, &failed.rolled_back).await;
                Err(failed)
            }
        }
    }

    /// Tear `tunnel` down on every hop.
    pub(crate) async fn teardown_tunnel(&self, tunnel: &TunnelRecord) {
        self.forget_label(tunnel.id);
        self.teardown_on(tunnel.id, &tunnel.hops).await;
    }

    async fn teardown_on(&self, id: u64, hops: &[String]) {
        let calls = hops.iter().map(|hop| {
            let conn = self.nodes.connection(hop);
            async move {
                if let Some(conn) = conn {
                    let request = Control::TunnelTeardown { tunnel: id };
                    // Best effort: a hop that cannot be told drops the tunnel at expiry.
                    let _ = tokio::time::timeout(SETUP_TIMEOUT, stream::request(&conn, &request)).await;
                }
            }
        });
        join_all(calls).await;
    }
}
