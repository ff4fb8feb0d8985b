//! The node roles as an operator runs them: `skybridge controller | relay | site` as separate
//! processes from TOML files, driven with `skybridge ctl` — the README's "Run a mesh by hand".

mod common;

use common::{
    Demo, Node, node_toml, ok, pki_and_token, plugin, skybridge, text, write, write_controller_toml,
};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nodes a binding's traffic crosses first and last (the controller's ingress, r1, site-b)
/// run the way `bench/tunnel.sh` runs them: one thread that polls before it sleeps.
const POLLING: &[&str] = &["--threads", "1", "--idle-poll-us", "200"];

#[test]
fn a_controller_three_relays_and_two_sites_run_as_processes_and_ctl_drives_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    pki_and_token(
        dir,
        &[
            ("controller", "controller"),
            ("r1", "relay"),
            ("r2", "relay"),
            ("r3", "relay"),
            ("site-a", "site"),
            ("site-b", "site"),
        ],
    );
    // The scorer is a file of the test's own, so that it can be replaced under the running
    // controller.
    let scorer = dir.join("scorer.wasm");
    std::fs::copy(plugin("weighted-scorer.wasm"), &scorer).expect("scorer copied");
    // site-b's requests are translated by a test adapter that injects the mapped principal as
    // a bearer token.
    let adapter = plugin("testing/plain-adapter.wasm");
    write(
        dir,
        "controller.toml",
        &format!(
            "name = \"controller\"\nlisten = \"127.0.0.1:0\"\nstore = \"state/c.redb\"\nplugin_cache = \"cache\"\n\
             [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/controller.pem\"\nkey = \"pki/controller.key\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n\
             [policy]\nscorer = \"{}\"\n[policy.weights]\nlatency = 1.0\n\
             [[adapter]]\nplatform = \"site-b\"\npath = \"{}\"\n",
            scorer.display(),
            adapter.display()
        ),
    );
    let controller = Node::start(dir, "controller", "controller.toml", POLLING);
    let line = controller.line("controller: mesh on ");
    // "controller: mesh on 127.0.0.1:P, admin API on http://127.0.0.1:Q"
    let mesh = line.split_whitespace().nth(3).expect("mesh address").trim_end_matches(',').to_owned();
    let url = line.rsplit(' ').next().expect("admin URL").to_owned();

    // r3 is dialled by r1 and r2, so it starts first; r1 dials both.
    write(dir, "r3.toml", &node_toml("r3", "127.0.0.1:0", &mesh));
    let r3 = Node::start(dir, "relay", "r3.toml", &[]);
    let r3_addr = r3.line("relay: listening on ").rsplit(' ').next().expect("address").to_owned();
    write(
        dir,
        "r2.toml",
        &format!(
            "{}neighbours = [{{ name = \"r3\", addr = \"{r3_addr}\" }}]\n",
            node_toml("r2", "127.0.0.1:0", &mesh)
        ),
    );
    let r2 = Node::start(dir, "relay", "r2.toml", &[]);
    let r2_addr = r2.line("relay: listening on ").rsplit(' ').next().expect("address").to_owned();
    write(
        dir,
        "r1.toml",
        &format!(
            "{}neighbours = [{{ name = \"r2\", addr = \"{r2_addr}\" }}, {{ name = \"r3\", addr = \"{r3_addr}\" }}]\n",
            node_toml("r1", "127.0.0.1:0", &mesh)
        ),
    );
    let r1 = Node::start(dir, "relay", "r1.toml", POLLING);
    let r1_addr = r1.line("relay: listening on ").rsplit(' ').next().expect("address").to_owned();
    let site = |name: &str, relay: &str, addr: &str| {
        format!(
            "{}relays = [{{ name = \"{relay}\", addr = \"{addr}\" }}]\n",
            node_toml(name, "127.0.0.1:0", &mesh)
        )
    };
    write(dir, "site-a.toml", &site("site-a", "r1", &r1_addr));
    // site-b publishes one service: it greets and closes.
    let service = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let service_addr = service.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut s in service.incoming().map_while(Result::ok) {
            let _ = std::io::Write::write_all(&mut s, b"hello from site-b\n");
        }
    });
    // … and an HTTP service that answers with the Authorization header it was sent.
    let web = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let web_addr = web.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in web.incoming().map_while(Result::ok) {
            let mut reader = std::io::BufReader::new(s);
            let mut auth = String::from("none");
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut reader, &mut line).is_ok_and(|n| n > 2) {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("authorization: ") {
                    auth = v.trim().to_owned();
                }
                line.clear();
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{auth}",
                auth.len()
            );
            let _ = std::io::Write::write_all(reader.get_mut(), answer.as_bytes());
        }
    });
    // … and an echo service, for steady traffic.
    let echo = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let echo_addr = echo.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in echo.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 4096];
                while let Ok(n) = std::io::Read::read(&mut s, &mut buf) {
                    if n == 0 || std::io::Write::write_all(&mut s, &buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    write(
        dir,
        "site-b.toml",
        &format!(
            "{}endpoints = [{{ name = \"greeter\", addr = \"{service_addr}\" }}, {{ name = \"web\", addr = \"{web_addr}\" }}, {{ name = \"echo\", addr = \"{echo_addr}\" }}]\n",
            site("site-b", "r3", &r3_addr)
        ),
    );
    let _a = Node::start(dir, "site", "site-a.toml", &[]);
    let _b = Node::start(dir, "site", "site-b.toml", POLLING);

    let ctl = |args: &[&str]| {
        let mut all = vec!["ctl", "--url", url.as_str()];
        all.extend_from_slice(args);
        skybridge(dir, &all)
    };
    // Wait until both platforms have a nearest relay and all three links are measured.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let platforms: serde_json::Value =
            serde_json::from_str(&ok(ctl(&["platforms", "--json"]))).expect("json");
        let links: serde_json::Value = serde_json::from_str(&ok(ctl(&["links", "--json"]))).expect("json");
        let placed = platforms
            .as_array()
            .is_some_and(|p| p.len() == 2 && p.iter().all(|p| p["nearest_relay"].is_string()));
        let measured =
            links.as_array().is_some_and(|l| l.iter().filter(|l| l["usable"] == true).count() == 3);
        if placed && measured {
            break;
        }
        assert!(Instant::now() < deadline, "mesh did not settle:\n{platforms:#}\n{links:#}");
        std::thread::sleep(Duration::from_millis(200));
    }

    let nodes = ok(ctl(&["nodes"]));
    assert!(nodes.starts_with("NAME"), "{nodes}");
    for name in ["r1", "r2", "r3", "site-a", "site-b"] {
        assert!(nodes.lines().any(|l| l.starts_with(name) && l.contains(" up ")), "{name} not up:\n{nodes}");
    }
    let platforms = ok(ctl(&["platforms"]));
    assert!(platforms.lines().any(|l| l.starts_with("site-a") && l.contains("r1")), "{platforms}");

    let decided = ok(ctl(&["connect", "--from", "site-a", "--to", "site-b"]));
    assert!(decided.starts_with("decision 1: site-a → site-b  (routing relays r1 → r3)"), "{decided}");
    assert!(decided.lines().any(|l| l.starts_with("*  r1 → ")), "no winner marked:\n{decided}");
    let stored: serde_json::Value =
        serde_json::from_str(&ok(ctl(&["connection", "1", "--json"]))).expect("json");
    assert_eq!(stored["decision"]["candidates"].as_array().map(Vec::len), Some(2), "{stored:#}");

    // A policy change applies to the next decision: with hops weighing 100 each, the direct
    // r1 → r3 wins whatever loopback's sub-millisecond RTTs say.
    let policy = ok(ctl(&["policy", "set", "--weight", "hops=100"]));
    assert!(policy.contains("hops=100"), "{policy}");
    let next: serde_json::Value =
        serde_json::from_str(&ok(ctl(&["connect", "--from", "site-a", "--to", "site-b", "--json"])))
            .expect("json");
    let winner = next["decision"]["winner"].as_u64().expect("winner") as usize;
    assert_eq!(next["decision"]["candidates"][winner]["path"], serde_json::json!(["r1", "r3"]), "{next:#}");
    let policy = ok(ctl(&["policy", "set", "--k", "1"]));
    assert!(policy.contains("k                  1"), "{policy}");
    let next: serde_json::Value =
        serde_json::from_str(&ok(ctl(&["connect", "--from", "site-a", "--to", "site-b", "--json"])))
            .expect("json");
    assert_eq!(next["decision"]["candidates"].as_array().map(Vec::len), Some(1), "{next:#}");
    // A scorer path that is not a regular file is refused at once — a device such as
    // /dev/zero would otherwise be read until the controller ran out of memory — and a file
    // over the plugin size cap is refused before it is read; the policy is unchanged.
    let zero = ctl(&["policy", "set", "--scorer", "/dev/zero"]);
    assert!(
        !zero.status.success() && text(&zero.stderr).contains("not a regular file"),
        "{}",
        text(&zero.stderr)
    );
    let huge = dir.join("huge.wasm");
    std::fs::File::create(&huge)
        .and_then(|f| f.set_len(skybridge_gateway::file::MAX_PLUGIN_BYTES + 1))
        .expect("a sparse file over the cap");
    let over = ctl(&["policy", "set", "--scorer", huge.to_str().expect("path")]);
    assert!(!over.status.success() && text(&over.stderr).contains("larger than"), "{}", text(&over.stderr));
    assert!(
        ok(ctl(&["policy", "show"])).contains("k                  1"),
        "the policy in force is unchanged"
    );
    let listed = ok(ctl(&["decisions"]));
    assert!(listed.starts_with("ID") && listed.lines().count() == 4, "three decisions:\n{listed}");

    // Plugins in service are listed; replacing the scorer's file under the running controller
    // puts the new scorer in service, and the next decision uses it.
    let plugins = ok(ctl(&["plugins"]));
    assert!(
        plugins
            .lines()
            .any(|l| l.starts_with("scorer ") && l.contains("scorer") && l.contains("weighted-scorer")),
        "{plugins}"
    );
    assert!(plugins.lines().any(|l| l.starts_with("adapter-site-b ") && l.contains("adapter")), "{plugins}");
    let listed: serde_json::Value = serde_json::from_str(&ok(ctl(&["plugins", "--json"]))).expect("json");
    let in_service =
        listed.as_array().and_then(|p| p.iter().find(|p| p["name"] == "scorer")).expect("scorer");
    assert!(in_service["file"].as_str().is_some_and(|f| f.ends_with("scorer.wasm")), "{in_service:#}");
    assert!(
        in_service["calls"].as_u64().is_some_and(|n| n > 3),
        "describe and three decisions: {in_service:#}"
    );
    assert!(in_service["mean_call_us"].as_f64().is_some_and(|us| us > 0.0), "{in_service:#}");
    assert_eq!(in_service["failures"], serde_json::json!({}), "{in_service:#}");
    let replacement = dir.join("scorer.wasm.new");
    std::fs::copy(plugin("testing/fewest-hops-scorer.wasm"), &replacement).expect("copied");
    std::fs::rename(&replacement, &scorer).expect("replaced");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let plugins: serde_json::Value =
            serde_json::from_str(&ok(ctl(&["plugins", "--json"]))).expect("json");
        let scorer = plugins.as_array().and_then(|p| p.iter().find(|p| p["name"] == "scorer")).cloned();
        if scorer.as_ref().is_some_and(|s| s["plugin"] == "fewest-hops-scorer") {
            break;
        }
        assert!(Instant::now() < deadline, "the scorer was not reloaded: {plugins:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let next: serde_json::Value =
        serde_json::from_str(&ok(ctl(&["connect", "--from", "site-a", "--to", "site-b", "--json"])))
            .expect("json");
    let scorer_name = next["decision"]["scorer"].as_str().expect("scorer");
    assert!(scorer_name.starts_with("fewest-hops-scorer "), "{next:#}");

    // A binding carries TCP to the published service.
    let bound = ok(ctl(&["bind", "--from", "site-a", "--to", "site-b", "--endpoint", "greeter"]));
    assert!(bound.starts_with("binding 1: 127.0.0.1:"), "{bound}");
    let listen = bound.split_whitespace().nth(2).expect("listen address").to_owned();
    let mut greeting = String::new();
    let mut conn = std::net::TcpStream::connect(&listen).expect("connect to the binding");
    std::io::Read::read_to_string(&mut conn, &mut greeting).expect("read");
    assert_eq!(greeting, "hello from site-b\n");
    drop(conn);
    // The session ends once both sides have closed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let sessions = loop {
        let sessions = ok(ctl(&["sessions"]));
        if sessions.lines().nth(1).is_some_and(|l| l.contains("closed")) || Instant::now() > deadline {
            break sessions;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let row = sessions.lines().nth(1).unwrap_or_default();
    assert!(
        row.contains("operator") && row.contains("site-b/greeter") && row.contains("closed"),
        "{sessions}"
    );
    // Accounts: secrets come from files and never come back.
    write(dir, "acme.secret", "acme-secret-0123456789\n");
    write(dir, "aws.secret", "aws-secret-key-abcdef\n");
    let created = ok(ctl(&["account", "create", "acme", "--secret-file", "acme.secret"]));
    assert_eq!(created.trim(), "account acme: no mappings");
    let mapped = ok(ctl(&[
        "account",
        "map",
        "acme",
        "--platform",
        "site-b",
        "--principal",
        "AKIAACME",
        "--secret-file",
        "aws.secret",
        "--attribute",
        "region=us-east-1",
    ]));
    assert_eq!(mapped.trim(), "account acme: site-b: AKIAACME");
    let all = ok(ctl(&["account", "list", "--json"]));
    assert!(all.contains("AKIAACME") && all.contains("us-east-1") && !all.contains("secret-"), "{all}");
    let out = ctl(&["account", "create", "acme", "--secret-file", "acme.secret"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("exists"), "{}", text(&out.stderr));

    // An http binding for acme: the client authenticates as acme; the target sees only what
    // the adapter made of acme's mapping.
    let bound = ok(ctl(&[
        "bind",
        "--from",
        "site-a",
        "--to",
        "site-b",
        "--endpoint",
        "web",
        "--mode",
        "http",
        "--account",
        "acme",
    ]));
    assert!(bound.contains("(http)") && bound.contains("only account acme may use it"), "{bound}");
    let http_listen = bound.split_whitespace().nth(2).expect("listen address").to_owned();
    let curl = |user: &str| {
        let out = Command::new("curl")
            .args(["--silent", "--max-time", "20", "--user", user, "-w", " %{http_code}"])
            .arg(format!("http://{http_listen}/"))
            .output()
            .expect("curl runs");
        text(&out.stdout)
    };
    assert_eq!(curl("acme:acme-secret-0123456789"), "bearer akiaacme 200");
    assert!(curl("acme:wrong").ends_with(" 401"));

    // Plugin calls run on a blocking pool, never on the controller's one async thread
    // (`--threads 1`): while the adapter spends its whole CPU deadline on request after request,
    // a tcp binding keeps carrying traffic. Round trips are counted for a second without the
    // slow requests and a second with them.
    let echo_bound = ok(ctl(&["bind", "--from", "site-a", "--to", "site-b", "--endpoint", "echo"]));
    let echo_listen = echo_bound.split_whitespace().nth(2).expect("listen address").to_owned();
    let round_trips = |for_how_long: Duration| {
        let mut conn = std::net::TcpStream::connect(&echo_listen).expect("connect to the echo binding");
        conn.set_nodelay(true).expect("nodelay");
        let (started, mut n, mut byte) = (Instant::now(), 0u32, [0u8; 1]);
        while started.elapsed() < for_how_long {
            std::io::Write::write_all(&mut conn, b"x").expect("echo write");
            std::io::Read::read_exact(&mut conn, &mut byte).expect("echo read");
            n += 1;
        }
        n
    };
    let idle = round_trips(Duration::from_secs(1));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spinner = {
        let (stop, http_listen) = (std::sync::Arc::clone(&stop), http_listen.clone());
        let auth =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "acme:acme-secret-0123456789");
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut conn =
                    std::net::TcpStream::connect(&http_listen).expect("connect to the http binding");
                let request = format!(
                    "GET /spin HTTP/1.1\r\nHost: web\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n"
                );
                std::io::Write::write_all(&mut conn, request.as_bytes()).expect("request sent");
                let mut answer = String::new();
                let _ = std::io::Read::read_to_string(&mut conn, &mut answer);
                answers.push(answer);
            }
            answers
        })
    };
    let loaded = round_trips(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers = spinner.join().expect("spinner");
    assert!(answers.len() >= 5, "the slow requests ran: {}", answers.len());
    for answer in &answers {
        assert!(
            answer.starts_with("HTTP/1.1 502") && answer.contains("deadline"),
            "each slow request hit the adapter's deadline: {answer}"
        );
    }
    // A stalled binding (the adapter's calls on the async workers) answers next to nothing
    // in that second; how many it answers otherwise depends on the machine's load, not ours.
    assert!(
        loaded >= 20,
        "the tcp binding stalled while the adapter burned CPU: {loaded} round trips in 1 s against {idle} without"
    );
    eprintln!("tcp round trips in 1 s: {idle} alone, {loaded} beside {} slow adapter calls", answers.len());
    // One request's log can be followed: each is logged inside its binding's, client's and
    // request's spans, with the account and (once it reached the target) its session id.
    let done = controller.line_where("a request's end in its spans", |l| l.contains("http request done"));
    for part in ["binding{binding=2", "request{method=GET path=/ account=acme session=", "HTTP 200"] {
        assert!(done.contains(part), "no `{part}` in: {done}");
    }
    let refused = controller.line_where("a slow request's refusal in its spans", |l| {
        l.contains("http request refused") && l.contains("path=/spin")
    });
    for part in ["binding{binding=2", "request{method=GET path=/spin account=acme}", "CPU deadline"] {
        assert!(refused.contains(part), "no `{part}` in: {refused}");
    }
    assert!(ok(ctl(&["unbind", "3"])).starts_with("binding 3 closed"));
    let sessions = ok(ctl(&["sessions"]));
    assert!(
        sessions.lines().any(|l| l.contains("acme")
            && l.contains("site-b/web")
            && l.contains("AKIAACME")
            && l.contains("HTTP 200")),
        "{sessions}"
    );
    let listed = ok(ctl(&["bindings"]));
    assert!(
        listed.lines().nth(1).is_some_and(|l| l.starts_with("1 ") && l.contains("site-b/greeter")),
        "{listed}"
    );
    let closed = ok(ctl(&["unbind", "1"]));
    assert!(closed.starts_with("binding 1 closed"), "{closed}");
    assert!(ok(ctl(&["unbind", "2"])).starts_with("binding 2 closed"));
    let out = ctl(&["bind", "--from", "site-a", "--to", "site-b", "--endpoint", "secrets"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("does not publish endpoint `secrets`"), "{}", text(&out.stderr));

    // Errors are one line and exit 2: an unknown platform, a wrong token.
    let out = ctl(&["connect", "--from", "site-a", "--to", "nowhere"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: unknown platform `nowhere`") && stderr.lines().count() == 1,
        "{stderr}"
    );
    write(dir, "wrong.token", "not-the-token-at-all-no\n");
    let out = Command::new(env!("CARGO_BIN_EXE_skybridge"))
        .args(["ctl", "--url", &url, "--token-file", "wrong.token", "nodes"])
        .current_dir(dir)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing or wrong bearer token (HTTP 401"), "{}", text(&out.stderr));

    // A config with a typo does not start.
    write(dir, "typo.toml", &format!("{}neighbors = []\n", node_toml("r1", "127.0.0.1:0", &mesh)));
    let out = skybridge(dir, &["relay", "--config", "typo.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown field `neighbors`"), "{}", text(&out.stderr));
    drop((r1, r2, r3, controller));
}

/// `skybridge demo` (what `cargo xtask demo` runs) makes the decisions its narrative claims.
#[test]
fn the_demo_runs_the_whole_flow_then_keeps_running_until_interrupted() {
    let mut demo = Demo::start(&["--clouds", "emulators"]);
    let stdout = demo.steps.join("\n");
    // The dashboard's address with the token to log in with: the one in the token file.
    let token = std::fs::read_to_string(&demo.token_file).expect("the token file");
    let dashboard = format!("dashboard:  {}/ui   (log in with the admin token: {})", demo.url, token.trim());
    assert!(stdout.lines().any(|l| l == dashboard), "no `{dashboard}`:\n{stdout}");
    for line in [
        "  site-a: AWS (STS, S3, EC2) — moto, a real emulator (SigV4 enforced)",
        "  site-b: Azure Blob storage — Azurite, a real emulator (Shared Key enforced)",
        "  site-c: OpenStack Keystone — Keystone, a real emulator (real Fernet tokens)",
        "  site-d: Google Cloud Storage — fake-gcs-server, a real emulator",
    ] {
        assert!(stdout.lines().any(|l| l == line), "no `{line}`:\n{stdout}");
    }
    // The winner of each of the four decisions, in order.
    let winners: Vec<&str> = stdout.lines().filter(|l| l.starts_with("*  ")).collect();
    assert_eq!(winners.len(), 4, "{stdout}");
    for (winner, path) in winners.iter().zip(["r1 → r3 → r4", "r1 → r2 → r4", "r1 → r3 → r4", "r1 → r2 → r4"])
    {
        assert!(winner.starts_with(&format!("*  {path} ")), "expected {path}, got `{winner}`\n{stdout}");
    }
    assert!(stdout.contains("7 decision records"), "{stdout}");
    // The http binding: the client proved it is acme-ops; the target got the mapped AWS key's SigV4.
    assert!(
        stdout
            .contains("the target got:    authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/"),
        "{stdout}"
    );
    // The binding carried the download; when r3 went dark the one in flight carried on over
    // the new path, whole, and the binding re-routed around the silent link.
    assert!(stdout.contains("downloaded 32 MiB through the tunnel"), "{stdout}");
    assert!(
        stdout.contains("the download in flight carried on: all 32 MiB arrived, every byte in order"),
        "{stdout}"
    );
    assert!(
        stdout.contains("re-routed from r1 → r3 → r4 → site-b to r1 → r2 → r4 → site-b (link r")
            && stdout.contains("fell silent)"),
        "{stdout}"
    );
    assert!(stdout.contains("downloaded 32 MiB again"), "{stdout}");
    // Discovery through each real emulator, with the services its owner made (and, at moto,
    // every region as a compute service), each platform's consent, the catalog.
    for (site, found) in [
        ("site-a (AWS (STS, S3, EC2)): ", "; 2 object-store (reports-0, reports-1)"),
        ("site-b (Azure Blob storage): ", "2 services — 2 object-store (backups-0, backups-1)"),
        (
            "site-c (OpenStack Keystone): ",
            "3 services — 1 compute (nova); 1 identity (keystone); 1 object-store (swift)",
        ),
        ("site-d (Google Cloud Storage): ", "2 services — 2 object-store (datasets-0, datasets-1)"),
    ] {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(site) && l.ends_with(found)),
            "no `{site}…{found}`:\n{stdout}"
        );
    }
    assert!(stdout.contains(" compute (af-south-1, "), "moto's regions:\n{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("site-c    compute/nova") && l.contains("refused")),
        "{stdout}"
    );
    let catalog: Vec<&str> =
        stdout.lines().filter(|l| l.contains(" object-store ") && l.contains(" offered ")).collect();
    assert_eq!(catalog.len(), 7, "seven object stores granted by four platforms:\n{stdout}");

    // It keeps running: the admin API it names answers.
    let listed = Command::new(env!("CARGO_BIN_EXE_skybridge"))
        .args(["ctl", "--url", &demo.url, "--json", "catalog", "ls"])
        .env("SKYBRIDGE_TOKEN_FILE", &demo.token_file)
        .output()
        .expect("ctl runs");
    let entries: serde_json::Value = serde_json::from_str(&ok(listed)).expect("json");
    assert_eq!(entries.as_array().map(Vec::len), Some(7), "{entries:#}");
    // Its tunnels, one per binding, each ending at the target site.
    let listed = Command::new(env!("CARGO_BIN_EXE_skybridge"))
        .args(["ctl", "--url", &demo.url, "--json", "tunnels"])
        .env("SKYBRIDGE_TOKEN_FILE", &demo.token_file)
        .output()
        .expect("ctl runs");
    let tunnels: serde_json::Value = serde_json::from_str(&ok(listed)).expect("json");
    let tunnels = tunnels.as_array().expect("a list");
    assert!(!tunnels.is_empty(), "no tunnels");
    for t in tunnels {
        assert!(t["binding"].is_u64() && t["decision"].is_u64(), "{t:#}");
        assert!(
            t["hops"][0] == "r1"
                && t["hops"]
                    .as_array()
                    .and_then(|h| h.last())
                    .is_some_and(|s| s.as_str().is_some_and(|s| s.starts_with("site-"))),
            "{t:#}"
        );
    }

    // Its OpenAPI document passes a real validator, and every GET answer of the running demo —
    // with its decisions, bindings, catalog and accounts — is the shape the document says.
    let python = std::env::var_os("SKYBRIDGE_PEERS_PYTHON").unwrap_or_else(|| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers/openapi_check.py");
    let checked =
        Command::new(python).arg(script).args([&demo.url, &demo.token_file]).output().expect("python runs");
    let checked: serde_json::Value = serde_json::from_str(&ok(checked)).expect("the check's JSON");
    assert_eq!(checked["unfilled"], serde_json::json!([]), "{checked:#}");
    let validated = checked["validated"].as_array().expect("validated");
    for call in
        ["GET /v1/catalog 200", "GET /v1/decisions/not-a-number 400", "GET /v1/decisions/999999999 404"]
    {
        assert!(validated.contains(&serde_json::json!(call)), "{call} not validated: {checked:#}");
    }
    assert!(validated.len() >= 20, "{checked:#}");

    // Ctrl-C: a clean exit.
    let status = demo.interrupt();
    assert!(status.success(), "{status}");
}

/// moto with SigV4 enforced (`tests/peers/moto_peer.py`): its port, key and secret; it stops
/// when the returned child is dropped (its stdin closes) or killed.
fn moto() -> (Child, u64, String, String) {
    let python = std::env::var_os("SKYBRIDGE_PEERS_PYTHON").unwrap_or_else(|| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers/moto_peer.py");
    let mut child = Command::new(python)
        .arg(script)
        .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto starts (`cargo xtask test` installs it)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("ready line");
    let ready: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("moto said {line:?}"));
    let field = |k: &str| ready[k].as_str().expect("moto's key").to_owned();
    (child, ready["port"].as_u64().expect("port"), field("access_key"), field("secret_key"))
}

#[test]
fn a_site_process_discovers_its_cloud_and_ctl_shows_the_inventory_catalog_and_decisions() {
    let (mut moto, port, key, secret) = moto();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    pki_and_token(dir, &[("controller", "controller"), ("r1", "relay"), ("aws-east", "site")]);
    write_controller_toml(dir, "127.0.0.1:0");
    let controller = Node::start(dir, "controller", "controller.toml", &[]);
    let line = controller.line("controller: mesh on ");
    let mesh = line.split_whitespace().nth(3).expect("mesh address").trim_end_matches(',').to_owned();
    let url = line.rsplit(' ').next().expect("admin URL").to_owned();
    write(dir, "r1.toml", &node_toml("r1", "127.0.0.1:0", &mesh));
    let r1 = Node::start(dir, "relay", "r1.toml", &[]);
    let r1_addr = r1.line("relay: listening on ").rsplit(' ').next().expect("address").to_owned();

    // The site's own AWS key, in a file of its own; the controller never sees it.
    write(dir, "aws.secret", &format!("{secret}\n"));
    write(
        dir,
        "aws-east.toml",
        &format!(
            "{}relays = [{{ name = \"r1\", addr = \"{r1_addr}\" }}]\naudit = \"state/aws-east-audit.jsonl\"\nplugin_cache = \"cache\"\n\
             [cloud]\nendpoints = [{{ name = \"api\", url = \"http://127.0.0.1:{port}\" }}]\n\
             principal = \"{key}\"\nsecret_file = \"aws.secret\"\nattributes = {{ region = \"us-east-1\" }}\n\
             adapter = {{ path = \"{}\" }}\n\
             [authorizer]\npath = \"{}\"\nconfig = {{ \"allow.regions\" = \"* aws-east compute/eu-*\" }}\n",
            node_toml("aws-east", "127.0.0.1:0", &mesh),
            plugin("aws-adapter.wasm").display(),
            plugin("allowlist-authorizer.wasm").display(),
        ),
    );
    std::fs::create_dir_all(dir.join("state")).expect("state dir");
    let _site = Node::start(dir, "site", "aws-east.toml", &[]);

    let ctl = |args: &[&str]| {
        let mut all = vec!["ctl", "--url", url.as_str()];
        all.extend_from_slice(args);
        skybridge(dir, &all)
    };
    // Wait for the first report and for every authorization to be decided.
    let deadline = Instant::now() + Duration::from_secs(60);
    let decided = loop {
        let all: serde_json::Value =
            serde_json::from_str(&ok(ctl(&["authorizations", "--json"]))).expect("json");
        let all = all.as_array().expect("a list").clone();
        if !all.is_empty() && all.iter().all(|a| a["state"] != "pending") {
            break all;
        }
        assert!(Instant::now() < deadline, "authorizations still pending: {all:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let inventory = ok(ctl(&["platform", "inventory", "aws-east"]));
    assert!(inventory.starts_with("NATIVE ID"), "{inventory}");
    assert!(inventory.contains("ec2-region:eu-west-1") && inventory.contains("present"), "{inventory}");
    let refreshes = ok(ctl(&["platform", "refreshes", "aws-east"]));
    assert!(refreshes.contains("connect") && refreshes.contains("services: +"), "{refreshes}");

    // The allowlist grants the European regions and refuses the rest.
    let granted: Vec<&serde_json::Value> = decided.iter().filter(|a| a["state"] == "granted").collect();
    assert!(
        !granted.is_empty()
            && granted.iter().all(|a| a["match_key"].as_str().is_some_and(|k| k.starts_with("compute/eu-")))
    );
    let catalog = ok(ctl(&["catalog", "ls", "--kind", "compute"]));
    assert!(catalog.contains("eu-west-1") && !catalog.contains("us-east-1"), "{catalog}");
    assert!(catalog.contains("aws-east (present)"), "{catalog}");
    let listed: serde_json::Value =
        serde_json::from_str(&ok(ctl(&["catalog", "ls", "--json"]))).expect("json");
    let id = listed[0]["id"].as_str().expect("an entry id").to_owned();
    let shown = ok(ctl(&["catalog", "show", &id]));
    assert!(shown.contains("aws-east") && shown.contains("ec2-region:eu-"), "{shown}");
    let audit = ok(ctl(&["authorizations", "--audit"]));
    assert!(audit.contains("platform:aws-east") && audit.contains("refused"), "{audit}");
    let site_audit =
        std::fs::read_to_string(dir.join("state/aws-east-audit.jsonl")).expect("the site's audit");
    assert_eq!(site_audit.lines().count(), decided.len(), "one line per decision at the site too");

    // An on-demand refresh runs and is recorded; an unknown platform is a clear error.
    let started = ok(ctl(&["platform", "refresh", "aws-east"]));
    assert!(started.starts_with("aws-east: "), "{started}");
    let out = ctl(&["platform", "refresh", "nowhere"]);
    assert!(
        !out.status.success() && text(&out.stderr).contains("no connected site"),
        "{}",
        text(&out.stderr)
    );
    let _ = moto.kill();
    let _ = moto.wait();
}

/// A cloud for the synthetic test adapter: `GET /spec` answers `spec`, anything else `{}`.
fn spec_cloud(spec: &'static str) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(s);
                let mut first = String::new();
                let _ = reader.read_line(&mut first);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let body = if first.starts_with("GET /spec") { spec } else { "{}" };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = std::io::Write::write_all(reader.get_mut(), answer.as_bytes());
            });
        }
    });
    addr
}

#[test]
fn a_controller_killed_during_a_large_integration_keeps_a_whole_catalog_and_resumes() {
    const SERVICES: usize = 3_000;
    let cloud = spec_cloud(r#"{"count": 3000, "per_page": 500}"#);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    pki_and_token(dir, &[("controller", "controller"), ("r1", "relay"), ("big", "site")]);
    // A fixed mesh port, so that the restarted controller is where the nodes look for it.
    let mesh = std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("addr")
        .to_string();
    write_controller_toml(dir, &mesh);
    let controller = Node::start(dir, "controller", "controller.toml", &[]);
    let url_of =
        |node: &Node| node.line("controller: mesh on ").rsplit(' ').next().expect("admin URL").to_owned();
    let url = url_of(&controller);
    write(dir, "r1.toml", &node_toml("r1", "127.0.0.1:0", &mesh));
    let r1 = Node::start(dir, "relay", "r1.toml", &[]);
    let r1_addr = r1.line("relay: listening on ").rsplit(' ').next().expect("address").to_owned();
    write(
        dir,
        "big.toml",
        &format!(
            "{}relays = [{{ name = \"r1\", addr = \"{r1_addr}\" }}]\naudit = \"big-audit.jsonl\"\nplugin_cache = \"cache\"\n\
             [cloud]\nendpoints = [{{ name = \"api\", url = \"http://{cloud}\" }}]\nprincipal = \"synthetic\"\n\
             adapter = {{ path = \"{}\" }}\n\
             [authorizer]\npath = \"{}\"\nconfig = {{ \"allow.all\" = \"* * *\" }}\n",
            node_toml("big", "127.0.0.1:0", &mesh),
            plugin("testing/synthetic-adapter.wasm").display(),
            plugin("allowlist-authorizer.wasm").display(),
        ),
    );
    let site = Node::start(dir, "site", "big.toml", &[]);
    // Kill the controller (SIGKILL) the moment the site has its report ready to send.
    site.line_where("the site's discovery", |l| l.contains("discovered"));
    drop(controller);

    let count = |url: &str| -> usize {
        let out = skybridge(dir, &["ctl", "--url", url, "platform", "inventory", "big", "--json"]);
        serde_json::from_str::<serde_json::Value>(&ok(out)).expect("json").as_array().expect("a list").len()
    };
    let controller = Node::start(dir, "controller", "controller.toml", &[]);
    let url2 = url_of(&controller);
    assert_ne!(url, url2, "a new admin port");
    // Whatever the kill interrupted, the store holds all of the report or none of it ...
    let first = count(&url2);
    assert!(first == 0 || first == SERVICES, "half-written: {first}");
    // ... and the site reports again when it reconnects, which completes it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&url2) != SERVICES {
        assert!(Instant::now() < deadline, "the inventory never completed");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every capability is decided (the pending ones resumed after the restart) and granted.
    let entries = |url: &str| -> usize {
        let out = skybridge(dir, &["ctl", "--url", url, "catalog", "ls", "--json"]);
        serde_json::from_str::<serde_json::Value>(&ok(out)).expect("json").as_array().expect("a list").len()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while entries(&url2) != SERVICES {
        assert!(Instant::now() < deadline, "grants never completed: {} entries", entries(&url2));
        std::thread::sleep(Duration::from_millis(500));
    }
    // Killed again, the catalog is intact after a restart.
    drop(controller);
    let controller = Node::start(dir, "controller", "controller.toml", &[]);
    assert_eq!(entries(&url_of(&controller)), SERVICES);
}
