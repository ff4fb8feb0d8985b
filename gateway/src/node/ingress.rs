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

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::config::IngressConfig;
use super::control;
use super::controller::{ConnectError, Controller};
use super::{ConnectionRecord, join_all};
use crate::mesh::messages::Control;
use crate::tunnel::grant::now_unix_ms;
use crate::tunnel::splice::{self, Moved, Side};
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
    /// An HTTP reverse proxy applying session translation with the target's adapter.
    Http,
    /// Made by an HTTP `CONNECT platform:endpoint` on the ingress's proxy listener.
    Connect,
}

/// The body of `POST /v1/bindings`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindRequest {
    /// The requesting platform (its nearest relay starts the path); default: the ingress's
    /// platform (`[ingress] platform`).
    #[serde(default)]
    pub from: Option<String>,
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
    /// `http` only: the one account that may use the binding. Default: any account with a
    /// credential mapping at the target.
    #[serde(default)]
    pub account: Option<String>,
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
    /// `http`: the one account that may use it (none: any account mapped at the target).
    pub account: Option<String>,
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

/// One use of a binding — a client connection — as its three sessions (DESIGN.md step 6).
#[derive(Debug, Clone, Serialize)]
pub struct SessionRecord {
    /// Its id.
    pub id: u64,
    /// The account it ran for.
    pub account: String,
    /// The binding it used.
    pub binding: u64,
    /// First session, account ↔ controller: the client's connection at the ingress.
    pub first: FirstSession,
    /// Second session, account ↔ transit: the tunnel that carried it.
    pub second: SecondSession,
    /// Third session, account ↔ target: the platform, endpoint and the identity there.
    pub third: ThirdSession,
    /// When it began (Unix ms).
    pub started_unix_ms: u64,
    /// When it ended, if it has.
    pub ended_unix_ms: Option<u64>,
    /// Bytes towards the target.
    pub bytes_up: u64,
    /// Bytes back.
    pub bytes_down: u64,
    /// How it ended: `closed`, or the error.
    pub outcome: Option<String>,
}

/// The first session.
#[derive(Debug, Clone, Serialize)]
pub struct FirstSession {
    /// The client's address.
    pub client: SocketAddr,
    /// The ingress address it connected to.
    pub ingress: SocketAddr,
}

/// The second session.
#[derive(Debug, Clone, Serialize)]
pub struct SecondSession {
    /// The tunnel.
    pub tunnel: u64,
    /// Its hops.
    pub hops: Vec<String>,
}

/// The third session.
#[derive(Debug, Clone, Serialize)]
pub struct ThirdSession {
    /// The target platform.
    pub platform: String,
    /// The endpoint there.
    pub endpoint: String,
    /// The account's identity there, if it has a credential mapping (never the secret).
    pub principal: Option<String>,
    /// When the target token it carried expires (Unix s), for targets that use tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_expires_unix_s: Option<u64>,
}

/// Sessions kept in memory for `GET /v1/sessions`, newest last.
const MAX_SESSIONS: usize = 1000;

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
pub(super) struct Stats {
    /// Connections being carried now.
    active: std::sync::atomic::AtomicUsize,
    connections: AtomicU64,
    pub(super) up: AtomicU64,
    pub(super) down: AtomicU64,
}

/// The controller's tunnels and bindings.
pub struct Ingress {
    secret: [u8; 32],
    config: IngressConfig,
    next_binding: AtomicU64,
    next_tunnel: AtomicU64,
    /// Recent sessions, oldest first (at most [`MAX_SESSIONS`]).
    sessions: Mutex<std::collections::VecDeque<SessionRecord>>,
    next_session: AtomicU64,
    /// Target tokens (Keystone, …) by (platform, account).
    pub(super) tokens: Mutex<BTreeMap<(String, String), super::http_proxy::CachedToken>>,
    /// CONNECT makes one binding per target at a time.
    connect_lock: tokio::sync::Mutex<()>,
    bindings: Mutex<BTreeMap<u64, Binding>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
    /// Tunnels signed with a fresh random secret; listeners as `config` says.
    pub fn new(config: IngressConfig) -> anyhow::Result<Ingress> {
        let mut secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
            .map_err(|_| anyhow::anyhow!("no system randomness for the tunnel secret"))?;
        Ok(Ingress {
            secret,
            config,
            next_binding: AtomicU64::new(1),
            next_tunnel: AtomicU64::new(1),
            connect_lock: tokio::sync::Mutex::new(()),
            tokens: Mutex::new(BTreeMap::new()),
            sessions: Mutex::new(std::collections::VecDeque::new()),
            next_session: AtomicU64::new(1),
            bindings: Mutex::new(BTreeMap::new()),
        })
    }

    /// The ingress's configuration.
    pub fn config(&self) -> &IngressConfig {
        &self.config
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

    /// Recent sessions, newest first.
    pub fn sessions(&self) -> Vec<SessionRecord> {
        lock(&self.sessions).iter().rev().cloned().collect()
    }

    /// Record that session `id` carried a target token expiring at `expires_unix_s`.
    pub(super) fn note_session_token(&self, id: u64, expires_unix_s: u64) {
        if let Some(s) = lock(&self.sessions).iter_mut().rev().find(|s| s.id == id) {
            s.third.token_expires_unix_s = Some(expires_unix_s);
        }
    }

    /// Drop the target tokens cached for `account` (its credentials changed or it is gone).
    pub(super) fn forget_tokens(&self, account: &str) {
        lock(&self.tokens).retain(|(_, a), _| a != account);
    }

    /// Binding `id`'s counters.
    pub(super) fn binding_stats(&self, id: u64) -> Option<Arc<Stats>> {
        lock(&self.bindings).get(&id).map(|b| Arc::clone(&b.stats))
    }

    pub(super) fn end_session(&self, id: u64, moved: Moved, outcome: String) {
        if let Some(s) = lock(&self.sessions).iter_mut().rev().find(|s| s.id == id) {
            s.ended_unix_ms = Some(now_unix_ms());
            s.bytes_up = moved.a_to_b;
            s.bytes_down = moved.b_to_a;
            s.outcome = Some(outcome);
        }
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
        match req.mode {
            Mode::Tcp if req.account.is_some() => {
                return Err(BindError::Invalid(
                    "`account` applies to `http` bindings only (a `tcp` binding does not authenticate)"
                        .into(),
                ));
            }
            Mode::Tcp => {}
            Mode::Http if self.adapter(&req.to).is_none() => {
                return Err(BindError::Invalid(format!(
                    "no adapter translates sessions for platform {}: add an [[adapter]] with \
                     platform = \"{}\" to the controller's configuration, or use mode `tcp`",
                    req.to, req.to
                )));
            }
            Mode::Http => {}
            Mode::Connect => {
                return Err(BindError::Invalid(
                    "only `tcp` and `http` bindings can be requested here (CONNECT makes its own)".into(),
                ));
            }
        }
        let listen = req.listen.unwrap_or(SocketAddr::new(self.ingress.config.address, 0));
        // Bind first: a busy port should fail before any hop does work.
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| BindError::Invalid(format!("cannot listen on {listen}: {e}")))?;
        let listen = listener.local_addr().map_err(|e| BindError::Invalid(e.to_string()))?;
        let (view, cancelled, stats) = self.create_binding(req, account, listen).await?;
        tokio::spawn(Arc::clone(self).serve_binding(listener, view.id, cancelled, stats));
        Ok(view)
    }

    /// Decide the path, set the tunnel up, and record the binding.
    async fn create_binding(
        &self,
        req: BindRequest,
        account: &str,
        listen: SocketAddr,
    ) -> Result<(BindingView, watch::Receiver<bool>, Arc<Stats>), BindError> {
        let ttl = req.ttl_s.unwrap_or(DEFAULT_TTL_S);
        if ttl == 0 || ttl > MAX_TTL_S {
            return Err(BindError::Invalid(format!("ttl_s must be between 1 and {MAX_TTL_S}, not {ttl}")));
        }
        if req.endpoint.is_empty() {
            return Err(BindError::Invalid("endpoint must not be empty".into()));
        }
        let from = req.from.or_else(|| self.ingress.config.platform.clone()).ok_or_else(|| {
            BindError::Invalid("no requesting platform: give `from`, or set `[ingress] platform`".into())
        })?;
        let decision = self.connect(&from, &req.to).await?;
        let expires = now_unix_ms() + ttl * 1000;
        let account = req.account.as_deref().unwrap_or(account);
        let tunnel = self.setup_tunnel(&decision, &req.endpoint, account, expires).await?;

        let id = self.ingress.next_binding.fetch_add(1, Ordering::Relaxed);
        let (cancel, cancelled) = watch::channel(false);
        let stats = Arc::new(Stats::default());
        let view = BindingView {
            id,
            from,
            to: req.to,
            endpoint: req.endpoint,
            mode: req.mode,
            account: req.account,
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
        Ok((view, cancelled, stats))
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
        let mode = lock(&self.ingress.bindings).get(&id).map_or(Mode::Tcp, |b| b.view.mode);
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
            let this = Arc::clone(&self);
            let (cancel, stats) = (cancelled.clone(), Arc::clone(&stats));
            let ingress = client.local_addr().unwrap_or(remote);
            if mode == Mode::Http {
                tokio::spawn(this.serve_http(id, client, remote, cancel, stats));
                continue;
            }
            tokio::spawn(async move {
                let session = this.start_session(id, remote, ingress, None);
                let early = already_sent(&client);
                let early_len = early.len() as u64;
                let opened = this.open_stream(id, &stats, early).await;
                let (send, recv, _slot) = match opened {
                    Ok(opened) => opened,
                    Err(e) => {
                        // Reset the client rather than close cleanly: it must see a failure.
                        let _ = client.set_zero_linger();
                        tracing::warn!(binding = id, %remote, "connection refused: {e:#}");
                        this.ingress.end_session(session, Moved::default(), format!("{e:#}"));
                        return;
                    }
                };
                this.carry(id, session, Side::Tcp(client), (send, recv, early_len), cancel, &stats).await;
            });
        }
    }

    /// Open a stream of binding `id`'s tunnel at its first hop, sending the client's `early`
    /// bytes with the opening frame, and count it against the binding's connection limit (the
    /// returned slot frees it when dropped).
    pub(super) async fn open_stream(
        &self,
        id: u64,
        stats: &Arc<Stats>,
        early: Bytes,
    ) -> anyhow::Result<(quinn::SendStream, quinn::RecvStream, ActiveSlot)> {
        let max = self.ingress.config.max_connections;
        let slot = ActiveSlot::take(stats, max)
            .ok_or_else(|| anyhow::anyhow!("binding {id} already carries {max} connections"))?;
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let tunnel = lock(&self.ingress.bindings).get(&id).map(|b| b.view.tunnel.clone());
        let tunnel = tunnel.ok_or_else(|| anyhow::anyhow!("binding {id} closed"))?;
        let first = &tunnel.hops[0];
        let conn = self.node_connection(first).ok_or_else(|| {
            anyhow::anyhow!("tunnel {}: {first} is not connected to the controller", tunnel.id)
        })?;
        let early = if early.is_empty() { Vec::new() } else { vec![early] };
        let (send, recv) = hop::open(&conn, tunnel.id, tunnel.first_token.clone(), early)
            .await
            .map_err(|e| e.context(format!("tunnel {} via {first}", tunnel.id)))?;
        Ok((send, recv, slot))
    }

    /// Record the start of a use of binding `id` by the client at `client`, for `who`: an
    /// account and its principal at the target, when the caller already knows them (else the
    /// tunnel's account, and its principal is looked up).
    pub(super) fn start_session(
        &self,
        id: u64,
        client: SocketAddr,
        ingress: SocketAddr,
        who: Option<(&str, &str)>,
    ) -> u64 {
        let view = lock(&self.ingress.bindings).get(&id).map(|b| b.view.clone());
        let session = self.ingress.next_session.fetch_add(1, Ordering::Relaxed);
        let Some(view) = view else { return session };
        let (account, principal) = match who {
            Some((account, principal)) => (account, Some(principal.to_owned())),
            None => {
                let account = view.tunnel.account.as_str();
                (account, self.credentials(account, &view.to).map(|c| c.principal))
            }
        };
        let record = SessionRecord {
            id: session,
            account: account.to_owned(),
            binding: id,
            first: FirstSession { client, ingress },
            second: SecondSession { tunnel: view.tunnel.id, hops: view.tunnel.hops.clone() },
            third: ThirdSession {
                platform: view.to.clone(),
                endpoint: view.endpoint.clone(),
                principal,
                token_expires_unix_s: None,
            },
            started_unix_ms: now_unix_ms(),
            ended_unix_ms: None,
            bytes_up: 0,
            bytes_down: 0,
            outcome: None,
        };
        let mut sessions = lock(&self.ingress.sessions);
        if sessions.len() >= MAX_SESSIONS {
            sessions.pop_front();
        }
        sessions.push_back(record);
        session
    }

    /// Splice a client with its opened tunnel stream (which already carried `early` bytes of
    /// the client's) until either ends; count the bytes.
    async fn carry(
        &self,
        id: u64,
        session: u64,
        client: Side,
        (send, recv, early): (quinn::SendStream, quinn::RecvStream, u64),
        cancel: watch::Receiver<bool>,
        stats: &Stats,
    ) {
        let idle = Duration::from_secs(self.ingress.config.idle_timeout_s.max(1));
        let (mut moved, ended) = splice::splice(client, Side::Quic(send, recv), cancel, Some(idle)).await;
        moved.a_to_b += early;
        stats.up.fetch_add(moved.a_to_b, Ordering::Relaxed);
        stats.down.fetch_add(moved.b_to_a, Ordering::Relaxed);
        let outcome = match ended {
            Ok(()) => "closed".to_owned(),
            Err(e) => {
                tracing::info!(binding = id, "connection ended: {e}");
                e.to_string()
            }
        };
        self.ingress.end_session(session, moved, outcome);
    }
}

/// One of a binding's connection slots, freed on drop.
pub(super) struct ActiveSlot(Arc<Stats>);

impl ActiveSlot {
    fn take(stats: &Arc<Stats>, max: usize) -> Option<ActiveSlot> {
        let taken =
            stats.active.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1));
        taken.ok().map(|_| ActiveSlot(Arc::clone(stats)))
    }
}

impl Drop for ActiveSlot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a new client has already sent, without waiting (at most [`hop::EARLY_MAX`] bytes),
/// to go with the tunnel's opening frame. Read from the socket directly: tokio learns of a new
/// socket's first bytes only at its next poll of the kernel, after this would have run.
fn already_sent(client: &tokio::net::TcpStream) -> Bytes {
    use std::io::Read;
    let mut buf = [0u8; hop::EARLY_MAX];
    // The socket is non-blocking: nothing there yet is `WouldBlock`, and the client's bytes
    // then travel after the opening, as any later ones do. A real error shows at the next read.
    match (&*socket2::SockRef::from(client)).read(&mut buf) {
        Ok(n) => Bytes::copy_from_slice(&buf[..n]),
        Err(_) => Bytes::new(),
    }
}

/// The longest CONNECT request head accepted, and how long a client has to send it.
const MAX_HEAD: usize = 8 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Read an HTTP request head (through the blank line) within [`HEAD_TIMEOUT`]: a client that
/// dribbles or stalls is dropped rather than holding a task forever. Returns the head and any
/// bytes the client sent after it.
async fn read_head(client: &mut tokio::net::TcpStream) -> Result<(Vec<u8>, Vec<u8>), String> {
    use tokio::io::AsyncReadExt;
    let read = async {
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        loop {
            let n = client.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the client closed before the end of its request".to_owned());
            }
            let scan_from = buf.len().saturating_sub(3);
            buf.extend_from_slice(&chunk[..n]);
            if let Some(pos) = buf[scan_from..].windows(4).position(|w| w == b"\r\n\r\n") {
                let end = scan_from + pos + 4;
                let rest = buf.split_off(end);
                return Ok((buf, rest));
            }
            if buf.len() > MAX_HEAD {
                return Err(format!("request head larger than {MAX_HEAD} bytes"));
            }
        }
    };
    tokio::time::timeout(HEAD_TIMEOUT, read).await.map_err(|_| "no complete request in time".to_owned())?
}

/// Who a `Proxy-Authorization` value names: the operator (the admin token, as Bearer or as a
/// Basic password with any user name) or an account (Basic `account:secret`). Secrets are
/// compared by digest in constant time.
fn proxy_principal(value: Option<&[u8]>, token: &[u8; 32], controller: &Controller) -> Option<String> {
    use base64::Engine;
    let value = std::str::from_utf8(value?).ok()?;
    let is_admin = |secret: &str| crate::secret::matches_digest(secret, token);
    if let Some(t) = value.strip_prefix("Bearer ") {
        return is_admin(t.trim()).then(|| "operator".to_owned());
    }
    let decoded =
        base64::engine::general_purpose::STANDARD.decode(value.strip_prefix("Basic ")?.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, secret) = decoded.split_once(':')?;
    if is_admin(secret) {
        return Some("operator".to_owned());
    }
    controller.authenticate(user, secret).then(|| user.to_owned())
}

impl Controller {
    /// Serve `CONNECT platform:endpoint` requests on `listener` until the task is aborted.
    pub(super) async fn serve_connect(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        token: Arc<[u8; 32]>,
    ) {
        loop {
            let (client, remote) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("CONNECT accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (this, token) = (Arc::clone(&self), Arc::clone(&token));
            tokio::spawn(async move {
                if let Err(e) = this.handle_connect(client, &token).await {
                    tracing::info!(%remote, "CONNECT failed: {e}");
                }
            });
        }
    }

    async fn handle_connect(
        self: &Arc<Self>,
        mut client: tokio::net::TcpStream,
        token: &[u8; 32],
    ) -> Result<(), String> {
        use tokio::io::AsyncWriteExt;
        let _ = client.set_nodelay(true);
        async fn answer(
            client: &mut tokio::net::TcpStream,
            status: &str,
            extra: &str,
            reason: &str,
        ) -> Result<(), String> {
            let body = format!("{reason}\n");
            let response = format!(
                "HTTP/1.1 {status}\r\n{extra}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(response.as_bytes()).await;
            Err(format!("{status}: {reason}"))
        }
        let (head, early) = match read_head(&mut client).await {
            Ok(h) => h,
            Err(reason) => return answer(&mut client, "400 Bad Request", "", &reason).await,
        };
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        if !matches!(request.parse(&head), Ok(httparse::Status::Complete(_))) {
            return answer(&mut client, "400 Bad Request", "", "malformed request").await;
        }
        if request.method != Some("CONNECT") {
            return answer(
                &mut client,
                "405 Method Not Allowed",
                "Allow: CONNECT\r\n",
                "only CONNECT is served here",
            )
            .await;
        }
        let auth = request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("proxy-authorization"))
            .map(|h| h.value);
        let Some(account) = proxy_principal(auth, token, self) else {
            let challenge = "Proxy-Authenticate: Basic realm=\"skybridge\"\r\n";
            return answer(
                &mut client,
                "407 Proxy Authentication Required",
                challenge,
                "missing or wrong token",
            )
            .await;
        };
        let target = request.path.unwrap_or_default().to_owned();
        let Some((to, endpoint)) = target.rsplit_once(':') else {
            return answer(&mut client, "400 Bad Request", "", "the target must be PLATFORM:ENDPOINT").await;
        };
        let id = match self.connect_binding(&account, to, endpoint).await {
            Ok(id) => id,
            Err(e @ BindError::Connect(ConnectError::UnknownPlatform { .. })) => {
                return answer(&mut client, "404 Not Found", "", &e.to_string()).await;
            }
            Err(e) => return answer(&mut client, "502 Bad Gateway", "", &e.to_string()).await,
        };
        let Some((cancel, stats)) =
            lock(&self.ingress.bindings).get(&id).map(|b| (b.cancel.subscribe(), Arc::clone(&b.stats)))
        else {
            return answer(&mut client, "502 Bad Gateway", "", "the tunnel closed").await;
        };
        let remote = client.peer_addr().map_err(|e| e.to_string())?;
        let session = self.start_session(id, remote, client.local_addr().unwrap_or(remote), None);
        let early_len = early.len() as u64;
        let (send, recv, _slot) = match self.open_stream(id, &stats, Bytes::from(early)).await {
            Ok(opened) => opened,
            Err(e) => {
                self.ingress.end_session(session, Moved::default(), format!("{e:#}"));
                return answer(&mut client, "502 Bad Gateway", "", &format!("{e:#}")).await;
            }
        };
        client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.map_err(|e| e.to_string())?;
        self.carry(id, session, Side::Tcp(client), (send, recv, early_len), cancel, &stats).await;
        Ok(())
    }

    /// The CONNECT binding to `to`'s `endpoint`, made on first use and kept until it expires.
    /// One per account and target: an account's traffic never rides another account's tunnel.
    pub(super) async fn connect_binding(
        &self,
        account: &str,
        to: &str,
        endpoint: &str,
    ) -> Result<u64, BindError> {
        let _one_at_a_time = self.ingress.connect_lock.lock().await;
        let existing = lock(&self.ingress.bindings)
            .values()
            .find(|b| {
                let v = &b.view;
                v.mode == Mode::Connect && v.tunnel.account == account && v.to == to && v.endpoint == endpoint
            })
            .map(|b| b.view.id);
        if let Some(id) = existing {
            return Ok(id);
        }
        let listen =
            self.ingress.config.connect_listen.unwrap_or(SocketAddr::new(self.ingress.config.address, 0));
        let req = BindRequest {
            from: None,
            to: to.to_owned(),
            endpoint: endpoint.to_owned(),
            mode: Mode::Connect,
            listen: None,
            ttl_s: None,
            account: None,
        };
        let (view, _, _) = self.create_binding(req, account, listen).await?;
        Ok(view.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn already_sent_takes_what_arrived_and_never_waits() {
        let (mut client, server) = pair().await;
        assert!(already_sent(&server).is_empty(), "nothing sent yet: nothing, at once");
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut got = Bytes::new();
        for _ in 0..100 {
            got = already_sent(&server);
            if !got.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(&got[..], b"GET / HTTP/1.1\r\n\r\n");
        assert!(already_sent(&server).is_empty(), "taken once");
    }
}
