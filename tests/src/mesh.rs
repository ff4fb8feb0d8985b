//! A whole mesh on loopback for a test: a development CA, a controller, relays and sites, each a
//! real node (QUIC, mutual TLS, redb, the scorer plugin), with a [`UdpLink`] emulating the WAN
//! on every relay–relay and site–relay link.
//!
//! On each link the first-named node dials the second through the emulator, so every packet of
//! the link crosses it. Timing is tightened for tests (heartbeats every 200 ms, down after 1 s,
//! link probes every 20 ms) so that meshes settle in about a second.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use skybridge_gateway::mesh::identity::{Role, init_ca, issue};
use skybridge_gateway::mesh::membership::MembershipConfig;
use skybridge_gateway::netem::{Conditions, LinkParams, UdpLink};
use skybridge_gateway::node::config::{
    AdminConfig, ControllerConfig, Peer, Policy, Probing, RelayConfig, SiteConfig, TlsFiles,
};
use skybridge_gateway::node::controller::{Controller, ControllerHandle};
use skybridge_gateway::node::relay::Relay;
use skybridge_gateway::node::site::Site;
use skybridge_gateway::path::Hysteresis;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A development CA in a temporary folder, issuing node identities on demand.
pub struct Pki {
    dir: TempDir,
}

impl Pki {
    /// A fresh CA.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temporary folder");
        init_ca(&dir.path().join("ca")).expect("CA");
        Pki { dir }
    }

    /// The folder (the CA is in `ca/`).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Issue a certificate for `name` as `role` (once per name) and return its files.
    pub fn tls(&self, name: &str, role: Role) -> TlsFiles {
        let out = self.dir.path().join("nodes");
        let (cert, key) = (out.join(format!("{name}.pem")), out.join(format!("{name}.key")));
        if !cert.exists() {
            issue(&self.dir.path().join("ca"), name, role, &out).expect("node certificate");
        }
        TlsFiles { ca: self.dir.path().join("ca/ca.pem"), cert, key }
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// Link probing tightened for tests.
pub fn fast_probing() -> Probing {
    Probing { interval_ms: 20, window: 50, timeout_ms: 500, report_ms: 200 }
}

/// Membership tightened for tests.
pub fn fast_membership() -> MembershipConfig {
    MembershipConfig { heartbeat_ms: 200, down_after_ms: 1_000 }
}

/// What to start.
pub struct Topology {
    /// Relay names.
    pub relays: Vec<&'static str>,
    /// Relay links: the first dials the second through an emulator with these conditions.
    pub links: Vec<(&'static str, &'static str, LinkParams)>,
    /// Sites and the relays each can reach, with the conditions of that link.
    pub sites: Vec<(&'static str, Vec<(&'static str, LinkParams)>)>,
    /// The controller's initial policy.
    pub policy: Policy,
}

/// A running mesh.
pub struct TestMesh {
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
}

/// The weighted scorer with these weights, k and probe count, probes 5 ms apart.
pub fn policy(weights: &[(&str, f64)], k: usize, probes: u32) -> Policy {
    Policy {
        scorer: crate::plugin("weighted-scorer"),
        weights: weights.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
        k,
        probes,
        probe_interval_ms: 5,
    }
}

impl TestMesh {
    /// Start the controller, then relays in an order that lets each dial its neighbours'
    /// emulators, then sites; wait until every node is up, every link measured and every
    /// platform has a nearest relay.
    pub async fn start(topology: Topology) -> TestMesh {
        let pki = Pki::new();
        let state = tempfile::tempdir().expect("temporary folder");
        let token = "test-token-0123456789abcdef".to_owned();
        let token_file = state.path().join("admin.token");
        std::fs::write(&token_file, &token).expect("token file");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let controller = Controller::start(ControllerConfig {
            name: "controller".into(),
            listen: any,
            tls: pki.tls("controller", Role::Controller),
            admin: AdminConfig { listen: any, token_file },
            store: state.path().join("controller.redb"),
            membership: fast_membership(),
            nearest: Hysteresis::default(),
            policy: topology.policy.clone(),
            plugin_cache: Some(state.path().join("plugin-cache")),
        })
        .await
        .expect("controller starts");
        let controller_peer = Peer { name: "controller".into(), addr: controller.mesh_addr() };

        // Dialled relays first: a relay starts once every relay it dials is running.
        let mut relays = BTreeMap::new();
        let mut links = BTreeMap::new();
        let mut pending: Vec<&str> = topology.relays.clone();
        let mut seed = 1;
        while !pending.is_empty() {
            let ready = pending
                .iter()
                .position(|r| topology.links.iter().filter(|l| l.0 == *r).all(|l| relays.contains_key(l.1)))
                .expect("relay links must not form a dialling cycle");
            let name = pending.remove(ready);
            let mut neighbours = Vec::new();
            for (from, to, params) in topology.links.iter().filter(|l| l.0 == name) {
                let target: &Relay = &relays[*to];
                let link = UdpLink::start(target.local_addr(), Conditions::symmetric(*params), seed)
                    .await
                    .expect("emulated link");
                seed += 1;
                neighbours.push(Peer { name: to.to_string(), addr: link.local_addr() });
                links.insert((from.to_string(), to.to_string()), link);
            }
            let relay = Relay::start(RelayConfig {
                name: name.into(),
                listen: any,
                tls: pki.tls(name, Role::Relay),
                controller: controller_peer.clone(),
                probing: fast_probing(),
                neighbours,
            })
            .expect("relay starts");
            relays.insert(name.to_string(), relay);
        }

        let mut sites = BTreeMap::new();
        for (name, reach) in &topology.sites {
            let mut peers = Vec::new();
            for (relay, params) in reach {
                let link = UdpLink::start(relays[*relay].local_addr(), Conditions::symmetric(*params), seed)
                    .await
                    .expect("emulated link");
                seed += 1;
                peers.push(Peer { name: relay.to_string(), addr: link.local_addr() });
                links.insert((name.to_string(), relay.to_string()), link);
            }
            let site = Site::start(SiteConfig {
                name: name.to_string(),
                listen: any,
                tls: pki.tls(name, Role::Site),
                controller: controller_peer.clone(),
                probing: fast_probing(),
                relays: peers,
            })
            .expect("site starts");
            sites.insert(name.to_string(), site);
        }

        let mesh = TestMesh { pki, controller, relays, sites, links, token, state };
        let relay_links: BTreeSet<(String, String)> =
            topology.links.iter().map(|l| (l.0.to_string(), l.1.to_string())).collect();
        let nodes = topology.relays.len() + topology.sites.len();
        mesh.wait_until("every node up, link measured and platform placed", Duration::from_secs(20), |c| {
            c.nodes().iter().filter(|n| n.state == skybridge_gateway::mesh::membership::NodeState::Up).count()
                == nodes
                && c.links()
                    .iter()
                    .filter(|l| l.usable && l.stats.samples >= 20)
                    .map(|l| (l.from.clone(), l.to.clone()))
                    .collect::<BTreeSet<_>>()
                    == relay_links
                && c.platforms().iter().all(|p| p.nearest_relay.is_some())
        })
        .await;
        mesh
    }

    /// The controller's state and operations.
    pub fn ctl(&self) -> &Controller {
        self.controller.controller()
    }

    /// Wait until `ready` holds for the controller, polling every 50 ms; panic after `timeout`.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut(&Controller) -> bool,
    ) {
        let start = Instant::now();
        while !ready(self.ctl()) {
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for: {what}\nnodes: {:#?}\nlinks: {:#?}\nplatforms: {:#?}",
                self.ctl().nodes(),
                self.ctl().links(),
                self.ctl().platforms()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Change the emulated conditions of link `a`–`b` (both directions).
    pub fn set_link(&self, a: &str, b: &str, params: LinkParams) {
        let link = self
            .links
            .get(&(a.to_owned(), b.to_owned()))
            .or_else(|| self.links.get(&(b.to_owned(), a.to_owned())))
            .unwrap_or_else(|| panic!("no link {a}–{b}"));
        link.set(Conditions::symmetric(params)).expect("valid conditions");
    }

    /// Kill relay `name`: it closes every connection at once.
    pub fn kill_relay(&mut self, name: &str) {
        self.relays.remove(name).unwrap_or_else(|| panic!("no relay {name}")).shutdown();
    }

    /// Call the admin API with the mesh's token: `(status, JSON body)`.
    pub async fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        http(self.controller.admin_addr(), method, path, Some(&self.token), body).await
    }

    /// Request a connection through the admin API; panics unless it succeeds.
    pub async fn connect(&self, from: &str, to: &str) -> Value {
        let body = serde_json::json!({ "from": from, "to": to }).to_string();
        let (status, record) = self.api("POST", "/v1/connections", Some(&body)).await;
        assert_eq!(status, 201, "connection {from} → {to} failed: {record}");
        record
    }
}

/// One plain HTTP/1.1 request with an optional bearer token: `(status, JSON body)`.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("admin API reachable");
    let body = body.unwrap_or("");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("request sent");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("response read");
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("not an HTTP response: {text}"));
    let status =
        head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {head}"));
    let value = serde_json::from_str(body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {body}"));
    (status, value)
}

/// The chosen path of a decision record, e.g. `["r1", "r3", "r4"]`.
pub fn chosen_path(record: &Value) -> Vec<String> {
    let d = &record["decision"];
    let winner = d["winner"].as_u64().expect("winner") as usize;
    path_of(&d["candidates"][winner])
}

/// A candidate's path.
pub fn path_of(candidate: &Value) -> Vec<String> {
    candidate["path"].as_array().expect("path").iter().map(|n| n.as_str().expect("name").to_owned()).collect()
}

/// The candidate whose path is `path`.
pub fn candidate<'a>(record: &'a Value, path: &[&str]) -> &'a Value {
    record["decision"]["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .find(|c| path_of(c) == path)
        .unwrap_or_else(|| panic!("no candidate {path:?} in {record:#}"))
}
