//! A site's reports: discover the platform's services through the adapter ([`crate::discovery`])
//! and report them to the controller — when the control channel comes up, then every
//! `report_every` ± 25 % (so that sites spread out), and when the controller asks. One run at
//! a time: a request during a run joins it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::Notify;

use crate::blocking::Pool;
use crate::catalog::{Bounds, ServiceInfo, Trigger};
use crate::discovery::{self, CloudAccess, DiscoveryLimits};
use crate::mesh::messages::Control;
use crate::mesh::stream::Framed;
use crate::plugin::PluginRegistry;

/// The registry name of a site's adapter.
pub const ADAPTER: &str = "adapter";
/// The registry name of a site's authorizer.
pub const AUTHORIZER: &str = "authorizer";
/// A report page's services are cut at about this many bytes of JSON (frames carry 1 MiB).
const PAGE_BYTES: usize = 256 << 10;
/// How long the controller may take to answer a report.
const ANSWER_TIME: Duration = Duration::from_secs(120);

/// What a site needs to report.
pub struct Reporter {
    /// The site's plugins (the adapter under [`ADAPTER`]).
    pub plugins: Arc<PluginRegistry>,
    /// The site's cloud.
    pub cloud: CloudAccess,
    /// Bounds on one discovery run.
    pub limits: DiscoveryLimits,
    /// Bounds on the report (the controller's defaults).
    pub bounds: Bounds,
    /// The site's plugin pool.
    pub pool: Pool,
    /// Time between periodic reports (before jitter).
    pub every: Duration,
    /// Set while a run is under way.
    pub running: AtomicBool,
    /// Woken by on-demand requests.
    pub wake: Notify,
    /// The endpoints the site publishes to tunnels: a service reached through one is marked
    /// with its name (`published-endpoint`), so that bindings by capability can reach it.
    pub published: Vec<crate::config::Endpoint>,
    /// Discovery runs by outcome (`ok`, `failed`), for `/metrics`.
    pub runs: crate::metrics::Counters,
    /// How long the runs took.
    pub run_time: crate::metrics::Histogram,
}

impl Reporter {
    /// Its discovery runs and their times, for `/metrics`.
    pub fn write_metrics(&self, e: &mut crate::metrics::Exposition) {
        use crate::metrics::Kind;
        let platform = self.cloud.platform.as_str();
        let mut f = e.family(
            "skybridge_discovery_runs_total",
            Kind::Counter,
            "Discovery runs against the site's cloud, by outcome.",
        );
        for (labels, n) in self.runs.snapshot() {
            f.sample(&[("platform", platform), ("outcome", &labels[0])], n as f64);
        }
        e.family("skybridge_discovery_duration_seconds", Kind::Histogram, "Time of a successful discovery run: every request to the cloud and the adapter's reading of the answers.")
            .histogram(&[("platform", platform)], &self.run_time.snapshot());
    }
}

/// Mark each service whose endpoint's `host:port` is a published endpoint's address.
pub fn mark_published(services: &mut [ServiceInfo], published: &[crate::config::Endpoint]) {
    for service in services {
        let rest = service.endpoint.split_once("://").map_or(service.endpoint.as_str(), |(_, r)| r);
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if let Some(e) = published.iter().find(|e| e.addr.to_string() == authority) {
            service.attributes.insert(crate::catalog::PUBLISHED_ENDPOINT.into(), e.name.clone());
        }
    }
}

impl Reporter {
    /// Ask for a run now; returns whether one is already running (the request joins it).
    pub fn request(&self) -> bool {
        let running = self.running.load(Ordering::SeqCst);
        if !running {
            self.wake.notify_one();
        }
        running
    }

    /// Report on every new controller connection, periodically, and on request, forever.
    pub async fn run(self: Arc<Self>, uplinks: super::uplinks::Uplinks) {
        let mut changes = uplinks.subscribe();
        // The connections reported to so far: a new one (a controller came up) gets a report
        // at once — every controller keeps the inventories its sites report to it.
        let mut known: Vec<usize> = Vec::new();
        let mut trigger = None;
        let mut next = tokio::time::Instant::now();
        loop {
            changes.borrow_and_update();
            let live = uplinks.all();
            if live.is_empty() {
                known.clear();
                if changes.changed().await.is_err() {
                    return;
                }
                continue;
            }
            let ids: Vec<usize> = live.iter().map(|l| l.conn.stable_id()).collect();
            if ids.iter().any(|id| !known.contains(id)) {
                trigger = Some(Trigger::Connect);
            }
            known = ids;
            if let Some(t) = trigger.take() {
                self.report(&live, t).await;
                next = tokio::time::Instant::now() + jittered(self.every);
            }
            tokio::select! {
                () = tokio::time::sleep_until(next) => trigger = Some(Trigger::Periodic),
                () = self.wake.notified() => trigger = Some(Trigger::OnDemand),
                changed = changes.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Discover once, and report what was found to every live controller.
    async fn report(&self, live: &[super::uplinks::Live], trigger: Trigger) {
        self.running.store(true, Ordering::SeqCst);
        let platform = self.cloud.platform.clone();
        let outcome = match self.plugins.get(ADAPTER) {
            None => Err("no adapter is loaded".to_owned()),
            Some(adapter) => {
                discovery::discover(adapter, &self.cloud, &self.limits, &self.bounds, &self.pool)
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        self.running.store(false, Ordering::SeqCst);
        self.runs.inc(&[if outcome.is_ok() { "ok" } else { "failed" }]);
        if let Ok(found) = &outcome {
            self.run_time.observe(found.took);
        }
        let sent = match outcome {
            Ok(mut found) => {
                mark_published(&mut found.services, &self.published);
                tracing::info!(
                    %platform, ?trigger, services = found.services.len(), requests = found.requests,
                    answer_bytes = found.answer_bytes, took_ms = found.took.as_millis() as u64,
                    "discovered"
                );
                let ms = u64::try_from(found.took.as_millis()).unwrap_or(u64::MAX);
                let sends = live.iter().map(|l| {
                    let (services, gone) = (found.services.clone(), found.gone.clone());
                    send_report(&l.conn, &platform, trigger, services, gone, found.requests, ms)
                });
                crate::controller::join_all(sends).await
            }
            Err(reason) => {
                tracing::warn!(%platform, ?trigger, "discovery failed: {reason}");
                let sends = live.iter().map(|l| {
                    let failed = Control::DiscoveryFailed {
                        platform: platform.clone(),
                        trigger,
                        reason: reason.clone(),
                    };
                    send(&l.conn, vec![failed])
                });
                crate::controller::join_all(sends).await
            }
        };
        for (l, sent) in live.iter().zip(sent) {
            match sent {
                Ok(summary) => {
                    tracing::info!(%platform, controller = %l.controller, ?summary, "report integrated by the controller")
                }
                Err(e) => {
                    tracing::warn!(%platform, controller = %l.controller, "report not integrated: {e:#}")
                }
            }
        }
    }
}

/// `every` ± 25 %, at random.
fn jittered(every: Duration) -> Duration {
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    let unit = (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
    every.mul_f64(0.75 + unit * 0.5)
}

/// Cut `services`, then the `gone` ids, into pages of about 256 KiB of JSON and send them on
/// one stream.
pub async fn send_report(
    conn: &quinn::Connection,
    platform: &str,
    trigger: Trigger,
    services: Vec<ServiceInfo>,
    gone: Vec<String>,
    requests: usize,
    discovery_ms: u64,
) -> anyhow::Result<crate::catalog::ReportSummary> {
    let mut pages: Vec<(Vec<ServiceInfo>, Vec<String>)> = vec![Default::default()];
    let mut bytes = 0;
    // Starts a new page when `size` more bytes would overflow a page that has something.
    let mut room = |pages: &mut Vec<(Vec<ServiceInfo>, Vec<String>)>, size: usize| {
        let used = pages.last().is_some_and(|(s, g)| !s.is_empty() || !g.is_empty());
        if bytes + size > PAGE_BYTES && used {
            pages.push(Default::default());
            bytes = 0;
        }
        bytes += size;
    };
    for service in services {
        room(&mut pages, serde_json::to_vec(&service).map(|v| v.len()).unwrap_or(0));
        if let Some((page, _)) = pages.last_mut() {
            page.push(service);
        }
    }
    for id in gone {
        room(&mut pages, id.len() + 3);
        if let Some((_, page)) = pages.last_mut() {
            page.push(id);
        }
    }
    let count = pages.len();
    let messages = pages
        .into_iter()
        .enumerate()
        .map(|(i, (services, gone))| Control::ReportPage {
            platform: platform.to_owned(),
            trigger,
            page: u32::try_from(i).unwrap_or(u32::MAX),
            last: i + 1 == count,
            services,
            gone,
            requests,
            discovery_ms,
        })
        .collect();
    send(conn, messages).await
}

async fn send(
    conn: &quinn::Connection,
    messages: Vec<Control>,
) -> anyhow::Result<crate::catalog::ReportSummary> {
    let started = Instant::now();
    let mut stream = Framed::new(conn.open_bi().await.context("opening a report stream")?);
    for m in &messages {
        stream.send(m).await?;
    }
    let answer = tokio::time::timeout(ANSWER_TIME.saturating_sub(started.elapsed()), stream.recv())
        .await
        .context("the controller did not answer the report in time")??;
    match answer {
        Some(Control::ReportIntegrated { summary }) => Ok(summary),
        Some(Control::Refused { reason, .. }) => bail!("refused: {reason}"),
        other => bail!("unexpected answer to a report: {other:?}"),
    }
}
