//! The relay role: a mesh node that dials its configured neighbours, accepts neighbours and
//! sites, probes its links continuously, forwards routed path probes and tunnels' labelled
//! packets (its mesh socket does, from the entries tunnel setup installs), and reports to the
//! controller.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::metrics;
use super::uplink::Uplink;
use crate::config::{Peer, Probing, RelayConfig};
use crate::mesh::identity::Role;
use crate::mesh::probe::Prober;
use crate::mesh::transport::{MeshEndpoint, peer_name};
use crate::path::LinkEstimator;
use crate::tunnel::hop::HopTable;

/// A running relay.
pub struct Relay {
    endpoint: Arc<MeshEndpoint>,
    prober: Arc<Prober>,
    tunnels: Arc<HopTable>,
    metrics_addr: Option<SocketAddr>,
    tasks: JoinSet<()>,
}

impl Relay {
    /// Bind, then run in the background: accept peers, dial and probe neighbours, keep the
    /// controller session.
    pub fn start(config: RelayConfig) -> anyhow::Result<Relay> {
        let identity = config.tls.load(&config.name, Role::Relay)?;
        let endpoint =
            Arc::new(MeshEndpoint::bind_relay(config.listen, identity, &[Role::Relay, Role::Site])?);
        let listen = endpoint.local_addr()?;
        let prober = Prober::new(&config.name, true, config.probing.silent_after());
        let switch = Arc::clone(endpoint.switch());
        let tunnels = HopTable::new(&config.name, Default::default(), switch);
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_peers(Arc::clone(&endpoint), Arc::clone(&prober)));
        tasks.spawn(expire_tunnels(Arc::clone(&tunnels)));
        let controllers = config.controllers();
        dial_and_watch(&mut tasks, &endpoint, &prober, config.neighbours, config.probing);
        let uplinks = super::uplinks::Uplinks::default();
        let metrics_addr = match config.metrics_listen {
            Some(addr) => {
                let listener = metrics::bind(addr)?;
                let bound = listener.local_addr()?;
                let node = metrics::NodeMetrics {
                    name: config.name.clone(),
                    role: Role::Relay,
                    prober: Arc::clone(&prober),
                    tunnels: Arc::clone(&tunnels),
                    uplinks: uplinks.clone(),
                    plugins: None,
                    reporter: None,
                };
                tasks.spawn(metrics::serve(listener, Arc::new(node)));
                Some(bound)
            }
            None => None,
        };
        for controller in controllers {
            let uplink = Uplink {
                endpoint: Arc::clone(&endpoint),
                role: Role::Relay,
                listen: Some(listen),
                controller,
                prober: Arc::clone(&prober),
                tunnels: Arc::clone(&tunnels),
                report_every: config.probing.report(),
                uplinks: uplinks.clone(),
                reporter: None,
                consent: None,
            };
            tasks.spawn(uplink.run());
        }
        tracing::info!(relay = %config.name, %listen, "relay started");
        Ok(Relay { endpoint, prober, tunnels, metrics_addr, tasks })
    }

    /// The bound QUIC address.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Where its metrics are served, if they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The relay's probe hub (its links' statistics).
    pub fn prober(&self) -> &Arc<Prober> {
        &self.prober
    }

    /// The tunnels set up through this relay.
    pub fn tunnels(&self) -> &Arc<HopTable> {
        &self.tunnels
    }

    /// Stop: close every connection at once (peers see the relay vanish) and end all tasks.
    pub fn shutdown(mut self) {
        self.endpoint.close();
        self.tasks.abort_all();
    }

    /// Run until the task set ends (it does not, unless shut down).
    pub async fn wait(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Accept relays and sites; attach each to the prober under the name its certificate carries.
pub(super) async fn accept_peers(endpoint: Arc<MeshEndpoint>, prober: Arc<Prober>) {
    while let Some((conn, role)) = endpoint.accept().await {
        match peer_name(&conn) {
            Some(name) => {
                tracing::debug!(peer = %name, %role, "peer connected");
                prober.attach(&name, conn, role == Role::Relay);
            }
            None => conn.close(1u32.into(), b"certificate carries no node name"),
        }
    }
}

/// Keep a connection to each relay in `peers`, and probe it continuously.
pub(super) fn dial_and_watch(
    tasks: &mut JoinSet<()>,
    endpoint: &Arc<MeshEndpoint>,
    prober: &Arc<Prober>,
    peers: Vec<Peer>,
    probing: Probing,
) {
    let estimator = LinkEstimator::new(probing.window, Duration::from_millis(probing.timeout_ms));
    for peer in peers {
        let dial = keep_dialing(Arc::clone(endpoint), peer.clone(), Arc::clone(prober));
        tasks.spawn(dial);
        let (p, estimator) = (Arc::clone(prober), estimator.clone());
        tasks.spawn(async move { p.watch_link(&peer.name, probing.interval(), estimator).await });
    }
}

/// Keep a connection to relay `peer` attached, redialling when it drops.
async fn keep_dialing(endpoint: Arc<MeshEndpoint>, peer: Peer, prober: Arc<Prober>) {
    let role = Role::Relay;
    let mut failures = 0u32;
    loop {
        match endpoint.connect(peer.addr, &peer.name, &[role]).await {
            Ok(conn) => {
                if failures > 0 {
                    tracing::info!(node = %endpoint.name(), peer = %peer.name, "reconnected");
                }
                failures = 0;
                let served = prober.attach(&peer.name, conn, true);
                let _ = served.await;
                tracing::warn!(node = %endpoint.name(), peer = %peer.name, "connection lost; redialling");
            }
            Err(e) => {
                if failures.is_multiple_of(30) {
                    tracing::warn!(node = %endpoint.name(), peer = %peer.name, "cannot reach {role} {}: {e}", peer.name);
                }
                failures += 1;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Drop expired tunnels every second.
pub(super) async fn expire_tunnels(tunnels: Arc<HopTable>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        tunnels.expire(crate::time::now_unix_ms());
    }
}
