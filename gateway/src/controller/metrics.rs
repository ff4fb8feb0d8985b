//! The controller's `/metrics`: the mesh as the view has it (nodes, links), bindings with
//! their connections and bytes, plugins with their calls, times and failures, the catalog and
//! its authorizations — read at each scrape — and what only happens once (decisions,
//! re-routes, sessions, HTTP answers, refreshes), counted as it happens in [`Recorded`].

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Controller;
use crate::mesh::membership::NodeState;
use crate::metrics::{Counters, Exposition, Histogram, Kind, SECONDS_BUCKETS};

/// What the controller counts as it happens.
#[derive(Debug)]
pub struct Recorded {
    /// Path decisions by outcome (`ok`, `failed`).
    pub decisions: Counters,
    /// How long a decision took (graph, probes, scoring).
    pub decision_time: Histogram,
    /// Re-routes by cause (`dead`, `degraded`).
    pub reroutes: Counters,
    /// Sessions (uses of a binding) by mode.
    pub sessions: Counters,
    /// HTTP answers of `http` bindings by status code.
    pub http_answers: Counters,
    /// Discovery reports by platform and outcome (`integrated`, `discovery-failed`, `refused`,
    /// `failed`).
    pub refreshes: Counters,
    /// From a report's first page to its answer, by platform.
    refresh_time: Mutex<BTreeMap<String, Histogram>>,
}

impl Default for Recorded {
    fn default() -> Self {
        Recorded {
            decisions: Counters::default(),
            decision_time: Histogram::new(SECONDS_BUCKETS),
            reroutes: Counters::default(),
            sessions: Counters::default(),
            http_answers: Counters::default(),
            refreshes: Counters::default(),
            refresh_time: Mutex::default(),
        }
    }
}

impl Recorded {
    /// A report from `platform` was answered with `outcome`, `took` after its first page.
    pub fn refresh(&self, platform: &str, outcome: &str, took: Duration) {
        self.refreshes.inc(&[platform, outcome]);
        super::lock(&self.refresh_time)
            .entry(platform.to_owned())
            .or_insert_with(|| Histogram::new(SECONDS_BUCKETS))
            .observe(took);
    }
}

fn seconds(ms: Option<f64>) -> f64 {
    ms.map_or(f64::NAN, |ms| ms / 1000.0)
}

impl Controller {
    /// What it counts as it happens.
    pub fn recorded(&self) -> &Recorded {
        &self.recorded
    }

    /// A scrape, in Prometheus's text format.
    pub async fn metrics(&self) -> String {
        let mut e = Exposition::new();
        let now = Instant::now();
        let (nodes, links) = {
            let view = self.nodes.view();
            (view.nodes(now), view.links(now))
        };
        let mut f = e.family(
            "skybridge_node_up",
            Kind::Gauge,
            "Whether a registered relay or site is up (1) or down (0).",
        );
        for n in &nodes {
            let up = if n.state == NodeState::Up { 1.0 } else { 0.0 };
            f.sample(&[("node", &n.name), ("role", n.role.as_str())], up);
        }
        let mut f = e.family(
            "skybridge_node_last_seen_seconds",
            Kind::Gauge,
            "Time since a node was last heard from.",
        );
        for n in &nodes {
            f.sample(&[("node", &n.name), ("role", n.role.as_str())], n.last_seen_ms as f64 / 1000.0);
        }
        let mut f = e.family("skybridge_link_rtt_seconds", Kind::Gauge, "Smoothed round-trip time of a relay link, as its prober reports it (NaN before the first answer).");
        for l in &links {
            f.sample(&[("from", &l.from), ("to", &l.to)], seconds(l.stats.rtt_ms));
        }
        let mut f = e.family("skybridge_link_jitter_seconds", Kind::Gauge, "Jitter of a relay link.");
        for l in &links {
            f.sample(&[("from", &l.from), ("to", &l.to)], l.stats.jitter_ms / 1000.0);
        }
        let mut f = e.family(
            "skybridge_link_loss_ratio",
            Kind::Gauge,
            "Share of a relay link's recent probes that were lost.",
        );
        for l in &links {
            f.sample(&[("from", &l.from), ("to", &l.to)], l.stats.loss);
        }
        let mut f = e.family(
            "skybridge_link_usable",
            Kind::Gauge,
            "Whether the path engine uses a link (1) or not (0: an end down, stale, dead or silent).",
        );
        for l in &links {
            f.sample(&[("from", &l.from), ("to", &l.to)], if l.usable { 1.0 } else { 0.0 });
        }

        let r = &self.recorded;
        let mut f = e.family("skybridge_decisions_total", Kind::Counter, "Path decisions, by outcome.");
        for (labels, n) in r.decisions.snapshot() {
            f.sample(&[("outcome", &labels[0])], n as f64);
        }
        e.family(
            "skybridge_decision_duration_seconds",
            Kind::Histogram,
            "Time to decide a path: candidates, end-to-end probes, scoring.",
        )
        .histogram(&[], &r.decision_time.snapshot());
        let mut f =
            e.family("skybridge_reroutes_total", Kind::Counter, "Bindings moved to a new path, by cause.");
        for (labels, n) in r.reroutes.snapshot() {
            f.sample(&[("cause", &labels[0])], n as f64);
        }

        let mut f = e.family(
            "skybridge_end_to_end_connections_total",
            Kind::Counter,
            "End-to-end connections made to sites for bindings, by cause: a binding's first client, a renewal (after ingress.renew_after_streams clients), or a replacement (the previous one closed).",
        );
        for (labels, n) in self.carriers.made() {
            f.sample(&[("cause", &labels[0])], n as f64);
        }
        e.family(
            "skybridge_end_to_end_connections",
            Kind::Gauge,
            "End-to-end connections open now, renewed ones still carrying their last clients included.",
        )
        .sample(&[], self.carriers.open() as f64);

        let bindings = self.bindings.list();
        e.family("skybridge_bindings", Kind::Gauge, "Open bindings (each carried by one tunnel).")
            .sample(&[], bindings.len() as f64);
        let ids: Vec<String> = bindings.iter().map(|b| b.id.to_string()).collect();
        let labelled = || {
            bindings.iter().zip(&ids).map(|(b, id)| {
                (b, [("binding", id.as_str()), ("to", b.to.as_str()), ("endpoint", b.endpoint.as_str())])
            })
        };
        let mut f = e.family(
            "skybridge_binding_connections_total",
            Kind::Counter,
            "Client connections a binding accepted.",
        );
        for (b, l) in labelled() {
            f.sample(&l, b.connections as f64);
        }
        let mut f = e.family(
            "skybridge_binding_active_connections",
            Kind::Gauge,
            "Client connections a binding carries now.",
        );
        for (b, l) in labelled() {
            f.sample(&l, b.active as f64);
        }
        let mut f = e.family(
            "skybridge_binding_bytes_total",
            Kind::Counter,
            "Bytes a binding carried, by direction (up: towards the endpoint).",
        );
        for (b, [a, c, d]) in labelled() {
            f.sample(&[a, c, d, ("direction", "up")], b.bytes_up as f64);
            f.sample(&[a, c, d, ("direction", "down")], b.bytes_down as f64);
        }
        let mut f = e.family(
            "skybridge_sessions_total",
            Kind::Counter,
            "Uses of bindings (one per client connection or HTTP request), by mode.",
        );
        for (labels, n) in r.sessions.snapshot() {
            f.sample(&[("mode", &labels[0])], n as f64);
        }
        let mut f = e.family(
            "skybridge_http_responses_total",
            Kind::Counter,
            "Answers of http bindings, by status code (the target's, or the gateway's own refusal).",
        );
        for (labels, n) in r.http_answers.snapshot() {
            f.sample(&[("code", &labels[0])], n as f64);
        }

        self.plugins.write_metrics(&mut e);

        match self.store.catalog_counts().await {
            Ok(counts) => {
                e.family("skybridge_catalog_entries", Kind::Gauge, "Capabilities in the catalog.")
                    .sample(&[], counts.entries as f64);
                e.family(
                    "skybridge_catalog_associations",
                    Kind::Gauge,
                    "Platforms offering a catalog entry, over all entries.",
                )
                .sample(&[], counts.associations as f64);
                e.family(
                    "skybridge_inventory_services",
                    Kind::Gauge,
                    "Services the platforms' sites discovered, on record.",
                )
                .sample(&[], counts.inventory as f64);
                let mut f =
                    e.family("skybridge_authorizations", Kind::Gauge, "Capability authorizations, by state.");
                for state in crate::catalog::AuthorizationState::ALL {
                    let n = counts.authorizations.get(&state).copied().unwrap_or(0);
                    f.sample(&[("state", state.as_str())], n as f64);
                }
            }
            Err(e) => tracing::warn!("metrics: cannot count the catalog: {e}"),
        }
        let mut f = e.family(
            "skybridge_refreshes_total",
            Kind::Counter,
            "Discovery reports from platforms' sites, by outcome.",
        );
        for (labels, n) in r.refreshes.snapshot() {
            f.sample(&[("platform", &labels[0]), ("outcome", &labels[1])], n as f64);
        }
        let times: Vec<_> =
            super::lock(&r.refresh_time).iter().map(|(p, h)| (p.clone(), h.snapshot())).collect();
        let mut f = e.family(
            "skybridge_refresh_duration_seconds",
            Kind::Histogram,
            "From a report's first page to its answer at the controller.",
        );
        for (platform, h) in &times {
            f.histogram(&[("platform", platform)], h);
        }
        e.finish()
    }
}
