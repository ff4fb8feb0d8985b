//! Real etcd members as separate processes on loopback (Debian's `etcd-server`, which
//! `cargo xtask test` installs): for the etcd engine's tests and the tests of a controller
//! group. Each member is killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// An etcd member, killed when dropped.
pub struct Member {
    /// Its process (kill or stop it to test faults).
    pub child: Child,
    /// Where clients reach it.
    pub client_url: String,
    _data: tempfile::TempDir,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The members' TLS: clients must present a certificate from `ca` (`--client-cert-auth`).
pub struct MemberTls {
    /// The members' certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The CA clients' certificates must come from.
    pub ca: PathBuf,
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Start a cluster of `n` members on loopback, with `tls` when given.
pub fn cluster(n: usize, tls: Option<&MemberTls>) -> Vec<Member> {
    let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
    let initial: Vec<String> =
        ports.iter().enumerate().map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}")).collect();
    ports
        .iter()
        .enumerate()
        .map(|(i, (client, peer))| {
            let data = tempfile::tempdir().expect("tempdir");
            let scheme = if tls.is_some() { "https" } else { "http" };
            let client_url = format!("{scheme}://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let mut etcd = Command::new("etcd");
            if let Some(tls) = tls {
                etcd.arg("--cert-file")
                    .arg(&tls.cert)
                    .arg("--key-file")
                    .arg(&tls.key)
                    .arg("--trusted-ca-file")
                    .arg(&tls.ca)
                    .arg("--client-cert-auth");
            }
            let child = etcd
                .args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(data.path().join("etcd"))
                .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial.join(","), "--initial-cluster-state", "new"])
                .args(["--logger", "zap", "--log-level", "error"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("etcd starts (cargo xtask test installs Debian's etcd-server)");
            Member { child, client_url, _data: data }
        })
        .collect()
}
