//! A whole mesh in one process, on loopback: a development CA, a controller, relays and sites,
//! each a real node (QUIC, mutual TLS, redb, the scorer plugin), with a [`UdpLink`] emulating
//! the WAN on every relay–relay and site–relay link. `skybridge demo` runs one; integration
//! tests run many.
//!
//! On each link the first-named node dials the second through the emulator, so every packet of
//! the link crosses it. Timing is tightened (heartbeats every 200 ms, down after 1 s, link
//! probes every 20 ms) so that a mesh settles in about a second.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::config::{
    AdapterConfig, AdminConfig, ControllerConfig, Endpoint, IngressConfig, Peer, Probing, RelayConfig,
    SiteConfig, TlsFiles,
};
use crate::controller::Controller;
use crate::mesh::identity::{Role, init_ca, issue};
use crate::mesh::membership::{MembershipConfig, NodeState};
use crate::node::controller::ControllerHandle;
use crate::node::relay::Relay;
use crate::node::site::Site;
use crate::path::{Hysteresis, Policy};
use crate::testkit::netem::{Conditions, LinkParams, UdpLink};

/// A development CA in a temporary folder, issuing node identities on demand.
pub struct Pki {
    dir: TempDir,
}

impl Pki {
    /// A fresh CA.
    pub fn new() -> anyhow::Result<Pki> {
        let dir = tempfile::tempdir().context("creating a temporary folder")?;
        init_ca(&dir.path().join("ca"))?;
        Ok(Pki { dir })
    }

    /// The folder (the CA is in `ca/`).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Issue a certificate for `name` as `role` (once per name) and return its files.
    pub fn tls(&self, name: &str, role: Role) -> anyhow::Result<TlsFiles> {
        let out = self.dir.path().join("nodes");
        let (cert, key) = (out.join(format!("{name}.pem")), out.join(format!("{name}.key")));
        if !cert.exists() {
            issue(&self.dir.path().join("ca"), name, role, &out)?;
        }
        Ok(TlsFiles { ca: self.dir.path().join("ca/ca.pem"), cert, key })
    }
}

/// Link probing tightened for local meshes.
pub fn fast_probing() -> Probing {
    Probing { interval_ms: 20, window: 50, timeout_ms: 500, report_ms: 200, ..Default::default() }
}

/// Membership tightened for local meshes.
pub fn fast_membership() -> MembershipConfig {
    MembershipConfig { heartbeat_ms: 200, down_after_ms: 1_000, ..Default::default() }
}

/// What to start, built up with [`Topology::relays`], [`Topology::link`], [`Topology::site`].
#[derive(Debug, Clone)]
pub struct Topology {
    relays: Vec<String>,
    links: Vec<(String, String, LinkParams)>,
    sites: Vec<(String, Vec<(String, LinkParams)>)>,
    endpoints: BTreeMap<String, Vec<Endpoint>>,
    ingress_platform: Option<String>,
    ingress_limits: Option<(u64, usize)>,
    first_byte_timeout_s: Option<u64>,
    ingress: IngressConfig,
    adapters: Vec<AdapterConfig>,
    clouds: BTreeMap<String, crate::config::CloudConfig>,
    authorizers: BTreeMap<String, crate::config::PluginFile>,
    catalog: crate::config::CatalogConfig,
    policy: Policy,
}

impl Topology {
    /// An empty mesh whose controller starts with `policy`.
    pub fn new(policy: Policy) -> Topology {
        Topology {
            relays: vec![],
            links: vec![],
            sites: vec![],
            endpoints: BTreeMap::new(),
            ingress_platform: None,
            ingress_limits: None,
            first_byte_timeout_s: None,
            ingress: IngressConfig::default(),
            adapters: vec![],
            clouds: BTreeMap::new(),
            authorizers: BTreeMap::new(),
            catalog: Default::default(),
            policy,
        }
    }

    /// Add relays.
    pub fn relays(mut self, names: &[&str]) -> Topology {
        self.relays.extend(names.iter().map(|n| n.to_string()));
        self
    }

    /// Add a relay link: `from` dials `to` through an emulator applying `params` both ways.
    pub fn link(mut self, from: &str, to: &str, params: LinkParams) -> Topology {
        self.links.push((from.into(), to.into(), params));
        self
    }

    /// Let `site` publish the TCP service at `addr` to tunnels as `name`.
    pub fn endpoint(mut self, site: &str, name: &str, addr: SocketAddr) -> Topology {
        self.endpoints.entry(site.into()).or_default().push(Endpoint { name: name.into(), addr });
        self
    }

    /// Say which platform the controller's ingress serves, and run its CONNECT proxy.
    pub fn ingress_platform(mut self, platform: &str) -> Topology {
        self.ingress_platform = Some(platform.into());
        self
    }

    /// Translate sessions for `platform` with the adapter plugin at `path`.
    pub fn adapter(mut self, platform: &str, path: impl Into<std::path::PathBuf>) -> Topology {
        self.adapters.push(AdapterConfig {
            platform: platform.into(),
            path: path.into(),
            config: Default::default(),
            limits: Default::default(),
        });
        self
    }

    /// Give `site` a cloud to discover (its `[cloud]`).
    pub fn cloud(mut self, site: &str, cloud: crate::config::CloudConfig) -> Topology {
        self.clouds.insert(site.into(), cloud);
        self
    }

    /// Set the controller's catalog settings (bounds, withdrawal, handshake timing).
    pub fn catalog(mut self, catalog: crate::config::CatalogConfig) -> Topology {
        self.catalog = catalog;
        self
    }

    /// Give `site` an authorizer plugin.
    pub fn authorizer(mut self, site: &str, authorizer: crate::config::PluginFile) -> Topology {
        self.authorizers.insert(site.into(), authorizer);
        self
    }

    /// Set how long an `http` binding's client may send nothing after connecting (s).
    pub fn first_byte_timeout(mut self, seconds: u64) -> Topology {
        self.first_byte_timeout_s = Some(seconds);
        self
    }

    /// Start from `ingress` for the controller's ingress (its platform and CONNECT listener
    /// still come from [`Topology::ingress_platform`], and the other setters apply on top).
    pub fn ingress(mut self, ingress: IngressConfig) -> Topology {
        self.ingress = ingress;
        self
    }

    /// Set the ingress's idle timeout (s) and per-binding connection limit.
    pub fn ingress_limits(mut self, idle_timeout_s: u64, max_connections: usize) -> Topology {
        self.ingress_limits = Some((idle_timeout_s, max_connections));
        self
    }

    /// Add a site that reaches each of `relays` over a link with the given conditions.
    pub fn site(mut self, name: &str, relays: &[(&str, LinkParams)]) -> Topology {
        self.sites.push((name.into(), relays.iter().map(|(r, p)| (r.to_string(), *p)).collect()));
        self
    }
}

/// A running local mesh. Dropping it stops every node.
pub struct LocalMesh {
    /// The CA and node certificates.
    pub pki: Pki,
    /// The controller.
    pub controller: ControllerHandle,
    /// Relays by name (removed when killed).
    pub relays: BTreeMap<String, Relay>,
    /// Sites by name.
    pub sites: BTreeMap<String, Site>,
    /// The emulated links, by (dialer, dialled).
    pub links: BTreeMap<(String, String), UdpLink>,
    /// The admin API's bearer token.
    pub token: String,
    /// The controller's working folder (store, token, plugin cache).
    pub state: TempDir,
    relay_configs: BTreeMap<String, RelayConfig>,
    controller_config: ControllerConfig,
}

impl LocalMesh {
    /// Start the controller, then relays in an order that lets each dial its neighbours'
    /// emulators, then sites; wait (at most `settle`) until every node is up, every relay link
    /// measured and every platform has a nearest relay.
    pub async fn start(topology: Topology, settle: Duration) -> anyhow::Result<LocalMesh> {
        let pki = Pki::new()?;
        let state = tempfile::tempdir().context("creating a temporary folder")?;
        let token = format!("local-{:016x}{:016x}", rand_u64(), rand_u64());
        let token_file = state.path().join("admin.token");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f =
                std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&token_file)?;
            f.write_all(token.as_bytes()).context("writing the admin token")?;
        }
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let controller_config = ControllerConfig {
            name: "controller".into(),
            listen: any,
            tls: pki.tls("controller", Role::Controller)?,
            admin: AdminConfig { listen: any, token_file },
            store: crate::config::StoreConfig::Redb { path: state.path().join("controller.redb") },
            membership: fast_membership(),
            nearest: Hysteresis::default(),
            policy: topology.policy.clone(),
            plugin_cache: Some(state.path().join("plugin-cache")),
            ingress: IngressConfig {
                platform: topology.ingress_platform.clone(),
                connect_listen: topology.ingress_platform.as_ref().map(|_| any),
                idle_timeout_s: topology.ingress_limits.map_or(topology.ingress.idle_timeout_s, |l| l.0),
                max_connections: topology.ingress_limits.map_or(topology.ingress.max_connections, |l| l.1),
                first_byte_timeout_s: topology
                    .first_byte_timeout_s
                    .unwrap_or(topology.ingress.first_byte_timeout_s),
                ..topology.ingress.clone()
            },
            adapters: topology.adapters.clone(),
            catalog: topology.catalog,
        };
        let controller = crate::node::controller::start(controller_config.clone()).await?;
        let controller_peer = Peer { name: "controller".into(), addr: controller.mesh_addr() };

        // Dialled relays first: a relay starts once every relay it dials is running.
        let (mut relays, mut relay_configs, mut links) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        let mut pending = topology.relays.clone();
        let mut seed = 1;
        while !pending.is_empty() {
            let Some(ready) = pending
                .iter()
                .position(|r| topology.links.iter().filter(|l| &l.0 == r).all(|l| relays.contains_key(&l.1)))
            else {
                bail!("relay links form a dialling cycle, or name unknown relays: {pending:?}");
            };
            let name = pending.remove(ready);
            let mut neighbours = Vec::new();
            for (from, to, params) in topology.links.iter().filter(|l| l.0 == name) {
                let target: &Relay = &relays[to];
                let link = UdpLink::start(target.local_addr(), Conditions::symmetric(*params), seed).await?;
                seed += 1;
                neighbours.push(Peer { name: to.clone(), addr: link.local_addr() });
                links.insert((from.clone(), to.clone()), link);
            }
            let mut config = RelayConfig {
                name: name.clone(),
                listen: any,
                tls: pki.tls(&name, Role::Relay)?,
                controller: Some(controller_peer.clone()),
                controllers: Vec::new(),
                probing: fast_probing(),
                neighbours,
                metrics_listen: Some(any_port()),
            };
            let relay = Relay::start(config.clone())?;
            // A restart binds the same address, which the emulated links lead to.
            config.listen = relay.local_addr();
            relays.insert(name.clone(), relay);
            relay_configs.insert(name, config);
        }

        let mut sites = BTreeMap::new();
        for (name, reach) in &topology.sites {
            let mut peers = Vec::new();
            for (relay, params) in reach {
                let target = relays.get(relay).with_context(|| format!("site {name}: no relay {relay}"))?;
                let link = UdpLink::start(target.local_addr(), Conditions::symmetric(*params), seed).await?;
                seed += 1;
                peers.push(Peer { name: relay.clone(), addr: link.local_addr() });
                links.insert((name.clone(), relay.clone()), link);
            }
            let site = Site::start(SiteConfig {
                name: name.clone(),
                listen: any,
                tls: pki.tls(name, Role::Site)?,
                controller: Some(controller_peer.clone()),
                controllers: Vec::new(),
                probing: fast_probing(),
                relays: peers,
                endpoints: topology.endpoints.get(name).cloned().unwrap_or_default(),
                cloud: topology.clouds.get(name).cloned(),
                authorizer: topology.authorizers.get(name).cloned(),
                audit: Some(state.path().join(format!("{name}-audit.jsonl"))),
                reevaluate_every_s: 1,
                plugin_cache: Some(state.path().join("plugin-cache")),
                metrics_listen: Some(any_port()),
            })?;
            sites.insert(name.clone(), site);
        }

        let mesh = LocalMesh {
            pki,
            controller,
            relays,
            sites,
            links,
            token,
            state,
            relay_configs,
            controller_config,
        };
        let relay_links: BTreeSet<(String, String)> =
            topology.links.iter().map(|l| (l.0.clone(), l.1.clone())).collect();
        let nodes = topology.relays.len() + topology.sites.len();
        mesh.wait_until("every node up, every link measured, every platform placed", settle, |c| {
            c.nodes().iter().filter(|n| n.state == NodeState::Up).count() == nodes
                && c.links()
                    .iter()
                    .filter(|l| l.usable && l.stats.samples >= 20)
                    .map(|l| (l.from.clone(), l.to.clone()))
                    .collect::<BTreeSet<_>>()
                    == relay_links
                && c.platforms().iter().all(|p| p.nearest_relay.is_some())
        })
        .await?;
        Ok(mesh)
    }

    /// The controller's state and operations.
    pub fn ctl(&self) -> &Controller {
        self.controller.controller()
    }

    /// Wait until `ready` holds for the controller, polling every 50 ms; an error naming
    /// `what` and the controller's view after `timeout`.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut(&Controller) -> bool,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        while !ready(self.ctl()) {
            if start.elapsed() >= timeout {
                bail!(
                    "timed out after {timeout:?} waiting for: {what}\nnodes: {:#?}\nlinks: {:#?}\nplatforms: {:#?}",
                    self.ctl().nodes(),
                    self.ctl().links(),
                    self.ctl().platforms()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Shut the controller down completely — every listener, task and the store — and start it
    /// again on the same store file and addresses, in this process.
    pub async fn restart_controller(&mut self) -> anyhow::Result<()> {
        let mut config = self.controller_config.clone();
        config.listen = self.controller.mesh_addr();
        config.admin.listen = self.controller.admin_addr();
        config.ingress.connect_listen = self.controller.connect_addr();
        self.controller.stop().await;
        // The UDP socket is released when quinn's endpoint driver has wound down, a moment
        // after the close: a busy address is retried for up to 5 s, as for relays.
        let deadline = Instant::now() + Duration::from_secs(5);
        self.controller = loop {
            match crate::node::controller::start(config.clone()).await {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline && format!("{e:#}").contains("in use") => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        };
        Ok(())
    }

    /// Change the emulated conditions of link `a`–`b` (both directions).
    pub fn set_link(&self, a: &str, b: &str, params: LinkParams) -> anyhow::Result<()> {
        let link = self
            .links
            .get(&(a.to_owned(), b.to_owned()))
            .or_else(|| self.links.get(&(b.to_owned(), a.to_owned())))
            .with_context(|| format!("no link {a}–{b}"))?;
        link.set(Conditions::symmetric(params)).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Kill relay `name`: it closes every connection at once.
    pub fn kill_relay(&mut self, name: &str) -> anyhow::Result<()> {
        self.relays.remove(name).with_context(|| format!("no running relay {name}"))?.shutdown();
        Ok(())
    }

    /// Start killed relay `name` again, on its old address. The killed relay's socket closes
    /// once its tasks have wound down, which can take a moment: a busy address is retried for
    /// up to 5 s.
    pub async fn restart_relay(&mut self, name: &str) -> anyhow::Result<()> {
        if self.relays.contains_key(name) {
            bail!("relay {name} is running");
        }
        let config = self.relay_configs.get(name).with_context(|| format!("no relay {name}"))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let relay = loop {
            match Relay::start(config.clone()) {
                Ok(relay) => break relay,
                Err(e) if Instant::now() < deadline && format!("{e:#}").contains("in use") => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        };
        self.relays.insert(name.to_owned(), relay);
        Ok(())
    }
}

/// 127.0.0.1, any port.
fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Enough randomness for a throwaway token, without a dependency: the std hasher's random keys.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}
