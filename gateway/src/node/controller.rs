//! The controller role: membership, the link-state graph, nearest relays, connection requests
//! and the path policy. The admin API ([`super::admin`]) and sites' control streams both call
//! into [`Controller`].
//!
//! A connection request runs DESIGN.md steps 1–4: the requesting and target platforms' nearest
//! relays are looked up; up to k loop-free paths between them are enumerated over the current
//! link latencies; the first relay probes each candidate end to end through its relays; the
//! scorer plugin scores the measured metrics with the policy's weights; the decision is stored
//! and returned.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;
use tokio::task::JoinSet;

use super::accounts::{self, Account, AccountView, Credentials, NewAccount};
use super::config::{ControllerConfig, Policy, PolicyUpdate};
use super::control::{self, Framed};
use super::ingress::Ingress;
use super::store::Store;
use super::{ConnectionRecord, admin};
use crate::mesh::identity::Role;
use crate::mesh::membership::{Membership, MembershipEvent, NodeState};
use crate::mesh::messages::{Control, LinkReport};
use crate::mesh::transport::{MeshEndpoint, peer_name};
use crate::path::{Graph, Hysteresis, LinkStats, NearestRelay, PathScorer, select};
use crate::plugin::{EngineOptions, Plugin, PluginEngine, PluginSpec, World};

/// Why a connection request failed. Each maps to an HTTP status in the admin API.
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
    /// The platform, or the mesh, cannot serve the request now.
    #[error("{0}")]
    Unavailable(String),
    /// Nothing could be scored or stored.
    #[error("{0}")]
    Failed(String),
}

/// Why an account operation failed; each maps to an HTTP status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// Bad id or secret (400).
    #[error("{0}")]
    Invalid(String),
    /// No such account (404).
    #[error("{0}")]
    NotFound(String),
    /// The id is taken (409).
    #[error("{0}")]
    Exists(String),
    /// The store failed (500).
    #[error("{0}")]
    Failed(String),
}

/// What the controller knows about a link, as last reported.
#[derive(Debug, Clone, Serialize)]
pub struct LinkView {
    /// One end (the relay that probes it).
    pub from: String,
    /// The other end.
    pub to: String,
    /// Latest statistics.
    pub stats: LinkStats,
    /// Milliseconds since the report.
    pub age_ms: u64,
    /// Whether the path engine uses it (both ends up, measured, not dead, fresh).
    pub usable: bool,
}

/// A registered node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Up or down.
    pub state: NodeState,
    /// Where it listens for mesh peers.
    pub listen: Option<SocketAddr>,
    /// Milliseconds since it was last heard from.
    pub last_seen_ms: u64,
}

/// A platform (a site) and its relays.
#[derive(Debug, Clone, Serialize)]
pub struct PlatformView {
    /// Platform name (the site's name).
    pub name: String,
    /// Up or down.
    pub state: NodeState,
    /// The relay nearest it, if any is measured.
    pub nearest_relay: Option<String>,
    /// What the site measures to each relay it knows.
    pub relays: BTreeMap<String, LinkStats>,
}

struct LinkRecord {
    stats: LinkStats,
    at: Instant,
}

#[derive(Default)]
struct SiteRecord {
    relays: BTreeMap<String, LinkStats>,
    nearest: NearestRelay,
}

struct State {
    membership: Membership,
    /// Live connections by node, for requests (path probes).
    conns: HashMap<String, quinn::Connection>,
    /// Links by (prober, neighbour).
    links: BTreeMap<(String, String), LinkRecord>,
    sites: BTreeMap<String, SiteRecord>,
}

struct ActivePolicy {
    policy: Policy,
    scorer: Arc<Plugin>,
}

/// The controller's state and operations.
pub struct Controller {
    name: String,
    state: Mutex<State>,
    policy: Mutex<ActivePolicy>,
    engine: Arc<PluginEngine>,
    /// Each target platform's adapter, for `http` bindings.
    adapters: BTreeMap<String, Arc<Plugin>>,
    store: Arc<Store>,
    hysteresis: Hysteresis,
    /// Link reports older than this are not used.
    stale_after: Duration,
    /// Tunnels and bindings.
    pub ingress: Ingress,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn ms_since(t: Instant) -> u64 {
    t.elapsed().as_millis().try_into().unwrap_or(u64::MAX)
}

/// A running controller: its mesh endpoint, admin API and background tasks.
pub struct ControllerHandle {
    controller: Arc<Controller>,
    endpoint: Arc<MeshEndpoint>,
    mesh_addr: SocketAddr,
    admin_addr: SocketAddr,
    connect_addr: Option<SocketAddr>,
    tasks: JoinSet<()>,
}

impl ControllerHandle {
    /// The controller.
    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }
    /// The QUIC address nodes connect to.
    pub fn mesh_addr(&self) -> SocketAddr {
        self.mesh_addr
    }
    /// The admin API's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }
    /// The CONNECT proxy's address, if it runs.
    pub fn connect_addr(&self) -> Option<SocketAddr> {
        self.connect_addr
    }
    /// Stop everything.
    pub fn shutdown(mut self) {
        self.endpoint.close();
        self.tasks.abort_all();
    }
    /// Run until the task set ends (it does not, unless shut down).
    pub async fn wait(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Controller {
    /// Start a controller: open the store, load the scorer, bind QUIC and the admin API.
    pub async fn start(config: ControllerConfig) -> anyhow::Result<ControllerHandle> {
        config.policy.validate().map_err(|e| anyhow::anyhow!("policy: {e}"))?;
        let token = admin::read_token(&config.admin.token_file)?;
        let store = Arc::new(Store::open(&config.store)?);
        let mut options = EngineOptions::default();
        if let Some(cache) = &config.plugin_cache {
            options.cache_dir = Some(cache.clone());
        }
        let engine = PluginEngine::new(options)?;
        let scorer = load_scorer(&engine, &config.policy)?;
        let adapters = load_adapters(&engine, &config.adapters)?;
        let identity = config.tls.load(&config.name, Role::Controller)?;
        let endpoint = Arc::new(MeshEndpoint::bind(config.listen, identity, &[Role::Relay, Role::Site])?);
        let mesh_addr = endpoint.local_addr()?;
        let controller = Arc::new(Controller {
            name: config.name.clone(),
            state: Mutex::new(State {
                membership: Membership::new(config.membership),
                conns: HashMap::new(),
                links: BTreeMap::new(),
                sites: BTreeMap::new(),
            }),
            policy: Mutex::new(ActivePolicy { policy: config.policy, scorer }),
            engine,
            adapters,
            store,
            hysteresis: config.nearest,
            stale_after: Duration::from_millis(config.membership.down_after_ms),
            ingress: Ingress::new(config.ingress.clone())?,
        });
        let admin_listener = tokio::net::TcpListener::bind(config.admin.listen)
            .await
            .with_context(|| format!("cannot bind the admin API on {}", config.admin.listen))?;
        let admin_addr = admin_listener.local_addr()?;
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_nodes(Arc::clone(&controller), Arc::clone(&endpoint)));
        tasks.spawn(watch_membership(Arc::clone(&controller)));
        let mut connect_addr = None;
        if let Some(addr) = config.ingress.connect_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot bind the CONNECT proxy on {addr}"))?;
            connect_addr = Some(listener.local_addr()?);
            let digest = crate::secret::digest(&token);
            tasks.spawn(Arc::clone(&controller).serve_connect(listener, Arc::new(digest)));
        }
        tasks.spawn(admin::serve(admin_listener, Arc::clone(&controller), token));
        tracing::info!(controller = %config.name, %mesh_addr, %admin_addr, "controller started");
        Ok(ControllerHandle { controller, endpoint, mesh_addr, admin_addr, connect_addr, tasks })
    }

    /// Whether `secret` is account `id`'s secret.
    pub fn authenticate(&self, id: &str, secret: &str) -> bool {
        matches!(self.store.account(id), Ok(Some(a)) if a.secret_matches(secret))
    }

    /// Create an account.
    pub async fn create_account(&self, new: NewAccount) -> Result<AccountView, AccountError> {
        accounts::validate(&new).map_err(AccountError::Invalid)?;
        let account = Account {
            id: new.id,
            secret: new.secret,
            created_unix_ms: crate::tunnel::grant::now_unix_ms(),
            credentials: Default::default(),
        };
        let store = Arc::clone(&self.store);
        let stored = account.clone();
        tokio::task::spawn_blocking(move || store.insert_account(&stored))
            .await
            .map_err(|e| AccountError::Failed(e.to_string()))?
            .map_err(|e| AccountError::Exists(format!("{e:#}")))?;
        tracing::info!(account = %account.id, "account created");
        Ok(account.view())
    }

    /// Every account (no secrets).
    pub async fn accounts(&self) -> Result<Vec<AccountView>, AccountError> {
        let store = Arc::clone(&self.store);
        let all = tokio::task::spawn_blocking(move || store.accounts())
            .await
            .map_err(|e| AccountError::Failed(e.to_string()))?
            .map_err(|e| AccountError::Failed(format!("{e:#}")))?;
        Ok(all.iter().map(Account::view).collect())
    }

    /// Run `change` on account `id` and store the result.
    pub async fn change_account(
        &self,
        id: &str,
        change: impl FnOnce(&mut Account) -> Result<(), AccountError> + Send + 'static,
    ) -> Result<AccountView, AccountError> {
        let store = Arc::clone(&self.store);
        let owned = id.to_owned();
        let view = tokio::task::spawn_blocking(move || {
            let mut account = store
                .account(&owned)
                .map_err(|e| AccountError::Failed(format!("{e:#}")))?
                .ok_or_else(|| AccountError::NotFound(format!("no account `{owned}`")))?;
            change(&mut account)?;
            store.update_account(&account).map_err(|e| AccountError::Failed(format!("{e:#}")))?;
            Ok(account.view())
        })
        .await
        .map_err(|e| AccountError::Failed(e.to_string()))??;
        // Tokens obtained with the old credentials must not outlive them.
        self.ingress.forget_tokens(id);
        Ok(view)
    }

    /// One account (no secrets).
    pub async fn account(&self, id: &str) -> Result<AccountView, AccountError> {
        self.change_account(id, |_| Ok(())).await
    }

    /// Delete an account.
    pub async fn delete_account(&self, id: &str) -> Result<(), AccountError> {
        let store = Arc::clone(&self.store);
        let owned = id.to_owned();
        let existed = tokio::task::spawn_blocking(move || store.remove_account(&owned))
            .await
            .map_err(|e| AccountError::Failed(e.to_string()))?
            .map_err(|e| AccountError::Failed(format!("{e:#}")))?;
        self.ingress.forget_tokens(id);
        if existed { Ok(()) } else { Err(AccountError::NotFound(format!("no account `{id}`"))) }
    }

    /// Account `id`'s secret, for checking a signature made with it (never logged or shown).
    pub(super) fn account_secret(&self, id: &str) -> Option<String> {
        self.store.account(id).ok().flatten().map(|a| a.secret)
    }

    /// The adapter that translates sessions for `platform`, if one is configured.
    pub fn adapter(&self, platform: &str) -> Option<Arc<Plugin>> {
        self.adapters.get(platform).cloned()
    }

    /// The credentials account `id` maps to at `platform`, if any.
    pub fn credentials(&self, id: &str, platform: &str) -> Option<Credentials> {
        self.store.account(id).ok().flatten().and_then(|a| a.credentials.get(platform).cloned())
    }

    /// The controller's node name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The live QUIC connection with a registered node.
    pub(super) fn node_connection(&self, node: &str) -> Option<quinn::Connection> {
        lock(&self.state).conns.get(node).filter(|c| c.close_reason().is_none()).cloned()
    }

    /// What is wrong with a tunnel's path (`hops`: relays, then the target site), if anything:
    /// `Some((true, why))` when it is dead (a relay down, a link gone), `Some((false, why))`
    /// when a link loses more than `max_loss`.
    pub(super) fn path_problem(&self, hops: &[String], max_loss: f64) -> Option<(bool, String)> {
        let state = lock(&self.state);
        let relays = &hops[..hops.len().saturating_sub(1)];
        if let Some(down) = relays.iter().find(|r| !state.membership.is_up(r)) {
            return Some((true, format!("relay {down} is down")));
        }
        for pair in relays.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let link =
                state.links.get(&(a.clone(), b.clone())).or_else(|| state.links.get(&(b.clone(), a.clone())));
            match link {
                Some(r) if self.usable(&state, a, b, r) || self.usable(&state, b, a, r) => {
                    if r.stats.loss > max_loss {
                        return Some((
                            false,
                            format!("link {a}–{b} loses {:.0} % of probes", r.stats.loss * 100.0),
                        ));
                    }
                }
                _ => return Some((true, format!("link {a}–{b} is down"))),
            }
        }
        None
    }

    /// Whether a registered node is up.
    pub(super) fn is_up(&self, node: &str) -> bool {
        lock(&self.state).membership.is_up(node)
    }

    /// Every registered node.
    pub fn nodes(&self) -> Vec<NodeView> {
        let state = lock(&self.state);
        state
            .membership
            .nodes()
            .map(|n| NodeView {
                name: n.name.clone(),
                role: n.role,
                state: n.state,
                listen: n.listen,
                last_seen_ms: ms_since(n.last_seen),
            })
            .collect()
    }

    /// Every reported link.
    pub fn links(&self) -> Vec<LinkView> {
        let state = lock(&self.state);
        state
            .links
            .iter()
            .map(|((from, to), r)| LinkView {
                from: from.clone(),
                to: to.clone(),
                stats: r.stats,
                age_ms: ms_since(r.at),
                usable: self.usable(&state, from, to, r),
            })
            .collect()
    }

    /// Every platform, with its nearest relay.
    pub fn platforms(&self) -> Vec<PlatformView> {
        let state = lock(&self.state);
        state
            .membership
            .nodes()
            .filter(|n| n.role == Role::Site)
            .map(|n| {
                let site = state.sites.get(&n.name);
                PlatformView {
                    name: n.name.clone(),
                    state: n.state,
                    nearest_relay: site.and_then(|s| s.nearest.current().cloned()),
                    relays: site.map(|s| s.relays.clone()).unwrap_or_default(),
                }
            })
            .collect()
    }

    /// The current policy.
    pub fn policy(&self) -> Policy {
        lock(&self.policy).policy.clone()
    }

    /// Change the policy; the next decision uses it. A new scorer is loaded (and checked to be
    /// a scorer) before anything changes.
    pub fn set_policy(&self, update: &PolicyUpdate) -> Result<Policy, String> {
        let current = self.policy();
        let next = current.updated(update);
        next.validate()?;
        let scorer = if next.scorer != current.scorer {
            Some(load_scorer(&self.engine, &next).map_err(|e| format!("{e:#}"))?)
        } else {
            None
        };
        let mut active = lock(&self.policy);
        if let Some(scorer) = scorer {
            active.scorer = scorer;
        }
        active.policy = next.clone();
        tracing::info!(?next, "policy changed");
        Ok(next)
    }

    /// A stored decision record.
    pub async fn connection(&self, id: u64) -> anyhow::Result<Option<ConnectionRecord>> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.connection(id)).await?
    }

    /// The latest decision records, newest first.
    pub async fn recent_connections(&self, limit: usize) -> anyhow::Result<Vec<ConnectionRecord>> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.recent_connections(limit)).await?
    }

    fn usable(&self, state: &State, from: &str, to: &str, r: &LinkRecord) -> bool {
        let relay_up = |n: &str| {
            state.membership.get(n).is_some_and(|n| n.role == Role::Relay && n.state == NodeState::Up)
        };
        relay_up(from)
            && relay_up(to)
            && r.stats.rtt_ms.is_some()
            && r.stats.loss < 1.0
            && r.at.elapsed() <= self.stale_after
    }

    /// The platform `name` as a connection endpoint: it must be a registered, up site.
    fn platform<'a>(&self, state: &'a State, name: &str) -> Result<&'a SiteRecord, ConnectError> {
        let known = || {
            let names: Vec<&str> =
                state.membership.nodes().filter(|n| n.role == Role::Site).map(|n| n.name.as_str()).collect();
            if names.is_empty() { "none".to_owned() } else { names.join(", ") }
        };
        match state.membership.get(name) {
            Some(n) if n.role == Role::Site => {}
            _ => return Err(ConnectError::UnknownPlatform { name: name.to_owned(), known: known() }),
        }
        if !state.membership.is_up(name) {
            return Err(ConnectError::Unavailable(format!(
                "platform `{name}` is down (its site stopped heartbeating)"
            )));
        }
        state.sites.get(name).filter(|s| s.nearest.current().is_some()).ok_or_else(|| {
            ConnectError::Unavailable(format!("no relay has been measured from platform `{name}` yet"))
        })
    }

    /// Handle a connection request from platform `from` to platform `to`.
    pub async fn connect(&self, from: &str, to: &str) -> Result<ConnectionRecord, ConnectError> {
        let ActivePolicy { policy, scorer } = {
            let a = lock(&self.policy);
            ActivePolicy { policy: a.policy.clone(), scorer: Arc::clone(&a.scorer) }
        };
        if from == to {
            return Err(ConnectError::Unavailable(format!("platform `{from}` cannot connect to itself")));
        }
        // Steps 1–2 under the lock: routing relays and candidate paths.
        let (first, second, paths, first_conn) = {
            let state = lock(&self.state);
            let first = self.platform(&state, from)?.nearest.current().cloned().unwrap_or_default();
            let second = self.platform(&state, to)?.nearest.current().cloned().unwrap_or_default();
            let mut graph = Graph::new();
            for n in state.membership.nodes().filter(|n| n.role == Role::Relay && n.state == NodeState::Up) {
                graph.add_node(&n.name);
            }
            for ((a, b), r) in &state.links {
                if self.usable(&state, a, b, r) {
                    let rtt = r.stats.rtt_ms.unwrap_or(f64::INFINITY);
                    graph.set_link(a, b, rtt).map_err(|e| ConnectError::Failed(e.to_string()))?;
                }
            }
            let paths = graph.k_shortest_paths(&first, &second, policy.k).map_err(|e| {
                ConnectError::Unavailable(format!("no path from relay {first} to relay {second}: {e}"))
            })?;
            if paths.is_empty() {
                return Err(ConnectError::Unavailable(format!(
                    "no path from relay {first} (nearest {from}) to relay {second} (nearest {to}) in the link-state graph"
                )));
            }
            let conn = state.conns.get(&first).cloned().ok_or_else(|| {
                ConnectError::Unavailable(format!("relay {first} is not connected to the controller"))
            })?;
            (first, second, paths, conn)
        };

        // Step 3: probe every candidate end to end, all at once, from the first relay.
        let probes = paths.iter().map(|path| {
            let request = Control::ProbePath {
                route: path.nodes.clone(),
                count: policy.probes,
                interval_ms: policy.probe_interval_ms,
            };
            let conn = first_conn.clone();
            async move {
                match control::request(&conn, &request).await {
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

        // Step 4: score (plugin calls are synchronous: keep them off the async workers).
        let weights: Vec<(String, f64)> = policy.weights.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let scoring = Arc::clone(&scorer);
        let decision = tokio::task::spawn_blocking(move || {
            select(&candidates, scoring.as_ref() as &dyn PathScorer, &weights)
        })
        .await
        .map_err(|e| ConnectError::Failed(format!("scoring task failed: {e}")))?
        .map_err(|e| ConnectError::Failed(format!("path selection failed: {e}")))?;

        let mut record = ConnectionRecord {
            id: 0,
            from: from.to_owned(),
            to: to.to_owned(),
            first_relay: first,
            second_relay: second,
            created_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            policy,
            decision,
        };
        let store = Arc::clone(&self.store);
        let record =
            tokio::task::spawn_blocking(move || store.insert_connection(&mut record).map(|_| record))
                .await
                .map_err(|e| ConnectError::Failed(format!("store task failed: {e}")))?
                .map_err(|e| ConnectError::Failed(format!("cannot store the decision: {e:#}")))?;
        tracing::info!(
            id = record.id, from, to, path = ?record.decision.chosen().path,
            score = ?record.decision.chosen().score, "connection decided"
        );
        Ok(record)
    }

    fn on_link_report(&self, node: &str, role: Role, links: Vec<LinkReport>) {
        let mut state = lock(&self.state);
        let now = Instant::now();
        match role {
            Role::Relay => {
                for l in links {
                    state
                        .links
                        .insert((node.to_owned(), l.neighbour), LinkRecord { stats: l.stats, at: now });
                }
            }
            Role::Site => {
                let relays: BTreeMap<String, LinkStats> =
                    links.into_iter().map(|l| (l.neighbour, l.stats)).collect();
                // Only relays that are up and answer count for nearness.
                let rtts: BTreeMap<String, f64> = relays
                    .iter()
                    .filter(|(r, s)| {
                        s.loss < 1.0
                            && state
                                .membership
                                .get(r)
                                .is_some_and(|n| n.role == Role::Relay && n.state == NodeState::Up)
                    })
                    .filter_map(|(r, s)| s.rtt_ms.map(|rtt| (r.clone(), rtt)))
                    .collect();
                let hysteresis = self.hysteresis;
                let site = state.sites.entry(node.to_owned()).or_insert_with(|| SiteRecord {
                    nearest: NearestRelay::new(hysteresis),
                    ..SiteRecord::default()
                });
                let before = site.nearest.current().cloned();
                let after = site.nearest.update(&rtts).cloned();
                site.relays = relays;
                if before != after {
                    tracing::info!(platform = node, from = ?before, to = ?after, "nearest relay changed");
                }
            }
            Role::Controller => {}
        }
    }

    /// Serve one node connection: its control stream (registration, heartbeats, reports) and
    /// any request streams it opens (sites' connection requests).
    async fn serve_node(self: Arc<Self>, conn: quinn::Connection, role: Role) {
        let remote = conn.remote_address();
        let Some(name) = peer_name(&conn) else {
            conn.close(1u32.into(), b"certificate carries no node name");
            return;
        };
        let mut registered = false;
        while let Ok(stream) = conn.accept_bi().await {
            let mut stream = Framed::new(stream);
            let first = match stream.recv().await {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(node = %name, %remote, "bad control frame: {e:#}");
                    stream.refuse(&format!("{e:#}")).await;
                    continue;
                }
            };
            match first {
                Control::Register { name: claimed, role: claimed_role, listen } if !registered => {
                    if claimed != name || claimed_role != role {
                        let reason = format!(
                            "registration as {claimed_role} `{claimed}` does not match the certificate ({role} `{name}`)"
                        );
                        tracing::warn!(%remote, "{reason}");
                        stream.refuse(&reason).await;
                        conn.close(2u32.into(), b"identity mismatch");
                        return;
                    }
                    let event = lock(&self.state).membership.register(&name, role, listen, Instant::now());
                    match event {
                        Ok(events) => log_events(&events),
                        Err(e) => {
                            tracing::warn!(node = %name, "registration refused: {e}");
                            stream.refuse(&e.to_string()).await;
                            conn.close(2u32.into(), b"registration refused");
                            return;
                        }
                    }
                    let heartbeat_ms = lock(&self.state).membership.config().heartbeat_ms;
                    if stream
                        .send(&Control::Registered {
                            controller: self.name.clone(),
                            heartbeat_ms,
                            hop_key: self.ingress.hop_key(&name).to_hex(),
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    lock(&self.state).conns.insert(name.clone(), conn.clone());
                    registered = true;
                    tokio::spawn(Arc::clone(&self).control_stream(name.clone(), role, stream, conn.clone()));
                }
                Control::Connect { target } if registered && role == Role::Site => {
                    let this = Arc::clone(&self);
                    let from = name.clone();
                    tokio::spawn(async move {
                        match this.connect(&from, &target).await {
                            Ok(record) => {
                                let _ =
                                    stream.send(&Control::Connected { connection: Box::new(record) }).await;
                                stream.finish();
                            }
                            Err(e) => stream.refuse(&e.to_string()).await,
                        }
                    });
                }
                other => {
                    let reason = if registered {
                        format!("unexpected request {other:?}")
                    } else {
                        "register first".to_owned()
                    };
                    stream.refuse(&reason).await;
                }
            }
        }
        // The node's connection is gone: it is down now, not after a heartbeat timeout (unless
        // it already reconnected on another connection).
        let mut state = lock(&self.state);
        if state.conns.get(&name).is_some_and(|c| c.stable_id() == conn.stable_id()) {
            state.conns.remove(&name);
            let events = state.membership.disconnected(&name, Instant::now());
            log_events(&events);
        }
    }

    /// The registered node's control stream: heartbeats and link reports until it ends.
    async fn control_stream(
        self: Arc<Self>,
        name: String,
        role: Role,
        mut stream: Framed,
        conn: quinn::Connection,
    ) {
        loop {
            match stream.recv().await {
                Ok(Some(Control::Heartbeat { .. })) => {
                    let events = lock(&self.state).membership.heartbeat(&name, Instant::now());
                    if let Ok(events) = events {
                        log_events(&events);
                    }
                }
                Ok(Some(Control::LinkReport { links })) => {
                    let _ =
                        lock(&self.state).membership.heartbeat(&name, Instant::now()).map(|e| log_events(&e));
                    self.on_link_report(&name, role, links);
                }
                Ok(Some(other)) => {
                    tracing::warn!(node = %name, "unexpected message on the control stream: {other:?}");
                    stream.refuse("unexpected message on the control stream").await;
                    conn.close(3u32.into(), b"protocol error");
                    return;
                }
                Ok(None) => return,
                Err(_) if conn.close_reason().is_some() => {
                    tracing::info!(node = %name, reason = ?conn.close_reason(), "node disconnected");
                    return;
                }
                Err(e) => {
                    tracing::warn!(node = %name, "control stream closed: {e:#}");
                    stream.refuse(&format!("{e:#}")).await;
                    conn.close(3u32.into(), b"protocol error");
                    return;
                }
            }
        }
    }
}

fn log_events(events: &[MembershipEvent]) {
    for e in events {
        tracing::info!("membership: {e:?}");
    }
}

/// Load the `[[adapter]]` plugins: each must be an adapter, one per platform.
fn load_adapters(
    engine: &PluginEngine,
    configs: &[super::config::AdapterConfig],
) -> anyhow::Result<BTreeMap<String, Arc<Plugin>>> {
    let mut adapters = BTreeMap::new();
    for c in configs {
        let mut spec =
            PluginSpec::new(format!("adapter-{}", c.platform), &c.path).with_limits(c.limits.clone());
        spec.config = c.config.clone();
        let plugin = engine
            .load(&spec)
            .with_context(|| format!("cannot load the adapter for {} ({})", c.platform, c.path.display()))?;
        if plugin.world() != World::Adapter {
            anyhow::bail!("{} is a {} plugin, not an adapter", c.path.display(), plugin.world());
        }
        if adapters.insert(c.platform.clone(), Arc::new(plugin)).is_some() {
            anyhow::bail!("two [[adapter]] entries for platform {}", c.platform);
        }
    }
    Ok(adapters)
}

fn load_scorer(engine: &PluginEngine, policy: &Policy) -> anyhow::Result<Arc<Plugin>> {
    let name = policy.scorer.file_stem().and_then(|s| s.to_str()).unwrap_or("scorer").to_owned();
    let plugin = engine
        .load(&PluginSpec::new(name, &policy.scorer))
        .with_context(|| format!("cannot load the scorer {}", policy.scorer.display()))?;
    if plugin.world() != World::Scorer {
        anyhow::bail!("{} is a {} plugin, not a scorer", policy.scorer.display(), plugin.world());
    }
    Ok(Arc::new(plugin))
}

async fn accept_nodes(controller: Arc<Controller>, endpoint: Arc<MeshEndpoint>) {
    while let Some((conn, role)) = endpoint.accept().await {
        tokio::spawn(Arc::clone(&controller).serve_node(conn, role));
    }
}

/// Mark silent nodes down, and drop the connections of nodes that went down.
async fn watch_membership(controller: Arc<Controller>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let events = lock(&controller.state).membership.poll(Instant::now());
        log_events(&events);
        controller.reap_bindings().await;
        controller.reroute_bindings().await;
    }
}
