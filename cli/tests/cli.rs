//! The `skybridge` binary as a user runs it: output, exit codes, one-line errors.

mod common;

use common::plugin;
use std::process::{Command, Output};

fn skybridge(args: &[&str]) -> Output {
    let cache = tempfile::tempdir().expect("tempdir");
    Command::new(env!("CARGO_BIN_EXE_skybridge"))
        .args(args)
        .env("SKYBRIDGE_PLUGIN_CACHE", cache.path())
        .env_remove("RUST_LOG")
        .output()
        .expect("run skybridge")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An error is exactly one `error:` line on stderr, and exit status 2.
fn assert_one_line_error(out: &Output, needle: &str) {
    assert_eq!(out.status.code(), Some(2), "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains(needle), "`{needle}` not in: {}", lines[0]);
}

#[test]
fn inspect_shows_world_imports_and_hash() {
    let path = plugin("weighted-scorer.wasm");
    let p = path.to_str().expect("utf-8 path");
    let out = skybridge(&["plugin", "inspect", p]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for needle in [
        "world    scorer",
        "plugin   weighted-scorer 0.1.0",
        "format   core module with WIT metadata",
        "skybridge:plugin/scoring@0.1.0",
        "latency",
    ] {
        assert!(stdout.contains(needle), "`{needle}` not in:\n{stdout}");
    }
    let sha = stdout.lines().find_map(|l| l.strip_prefix("sha256   ")).expect("sha256 line");
    assert_eq!(sha.len(), 64);

    let out = skybridge(&["plugin", "inspect", "--json", p]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["world"], "scorer");
    assert_eq!(json["sha256"], sha);

    let p2 = plugin("testing/misbehaving-scorer-wasip2.wasm");
    let out = skybridge(&["plugin", "inspect", p2.to_str().expect("utf-8 path")]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("format   component"), "{stdout}");
    assert!(
        stdout.contains("wasi:cli/stderr@0.2.6                    withheld: traps if called"),
        "{stdout}"
    );
}

#[test]
fn score_prints_value_and_explanation() {
    let path = plugin("weighted-scorer.wasm");
    let p = path.to_str().expect("utf-8 path");
    let out = skybridge(&[
        "plugin",
        "score",
        "--plugin",
        p,
        "--latency-ms",
        "30",
        "--loss",
        "0.01",
        "--jitter-ms",
        "2",
        "--hops",
        "3",
        "--weight",
        "latency=2",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // 2·30 + 0.01·1000 + 0.5·2 + 3 = 74
    assert!(stdout.contains("preference  -74"), "{stdout}");
    assert!(stdout.contains("explanation latency 60.00"), "{stdout}");

    let out = skybridge(&["plugin", "score", "--plugin", p, "--latency-ms", "30", "--weight", "latncy=2"]);
    assert_one_line_error(&out, "unknown weight `latncy`");
    let out = skybridge(&["plugin", "score", "--plugin", p, "--latency-ms", "30", "--weight", "latency"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("expected KEY=VALUE"), "{}", text(&out.stderr));
}

#[test]
fn authorize_exit_status_says_grant_or_refuse() {
    let path = plugin("allowlist-authorizer.wasm");
    let p = path.to_str().expect("utf-8 path");
    let rule = "allow.ops=acme-* aws-* object-storage/*";
    let ask = |account: &str| {
        skybridge(&[
            "plugin",
            "authorize",
            "--plugin",
            p,
            "--set",
            rule,
            "--account",
            account,
            "--platform",
            "aws-east",
            "--capability",
            "object-storage/logs",
        ])
    };
    let out = ask("acme-ops");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "granted: matched rule `allow.ops`");

    let out = ask("mallory");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("refused: no allowlist rule grants account `mallory`"));

    let out = skybridge(&[
        "plugin",
        "authorize",
        "--plugin",
        p,
        "--account",
        "a",
        "--platform",
        "b",
        "--capability",
        "no-slash",
    ]);
    assert_one_line_error(&out, "--capability must be KIND/NAME");
}

#[test]
fn bad_plugins_fail_with_one_clear_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"definitely not wasm").expect("write");
    let out = skybridge(&["plugin", "inspect", junk.to_str().expect("utf-8 path")]);
    assert_one_line_error(&out, "does not start with the wasm magic number");

    let stray = plugin("testing/no-world.wasm");
    let out = skybridge(&["plugin", "inspect", stray.to_str().expect("utf-8 path")]);
    assert_one_line_error(&out, "implements none of Skybridge's plugin worlds");

    let authz = plugin("allowlist-authorizer.wasm");
    let out =
        skybridge(&["plugin", "score", "--plugin", authz.to_str().expect("utf-8 path"), "--latency-ms", "1"]);
    assert_one_line_error(&out, "is an authorizer plugin, not a scorer");

    let looping = plugin("testing/misbehaving-scorer.wasm");
    let out = skybridge(&[
        "plugin",
        "score",
        "--plugin",
        looping.to_str().expect("utf-8 path"),
        "--latency-ms",
        "1",
        "--extra",
        "misbehave=1",
        "--deadline-ms",
        "100",
    ]);
    assert_one_line_error(&out, "exceeded its CPU deadline of 100 ms");
}

/// Idle poll with several worker threads would burn CPU for nothing: refused before anything
/// starts, with what to do instead.
#[test]
fn idle_poll_needs_one_thread() {
    for role in ["controller", "relay", "site"] {
        let out = skybridge(&[role, "--config", "unused.toml", "--idle-poll-us", "200"]);
        assert_one_line_error(&out, "idle poll needs one worker thread (--threads 1)");
    }
    let out = skybridge(&["relay", "--config", "unused.toml", "--threads", "2", "--idle-poll-us", "200"]);
    assert_one_line_error(&out, "--threads 1");
}

#[test]
fn help_explains_the_commands() {
    let out = skybridge(&["plugin", "--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for cmd in ["inspect", "score", "authorize"] {
        assert!(help.contains(cmd), "{help}");
    }
    let out = skybridge(&["plugin", "score", "--help"]);
    assert!(text(&out.stdout).contains("Example:"));
}

#[test]
fn certs_init_and_issue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("pki");
    let ca_s = ca.to_str().expect("utf-8 path");
    let out = skybridge(&["certs", "init", ca_s]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(ca.join("ca.pem").is_file() && ca.join("ca.key").is_file());
    assert_one_line_error(&skybridge(&["certs", "init", ca_s]), "already holds a CA");

    let out = skybridge(&["certs", "issue", "--ca", ca_s, "--name", "r1", "--role", "relay"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("relay `r1`:"), "{}", text(&out.stdout));
    assert!(ca.join("r1.pem").is_file() && ca.join("r1.key").is_file());

    assert_one_line_error(
        &skybridge(&["certs", "issue", "--ca", ca_s, "--name", "R_1", "--role", "site"]),
        "invalid node name",
    );
    let out = skybridge(&["certs", "issue", "--ca", ca_s, "--name", "x", "--role", "router"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown role `router`"), "{}", text(&out.stderr));
}

#[test]
fn a_config_that_is_not_a_regular_file_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("relay.toml");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(made.success());
    // /dev/zero would be read without end, a FIFO with no writer would block the open.
    for config in [std::path::Path::new("/dev/zero"), fifo.as_path()] {
        let out = skybridge(&["relay", "--config", config.to_str().expect("path")]);
        assert_one_line_error(&out, "is not a regular file");
    }
}

/// A reader that goes away (`skybridge … | head`) ends the tool quietly, with no panic.
#[test]
fn output_into_a_closed_pipe_ends_the_tool_quietly() {
    let path = plugin("weighted-scorer.wasm");
    let cache = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_skybridge"))
        .args(["plugin", "inspect", path.to_str().expect("utf-8 path")])
        .env("SKYBRIDGE_PLUGIN_CACHE", cache.path())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run skybridge");
    // Close the reading end before the tool writes a byte.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

/// Completion scripts: bash's parses and offers the subcommands, nested ones included; fish and
/// zsh get their own; an unknown shell is refused naming the ones there are.
#[test]
fn completions_for_bash_zsh_and_fish() {
    let bash = skybridge(&["completions", "bash"]);
    assert!(bash.status.success(), "{}", text(&bash.stderr));
    let script = text(&bash.stdout);
    let mut check =
        Command::new("bash").arg("-n").stdin(std::process::Stdio::piped()).spawn().expect("bash runs");
    std::io::Write::write_all(&mut check.stdin.take().expect("stdin"), script.as_bytes()).expect("write");
    assert!(check.wait().expect("bash").success(), "bash cannot parse the script");
    for word in ["controller", "relay", "ctl", "watch", "bindings", "--log-format"] {
        assert!(script.contains(word), "no `{word}` in the bash completions");
    }
    let fish = text(&skybridge(&["completions", "fish"]).stdout);
    assert!(fish.contains("complete -c skybridge") && fish.contains("watch"), "{fish}");
    assert!(text(&skybridge(&["completions", "zsh"]).stdout).starts_with("#compdef skybridge"));
    let out = skybridge(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("possible values: bash, elvish, fish, powershell, zsh"),
        "{}",
        text(&out.stderr)
    );
}

/// `skybridge plugin new` for each kind writes a crate that passes its own tests, builds to
/// wasm (with the toolchain `cargo xtask plugins` used: rustup's target or Debian's) and loads
/// with `plugin inspect` / `score` / `authorize` as written.
#[test]
fn plugin_new_writes_crates_that_test_green_build_to_wasm_and_load() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or(root.join("target"));
    let xtask = target.join("debug/xtask");
    assert!(xtask.is_file(), "no {}: run cargo xtask test", xtask.display());
    let toolchain = std::env::var("SKYBRIDGE_WASM_TOOLCHAIN").unwrap_or_else(|_| "auto".into());
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let tmp = tempfile::tempdir().expect("tempdir");
    // One native target folder for the three crates: the SDK is compiled once.
    let native = tmp.path().join("native-target");

    // A bad name, and a folder in the way, are one-line errors that write nothing.
    assert_one_line_error(&skybridge(&["plugin", "new", "scorer", "Fewest_Hops"]), "cannot name a plugin");
    std::fs::write(tmp.path().join("taken"), "").expect("write");
    let taken = tmp.path().join("taken");
    assert_one_line_error(
        &skybridge(&["plugin", "new", "scorer", "x", "--path", taken.to_str().expect("utf-8")]),
        "is not an empty folder",
    );

    for (kind, name, world) in [
        ("scorer", "fewest-loss", "scorer"),
        ("authorizer", "kind-gate", "authorizer"),
        ("adapter", "tiny-cloud", "adapter"),
    ] {
        let dir = tmp.path().join(name);
        let out = skybridge(&["plugin", "new", kind, name, "--path", dir.to_str().expect("utf-8")]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(dir.join("README.md").is_file() && dir.join("src/lib.rs").is_file());
        // Our lock file: the same dependency versions as the workspace, none fetched anew.
        std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).expect("copy the lock file");

        let tested = Command::new(&cargo)
            .args(["test", "--offline", "--manifest-path"])
            .arg(dir.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &native)
            .output()
            .expect("cargo runs");
        let report = text(&tested.stdout);
        assert!(tested.status.success(), "{kind}: cargo test failed:\n{report}\n{}", text(&tested.stderr));
        // The crate's own tests ran (the doc tests, which it has none of, report 0 after them).
        let passed = report
            .lines()
            .find_map(|l| l.strip_prefix("test result: ok. ")?.split(' ').next()?.parse::<u32>().ok());
        assert!(passed.is_some_and(|n| n >= 2), "{report}");

        let built = Command::new(&xtask)
            .args(["plugin-build", dir.to_str().expect("utf-8"), "--toolchain", &toolchain])
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .expect("xtask runs");
        assert!(built.status.success(), "{kind}: the wasm build failed:\n{}", text(&built.stderr));
        let wasm = text(&built.stdout).trim().to_owned();
        assert!(wasm.ends_with(&format!("{}.wasm", name.replace('-', "_"))), "{wasm}");

        let inspected = skybridge(&["plugin", "inspect", &wasm, "--json"]);
        assert!(inspected.status.success(), "{}", text(&inspected.stderr));
        let info: serde_json::Value = serde_json::from_slice(&inspected.stdout).expect("inspect's JSON");
        assert_eq!(info["world"], serde_json::json!(world), "{info:#}");
        match kind {
            "scorer" => {
                let fast = skybridge(&["plugin", "score", "--plugin", &wasm, "--latency-ms", "10", "--json"]);
                let slow = skybridge(&["plugin", "score", "--plugin", &wasm, "--latency-ms", "90", "--json"]);
                let value = |o: &Output| {
                    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("score's JSON");
                    v["value"].as_f64().unwrap_or_else(|| panic!("no value: {v}"))
                };
                assert!(value(&fast) > value(&slow));
            }
            "authorizer" => {
                let ask = |capability: &str| {
                    let args =
                        ["plugin", "authorize", "--plugin", &wasm, "--account", "acme", "--platform", "p"];
                    skybridge(&[&args[..], &["--capability", capability]].concat()).status.code()
                };
                assert_eq!((ask("object-store/logs"), ask("compute/vm")), (Some(0), Some(1)));
            }
            _ => {}
        }
    }
}

/// A build without etcd refuses an etcd store in one line that says how to build one with it.
#[cfg(not(feature = "etcd"))]
#[test]
fn a_build_without_etcd_refuses_an_etcd_store_saying_how_to_get_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::pki_and_token(dir.path(), &[("controller", "controller")]);
    common::write_controller_toml(dir.path(), "127.0.0.1:0");
    let config = std::fs::read_to_string(dir.path().join("controller.toml")).expect("read");
    let etcd = "store = { kind = \"etcd\", endpoints = [\"http://127.0.0.1:9\"], local = \"own.redb\", \
                seal_key = \"seal.key\" }";
    common::write(dir.path(), "controller.toml", &config.replace("store = \"state/c.redb\"", etcd));
    let out = Command::new(env!("CARGO_BIN_EXE_skybridge"))
        .args(["controller", "--config", "controller.toml"])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .output()
        .expect("run skybridge");
    assert_one_line_error(&out, "built without etcd support");
    assert!(text(&out.stderr).contains("--features etcd"), "{}", text(&out.stderr));
}

/// A controller that accepts connections and never answers (stopped, wedged): `ctl` gives up
/// after `--timeout` with one line that says so, instead of waiting for ever.
#[test]
fn ctl_gives_up_on_a_controller_that_does_not_answer() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", silent.local_addr().expect("addr"));
    let token = tempfile::NamedTempFile::new().expect("token file");
    std::fs::write(token.path(), "0123456789abcdef0123456789abcdef\n").expect("write");
    let token = token.path().to_str().expect("path").to_owned();
    let started = std::time::Instant::now();
    let out = skybridge(&["ctl", "--url", &url, "--token-file", &token, "--timeout", "1", "nodes"]);
    assert_one_line_error(&out, "no answer within 1 s");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "{:?}", started.elapsed());
    drop(silent);
}
