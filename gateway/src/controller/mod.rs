//! # The controller
//!
//! The controller's state and operations, as small services on one [`Controller`]:
//!
//! | file | concern |
//! | --- | --- |
//! | [`view`] | sans-IO mesh view: membership, links, sites' nearest relays, the graph, path health |
//! | [`nodes`] | node connections: registration, heartbeats, link reports, sites' requests |
//! | [`connect`] | connection requests, steps 1–4: routing relays, k paths, probes, scoring, the decision |
//! | `connect_bindings` | CONNECT's bindings: one per account and target, made on first use |
//! | [`policy`] | the path policy in force and its scorer plugin |
//! | [`accounts`] | accounts and their credential mappings; failed proofs and replays seen |
//! | [`tunnels`] | tunnel setup and teardown on the hops (step 5) |
//! | [`bindings`] | bindings, their expiry and re-routes |
//! | [`streams`] | a client's stream onto its binding's current tunnel, and the session of each use |
//! | `carriers` | each binding's end-to-end QUIC connection to its site, routed over its tunnel, renewed |
//! | [`budget`] | what the ingress may hold at once: client connections, bodies being buffered |
//! | [`restore`] | what a restart keeps: bindings and the runtime policy in the store |
//! | [`catalog`] | platforms' reports gathered, checked and integrated into their inventories; the catalog's entries |
//! | [`consent`] | the authorization handshake: asking platforms, grants into the catalog, retries, expiry |
//! | [`events`] | a broadcast of what happened: membership, nearest relays, decisions, bindings |
//!
//! How data flows: relays and sites connect ([`nodes`]) and keep the [`view::MeshView`]
//! current. A decision ([`Controller::decide`]) reads routing relays and candidate paths from
//! the view, has the first relay probe each, scores them on the plugin pool and stores the
//! record. A binding ([`Controller::create_binding`]) decides, sets a tunnel up along the winner
//! and registers the binding; the ingress (`crate::ingress`) listens for it, opens a stream per
//! client on the binding's end-to-end connection (`carriers`, [`Controller::open_stream`]) and
//! records each use as a session. A tick
//! every 100 ms marks silent nodes down, ends expired bindings and re-routes those whose path
//! died or degraded.
//!
//! The controller knows nothing of the admin API or the ingress's listeners: they sit above it
//! and call into it, and the role runner (`crate::node::controller`) starts all three.

pub mod accounts;
pub mod bindings;
pub mod budget;
mod carriers;

pub mod catalog;
pub mod connect;
mod connect_bindings;
pub mod consent;
pub mod events;
pub mod group;
pub mod group_bindings;
mod ids;
pub mod metrics;
pub mod nodes;
pub mod ownership;
pub mod policy;
pub mod restore;
pub mod streams;

pub mod tunnels;
pub mod view;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;

pub use accounts::AccountError;
pub use bindings::{BindError, BindRequest, BindingView, Mode};
pub use catalog::{CatalogError, CatalogFilter, EntryView, OfferView};
pub use connect::ConnectError;
pub use tunnels::TunnelRecord;
pub use view::{LinkView, NodeView, PlatformView};

use crate::blocking::Pool;
use crate::config::{AdapterConfig, ControllerConfig, IngressConfig};
use crate::mesh::identity::Role;
use crate::mesh::transport::MeshEndpoint;
use crate::path::{Policy, PolicyUpdate};
use crate::plugin::{EngineOptions, Plugin, PluginEngine, PluginRegistry, PluginSpec, RegistryEntry, World};
use crate::session::records::SessionLog;
use crate::session::tokens::TokenCache;
use crate::shutdown::{Shutdown, Signal, Spawner};
use crate::store::Store;
use crate::store::kv::cluster_secret::cluster_secret;
use crate::store::kv::ids::IdBlocks;
use crate::store::open::Opened;

/// Plugin calls that may run at once on the controller (each on a blocking thread).
const PLUGIN_CALLS: usize = 8;
/// How often the controller checks membership, expiry and path health.
const TICK: Duration = Duration::from_millis(100);
/// How often plugin files are checked for changes (a stat each).
const PLUGIN_WATCH: Duration = Duration::from_millis(500);

/// The controller's state and operations.
pub struct Controller {
    name: String,
    nodes: nodes::Nodes,
    policy: policy::ActivePolicy,
    plugins: Arc<PluginRegistry>,
    /// Every plugin call runs here, never on an async worker.
    plugin_calls: Pool,
    store: Store,
    tunnels: tunnels::Tunnels,
    bindings: bindings::Bindings,
    sessions: Mutex<SessionLog>,
    tokens: Mutex<TokenCache>,
    /// Failed proofs of identity, for brute-force back-off.
    throttle: Mutex<crate::session::throttle::AuthThrottle>,
    /// Natively signed requests seen lately (replays are refused).
    replay: Mutex<crate::session::replay::ReplayGuard>,
    /// What the ingress may hold at once.
    budget: budget::Budget,
    /// Bindings' end-to-end connections (the forwarding data plane).
    carriers: carriers::Carriers,

    ingress: IngressConfig,
    spawner: Spawner,
    events: events::Events,
    catalog: catalog::Catalog,
    consents: consent::Consents,
    recorded: metrics::Recorded,
    /// Alone, or in a group ([`group`]): set once the addresses are known.
    place: std::sync::OnceLock<group::Place>,
    /// In a group: the bindings' kept state and owners ([`ownership`]).
    ledger: std::sync::OnceLock<ownership::Ledger>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Controller {
    /// Start a controller on its opened store: load the plugins, bind QUIC for nodes, and run
    /// its tasks until `shutdown` is raised. Returns the controller and its mesh address.
    pub async fn start(
        config: &ControllerConfig,
        opened: Opened,
        shutdown: &Shutdown,
    ) -> anyhow::Result<(Arc<Controller>, SocketAddr)> {
        config.policy.validate().map_err(|e| anyhow::anyhow!("policy: {e}"))?;
        let Opened { store, group } = opened;
        // In a group: one hop-key secret for all (a relay accepts grants from any controller)
        // and ids no other controller hands out.
        let (secret, binding_ids, tunnel_ids) = match &group {
            None => (None, ids::Ids::own(), ids::Ids::own()),
            Some(g) => {
                let secret = cluster_secret(g.kv.as_ref(), &g.key("cluster/hop-secret"), &g.seal)
                    .await
                    .context("reading the group's hop-key secret")?;
                let blocks = |name: &str| {
                    ids::Ids::Shared(IdBlocks::new(
                        Arc::clone(&g.kv),
                        g.key(&format!("ids/{name}")),
                        ids::BLOCK,
                    ))
                };
                (Some(secret), blocks("bindings"), blocks("tunnels"))
            }
        };
        let mut options = EngineOptions::default();
        if let Some(cache) = &config.plugin_cache {
            options.cache_dir = Some(cache.clone());
        }
        let plugins = Arc::new(PluginRegistry::new(PluginEngine::new(options)?));
        let policy = policy::ActivePolicy::new(config.policy.clone(), Arc::clone(&plugins))?;
        load_adapters(&plugins, &config.adapters)?;
        plugins.spawn_watcher(PLUGIN_WATCH).context("starting the plugin watcher")?;
        let identity = config.tls.load(&config.name, Role::Controller)?;
        let endpoint = Arc::new(MeshEndpoint::bind(config.listen, identity, &[Role::Relay, Role::Site])?);
        let mesh_addr = endpoint.local_addr()?;
        let controller = Arc::new(Controller {
            name: config.name.clone(),
            nodes: nodes::Nodes::new(view::MeshView::new(config.membership, config.nearest)),
            policy,
            plugins,
            plugin_calls: Pool::new("plugin", PLUGIN_CALLS),
            store,
            tunnels: tunnels::Tunnels::new(secret, tunnel_ids)?,
            bindings: bindings::Bindings::new(binding_ids),
            sessions: Mutex::new(SessionLog::default()),
            tokens: Mutex::new(TokenCache::default()),
            throttle: Mutex::default(),
            replay: Mutex::default(),
            budget: budget::Budget::new(&config.ingress, budget::raise_descriptor_limit()),
            carriers: carriers::Carriers::new(&endpoint, config.ingress.renew_after_streams),

            ingress: config.ingress.clone(),
            spawner: shutdown.spawner(),
            events: events::Events::default(),
            catalog: catalog::Catalog::new(config.catalog.bounds, config.catalog.withdrawal),
            consents: consent::Consents::new(config.catalog.handshake),
            recorded: metrics::Recorded::default(),
            place: std::sync::OnceLock::new(),
            ledger: std::sync::OnceLock::new(),
        });
        tokio::spawn(nodes::accept(Arc::clone(&controller), Arc::clone(&endpoint), shutdown.signal()));
        // In a group, pending authorizations are resumed once the controller has joined.
        let resume = group.is_none();
        tokio::spawn(tick(Arc::clone(&controller), endpoint, shutdown.signal(), resume));
        tracing::info!(controller = %config.name, %mesh_addr, "controller started");
        Ok((controller, mesh_addr))
    }

    /// After the shutdown drained: refuse further plugin and store calls, wait for those
    /// running, and release the store (its file can be opened again).
    pub async fn close(&self) {
        self.bindings.cancel_all();
        self.carriers.close_all();
        // Connections keep the mesh socket open: let them go.
        self.nodes.forget_connections();
        self.plugin_calls.close().await;
        self.store.close().await;
    }

    /// The controller's node name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A spawner whose tasks end at the controller's shutdown (for the ingress's listeners).
    pub fn spawner(&self) -> &Spawner {
        &self.spawner
    }

    /// Every event from now on (see [`events`]).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<events::Stamped> {
        self.events.subscribe()
    }

    /// The latest `n` events (at most [`events::RECENT`]) and every event after them.
    pub fn subscribe_with_recent(
        &self,
        n: usize,
    ) -> (Vec<events::Stamped>, tokio::sync::broadcast::Receiver<events::Stamped>) {
        self.events.subscribe_with_recent(n)
    }

    /// The ingress's configuration.
    pub fn ingress_config(&self) -> &IngressConfig {
        &self.ingress
    }

    /// What the ingress may hold at once: client connections, bodies being buffered.
    pub fn budget(&self) -> &budget::Budget {
        &self.budget
    }

    /// The bindings.
    pub fn bindings(&self) -> &bindings::Bindings {
        &self.bindings
    }

    /// The pool every plugin call runs on.
    pub fn plugin_calls(&self) -> &Pool {
        &self.plugin_calls
    }

    /// The adapter that translates sessions for `platform`, if one is configured.
    pub fn adapter(&self, platform: &str) -> Option<Arc<Plugin>> {
        self.plugins.get(&adapter_name(platform))
    }

    /// Every plugin in service, with its info, counters and file, by name.
    pub fn plugins(&self) -> Vec<RegistryEntry> {
        self.plugins.entries()
    }

    /// The target tokens cached for session translation.
    pub fn tokens(&self) -> MutexGuard<'_, TokenCache> {
        lock(&self.tokens)
    }

    /// Every registered node.
    pub fn nodes(&self) -> Vec<NodeView> {
        self.nodes.view().nodes(Instant::now())
    }

    /// Every reported link.
    pub fn links(&self) -> Vec<LinkView> {
        self.nodes.view().links(Instant::now())
    }

    /// Every platform, with its nearest relay.
    pub fn platforms(&self) -> Vec<PlatformView> {
        self.nodes.view().platforms()
    }

    /// Whether node `name` is registered and up.
    pub fn is_up(&self, name: &str) -> bool {
        self.nodes.is_up(name)
    }

    /// The current policy.
    pub fn policy(&self) -> Policy {
        self.policy.policy()
    }

    /// Change the policy; the next decision uses it. A new scorer is loaded (and checked to be
    /// a scorer) on the plugin pool before anything changes.
    pub async fn set_policy(self: &Arc<Self>, update: PolicyUpdate) -> Result<Policy, String> {
        let this = Arc::clone(self);
        let policy =
            self.plugin_calls.run(move || this.policy.update(&update)).await.map_err(|e| e.to_string())??;
        self.keep_policy(&policy).await;
        self.events.publish(events::Event::PolicyChanged);
        Ok(policy)
    }
}

fn adapter_name(platform: &str) -> String {
    format!("adapter-{platform}")
}

/// Load the `[[adapter]]` plugins into the registry: each must be an adapter, one per platform.
fn load_adapters(plugins: &PluginRegistry, configs: &[AdapterConfig]) -> anyhow::Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for c in configs {
        if !seen.insert(c.platform.clone()) {
            anyhow::bail!("two [[adapter]] entries for platform {}", c.platform);
        }
        let mut spec = PluginSpec::new(adapter_name(&c.platform), &c.path).with_limits(c.limits.clone());
        spec.config = c.config.clone();
        plugins
            .load_as(spec, Some(World::Adapter))
            .with_context(|| format!("cannot load the adapter for {} ({})", c.platform, c.path.display()))?;
    }
    Ok(())
}

/// Mark silent nodes down, end expired bindings, re-route broken paths, ask the platforms'
/// pending authorizations (first resuming those the store holds, when `resume`: a controller
/// of a group does once it has joined); at the shutdown signal, close the mesh endpoint.
async fn tick(controller: Arc<Controller>, endpoint: Arc<MeshEndpoint>, mut signal: Signal, resume: bool) {
    controller.note_catalog_change().await;
    if resume {
        match controller.resume_authorizations(None).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pending = n, "capability authorizations resumed"),
            Err(e) => tracing::error!("cannot resume the pending capability authorizations: {e}"),
        }
    }
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = signal.recv() => break,
        }
        controller.nodes.poll(Instant::now(), &controller.events);
        controller.reap_bindings().await;
        controller.reroute_bindings().await;
        controller.ask_due();
        endpoint.switch().update(|s| s.expire(crate::time::now_unix_ms()));
    }
    endpoint.close_and_wait(Duration::from_secs(2)).await;
}

/// Run futures concurrently on this task and collect their outputs in order (for the few
/// requests a decision or a tunnel setup sends at once).
pub(crate) async fn join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (slot, future) in out.iter_mut().zip(pending.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *slot = Some(value),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
    out.into_iter().flatten().collect()
}
