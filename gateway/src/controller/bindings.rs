//! Bindings (DESIGN.md step 5): an ingress endpoint carrying each client connection to one
//! endpoint of a target platform over a tunnel. Making one runs a decision (the path), then
//! sets a tunnel up along it. The registry keeps every binding with its tunnel, counters and
//! re-routes; the ingress's listeners look bindings up here and record each use as a session.
//!
//! Bindings end on request, on expiry, and when the requesting platform goes down; a binding
//! whose path dies is re-routed at once, one whose path degrades (loss over the policy's
//! threshold) at most once per hold-down period. Those decisions are plain functions
//! ([`reap_reason`], [`wants_reroute`]) over `now`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::connect::ConnectError;
use super::events::Event;
use super::tunnels::TunnelRecord;
use super::view::PathProblem;
use super::{Controller, lock};
use crate::mesh::messages::Fence;
use crate::time::now_unix_ms;
use crate::tunnel::setup::{SetupFailed, Target};

/// Default and longest binding lifetime.
const DEFAULT_TTL_S: u64 = 3_600;
const MAX_TTL_S: u64 = 86_400;

/// After a re-route, a merely degraded path does not cause another for this long.
pub const REROUTE_HOLD_DOWN: Duration = Duration::from_secs(10);

/// A client arriving while its binding's path is dead waits at most this long for the
/// re-route (which takes a path test and a tunnel setup, well under a second when another
/// path exists), then is refused.
pub const REROUTE_WAIT: Duration = Duration::from_secs(5);

/// How a binding carries traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
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

impl Mode {
    /// As the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Tcp => "tcp",
            Mode::Http => "http",
            Mode::Connect => "connect",
        }
    }
}

/// The body of `POST /v1/bindings`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BindRequest {
    /// The requesting platform (its nearest relay starts the path); default: the ingress's
    /// platform (`[ingress] platform`).
    #[serde(default)]
    pub from: Option<String>,
    /// The target platform. With `capability`: the one offering platform to use (default: the
    /// one with the best measured path from `from`).
    #[serde(default)]
    pub to: String,
    /// The endpoint the target site publishes (not with `capability`: the catalog knows it).
    #[serde(default)]
    pub endpoint: String,
    /// Bind to a capability of the catalog instead of a platform's endpoint: its entry id, or
    /// its `kind/name` (aliases accepted: `s3/logs`).
    #[serde(default)]
    pub capability: Option<String>,
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
    /// `tcp` only: listen on an address other hosts can reach. A `tcp` binding authenticates
    /// no one — whoever reaches its listener uses the tunnel — so anything but a loopback
    /// address must be asked for explicitly.
    #[serde(default)]
    pub open: bool,
}

/// A binding as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// Connections being carried now.
    #[serde(default)]
    pub active: u64,
    /// Bytes carried towards the endpoint.
    pub bytes_up: u64,
    /// Bytes carried back.
    pub bytes_down: u64,
    /// Its re-routes, oldest first: the last [`MAX_REROUTES_SHOWN`].
    pub reroutes: Vec<Reroute>,
    /// The catalog entry it was made for, when made by capability: revoking the capability
    /// at the target platform closes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// The controller serving it.
    #[serde(default)]
    pub owner: String,
    /// In a group of controllers: the owner's epoch, which every hop of its tunnel checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// The most re-routes a binding's view keeps (the metric `skybridge_reroutes_total` counts
/// them all).
pub const MAX_REROUTES_SHOWN: usize = 32;

/// A tunnel moved to a new path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Reroute {
    /// When (Unix ms).
    pub at_unix_ms: u64,
    /// Why.
    pub reason: String,
    /// The old tunnel.
    pub from_tunnel: u64,
    /// Its hops.
    pub from_hops: Vec<String>,
    /// The new tunnel.
    pub to_tunnel: u64,
    /// Its hops.
    pub to_hops: Vec<String>,
}

/// Why a binding could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The account may not use the target: it has no credentials there, or the target
    /// platform's authorizer refused it.
    #[error("{0}")]
    Forbidden(String),
    /// No path (see [`ConnectError`]).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A hop refused or did not answer the tunnel setup.
    #[error(transparent)]
    Setup(#[from] SetupFailed),
}

/// A binding before its tunnel is up: what its listener needs (see
/// [`Controller::prepare_binding`]).
#[derive(Clone)]
pub struct Prepared {
    /// Its id.
    pub id: u64,
    cancel: Arc<watch::Sender<bool>>,
    stats: Arc<Stats>,
    /// In a group: its owner epoch (set once this controller owns it).
    pub(crate) fence: Option<Fence>,
}

impl Prepared {
    /// The signal that closes its listener and connections.
    pub fn cancelled(&self) -> watch::Receiver<bool> {
        self.cancel.subscribe()
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Close its listener (a binding given up before its tunnel came up).
    pub fn close(&self) {
        self.cancel.send_replace(true);
    }
}

/// A binding's counters and limits, shared with the connections it carries.
pub struct Stats {
    /// Connections being carried now.
    active: AtomicUsize,
    /// Client connections open now (see [`super::budget::ClientSlot`]).
    pub clients: Arc<AtomicUsize>,
    /// This binding's budget for request bodies being buffered, KiB.
    pub buffered: Arc<tokio::sync::Semaphore>,
    connections: AtomicU64,
    /// Bytes towards the endpoint.
    pub up: AtomicU64,
    /// Bytes back.
    pub down: AtomicU64,
}

/// One of a binding's connection slots, freed on drop; it holds the end-to-end connection its
/// stream is on open.
pub struct ActiveSlot {
    stats: Arc<Stats>,
    carrier: Option<super::carriers::CarrierLease>,
}

impl ActiveSlot {
    /// Take a slot if fewer than `max` are taken; count the connection.
    pub fn take(stats: &Arc<Stats>, max: usize) -> Option<ActiveSlot> {
        let taken =
            stats.active.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1));
        taken.ok().map(|_| {
            stats.connections.fetch_add(1, Ordering::Relaxed);
            ActiveSlot { stats: Arc::clone(stats), carrier: None }
        })
    }

    /// The client's stream is on `lease`'s connection.
    pub(super) fn carried_by(&mut self, lease: super::carriers::CarrierLease) {
        self.carrier = Some(lease);
    }
}

impl Stats {
    /// Counters at zero; a body budget of `buffered_mib`.
    pub fn new(buffered_mib: usize) -> Stats {
        Stats {
            active: AtomicUsize::new(0),
            clients: Arc::new(AtomicUsize::new(0)),
            buffered: Arc::new(tokio::sync::Semaphore::new(super::budget::kib(buffered_mib << 20))),
            connections: AtomicU64::new(0),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
        }
    }
}

impl Drop for ActiveSlot {
    fn drop(&mut self) {
        self.stats.active.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Binding {
    view: BindingView,
    /// Stops the listener and aborts its connections' streams.
    cancel: Arc<watch::Sender<bool>>,
    stats: Arc<Stats>,
    /// A re-route is running.
    rerouting: bool,
    /// When a degraded path may next cause a re-route (hold-down against flapping).
    hold_until: Instant,
}

impl Binding {
    fn view(&self) -> BindingView {
        let mut v = self.view.clone();
        v.connections = self.stats.connections.load(Ordering::Relaxed);
        v.active = self.stats.active.load(Ordering::Relaxed) as u64;
        v.bytes_up = self.stats.up.load(Ordering::Relaxed);
        v.bytes_down = self.stats.down.load(Ordering::Relaxed);
        v
    }
}

/// The controller's bindings.
pub struct Bindings {
    ids: super::ids::Ids,
    by_id: std::sync::Mutex<BTreeMap<u64, Binding>>,
    /// CONNECT makes one binding per (account, platform, endpoint) at a time: a gate per key
    /// being made, dropped once nobody waits on it. Other keys never wait.
    pub(super) making: super::connect_bindings::Making,
    /// Bindings kept by the previous run whose tunnels are not up yet ([`super::restore`]).
    pub(super) restoring: std::sync::Mutex<BTreeMap<u64, Prepared>>,
    /// Woken whenever a re-route ends, well or not: clients waiting for one look again.
    rerouted: tokio::sync::Notify,
}

impl Bindings {
    /// No bindings yet; new ones numbered from `ids`.
    pub(super) fn new(ids: super::ids::Ids) -> Self {
        Bindings {
            ids,
            by_id: std::sync::Mutex::new(BTreeMap::new()),
            making: std::sync::Mutex::default(),
            restoring: std::sync::Mutex::default(),
            rerouted: tokio::sync::Notify::new(),
        }
    }
}

impl Bindings {
    /// Every binding.
    pub fn list(&self) -> Vec<BindingView> {
        lock(&self.by_id).values().map(Binding::view).collect()
    }

    /// One binding.
    pub fn get(&self, id: u64) -> Option<BindingView> {
        lock(&self.by_id).get(&id).map(Binding::view)
    }

    /// What a connection of binding `id` needs: its cancel signal and counters.
    pub fn carrier(&self, id: u64) -> Option<(watch::Receiver<bool>, Arc<Stats>)> {
        lock(&self.by_id).get(&id).map(|b| (b.cancel.subscribe(), Arc::clone(&b.stats)))
    }

    /// Binding `id`'s current tunnel, and whether a re-route of it is running.
    pub(super) fn tunnel(&self, id: u64) -> Option<(TunnelRecord, bool)> {
        lock(&self.by_id).get(&id).map(|b| (b.view.tunnel.clone(), b.rerouting))
    }

    /// Woken when a re-route ends (register before looking, so that none is missed).
    pub(super) fn rerouted(&self) -> tokio::sync::futures::Notified<'_> {
        self.rerouted.notified()
    }

    /// Id `id` is in use (kept by the previous run): new bindings get others.
    pub(super) fn id_in_use(&self, id: u64) {
        self.ids.in_use(id);
    }

    /// The CONNECT binding of `key`, if there is one.
    pub(super) fn connect_binding(
        &self,
        (account, to, endpoint): &super::connect_bindings::ConnectKey,
    ) -> Option<u64> {
        lock(&self.by_id)
            .values()
            .find(|b| {
                let v = &b.view;
                v.mode == Mode::Connect
                    && &v.tunnel.account == account
                    && &v.to == to
                    && &v.endpoint == endpoint
            })
            .map(|b| b.view.id)
    }

    /// The kept (`tcp` and `http`) bindings served here: open, or being restored.
    pub(super) fn kept_ids(&self) -> std::collections::BTreeSet<u64> {
        let open = lock(&self.by_id)
            .iter()
            .filter(|(_, b)| b.view.mode != Mode::Connect)
            .map(|(id, _)| *id)
            .collect::<Vec<_>>();
        let restoring = lock(&self.restoring).keys().copied().collect::<Vec<_>>();
        open.into_iter().chain(restoring).collect()
    }

    /// Close every binding's listener and connections (at shutdown; tunnels expire on the hops).
    pub fn cancel_all(&self) {
        for b in lock(&self.by_id).values() {
            b.cancel.send_replace(true);
        }
    }
}

/// Why binding `view` must end at `now_unix_ms`, if it must: it expired, or its requesting
/// platform is down (`from_up` false).
pub fn reap_reason(view: &BindingView, now_unix_ms: u64, from_up: bool) -> Option<String> {
    if view.tunnel.expires_unix_ms <= now_unix_ms {
        Some("expired".to_owned())
    } else if !from_up {
        Some(format!("platform {} went down", view.from))
    } else {
        None
    }
}

/// Whether a binding with this `problem` on its path re-routes at `now`: a dead path always, a
/// degraded one only once its hold-down (`hold_until`) has passed.
pub fn wants_reroute(problem: Option<&PathProblem>, hold_until: Instant, now: Instant) -> bool {
    match problem {
        None => false,
        Some(p) => p.dead || now >= hold_until,
    }
}

impl Controller {
    /// Decide the path, set the tunnel up, and record the binding, listening (or to be
    /// listened for) at `listen`; `capability` is the match key of the capability it is made
    /// for (which the target site authorizes). Returns the view, the listener's cancel
    /// signal, and the binding's counters. The decision is stored only once the tunnel is up.
    pub async fn create_binding(
        &self,
        req: BindRequest,
        account: &str,
        listen: SocketAddr,
        capability: Option<&str>,
    ) -> Result<(BindingView, watch::Receiver<bool>, Arc<Stats>), BindError> {
        let ttl = req.ttl_s.unwrap_or(DEFAULT_TTL_S);
        if ttl == 0 || ttl > MAX_TTL_S {
            return Err(BindError::Invalid(format!("ttl_s must be between 1 and {MAX_TTL_S}, not {ttl}")));
        }
        let id = self.bindings.ids.next().await.map_err(|e| {
            BindError::Setup(SetupFailed {
                failed: vec![("store".into(), format!("no id for the binding: {e}"))],
                rolled_back: Vec::new(),
                retry: true,
                denied: false,
            })
        })?;
        let mut prepared = self.prepare_binding(id);
        if req.mode != Mode::Connect {
            prepared.fence = self.own_new_binding(id).await?;
        }
        let expires = now_unix_ms() + ttl * 1000;
        let view = match self.open_binding(&prepared, req, account, listen, capability, expires).await {
            Ok(view) => view,
            Err(e) => {
                // Its owner key must not outlive the attempt.
                if prepared.fence.is_some() {
                    self.forget_binding(id, prepared.fence).await;
                }
                return Err(e);
            }
        };
        Ok((view, prepared.cancelled(), prepared.stats()))
    }

    /// A binding's cancel signal and counters, before it has a tunnel: binding `id` (a new
    /// one's, or one being restored).
    pub fn prepare_binding(&self, id: u64) -> Prepared {
        let (cancel, _) = watch::channel(false);
        let stats = Arc::new(Stats::new(self.ingress.max_buffered_per_binding_mib));
        Prepared { id, cancel: Arc::new(cancel), stats, fence: None }
    }

    /// Decide the path and set the tunnel up for `prepared`, until `expires`; record the
    /// binding (and keep it in the store, to be restored after a restart).
    pub async fn open_binding(
        &self,
        prepared: &Prepared,
        req: BindRequest,
        account: &str,
        listen: SocketAddr,
        capability: Option<&str>,
        expires: u64,
    ) -> Result<BindingView, BindError> {
        if req.endpoint.is_empty() {
            return Err(BindError::Invalid("endpoint must not be empty".into()));
        }
        let from = req.from.clone().or_else(|| self.ingress.platform.clone()).ok_or_else(|| {
            BindError::Invalid("no requesting platform: give `from`, or set `[ingress] platform`".into())
        })?;
        let decision = self.choose_path(&from, &req.to).await?;
        let tunnel_account = req.account.as_deref().unwrap_or(account).to_owned();
        let target = Target {
            endpoint: &req.endpoint,
            account: &tunnel_account,
            capability,
            fence: prepared.fence,
            replaces: None,
        };
        let tunnel = self.setup_tunnel(&decision, target, expires).await?;
        let tunnel = self.record_tunnel_decision(decision, tunnel).await?;
        if req.mode != Mode::Connect {
            let stored = super::restore::StoredBinding {
                request: BindRequest {
                    from: Some(from.clone()),
                    listen: Some(listen),
                    ttl_s: None,
                    ..req.clone()
                },
                account: tunnel_account,
                capability_key: capability.map(str::to_owned),
                expires_unix_ms: expires,
            };
            self.keep_binding(prepared.id, &stored).await;
        }

        let (id, cancel, stats) = (prepared.id, Arc::clone(&prepared.cancel), Arc::clone(&prepared.stats));
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
            active: 0,
            bytes_up: 0,
            bytes_down: 0,
            reroutes: vec![],
            capability: req.capability,
            owner: self.name.clone(),
            epoch: prepared.fence.map(|f| f.epoch),
        };
        tracing::info!(binding = id, %listen, tunnel = view.tunnel.id, hops = ?view.tunnel.hops, "binding open");
        let binding = Binding {
            view: view.clone(),
            cancel,
            stats: Arc::clone(&stats),
            rerouting: false,
            hold_until: Instant::now(),
        };
        lock(&self.bindings.by_id).insert(id, binding);
        self.events.publish(Event::BindingOpened { binding: id, hops: view.tunnel.hops.clone() });
        Ok(view)
    }

    /// End a binding on request: close its listener, abort its connections, tear its tunnel
    /// down.
    pub async fn unbind(&self, id: u64) -> Option<BindingView> {
        self.close_binding(id, "requested").await
    }

    /// Close every binding made for catalog entry `entry` at platform `platform`, saying
    /// `reason`; the bindings closed.
    pub async fn close_capability_bindings(&self, entry: &str, platform: &str, reason: &str) -> Vec<u64> {
        let ids: Vec<u64> = self
            .bindings
            .list()
            .into_iter()
            .filter(|b| b.capability.as_deref() == Some(entry) && b.to == platform)
            .map(|b| b.id)
            .collect();
        for id in &ids {
            self.close_binding(*id, reason).await;
        }
        ids
    }

    async fn close_binding(&self, id: u64, reason: &str) -> Option<BindingView> {
        let binding = lock(&self.bindings.by_id).remove(&id)?;
        binding.cancel.send_replace(true);
        let view = binding.view();
        self.drop_carrier(id);
        self.teardown_tunnel(&view.tunnel).await;
        // The store after the hops: a binding's tunnel goes first.
        if binding.view.mode != Mode::Connect {
            let fence = binding.view.epoch.map(|epoch| Fence { binding: id, epoch });
            self.forget_binding(id, fence).await;
        }
        tracing::info!(binding = id, reason, "binding closed");
        self.events.publish(Event::BindingClosed { binding: id, reason: reason.to_owned() });
        Some(view)
    }

    /// The kept bindings this controller serves (open or being restored).
    pub(super) fn served_kept_bindings(&self) -> std::collections::BTreeSet<u64> {
        self.bindings.kept_ids()
    }

    /// Stop serving binding `id` without changing the store (another controller owns it, or
    /// may soon): its listener closes, its connections end, its tunnel is torn down.
    pub async fn let_binding_go(&self, id: u64, reason: &str) {
        if let Some(prepared) = lock(&self.bindings.restoring).remove(&id) {
            prepared.close();
        }
        let Some(binding) = lock(&self.bindings.by_id).remove(&id) else { return };
        binding.cancel.send_replace(true);
        tracing::warn!(binding = id, reason, "binding let go");
        self.drop_carrier(id);
        self.teardown_tunnel(&binding.view.tunnel).await;
        self.events.publish(Event::BindingClosed { binding: id, reason: reason.to_owned() });
    }

    /// End bindings that expired or whose requesting platform is down.
    pub(super) async fn reap_bindings(&self) {
        let now = now_unix_ms();
        let views: Vec<BindingView> = lock(&self.bindings.by_id).values().map(|b| b.view.clone()).collect();
        for view in views {
            if let Some(why) = reap_reason(&view, now, self.nodes.is_up(&view.from)) {
                self.close_binding(view.id, &why).await;
            }
        }
    }

    /// Re-route bindings whose path died, or degraded past the policy's loss threshold (at most
    /// once per hold-down period).
    pub(super) async fn reroute_bindings(self: &Arc<Self>) {
        let max_loss = self.policy.policy().reroute_loss;
        let now = Instant::now();
        let candidates: Vec<(u64, Vec<String>, Instant)> = lock(&self.bindings.by_id)
            .values()
            .filter(|b| !b.rerouting)
            .map(|b| (b.view.id, b.view.tunnel.hops.clone(), b.hold_until))
            .collect();
        for (id, hops, hold_until) in candidates {
            let problem = self.nodes.view().path_problem(&hops, max_loss, now);
            if !wants_reroute(problem.as_ref(), hold_until, now) {
                continue;
            }
            let Some(problem) = problem else { continue };
            if let Some(b) = lock(&self.bindings.by_id).get_mut(&id) {
                b.rerouting = true;
            }
            let this = Arc::clone(self);
            self.spawner.spawn(async move {
                if let Err(e) = this.reroute(id, &problem).await {
                    tracing::warn!(binding = id, "re-route failed ({}): {e}", problem.reason);
                }
                if let Some(b) = lock(&this.bindings.by_id).get_mut(&id) {
                    b.rerouting = false;
                }
                this.bindings.rerouted.notify_waiters();
            });
        }
    }

    /// Decide a new path for binding `id`, set its tunnel up, switch new connections to it,
    /// and tear the old tunnel down (ending the streams still on it with an error).
    async fn reroute(&self, id: u64, problem: &PathProblem) -> Result<(), BindError> {
        let Some(view) = lock(&self.bindings.by_id).get(&id).map(|b| b.view.clone()) else { return Ok(()) };
        let old = view.tunnel;
        let decision = self.choose_path(&view.from, &view.to).await?;
        let mut new_hops = decision.decision.chosen().path.clone();
        new_hops.push(view.to.clone());
        if new_hops == old.hops && !problem.dead {
            // The degraded path is still the best there is: keep it, and wait a hold-down.
            if let Some(b) = lock(&self.bindings.by_id).get_mut(&id) {
                b.hold_until = Instant::now() + REROUTE_HOLD_DOWN;
            }
            return Ok(());
        }
        let fence = view.epoch.map(|epoch| Fence { binding: id, epoch });
        let target = Target {
            endpoint: &old.endpoint,
            account: &old.account,
            capability: old.capability.as_deref(),
            fence,
            replaces: Some(old.id),
        };
        let new = self.setup_tunnel(&decision, target, old.expires_unix_ms).await?;
        let new = self.record_tunnel_decision(decision, new).await?;
        let reroute = Reroute {
            at_unix_ms: now_unix_ms(),
            reason: problem.reason.clone(),
            from_tunnel: old.id,
            from_hops: old.hops.clone(),
            to_tunnel: new.id,
            to_hops: new.hops.clone(),
        };
        tracing::warn!(binding = id, reason = %problem.reason, from = ?old.hops, to = ?new.hops, "binding re-routed");
        self.recorded.reroutes.inc(&[if problem.dead { "dead" } else { "degraded" }]);
        self.events.publish(Event::Rerouted {
            binding: id,
            reason: reroute.reason.clone(),
            from_hops: reroute.from_hops.clone(),
            to_hops: reroute.to_hops.clone(),
        });
        let still_bound = match lock(&self.bindings.by_id).get_mut(&id) {
            Some(b) => {
                b.view.tunnel = new.clone();
                if b.view.reroutes.len() >= MAX_REROUTES_SHOWN {
                    b.view.reroutes.remove(0);
                }
                b.view.reroutes.push(reroute);
                b.hold_until = Instant::now() + REROUTE_HOLD_DOWN;
                true
            }
            None => false,
        };
        if still_bound {
            // Streams under way move onto the new path (the forwarding data plane).
            self.move_carrier(id, &new);
        }
        self.teardown_tunnel(&old).await;
        if !still_bound {
            // The binding closed while we re-routed: the new tunnel has no one to serve.
            self.teardown_tunnel(&new).await;
        }
        Ok(())
    }

    /// Store the decision that `tunnel` was set up along, now that it is used; a tunnel whose
    /// decision cannot be stored is torn down again.
    async fn record_tunnel_decision(
        &self,
        decision: crate::path::DecisionRecord,
        mut tunnel: TunnelRecord,
    ) -> Result<TunnelRecord, BindError> {
        match self.record_decision(decision).await {
            Ok(stored) => {
                tunnel.decision = stored.id;
                Ok(tunnel)
            }
            Err(e) => {
                self.teardown_tunnel(&tunnel).await;
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(expires_unix_ms: u64) -> BindingView {
        BindingView {
            id: 1,
            from: "site-a".into(),
            to: "site-b".into(),
            endpoint: "web".into(),
            mode: Mode::Tcp,
            account: None,
            listen: "127.0.0.1:1".parse().unwrap(),
            tunnel: TunnelRecord {
                id: 1,
                decision: 1,
                hops: vec!["r1".into(), "site-b".into()],
                endpoint: "web".into(),
                account: "operator".into(),
                capability: None,
                expires_unix_ms,
                site_token: String::new(),
            },
            connections: 0,
            active: 0,
            bytes_up: 0,
            bytes_down: 0,
            reroutes: vec![],
            capability: None,
            owner: "controller".into(),
            epoch: None,
        }
    }

    #[test]
    fn a_binding_ends_when_it_expires_or_its_platform_goes_down() {
        assert_eq!(reap_reason(&view(1_000), 999, true), None);
        assert_eq!(reap_reason(&view(1_000), 1_000, true).as_deref(), Some("expired"));
        assert_eq!(reap_reason(&view(1_000), 5, false).as_deref(), Some("platform site-a went down"));
        assert_eq!(reap_reason(&view(1_000), 2_000, false).as_deref(), Some("expired"), "expiry first");
    }

    #[test]
    fn a_dead_path_reroutes_at_once_and_a_degraded_one_after_its_hold_down() {
        let now = Instant::now();
        let dead = PathProblem { dead: true, reason: "relay r2 is down".into() };
        let lossy = PathProblem { dead: false, reason: "link r1–r2 loses 30 %".into() };
        let held = now + REROUTE_HOLD_DOWN;
        assert!(!wants_reroute(None, now, now));
        assert!(wants_reroute(Some(&dead), held, now), "dead: no hold-down");
        assert!(!wants_reroute(Some(&lossy), held, now), "degraded: held down");
        assert!(wants_reroute(Some(&lossy), held, held), "degraded: hold-down over");
        assert!(wants_reroute(Some(&lossy), now, now + Duration::from_millis(1)));
    }

    #[test]
    fn a_binding_takes_at_most_max_slots_and_frees_them_on_drop() {
        let stats = Arc::new(Stats::new(1));
        let a = ActiveSlot::take(&stats, 2).unwrap();
        let _b = ActiveSlot::take(&stats, 2).unwrap();
        assert!(ActiveSlot::take(&stats, 2).is_none());
        drop(a);
        let _c = ActiveSlot::take(&stats, 2).unwrap();
        assert_eq!(stats.connections.load(Ordering::Relaxed), 3, "every connection carried counts");
    }
}
