//! A relay's or site's `/metrics`, on its optional `metrics_listen`: its links as it measures
//! them, its peers and the silences it noticed, the tunnels through it, whether it is
//! connected to the controller, and on a site its plugins and discovery runs.
//!
//! The listener serves `GET /metrics` and nothing else, without authentication (what it shows
//! is the node's own view of the mesh, as node_exporter shows a host's): bind it to an address
//! only the monitoring network reaches. At most [`MAX_SCRAPERS`] connections at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use super::reporter::Reporter;
use crate::mesh::identity::Role;
use crate::mesh::probe::Prober;
use crate::metrics::{Exposition, Kind};
use crate::plugin::PluginRegistry;
use crate::tunnel::hop::HopTable;

/// Connections served at once; more wait.
pub const MAX_SCRAPERS: usize = 16;

/// What a node's scrape reads.
pub struct NodeMetrics {
    /// The node's name.
    pub name: String,
    /// Relay or site.
    pub role: Role,
    /// Its links and peers.
    pub prober: Arc<Prober>,
    /// The tunnels through it.
    pub tunnels: Arc<HopTable>,
    /// Its live controller sessions.
    pub uplinks: super::uplinks::Uplinks,
    /// A site's plugins.
    pub plugins: Option<Arc<PluginRegistry>>,
    /// A site's discovery.
    pub reporter: Option<Arc<Reporter>>,
}

impl NodeMetrics {
    /// A scrape, in Prometheus's text format.
    pub fn render(&self) -> String {
        let mut e = Exposition::new();
        let me = self.name.as_str();
        let reports = self.prober.link_reports();
        let mut f = e.family(
            "skybridge_link_rtt_seconds",
            Kind::Gauge,
            "Smoothed round-trip time of a link this node probes (NaN before the first answer).",
        );
        for r in &reports {
            f.sample(
                &[("from", me), ("to", &r.neighbour)],
                r.stats.rtt_ms.map_or(f64::NAN, |ms| ms / 1000.0),
            );
        }
        let mut f =
            e.family("skybridge_link_jitter_seconds", Kind::Gauge, "Jitter of a link this node probes.");
        for r in &reports {
            f.sample(&[("from", me), ("to", &r.neighbour)], r.stats.jitter_ms / 1000.0);
        }
        let mut f = e.family(
            "skybridge_link_loss_ratio",
            Kind::Gauge,
            "Share of a link's recent probes that were lost.",
        );
        for r in &reports {
            f.sample(&[("from", me), ("to", &r.neighbour)], r.stats.loss);
        }
        let mut f = e.family(
            "skybridge_link_silent",
            Kind::Gauge,
            "Whether a neighbour relay fell silent lately and its connection was closed (1) or not (0).",
        );
        for r in &reports {
            f.sample(&[("from", me), ("to", &r.neighbour)], if r.silent { 1.0 } else { 0.0 });
        }
        e.family("skybridge_peer_connections", Kind::Gauge, "Open mesh connections with relays and sites.")
            .sample(&[("node", me), ("role", self.role.as_str())], self.prober.peers().open() as f64);
        e.family(
            "skybridge_peer_silences_total",
            Kind::Counter,
            "Peers whose connection was closed because nothing arrived from them for silent_after_ms.",
        )
        .sample(&[("node", me)], self.prober.silences() as f64);
        e.family("skybridge_hop_tunnels", Kind::Gauge, "Tunnels set up through this node.")
            .sample(&[("node", me)], self.tunnels.tunnels().len() as f64);
        let switched = self.tunnels.switch().counters();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed) as f64;
        e.family(
            "skybridge_forwarded_packets_total",
            Kind::Counter,
            "Tunnels' labelled packets this node forwarded to the next hop, unread.",
        )
        .sample(&[("node", me)], load(&switched.forwarded));
        e.family("skybridge_forwarded_bytes_total", Kind::Counter, "Bytes of the packets forwarded.")
            .sample(&[("node", me)], load(&switched.forwarded_bytes));
        let mut f = e.family(
            "skybridge_tunnel_end_packets_total",
            Kind::Counter,
            "Packets of tunnels ending at this node: received (in) and sent (out).",
        );
        f.sample(&[("node", me), ("direction", "in")], load(&switched.delivered));
        f.sample(&[("node", me), ("direction", "out")], load(&switched.sent));
        let mut f = e.family(
            "skybridge_dropped_packets_total",
            Kind::Counter,
            "Labelled packets dropped, by reason: junk, unknown_label, wrong_neighbour, expired, send_failed.",
        );
        for why in crate::mesh::switch::Dropped::ALL {
            f.sample(&[("node", me), ("reason", why.as_str())], switched.dropped(why) as f64);
        }
        let sessions = self.uplinks.all().len();
        e.family(
            "skybridge_controller_connected",
            Kind::Gauge,
            "Whether the node is registered with a controller (1) or with none (0).",
        )
        .sample(&[("node", me)], if sessions > 0 { 1.0 } else { 0.0 });
        e.family(
            "skybridge_controller_sessions",
            Kind::Gauge,
            "Controllers the node is registered with (each of a group's, when it is configured with several).",
        )
        .sample(&[("node", me)], sessions as f64);
        if let Some(plugins) = &self.plugins {
            plugins.write_metrics(&mut e);
        }
        if let Some(reporter) = &self.reporter {
            reporter.write_metrics(&mut e);
        }
        e.finish()
    }
}

/// Bind `addr` for [`serve`] (at start, so that a taken address is an error then).
pub fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))?;
    listener.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(listener)?)
}

/// Serve `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<NodeMetrics>) {
    let room = Arc::new(Semaphore::new(MAX_SCRAPERS));
    loop {
        let Ok(permit) = Arc::clone(&room).acquire_owned().await else { return };
        let Ok((stream, _)) = listener.accept().await else { continue };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let metrics = Arc::clone(&metrics);
                async move {
                    let (status, body, content_type) = match (req.method(), req.uri().path()) {
                        (&Method::GET, "/metrics") => {
                            (StatusCode::OK, metrics.render(), crate::metrics::CONTENT_TYPE)
                        }
                        (_, "/metrics") => {
                            (StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into(), "text/plain")
                        }
                        _ => (StatusCode::NOT_FOUND, "only /metrics is served here\n".into(), "text/plain"),
                    };
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    *response.status_mut() = status;
                    response.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static(content_type),
                    );
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}
