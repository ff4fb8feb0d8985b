//! A group of controllers on real etcd, as separate processes: three etcd members (Debian's
//! `etcd-server`, which `cargo xtask test` installs) and controllers built with the `etcd`
//! feature (`cargo test -p skybridge --features etcd --test ha`).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Node, ok, skybridge, write};
use skybridge_gateway::testkit::etcd::{Member, cluster};

/// The controllers' lease TTL in these tests (the default is 10 s).
const TTL_S: u64 = 3;

/// `NAME.toml`: controller `name` with its mesh on `ip`, its shared state in the etcd
/// `members`, its own in `state/NAME.redb`.
fn write_group_controller(dir: &Path, name: &str, ip: &str, members: &[Member]) {
    let endpoints: Vec<String> = members.iter().map(|m| format!("\"{}\"", m.client_url)).collect();
    write(
        dir,
        &format!("{name}.toml"),
        &format!(
            "name = \"{name}\"\nlisten = \"{ip}:0\"\nplugin_cache = \"cache\"\n\
             [store]\nkind = \"etcd\"\nendpoints = [{}]\nlocal = \"state/{name}.redb\"\nseal_key = \"seal.key\"\nlease_ttl_s = {TTL_S}\n\
             [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/{name}.pem\"\nkey = \"pki/{name}.key\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n\
             [policy]\nscorer = \"{}\"\n",
            endpoints.join(", "),
            common::plugin("weighted-scorer.wasm").display()
        ),
    );
}

/// Start controller `name` and wait until it serves; its admin API's URL.
fn start(dir: &Path, name: &str) -> (Node, String) {
    let (node, _, url) = start_with_mesh(dir, name);
    (node, url)
}

/// Start controller `name`; its mesh address and admin API's URL.
fn start_with_mesh(dir: &Path, name: &str) -> (Node, String, String) {
    let node = Node::start(dir, "controller", &format!("{name}.toml"), &[]);
    // "controller: mesh on 127.0.0.11:P, admin API on http://127.0.0.1:Q"
    let line = node.line("controller: mesh on");
    let mesh = line.split_whitespace().nth(3).expect("mesh address").trim_end_matches(',').to_owned();
    let url = line.rsplit(' ').next().expect("the admin URL").to_owned();
    (node, mesh, url)
}

/// A relay's or site's config naming every controller of the group.
fn group_node_toml(name: &str, controllers: &[(&str, &str)]) -> String {
    let peers: Vec<String> =
        controllers.iter().map(|(n, addr)| format!("{{ name = \"{n}\", addr = \"{addr}\" }}")).collect();
    format!(
        "name = \"{name}\"\nlisten = \"127.0.0.1:0\"\n\
         tls = {{ ca = \"pki/ca.pem\", cert = \"pki/{name}.pem\", key = \"pki/{name}.key\" }}\n\
         controllers = [{}]\n\
         probing = {{ interval_ms = 20, report_ms = 200 }}\n",
        peers.join(", ")
    )
}

/// Wait (at most 20 s) until controller `url` has every node in `names` up.
fn wait_for_nodes(dir: &Path, url: &str, names: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let nodes: serde_json::Value =
            serde_json::from_str(&ctl(dir, url, &["nodes", "--json"])).expect("JSON");
        let up: Vec<&str> = nodes
            .as_array()
            .expect("a list")
            .iter()
            .filter(|n| n["state"] == "up")
            .filter_map(|n| n["name"].as_str())
            .collect();
        if names.iter().all(|n| up.contains(n)) {
            return;
        }
        assert!(Instant::now() < deadline, "{url} has only {up:?} up, not all of {names:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The names of the group's controllers as controller `url` lists them.
fn controllers(dir: &Path, url: &str) -> Vec<String> {
    let listed: serde_json::Value =
        serde_json::from_str(&ctl(dir, url, &["controllers", "--json"])).expect("JSON");
    let names =
        listed.as_array().expect("a list").iter().map(|m| m["name"].as_str().expect("name").to_owned());
    names.collect()
}

/// Wait (at most `limit`) until `url` lists exactly `names`.
fn wait_for_controllers(dir: &Path, url: &str, names: &[&str], limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let now = controllers(dir, url);
        if now == names {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{url} lists {now:?}, not {names:?}, after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ctl(dir: &Path, url: &str, args: &[&str]) -> String {
    let mut all = vec!["ctl", "--url", url];
    all.extend_from_slice(args);
    ok(skybridge(dir, &all))
}

#[test]
fn controllers_of_a_group_share_accounts_through_etcd_and_outlive_an_etcd_member() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let mut members = cluster(3, None);
    common::pki_and_token(dir, &[("c1", "controller"), ("c2", "controller")]);
    write(dir, "seal.key", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n");
    write(dir, "acme.secret", "acme-account-secret-0123\n");
    write(dir, "aws.secret", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n");
    write_group_controller(dir, "c1", "127.0.0.11", &members);
    write_group_controller(dir, "c2", "127.0.0.12", &members);
    let (c1, url1) = start(dir, "c1");
    let (_c2, url2) = start(dir, "c2");

    // Made through one controller, seen and changed through the other.
    ctl(dir, &url1, &["account", "create", "acme", "--secret-file", "acme.secret"]);
    let listed = ctl(dir, &url2, &["account", "list", "--json"]);
    assert!(listed.contains("\"acme\""), "c2 lists the account c1 made: {listed}");
    let map = ["account", "map", "acme", "--platform", "aws", "--principal", "AKIDEXAMPLE"];
    ctl(dir, &url2, &[&map[..], &["--secret-file", "aws.secret"]].concat());
    let listed = ctl(dir, &url1, &["account", "list", "--json"]);
    assert!(listed.contains("aws") && listed.contains("AKIDEXAMPLE"), "c1 sees c2's mapping: {listed}");

    // In etcd, the secrets are sealed.
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &members[1].client_url, "get", "skybridge/", "--prefix"])
        .output()
        .expect("etcdctl runs (cargo xtask test installs Debian's etcd-client)");
    let stored = String::from_utf8_lossy(&out.stdout);
    assert!(stored.contains("skybridge/accounts/acme"), "{stored}");
    for clear in ["acme-account-secret-0123", "wJalrXUtnFEMI", "AKIDEXAMPLE"] {
        assert!(!stored.contains(clear), "`{clear}` is in etcd in clear");
    }

    // One etcd member dies: the group goes on with the other two.
    drop(members.remove(0));
    ctl(dir, &url2, &["account", "create", "globex", "--secret-file", "acme.secret"]);
    let listed = ctl(dir, &url1, &["account", "list", "--json"]);
    assert!(listed.contains("\"globex\""), "{listed}");

    // A controller killed and started again finds the group's state where it was.
    drop(c1);
    let (_c1, url1) = start(dir, "c1");
    let listed = ctl(dir, &url1, &["account", "list", "--json"]);
    assert!(listed.contains("\"acme\"") && listed.contains("\"globex\""), "{listed}");
}

#[test]
fn controllers_join_under_leases_drop_out_when_killed_and_leave_at_once_when_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let members = cluster(1, None);
    common::pki_and_token(dir, &[("c1", "controller"), ("c2", "controller"), ("c3", "controller")]);
    write(dir, "seal.key", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n");
    for (name, ip) in [("c1", "127.0.0.11"), ("c2", "127.0.0.12"), ("c3", "127.0.0.13")] {
        write_group_controller(dir, name, ip, &members);
    }
    let (c1, url1) = start(dir, "c1");
    let (c2, _url2) = start(dir, "c2");
    let (_c3, url3) = start(dir, "c3");
    wait_for_controllers(dir, &url3, &["c1", "c2", "c3"], Duration::from_secs(5));
    let shown = ctl(dir, &url1, &["controllers"]);
    assert!(shown.contains("c1 *") && shown.contains("127.0.0.12"), "{shown}");

    // Killed without a word: gone from the others' list once its lease expires.
    drop(c1);
    let gone = wait_for_controllers(dir, &url3, &["c2", "c3"], Duration::from_secs(TTL_S + 5));
    assert!(gone >= Duration::from_secs(1), "it stayed until its lease expired: {gone:?}");

    // Stopped gracefully: it revokes its lease, gone at once.
    let mut c2 = c2;
    let term = std::process::Command::new("kill").args(["-TERM", &c2.child.id().to_string()]).status();
    assert!(term.expect("kill runs").success());
    let status = c2.child.wait().expect("c2 ends");
    assert!(status.success(), "a stopped controller exits cleanly: {status}");
    let gone = wait_for_controllers(dir, &url3, &["c3"], Duration::from_secs(TTL_S));
    assert!(gone < Duration::from_secs(2), "a graceful stop is seen at once, not after the TTL: {gone:?}");

    // Started again, c1 joins again under its name.
    let (_c1, url1) = start(dir, "c1");
    wait_for_controllers(dir, &url1, &["c1", "c3"], Duration::from_secs(5));
}

#[test]
fn relays_and_sites_keep_a_session_with_every_controller_and_carry_tunnels_of_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let members = cluster(1, None);
    let nodes = [("r1", "relay"), ("r2", "relay"), ("site-a", "site"), ("site-b", "site")];
    common::pki_and_token(dir, &[&[("c1", "controller"), ("c2", "controller")][..], &nodes[..]].concat());
    write(dir, "seal.key", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n");
    write_group_controller(dir, "c1", "127.0.0.11", &members);
    write_group_controller(dir, "c2", "127.0.0.12", &members);
    let (_c1, mesh1, url1) = start_with_mesh(dir, "c1");
    let (_c2, mesh2, url2) = start_with_mesh(dir, "c2");
    let controllers = [("c1", mesh1.as_str()), ("c2", mesh2.as_str())];

    write(dir, "r2.toml", &group_node_toml("r2", &controllers));
    let r2 = Node::start(dir, "relay", "r2.toml", &[]);
    let r2_addr = r2.line("relay: listening on ").rsplit(' ').next().expect("address").to_owned();
    let r1_toml = format!(
        "{}neighbours = [{{ name = \"r2\", addr = \"{r2_addr}\" }}]\n",
        group_node_toml("r1", &controllers)
    );
    write(dir, "r1.toml", &r1_toml);
    let r1 = Node::start(dir, "relay", "r1.toml", &[]);
    let r1_addr = r1.line("relay: listening on ").rsplit(' ').next().expect("address").to_owned();
    let greeter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let greeter_addr = greeter.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut s in greeter.incoming().map_while(Result::ok) {
            let _ = std::io::Write::write_all(&mut s, b"hello from site-b\n");
        }
    });
    let site_a = format!(
        "{}relays = [{{ name = \"r1\", addr = \"{r1_addr}\" }}]\n",
        group_node_toml("site-a", &controllers)
    );
    write(dir, "site-a.toml", &site_a);
    let site_b = format!(
        "{}relays = [{{ name = \"r2\", addr = \"{r2_addr}\" }}]\nendpoints = [{{ name = \"greeter\", addr = \"{greeter_addr}\" }}]\n",
        group_node_toml("site-b", &controllers)
    );
    write(dir, "site-b.toml", &site_b);
    let _sites = [Node::start(dir, "site", "site-a.toml", &[]), Node::start(dir, "site", "site-b.toml", &[])];

    // Both controllers see every node: each node keeps a session with each.
    for url in [&url1, &url2] {
        wait_for_nodes(dir, url, &["r1", "r2", "site-a", "site-b"]);
    }
    // A tunnel set up by either controller is accepted by the relays and the site (one hop-key
    // secret for the group), and the two controllers' binding ids do not collide.
    let mut ids = Vec::new();
    for url in [&url1, &url2] {
        let bound =
            ctl(dir, url, &["bind", "--from", "site-a", "--to", "site-b", "--endpoint", "greeter", "--json"]);
        let bound: serde_json::Value = serde_json::from_str(&bound).expect("JSON");
        ids.push(bound["id"].as_u64().expect("an id"));
        let listen = bound["listen"].as_str().expect("its address").to_owned();
        let mut greeting = String::new();
        let mut conn = std::net::TcpStream::connect(&listen).expect("connect to the binding");
        std::io::Read::read_to_string(&mut conn, &mut greeting).expect("read");
        assert_eq!(greeting, "hello from site-b\n", "through {url}");
    }
    assert_ne!(ids[0], ids[1], "binding ids are unique across the group");
}
