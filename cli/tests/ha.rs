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
    let node = Node::start(dir, "controller", &format!("{name}.toml"), &[]);
    let line = node.line("controller: mesh on");
    let url = line.rsplit(' ').next().expect("the admin URL").to_owned();
    (node, url)
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
