//! The site role: a platform's agent. It probes the relays it can reach (so the controller
//! can pick the nearest), registers with the controller, and asks it for connections.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::task::JoinSet;

use super::consent::SiteConsent;
use super::relay::{dial_and_watch, expire_tunnels};
use super::reporter::{ADAPTER, AUTHORIZER, Reporter};
use super::uplink::Uplink;
use crate::blocking::Pool;
use crate::catalog::Bounds;
use crate::config::{CloudConfig, SiteConfig};
use crate::discovery::{CloudAccess, CloudUrl};
use crate::mesh::identity::Role;
use crate::mesh::messages::Control;
use crate::mesh::probe::Prober;
use crate::mesh::stream as control;
use crate::mesh::transport::MeshEndpoint;
use crate::path::DecisionRecord;
use crate::plugin::{EngineOptions, PluginEngine, PluginRegistry, World};
use crate::tunnel::hop::{HopTable, serve_streams};

/// Plugin calls that may run at once on a site.
const PLUGIN_CALLS: usize = 4;
/// How often plugin files are checked for changes.
const PLUGIN_WATCH: Duration = Duration::from_millis(500);

/// A running site.
pub struct Site {
    name: String,
    endpoint: Arc<MeshEndpoint>,
    uplinks: super::uplinks::Uplinks,
    plugins: Option<Arc<PluginRegistry>>,
    reporter: Option<Arc<Reporter>>,
    metrics_addr: Option<std::net::SocketAddr>,
    tasks: JoinSet<()>,
}

impl Site {
    /// Bind, then run in the background: probe the relays, keep the controller session.
    pub fn start(config: SiteConfig) -> anyhow::Result<Site> {
        let plugins = site_plugins(&config)?;
        let reporter = match (&config.cloud, &plugins) {
            (Some(cloud), Some(plugins)) => {
                let mut reporter = reporter(&config.name, cloud, Arc::clone(plugins))?;
                reporter.published = config.endpoints.clone();
                Some(Arc::new(reporter))
            }
            _ => None,
        };
        // A site that reports capabilities (or has an authorizer) decides on them.
        let consent = if config.cloud.is_some() || config.authorizer.is_some() {
            let pool =
                reporter.as_ref().map_or_else(|| Pool::new("plugin", PLUGIN_CALLS), |r| r.pool.clone());
            Some(Arc::new(SiteConsent::open(&config.name, plugins.clone(), pool, config.audit.clone())?))
        } else {
            None
        };
        let consent_handle = consent.clone();
        let identity = config.tls.load(&config.name, Role::Site)?;
        // The site dials its relays and controllers; only controllers connect to it, end to
        // end through tunnels.
        let endpoint = Arc::new(MeshEndpoint::bind(config.listen, identity, &[Role::Controller])?);
        let prober = Prober::new(&config.name, false, config.probing.silent_after());
        let endpoints = config.endpoints.iter().map(|e| (e.name.clone(), e.addr)).collect();
        let switch = Arc::clone(endpoint.switch());
        let tunnels = HopTable::new(&config.name, endpoints, switch);
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_end_to_end(Arc::clone(&endpoint), Arc::clone(&tunnels)));
        tasks.spawn(expire_tunnels(Arc::clone(&tunnels)));
        let controllers = config.controllers();
        dial_and_watch(&mut tasks, &endpoint, &prober, config.relays, config.probing);
        let uplinks = super::uplinks::Uplinks::default();
        let metrics_addr = match config.metrics_listen {
            Some(addr) => {
                let listener = super::metrics::bind(addr)?;
                let bound = listener.local_addr()?;
                let node = super::metrics::NodeMetrics {
                    name: config.name.clone(),
                    role: Role::Site,
                    prober: Arc::clone(&prober),
                    tunnels: Arc::clone(&tunnels),
                    uplinks: uplinks.clone(),
                    plugins: plugins.clone(),
                    reporter: reporter.clone(),
                };
                tasks.spawn(super::metrics::serve(listener, Arc::new(node)));
                Some(bound)
            }
            None => None,
        };
        for controller in controllers {
            let uplink = Uplink {
                endpoint: Arc::clone(&endpoint),
                role: Role::Site,
                listen: None,
                controller,
                prober: Arc::clone(&prober),
                tunnels: Arc::clone(&tunnels),
                report_every: config.probing.report(),
                uplinks: uplinks.clone(),
                reporter: reporter.clone(),
                consent: consent.clone(),
            };
            tasks.spawn(uplink.run());
        }
        if let Some(reporter) = &reporter {
            tasks.spawn(Arc::clone(reporter).run(uplinks.clone()));
        }
        if let Some(consent) = &consent_handle {
            let every = Duration::from_secs(config.reevaluate_every_s.max(1));
            tasks.spawn(reevaluate(Arc::clone(consent), uplinks.clone(), every));
        }
        tracing::info!(site = %config.name, discovers = reporter.is_some(), "site started");
        Ok(Site { name: config.name, endpoint, uplinks, plugins, reporter, metrics_addr, tasks })
    }

    /// The bound QUIC address.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.endpoint.local_addr().unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Where its metrics are served, if they are.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }

    /// The site's plugins (adapter and authorizer), when it runs any.
    pub fn plugins(&self) -> Option<&Arc<PluginRegistry>> {
        self.plugins.as_ref()
    }

    /// Ask for a discovery run now, as the controller's refresh does; whether one was already
    /// running. `None` when the site has no `[cloud]`.
    pub fn refresh(&self) -> Option<bool> {
        self.reporter.as_ref().map(|r| r.request())
    }

    /// The site's (and its platform's) name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Wait until registered with a controller, at most `timeout`.
    pub async fn registered(&self, timeout: Duration) -> anyhow::Result<()> {
        self.uplinks.wait_any(timeout).await.context("not registered with the controller in time")?;
        Ok(())
    }

    /// Ask the controller to connect this platform to `target`; returns the path decision.
    pub async fn connect(&self, target: &str) -> anyhow::Result<DecisionRecord> {
        let conn = self.uplinks.any().context("not connected to the controller")?;
        match control::request(&conn, &Control::Connect { target: target.to_owned() }).await? {
            Control::Connected { decision } => Ok(*decision),
            other => bail!("unexpected answer to a connection request: {other:?}"),
        }
    }

    /// Stop: close every connection and end all tasks.
    pub fn shutdown(mut self) {
        self.endpoint.close();
        self.tasks.abort_all();
    }

    /// Run until the task set ends (it does not, unless shut down).
    pub async fn wait(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Decide every grant again every `every`, and tell the controller of each revocation until
/// it acknowledges it.
async fn reevaluate(consent: Arc<SiteConsent>, uplinks: super::uplinks::Uplinks, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let revoked = consent.reevaluate().await;
        // The group shares the authorizations: any controller records a revocation.
        let Some(conn) = uplinks.any() else { continue };
        for (request_id, reason) in revoked {
            match control::request(&conn, &Control::Revoke { request_id: request_id.clone(), reason }).await {
                Ok(Control::Revoked { existed, .. }) => {
                    tracing::info!(request = %request_id, existed, "revocation delivered");
                    consent.delivered(&request_id);
                }
                other => tracing::warn!(request = %request_id, "revocation not delivered yet: {other:?}"),
            }
        }
    }
}

/// Load the site's adapter and authorizer, with hot reload; `None` when it configures neither.
fn site_plugins(config: &SiteConfig) -> anyhow::Result<Option<Arc<PluginRegistry>>> {
    let adapter = config.cloud.as_ref().map(|c| &c.adapter);
    if adapter.is_none() && config.authorizer.is_none() {
        return Ok(None);
    }
    let mut options = EngineOptions::default();
    if let Some(cache) = &config.plugin_cache {
        options.cache_dir = Some(cache.clone());
    }
    let plugins = Arc::new(PluginRegistry::new(PluginEngine::new(options)?));
    if let Some(adapter) = adapter {
        let loaded = plugins
            .load_as(adapter.spec(ADAPTER), Some(World::Adapter))
            .with_context(|| format!("loading the adapter {}", adapter.path.display()))?;
        if !loaded.discovers() {
            bail!(
                "the adapter {} exports no `discovering`: it cannot discover this platform's services",
                adapter.path.display()
            );
        }
    }
    if let Some(authorizer) = &config.authorizer {
        plugins
            .load_as(authorizer.spec(AUTHORIZER), Some(World::Authorizer))
            .with_context(|| format!("loading the authorizer {}", authorizer.path.display()))?;
    }
    plugins.spawn_watcher(PLUGIN_WATCH).context("starting the plugin watcher")?;
    Ok(Some(plugins))
}

/// The reporter for a site's `[cloud]`: endpoints checked, the secret read from its file.
fn reporter(platform: &str, cloud: &CloudConfig, plugins: Arc<PluginRegistry>) -> anyhow::Result<Reporter> {
    if cloud.endpoints.is_empty() {
        bail!("[cloud] needs at least one endpoint");
    }
    let mut endpoints = Vec::new();
    for e in &cloud.endpoints {
        let url = CloudUrl::parse(&e.url)
            .map_err(|reason| anyhow::anyhow!("[cloud] endpoint `{}`: {reason}", e.name))?;
        if endpoints.iter().any(|(n, _)| n == &e.name) {
            bail!("[cloud] names endpoint `{}` twice", e.name);
        }
        endpoints.push((e.name.clone(), url));
    }
    let secret = match &cloud.secret_file {
        Some(file) => crate::file::read_secret(file, "the [cloud] secret file")?,
        None => String::new(),
    };
    let tls = match endpoints.iter().any(|(_, url)| url.tls) {
        true => Some(
            crate::discovery::tls_config(cloud.ca_file.as_deref())
                .map_err(|e| anyhow::anyhow!("[cloud] https endpoints: {e}"))?,
        ),
        false => None,
    };
    if cloud.report_every_s == 0 {
        bail!("[cloud] report_every_s must be at least 1");
    }
    Ok(Reporter {
        plugins,
        cloud: CloudAccess {
            platform: platform.to_owned(),
            endpoints,
            principal: cloud.principal.clone(),
            secret,
            attributes: cloud.attributes.clone().into_iter().collect(),
            tls,
        },
        limits: cloud.discovery,
        bounds: Bounds::default(),
        pool: Pool::new("plugin", PLUGIN_CALLS),
        every: Duration::from_secs(cloud.report_every_s),
        running: Default::default(),
        wake: Default::default(),
        published: Vec::new(),
        runs: Default::default(),
        run_time: crate::metrics::Histogram::new(crate::metrics::SECONDS_BUCKETS),
    })
}

/// Serve the end-to-end connections controllers open through tunnels to this site. A
/// controller's connection that did not come through a tunnel set up here (a real address, not
/// a tunnel's virtual one) is closed: the site is reached only the way the controller granted.
async fn accept_end_to_end(endpoint: Arc<MeshEndpoint>, tunnels: Arc<HopTable>) {
    while let Some((conn, role)) = endpoint.accept().await {
        let remote = conn.remote_address();
        let through_tunnel = crate::mesh::label::label_of(remote).is_some();
        match crate::mesh::transport::peer_name(&conn) {
            Some(peer) if role == Role::Controller && through_tunnel => {
                tracing::debug!(%peer, %remote, "end-to-end connection through a tunnel");
                let (endpoint, tunnels) = (Arc::clone(&endpoint), Arc::clone(&tunnels));
                endpoint.follow_path_mtu(&conn);
                tokio::spawn(async move {
                    serve_streams(tunnels, conn.clone(), peer).await;
                    crate::mesh::transport::log_connection_stats(&conn, "end-to-end connection ended");
                    endpoint.remember_path_mtu(&conn);
                });
            }
            _ => {
                tracing::warn!(%remote, %role, "refused a connection that did not come through a tunnel");
                conn.close(1u32.into(), b"sites are reached through tunnels only");
            }
        }
    }
}
