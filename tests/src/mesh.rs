//! Whole meshes for tests: [`skybridge_gateway::testkit::local`]'s in-process mesh (real nodes,
//! QUIC, mutual TLS, redb, plugins, an emulated WAN on every link), with helpers that panic
//! with the controller's view when something does not happen, and the admin API's own
//! client.

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use serde_json::Value;
use skybridge_gateway::admin::AdminClient;
use skybridge_gateway::admin::client::Method;
use skybridge_gateway::controller::Controller;
use skybridge_gateway::path::Policy;
use skybridge_gateway::testkit::local::LocalMesh;
pub use skybridge_gateway::testkit::local::{Pki, Topology, fast_probing};
use skybridge_gateway::testkit::netem::LinkParams;

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

    /// [`TestMesh::start`] with a topology built only once this test's turn has come: for
    /// topologies that carry times (a grant valid for the next few seconds), which must not
    /// run out while other tests' meshes are up.
    pub async fn start_built(build: impl FnOnce() -> Topology) -> TestMesh {
        let turn = ONE_AT_A_TIME.lock().await;
        let mesh =
            LocalMesh::start(build(), Duration::from_secs(20)).await.unwrap_or_else(|e| panic!("{e:#}"));
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

    /// The admin API's typed client, with the mesh's token.
    pub fn client(&self) -> AdminClient {
        AdminClient::for_addr(self.controller.admin_addr(), self.token.clone())
    }

    /// Decide a path through the admin API's typed client; panics unless it succeeds. The
    /// record comes back as JSON, for tests that look into it by field.
    pub async fn connect(&self, from: &str, to: &str) -> Value {
        let record = self
            .client()
            .decide(from, to)
            .await
            .unwrap_or_else(|e| panic!("decision {from} → {to} failed: {e}"));
        serde_json::to_value(record).expect("a decision record is JSON")
    }
}

/// One request to the admin API at `addr` through the admin client, with the bearer
/// `token` if given: `(status, JSON body)`. For the error paths tests look at themselves; the
/// typed calls are on [`TestMesh::client`].
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let client = AdminClient::for_addr(addr, token.unwrap_or_default());
    let method = Method::from_bytes(method.as_bytes()).unwrap_or_else(|e| panic!("method {method}: {e}"));
    let answer = client
        .exchange(method, path, body.map(|b| b.as_bytes().to_vec()), token.is_some())
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let value = serde_json::from_slice(&answer.body)
        .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&answer.body)));
    (answer.status, value)
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
