//! Node configuration files (TOML). Every table refuses unknown keys, so a typo is an error at
//! start rather than a setting silently ignored. Relative paths are resolved against the
//! directory of the config file. Commented examples: `examples/*.toml`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod store;

pub use store::{EtcdStoreConfig, EtcdTlsFiles, StoreConfig};

use crate::mesh::identity::{NodeIdentity, Role};
use crate::mesh::membership::MembershipConfig;
use crate::path::{Hysteresis, Policy};

/// The controller's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// The node name its certificate carries.
    pub name: String,
    /// QUIC address relays and sites connect to.
    pub listen: SocketAddr,
    /// Certificate, key and CA.
    pub tls: TlsFiles,
    /// The admin API.
    pub admin: AdminConfig,
    /// Where its state lives: a redb file (`store = "path"`), or etcd shared with the other
    /// controllers of a group (`[store] kind = "etcd"`).
    pub store: StoreConfig,
    /// Heartbeat timing.
    #[serde(default)]
    pub membership: MembershipConfig,
    /// How much faster another relay must be before a platform's nearest relay changes.
    #[serde(default)]
    pub nearest: Hysteresis,
    /// The initial path policy; `PUT /v1/policy` changes it at run time.
    pub policy: Policy,
    /// Binding listeners.
    #[serde(default)]
    pub ingress: IngressConfig,
    /// Where compiled plugins are cached (default `$XDG_CACHE_HOME/skybridge/plugins`). It must
    /// be writable by the controller's user only: cached code is trusted.
    #[serde(default)]
    pub plugin_cache: Option<PathBuf>,
    /// Cloud adapters, one per target platform, for `http` bindings' session translation.
    #[serde(default, rename = "adapter")]
    pub adapters: Vec<AdapterConfig>,
    /// The catalog's bounds and withdrawal rules.
    #[serde(default)]
    pub catalog: CatalogConfig,
}

/// The catalog (`[catalog]`): how large a platform's report may be, when missing services are
/// withdrawn.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// Bounds on reports and records.
    pub bounds: crate::catalog::Bounds,
    /// When missing services are withdrawn.
    pub withdrawal: crate::catalog::Withdrawal,
    /// Timing of the authorization handshake.
    pub handshake: crate::catalog::Handshake,
}

/// The adapter plugin that translates sessions for one target platform (`[[adapter]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterConfig {
    /// The target platform whose requests it rewrites.
    pub platform: String,
    /// The `.wasm` component (world `adapter`).
    pub path: PathBuf,
    /// Values the plugin reads through its `config` interface.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Sandbox limits (defaults suit a gateway).
    #[serde(default)]
    pub limits: crate::plugin::PluginLimits,
}

/// The controller's ingress: where bindings listen, and the HTTP CONNECT proxy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngressConfig {
    /// The address binding listeners use unless a binding names its own (default `127.0.0.1`).
    pub address: std::net::IpAddr,
    /// The platform the ingress serves: where its clients are. Bindings default to it as
    /// their requesting platform, and CONNECT requests use it.
    pub platform: Option<String>,
    /// Where to accept `CONNECT platform:endpoint` (HTTP/1.1; the admin token as
    /// `Proxy-Authorization: Bearer …` or Basic with any user). Off unless set.
    pub connect_listen: Option<SocketAddr>,
    /// A tunnelled connection with no bytes either way for this long is ended, s (default 300).
    pub idle_timeout_s: u64,
    /// An `http` binding's client that sends nothing for this long after connecting is
    /// disconnected, s (default 30): an idle socket costs a descriptor, so it must not wait
    /// out `idle_timeout_s`. (A `tcp` binding waits: some protocols let the server speak first.)
    pub first_byte_timeout_s: u64,
    /// The most connections one binding carries at once (default 1024); more are refused.
    pub max_connections: usize,
    /// The largest request body an `http` binding accepts, MiB (default 16). Bodies are read
    /// whole before forwarding, because signing schemes hash them; larger ones get 413.
    pub max_http_body_mib: usize,
    /// Request bodies all `http` bindings together may hold in memory at once, MiB (default
    /// 256). A request reserves its `Content-Length` (or `max_http_body_mib` when it sends
    /// none) before its body is read; one that cannot within 10 s gets 503.
    pub max_buffered_mib: usize,
    /// The same budget for each `http` binding, MiB (default 64): one busy binding cannot
    /// take all of it.
    pub max_buffered_per_binding_mib: usize,
    /// Client connections all bindings and the CONNECT proxy together hold open at once
    /// (default 16,384, and at most three quarters of the process's descriptor limit, so
    /// that the admin API and the mesh always have descriptors). Beyond it new connections
    /// are closed at once.
    pub max_client_connections: usize,
    /// A binding's end-to-end connection to its site is renewed after carrying this many
    /// client connections (default 4096): a fresh one takes the new clients, the old one
    /// closes when its last client is done. QUIC at the site keeps state for ended streams
    /// up to the busiest moment's count; renewing gives it back.
    pub renew_after_streams: u64,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            address: std::net::IpAddr::from([127, 0, 0, 1]),
            platform: None,
            connect_listen: None,
            idle_timeout_s: 300,
            first_byte_timeout_s: 30,
            max_connections: 1024,
            max_http_body_mib: 16,
            max_buffered_mib: 256,
            max_buffered_per_binding_mib: 64,
            max_client_connections: 16_384,
            renew_after_streams: 4096,
        }
    }
}

/// The admin API's listener and credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// HTTP address (default `127.0.0.1:7080`).
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// A file holding the bearer token (first line). Keep it readable by the operator only.
    pub token_file: PathBuf,
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7080))
}

/// A relay's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// The node name its certificate carries.
    pub name: String,
    /// QUIC address neighbours and sites connect to.
    pub listen: SocketAddr,
    /// Certificate, key and CA.
    pub tls: TlsFiles,
    /// The controller to register with (`controller = { … }`), or every controller of a
    /// group (`controllers = [{ … }, …]`): the node keeps a session with each.
    #[serde(default)]
    pub controller: Option<Peer>,
    /// A group's controllers (instead of `controller`).
    #[serde(default)]
    pub controllers: Vec<Peer>,
    /// Link probing.
    #[serde(default)]
    pub probing: Probing,
    /// Relays this one dials and probes. A neighbour that dials this relay need not be listed:
    /// the link is one connection, probed by the side that dialled.
    #[serde(default)]
    pub neighbours: Vec<Peer>,
    /// Serve Prometheus metrics at `http://ADDR/metrics` (unauthenticated: bind it where only
    /// monitoring reaches). Default: not served.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
}

/// A site's configuration. A site is its platform's agent; the platform is named after it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// The node name its certificate carries — also the platform's name.
    pub name: String,
    /// Local QUIC address (default `0.0.0.0:0`: any port; sites only dial).
    #[serde(default = "any_addr")]
    pub listen: SocketAddr,
    /// Certificate, key and CA.
    pub tls: TlsFiles,
    /// The controller to register with (`controller = { … }`), or every controller of a
    /// group (`controllers = [{ … }, …]`): the site keeps a session with each.
    #[serde(default)]
    pub controller: Option<Peer>,
    /// A group's controllers (instead of `controller`).
    #[serde(default)]
    pub controllers: Vec<Peer>,
    /// Probing of the relays below.
    #[serde(default)]
    pub probing: Probing,
    /// Relays this site can reach; the controller picks the nearest from their measured RTTs.
    pub relays: Vec<Peer>,
    /// The services of this platform that tunnels may reach, by name. Nothing else is reachable:
    /// the site is never an open proxy.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// The platform's cloud, for discovery: its API, the site's own credentials, its adapter.
    #[serde(default)]
    pub cloud: Option<CloudConfig>,
    /// The authorizer plugin that decides which of this platform's capabilities may be used.
    /// Without one, nothing is granted.
    #[serde(default)]
    pub authorizer: Option<PluginFile>,
    /// The audit of the platform's authorization decisions (JSON lines, appended). Without
    /// it, decisions are kept in memory only and a restarted site decides again.
    #[serde(default)]
    pub audit: Option<PathBuf>,
    /// Seconds between decisions again of every grant (default 60): one the authorizer now
    /// refuses is revoked, and the bindings to it are closed.
    #[serde(default = "default_reevaluate_every")]
    pub reevaluate_every_s: u64,
    /// Where compiled plugins are cached (default `$XDG_CACHE_HOME/skybridge/plugins`).
    #[serde(default)]
    pub plugin_cache: Option<PathBuf>,
    /// Serve Prometheus metrics at `http://ADDR/metrics` (unauthenticated: bind it where only
    /// monitoring reaches). Default: not served.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
}

/// A site's cloud (`[cloud]`): where its API is, who the site is there, and the adapter that
/// speaks it. Discovery runs here, at the site; the controller never sees these credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    /// The cloud API's endpoints, by name; the first is the default. Discovery requests go to
    /// these and nowhere else.
    pub endpoints: Vec<CloudEndpoint>,
    /// PEM certificates of a CA to trust for `https://` endpoints besides the machine's own
    /// (a private cloud's CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The site's identity at the cloud (access key id, storage account, user name).
    pub principal: String,
    /// A file holding the site's secret for it (first line). Keep it private.
    pub secret_file: Option<PathBuf>,
    /// Region, project, domain, …: what the adapter needs to know about the account.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// The adapter plugin (world `adapter`, exporting `discovering`).
    pub adapter: PluginFile,
    /// Seconds between full reports (default 900), each ± 25 % at random so that sites spread.
    #[serde(default = "default_report_every")]
    pub report_every_s: u64,
    /// Bounds on one discovery run.
    #[serde(default)]
    pub discovery: crate::discovery::DiscoveryLimits,
}

fn default_reevaluate_every() -> u64 {
    60
}

fn default_report_every() -> u64 {
    900
}

/// One endpoint of a cloud API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudEndpoint {
    /// The name adapters use for it (`default`, `identity`, …).
    pub name: String,
    /// Its URL, `http://host:port[/base]`.
    pub url: String,
}

/// A plugin a node runs: its file, its configuration and its limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginFile {
    /// The `.wasm` component.
    pub path: PathBuf,
    /// Values the plugin reads through its `config` interface.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Sandbox limits.
    #[serde(default)]
    pub limits: crate::plugin::PluginLimits,
}

impl PluginFile {
    /// As a spec for the registry, under `name`.
    pub fn spec(&self, name: &str) -> crate::plugin::PluginSpec {
        crate::plugin::PluginSpec {
            name: name.to_owned(),
            path: self.path.clone(),
            config: self.config.clone(),
            limits: self.limits.clone(),
        }
    }
}

/// A service a site publishes to tunnels.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// The name bindings use.
    pub name: String,
    /// Its TCP address, as the site reaches it.
    pub addr: SocketAddr,
}

fn any_addr() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// Another node: its name (as its certificate says) and address.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Node name.
    pub name: String,
    /// QUIC address.
    pub addr: SocketAddr,
}

/// Continuous link probing.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Probing {
    /// Time between probes on each link, ms (default 100).
    pub interval_ms: u64,
    /// Loss is measured over the last this many probes (default 50).
    pub window: usize,
    /// A probe unanswered this long counts as lost, ms (default 1,000).
    pub timeout_ms: u64,
    /// How often measurements are reported to the controller, ms (default 500).
    pub report_ms: u64,
    /// A neighbour that sends nothing for this long (killed, or its link blackholed) has its
    /// connection closed, ending every stream through it, and is reported at once; ms (default
    /// 500, from 450 to 5,000).
    pub silent_after_ms: u64,
}

impl Default for Probing {
    fn default() -> Self {
        Probing {
            interval_ms: 100,
            window: 50,
            timeout_ms: 1_000,
            report_ms: 500,
            silent_after_ms: crate::mesh::liveness::DEFAULT_SILENT_AFTER_MS,
        }
    }
}

impl Probing {
    /// Probe interval.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.max(1))
    }
    /// Report interval.
    pub fn report(&self) -> Duration {
        Duration::from_millis(self.report_ms.max(10))
    }
    /// Silence after which a neighbour is taken for gone.
    pub fn silent_after(&self) -> Duration {
        Duration::from_millis(self.silent_after_ms)
    }
}

/// A node's certificate, key and CA (PEM files, from `skybridge certs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The CA certificate peers must be signed by.
    pub ca: PathBuf,
    /// This node's certificate.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// Load the identity of node `name` acting as `role`.
    pub fn load(&self, name: &str, role: Role) -> anyhow::Result<NodeIdentity> {
        Ok(NodeIdentity::load(name, role, &self.cert, &self.key, &self.ca)?)
    }

    fn resolve(&mut self, base: &Path) {
        for p in [&mut self.ca, &mut self.cert, &mut self.key] {
            *p = base.join(&*p);
        }
    }
}

/// Read a config file of type `T`, resolving relative paths against its directory.
pub fn load<T: for<'de> Deserialize<'de> + Resolve>(path: &Path) -> anyhow::Result<T> {
    let text = crate::file::read_to_string(path, crate::file::MAX_CONFIG_BYTES, "the config")?;
    let mut config: T =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("invalid config {}: {e}", path.display()))?;
    config.resolve(path.parent().unwrap_or(Path::new(".")));
    config.check().map_err(|e| anyhow::anyhow!("invalid config {}: {e}", path.display()))?;
    Ok(config)
}

/// `Err` naming `key` unless `ok`.
fn require(ok: bool, key: &str, rule: &str) -> Result<(), String> {
    if ok { Ok(()) } else { Err(format!("`{key}` {rule}")) }
}

impl Probing {
    fn check(&self) -> Result<(), String> {
        require(self.interval_ms >= 1, "probing.interval_ms", "must be at least 1")?;
        require(self.window >= 1, "probing.window", "must be at least 1")?;
        require(self.timeout_ms >= 1, "probing.timeout_ms", "must be at least 1")?;
        require(
            self.report_ms >= self.interval_ms,
            "probing.report_ms",
            "must be at least probing.interval_ms",
        )?;
        check_silent_after(self.silent_after_ms, "probing.silent_after_ms")
    }
}

/// A silence window must span three keep-alives (else a healthy peer looks dead), and be
/// shorter than QUIC's idle timeout (which would end the connection first).
fn check_silent_after(ms: u64, key: &str) -> Result<(), String> {
    use crate::mesh::liveness::MIN_SILENT_AFTER_MS;
    require(
        (MIN_SILENT_AFTER_MS..=5_000).contains(&ms),
        key,
        &format!("must be between {MIN_SILENT_AFTER_MS} (three keep-alive intervals) and 5000 ms"),
    )
}

/// Resolving a config's relative paths, and refusing values that cannot work.
pub trait Resolve {
    /// Make relative paths relative to `base`.
    fn resolve(&mut self, base: &Path);
    /// Refuse zero or inverted limits and timings, naming the key (checked at load).
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

impl Resolve for ControllerConfig {
    fn resolve(&mut self, base: &Path) {
        self.tls.resolve(base);
        self.admin.token_file = base.join(&self.admin.token_file);
        self.store.resolve(base);
        self.policy.scorer = base.join(&self.policy.scorer);
        if let Some(cache) = &mut self.plugin_cache {
            *cache = base.join(&*cache);
        }
        for adapter in &mut self.adapters {
            adapter.path = base.join(&adapter.path);
        }
    }

    fn check(&self) -> Result<(), String> {
        self.store.check()?;
        let (m, i, h) = (&self.membership, &self.ingress, &self.catalog.handshake);
        require(m.heartbeat_ms >= 10, "membership.heartbeat_ms", "must be at least 10")?;
        check_silent_after(m.silent_after_ms, "membership.silent_after_ms")?;
        // One late heartbeat must not mark a node down.
        require(
            m.down_after_ms >= 2 * m.heartbeat_ms,
            "membership.down_after_ms",
            "must be at least twice membership.heartbeat_ms",
        )?;
        require(i.max_connections >= 1, "ingress.max_connections", "must be at least 1")?;
        require(i.renew_after_streams >= 1, "ingress.renew_after_streams", "must be at least 1")?;
        require(i.idle_timeout_s >= 1, "ingress.idle_timeout_s", "must be at least 1")?;
        require(i.first_byte_timeout_s >= 1, "ingress.first_byte_timeout_s", "must be at least 1")?;
        require(i.max_http_body_mib >= 1, "ingress.max_http_body_mib", "must be at least 1")?;
        require(
            i.max_buffered_per_binding_mib >= i.max_http_body_mib,
            "ingress.max_buffered_per_binding_mib",
            "must be at least ingress.max_http_body_mib (else the largest body could never be read)",
        )?;
        require(
            i.max_buffered_mib >= i.max_buffered_per_binding_mib,
            "ingress.max_buffered_mib",
            "must be at least ingress.max_buffered_per_binding_mib",
        )?;
        require(i.max_client_connections >= 1, "ingress.max_client_connections", "must be at least 1")?;
        require(h.timeout_ms >= 1, "catalog.handshake.timeout_ms", "must be at least 1")?;
        require(h.backoff_ms >= 1, "catalog.handshake.backoff_ms", "must be at least 1")?;
        require(
            h.max_backoff_ms >= h.backoff_ms,
            "catalog.handshake.max_backoff_ms",
            "must be at least catalog.handshake.backoff_ms",
        )?;
        require(
            h.max_pending_ms >= h.timeout_ms,
            "catalog.handshake.max_pending_ms",
            "must be at least catalog.handshake.timeout_ms",
        )
    }
}

impl Resolve for RelayConfig {
    fn resolve(&mut self, base: &Path) {
        self.tls.resolve(base);
    }

    fn check(&self) -> Result<(), String> {
        check_controllers(self.controller.as_ref(), &self.controllers)?;
        self.probing.check()
    }
}

/// The controllers a node registers with: `controller`, or the list `controllers`.
pub fn controllers_of(one: Option<&Peer>, group: &[Peer]) -> Vec<Peer> {
    one.into_iter().chain(group).cloned().collect()
}

fn check_controllers(one: Option<&Peer>, group: &[Peer]) -> Result<(), String> {
    match (one, group.is_empty()) {
        (None, true) => Err("`controller` (or a group's `controllers`) is required".into()),
        (Some(_), false) => Err("`controller` and `controllers` are alternatives: give one".into()),
        _ => {
            let mut names: Vec<&str> = group.iter().map(|p| p.name.as_str()).collect();
            names.sort_unstable();
            match names.windows(2).find(|w| w[0] == w[1]) {
                Some(twice) => Err(format!("`controllers` names `{}` twice", twice[0])),
                None => Ok(()),
            }
        }
    }
}

impl RelayConfig {
    /// The controllers it registers with.
    pub fn controllers(&self) -> Vec<Peer> {
        controllers_of(self.controller.as_ref(), &self.controllers)
    }
}

impl SiteConfig {
    /// The controllers it registers with.
    pub fn controllers(&self) -> Vec<Peer> {
        controllers_of(self.controller.as_ref(), &self.controllers)
    }
}

impl Resolve for SiteConfig {
    fn resolve(&mut self, base: &Path) {
        self.tls.resolve(base);
        if let Some(cloud) = &mut self.cloud {
            cloud.adapter.path = base.join(&cloud.adapter.path);
            if let Some(secret) = &mut cloud.secret_file {
                *secret = base.join(&*secret);
            }
            if let Some(ca) = &mut cloud.ca_file {
                *ca = base.join(&*ca);
            }
        }
        if let Some(authorizer) = &mut self.authorizer {
            authorizer.path = base.join(&authorizer.path);
        }
        if let Some(audit) = &mut self.audit {
            *audit = base.join(&*audit);
        }
        if let Some(cache) = &mut self.plugin_cache {
            *cache = base.join(&*cache);
        }
    }

    fn check(&self) -> Result<(), String> {
        check_controllers(self.controller.as_ref(), &self.controllers)?;
        self.probing.check()?;
        require(self.reevaluate_every_s >= 1, "reevaluate_every_s", "must be at least 1")?;
        if let Some(cloud) = &self.cloud {
            require(cloud.report_every_s >= 1, "cloud.report_every_s", "must be at least 1")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
    }

    /// Load `examples/NAME` with `replace` applied to its text (from a copy beside it, so
    /// that paths resolve the same).
    fn example_with<T: for<'de> Deserialize<'de> + Resolve>(
        name: &str,
        replace: (&str, &str),
    ) -> anyhow::Result<T> {
        let text = std::fs::read_to_string(examples().join(name)).unwrap();
        assert!(text.contains(replace.0), "{name} has no `{}`", replace.0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text.replacen(replace.0, replace.1, 1)).unwrap();
        load(&path)
    }

    #[test]
    fn the_group_examples_parse_with_every_controller() {
        let ha = examples().join("ha");
        for (i, name) in ["c1", "c2", "c3"].iter().enumerate() {
            let c: ControllerConfig = load(&ha.join(format!("{name}.toml"))).unwrap();
            let StoreConfig::Etcd(etcd) = &c.store else { panic!("{name}: not on etcd") };
            assert_eq!(etcd.endpoints.len(), 3);
            assert!(etcd.seal_key.ends_with("ha/seal.key") && etcd.tls.is_some());
            assert_eq!(c.ingress.address.to_string(), format!("127.0.0.1{}", i + 1));
        }
        let r: RelayConfig = load(&ha.join("relay.toml")).unwrap();
        let s: SiteConfig = load(&ha.join("site.toml")).unwrap();
        for controllers in [r.controllers(), s.controllers()] {
            assert_eq!(controllers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["c1", "c2", "c3"]);
        }
        // One controller or a list, not both; names once.
        let both = std::fs::read_to_string(ha.join("relay.toml")).unwrap()
            + "\n[controller]\nname = \"c9\"\naddr = \"127.0.0.1:1\"\n";
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("r.toml"), both).unwrap();
        let e = load::<RelayConfig>(&dir.path().join("r.toml")).unwrap_err();
        assert!(format!("{e:#}").contains("alternatives"), "{e:#}");
        let twice = std::fs::read_to_string(ha.join("relay.toml")).unwrap().replace("\"c3\"", "\"c1\"");
        std::fs::write(dir.path().join("r.toml"), twice).unwrap();
        let e = load::<RelayConfig>(&dir.path().join("r.toml")).unwrap_err();
        assert!(format!("{e:#}").contains("names `c1` twice"), "{e:#}");
    }

    #[test]
    fn the_store_is_a_redb_path_or_a_table_naming_its_kind() {
        let store = |text: &str| {
            example_with::<ControllerConfig>("controller.toml", ("store = \"state/controller.redb\"", text))
                .map(|c| c.store)
        };
        let c: ControllerConfig = load(&examples().join("controller.toml")).unwrap();
        assert_eq!(c.store, StoreConfig::Redb { path: examples().join("state/controller.redb") });
        let redb = store("store = { kind = \"redb\", path = \"s/c.redb\" }").unwrap();
        assert!(matches!(&redb, StoreConfig::Redb { path } if path.ends_with("s/c.redb")), "{redb:?}");

        let etcd = "store = { kind = \"etcd\", endpoints = [\"http://127.0.0.1:2379\"], \
                    local = \"s/own.redb\", seal_key = \"seal.key\" }";
        let StoreConfig::Etcd(e) = store(etcd).unwrap() else { panic!("not etcd") };
        assert_eq!((e.prefix.as_str(), e.lease_ttl_s, e.tls.is_none()), ("skybridge/", 5, true), "defaults");
        assert!(e.local.is_absolute() && e.seal_key.is_absolute(), "paths resolve beside the file");

        let refused = |text: &str, wanted: &str| {
            let e = store(text).expect_err(text);
            assert!(format!("{e:#}").contains(wanted), "{text}: {e:#}");
        };
        refused("store = { kind = \"zookeeper\" }", "zookeeper");
        refused("store = { kind = \"redb\", path = \"c.redb\", size = 1 }", "size");
        refused("store = 7", "a redb file's path, or a table");
        let https = etcd.replace("http://", "https://");
        refused(&https, "store.tls");
        refused(&etcd.replace("[\"http://127.0.0.1:2379\"]", "[]"), "store.endpoints");
        refused(&etcd.replace(" }", ", lease_ttl_s = 1 }"), "store.lease_ttl_s");
        refused(&etcd.replace(" }", ", prefix = \"sb\" }"), "store.prefix");
    }

    #[test]
    fn zero_and_inverted_limits_and_timings_are_refused_naming_the_key() {
        let refused = [
            ("max_connections = 1024", "max_connections = 0", "ingress.max_connections"),
            ("renew_after_streams = 4096", "renew_after_streams = 0", "ingress.renew_after_streams"),
            ("max_buffered_mib = 256", "max_buffered_mib = 32", "ingress.max_buffered_mib"),
            ("max_http_body_mib = 16", "max_http_body_mib = 100", "ingress.max_buffered_per_binding_mib"),
            ("down_after_ms = 3000", "down_after_ms = 0", "membership.down_after_ms"),
            ("down_after_ms = 3000", "down_after_ms = 500", "twice membership.heartbeat_ms"),
            ("heartbeat_ms = 1000", "heartbeat_ms = 0", "membership.heartbeat_ms"),
            ("silent_after_ms = 500", "silent_after_ms = 100", "membership.silent_after_ms"),
        ];
        for (from, to, needle) in refused {
            let e = example_with::<ControllerConfig>("controller.toml", (from, to)).unwrap_err();
            assert!(e.to_string().contains(needle), "{to}: {e}");
        }
        let e = example_with::<RelayConfig>("relay.toml", ("report_ms = 500", "report_ms = 0")).unwrap_err();
        assert!(e.to_string().contains("probing.report_ms"), "{e}");
        let e = example_with::<SiteConfig>("site.toml", ("report_ms = 500", "report_ms = 0")).unwrap_err();
        assert!(e.to_string().contains("probing.report_ms"), "{e}");
        let e =
            example_with::<RelayConfig>("relay.toml", ("silent_after_ms = 500", "silent_after_ms = 9000"))
                .unwrap_err();
        assert!(e.to_string().contains("probing.silent_after_ms` must be between 450"), "{e}");
        // The examples as they are pass.
        example_with::<ControllerConfig>("controller.toml", ("max_connections", "max_connections")).unwrap();
    }

    #[test]
    fn the_example_configs_parse_and_paths_resolve_next_to_them() {
        let c: ControllerConfig = load(&examples().join("controller.toml")).unwrap();
        assert_eq!((c.name.as_str(), c.policy.k, c.policy.probes), ("controller", 4, 20));
        assert!(c.tls.cert.ends_with("examples/pki/controller.pem"), "{}", c.tls.cert.display());
        assert!(c.policy.scorer.ends_with("examples/../target/plugins/weighted-scorer.wasm"));
        c.policy.validate().unwrap();
        for relay in ["relay.toml", "r2.toml", "r3.toml"] {
            let r: RelayConfig = load(&examples().join(relay)).unwrap();
            assert_eq!(r.controllers().iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["controller"]);
        }
        let r1: RelayConfig = load(&examples().join("relay.toml")).unwrap();
        assert_eq!(r1.neighbours.len(), 2);
        for site in ["site.toml", "site-b.toml"] {
            let s: SiteConfig = load(&examples().join(site)).unwrap();
            assert!(!s.relays.is_empty());
            assert_eq!(s.probing, Probing::default());
        }
    }

    #[test]
    fn unknown_keys_and_missing_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(
            &path,
            "name = \"r1\"\nlisten = \"127.0.0.1:1\"\nneighbors = []\n\
             tls = { ca = \"a\", cert = \"b\", key = \"c\" }\ncontroller = { name = \"c\", addr = \"127.0.0.1:2\" }\n",
        )
        .unwrap();
        let err = format!("{:#}", load::<RelayConfig>(&path).unwrap_err());
        assert!(err.contains("unknown field `neighbors`") && err.contains("relay.toml"), "{err}");
        let err = format!("{:#}", load::<RelayConfig>(&dir.path().join("missing.toml")).unwrap_err());
        assert!(err.contains("cannot read") && err.contains("missing.toml"), "{err}");
    }
}
