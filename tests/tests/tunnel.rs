//! Tunnels and bindings: real clients (curl) through a `tcp` binding on the controller, across
//! relays, out of the target site to a real HTTP server; and the refusals that keep the
//! tunnel closed to everyone else.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use skybridge_gateway::controller::events::Event;
use skybridge_gateway::mesh::identity::Role;
use skybridge_gateway::mesh::messages::Control;
use skybridge_gateway::mesh::stream::{read_frame, write_frame};
use skybridge_gateway::mesh::transport::MeshEndpoint;
use skybridge_gateway::testkit::netem::LinkParams;
use skybridge_tests::mesh::{TestMesh, Topology, policy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Python's `http.server` serving `dir` on an ephemeral port; killed on drop.
struct HttpServer {
    child: Child,
    addr: SocketAddr,
}

impl HttpServer {
    fn start(dir: &Path) -> HttpServer {
        let script = "import http.server, os, sys\n\
            os.chdir(sys.argv[1])\n\
            class H(http.server.SimpleHTTPRequestHandler):\n    def log_message(self, *a): pass\n\
            s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)\n\
            print(s.server_address[1], flush=True)\n\
            s.serve_forever()\n";
        let mut child = Command::new("python3")
            .args(["-c", script])
            .arg(dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs (cargo xtask test installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("port");
        let port: u16 =
            line.trim().parse().unwrap_or_else(|_| panic!("no port from the HTTP server: {line:?}"));
        HttpServer { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic incompressible bytes.
fn write_random_file(path: &Path, len: usize) -> String {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut hash = Sha256::new();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut block = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(block.len());
        f.write_all(&block[..n]).expect("write");
        hash.update(&block[..n]);
        left -= n;
    }
    f.flush().expect("flush");
    hex::encode(hash.finalize())
}

fn sha256_file(path: &Path) -> String {
    let mut hash = Sha256::new();
    let mut f = std::fs::File::open(path).expect("open");
    std::io::copy(&mut f, &mut hash).expect("read");
    hex::encode(hash.finalize())
}

/// Send `CONNECT target` with `Proxy-Authorization: auth` to `proxy`; the whole answer.
async fn raw_connect(proxy: SocketAddr, target: &str, auth: &str) -> String {
    let request =
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {auth}\r\n\r\n");
    exchange_from([127, 0, 0, 1], proxy, &request).await
}

/// Send `request` to `to` from the address `source` (any of 127/8); the answer, up to a
/// CONNECT's `200` head or the end.
async fn exchange_from(source: [u8; 4], to: SocketAddr, request: &str) -> String {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::from((source, 0))).expect("bind the source address");
    let mut raw = socket.connect(to).await.expect("connect");
    raw.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    // A granted CONNECT stays open: its status line is enough.
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), raw.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => answer.push_str(&String::from_utf8_lossy(&buf[..n])),
            Ok(Err(e)) => panic!("reading the CONNECT answer: {e}"),
        }
        if answer.starts_with("HTTP/1.1 200") && answer.contains("\r\n\r\n") {
            break;
        }
    }
    answer
}

/// site-a — r1 — r2 — site-b, where site-b publishes `web` (and `echo` when given).
fn two_relays(web: SocketAddr, echo: Option<SocketAddr>) -> Topology {
    let mut t = Topology::new(policy(&[], 4, 20))
        .relays(&["r1", "r2"])
        .link("r1", "r2", LinkParams::delay(1.0))
        .site("site-a", &[("r1", LinkParams::default())])
        .site("site-b", &[("r2", LinkParams::default())])
        .endpoint("site-b", "web", web);
    if let Some(echo) = echo {
        t = t.endpoint("site-b", "echo", echo);
    }
    t
}

async fn bind(mesh: &TestMesh, endpoint: &str, extra: Value) -> (u16, Value) {
    let mut body = json!({ "from": "site-a", "to": "site-b", "endpoint": endpoint });
    if let (Some(b), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(extra.clone());
    }
    mesh.api("POST", "/v1/bindings", Some(&body.to_string())).await
}

fn curl(url: &str, out: &Path) -> std::process::Output {
    Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--max-time", "120", "-o"])
        .arg(out)
        .arg(url)
        .output()
        .expect("curl runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_a_tcp_binding_across_two_relays_gets_100_mib_intact() {
    let files = tempfile::tempdir().expect("tempdir");
    let expected = write_random_file(&files.path().join("big.bin"), 100 << 20);
    std::fs::write(files.path().join("hello.txt"), "hello through the mesh\n").expect("write");
    let web = HttpServer::start(files.path());
    let mesh = TestMesh::start(two_relays(web.addr, None)).await;

    let (status, binding) = bind(&mesh, "web", json!({})).await;
    assert_eq!(status, 201, "{binding:#}");
    assert_eq!(binding["tunnel"]["hops"], json!(["r1", "r2", "site-b"]), "{binding:#}");
    let listen = binding["listen"].as_str().expect("listen").to_owned();
    for relay in ["r1", "r2"] {
        assert_eq!(mesh.relays[relay].tunnels().tunnels().len(), 1, "{relay} holds the tunnel");
    }

    let out = tempfile::tempdir().expect("tempdir");
    let small = out.path().join("hello.txt");
    let r = tokio::task::spawn_blocking({
        let (url, small) = (format!("http://{listen}/hello.txt"), small.clone());
        move || curl(&url, &small)
    })
    .await
    .expect("curl task");
    assert!(r.status.success(), "curl: {}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(std::fs::read_to_string(&small).expect("read"), "hello through the mesh\n");

    let big = out.path().join("big.bin");
    let r = tokio::task::spawn_blocking({
        let (url, big) = (format!("http://{listen}/big.bin"), big.clone());
        move || curl(&url, &big)
    })
    .await
    .expect("curl task");
    assert!(r.status.success(), "curl: {}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(sha256_file(&big), expected, "100 MiB arrived altered");

    let id = binding["id"].as_u64().expect("id");
    let (_, seen) = mesh.api("GET", &format!("/v1/bindings/{id}"), None).await;
    assert_eq!(seen["connections"], json!(2));
    assert!(seen["bytes_down"].as_u64().expect("bytes") > 100 << 20, "{seen:#}");

    // Closing the binding closes its listener and tears the tunnel down on every hop.
    let (status, _) = mesh.api("DELETE", &format!("/v1/bindings/{id}"), None).await;
    assert_eq!(status, 200);
    assert!(tokio::net::TcpStream::connect(&listen).await.is_err(), "the listener is closed");
    for relay in ["r1", "r2"] {
        assert!(mesh.relays[relay].tunnels().tunnels().is_empty(), "{relay} still holds the tunnel");
    }
    let (status, _) = mesh.api("GET", &format!("/v1/bindings/{id}"), None).await;
    assert_eq!(status, 404);
}

/// A service that reads until the client half-closes, then answers with the byte count.
async fn counting_service() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                if s.read_to_end(&mut buf).await.is_ok() {
                    let _ = s.write_all(format!("got {} bytes", buf.len()).as_bytes()).await;
                }
            });
        }
    });
    addr
}

/// Connect to `listen`, send `bytes`, half-close, and read the whole answer: the answer can
/// only come after the half-close has crossed the tunnel.
async fn send_and_half_close(listen: &str, bytes: &[u8]) -> String {
    let mut client = tokio::net::TcpStream::connect(listen).await.expect("connect");
    client.write_all(bytes).await.expect("write");
    client.shutdown().await.expect("half-close");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_string(&mut answer))
        .await
        .expect("the answer comes after our half-close")
        .expect("read");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_crosses_the_tunnel_and_strangers_cannot_use_it() {
    let files = tempfile::tempdir().expect("tempdir");
    let web = HttpServer::start(files.path());
    let echo = counting_service().await;
    let mesh = TestMesh::start(two_relays(web.addr, Some(echo))).await;

    // A tcp binding authenticates no one: listening beyond loopback must be asked for.
    let (status, body) = bind(&mesh, "echo", json!({ "listen": "0.0.0.0:0" })).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("\"open\": true")), "{body}");
    let (status, open) = bind(&mesh, "echo", json!({ "listen": "0.0.0.0:0", "open": true })).await;
    assert_eq!(
        (status, open["listen"].as_str().map(|l| l.starts_with("0.0.0.0:"))),
        (201, Some(true)),
        "{open}"
    );
    let path = format!("/v1/bindings/{}", open["id"]);
    assert_eq!(mesh.api("DELETE", &path, None).await.0, 200);

    let (status, binding) = bind(&mesh, "echo", json!({})).await;
    assert_eq!(status, 201, "{binding:#}");
    let listen = binding["listen"].as_str().expect("listen").to_owned();
    assert_eq!(send_and_half_close(&listen, &[7u8; 100_000]).await, "got 100000 bytes");

    // A client whose whole request (bytes and half-close) is in its first flight: the
    // ingress sends what already arrived with the tunnel's opening frame, and the end of
    // stream still follows it through every hop.
    assert_eq!(send_and_half_close(&listen, b"hello").await, "got 5 bytes");

    // Both uses are recorded with exact byte counts, early bytes included.
    let id = binding["id"].as_u64().expect("id");
    mesh.wait_until("both sessions ended", Duration::from_secs(5), |c| {
        c.sessions().iter().filter(|s| s.binding == id && s.outcome.is_some()).count() == 2
    })
    .await;
    let mut counts: Vec<(u64, u64)> = mesh
        .controller
        .controller()
        .sessions()
        .iter()
        .filter(|s| s.binding == id)
        .map(|s| (s.bytes_up, s.bytes_down))
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, [(5, 11), (100_000, 16)]);

    // An endpoint the site does not publish: the setup fails, naming the reason, and nothing
    // stays behind on the relays.
    let (status, answer) = bind(&mesh, "db", json!({})).await;
    assert_eq!(status, 502, "{answer}");
    let error = answer["error"].as_str().expect("error");
    assert!(error.contains("site-b does not publish endpoint `db` (published: echo, web)"), "{error}");
    assert!(error.contains("rolled back on r1, r2"), "{error}");
    for relay in ["r1", "r2"] {
        assert_eq!(mesh.relays[relay].tunnels().tunnels().len(), 1, "{relay}: only the echo tunnel");
    }
    let (status, answer) = bind(&mesh, "web", json!({ "mode": "http" })).await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = bind(&mesh, "web", json!({ "ttl_s": 0 })).await;
    assert_eq!(status, 400, "{answer}");

    // No way around the tunnel. A relay carries no streams: one opened on r2 with r1's own
    // certificate is never answered. And the site takes a controller's connection only
    // through a tunnel: even the controller's own certificate, dialling the site's address
    // directly, is turned away.
    let tunnel = binding["tunnel"]["id"].as_u64().expect("tunnel");
    let identity = mesh.pki.tls("r1", Role::Relay).expect("cert").load("r1", Role::Relay).expect("identity");
    let ep = MeshEndpoint::bind("127.0.0.1:0".parse().expect("addr"), identity, &[]).expect("endpoint");
    let conn = ep.connect(mesh.relays["r2"].local_addr(), "r2", &[Role::Relay]).await.expect("handshake");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    write_frame(&mut send, &Control::TunnelOpen { tunnel, token: "00".repeat(32) }).await.expect("sent");
    assert!(read_frame(&mut recv, Duration::from_secs(2)).await.is_err(), "a relay answered a tunnel stream");
    // (Gone again, so that r2 goes back to the real r1's connection.)
    drop((send, recv, conn, ep));
    let identity = mesh
        .pki
        .tls("controller", Role::Controller)
        .expect("cert")
        .load("controller", Role::Controller)
        .expect("identity");
    let ep = MeshEndpoint::bind("127.0.0.1:0".parse().expect("addr"), identity, &[]).expect("endpoint");
    let direct = ep.connect(mesh.sites["site-b"].local_addr(), "site-b", &[Role::Site]).await;
    let refused = match direct {
        Ok(conn) => match tokio::time::timeout(Duration::from_secs(5), conn.closed()).await {
            Ok(quinn::ConnectionError::ApplicationClosed(close)) => close.reason.to_vec(),
            other => panic!("the direct connection was not closed by the site: {other:?}"),
        },
        Err(e) => panic!("the handshake itself failed, not the site's check: {e}"),
    };
    assert_eq!(refused, b"sites are reached through tunnels only");
    drop(ep);

    // Expiry: a binding with a 1 s lifetime is closed by the controller and its hops.
    let (status, short) = bind(&mesh, "web", json!({ "ttl_s": 1 })).await;
    assert_eq!(status, 201, "{short}");
    let short_listen = short["listen"].as_str().expect("listen").to_owned();
    let short_id = short["id"].as_u64().expect("id");
    mesh.wait_until("the short binding expired", Duration::from_secs(5), |c| {
        c.bindings().get(short_id).is_none()
    })
    .await;
    assert!(tokio::net::TcpStream::connect(&short_listen).await.is_err(), "the listener is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_close_when_the_requesting_platform_goes_away() {
    let files = tempfile::tempdir().expect("tempdir");
    let web = HttpServer::start(files.path());
    let mut mesh = TestMesh::start(two_relays(web.addr, None)).await;
    let (status, binding) = bind(&mesh, "web", json!({})).await;
    assert_eq!(status, 201, "{binding:#}");
    let id = binding["id"].as_u64().expect("id");
    mesh.sites.remove("site-a").expect("site-a").shutdown();
    mesh.wait_until("the binding closed", Duration::from_secs(5), |c| c.bindings().get(id).is_none()).await;
    // The teardown reaches the hops right after the binding leaves the registry.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    for relay in ["r1", "r2"] {
        while !mesh.relays[relay].tunnels().tunnels().is_empty() {
            assert!(std::time::Instant::now() < deadline, "{relay} still holds the tunnel after 5 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A service that sends bytes until the client goes away.
/// A service that sends every client [`SEQUENCE_BYTES`] of a sequence (byte `i` is `i % 251`,
/// so a lost, repeated or reordered piece shows) at about 32 MiB/s, then closes.
async fn sequence_service() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sent = 0usize;
                while sent < SEQUENCE_BYTES {
                    let chunk: Vec<u8> = (sent..sent + 32 * 1024).map(|i| (i % 251) as u8).collect();
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                    sent += chunk.len();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
        }
    });
    addr
}

/// What [`sequence_service`] sends each client.
const SEQUENCE_BYTES: usize = 96 << 20;

/// Read `client` to its end, checking every byte against the sequence (from byte `from` on);
/// the bytes read and the longest wait for data.
async fn read_sequence(client: &mut tokio::net::TcpStream, from: usize) -> (usize, Duration) {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut at, mut longest) = (from, Duration::ZERO);
    loop {
        let waited = std::time::Instant::now();
        let n = tokio::time::timeout(Duration::from_secs(20), client.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("the stream stalled for 20 s at byte {at}"))
            .unwrap_or_else(|e| panic!("the stream failed at byte {at}: {e}"));
        longest = longest.max(waited.elapsed());
        if n == 0 {
            return (at - from, longest);
        }
        if let Some(bad) = (0..n).find(|i| buf[*i] != ((at + i) % 251) as u8) {
            panic!("byte {} is wrong: the stream lost or repeated data", at + bad);
        }
        at += n;
    }
}

/// site-a — r1 — {r2 slow (10 ms) | r3 fast (2 ms)} — r4 — site-b, which publishes `stream`.
fn stream_diamond(stream_service: SocketAddr) -> Topology {
    Topology::new(policy(&[], 4, 20))
        .relays(&["r1", "r2", "r3", "r4"])
        .link("r1", "r2", LinkParams::delay(10.0))
        .link("r2", "r4", LinkParams::delay(10.0))
        .link("r1", "r3", LinkParams::delay(2.0))
        .link("r3", "r4", LinkParams::delay(2.0))
        .site("site-a", &[("r1", LinkParams::default())])
        .site("site-b", &[("r4", LinkParams::default())])
        .endpoint("site-b", "stream", stream_service)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_stream_costs_a_stall_not_a_byte_and_the_binding_reroutes() {
    let stream_service = sequence_service().await;
    let mut mesh = TestMesh::start(stream_diamond(stream_service)).await;
    let mut events = mesh.ctl().subscribe();
    let (status, binding) = bind(&mesh, "stream", json!({})).await;
    assert_eq!(status, 201, "{binding:#}");
    assert_eq!(binding["tunnel"]["hops"], json!(["r1", "r3", "r4", "site-b"]));
    let id = binding["id"].as_u64().expect("id");
    let listen = binding["listen"].as_str().expect("listen").to_owned();

    let mut client = tokio::net::TcpStream::connect(&listen).await.expect("connect");
    let mut first = vec![0u8; 1 << 20];
    client.read_exact(&mut first).await.expect("data flows");

    // The relay the stream crosses dies; the stream moves onto the new path and loses nothing.
    mesh.kill_relay("r3");
    let (rest, stall) = read_sequence(&mut client, first.len()).await;
    assert_eq!(first.len() + rest, SEQUENCE_BYTES, "the whole stream arrived");
    eprintln!("longest stall across the relay's death: {stall:?}");

    let (_, view) = mesh.api("GET", &format!("/v1/bindings/{id}"), None).await;
    assert_eq!(view["tunnel"]["hops"], json!(["r1", "r2", "r4", "site-b"]), "{view:#}");
    let reroute = &view["reroutes"][0];
    assert_eq!(reroute["from_hops"], json!(["r1", "r3", "r4", "site-b"]), "{view:#}");
    assert!(reroute["reason"].as_str().expect("reason").contains("r3"), "{reroute}");

    let mut again = tokio::net::TcpStream::connect(&listen).await.expect("connect");
    let mut data = vec![0u8; 100_000];
    tokio::time::timeout(Duration::from_secs(10), again.read_exact(&mut data))
        .await
        .expect("a new connection works over the other path")
        .expect("read");
    assert!(data.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    for relay in ["r1", "r2", "r4"] {
        assert_eq!(mesh.relays[relay].tunnels().tunnels().len(), 1, "{relay}: only the new tunnel");
    }

    // The same story as the controller's events, in order: the decision and the binding, r3
    // going down, the re-route's new decision and the re-route itself.
    let mut seen = Vec::new();
    while let Ok(stamped) = events.try_recv() {
        seen.push(stamped.event);
    }
    let position = |what: &str, wanted: &dyn Fn(&Event) -> bool| {
        seen.iter().position(wanted).unwrap_or_else(|| panic!("no event {what} in {seen:#?}"))
    };
    let decided =
        position("decided", &|e| matches!(e, Event::Decided { path, .. } if path == &["r1", "r3", "r4"]));
    let opened =
        position("binding opened", &|e| matches!(e, Event::BindingOpened { binding, .. } if *binding == id));
    let down = position("r3 down", &|e| matches!(e, Event::NodeDown { node, .. } if node == "r3"));
    let redecided = position(
        "new decision",
        &|e| matches!(e, Event::Decided { path, .. } if path == &["r1", "r2", "r4"]),
    );
    let rerouted = position(
        "rerouted",
        &|e| matches!(e, Event::Rerouted { binding, to_hops, .. } if *binding == id && to_hops == &["r1", "r2", "r4", "site-b"]),
    );
    assert!(decided < opened && opened < down && down < redecided && redecided < rerouted, "{seen:#?}");
}

/// A link that goes silent — blackholed, no close, no reset, as when a relay is SIGKILLed or
/// a router drops everything — re-routes the binding well before QUIC's 5 s idle timeout
/// would end anything; the stream across it carries on over the new path without losing a
/// byte, and a client connecting while the re-route runs waits for the new path instead of
/// being refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_link_stalls_its_streams_onto_the_new_path_and_a_client_arriving_meanwhile_takes_it() {
    let stream_service = sequence_service().await;
    let mesh = TestMesh::start(stream_diamond(stream_service)).await;
    let (status, binding) = bind(&mesh, "stream", json!({})).await;
    assert_eq!(status, 201, "{binding:#}");
    assert_eq!(binding["tunnel"]["hops"], json!(["r1", "r3", "r4", "site-b"]));
    let id = binding["id"].as_u64().expect("id");
    let listen = binding["listen"].as_str().expect("listen").to_owned();
    let mut client = tokio::net::TcpStream::connect(&listen).await.expect("connect");
    let mut first = vec![0u8; 1 << 20];
    client.read_exact(&mut first).await.expect("data flows");

    mesh.set_link("r1", "r3", LinkParams { loss: 1.0, ..LinkParams::default() });
    let cut = std::time::Instant::now();
    let reader = tokio::spawn(async move { read_sequence(&mut client, 1 << 20).await });

    // At once, while the controller may still be re-routing: this client waits for the new
    // path rather than being sent into the dead one.
    let mut again = tokio::net::TcpStream::connect(&listen).await.expect("connect");
    let mut data = vec![0u8; 100_000];
    tokio::time::timeout(Duration::from_secs(10), again.read_exact(&mut data))
        .await
        .expect("the new connection is carried")
        .unwrap_or_else(|e| panic!("a connection made {:?} after the cut fails: {e}", cut.elapsed()));
    assert!(data.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    drop(again);

    let (rest, stall) = reader.await.expect("reader");
    assert_eq!((1 << 20) + rest, SEQUENCE_BYTES, "the whole stream arrived");
    eprintln!("longest stall across the silent link: {stall:?}");
    let (_, view) = mesh.api("GET", &format!("/v1/bindings/{id}"), None).await;
    assert_eq!(view["tunnel"]["hops"], json!(["r1", "r2", "r4", "site-b"]), "{view:#}");
    assert_eq!(view["reroutes"][0]["reason"], json!("link r1–r3 fell silent"), "{view:#}");
    // Both relays are up (their control connections are fine): only the link is out.
    let (_, links) = mesh.api("GET", "/v1/links", None).await;
    let r1_r3 = links.as_array().expect("links").iter().find(|l| l["from"] == "r1" && l["to"] == "r3");
    assert_eq!(r1_r3.map(|l| (&l["silent"], &l["usable"])), Some((&json!(true), &json!(false))), "{links:#}");
    let (_, nodes) = mesh.api("GET", "/v1/nodes", None).await;
    assert!(nodes.as_array().expect("nodes").iter().all(|n| n["state"] == "up"), "{nodes:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_the_connect_proxy_and_a_slow_client_is_let_go() {
    let files = tempfile::tempdir().expect("tempdir");
    std::fs::write(files.path().join("hello.txt"), "hello via CONNECT\n").expect("write");
    let web = HttpServer::start(files.path());
    let mesh = TestMesh::start(two_relays(web.addr, None).ingress_platform("site-a")).await;
    let proxy = mesh.controller.connect_addr().expect("the CONNECT proxy runs");

    // curl tunnels through the proxy to site-b's `web` endpoint, named by its port.
    let run = move |user: &str, url: String| {
        Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "20", "--proxytunnel", "--proxy"])
            .arg(format!("http://{proxy}"))
            .args(["--proxy-user", user])
            .arg(url)
            .output()
            .expect("curl runs")
    };
    let url = format!("http://site-b:{}/hello.txt", web.addr.port());
    let token = mesh.token.clone();
    let out = tokio::task::spawn_blocking({
        let (user, url) = (format!("anyone:{token}"), url.clone());
        move || run(&user, url)
    })
    .await
    .expect("curl task");
    assert!(
        out.status.success(),
        "curl: {} {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello via CONNECT\n");
    let (_, bindings) = mesh.api("GET", "/v1/bindings", None).await;
    assert_eq!(bindings[0]["mode"], json!("connect"), "{bindings:#}");
    assert_eq!(bindings[0]["from"], json!("site-a"), "the ingress's platform");

    // A wrong password is refused with 407; an unknown platform gets a clear 404.
    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || run("anyone:wrong", url)
    })
    .await
    .expect("curl task");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("407"), "{}", String::from_utf8_lossy(&out.stderr));
    let mut raw = tokio::net::TcpStream::connect(proxy).await.expect("connect");
    let auth = format!("Proxy-Authorization: Bearer {token}\r\n");
    raw.write_all(format!("CONNECT nowhere:80 HTTP/1.1\r\nHost: nowhere:80\r\n{auth}\r\n").as_bytes())
        .await
        .expect("write");
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 404") && answer.contains("unknown platform `nowhere`"), "{answer}");

    // A client that never finishes its request head is dropped (within the 10 s head timeout),
    // and meanwhile others are served.
    let mut slow = tokio::net::TcpStream::connect(proxy).await.expect("connect");
    slow.write_all(b"CONNECT site-b:").await.expect("write");
    let out = tokio::task::spawn_blocking({
        let (user, url) = (format!("anyone:{token}"), url.clone());
        move || run(&user, url)
    })
    .await
    .expect("curl task");
    assert!(out.status.success(), "served while a slow client waits");
    let mut rest = String::new();
    let dropped = tokio::time::timeout(Duration::from_secs(15), slow.read_to_string(&mut rest)).await;
    assert!(dropped.is_ok(), "the slow client was not let go");
    assert!(rest.starts_with("HTTP/1.1 400") && rest.contains("no complete request in time"), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_time_out_and_a_binding_caps_its_connections() {
    let files = tempfile::tempdir().expect("tempdir");
    let web = HttpServer::start(files.path());
    let echo = counting_service().await;
    let mesh = TestMesh::start(two_relays(web.addr, Some(echo)).ingress_limits(1, 2)).await;
    let (status, binding) = bind(&mesh, "echo", json!({})).await;
    assert_eq!(status, 201, "{binding:#}");
    let listen = binding["listen"].as_str().expect("listen").to_owned();

    // Two clients that connect and then say nothing fill the binding.
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(tokio::net::TcpStream::connect(&listen).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A third is reset at once — possibly before its connect even returns.
    let mut buf = [0u8; 16];
    if let Ok(mut third) = tokio::net::TcpStream::connect(&listen).await {
        let refused = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
            .await
            .expect("not left hanging");
        assert!(matches!(refused, Err(_) | Ok(0)), "a third connection is refused: {refused:?}");
    }

    // After the 1 s idle timeout both are reset, and the binding serves again.
    for mut client in idle {
        let ended =
            tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf)).await.expect("timed out");
        assert!(ended.is_err(), "an idle connection ends with an error: {ended:?}");
    }
    assert_eq!(send_and_half_close(&listen, b"abc").await, "got 3 bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_keep_their_secrets_and_their_own_tunnels_and_every_use_is_recorded() {
    let files = tempfile::tempdir().expect("tempdir");
    std::fs::write(files.path().join("hello.txt"), "hello\n").expect("write");
    let web = HttpServer::start(files.path());
    let mesh = TestMesh::start(two_relays(web.addr, None).ingress_platform("site-a")).await;
    let proxy = mesh.controller.connect_addr().expect("the CONNECT proxy runs");

    // Accounts: created with a secret that no answer ever contains.
    let (status, body) =
        mesh.api("POST", "/v1/accounts", Some(r#"{"id": "acme", "secret": "acme-secret-0123456789"}"#)).await;
    assert_eq!(status, 201, "{body}");
    let (status, _) =
        mesh.api("POST", "/v1/accounts", Some(r#"{"id": "beta", "secret": "beta-secret-0123456789"}"#)).await;
    assert_eq!(status, 201);
    let (status, body) =
        mesh.api("POST", "/v1/accounts", Some(r#"{"id": "acme", "secret": "another-secret-0123"}"#)).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) =
        mesh.api("POST", "/v1/accounts", Some(r#"{"id": "Bad Id", "secret": "0123456789abcdef"}"#)).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = mesh.api("POST", "/v1/accounts", Some(r#"{"id": "short", "secret": "x"}"#)).await;
    assert_eq!(status, 400, "{body}");
    let mapping =
        r#"{"principal": "AKIAACME", "secret": "target-secret-xyz", "attributes": {"region": "us-east-1"}}"#;
    let (status, body) = mesh.api("PUT", "/v1/accounts/acme/credentials/site-b", Some(mapping)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["credentials"]["site-b"]["principal"], json!("AKIAACME"));
    let (status, _) = mesh.api("PUT", "/v1/accounts/nobody/credentials/site-b", Some(mapping)).await;
    assert_eq!(status, 404);
    for path in ["/v1/accounts", "/v1/accounts/acme"] {
        let (status, body) = mesh.api("GET", path, None).await;
        let text = body.to_string();
        assert_eq!(status, 200);
        assert!(!text.contains("acme-secret") && !text.contains("target-secret"), "a secret leaked: {text}");
    }

    // CONNECT as an account: its own binding and tunnel, never another account's.
    let curl = |user: String| {
        let url = format!("http://site-b:{}/hello.txt", web.addr.port());
        let proxy = format!("http://{proxy}");
        tokio::task::spawn_blocking(move || {
            Command::new("curl")
                .args(["--silent", "--show-error", "--max-time", "20", "--proxytunnel", "--proxy", &proxy])
                .args(["--proxy-user", &user, &url])
                .output()
                .expect("curl runs")
        })
    };
    // An account reaches only platforms it has credentials at: beta has none at site-b yet,
    // and no decision is stored for its refusal.
    let decisions_before = mesh.ctl().recent_decisions(1000).await.expect("decisions").len();
    let out = curl("beta:beta-secret-0123456789".to_owned()).await.expect("curl task");
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"), "{}", String::from_utf8_lossy(&out.stderr));
    let answer = raw_connect(proxy, "site-b:web", "Basic YmV0YTpiZXRhLXNlY3JldC0wMTIzNDU2Nzg5").await;
    assert!(
        answer.starts_with("HTTP/1.1 403")
            && answer.contains("account `beta` has no credentials at `site-b`"),
        "{answer}"
    );
    assert_eq!(mesh.ctl().recent_decisions(1000).await.expect("decisions").len(), decisions_before);
    let beta_mapping = r#"{"principal": "AKIABETA", "secret": "beta-target-secret"}"#;
    let (status, body) = mesh.api("PUT", "/v1/accounts/beta/credentials/site-b", Some(beta_mapping)).await;
    assert_eq!(status, 200, "{body}");
    for user in ["acme:acme-secret-0123456789", "beta:beta-secret-0123456789"] {
        let out = curl(user.to_owned()).await.expect("curl task");
        assert!(out.status.success(), "{user}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    }
    for user in ["acme:beta-secret-0123456789", "nobody:acme-secret-0123456789"] {
        let out = curl(user.to_owned()).await.expect("curl task");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("407"),
            "{user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // An account asking for a platform it has no credentials at learns only that, not the
    // mesh's inside (the platforms there are): the operator and the log get the detail.
    let acme = "Basic YWNtZTphY21lLXNlY3JldC0wMTIzNDU2Nzg5"; // acme:acme-secret-0123456789
    let answer = raw_connect(proxy, "nowhere:80", acme).await;
    assert!(answer.starts_with("HTTP/1.1 403") && answer.contains("no credentials at `nowhere`"), "{answer}");
    assert!(!answer.contains("site-a") && !answer.contains("known platforms"), "{answer}");
    let (_, bindings) = mesh.api("GET", "/v1/bindings", None).await;
    let mut owners: Vec<(String, u64)> = bindings
        .as_array()
        .expect("bindings")
        .iter()
        .map(|b| {
            (
                b["tunnel"]["account"].as_str().expect("account").to_owned(),
                b["tunnel"]["id"].as_u64().expect("id"),
            )
        })
        .collect();
    owners.sort();
    assert_eq!(owners.len(), 2, "{bindings:#}");
    assert_eq!((owners[0].0.as_str(), owners[1].0.as_str()), ("acme", "beta"));
    assert_ne!(owners[0].1, owners[1].1, "separate tunnels");

    // Every use is recorded as its three sessions, with byte counts and the outcome.
    let (status, sessions) = mesh.api("GET", "/v1/sessions", None).await;
    assert_eq!(status, 200);
    let acme = sessions
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["account"] == json!("acme"))
        .unwrap_or_else(|| panic!("no session for acme: {sessions:#}"));
    assert_eq!(acme["second"]["hops"], json!(["r1", "r2", "site-b"]), "{acme:#}");
    assert_eq!(acme["third"]["platform"], json!("site-b"));
    assert_eq!(acme["third"]["principal"], json!("AKIAACME"));
    assert!(acme["bytes_down"].as_u64().expect("bytes") > 0, "{acme:#}");
    assert!(acme["first"]["client"].as_str().expect("client").starts_with("127.0.0.1:"));
    mesh.wait_until("the sessions ended", Duration::from_secs(5), |c| {
        c.sessions().iter().all(|s| s.outcome.is_some())
    })
    .await;
    let beta = mesh.ctl().sessions().into_iter().find(|s| s.account == "beta").expect("beta's session");
    assert_eq!(
        (beta.third.principal.as_deref(), beta.outcome.as_deref()),
        (Some("AKIABETA"), Some("closed"))
    );
    assert!(!serde_json::to_string(&mesh.ctl().sessions()).expect("json").contains("secret"));

    let (status, _) = mesh.api("DELETE", "/v1/accounts/beta", None).await;
    assert_eq!(status, 200);
    let out = curl("beta:beta-secret-0123456789".to_owned()).await.expect("curl task");
    assert!(String::from_utf8_lossy(&out.stderr).contains("407"), "a deleted account is refused");
}

/// The target site's authorizer decides every account's CONNECT and binding to an endpoint
/// (finding 5); a refusal is a 403 with its reason, audited at the site, with no decision
/// stored; and one account's failing CONNECTs never queue another account's (finding 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_target_sites_authorizer_decides_every_connect_and_one_accounts_failures_queue_no_other() {
    let files = tempfile::tempdir().expect("tempdir");
    std::fs::write(files.path().join("hello.txt"), "hello\n").expect("write");
    let web = HttpServer::start(files.path());
    let only_acme = skybridge_gateway::config::PluginFile {
        path: skybridge_tests::plugin("allowlist-authorizer"),
        config: [("allow.acme".to_owned(), "acme site-b endpoint/*".to_owned())].into(),
        limits: Default::default(),
    };
    let topology = two_relays(web.addr, Some(echo_service().await))
        .ingress_platform("site-a")
        .authorizer("site-b", only_acme);
    let mesh = TestMesh::start(topology).await;
    let proxy = mesh.controller.connect_addr().expect("the CONNECT proxy runs");
    let mapping = r#"{"principal": "P", "secret": "target-secret-xyz"}"#;
    for id in ["acme", "beta"] {
        let account = json!({"id": id, "secret": format!("{id}-secret-0123456789")}).to_string();
        assert_eq!(mesh.api("POST", "/v1/accounts", Some(&account)).await.0, 201);
        let path = format!("/v1/accounts/{id}/credentials/site-b");
        assert_eq!(mesh.api("PUT", &path, Some(mapping)).await.0, 200);
    }
    let basic = |id: &str| match id {
        "acme" => "Basic YWNtZTphY21lLXNlY3JldC0wMTIzNDU2Nzg5".to_owned(),
        _ => "Basic YmV0YTpiZXRhLXNlY3JldC0wMTIzNDU2Nzg5".to_owned(),
    };
    let decisions = || async { mesh.ctl().recent_decisions(10_000).await.expect("decisions").len() };

    // acme is granted; beta — mapped at site-b, but not in the site's rules — is refused with
    // the authorizer's reason, and nothing of the attempt is kept.
    let answer = raw_connect(proxy, "site-b:web", &basic("acme")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let before = decisions().await;
    let answer = raw_connect(proxy, "site-b:web", &basic("beta")).await;
    assert!(answer.starts_with("HTTP/1.1 403") && answer.contains("site-b refused site-b:web"), "{answer}");
    assert!(!answer.contains("r1") && !answer.contains("r2"), "no relay named to an account: {answer}");
    assert_eq!(decisions().await, before, "a refused attempt stores no decision");
    // The operator's own bindings are asked about too.
    let request = json!({"to": "site-b", "endpoint": "web"}).to_string();
    let (status, body) = mesh.api("POST", "/v1/bindings", Some(&request)).await;
    assert_eq!(status, 403, "{body}");
    // The site audited each decision, naming the account and the endpoint.
    let audit = std::fs::read_to_string(mesh.state.path().join("site-b-audit.jsonl")).expect("audit");
    let lines: Vec<Value> = audit.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    let tunnel_lines: Vec<(&str, &str, bool)> = lines
        .iter()
        .filter(|l| l["tunnel"].is_u64())
        .map(|l| {
            let granted = l["consent"]["decision"] == json!("grant");
            (l["account"].as_str().expect("account"), l["capability"].as_str().expect("capability"), granted)
        })
        .collect();
    assert_eq!(
        tunnel_lines,
        [
            ("acme", "endpoint/web", true),
            ("beta", "endpoint/web", false),
            ("operator", "endpoint/web", false)
        ],
        "{audit}"
    );

    // beta loops failing CONNECTs (an endpoint site-b does not publish), 24 at once: each is a
    // round of work (a decision, a refused setup), and they wait for each other. acme's
    // CONNECT to a new target, asked after them, waits for none of them.
    let failing: Vec<_> = (0..24)
        .map(|_| {
            let auth = basic("beta");
            tokio::spawn(async move { raw_connect(proxy, "site-b:nothing", &auth).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let acme = raw_connect(proxy, "site-b:echo", &basic("acme")).await;
    assert!(acme.starts_with("HTTP/1.1 200"), "{acme}");
    let still_failing = failing.iter().filter(|t| !t.is_finished()).count();
    assert!(still_failing > 0, "acme's CONNECT waited for all of beta's failures");
    for task in failing {
        let answer = task.await.expect("task");
        assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    }
    assert_eq!(decisions().await, before + 1, "failed attempts store no decisions; acme's binding one");
}

/// Guessing passwords is throttled per source address and per account, on CONNECT and the
/// admin API alike (finding 8): past the allowance the answer is 429 with Retry-After, even
/// to the right secret, while other sources and accounts go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guessing_is_throttled_per_source_and_per_account() {
    let files = tempfile::tempdir().expect("tempdir");
    let web = HttpServer::start(files.path());
    let mesh = TestMesh::start(two_relays(web.addr, None).ingress_platform("site-a")).await;
    let proxy = mesh.controller.connect_addr().expect("the CONNECT proxy runs");
    let account = r#"{"id": "acme", "secret": "acme-secret-0123456789"}"#;
    assert_eq!(mesh.api("POST", "/v1/accounts", Some(account)).await.0, 201);
    let mapping = r#"{"principal": "P", "secret": "target-secret-xyz"}"#;
    assert_eq!(mesh.api("PUT", "/v1/accounts/acme/credentials/site-b", Some(mapping)).await.0, 200);
    let right = "Basic YWNtZTphY21lLXNlY3JldC0wMTIzNDU2Nzg5"; // acme:acme-secret-0123456789
    let wrong = "Basic YWNtZTp3cm9uZw=="; // acme:wrong
    let connect = |source: [u8; 4], auth: &str| {
        let request =
            format!("CONNECT site-b:web HTTP/1.1\r\nHost: site-b:web\r\nProxy-Authorization: {auth}\r\n\r\n");
        async move { exchange_from(source, proxy, &request).await }
    };
    let status = |answer: &str| answer.get(9..12).unwrap_or_default().to_owned();

    // One source: its allowance of wrong guesses is answered 407; past it, even the right
    // secret gets 429 and is not looked at.
    for n in 0..=10 {
        assert_eq!(status(&connect([127, 0, 0, 2], wrong).await), "407", "guess {n}");
    }
    let blocked = connect([127, 0, 0, 2], right).await;
    assert_eq!(status(&blocked), "429", "{blocked}");
    assert!(blocked.contains("Retry-After: "), "{blocked}");
    // Another source is not blocked.
    assert_eq!(status(&connect([127, 0, 0, 3], right).await), "200");

    // The account, guessed from many sources (never more than the source allowance from one),
    // is blocked wherever the next try comes from; another account is not.
    for n in 0..10u8 {
        assert_eq!(status(&connect([127, 0, 1, n], wrong).await), "407");
    }
    assert_eq!(status(&connect([127, 0, 0, 3], right).await), "429", "the account is blocked");
    let beta = "Basic YmV0YTpiZXRhLXNlY3JldC0wMTIzNDU2Nzg5";
    assert_eq!(status(&connect([127, 0, 0, 3], beta).await), "407", "another account is checked");

    // The admin API: wrong tokens from one source, then even the right one is throttled
    // there, and only there.
    let admin = mesh.controller.admin_addr();
    let get = |token: &str| {
        format!(
            "GET /v1/nodes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
    };
    for _ in 0..=10 {
        assert_eq!(status(&exchange_from([127, 0, 0, 9], admin, &get("wrong")).await), "401");
    }
    let blocked = exchange_from([127, 0, 0, 9], admin, &get(&mesh.token)).await;
    assert_eq!(status(&blocked), "429", "{blocked}");
    assert!(blocked.to_lowercase().contains("retry-after: "), "{blocked}");
    let (code, counted) = mesh.api("GET", "/v1/auth-failures", None).await;
    assert_eq!(code, 200, "the operator's own address is not blocked");
    assert!(counted["failures"].as_u64().expect("failures") >= 33, "{counted}");
    assert!(counted["throttled"].as_u64().expect("throttled") >= 3, "{counted}");
}

/// Send `request` on a new connection to `to`; the answer's head as far as it came within
/// `wait` (empty if nothing did), and the connection.
async fn answer_within(to: SocketAddr, request: &[u8], wait: Duration) -> (String, tokio::net::TcpStream) {
    let mut client = tokio::net::TcpStream::connect(to).await.expect("connect");
    client.write_all(request).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, client.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), client)
}

/// An `http` binding never reads a stranger's body (HTTP Basic is checked from the head), and
/// bodies it does read are reserved in a budget first: past it a request waits, then gets 503;
/// a declared body over the limit gets 413 before a byte of it is read (finding 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_binding_reads_no_strangers_body_and_buffers_bodies_within_its_budget() {
    let files = tempfile::tempdir().expect("tempdir");
    let web = HttpServer::start(files.path());
    let ingress = skybridge_gateway::config::IngressConfig {
        max_http_body_mib: 1,
        max_buffered_per_binding_mib: 1,
        max_buffered_mib: 1,
        ..Default::default()
    };
    let topology =
        two_relays(web.addr, None).adapter("site-b", skybridge_tests::plugin("aws-adapter")).ingress(ingress);
    let mesh = TestMesh::start(topology).await;
    let (status, binding) = bind(&mesh, "web", json!({ "mode": "http" })).await;
    assert_eq!(status, 201, "{binding}");
    let listen: SocketAddr = binding["listen"].as_str().expect("listen").parse().expect("addr");
    let wait = Duration::from_secs(5);

    // A stranger declaring a 1,000,000-byte body and sending none of it: refused at once.
    let stranger = b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n";
    let (answer, _) = answer_within(listen, stranger, wait).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "answered before its body: {answer:?}");
    let wrong = b"PUT /x HTTP/1.1\r\nHost: h\r\nAuthorization: Basic YWNtZTp3cm9uZw==\r\nContent-Length: 1000000\r\n\r\n";
    let (answer, _) = answer_within(listen, wrong, wait).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "a wrong password, before its body: {answer:?}");
    // Over the limit by its declared length: 413 before any body byte.
    let huge = b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2000000\r\nAuthorization: AWS4-HMAC-SHA256 Credential=acme/20261204/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\r\n\r\n";
    let (answer, _) = answer_within(listen, huge, wait).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");

    // A signed request's body is needed for its proof: it is reserved first. One that holds
    // the whole budget (sending its body slowly) makes the next wait, then get 503.
    let signed = b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\nAuthorization: AWS4-HMAC-SHA256 Credential=acme/20261204/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\r\n\r\n";
    let (nothing, _holding) = answer_within(listen, signed, Duration::from_millis(500)).await;
    assert_eq!(nothing, "", "the first waits for its body");
    let (answer, _) = answer_within(listen, signed, Duration::from_secs(20)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer:?}");
    assert!(answer.contains("busy"), "{answer:?}");
}

/// Past `max_client_connections` new clients are closed at once, while the admin API keeps
/// answering and a freed place is taken again (finding 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_client_connection_cap_new_clients_are_closed_and_the_admin_api_answers() {
    let files = tempfile::tempdir().expect("tempdir");
    std::fs::write(files.path().join("hello.txt"), "hello\n").expect("write");
    let web = HttpServer::start(files.path());
    let ingress =
        skybridge_gateway::config::IngressConfig { max_client_connections: 4, ..Default::default() };
    let mesh = TestMesh::start(two_relays(web.addr, None).ingress(ingress)).await;
    let (status, binding) = bind(&mesh, "web", json!({})).await;
    assert_eq!(status, 201, "{binding}");
    let listen: SocketAddr = binding["listen"].as_str().expect("listen").parse().expect("addr");
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(listen).await.expect("connect"));
    }
    let id = binding["id"].as_u64().expect("id");
    mesh.wait_until("four clients carried", Duration::from_secs(10), |c| {
        c.bindings().get(id).is_some_and(|b| b.connections == 4)
    })
    .await;
    let mut fifth = tokio::net::TcpStream::connect(listen).await.expect("the kernel accepts");
    let mut buf = [0u8; 16];
    let ended = tokio::time::timeout(Duration::from_secs(5), fifth.read(&mut buf)).await;
    assert!(matches!(ended, Ok(Ok(0)) | Ok(Err(_))), "the fifth client is closed at once: {ended:?}");
    let (status, _) = mesh.api("GET", "/v1/nodes", None).await;
    assert_eq!(status, 200, "the admin API answers");

    drop(held.pop());
    let get = b"GET /hello.txt HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n";
    let mut answer = String::new();
    for _ in 0..50 {
        let (got, _) = answer_within(listen, get, Duration::from_secs(5)).await;
        answer = got;
        if answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answer.contains(" 200 "), "a freed place is taken again: {answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_degrading_past_the_policy_threshold_reroutes_the_binding() {
    let stream_service = sequence_service().await;
    let mesh = TestMesh::start(stream_diamond(stream_service)).await;
    let (status, binding) = bind(&mesh, "stream", json!({})).await;
    assert_eq!(status, 201, "{binding:#}");
    assert_eq!(binding["tunnel"]["hops"], json!(["r1", "r3", "r4", "site-b"]));
    let id = binding["id"].as_u64().expect("id");

    // r1–r3 starts losing 30 % each way (about half the probes' round trips), well past the
    // default re-route threshold of 20 %: the binding moves to the clean path.
    mesh.set_link("r1", "r3", LinkParams { loss: 0.3, ..LinkParams::delay(2.0) });
    mesh.wait_until("the binding re-routed off the lossy link", Duration::from_secs(10), |c| {
        c.bindings().get(id).is_some_and(|b| !b.reroutes.is_empty())
    })
    .await;
    let view = mesh.ctl().bindings().get(id).expect("binding");
    assert_eq!(view.tunnel.hops, ["r1", "r2", "r4", "site-b"]);
    assert!(view.reroutes[0].reason.contains("link r1–r3 loses"), "{:?}", view.reroutes);

    // The old path heals: the binding stays where it is (no flapping back).
    mesh.set_link("r1", "r3", LinkParams::delay(2.0));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let view = mesh.ctl().bindings().get(id).expect("binding");
    assert_eq!(view.reroutes.len(), 1, "{:?}", view.reroutes);
    let listen = view.listen;
    let mut client = tokio::net::TcpStream::connect(listen).await.expect("connect");
    let mut data = vec![0u8; 100_000];
    tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut data))
        .await
        .expect("data")
        .expect("read");
}

/// An HTTP/1.1 service that answers every request with its own head (request line and
/// headers, as received), so a test sees exactly what the proxy forwarded.
async fn echo_head_service() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read_exact(&mut byte).await.is_ok() {
                    head.push(byte[0]);
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    head.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.write_all(&head).await;
            });
        }
    });
    addr
}

/// An `http` binding with an adapter that does not authenticate clients natively: clients
/// use HTTP Basic with their account, over HTTP/1.1 or HTTP/2; the Skybridge credentials never
/// reach the target, the adapter's do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_binding_speaks_http1_and_h2_and_forwards_only_the_target_credentials() {
    let echo = echo_head_service().await;
    let topology = two_relays(echo, None)
        .adapter("site-b", skybridge_tests::test_plugin("plain-adapter"))
        .ingress_limits(2, 1024);
    let mesh = TestMesh::start(topology).await;
    for (id, secret) in [("acme", "acme-secret-0123456789"), ("beta", "beta-secret-0123456789")] {
        let (status, body) =
            mesh.api("POST", "/v1/accounts", Some(&json!({"id": id, "secret": secret}).to_string())).await;
        assert_eq!(status, 201, "{body}");
    }
    let mapping = r#"{"principal": "target-token-acme", "secret": "unused"}"#;
    let (status, body) = mesh.api("PUT", "/v1/accounts/acme/credentials/site-b", Some(mapping)).await;
    assert_eq!(status, 200, "{body}");

    // A tcp binding cannot be reserved for an account, and http needs an adapter.
    let (status, body) = bind(&mesh, "web", json!({ "account": "acme" })).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = bind(&mesh, "web", json!({ "mode": "http", "to": "site-a" })).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("no adapter"), "{body}");
    let (status, binding) = bind(&mesh, "web", json!({ "mode": "http" })).await;
    assert_eq!(status, 201, "{binding}");
    let url = format!("http://{}/some/path?x=1", binding["listen"].as_str().expect("listen"));

    let curl = |args: Vec<&'static str>, user: Option<&'static str>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new("curl");
            cmd.args(["--silent", "--show-error", "--max-time", "20", "-i"]).args(args);
            if let Some(user) = user {
                cmd.args(["--user", user]);
            }
            let out = cmd.arg(&url).output().expect("curl runs");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    for version in [vec!["--http1.1"], vec!["--http2-prior-knowledge"]] {
        let answer = curl(version.clone(), Some("acme:acme-secret-0123456789")).await.expect("curl");
        assert!(
            answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/2 200"),
            "{version:?}: {answer}"
        );
        assert!(answer.contains("GET /some/path?x=1 HTTP/1.1"), "{answer}");
        let forwarded = answer.to_ascii_lowercase();
        assert!(forwarded.contains("authorization: bearer target-token-acme"), "{answer}");
        assert!(
            !forwarded.contains("basic ") && !answer.contains("acme-secret"),
            "Skybridge credentials leaked: {answer}"
        );
        assert!(forwarded.contains("\r\nhost: "), "a Host header reaches the target: {answer}");
    }
    // No mapping at the target, a wrong secret, no credentials at all.
    let answer = curl(vec![], Some("beta:beta-secret-0123456789")).await.expect("curl");
    assert!(
        answer.starts_with("HTTP/1.1 403") && answer.contains("no credentials at platform site-b"),
        "{answer}"
    );
    let answer = curl(vec![], Some("acme:wrong")).await.expect("curl");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let answer = curl(vec![], None).await.expect("curl");
    assert!(
        answer.starts_with("HTTP/1.1 401") && answer.to_ascii_lowercase().contains("www-authenticate: basic"),
        "{answer}"
    );

    let (_, sessions) = mesh.api("GET", "/v1/sessions", None).await;
    let outcomes: Vec<&Value> =
        sessions.as_array().expect("sessions").iter().map(|s| &s["outcome"]).collect();
    assert_eq!(
        outcomes,
        vec![&json!("HTTP 200"), &json!("HTTP 200")],
        "only forwarded requests are sessions"
    );

    // A keep-alive connection left idle is closed after the ingress's idle timeout (2 s here).
    let listen = binding["listen"].as_str().expect("listen");
    let mut idle = tokio::net::TcpStream::connect(listen).await.expect("connect");
    let basic = "YWNtZTphY21lLXNlY3JldC0wMTIzNDU2Nzg5"; // acme:acme-secret-0123456789
    let request = format!("GET / HTTP/1.1\r\nHost: {listen}\r\nAuthorization: Basic {basic}\r\n\r\n");
    idle.write_all(request.as_bytes()).await.expect("send");
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(15), idle.read_to_end(&mut got)).await;
    assert!(closed.is_ok(), "the idle keep-alive connection was not closed");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
}

/// A client that connects to an `http` binding and sends nothing is let go after the first-byte
/// deadline, not held until the (much longer) idle timeout; a client that speaks is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_binding_lets_go_of_a_client_that_sends_nothing() {
    let echo = echo_head_service().await;
    let topology = two_relays(echo, None)
        .adapter("site-b", skybridge_tests::test_plugin("plain-adapter"))
        .ingress_limits(300, 1024)
        .first_byte_timeout(1);
    let mesh = TestMesh::start(topology).await;
    let (status, binding) = bind(&mesh, "web", json!({ "mode": "http" })).await;
    assert_eq!(status, 201, "{binding}");
    let listen = binding["listen"].as_str().expect("listen").to_owned();
    let mut silent = tokio::net::TcpStream::connect(&listen).await.expect("connect");
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(15), silent.read_to_end(&mut got)).await;
    assert!(closed.is_ok(), "a silent client is still held (the idle timeout is 300 s)");
    assert!(got.is_empty(), "nothing is said to it: {}", String::from_utf8_lossy(&got));
    // One that speaks at once is answered (401: it brings no account).
    let mut speaking = tokio::net::TcpStream::connect(&listen).await.expect("connect");
    speaking.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.expect("send");
    let mut answer = String::new();
    speaking.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}

/// A service that echoes every byte back.
async fn echo_service() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Many connections open at once through one binding each get their own stream on every
/// hop's single QUIC connection — more than QUIC's default stream limit (100).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_concurrent_connections_share_one_quic_connection_per_hop() {
    let echo = echo_service().await;
    let mesh = TestMesh::start(two_relays(echo, None)).await;
    let (status, binding) = bind(&mesh, "web", json!({})).await;
    assert_eq!(status, 201, "{binding}");
    let listen: SocketAddr = binding["listen"].as_str().expect("listen").parse().expect("addr");

    const N: usize = 300;
    let mut clients = Vec::with_capacity(N);
    for i in 0..N {
        let mut c = tokio::net::TcpStream::connect(listen).await.expect("connect");
        c.write_all(format!("hello {i:04}\n").as_bytes()).await.expect("write");
        clients.push(c);
    }
    // Every connection is open now; each must be carried end to end.
    for (i, c) in clients.iter_mut().enumerate() {
        let mut got = [0u8; 11];
        tokio::time::timeout(Duration::from_secs(20), c.read_exact(&mut got))
            .await
            .unwrap_or_else(|_| panic!("connection {i} of {N} open at once was not carried"))
            .expect("read");
        assert_eq!(&got, format!("hello {i:04}\n").as_bytes());
    }
    let (_, view) = mesh.api("GET", &format!("/v1/bindings/{}", binding["id"]), None).await;
    assert_eq!(view["connections"], json!(N), "{view}");
}

/// One sample of the controller's metrics, by its exact name and labels (0 when absent).
async fn sample(mesh: &TestMesh, series: &str) -> f64 {
    let text = mesh.controller.controller().metrics().await;
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}

/// Wait (at most 10 s) until a metric sample reaches `wanted`.
async fn wait_for_sample(mesh: &TestMesh, series: &str, wanted: impl Fn(f64) -> bool) -> f64 {
    let start = std::time::Instant::now();
    loop {
        let value = sample(mesh, series).await;
        if wanted(value) {
            return value;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{series} stayed at {value}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Send a line and read it back through the echo service.
async fn echo_line(c: &mut tokio::net::TcpStream, line: &str) {
    c.write_all(line.as_bytes()).await.expect("write");
    let mut got = vec![0u8; line.len()];
    tokio::time::timeout(Duration::from_secs(10), c.read_exact(&mut got))
        .await
        .unwrap_or_else(|_| panic!("{line:?} did not come back"))
        .expect("read");
    assert_eq!(got, line.as_bytes());
}

/// After `renew_after_streams` clients a binding's end-to-end connection is renewed: later
/// clients are carried by a fresh one, a client still on the old one carries on, and the old
/// one closes when that client leaves (and not before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bindings_end_to_end_connection_is_renewed_and_the_old_one_closes_after_its_last_client() {
    let echo = echo_service().await;
    let ingress = skybridge_gateway::config::IngressConfig { renew_after_streams: 3, ..Default::default() };
    let mesh = TestMesh::start(two_relays(echo, None).ingress(ingress)).await;
    let (status, binding) = bind(&mesh, "web", json!({})).await;
    assert_eq!(status, 201, "{binding}");
    let listen: SocketAddr = binding["listen"].as_str().expect("listen").parse().expect("addr");
    const OPEN: &str = "skybridge_end_to_end_connections";
    const RENEWED: &str = "skybridge_end_to_end_connections_total{cause=\"renewal\"}";

    // A client that stays, on the binding's first connection.
    let mut stays = tokio::net::TcpStream::connect(listen).await.expect("connect");
    echo_line(&mut stays, "stays 1\n").await;
    assert_eq!(sample(&mesh, RENEWED).await, 0.0, "renewed before renew_after_streams clients");
    // Clients that come and go, past the renewal point.
    for i in 0..6 {
        let mut c = tokio::net::TcpStream::connect(listen).await.expect("connect");
        echo_line(&mut c, &format!("brief {i}\n")).await;
    }
    wait_for_sample(&mesh, RENEWED, |n| n >= 1.0).await;
    // Clients after the renewal are carried.
    for i in 0..2 {
        let mut c = tokio::net::TcpStream::connect(listen).await.expect("connect");
        echo_line(&mut c, &format!("after {i}\n")).await;
    }
    // The old connection is still open for the client that stayed, and still carries it.
    wait_for_sample(&mesh, OPEN, |n| n == 2.0).await;
    echo_line(&mut stays, "stays 2\n").await;
    // Once it leaves, the old connection closes; the binding goes on with the new one.
    drop(stays);
    wait_for_sample(&mesh, OPEN, |n| n == 1.0).await;
    let mut c = tokio::net::TcpStream::connect(listen).await.expect("connect");
    echo_line(&mut c, "last\n").await;
    let first = sample(&mesh, "skybridge_end_to_end_connections_total{cause=\"first\"}").await;
    let replaced = sample(&mesh, "skybridge_end_to_end_connections_total{cause=\"replacement\"}").await;
    assert_eq!((first, replaced), (1.0, 0.0), "renewals are the only new connections");
}

/// A controller shuts down completely: its admin API, its bindings' listeners (and a client
/// connection still open on one) and its store all go, and it starts again in the same process
/// on the same store file and addresses, with its accounts, its runtime policy and its
/// bindings (same id, same port, a new tunnel) back (finding 9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_shuts_down_completely_and_starts_again_on_its_store() {
    let echo = counting_service().await;
    let mut mesh = TestMesh::start(two_relays(echo, Some(echo))).await;
    let (status, account) =
        mesh.api("POST", "/v1/accounts", Some(r#"{"id": "acme-ops", "secret": "0123456789abcdef"}"#)).await;
    assert_eq!(status, 201, "{account}");
    let (status, binding) = bind(&mesh, "echo", json!({})).await;
    assert_eq!(status, 201, "{binding:#}");
    let listen = binding["listen"].as_str().expect("listen").to_owned();
    assert_eq!(send_and_half_close(&listen, b"hello").await, "got 5 bytes");
    // A second binding, closed before the restart: it must not come back.
    let (_, closed) = bind(&mesh, "echo", json!({})).await;
    assert_eq!(mesh.api("DELETE", &format!("/v1/bindings/{}", closed["id"]), None).await.0, 200);
    // A policy changed at runtime.
    let (status, policy) =
        mesh.api("PUT", "/v1/policy", Some(r#"{"k": 2, "weights": {"latency": 3.0}}"#)).await;
    assert_eq!(status, 200, "{policy}");
    // A client still connected when the controller stops.
    let mut open = tokio::net::TcpStream::connect(&listen).await.expect("connect");
    open.write_all(b"pending").await.expect("write");
    let admin = mesh.controller.admin_addr();

    tokio::time::timeout(Duration::from_secs(10), mesh.restart_controller())
        .await
        .expect("the shutdown drains within 10 s")
        .expect("the controller starts again on its store");

    // The open client was ended with the old controller.
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), open.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the open client was not let go");
    // The same addresses, the same store: the account and the runtime policy survived.
    assert_eq!(mesh.controller.admin_addr(), admin);
    let (status, again) = mesh.api("GET", "/v1/accounts/acme-ops", None).await;
    assert_eq!((status, again["id"].clone()), (200, json!("acme-ops")), "{again}");
    let (_, policy) = mesh.api("GET", "/v1/policy", None).await;
    assert_eq!(
        (policy["k"].clone(), policy["weights"]["latency"].clone()),
        (json!(2), json!(3.0)),
        "{policy}"
    );
    // The binding is back on the same port with the same id, its tunnel set up again once
    // the nodes re-registered; the closed one stays closed.
    let id = binding["id"].as_u64().expect("id");
    mesh.wait_until("the binding restored", Duration::from_secs(20), |c| c.bindings().get(id).is_some())
        .await;
    let (status, bindings) = mesh.api("GET", "/v1/bindings", None).await;
    assert_eq!(status, 200);
    let listed: Vec<(u64, String)> = bindings
        .as_array()
        .expect("bindings")
        .iter()
        .map(|b| (b["id"].as_u64().expect("id"), b["listen"].as_str().expect("listen").to_owned()))
        .collect();
    assert_eq!(listed, [(id, listen.clone())], "{bindings:#}");
    assert_eq!(send_and_half_close(&listen, b"hello again").await, "got 11 bytes");
    // New bindings get ids above the kept ones.
    let (status, newer) = bind(&mesh, "echo", json!({})).await;
    assert_eq!(status, 201, "{newer}");
    assert!(newer["id"].as_u64().expect("id") > id, "{newer}");
}
