//! Connection requests, DESIGN.md steps 1–4: the requesting and target platforms' nearest
//! relays are looked up in the mesh view; up to k loop-free paths between them are enumerated
//! over the current link latencies; the first relay probes each candidate end to end through
//! its relays; the scorer plugin scores the measured metrics with the policy's weights (on the
//! plugin pool). A decision is stored once it is used — at once for a site's connection
//! request, after its tunnel is up for a binding — so failed attempts leave no record.

use std::time::Instant;

use super::Controller;
use crate::mesh::messages::Control;
use crate::mesh::stream;
use crate::path::{DecisionRecord, LinkStats, PathScorer, select};
use crate::store::StoreError;

/// Why a connection request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No such platform has registered.
    #[error("unknown platform `{name}` (known platforms: {known})")]
    UnknownPlatform {
        /// The name asked for.
        name: String,
        /// Those that exist, comma-separated.
        known: String,
    },
    /// The platform, or the mesh, cannot serve the request now; it may later.
    #[error("{0}")]
    Unavailable(String),
    /// Nothing could be scored (every candidate failed, or the scorer is gone).
    #[error("{0}")]
    Failed(String),
    /// The decision could not be stored.
    #[error("cannot store the decision: {0}")]
    Store(#[from] StoreError),
}

impl Controller {
    /// Decide a path for a connection from platform `from` to platform `to`, and store it.
    pub async fn decide(&self, from: &str, to: &str) -> Result<DecisionRecord, ConnectError> {
        let record = self.choose_path(from, to).await?;
        self.record_decision(record).await
    }

    /// Decide a path from `from` to `to` without storing it (its id is 0).
    pub(crate) async fn choose_path(&self, from: &str, to: &str) -> Result<DecisionRecord, ConnectError> {
        let started = Instant::now();
        let decided = self.choose_path_untimed(from, to).await;
        let recorded = &self.recorded;
        recorded.decisions.inc(&[if decided.is_ok() { "ok" } else { "failed" }]);
        recorded.decision_time.observe(started.elapsed());
        decided
    }

    async fn choose_path_untimed(&self, from: &str, to: &str) -> Result<DecisionRecord, ConnectError> {
        let (policy, scorer) = self.policy.current();
        let scorer = scorer.ok_or_else(|| ConnectError::Failed("no scorer is loaded".into()))?;
        if from == to {
            return Err(ConnectError::Unavailable(format!("platform `{from}` cannot connect to itself")));
        }
        // Steps 1–2 from the mesh view: routing relays and candidate paths.
        let (first, second, paths) = {
            let view = self.nodes.view();
            let first = view.nearest_relay(from)?;
            let second = view.nearest_relay(to)?;
            let graph = view.graph(Instant::now()).map_err(|e| ConnectError::Failed(e.to_string()))?;
            let paths = graph.k_shortest_paths(&first, &second, policy.k).map_err(|e| {
                ConnectError::Unavailable(format!("no path from relay {first} to relay {second}: {e}"))
            })?;
            (first, second, paths)
        };
        if paths.is_empty() {
            return Err(ConnectError::Unavailable(format!(
                "no path from relay {first} (nearest {from}) to relay {second} (nearest {to}) in the link-state graph"
            )));
        }
        let first_conn = self.nodes.connection(&first).ok_or_else(|| {
            ConnectError::Unavailable(format!("relay {first} is not connected to the controller"))
        })?;

        // Step 3: probe every candidate end to end, all at once, from the first relay.
        let probes = paths.iter().map(|path| {
            let request = Control::ProbePath {
                route: path.nodes.clone(),
                count: policy.probes,
                interval_ms: policy.probe_interval_ms,
            };
            let conn = first_conn.clone();
            async move {
                match stream::request(&conn, &request).await {
                    Ok(Control::PathProbed { stats }) => stats,
                    Ok(other) => {
                        tracing::warn!(?other, "unexpected answer to a path probe");
                        LinkStats { rtt_ms: None, jitter_ms: 0.0, loss: 1.0, samples: 0 }
                    }
                    Err(e) => {
                        tracing::warn!(route = ?request, "path probe failed: {e:#}");
                        LinkStats { rtt_ms: None, jitter_ms: 0.0, loss: 1.0, samples: 0 }
                    }
                }
            }
        });
        let measured = super::join_all(probes).await;
        let candidates: Vec<_> = paths.into_iter().zip(measured).collect();

        // Step 4: score on the plugin pool (each call may run up to the scorer's deadline).
        let weights: Vec<(String, f64)> = policy.weights.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let decision = self
            .plugin_calls
            .run(move || select(&candidates, scorer.as_ref() as &dyn PathScorer, &weights))
            .await
            .map_err(|e| ConnectError::Failed(e.to_string()))?
            .map_err(|e| ConnectError::Failed(format!("path selection failed: {e}")))?;

        let record = DecisionRecord {
            id: 0,
            from: from.to_owned(),
            to: to.to_owned(),
            first_relay: first,
            second_relay: second,
            created_unix_ms: crate::time::now_unix_ms(),
            policy,
            decision,
        };
        Ok(record)
    }

    /// Store a decision that is being used; it comes back with its id.
    pub(crate) async fn record_decision(
        &self,
        record: DecisionRecord,
    ) -> Result<DecisionRecord, ConnectError> {
        let record = self.store.insert_decision(record).await?;
        tracing::info!(
            decision = record.id, from = %record.from, to = %record.to, path = ?record.decision.chosen().path,
            score = ?record.decision.chosen().score, "connection decided"
        );
        self.events.publish(super::events::Event::Decided {
            decision: record.id,
            from: record.from.clone(),
            to: record.to.clone(),
            path: record.decision.chosen().path.clone(),
        });
        Ok(record)
    }

    /// A stored decision record.
    pub async fn decision(&self, id: u64) -> Result<Option<DecisionRecord>, StoreError> {
        self.store.decision(id).await
    }

    /// The latest decision records, newest first.
    pub async fn recent_decisions(&self, limit: usize) -> Result<Vec<DecisionRecord>, StoreError> {
        self.store.recent_decisions(limit).await
    }
}
