//! The controller's side of tunnels and bindings (DESIGN.md step 5).
//!
//! A binding (`POST /v1/bindings`) is a TCP listener on the controller carrying each accepted
//! connection to one endpoint of the target platform. Making one runs a connection decision
//! (the path), then sets up a tunnel along it: every relay on the path and the target site get
//! a signed [`HopGrant`] and must acknowledge; if any hop refuses or does not answer, the hops
//! that had accepted are torn down again and the binding fails with the hop's reason. Bindings
//! end on request (`DELETE`), on expiry, and when the requesting platform goes down.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::control;
use super::controller::{ConnectError, Controller};
use super::{ConnectionRecord, join_all};
use crate::mesh::messages::Control;
use crate::tunnel::grant::now_unix_ms;
use crate::tunnel::splice::{self, Side};
use crate::tunnel::{HopGrant, HopKey, Next, hop};

/// How long each hop has to acknowledge a tunnel setup.
const SETUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Default and longest binding lifetime.
const DEFAULT_TTL_S: u64 = 3_600;
const MAX_TTL_S: u64 = 86_400;

/// How a binding carries traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Any TCP protocol, byte for byte.
    #[default]
    Tcp,
    /// An HTTP reverse proxy applying session translation (not yet available).
    Http,
}

/// The body of `POST /v1/bindings`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindRequest {
    /// The requesting platform (its nearest relay starts the path).
    pub from: String,
    /// The target platform.
    pub to: String,
    /// The endpoint the target site publishes.
    pub endpoint: String,
    /// `tcp` (default) or `http`.
    #[serde(default)]
    pub mode: Mode,
    /// Where to listen (default: the ingress address, any port).
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Lifetime in seconds (default 3,600, at most 86,400).
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

/// A tunnel as the controller keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct TunnelRecord {
    /// Its id.
    pub id: u64,
    /// The connection decision that chose its path.
    pub connection: u64,
    /// The hops: relays in order, then the target site.
    pub hops: Vec<String>,
    /// The endpoint at the target site.
    pub endpoint: String,
    /// The account it carries traffic for.
    pub account: String,
    /// When it expires (Unix ms).
    pub expires_unix_ms: u64,
    /// The first hop's token, presented when the ingress opens a stream.
    #[serde(skip)]
    first_token: String,
}

/// A binding as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BindingView {
    /// Its id.
    pub id: u64,
    /// Requesting platform.
    pub from: String,
    /// Target platform.
    pub to: String,
    /// Target endpoint.
    pub endpoint: String,
    /// Mode.
    pub mode: Mode,
    /// The listener applications connect to.
    pub listen: SocketAddr,
    /// The tunnel carrying it.
    pub tunnel: TunnelRecord,
    /// Connections accepted so far.
    pub connections: u64,
    /// Bytes carried towards the endpoint, and back.
    pub bytes_up: u64,
    /// Bytes carried back.
    pub bytes_down: u64,
    /// Every re-route, oldest first.
    pub reroutes: Vec<Reroute>,
}

/// A tunnel moved to a new path.
#[derive(Debug, Clone, Serialize)]
pub struct Reroute {
    /// When (Unix ms).
    pub at_unix_ms: u64,
    /// Why.
    pub reason: String,
    /// The old tunnel and its hops.
    pub from_tunnel: u64,
    /// Its hops.
    pub from_hops: Vec<String>,
    /// The new tunnel.
    pub to_tunnel: u64,
    /// Its hops.
    pub to_hops: Vec<String>,
}

struct Binding {
    view: BindingView,
    /// Stops the listener and aborts its connections' streams.
    cancel: watch::Sender<bool>,
    stats: Arc<Stats>,
    /// A re-route is running.
    rerouting: bool,
    /// When a degraded path may next cause a re-route (hold-down against flapping).
    hold_until: std::time::Instant,
}

/// After a re-route, a merely degraded path does not cause another for this long.
const REROUTE_HOLD_DOWN: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Stats {
    connections: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
}

/// The controller's tunnels and bindings.
pub struct Ingress {
    secret: [u8; 32],
    address: std::net::IpAddr,
    next_binding: AtomicU64,
    next_tunnel: AtomicU64,
    bindings: Mutex<BTreeMap<u64, Binding>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a binding could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
    /// No path (see [`ConnectError`]).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A hop refused or did not answer the tunnel setup.
    #[error("{0}")]
    Setup(String),
}

impl Ingress {
    /// Tunnels signed with a fresh random secret; binding listeners on `address`.
    pub fn new(address: std::net::IpAddr) -> anyhow::Result<Ingress> {
        let mut secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
            .map_err(|_| anyhow::anyhow!("no system randomness for the tunnel secret"))?;
        Ok(Ingress {
            secret,
            address,
            next_binding: AtomicU64::new(1),
            next_tunnel: AtomicU64::new(1),
            bindings: Mutex::new(BTreeMap::new()),
        })
    }

    /// Node `name`'s hop key.
    pub fn hop_key(&self, name: &str) -> HopKey {
        HopKey::derive(&self.secret, name)
    }

    /// Every binding.
    pub fn bindings(&self) -> Vec<BindingView> {
        lock(&self.bindings).values().map(Binding::view).collect()
    }

    /// One binding.
    pub fn binding(&self, id: u64) -> Option<BindingView> {
        lock(&self.bindings).get(&id).map(Binding::view)
    }
}

impl Binding {
    fn view(&self) -> BindingView {
        let mut v = self.view.clone();
        v.connections = self.stats.connections.load(Ordering::Relaxed);
        v.bytes_up = self.stats.up.load(Ordering::Relaxed);
        v.bytes_down = self.stats.down.load(Ordering::Relaxed);
        v
    }
}

impl Controller {
    /// Make a binding: decide the path, set up the tunnel, open the listener.
    pub async fn bind(self: &Arc<Self>, req: BindRequest, account: &str) -> Result<BindingView, BindError> {
        if req.mode == Mode::Http {
            return Err(BindError::Invalid(
                "mode `http` (reverse proxy with session translation) is not available yet; use `tcp`".into(),
            ));
        }
        let ttl = req.ttl_s.unwrap_or(DEFAULT_TTL_S);
        if ttl == 0 || ttl > MAX_TTL_S {
            return Err(BindError::Invalid(format!("ttl_s must be between 1 and {MAX_TTL_S}, not {ttl}")));
        }
        if req.endpoint.is_empty() {
            return Err(BindError::Invalid("endpoint must not be empty".into()));
        }
        let listen = req.listen.unwrap_or(SocketAddr::new(self.ingress.address, 0));
        // Bind first: a busy port should fail before any hop does work.
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| BindError::Invalid(format!("cannot listen on {listen}: {e}")))?;
        let listen = listener.local_addr().map_err(|e| BindError::Invalid(e.to_string()))?;
        let decision = self.connect(&req.from, &req.to).await?;
        let expires = now_unix_ms() + ttl * 1000;
        let tunnel = self.setup_tunnel(&decision, &req.endpoint, account, expires).await?;

        let id = self.ingress.next_binding.fetch_add(1, Ordering::Relaxed);
        let (cancel, cancelled) = watch::channel(false);
        let stats = Arc::new(Stats::default());
        let view = BindingView {
            id,
            from: req.from,
            to: req.to,
            endpoint: req.endpoint,
            mode: req.mode,
            listen,
            tunnel,
            connections: 0,
            bytes_up: 0,
            bytes_down: 0,
            reroutes: vec![],
        };
        tracing::info!(binding = id, %listen, tunnel = view.tunnel.id, hops = ?view.tunnel.hops, "binding open");
        let binding = Binding {
            view: view.clone(),
            cancel,
            stats: Arc::clone(&stats),
            rerouting: false,
            hold_until: std::time::Instant::now(),
        };
        lock(&self.ingress.bindings).insert(id, binding);
        tokio::spawn(Arc::clone(self).serve_binding(listener, id, cancelled, stats));
        Ok(view)
    }

    /// End a binding: close its listener, abort its connections, tear its tunnel down.
    pub async fn unbind(&self, id: u64) -> Option<BindingView> {
        let binding = lock(&self.ingress.bindings).remove(&id)?;
        binding.cancel.send_replace(true);
        let view = binding.view();
        self.teardown_tunnel(&view.tunnel).await;
        tracing::info!(binding = id, "binding closed");
        Some(view)
    }

    /// End bindings that expired or whose requesting platform is down.
    pub(super) async fn reap_bindings(&self) {
        let now = now_unix_ms();
        let doomed: Vec<(u64, String)> = lock(&self.ingress.bindings)
            .values()
            .filter_map(|b| {
                let v = &b.view;
                if v.tunnel.expires_unix_ms <= now {
                    Some((v.id, "expired".to_owned()))
                } else if !self.is_up(&v.from) {
                    Some((v.id, format!("platform {} went down", v.from)))
                } else {
                    None
                }
            })
            .collect();
        for (id, why) in doomed {
            tracing::info!(binding = id, "closing binding: {why}");
            self.unbind(id).await;
        }
    }

    /// Re-route bindings whose path died, or degraded past the policy's loss threshold (at most
    /// once per hold-down period).
    pub(super) async fn reroute_bindings(self: &Arc<Self>) {
        let max_loss = self.policy().reroute_loss;
        let now = std::time::Instant::now();
        let candidates: Vec<(u64, Vec<String>, bool)> = lock(&self.ingress.bindings)
            .values()
            .filter(|b| !b.rerouting)
            .map(|b| (b.view.id, b.view.tunnel.hops.clone(), now >= b.hold_until))
            .collect();
        for (id, hops, may_leave_degraded) in candidates {
            let Some((dead, reason)) = self.path_problem(&hops, max_loss) else { continue };
            if !dead && !may_leave_degraded {
                continue;
            }
            if let Some(b) = lock(&self.ingress.bindings).get_mut(&id) {
                b.rerouting = true;
            }
            let this = Arc::clone(self);
            tokio::spawn(async move {
                if let Err(e) = this.reroute(id, dead, &reason).await {
                    tracing::warn!(binding = id, "re-route failed ({reason}): {e}");
                }
                if let Some(b) = lock(&this.ingress.bindings).get_mut(&id) {
                    b.rerouting = false;
                }
            });
        }
    }

    /// Decide a new path for binding `id`, set its tunnel up, switch new connections to it,
    /// and tear the old tunnel down (ending the streams still on it with an error).
    async fn reroute(&self, id: u64, dead: bool, reason: &str) -> Result<(), BindError> {
        let Some(view) = lock(&self.ingress.bindings).get(&id).map(|b| b.view.clone()) else { return Ok(()) };
        let old = view.tunnel;
        let decision = self.connect(&view.from, &view.to).await?;
        let mut new_hops = decision.decision.chosen().path.clone();
        new_hops.push(view.to.clone());
        if new_hops == old.hops && !dead {
            // The degraded path is still the best there is: keep it, and wait a hold-down.
            if let Some(b) = lock(&self.ingress.bindings).get_mut(&id) {
                b.hold_until = std::time::Instant::now() + REROUTE_HOLD_DOWN;
            }
            return Ok(());
        }
        let new = self.setup_tunnel(&decision, &old.endpoint, &old.account, old.expires_unix_ms).await?;
        let reroute = Reroute {
            at_unix_ms: now_unix_ms(),
            reason: reason.to_owned(),
            from_tunnel: old.id,
            from_hops: old.hops.clone(),
            to_tunnel: new.id,
            to_hops: new.hops.clone(),
        };
        tracing::warn!(binding = id, %reason, from = ?old.hops, to = ?new.hops, "binding re-routed");
        let still_bound = match lock(&self.ingress.bindings).get_mut(&id) {
            Some(b) => {
                b.view.tunnel = new.clone();
                b.view.reroutes.push(reroute);
                b.hold_until = std::time::Instant::now() + REROUTE_HOLD_DOWN;
                true
            }
            None => false,
        };
        self.teardown_tunnel(&old).await;
        if !still_bound {
            // The binding closed while we re-routed: the new tunnel has no one to serve.
            self.teardown_tunnel(&new).await;
        }
        Ok(())
    }

    /// Set up a tunnel along `decision`'s chosen path to `endpoint` at its target site.
    async fn setup_tunnel(
        &self,
        decision: &ConnectionRecord,
        endpoint: &str,
        account: &str,
        expires_unix_ms: u64,
    ) -> Result<TunnelRecord, BindError> {
        let id = self.ingress.next_tunnel.fetch_add(1, Ordering::Relaxed);
        let mut hops = decision.decision.chosen().path.clone();
        hops.push(decision.to.clone());
        let grants: Vec<HopGrant> = hops
            .iter()
            .enumerate()
            .map(|(i, hop)| HopGrant {
                tunnel: id,
                hop: hop.clone(),
                prev: if i == 0 { self.name().to_owned() } else { hops[i - 1].clone() },
                next: match hops.get(i + 1) {
                    Some(next) => Next::Node(next.clone()),
                    None => Next::Endpoint(endpoint.to_owned()),
                },
                account: account.to_owned(),
                expires_unix_ms,
            })
            .collect();
        let tokens: Vec<String> = grants.iter().map(|g| self.ingress.hop_key(&g.hop).sign(g)).collect();
        let setups = grants.iter().enumerate().map(|(i, grant)| {
            let request = Control::TunnelSetup {
                grant: grant.clone(),
                token: tokens[i].clone(),
                next_token: tokens.get(i + 1).cloned(),
            };
            let conn = self.node_connection(&grant.hop);
            let hop = grant.hop.clone();
            async move {
                let Some(conn) = conn else {
                    return (hop, Err(anyhow::anyhow!("not connected to the controller")));
                };
                let answer = tokio::time::timeout(SETUP_TIMEOUT, control::request(&conn, &request)).await;
                let result = match answer {
                    Err(_) => Err(anyhow::anyhow!("no answer within {SETUP_TIMEOUT:?}")),
                    Ok(Ok(Control::TunnelReady { tunnel })) if tunnel == id => Ok(()),
                    Ok(Ok(other)) => Err(anyhow::anyhow!("unexpected answer {other:?}")),
                    Ok(Err(e)) => Err(e),
                };
                (hop, result)
            }
        });
        let results = join_all(setups).await;
        let failed: Vec<String> =
            results.iter().filter_map(|(hop, r)| r.as_ref().err().map(|e| format!("{hop}: {e:#}"))).collect();
        let record = TunnelRecord {
            id,
            connection: decision.id,
            hops,
            endpoint: endpoint.to_owned(),
            account: account.to_owned(),
            expires_unix_ms,
            first_token: tokens[0].clone(),
        };
        if failed.is_empty() {
            tracing::info!(tunnel = id, hops = ?record.hops, "tunnel set up");
            return Ok(record);
        }
        // Roll back on the hops that had accepted.
        let accepted: Vec<String> = results.into_iter().filter(|(_, r)| r.is_ok()).map(|(h, _)| h).collect();
        self.teardown_on(id, &accepted).await;
        let rolled = if accepted.is_empty() {
            String::new()
        } else {
            format!(" (rolled back on {})", accepted.join(", "))
        };
        Err(BindError::Setup(format!("tunnel setup failed: {}{rolled}", failed.join("; "))))
    }

    async fn teardown_tunnel(&self, tunnel: &TunnelRecord) {
        self.teardown_on(tunnel.id, &tunnel.hops).await;
    }

    async fn teardown_on(&self, id: u64, hops: &[String]) {
        let calls = hops.iter().map(|hop| {
            let conn = self.node_connection(hop);
            async move {
                if let Some(conn) = conn {
                    let request = Control::TunnelTeardown { tunnel: id };
                    // Best effort: a hop that cannot be told drops the tunnel at expiry.
                    let _ = tokio::time::timeout(SETUP_TIMEOUT, control::request(&conn, &request)).await;
                }
            }
        });
        join_all(calls).await;
    }

    /// Accept the binding's connections until it is closed.
    async fn serve_binding(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        id: u64,
        mut cancelled: watch::Receiver<bool>,
        stats: Arc<Stats>,
    ) {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = cancelled.wait_for(|c| *c) => return,
            };
            let (client, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(binding = id, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = client.set_nodelay(true);
            stats.connections.fetch_add(1, Ordering::Relaxed);
            let (this, cancel, stats) = (Arc::clone(&self), cancelled.clone(), Arc::clone(&stats));
            tokio::spawn(async move {
                if let Err(e) = this.carry_client(id, client, cancel, &stats).await {
                    tracing::warn!(binding = id, %remote, "connection failed: {e:#}");
                }
            });
        }
    }

    /// Carry one client connection through the binding's tunnel.
    async fn carry_client(
        &self,
        id: u64,
        client: tokio::net::TcpStream,
        cancel: watch::Receiver<bool>,
        stats: &Stats,
    ) -> anyhow::Result<()> {
        let tunnel = lock(&self.ingress.bindings).get(&id).map(|b| b.view.tunnel.clone());
        let tunnel = tunnel.ok_or_else(|| anyhow::anyhow!("binding closed"))?;
        let first = &tunnel.hops[0];
        let opened = match self.node_connection(first) {
            Some(conn) => hop::open(&conn, tunnel.id, tunnel.first_token.clone()).await,
            None => Err(anyhow::anyhow!("{first} is not connected to the controller")),
        };
        let (send, recv) = match opened {
            Ok(streams) => streams,
            Err(e) => {
                // Reset the client rather than close cleanly: it must see a failure.
                let _ = client.set_zero_linger();
                return Err(e.context(format!("tunnel {} via {first}", tunnel.id)));
            }
        };
        let moved = splice::splice(Side::Tcp(client), Side::Quic(send, recv), cancel).await?;
        stats.up.fetch_add(moved.a_to_b, Ordering::Relaxed);
        stats.down.fetch_add(moved.b_to_a, Ordering::Relaxed);
        Ok(())
    }
}
