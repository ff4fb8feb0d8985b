//! A group of controllers on real etcd, as separate processes: three etcd members (Debian's
//! `etcd-server`, which `cargo xtask test` installs) and controllers built with the `etcd`
//! feature (`cargo test -p skybridge --features etcd --test ha`).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Node, ok, skybridge, write};
use skybridge_gateway::testkit::etcd::{Member, cluster};

/// The controllers' lease TTL in these tests (the default is 5 s).
const TTL_S: u64 = 3;

/// `NAME.toml`: controller `name` with its mesh and its bindings on `ip`, its shared state in
/// the etcd `members`, its own in `state/NAME.redb`.
fn write_group_controller(dir: &Path, name: &str, ip: &str, members: &[Member]) {
    write_group_controller_ttl(dir, name, ip, members, TTL_S);
}

fn write_group_controller_ttl(dir: &Path, name: &str, ip: &str, members: &[Member], ttl_s: u64) {
    let endpoints: Vec<String> = members.iter().map(|m| format!("\"{}\"", m.client_url)).collect();
    write(
        dir,
        &format!("{name}.toml"),
        &format!(
            "name = \"{name}\"\nlisten = \"{ip}:0\"\nplugin_cache = \"cache\"\n\
             [store]\nkind = \"etcd\"\nendpoints = [{}]\nlocal = \"state/{name}.redb\"\nseal_key = \"seal.key\"\nlease_ttl_s = {ttl_s}\n\
             [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/{name}.pem\"\nkey = \"pki/{name}.key\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n\
             [ingress]\naddress = \"{ip}\"\n\
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

/// Wait (at most 5 s: each controller reads from a copy its watch keeps current) until the
/// account list `url` answers holds every string in `wanted`.
fn accounts_show(dir: &Path, url: &str, wanted: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listed = ctl(dir, url, &["account", "list", "--json"]);
        if wanted.iter().all(|w| listed.contains(w)) {
            return;
        }
        assert!(Instant::now() < deadline, "{url} lists {listed}, without all of {wanted:?}");
        std::thread::sleep(Duration::from_millis(50));
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
    accounts_show(dir, &url2, &["\"acme\""]);
    let map = ["account", "map", "acme", "--platform", "aws", "--principal", "AKIDEXAMPLE"];
    ctl(dir, &url2, &[&map[..], &["--secret-file", "aws.secret"]].concat());
    accounts_show(dir, &url1, &["aws", "AKIDEXAMPLE"]);

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
    accounts_show(dir, &url1, &["\"globex\""]);

    // The policy set at run time through one controller is in force on the others.
    ctl(dir, &url1, &["policy", "set", "--k", "2"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let policy: serde_json::Value =
            serde_json::from_str(&ctl(dir, &url2, &["policy", "show", "--json"])).expect("JSON");
        if policy["k"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "c2 did not take the group's policy: {policy}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A controller killed and started again finds the group's state where it was.
    drop(c1);
    let (_c1, url1) = start(dir, "c1");
    accounts_show(dir, &url1, &["\"acme\"", "\"globex\""]);
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

/// A group's controllers, each with its node process (`None` once killed), admin URL and
/// mesh address.
struct Controller {
    node: Option<Node>,
    ip: String,
    url: String,
    /// Stopped (SIGSTOP): its admin API would not answer, so it is not asked.
    paused: bool,
}

/// A group of controllers on etcd, two relays and two sites (site-b publishes `greeter`, which
/// greets and closes), each node with a session to every controller.
struct GroupMesh {
    dir: tempfile::TempDir,
    etcd: Vec<Member>,
    controllers: std::collections::BTreeMap<String, Controller>,
    nodes: std::collections::BTreeMap<String, Node>,
}

impl GroupMesh {
    /// `etcd` members; controllers `c1`… on 127.0.0.11… with lease TTL `ttl_s`.
    fn start(etcd: usize, controllers: usize, ttl_s: u64) -> GroupMesh {
        Self::start_with(etcd, controllers, ttl_s, "", "")
    }

    /// As [`GroupMesh::start`], site-b also publishing `endpoints` (TOML inline tables, each
    /// starting with a comma) and configured with `site_b` (TOML appended to its file).
    fn start_with(etcd: usize, controllers: usize, ttl_s: u64, endpoints: &str, site_b: &str) -> GroupMesh {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let members = cluster(etcd, None);
        let names: Vec<String> = (1..=controllers).map(|i| format!("c{i}")).collect();
        let mut certs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "controller")).collect();
        certs.extend([("r1", "relay"), ("r2", "relay"), ("site-a", "site"), ("site-b", "site")]);
        common::pki_and_token(dir, &certs);
        write(dir, "seal.key", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n");
        let mut running = std::collections::BTreeMap::new();
        let mut meshes = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let ip = format!("127.0.0.{}", 11 + i);
            write_group_controller_ttl(dir, name, &ip, &members, ttl_s);
            let (node, mesh, url) = start_with_mesh(dir, name);
            meshes.push((name.clone(), mesh));
            running.insert(name.clone(), Controller { node: Some(node), ip, url, paused: false });
        }
        let peers: Vec<(&str, &str)> = meshes.iter().map(|(n, m)| (n.as_str(), m.as_str())).collect();
        let mut nodes = std::collections::BTreeMap::new();
        write(dir, "r2.toml", &group_node_toml("r2", &peers));
        let r2 = Node::start(dir, "relay", "r2.toml", &[]);
        let r2_addr = r2.line("relay: listening on ").rsplit(' ').next().expect("address").to_owned();
        let r1_toml = format!(
            "{}neighbours = [{{ name = \"r2\", addr = \"{r2_addr}\" }}]\n",
            group_node_toml("r1", &peers)
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
            group_node_toml("site-a", &peers)
        );
        write(dir, "site-a.toml", &site_a);
        let site_b = format!(
            "{}relays = [{{ name = \"r2\", addr = \"{r2_addr}\" }}]\nendpoints = [{{ name = \"greeter\", addr = \"{greeter_addr}\" }}{endpoints}]\n{site_b}",
            group_node_toml("site-b", &peers)
        );
        write(dir, "site-b.toml", &site_b);
        nodes.insert("r1".to_owned(), r1);
        nodes.insert("r2".to_owned(), r2);
        nodes.insert("site-a".to_owned(), Node::start(dir, "site", "site-a.toml", &[]));
        nodes.insert("site-b".to_owned(), Node::start(dir, "site", "site-b.toml", &[]));
        let mesh = GroupMesh { dir: tmp, etcd: members, controllers: running, nodes };
        for c in mesh.controllers.values() {
            wait_for_nodes(mesh.dir(), &c.url, &["r1", "r2", "site-a", "site-b"]);
        }
        mesh
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn url(&self, controller: &str) -> &str {
        &self.controllers[controller].url
    }

    /// Bind `greeter` through `controller` (once the links it needs are measured); the
    /// binding's JSON.
    fn bind(&self, controller: &str) -> serde_json::Value {
        let args = ["ctl", "--url", self.url(controller), "bind", "--from", "site-a", "--to", "site-b"];
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = skybridge(self.dir(), &[&args[..], &["--endpoint", "greeter", "--json"]].concat());
            if out.status.success() {
                return serde_json::from_slice(&out.stdout).expect("JSON");
            }
            let why = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                Instant::now() < deadline && why.contains("HTTP 409"),
                "bind through {controller}: {why}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The group's bindings, as `controller` lists them.
    fn group_bindings(&self, controller: &str) -> Vec<serde_json::Value> {
        let listed = ctl(self.dir(), self.url(controller), &["bindings", "--json"]);
        serde_json::from_str::<serde_json::Value>(&listed).expect("JSON").as_array().expect("a list").clone()
    }

    /// The bindings `controller` serves.
    fn bindings(&self, controller: &str) -> Vec<serde_json::Value> {
        self.group_bindings(controller).into_iter().filter(|b| b["owner"] == controller).collect()
    }

    /// The controller (still running) serving binding `id`, and its view, if one does.
    fn serving(&self, id: u64) -> Option<(String, serde_json::Value)> {
        self.controllers.iter().filter(|(_, c)| c.node.is_some() && !c.paused).find_map(|(name, _)| {
            let found =
                self.bindings(name).into_iter().find(|b| b["id"] == id && b["tunnel"]["hops"].is_array());
            found.map(|b| (name.clone(), b))
        })
    }

    /// Kill `controller` without a word (SIGKILL).
    fn kill(&mut self, controller: &str) {
        drop(self.controllers.get_mut(controller).and_then(|c| c.node.take()));
    }

    fn signal(&mut self, controller: &str, signal: &str) {
        let c = self.controllers.get_mut(controller).expect("a controller");
        let node = c.node.as_ref().expect("running");
        let sent = std::process::Command::new("kill").args([signal, &node.child.id().to_string()]).status();
        assert!(sent.expect("kill runs").success(), "kill {signal}");
        match signal {
            "-STOP" => c.paused = true,
            "-CONT" => c.paused = false,
            // A graceful stop: wait until it has exited.
            _ => {
                let mut node = c.node.take().expect("running");
                let status = node.child.wait().expect("it ends");
                assert!(status.success(), "{controller} exits cleanly on {signal}: {status}");
            }
        }
    }
}

/// Connect to `addr` and read the greeting (what a client of the binding does).
fn greet(addr: &str) -> std::io::Result<String> {
    let addr: std::net::SocketAddr = addr.parse().expect("an address");
    let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut greeting = String::new();
    std::io::Read::read_to_string(&mut conn, &mut greeting)?;
    Ok(greeting)
}

#[test]
fn relays_and_sites_keep_a_session_with_every_controller_and_carry_tunnels_of_each() {
    let mesh = GroupMesh::start(1, 2, TTL_S);
    // A tunnel set up by either controller is accepted by the relays and the site (one hop-key
    // secret for the group), and the two controllers' binding ids do not collide.
    let mut ids = Vec::new();
    for c in ["c1", "c2"] {
        let bound = mesh.bind(c);
        ids.push(bound["id"].as_u64().expect("an id"));
        assert_eq!(bound["owner"], c);
        let greeting = greet(bound["listen"].as_str().expect("its address")).expect("through the binding");
        assert_eq!(greeting, "hello from site-b\n", "through {c}");
    }
    assert_ne!(ids[0], ids[1], "binding ids are unique across the group");
}

/// Poll until a running controller serves binding `id` on its own address and a client gets
/// through it; that controller, its view, and how long it took.
fn wait_for_takeover(
    mesh: &GroupMesh,
    id: u64,
    port: u16,
    not: &str,
    limit: Duration,
) -> (String, serde_json::Value, Duration) {
    let started = Instant::now();
    loop {
        if let Some((owner, view)) = mesh.serving(id).filter(|(o, _)| o != not) {
            let addr = format!("{}:{port}", mesh.controllers[&owner].ip);
            if greet(&addr).is_ok_and(|g| g == "hello from site-b\n") {
                return (owner, view, started.elapsed());
            }
        }
        assert!(started.elapsed() < limit, "binding {id} was not taken over within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_killed_owners_binding_is_taken_over_and_survives_the_etcd_leaders_death() {
    // Three etcd members and three controllers at the default lease TTL.
    let mut mesh = GroupMesh::start(3, 3, 5);
    let bound = mesh.bind("c1");
    let (id, epoch) = (bound["id"].as_u64().expect("id"), bound["epoch"].as_u64().expect("an epoch"));
    let listen: std::net::SocketAddr = bound["listen"].as_str().expect("listen").parse().expect("address");
    assert_eq!(listen.ip().to_string(), "127.0.0.11", "c1's ingress address");
    assert_eq!(greet(&listen.to_string()).expect("c1 serves it"), "hello from site-b\n");

    // The owner dies: a survivor claims the binding and serves it on the same port at its own
    // address, with a newer epoch.
    mesh.kill("c1");
    let (owner, view, took) = wait_for_takeover(&mesh, id, listen.port(), "c1", Duration::from_secs(30));
    eprintln!("binding {id} served again by {owner} {took:?} after its owner was killed");
    assert!(view["epoch"].as_u64().expect("an epoch") > epoch, "{view}");
    assert_eq!(view["owner"], owner.as_str());
    let shown = ctl(mesh.dir(), mesh.url(&owner), &["bindings"]);
    assert!(shown.contains(&format!("{owner} (epoch ")), "ctl bindings shows the owner: {shown}");
    let others: Vec<String> = ["c2", "c3"].iter().filter(|c| **c != owner).map(|c| c.to_string()).collect();
    assert!(mesh.bindings(&others[0]).iter().all(|b| b["id"] != id), "exactly one controller serves it");

    // The etcd leader dies: nobody's lease is lost, the owner does not change, traffic goes on.
    let status = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &mesh.etcd.iter().map(|m| m.client_url.clone()).collect::<Vec<_>>().join(",")])
        .args(["endpoint", "status", "-w", "json"])
        .output()
        .expect("etcdctl runs");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    let leader = status
        .as_array()
        .expect("a list")
        .iter()
        .position(|s| s["Status"]["leader"] == s["Status"]["header"]["member_id"]);
    let leader = leader.expect("a leader");
    drop(mesh.etcd.remove(leader));
    let killed = Instant::now();
    // Writes wait for the new leader: a new binding through the owner (an id block, an owner
    // key, kept state) is made once the two members left have elected one.
    let args = ["ctl", "--url", mesh.url(&owner), "bind", "--from", "site-a", "--to", "site-b"];
    let args = [&args[..], &["--endpoint", "greeter", "--json"]].concat();
    loop {
        let out = skybridge(mesh.dir(), &args);
        if out.status.success() {
            break;
        }
        let why = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no binding made 30 s after the etcd leader died: {why}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("a new binding made through {owner} {:?} after the etcd leader was killed", killed.elapsed());
    // Past the lease TTL and more: the owner kept its lease through the election.
    std::thread::sleep(Duration::from_secs(8).saturating_sub(killed.elapsed()));
    let (still, view) = mesh.serving(id).expect("still served");
    assert_eq!((still.as_str(), &view["epoch"]), (owner.as_str(), &view["epoch"]), "no owner change");
    let addr = format!("{}:{}", mesh.controllers[&owner].ip, listen.port());
    assert_eq!(greet(&addr).expect("traffic goes on"), "hello from site-b\n");
    assert_eq!(mesh.serving(id).map(|(_, v)| v["epoch"].clone()), Some(view["epoch"].clone()), "same epoch");

    // The killed controller comes back: it rejoins and claims nothing already owned.
    let (node, _, url) = start_with_mesh(mesh.dir(), "c1");
    let c1 = mesh.controllers.get_mut("c1").expect("c1");
    (c1.node, c1.url) = (Some(node), url);
    wait_for_controllers(mesh.dir(), mesh.url("c1"), &["c1", "c2", "c3"], Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(1));
    assert!(mesh.bindings("c1").is_empty(), "c1 claimed nothing");
    assert_eq!(mesh.serving(id).map(|(o, _)| o), Some(owner));
}

#[test]
fn a_paused_owner_fences_itself_and_a_graceful_stop_hands_over_at_once() {
    let mut mesh = GroupMesh::start(1, 2, TTL_S);
    let bound = mesh.bind("c1");
    let id = bound["id"].as_u64().expect("id");
    let port =
        bound["listen"].as_str().expect("listen").parse::<std::net::SocketAddr>().expect("address").port();

    // Paused past its TTL: the other controller takes the binding over …
    mesh.signal("c1", "-STOP");
    let (owner, _, took) = wait_for_takeover(&mesh, id, port, "c1", Duration::from_secs(TTL_S + 20));
    assert_eq!(owner, "c2");
    eprintln!("binding {id} taken over by c2 {took:?} after c1 was paused");
    // … and woken, c1 has fenced itself: it no longer serves or listens, so exactly one
    // controller listens on the binding's port; the relays dropped its old tunnel (older epoch).
    mesh.signal("c1", "-CONT");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !mesh.bindings("c1").is_empty() {
        assert!(Instant::now() < deadline, "c1 still serves {:?}", mesh.bindings("c1"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let refused = greet(&format!("127.0.0.11:{port}"));
    assert!(refused.is_err(), "c1 still listens on the binding's port: {refused:?}");
    assert_eq!(greet(&format!("127.0.0.12:{port}")).expect("c2 serves it"), "hello from site-b\n");
    mesh.nodes["r1"]
        .line_where("the older owner's tunnel dropped", |l| l.contains("the older owner's tunnel goes"));

    // A graceful stop of the owner: its lease is revoked, the other takes over at once.
    mesh.signal("c2", "-TERM");
    let (owner, _, took) = wait_for_takeover(&mesh, id, port, "c2", Duration::from_secs(TTL_S + 20));
    assert_eq!(owner, "c1");
    assert!(took < Duration::from_secs(TTL_S), "a graceful stop hands over before the TTL: {took:?}");
}

/// The keys etcd holds under the group's prefix that name binding `id`.
fn binding_keys(mesh: &GroupMesh, id: u64) -> Vec<String> {
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &mesh.etcd[0].client_url, "get", "skybridge/", "--prefix", "--keys-only"])
        .output()
        .expect("etcdctl runs");
    assert!(out.status.success(), "etcdctl: {}", String::from_utf8_lossy(&out.stderr));
    let suffix = format!("/{id:020}");
    String::from_utf8_lossy(&out.stdout).lines().filter(|k| k.ends_with(&suffix)).map(str::to_owned).collect()
}

#[test]
fn any_controller_lists_the_groups_bindings_and_closes_one_through_its_owner() {
    let mut mesh = GroupMesh::start(1, 2, TTL_S);
    let bound = mesh.bind("c1");
    let id = bound["id"].as_u64().expect("id");
    let listen = bound["listen"].as_str().expect("listen").to_owned();
    assert_eq!(greet(&listen).expect("c1 serves it"), "hello from site-b\n");
    let keys = binding_keys(&mesh, id);
    assert!(keys.iter().any(|k| k.contains("/owners/")), "the binding is in etcd: {keys:?}");

    // c2 lists c1's binding as c1 published it: its owner, address and the connection made.
    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let listed = mesh.group_bindings("c2").into_iter().find(|b| b["id"] == id);
        if let Some(b) = listed.filter(|b| b["connections"].as_u64() >= Some(1)) {
            break b;
        }
        assert!(Instant::now() < deadline, "c2 does not list binding {id} with its connection");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        (&seen["owner"], &seen["listen"], &seen["epoch"]),
        (&bound["owner"], &bound["listen"], &bound["epoch"])
    );
    let one = ctl(mesh.dir(), mesh.url("c2"), &["bindings", &id.to_string(), "--json"]);
    let one: serde_json::Value = serde_json::from_str(&one).expect("JSON");
    assert_eq!((&one["id"], &one["owner"]), (&bound["id"], &bound["owner"]), "one binding through c2");

    // Closed through c2: c1, its owner, closes it — listener, tunnel and every key in etcd.
    let closed = ctl(mesh.dir(), mesh.url("c2"), &["unbind", &id.to_string()]);
    assert!(closed.contains(&format!("binding {id} closed")), "{closed}");
    assert!(greet(&listen).is_err(), "c1 still listens for the closed binding");
    assert!(mesh.group_bindings("c1").is_empty() && mesh.group_bindings("c2").is_empty());
    assert_eq!(binding_keys(&mesh, id), Vec::<String>::new(), "etcd still holds the closed binding");

    // Closed through c2 while its owner is paused past its TTL: nobody claims it, it goes; and
    // c1, woken, serves it no more.
    let bound = mesh.bind("c1");
    let id = bound["id"].as_u64().expect("id");
    let listen = bound["listen"].as_str().expect("listen").to_owned();
    mesh.signal("c1", "-STOP");
    let closed = ctl(mesh.dir(), mesh.url("c2"), &["unbind", &id.to_string()]);
    assert!(closed.contains(&format!("binding {id} closed")), "{closed}");
    assert!(mesh.bindings("c2").is_empty(), "c2 claimed the binding asked to be closed");
    assert_eq!(binding_keys(&mesh, id), Vec::<String>::new(), "etcd still holds the closed binding");
    mesh.signal("c1", "-CONT");
    let deadline = Instant::now() + Duration::from_secs(5);
    while greet(&listen).is_ok() || !mesh.group_bindings("c1").is_empty() {
        assert!(Instant::now() < deadline, "c1 still serves the binding closed while it was paused");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A GCS JSON API that lists one bucket, `vault`, to any request (read to its blank line, so a
/// request that never ends keeps its connection open); its address.
fn gcs_listing_one_bucket() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(&conn);
                let mut line = String::new();
                while std::io::BufRead::read_line(&mut reader, &mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        let body =
                            r#"{"kind":"storage#buckets","items":[{"name":"vault","location":"US-EAST1"}]}"#;
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = std::io::Write::write_all(&mut &conn, answer.as_bytes());
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    addr
}

fn unix_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

/// site-b's TOML for a cloud at `gcs` (the GCS adapter) and the allowlist authorizer with
/// `rules` (TOML `key = value` pairs), deciding again every second; and the directory holding
/// the site's token.
fn site_with_gcs(gcs: std::net::SocketAddr, rules: &str) -> (String, tempfile::TempDir) {
    let token = tempfile::tempdir().expect("tempdir");
    let token_file = token.path().join("gcs.token");
    std::fs::write(&token_file, "a-token\n").expect("token written");
    let toml = format!(
        "reevaluate_every_s = 1\n\
         [cloud]\nendpoints = [{{ name = \"default\", url = \"http://{gcs}\" }}]\nprincipal = \"site-b\"\n\
         secret_file = \"{}\"\nattributes = {{ project = \"p\", endpoint = \"http://{gcs}\" }}\n\
         [cloud.adapter]\npath = \"{}\"\n\
         [authorizer]\npath = \"{}\"\nconfig = {{ {rules} }}\n",
        token_file.display(),
        common::plugin("gcs-adapter.wasm").display(),
        common::plugin("allowlist-authorizer.wasm").display(),
    );
    (toml, token)
}

/// The authorization of `object-store/vault`, as `controller` lists it.
fn vault_authorization(mesh: &GroupMesh, controller: &str) -> Option<serde_json::Value> {
    let all = ctl(mesh.dir(), mesh.url(controller), &["authorizations", "--json"]);
    let all: serde_json::Value = serde_json::from_str(&all).expect("JSON");
    all.as_array().expect("a list").iter().find(|a| a["match_key"] == "object-store/vault").cloned()
}

#[test]
fn a_capability_revoked_at_its_platform_closes_every_controllers_bindings_to_it() {
    let gcs = gcs_listing_one_bucket();
    // site-b discovers the bucket in its cloud and grants object stores until `until` (time
    // enough to start the group and bind on a slow machine), deciding again every second.
    let until = unix_s() + 30;
    let (site_b, _token) =
        site_with_gcs(gcs, &format!("\"allow.objects\" = \"* * object-store/* until={until}\""));
    let mesh =
        GroupMesh::start_with(1, 2, TTL_S, &format!(", {{ name = \"gcs\", addr = \"{gcs}\" }}"), &site_b);

    // Once granted, a binding to the bucket through each controller; each carries a request
    // the cloud is still waiting to hear the end of.
    let mut live = Vec::new();
    for c in ["c1", "c2"] {
        let args = [
            "ctl",
            "--url",
            mesh.url(c),
            "bind",
            "--from",
            "site-a",
            "--capability",
            "object-store/vault",
            "--json",
        ];
        let deadline = Instant::now() + Duration::from_secs(30);
        let bound: serde_json::Value = loop {
            let out = skybridge(mesh.dir(), &args);
            if out.status.success() {
                break serde_json::from_slice(&out.stdout).expect("JSON");
            }
            let why = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(Instant::now() < deadline, "bind to the bucket through {c}: {why}");
            std::thread::sleep(Duration::from_millis(300));
        };
        assert_eq!(bound["owner"], c);
        let addr: std::net::SocketAddr = bound["listen"].as_str().expect("listen").parse().expect("address");
        let mut conn = std::net::TcpStream::connect(addr).expect("connect");
        std::io::Write::write_all(&mut conn, b"GET /storage/v1/b/vault HTTP/1.1\r\nhost: gcs\r\n")
            .expect("sent");
        conn.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        live.push((c, bound["id"].as_u64().expect("id"), conn));
    }

    // The rule expires: site-b revokes the capability (telling one controller); both
    // controllers cut their binding's live session and close the binding.
    for (c, id, conn) in &mut live {
        let mut buf = [0u8; 512];
        let cut = loop {
            match std::io::Read::read(conn, &mut buf) {
                Ok(0) => break true,
                Ok(_) => {}
                Err(e) => {
                    break e.kind() != std::io::ErrorKind::WouldBlock
                        && e.kind() != std::io::ErrorKind::TimedOut;
                }
            }
        };
        assert!(cut, "{c}'s binding {id}: the live session was not cut");
        let now = unix_s();
        assert!(now >= until, "{c}'s binding {id} cut at {now}, before the grant expired at {until}");
    }
    for (c, id, _) in &live {
        let deadline = Instant::now() + Duration::from_secs(5);
        while mesh.group_bindings(c).iter().any(|b| b["id"] == *id) {
            assert!(Instant::now() < deadline, "{c} still lists binding {id}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let vault = vault_authorization(&mesh, "c2").expect("the authorization");
    assert_eq!(vault["state"], "revoked", "{vault}");
}

#[test]
fn a_pending_authorization_is_asked_on_by_a_survivor_when_its_asker_dies() {
    let gcs = gcs_listing_one_bucket();
    // A person must decide object stores until `until` (asked again every second); then the
    // allow rule grants them.
    let until = unix_s() + 25;
    let rules = format!(
        "\"pending.review\" = \"* * object-store/* until={until}\", \"pending-retry-s\" = \"1\", \"allow.objects\" = \"* * object-store/*\""
    );
    let (site_b, _token) = site_with_gcs(gcs, &rules);
    let mut mesh = GroupMesh::start_with(1, 2, TTL_S, "", &site_b);
    let deadline = Instant::now() + Duration::from_secs(30);
    let pending = loop {
        if let Some(a) = vault_authorization(&mesh, "c1").filter(|a| a["attempts"].as_u64() >= Some(1)) {
            break a;
        }
        assert!(Instant::now() < deadline, "the bucket's authorization was never asked");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(pending["state"], "pending", "{pending}");
    let asker = pending["asked_by"].as_str().expect("asked by a controller").to_owned();
    let survivor = if asker == "c1" { "c2" } else { "c1" };

    // Its asker dies before the person decides: the survivor asks on, and gets the grant.
    mesh.kill(&asker);
    assert!(unix_s() < until, "the asker was killed after the grant was due: too slow a start to tell");
    let deadline = Instant::now() + Duration::from_secs(60);
    let decided = loop {
        let a = vault_authorization(&mesh, survivor).expect("the authorization");
        if a["state"] != "pending" {
            break a;
        }
        assert!(Instant::now() < deadline, "still pending 60 s after its asker died: {a}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!((&decided["state"], &decided["asked_by"]), (&"granted".into(), &survivor.into()), "{decided}");
    assert_eq!(decided["request_id"], pending["request_id"], "asked on under the same id");
}
