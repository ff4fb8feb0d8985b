//! A relay process killed with SIGKILL: no `CONNECTION_CLOSE`, no reset — its peers only stop
//! hearing from it. The mesh must notice the silence itself (issue 14, finding 10).

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// The common part of node `name`'s config: default probing and timings, as shipped.
fn node(name: &str, mesh: &str) -> String {
    format!(
        "name = \"{name}\"\nlisten = \"127.0.0.1:0\"\n\
         tls = {{ ca = \"pki/ca.pem\", cert = \"pki/{name}.pem\", key = \"pki/{name}.key\" }}\n\
         controller = {{ name = \"controller\", addr = \"{mesh}\" }}\n"
    )
}

fn listening(node: &Node) -> String {
    node.line("relay: listening on ").rsplit(' ').next().expect("address").to_owned()
}

/// What the service sends each client: a sequence (byte `i` is `i % 251`, so a lost, repeated
/// or reordered piece shows).
const SEQUENCE_BYTES: usize = 64 << 20;

/// Read `client` to its end, checking every byte against the sequence from byte `at` on; the
/// bytes read and the longest wait for data.
fn read_sequence(client: &mut TcpStream, mut at: usize) -> (usize, Duration) {
    let (from, mut longest) = (at, Duration::ZERO);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let waited = Instant::now();
        let n = client.read(&mut buf).unwrap_or_else(|e| panic!("the stream failed at byte {at}: {e}"));
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

/// site-a — r1 ─┬─ r2 ─┬─ r4 — site-b: the middle relay carrying a binding is SIGKILLed. With
/// heartbeats allowed 30 s of silence and QUIC's idle timeout at 5 s, only the silence watch
/// can explain what follows: the controller and the neighbours say the relay fell silent, the
/// binding re-routes through the other middle relay, the stream through the dead relay moves
/// onto the new path and arrives whole, and new connections work; restarted, the relay is up
/// and its links are used again.
#[test]
fn a_relay_killed_with_sigkill_is_noticed_by_its_silence() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let names = [
        ("controller", "controller"),
        ("r1", "relay"),
        ("r2", "relay"),
        ("r3", "relay"),
        ("r4", "relay"),
        ("site-a", "site"),
        ("site-b", "site"),
    ];
    pki_and_token(dir, &names);
    write_controller_toml(dir, "127.0.0.1:0");
    let config = std::fs::read_to_string(dir.join("controller.toml")).expect("read");
    write(
        dir,
        "controller.toml",
        &format!("{config}[membership]\nheartbeat_ms = 1000\ndown_after_ms = 30000\n"),
    );
    // The controller logs JSON, as a log collector would take it.
    let controller = Node::start(dir, "controller", "controller.toml", &["--log-format", "json"]);
    let line = controller.line("controller: mesh on ");
    let mesh = line.split_whitespace().nth(3).expect("mesh address").trim_end_matches(',').to_owned();
    let url = line.rsplit(' ').next().expect("admin URL").to_owned();

    write(dir, "r4.toml", &node("r4", &mesh));
    let r4 = Node::start(dir, "relay", "r4.toml", &[]);
    let r4_addr = listening(&r4);
    let middle = |name: &str| {
        write(
            dir,
            &format!("{name}.toml"),
            &format!("{}neighbours = [{{ name = \"r4\", addr = \"{r4_addr}\" }}]\n", node(name, &mesh)),
        );
        Node::start(dir, "relay", &format!("{name}.toml"), &[])
    };
    let mut relays = std::collections::BTreeMap::new();
    for name in ["r2", "r3"] {
        relays.insert(name, middle(name));
    }
    let (r2_addr, r3_addr) = (listening(&relays["r2"]), listening(&relays["r3"]));
    write(
        dir,
        "r1.toml",
        &format!(
            "{}neighbours = [{{ name = \"r2\", addr = \"{r2_addr}\" }}, {{ name = \"r3\", addr = \"{r3_addr}\" }}]\n",
            node("r1", &mesh)
        ),
    );
    let r1 = Node::start(dir, "relay", "r1.toml", &[]);
    let r1_addr = listening(&r1);
    // site-b publishes a service that sends each client the sequence at about 16 MiB/s.
    let service = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let service_addr = service.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in service.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut s = s;
                for start in (0..SEQUENCE_BYTES).step_by(32 * 1024) {
                    let chunk: Vec<u8> = (start..start + 32 * 1024).map(|i| (i % 251) as u8).collect();
                    if std::io::Write::write_all(&mut s, &chunk).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
        }
    });
    write(
        dir,
        "site-a.toml",
        &format!("{}relays = [{{ name = \"r1\", addr = \"{r1_addr}\" }}]\n", node("site-a", &mesh)),
    );
    // And a file server with a 100 MiB file, for curl.
    let files = tempfile::tempdir().expect("tempdir");
    let file = files.path().join("big.bin");
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let big: Vec<u8> = (0..100usize << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(&file, &big).expect("write the file");
    let http_port =
        std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let mut http = std::process::Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", &http_port.to_string()])
        .current_dir(files.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 serves the file");
    write(
        dir,
        "site-b.toml",
        &format!(
            "{}relays = [{{ name = \"r4\", addr = \"{r4_addr}\" }}]\nendpoints = [{{ name = \"stream\", addr = \"{service_addr}\" }}, {{ name = \"files\", addr = \"127.0.0.1:{http_port}\" }}]\n",
            node("site-b", &mesh)
        ),
    );
    let _a = Node::start(dir, "site", "site-a.toml", &[]);
    let _b = Node::start(dir, "site", "site-b.toml", &[]);

    let ctl = |args: &[&str]| {
        let mut all = vec!["ctl", "--url", url.as_str()];
        all.extend_from_slice(args);
        skybridge(dir, &all)
    };
    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&ok(ctl(&all))).expect("json")
    };
    let usable_links =
        || json(&["links"]).as_array().map_or(0, |l| l.iter().filter(|l| l["usable"] == true).count());
    let wait = |what: &str, limit: Duration, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + limit;
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let placed = || {
        json(&["platforms"])
            .as_array()
            .is_some_and(|p| p.len() == 2 && p.iter().all(|p| p["nearest_relay"].is_string()))
    };
    wait("the mesh settles", Duration::from_secs(30), &|| placed() && usable_links() == 4);

    let bound: serde_json::Value = serde_json::from_str(&ok(ctl(&[
        "bind",
        "--from",
        "site-a",
        "--to",
        "site-b",
        "--endpoint",
        "stream",
        "--json",
    ])))
    .expect("json");
    let hops: Vec<String> = serde_json::from_value(bound["tunnel"]["hops"].clone()).expect("hops");
    assert_eq!((hops.len(), hops[0].as_str(), hops[2].as_str()), (4, "r1", "r4"), "{bound:#}");
    let victim = hops[1].clone();
    let other = if victim == "r2" { "r3" } else { "r2" };
    let listen = bound["listen"].as_str().expect("listen").to_owned();
    let mut client = TcpStream::connect(&listen).expect("connect");
    client.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut buf = vec![0u8; 1 << 20];
    client.read_exact(&mut buf).expect("data flows");

    // An operator follows the events meanwhile.
    let mut watch = std::process::Command::new(env!("CARGO_BIN_EXE_skybridge"))
        .args(["ctl", "--url", url.as_str(), "watch"])
        .current_dir(dir)
        .env("SKYBRIDGE_TOKEN_FILE", dir.join("admin.token"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ctl watch runs");
    let watched = lines_of(watch.stdout.take().expect("stdout"));
    std::thread::sleep(Duration::from_millis(300)); // its stream is open

    let mut killed = relays.remove(victim.as_str()).expect("the victim runs");
    killed.child.kill().expect("SIGKILL");
    killed.child.wait().expect("reaped");
    // The stream stalls, moves onto the new path and arrives whole (were it left to QUIC's
    // idle timeout, the end-to-end connection would have died after 5 s of silence).
    let (rest, stall) = read_sequence(&mut client, buf.len());
    assert_eq!(buf.len() + rest, SEQUENCE_BYTES, "the whole stream arrived");
    eprintln!("longest stall of the stream across the relay's SIGKILL: {stall:?}");
    let noticed =
        controller.line_where("the controller noticing the silence", |l| l.contains("node fell silent"));
    // One JSON object, the node's span (name, role, address) listed with it.
    let noticed: serde_json::Value = serde_json::from_str(&noticed).expect("a JSON log line");
    assert_eq!(
        (&noticed["level"], &noticed["message"]),
        (&json!("WARN"), &json!("node fell silent: connection closed, node down")),
        "{noticed:#}"
    );
    assert!(noticed["silent_ms"].as_u64().is_some_and(|ms| ms >= 500), "{noticed:#}");
    assert_eq!(noticed["spans"].as_array().map(Vec::len), Some(1), "{noticed:#}");
    let span = &noticed["span"];
    assert_eq!(
        (&span["name"], &span["node"], &span["role"]),
        (&json!("node"), &json!(victim), &json!("relay")),
        "{noticed:#}"
    );
    r1.line_where("r1 noticing the silence", |l| {
        l.contains("peer fell silent") && l.contains(&format!("peer={victim}"))
    });
    r4.line_where("r4 noticing the silence", |l| {
        l.contains("peer fell silent") && l.contains(&format!("peer={victim}"))
    });

    let node_state = |name: &str| {
        json(&["nodes"])
            .as_array()
            .and_then(|n| n.iter().find(|n| n["name"] == name).map(|n| n["state"].clone()))
    };
    assert_eq!(node_state(&victim), Some(json!("down")), "down long before 30 s of heartbeats");
    wait("the binding re-routes", Duration::from_secs(10), &|| {
        json(&["bindings"])
            .as_array()
            .is_some_and(|b| b.iter().any(|b| b["reroutes"].as_array().is_some_and(|r| !r.is_empty())))
    });
    let binding = json(&["bindings"]).as_array().and_then(|b| b.first().cloned()).expect("the binding");
    assert_eq!(binding["tunnel"]["hops"], json!(["r1", other, "r4", "site-b"]), "{binding:#}");
    let reason = binding["reroutes"][0]["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains(&victim), "{reason}");
    // ctl watch showed it: the node going down, then the re-route away from it.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen
        .iter()
        .any(|l: &String| l.contains("rerouted") && l.contains(&format!("to_hops=[\"r1\",\"{other}\"")))
    {
        let left = deadline.checked_duration_since(Instant::now()).unwrap_or_default();
        match watched.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("ctl watch did not show the re-route:\n{}", seen.join("\n")),
        }
    }
    let down = seen.iter().position(|l| l.contains(" node-down ") && l.contains(&format!("node={victim} ")));
    let rerouted = seen.iter().position(|l| l.contains(" rerouted "));
    assert!(down.is_some() && down < rerouted, "{}", seen.join("\n"));
    let _ = watch.kill();
    let _ = watch.wait();

    let mut again = TcpStream::connect(&listen).expect("connect");
    again.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    again.read_exact(&mut buf).expect("a new connection is carried by the other path");
    assert!(buf.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    drop((again, client));

    // Back on its old address: up again, and its links are used once the hold is over.
    let config = format!("{victim}.toml");
    let text = std::fs::read_to_string(dir.join(&config)).expect("read");
    let port = if victim == "r2" { &r2_addr } else { &r3_addr };
    write(dir, &config, &text.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{port}\"")));
    relays.insert(victim.as_str(), Node::start(dir, "relay", &config, &[]));
    wait("the relay comes back", Duration::from_secs(20), &|| node_state(&victim) == Some(json!("up")));
    wait("its links are used again", Duration::from_secs(20), &|| usable_links() == 4);

    // curl downloads the 100 MiB file through a binding (at 25 MB/s, so it takes about 4 s);
    // in the middle, the relay carrying it is SIGKILLed. The download completes, intact.
    let bound: serde_json::Value = serde_json::from_str(&ok(ctl(&[
        "bind",
        "--from",
        "site-a",
        "--to",
        "site-b",
        "--endpoint",
        "files",
        "--json",
    ])))
    .expect("json");
    let victim = bound["tunnel"]["hops"][1].as_str().expect("middle relay").to_owned();
    let out = dir.join("downloaded.bin");
    let url = format!("http://{}/big.bin", bound["listen"].as_str().expect("listen"));
    let curl = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--max-time", "60", "--limit-rate", "25M", "-o"])
        .arg(&out)
        .arg(&url)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("curl runs");
    wait("curl is under way", Duration::from_secs(10), &|| {
        std::fs::metadata(&out).is_ok_and(|m| m.len() > 20 << 20)
    });
    let mut killed = relays.remove(victim.as_str()).expect("the victim runs");
    killed.child.kill().expect("SIGKILL");
    killed.child.wait().expect("reaped");
    let done = curl.wait_with_output().expect("curl ends");
    assert!(done.status.success(), "curl failed: {}", String::from_utf8_lossy(&done.stderr));
    let got = std::fs::read(&out).expect("the download");
    assert_eq!(got.len(), big.len(), "the whole file");
    assert!(got == big, "the download differs from the file");
    let _ = http.kill();
    let _ = http.wait();
}
