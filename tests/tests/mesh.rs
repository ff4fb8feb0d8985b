//! Whole meshes on loopback: a controller, relays and sites as real nodes (QUIC, mutual TLS,
//! redb, wasm scorer plugins), the WAN emulated in user space on every link.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skybridge_gateway::mesh::frame::{DEFAULT_MAX_FRAME, encode};
use skybridge_gateway::mesh::identity::Role;
use skybridge_gateway::mesh::membership::NodeState;
use skybridge_gateway::mesh::messages::Control;
use skybridge_gateway::mesh::stream::Framed;
use skybridge_gateway::mesh::transport::MeshEndpoint;
use skybridge_gateway::node::config::{Peer, RelayConfig};
use skybridge_gateway::node::relay::Relay;
use skybridge_gateway::session::tokens::CachedToken;
use skybridge_gateway::testkit::netem::LinkParams;
use skybridge_tests::mesh::{Pki, TestMesh, Topology, candidate, chosen_path, fast_probing, http, policy};

fn delay(ms: f64) -> LinkParams {
    LinkParams::delay(ms)
}

fn lossy(ms: f64, loss: f64) -> LinkParams {
    LinkParams { loss, ..LinkParams::delay(ms) }
}

fn rtt(c: &Value) -> f64 {
    c["measured"]["rtt_ms"].as_f64().unwrap_or_else(|| panic!("no RTT measured: {c:#}"))
}

/// Each crossing of an emulated link also crosses the user-space emulator (a timer wake-up)
/// and a node process. On the shared 2-core test machine that adds about 1 ms per crossing
/// (measured 0.9–1.7 ms on these meshes, with or without other load), on top of the emulated
/// delay, so the tolerance grows with the crossings as well as with the delay.
const OVERHEAD_PER_CROSSING_MS: f64 = 1.0;

/// The candidate's measured round trip is the emulated one: never much below it, and above
/// it by no more than 20 %, 2 ms and the per-crossing overhead.
fn assert_rtt_near(c: &Value, emulated: f64) {
    let measured = rtt(c);
    let links = c["path"].as_array().map_or(0, |p| p.len().saturating_sub(1));
    let crossings = 2.0 * links as f64; // out and back
    let slack = 0.2 * emulated + 2.0;
    assert!(
        measured >= emulated - slack && measured <= emulated + slack + OVERHEAD_PER_CROSSING_MS * crossings,
        "measured RTT {measured:.1} ms vs emulated {emulated} ms over {crossings} link crossings on {}",
        c["path"]
    );
}

/// Site A → R1 → {R2 | R3} → R4 → site B. R2's links are slow and clean (15 ms each way), R3's
/// fast and lossy (3 ms, 5 % loss each way, so 1 − 0.95⁴ ≈ 18.5 % of round trips are lost).
fn diamond(weights: &[(&str, f64)]) -> Topology {
    // 600 probes per candidate: at 18.5 % loss one binomial standard deviation is 1.6 points,
    // so a 5-point tolerance (3.2 σ) checks accuracy without flaking.
    Topology::new(policy(weights, 4, 600))
        .relays(&["r1", "r2", "r3", "r4"])
        .link("r1", "r2", delay(15.0))
        .link("r2", "r4", delay(15.0))
        .link("r1", "r3", lossy(3.0, 0.05))
        .link("r3", "r4", lossy(3.0, 0.05))
        .site("site-a", &[("r1", delay(1.0))])
        .site("site-b", &[("r4", delay(1.0))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diamond_weights_pick_the_path_the_emulated_network_makes_best() {
    // Latency-heavy: 12 ms + 0.01 × 185 ‰ beats 60 ms.
    let mesh =
        TestMesh::start(diamond(&[("latency", 1.0), ("loss", 0.01), ("jitter", 0.0), ("hops", 0.0)])).await;
    let record = mesh.sites["site-a"].connect("site-b").await.expect("the site's connection request");
    let record = serde_json::to_value(&record).expect("record as JSON");
    assert_eq!((record["first_relay"].as_str(), record["second_relay"].as_str()), (Some("r1"), Some("r4")));
    assert_eq!(chosen_path(&record), ["r1", "r3", "r4"], "{record:#}");
    let (slow, fast) = (candidate(&record, &["r1", "r2", "r4"]), candidate(&record, &["r1", "r3", "r4"]));
    assert_rtt_near(slow, 60.0);
    assert_rtt_near(fast, 12.0);
    let expected_loss = 1.0 - 0.95f64.powi(4);
    let fast_loss = fast["measured"]["loss"].as_f64().expect("loss");
    assert!((fast_loss - expected_loss).abs() <= 0.05, "loss {fast_loss:.3} vs emulated {expected_loss:.3}");
    assert!(slow["measured"]["loss"].as_f64().expect("loss") <= 0.05, "{slow:#}");
    assert!(fast["explanation"].as_str().expect("explanation").contains("latency"), "{fast:#}");

    // The record is stored: the admin API returns it as decided.
    let id = record["id"].as_u64().expect("id");
    let (status, stored) = mesh.api("GET", &format!("/v1/connections/{id}"), None).await;
    assert_eq!((status, &stored), (200, &record));

    // Loss-heavy weights, changed at run time, apply to the next decision: the clean path wins.
    let (status, p) =
        mesh.api("PUT", "/v1/policy", Some(r#"{"weights": {"latency": 0.1, "loss": 1.0}}"#)).await;
    assert_eq!(status, 200, "{p}");
    let record = mesh.connect("site-a", "site-b").await;
    assert_eq!(chosen_path(&record), ["r1", "r2", "r4"], "{record:#}");
    assert_eq!(record["policy"]["weights"]["latency"], json!(0.1));
    assert_rtt_near(candidate(&record, &["r1", "r2", "r4"]), 60.0);
}

/// Two rails of four relays joined by rungs; site A sits at t1, site B at t4.
fn ladder() -> Topology {
    let mut t =
        Topology::new(policy(&[("latency", 1.0), ("loss", 1.0), ("jitter", 0.0), ("hops", 0.0)], 4, 50))
            .relays(&["t1", "t2", "t3", "t4", "b1", "b2", "b3", "b4"])
            .site("site-a", &[("t1", delay(1.0))])
            .site("site-b", &[("t4", delay(1.0))]);
    for (a, b) in [("t1", "t2"), ("t2", "t3"), ("t3", "t4")] {
        t = t.link(a, b, delay(5.0));
    }
    for (a, b) in [("b1", "b2"), ("b2", "b3"), ("b3", "b4")] {
        t = t.link(a, b, delay(6.0));
    }
    for (a, b) in [("t1", "b1"), ("t2", "b2"), ("t3", "b3"), ("t4", "b4")] {
        t = t.link(a, b, delay(2.0));
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ladder_reroutes_around_a_degraded_link_and_a_killed_relay() {
    let mut mesh = TestMesh::start(ladder()).await;
    let top = ["t1", "t2", "t3", "t4"];
    let record = mesh.connect("site-a", "site-b").await;
    assert_eq!(chosen_path(&record), top, "{record:#}");
    assert_rtt_near(candidate(&record, &top), 30.0);

    // t2–t3 degrades to 40 ms: once the relays' reports show it, the decision avoids it.
    mesh.set_link("t2", "t3", delay(40.0));
    mesh.wait_until("t2–t3 reported slow", Duration::from_secs(10), |c| {
        c.links().iter().any(|l| l.from == "t2" && l.to == "t3" && l.stats.rtt_ms.is_some_and(|r| r > 60.0))
    })
    .await;
    let record = mesh.connect("site-a", "site-b").await;
    let chosen = chosen_path(&record);
    assert!(!chosen.windows(2).any(|w| w == ["t2", "t3"]), "still crosses t2–t3: {record:#}");
    let winner =
        rtt(&record["decision"]["candidates"]
            [record["decision"]["winner"].as_u64().expect("winner") as usize]);
    // The detours measure about 40–44 ms, the degraded top rail about 100 ms; loaded CI
    // machines add a few ms of scheduling to every probe, so compare with the rail.
    assert!(winner < 80.0, "the detour should measure well under the degraded rail's 100 ms, got {winner}");
    assert!(chosen.contains(&"b3".to_owned()), "every detour crosses b3: {chosen:?}");

    // b3 dies: the controller marks it down, and the next decision has no candidate through it.
    mesh.kill_relay("b3");
    mesh.wait_until("b3 marked down", Duration::from_secs(5), |c| {
        c.nodes().iter().any(|n| n.name == "b3" && n.state == NodeState::Down)
    })
    .await;
    let record = mesh.connect("site-a", "site-b").await;
    for c in record["decision"]["candidates"].as_array().expect("candidates") {
        assert!(!skybridge_tests::mesh::path_of(c).contains(&"b3".to_owned()), "b3 is dead: {c:#}");
    }
    assert_eq!(chosen_path(&record), top, "only the slow top rail is left: {record:#}");

    // b3 comes back: marked up again, its links measured, and the detour is chosen again.
    mesh.restart_relay("b3").await;
    mesh.wait_until("b3 up with its links measured", Duration::from_secs(10), |c| {
        c.nodes().iter().any(|n| n.name == "b3" && n.state == NodeState::Up)
            && c.links()
                .iter()
                .filter(|l| (l.from == "b3" || l.to == "b3") && l.usable && l.stats.samples >= 10)
                .count()
                == 3
    })
    .await;
    let record = mesh.connect("site-a", "site-b").await;
    assert!(chosen_path(&record).contains(&"b3".to_owned()), "{record:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nearest_relay_follows_latency_and_does_not_flap_under_jitter() {
    let jittery = |ms: f64| LinkParams { jitter_ms: 1.0, ..LinkParams::delay(ms) };
    let mesh = TestMesh::start(
        Topology::new(policy(&[], 4, 20))
            .relays(&["r1", "r2"])
            .site("site-a", &[("r1", jittery(10.0)), ("r2", jittery(30.0))]),
    )
    .await;
    let nearest = |mesh: &TestMesh| mesh.ctl().platforms()[0].nearest_relay.clone();
    mesh.wait_until("r1 nearest", Duration::from_secs(5), |c| {
        c.platforms()[0].nearest_relay.as_deref() == Some("r1")
    })
    .await;

    // r2 comes within 1 ms of r1 (both ±1 ms jitter): never enough to switch.
    mesh.set_link("site-a", "r2", jittery(11.0));
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(nearest(&mesh).as_deref(), Some("r1"), "{:#?}", mesh.ctl().platforms());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // r2 becomes clearly nearer: the choice follows.
    mesh.set_link("site-a", "r2", jittery(2.0));
    mesh.wait_until("r2 nearest", Duration::from_secs(5), |c| {
        c.platforms()[0].nearest_relay.as_deref() == Some("r2")
    })
    .await;
    // Both become slower and r1 a little faster than r2 (38 vs 40 ms), by less than the
    // hysteresis (15 % of 40 ms = 6 ms): the choice holds. Long RTTs keep a loaded machine's
    // scheduling noise small next to the margin; r2 starts faster, so the change never
    // favours r1 by more than the final 2 ms.
    mesh.set_link("site-a", "r1", LinkParams::delay(19.0));
    mesh.set_link("site-a", "r2", LinkParams::delay(20.0));
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(nearest(&mesh).as_deref(), Some("r2"), "{:#?}", mesh.ctl().platforms());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// r1 reaches r3 directly but slowly, or fast through r2.
fn triangle() -> Topology {
    Topology::new(policy(&[], 4, 20))
        .relays(&["r1", "r2", "r3"])
        .link("r1", "r2", delay(2.0))
        .link("r2", "r3", delay(2.0))
        .link("r1", "r3", delay(20.0))
        .site("site-a", &[("r1", delay(1.0))])
        .site("site-b", &[("r3", delay(1.0))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_scorer_swapped_in_at_run_time_changes_the_decision() {
    let mesh = TestMesh::start(triangle()).await;
    let record = mesh.connect("site-a", "site-b").await;
    assert_eq!(chosen_path(&record), ["r1", "r2", "r3"], "{record:#}");

    let fewest_hops = skybridge_tests::test_plugin("fewest-hops-scorer");
    let body = json!({ "scorer": fewest_hops }).to_string();
    let (status, p) = mesh.api("PUT", "/v1/policy", Some(&body)).await;
    assert_eq!(status, 200, "{p}");
    let (_, p) = mesh.api("GET", "/v1/policy", None).await;
    assert_eq!(p["scorer"], json!(fewest_hops));
    let record = mesh.connect("site-a", "site-b").await;
    assert_eq!(chosen_path(&record), ["r1", "r3"], "{record:#}");
    assert!(record["decision"]["scorer"].as_str().expect("scorer").contains("fewest-hops"), "{record:#}");
    assert_eq!(candidate(&record, &["r1", "r3"])["explanation"], json!("1 hop"));
}

/// Without a token, the route table's `token` flag decides: every route that needs one refuses
/// (401, or 429 once the source has failed too often), and the few that hold no data answer —
/// even to a source that is being throttled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_only_the_routes_the_table_marks_public_answer() {
    use skybridge_gateway::admin::client::Method;
    use skybridge_gateway::admin::routes::routes;
    let mesh = TestMesh::start(triangle()).await;
    let (mut public, mut refused) = (0, 0);
    // The routes that need a token first, so that the public ones are asked while throttled.
    let mut all = routes();
    all.sort_by_key(|r| !r.token);
    for route in all {
        let path = route.path.replace("{id}", "999999").replace("{platform}", "nowhere");
        let method = Method::from_bytes(route.method.as_str().as_bytes()).expect("a method");
        let body = route.request.map(|_| b"{}".to_vec());
        let answer = mesh.client().exchange(method, &path, body, false).await.expect("answer");
        if route.token {
            assert!(
                matches!(answer.status, 401 | 429),
                "{} {path} without a token: {}",
                route.method,
                answer.status
            );
            refused += 1;
        } else {
            assert_eq!(answer.status, 200, "{} {path} without a token", route.method);
            public += 1;
        }
    }
    assert_eq!(public, 3, "/healthz, /ui and /v1/openapi.json");
    assert!(refused > 30, "{refused} routes need the token");
    let throttled = mesh.client().exchange(Method::GET, "/v1/nodes", None, false).await.expect("answer");
    assert_eq!(throttled.status, 429, "the source was throttled along the way");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_strangers_and_bad_requests_clearly() {
    let mesh = TestMesh::start(triangle()).await;
    let addr = mesh.controller.admin_addr();

    let (status, body) = http(addr, "GET", "/healthz", None, None).await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    for token in [None, Some("wrong-token-0123456789")] {
        for (method, path) in [("GET", "/v1/nodes"), ("GET", "/v1/policy"), ("POST", "/v1/connections")] {
            let (status, body) = http(addr, method, path, token, Some("{}")).await;
            assert_eq!(status, 401, "{method} {path} with {token:?}: {body}");
            assert_eq!(body["error"], json!("missing or wrong bearer token"));
        }
    }

    let (status, body) = mesh.api("GET", "/v1/nodes", None).await;
    assert_eq!(status, 200);
    assert_eq!(body.as_array().expect("nodes").len(), 5);
    let (status, body) = mesh.api("GET", "/v1/links", None).await;
    assert_eq!((status, body.as_array().expect("links").len()), (200, 3));
    let (status, body) = mesh.api("GET", "/v1/platforms", None).await;
    assert_eq!(status, 200);
    assert_eq!(body[0]["nearest_relay"], json!("r1"));

    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        (
            "POST",
            "/v1/connections",
            Some(r#"{"from": "site-a", "to": "nowhere"}"#),
            404,
            "unknown platform `nowhere` (known platforms: site-a, site-b)",
        ),
        ("POST", "/v1/connections", Some(r#"{"from": "r1", "to": "site-b"}"#), 404, "unknown platform `r1`"),
        (
            "POST",
            "/v1/connections",
            Some(r#"{"from": "site-a", "to": "site-a"}"#),
            409,
            "cannot connect to itself",
        ),
        ("POST", "/v1/connections", Some("{not json"), 400, "invalid JSON body"),
        (
            "POST",
            "/v1/connections",
            Some(r#"{"from": "a", "to": "b", "via": "c"}"#),
            400,
            "unknown field `via`",
        ),
        ("GET", "/v1/connections/999", None, 404, "no decision 999"),
        ("GET", "/v1/connections/abc", None, 400, "not a number"),
        ("DELETE", "/v1/nodes", None, 405, "DELETE is not allowed"),
        ("GET", "/v1/decisions/999", None, 404, "no decision 999"),
        ("GET", "/v1/decisions/abc", None, 400, "decision id `abc` is not a number"),
        ("PATCH", "/v1/bindings/1", None, 405, "PATCH is not allowed on /v1/bindings/1"),
        ("PUT", "/v1/bindings", None, 405, "PUT is not allowed"),
        ("POST", "/v1/sessions", None, 405, "POST is not allowed"),
        ("PUT", "/v1/accounts", None, 405, "PUT is not allowed"),
        ("POST", "/v1/accounts/acme", None, 405, "POST is not allowed"),
        ("GET", "/v1/accounts/acme/credentials/aws", None, 405, "GET is not allowed"),
        ("DELETE", "/v1/plugins", None, 405, "DELETE is not allowed"),
        ("GET", "/v1/teleport", None, 404, "no such endpoint"),
        ("GET", "/v1/events?recent=101", None, 400, "recent must be 0 to 100"),
        ("PUT", "/v1/policy", Some(r#"{"k": 0}"#), 400, "k must be between 1 and 32"),
        ("PUT", "/v1/policy", Some(r#"{"weights": {"latency": 1e999}}"#), 400, "invalid JSON body"),
        ("PUT", "/v1/policy", Some(r#"{"scorer": "/nonexistent.wasm"}"#), 400, "cannot load the scorer"),
    ];
    for (method, path, body, want, message) in cases {
        let (status, answer) = mesh.api(method, path, *body).await;
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(status == *want && error.contains(message), "{method} {path} {body:?}: {status} {answer}");
    }
    // A 405 says what the path does serve.
    let method = skybridge_gateway::admin::client::Method::PATCH;
    let answer = mesh.client().exchange(method, "/v1/bindings/1", None, true).await.expect("answer");
    let allow = answer.headers.get("allow").and_then(|v| v.to_str().ok());
    assert_eq!((answer.status, allow), (405, Some("GET, DELETE")));
    // Every route the table (and so the OpenAPI document) lists is served: asked about a
    // record that does not exist, each answers — never "no such endpoint", never "listed but
    // not served". (Only JSON answers: the event stream never ends, and the dashboard and
    // the metrics have tests of their own.)
    use skybridge_gateway::admin::routes::{Answer, routes};
    for route in routes() {
        if matches!(route.answer, Answer::Other(media) if media != "application/json") {
            continue;
        }
        let path = route.path.replace("{id}", "999999").replace("{platform}", "nowhere");
        let body = route.request.map(|_| "{}");
        let (status, answer) = mesh.api(route.method.as_str(), &path, body).await;
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            status != 405 && !error.contains("no such endpoint") && !error.contains("not served"),
            "{} {path}: {status} {answer}",
            route.method
        );
    }

    // Reading an account is a read: the target tokens cached for it stay. Changing its
    // credentials drops them (they were obtained with the old ones).
    let (status, _) =
        mesh.api("POST", "/v1/accounts", Some(r#"{"id": "acme", "secret": "0123456789abcdef"}"#)).await;
    assert_eq!(status, 201);
    let token = CachedToken { value: "t".into(), expires_unix_s: u64::MAX / 2, fetched_unix_s: 0 };
    mesh.ctl().tokens().insert("site-b", "acme", token);
    let (status, _) = mesh.api("GET", "/v1/accounts/acme", None).await;
    assert_eq!(status, 200);
    assert!(mesh.ctl().tokens().fresh("site-b", "acme", 1).is_some(), "a GET evicted the account's tokens");
    let mapping = r#"{"principal": "p", "secret": "s"}"#;
    let (status, _) = mesh.api("PUT", "/v1/accounts/acme/credentials/site-b", Some(mapping)).await;
    assert_eq!(status, 200);
    assert!(mesh.ctl().tokens().fresh("site-b", "acme", 1).is_none(), "new credentials, old tokens kept");
    // An authorizer is not a scorer; a refused change leaves the policy as it was.
    let authorizer = skybridge_tests::plugin("allowlist-authorizer");
    let (status, answer) =
        mesh.api("PUT", "/v1/policy", Some(&json!({ "scorer": authorizer }).to_string())).await;
    assert_eq!(status, 400);
    assert!(answer["error"].as_str().unwrap_or_default().contains("not a scorer"), "{answer}");
    let (_, p) = mesh.api("GET", "/v1/policy", None).await;
    assert_eq!(p["scorer"], json!(skybridge_tests::plugin("weighted-scorer")));
    assert_eq!(p["k"], json!(4));
    // A body over the limit is refused without being read whole.
    let big = format!(r#"{{"from": "{}", "to": "b"}}"#, "a".repeat(100_000));
    let (status, _) = mesh.api("POST", "/v1/connections", Some(&big)).await;
    assert_eq!(status, 413);
    // A body that stops arriving is answered 408 (within the 10 s body timeout), not held.
    let mut stalled = tokio::net::TcpStream::connect(mesh.controller.admin_addr()).await.expect("connect");
    let head = format!(
        "PUT /v1/policy HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 100\r\n\r\n{{\"k\": ",
        mesh.token
    );
    tokio::io::AsyncWriteExt::write_all(&mut stalled, head.as_bytes()).await.expect("sent");
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::AsyncReadExt::read(&mut stalled, &mut answer),
    )
    .await
    .expect("an answer, not a stall")
    .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408") && answer.contains("did not arrive within 10 s"), "{answer}");
    // And the controller still works.
    mesh.connect("site-a", "site-b").await;
}

/// An endpoint with site `name`'s certificate from the mesh's CA, outside the mesh's nodes.
fn site_endpoint(mesh: &TestMesh, name: &str) -> MeshEndpoint {
    let identity =
        mesh.pki.tls(name, Role::Site).expect("certificate").load(name, Role::Site).expect("identity");
    MeshEndpoint::bind("127.0.0.1:0".parse().expect("address"), identity, &[]).expect("endpoint")
}

/// Register on `conn` as `name` in `role`; the controller's refusal.
async fn refused_registration(conn: &quinn::Connection, name: &str, role: Role) -> String {
    let mut stream = Framed::new(conn.open_bi().await.expect("stream"));
    stream.send(&Control::Register { name: name.into(), role, listen: None }).await.expect("sent");
    match stream.recv().await {
        Ok(Some(Control::Refused { reason, .. })) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_false_roles_and_bad_frames_are_refused_and_the_controller_carries_on() {
    let mesh = TestMesh::start(triangle()).await;
    let controller = Peer { name: "controller".into(), addr: mesh.controller.mesh_addr() };

    // A relay with a certificate from another CA never gets in.
    let foreign = Pki::new().expect("a second CA");
    let intruder = Relay::start(RelayConfig {
        name: "r9".into(),
        listen: "127.0.0.1:0".parse().expect("address"),
        tls: foreign.tls("r9", Role::Relay).expect("certificate"),
        controller: Some(controller.clone()),
        controllers: Vec::new(),
        probing: fast_probing(),
        neighbours: vec![],
        metrics_listen: None,
    })
    .expect("the intruder starts (its own files are consistent)");
    // A site's certificate cannot start a relay.
    let err = Relay::start(RelayConfig {
        name: "site-a".into(),
        listen: "127.0.0.1:0".parse().expect("address"),
        tls: mesh.pki.tls("site-a", Role::Site).expect("certificate"),
        controller: Some(controller.clone()),
        controllers: Vec::new(),
        probing: fast_probing(),
        neighbours: vec![],
        metrics_listen: None,
    })
    .err()
    .expect("refused");
    assert!(format!("{err:#}").contains("does not grant role `relay`"), "{err:#}");

    // A site that claims to be a relay at registration is refused, and cut off.
    let ep = site_endpoint(&mesh, "site-x");
    let conn = ep.connect(controller.addr, "controller", &[Role::Controller]).await.expect("handshake");
    let reason = refused_registration(&conn, "site-x", Role::Relay).await;
    assert!(reason.contains("does not match the certificate"), "{reason}");

    // Peers that start a handshake and go silent (each a real client's first flight, replayed
    // from a socket that never answers) hold up nobody: the next node still gets in at once,
    // not after their handshakes time out (5 s each, one after another, before).
    let trap = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("trap");
    let trap_addr = trap.local_addr().expect("addr");
    let mut silent = Vec::new();
    for i in 0..4 {
        let ep = site_endpoint(&mesh, &format!("site-s{i}"));
        let dialing = tokio::spawn(async move {
            ep.connect(trap_addr, "controller", &[Role::Controller]).await.map(|_| ())
        });
        let mut first_flight = vec![0u8; 65_536];
        let (n, _) = trap.recv_from(&mut first_flight).await.expect("a client's first datagram");
        dialing.abort();
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("socket");
        socket.send_to(&first_flight[..n], controller.addr).await.expect("replayed");
        silent.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Random bytes, and a frame announcing 4 GiB, on a fresh connection: each stream is
    // refused with the reason, the connection and the controller live on.
    let ep = site_endpoint(&mesh, "site-y");
    let conn = tokio::time::timeout(
        Duration::from_secs(4),
        ep.connect(controller.addr, "controller", &[Role::Controller]),
    )
    .await
    .expect("not queued behind the silent handshakes")
    .expect("handshake");
    drop(silent);
    let garbage: Vec<u8> = (0..200u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let oversized = [0xFF, 0xFF, 0xFF, 0xF0, 0, 1];
    let unknown = encode(&json!({"type": "teleport"}), DEFAULT_MAX_FRAME).expect("frame");
    // Whatever the random bytes happen to announce, they must be refused, not stall.
    for (bytes, why) in
        [(&garbage[..], ""), (&oversized[..], "exceeds the limit"), (&unknown[..], "teleport")]
    {
        let (mut send, recv) = conn.open_bi().await.expect("stream");
        send.write_all(bytes).await.expect("written");
        let mut stream = Framed::new((send, recv));
        match tokio::time::timeout(Duration::from_secs(5), stream.recv())
            .await
            .expect("an answer, not a stall")
        {
            Ok(Some(Control::Refused { reason, .. })) => assert!(reason.contains(why), "{why}: {reason}"),
            other => panic!("{why}: expected a refusal, got {other:?}"),
        }
    }
    let mut stream = Framed::new(conn.open_bi().await.expect("stream"));
    stream
        .send(&Control::Register { name: "site-y".into(), role: Role::Site, listen: None })
        .await
        .expect("sent");
    assert!(
        matches!(stream.recv().await, Ok(Some(Control::Registered { .. }))),
        "the connection still works"
    );

    // A second site-a (its own certificate: a double start, or a copied key) is refused while
    // the real one is connected, and the real one keeps carrying tunnels (checked below).
    let ep = site_endpoint(&mesh, "site-a");
    let conn = ep.connect(controller.addr, "controller", &[Role::Controller]).await.expect("handshake");
    let reason = refused_registration(&conn, "site-a", Role::Site).await;
    assert!(reason.contains("`site-a` is already connected"), "{reason}");
    assert!(
        tokio::time::timeout(Duration::from_secs(5), conn.closed()).await.is_ok(),
        "the second connection is closed"
    );

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let names: Vec<String> = mesh.ctl().nodes().into_iter().map(|n| n.name).collect();
    assert!(!names.contains(&"r9".to_owned()) && !names.contains(&"site-x".to_owned()), "{names:?}");
    assert!(names.contains(&"site-y".to_owned()), "{names:?}");
    mesh.connect("site-a", "site-b").await;
    intruder.shutdown();
}
