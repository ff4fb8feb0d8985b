//! Whole meshes for tests: [`skybridge_gateway::node::local`]'s in-process mesh (real nodes,
//! QUIC, mutual TLS, redb, plugins, an emulated WAN on every link), with helpers that panic
//! with the controller's view when something does not happen, and a plain HTTP client for
//! the admin API.

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use serde_json::Value;
use skybridge_gateway::controller::Controller;
use skybridge_gateway::netem::LinkParams;
use skybridge_gateway::node::local::LocalMesh;
pub use skybridge_gateway::node::local::{Pki, Topology, fast_probing};
use skybridge_gateway::path::Policy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The weighted scorer with these weights, k and probe count, probes 5 ms apart.
pub fn policy(weights: &[(&str, f64)], k: usize, probes: u32) -> Policy {
    Policy {
        scorer: crate::plugin("weighted-scorer"),
        weights: weights.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
        k,
        probes,
        probe_interval_ms: 5,
        reroute_loss: 0.2,
    }
}

/// One mesh at a time per test process: the tests measure RTT, loss and timing, and several
/// meshes sharing two cores would measure each other's scheduling instead.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A running mesh; see [`LocalMesh`] for its parts. It holds the turn until dropped.
pub struct TestMesh(LocalMesh, #[allow(dead_code)] tokio::sync::MutexGuard<'static, ()>);

impl Deref for TestMesh {
    type Target = LocalMesh;
    fn deref(&self) -> &LocalMesh {
        &self.0
    }
}

impl DerefMut for TestMesh {
    fn deref_mut(&mut self) -> &mut LocalMesh {
        &mut self.0
    }
}

impl TestMesh {
    /// Wait for the other tests' meshes to stop, then start this one and wait (at most 20 s)
    /// until it has settled.
    pub async fn start(topology: Topology) -> TestMesh {
        let turn = ONE_AT_A_TIME.lock().await;
        let mesh =
            LocalMesh::start(topology, Duration::from_secs(20)).await.unwrap_or_else(|e| panic!("{e:#}"));
        TestMesh(mesh, turn)
    }

    /// Wait until `ready` holds for the controller; panic with its view after `timeout`.
    pub async fn wait_until(&self, what: &str, timeout: Duration, ready: impl FnMut(&Controller) -> bool) {
        self.0.wait_until(what, timeout, ready).await.unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Change the emulated conditions of link `a`–`b`.
    pub fn set_link(&self, a: &str, b: &str, params: LinkParams) {
        self.0.set_link(a, b, params).unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Kill relay `name`.
    pub fn kill_relay(&mut self, name: &str) {
        self.0.kill_relay(name).unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Start killed relay `name` again, on its old address.
    pub async fn restart_relay(&mut self, name: &str) {
        self.0.restart_relay(name).await.unwrap_or_else(|e| panic!("{e:#}"));
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
