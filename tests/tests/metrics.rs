//! `/metrics` as a real Prometheus (Debian's `prometheus`) scrapes it from the controller, a
//! relay and a site, and as `promtool check metrics` judges it.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use skybridge_gateway::testkit::netem::LinkParams;
use skybridge_tests::mesh::{TestMesh, Topology, policy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 GET: (status, body); status 0 when nothing listens (yet).
async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return (0, String::new()) };
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.expect("read");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        unchunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A Prometheus server, killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrape every second: the controller's admin listener (with the token) and each of
    /// `nodes` (job, address) without.
    fn start(controller: SocketAddr, token: &str, nodes: &[(&str, SocketAddr)]) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("token"), token).expect("token");
        let mut config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n\
             - job_name: controller\n  authorization:\n    credentials_file: {}\n  static_configs:\n  - targets: ['{controller}']\n",
            dir.path().join("token").display()
        );
        for (job, addr) in nodes {
            config.push_str(&format!("- job_name: {job}\n  static_configs:\n  - targets: ['{addr}']\n"));
        }
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("config");
        // Prometheus cannot report a port it picked: take a free one and hand it over.
        let addr =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Debian's prometheus runs (cargo xtask test installs it)");
        Prometheus { child, addr, _dir: dir }
    }

    /// An instant query's result vector.
    async fn query(&self, q: &str) -> Vec<Value> {
        let encoded: String = q
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (status, body) = get(self.addr, &format!("/api/v1/query?query={encoded}"), None).await;
        if status != 200 {
            return vec![];
        }
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The sum of a query's values, once it has any.
    async fn value(&self, q: &str) -> Option<f64> {
        let result = self.query(q).await;
        if result.is_empty() {
            return None;
        }
        Some(result.iter().filter_map(|r| r["value"][1].as_str()?.parse::<f64>().ok()).sum())
    }

    /// Wait (at most 30 s) until `q`'s value satisfies `ok`; returns it.
    async fn wait(&self, q: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.value(q).await;
            if let Some(v) = v.filter(|v| ok(*v)) {
                return v;
            }
            assert!(Instant::now() < deadline, "Prometheus: `{q}` is {v:?} after 30 s");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// `promtool check metrics` on a scrape: no lint problem.
fn promtool_accepts(what: &str, text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics on {what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn echo_service() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Send `n` bytes through the binding at `listen` and read them back.
async fn echo_through(listen: &str, n: usize) {
    let mut s = tokio::net::TcpStream::connect(listen).await.expect("connect");
    let data = vec![0x42u8; n];
    let (mut r, mut w) = s.split();
    let write = async {
        w.write_all(&data).await.expect("write");
    };
    let read = async {
        let mut back = vec![0u8; n];
        r.read_exact(&mut back).await.expect("echoed");
    };
    tokio::join!(write, read);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_controller_a_relay_and_a_site_and_the_figures_move_with_traffic() {
    let echo = echo_service().await;
    let mesh = TestMesh::start(
        Topology::new(policy(&[], 4, 20))
            .relays(&["r1", "r2"])
            .link("r1", "r2", LinkParams::delay(2.0))
            .site("site-a", &[("r1", LinkParams::default())])
            .site("site-b", &[("r2", LinkParams::default())])
            .endpoint("site-b", "echo", echo),
    )
    .await;
    let relay = mesh.relays["r1"].metrics_addr().expect("relays serve metrics in the test kit");
    let site = mesh.sites["site-b"].metrics_addr().expect("sites serve metrics in the test kit");
    let controller = mesh.controller.admin_addr();

    // The controller's metrics need the admin token; the nodes' only answer /metrics.
    assert_eq!(get(controller, "/metrics", None).await.0, 401);
    assert_eq!(get(relay, "/other", None).await.0, 404);
    let prometheus = Prometheus::start(controller, &mesh.token, &[("relay", relay), ("site", site)]);
    prometheus.wait("sum(up)", |v| v == 3.0).await;

    let (status, binding) =
        mesh.api("POST", "/v1/bindings", Some(r#"{"from":"site-a","to":"site-b","endpoint":"echo"}"#)).await;
    assert_eq!(status, 201, "{binding}");
    let listen = binding["listen"].as_str().expect("listen").to_owned();
    echo_through(&listen, 1 << 20).await;

    let up = r#"skybridge_binding_bytes_total{job="controller",direction="up",endpoint="echo"}"#;
    let first = prometheus.wait(up, |v| v >= f64::from(1 << 20)).await;
    echo_through(&listen, 1 << 20).await;
    prometheus.wait(up, |v| v >= first + f64::from(1 << 20)).await;
    prometheus.wait(r#"skybridge_binding_connections_total{job="controller"}"#, |v| v >= 2.0).await;
    prometheus.wait(r#"skybridge_sessions_total{mode="tcp"}"#, |v| v >= 2.0).await;
    prometheus.wait(r#"skybridge_decisions_total{outcome="ok"}"#, |v| v >= 1.0).await;
    prometheus.wait("skybridge_decision_duration_seconds_count", |v| v >= 1.0).await;
    prometheus.wait(r#"skybridge_plugin_calls_total{job="controller",world="scorer"}"#, |v| v >= 1.0).await;
    prometheus.wait(r#"sum(skybridge_node_up{job="controller"})"#, |v| v == 4.0).await;
    prometheus.wait(r#"skybridge_link_rtt_seconds{job="controller",from="r1",to="r2"}"#, |v| v > 0.0).await;
    prometheus.wait(r#"skybridge_link_rtt_seconds{job="relay",from="r1",to="r2"}"#, |v| v > 0.0).await;
    prometheus.wait(r#"skybridge_hop_tunnels{job="relay"}"#, |v| v == 1.0).await;
    prometheus.wait(r#"skybridge_controller_connected{job="site"}"#, |v| v == 1.0).await;
    prometheus.wait(r#"skybridge_link_rtt_seconds{job="site",from="site-b",to="r2"}"#, |v| v >= 0.0).await;

    // Each scrape passes Prometheus's own linter.
    let (status, text) = get(controller, "/metrics", Some(&mesh.token)).await;
    assert_eq!(status, 200);
    promtool_accepts("the controller", &text);
    promtool_accepts("a relay", &get(relay, "/metrics", None).await.1);
    promtool_accepts("a site", &get(site, "/metrics", None).await.1);
}
