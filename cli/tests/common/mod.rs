//! Helpers shared by the binary's integration tests and benchmarks: built plugins, node
//! processes, a development PKI.

// Each test or bench target uses only some of these.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A built plugin under `$SKYBRIDGE_PLUGIN_DIR` (default `target/plugins`), e.g.
/// `plugin("weighted-scorer.wasm")`; fails with how to build it when missing.
pub fn plugin(rel: &str) -> PathBuf {
    let dir = std::env::var_os("SKYBRIDGE_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"));
    let path = dir.join(rel);
    assert!(path.is_file(), "{} is missing: run `cargo xtask plugins`", path.display());
    path
}

pub fn skybridge(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skybridge"))
        .args(args)
        .current_dir(dir)
        .env("SKYBRIDGE_TOKEN_FILE", dir.join("admin.token"))
        .env_remove("SKYBRIDGE_URL")
        .env_remove("RUST_LOG")
        .output()
        .expect("run skybridge")
}

/// A node process, killed when dropped; its stderr lines arrive on a channel.
pub struct Node {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub name: String,
}

impl Node {
    pub fn start(dir: &Path, role: &str, config: &str, options: &[&str]) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_skybridge"))
            .args([role, "--config", config])
            .args(options)
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the node");
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Node { child, lines, name: config.to_owned() }
    }

    /// Wait for a stderr line starting with `prefix`; returns it.
    pub fn line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("{}: no line starting with `{prefix}`; got:\n{}", self.name, seen.join("\n"));
    }
}

impl Node {
    /// Wait for a stderr line (colour codes removed) for which `wanted` holds; returns it.
    pub fn line_where(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let plain = strip_colours(&line);
                    if wanted(&plain) {
                        return plain;
                    }
                    seen.push(plain);
                }
                Err(_) => break,
            }
        }
        panic!("{}: no line with {what}; got:\n{}", self.name, seen.join("\n"));
    }
}

/// `line` without ANSI colour sequences (ESC [ … letter).
pub fn strip_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

pub fn write(dir: &Path, file: &str, contents: &str) {
    std::fs::write(dir.join(file), contents).expect("write config");
}

/// A development CA in `dir/pki`, a certificate for each (name, role), and the admin token
/// file (private, as the controller wants it).
pub fn pki_and_token(dir: &Path, nodes: &[(&str, &str)]) {
    ok(skybridge(dir, &["certs", "init", "pki"]));
    for (name, role) in nodes {
        ok(skybridge(
            dir,
            &["certs", "issue", "--ca", "pki", "--name", name, "--role", role, "--out", "pki"],
        ));
    }
    write(dir, "admin.token", "0123456789abcdef0123456789abcdef\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("admin.token"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

pub fn node_toml(name: &str, listen: &str, controller: &str) -> String {
    format!(
        "name = \"{name}\"\nlisten = \"{listen}\"\n\
         tls = {{ ca = \"pki/ca.pem\", cert = \"pki/{name}.pem\", key = \"pki/{name}.key\" }}\n\
         controller = {{ name = \"controller\", addr = \"{controller}\" }}\n\
         probing = {{ interval_ms = 20, report_ms = 200 }}\n"
    )
}

/// `controller.toml` in `dir`: a controller named `controller` with its mesh on `listen`, its
/// store in `state/`, the development PKI, the admin API on a free port with `admin.token`,
/// and the weighted scorer.
pub fn write_controller_toml(dir: &Path, listen: &str) {
    write(
        dir,
        "controller.toml",
        &format!(
            "name = \"controller\"\nlisten = \"{listen}\"\nstore = \"state/c.redb\"\nplugin_cache = \"cache\"\n\
             [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/controller.pem\"\nkey = \"pki/controller.key\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n\
             [policy]\nscorer = \"{}\"\n",
            plugin("weighted-scorer.wasm").display()
        ),
    );
}

/// `skybridge demo` run as a user runs it, through its steps to the point where it keeps
/// running; SIGINT on [`Demo::interrupt`], killed when dropped.
pub struct Demo {
    pub child: Child,
    /// Every line it printed up to "Ctrl-C stops it.".
    pub steps: Vec<String>,
    /// The admin API it names.
    pub url: String,
    /// The admin token's file it names.
    pub token_file: String,
    /// Where its warnings go (`--log-level warn`): read by [`Demo::log`] when a test fails.
    log: PathBuf,
    /// What it prints after the steps. Kept so that its stdout stays open: a demo whose reader
    /// went away ends at its next line, as on any closed pipe (this made the dashboard test
    /// flaky: the demo quit when it printed the degrade step).
    pub later: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Demo {
    /// Start the demo with the built scorer and `extra` arguments; wait (at most 240 s) until
    /// it has shown every step.
    pub fn start(extra: &[&str]) -> Demo {
        let dir = tempfile::tempdir().expect("tempdir");
        let scorer = plugin("weighted-scorer.wasm");
        let log = dir.path().join("demo.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_skybridge"))
            .args(["--log-level", "warn", "demo", "--scorer", scorer.to_str().expect("utf-8")])
            .args(extra)
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            // The real cloud emulators, where `cargo xtask test` installs them.
            .env("SKYBRIDGE_PEERS_PYTHON", peers("SKYBRIDGE_PEERS_PYTHON", "venv/bin/python"))
            .env("SKYBRIDGE_PEERS_BIN", peers("SKYBRIDGE_PEERS_BIN", "node/node_modules/.bin"))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("the demo's log file"))
            .spawn()
            .expect("the demo starts");
        let lines = lines_of(child.stdout.take().expect("stdout"));
        let deadline = Instant::now() + Duration::from_secs(240);
        let mut steps: Vec<String> = Vec::new();
        while steps.last().is_none_or(|l| l != "Ctrl-C stops it.") {
            let left = deadline.checked_duration_since(Instant::now()).unwrap_or_default();
            match lines.recv_timeout(left) {
                Ok(line) => steps.push(line),
                Err(_) => panic!("the demo did not get to the end of its steps:\n{}", steps.join("\n")),
            }
        }
        let api = steps.iter().find_map(|l| l.strip_prefix("admin API:  ")).expect("the admin API line");
        let (url, token_file) = api.split_once("   (token in ").expect("the token file");
        let (url, token_file) = (url.to_owned(), token_file.trim_end_matches(')').to_owned());
        Demo { child, steps, url, token_file, log, later: lines, _dir: dir }
    }

    /// The demo's warnings so far (colour codes removed).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).map(|s| strip_colours(&s)).unwrap_or_default()
    }

    /// Ctrl-C, and how it exited (within 20 s).
    pub fn interrupt(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status().expect("kill");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the demo did not stop within 20 s of Ctrl-C");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `$VAR`, else `target/peers/REL` (where `cargo xtask test` installs the test peers).
pub fn peers(var: &str, rel: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/peers").join(rel))
}

/// The lines a child writes on `out`, as they come.
pub fn lines_of(out: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}
