//! Probe accuracy: what end-to-end probes over real QUIC measure, against what the user-space
//! link emulator applies. Prints a table (emulated vs measured RTT and loss) for BENCHMARKS.md.
//!
//! `cargo xtask bench` runs every setting with 400 probes; under `cargo test` (no `--bench`
//! argument) one setting runs with 50 probes, as a smoke test.

#![allow(missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use skybridge_gateway::mesh::identity::{NodeIdentity, Role, init_ca, issue};
use skybridge_gateway::mesh::probe::{ProbePlan, Prober};
use skybridge_gateway::mesh::transport::MeshEndpoint;
use skybridge_gateway::testkit::netem::{Conditions, LinkParams, UdpLink};

fn identity(ca: &std::path::Path, dir: &std::path::Path, name: &str) -> NodeIdentity {
    let (cert, key) = issue(ca, name, Role::Relay, dir).expect("issue");
    NodeIdentity::load(name, Role::Relay, &cert, &key, &ca.join("ca.pem")).expect("load")
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca");
    init_ca(&ca).expect("ca");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let r1 = MeshEndpoint::bind(any, identity(&ca, dir.path(), "r1"), &[Role::Relay]).expect("bind");
    let r2 = MeshEndpoint::bind(any, identity(&ca, dir.path(), "r2"), &[Role::Relay]).expect("bind");
    let target = r1.local_addr().expect("addr");
    let p1 = Prober::new("r1", true, std::time::Duration::from_millis(500));
    tokio::spawn(async move {
        while let Some((conn, _)) = r1.accept().await {
            p1.attach("r2", conn, true);
        }
    });
    let p2 = Prober::new("r2", true, std::time::Duration::from_millis(500));

    let settings: &[(f64, f64, f64)] = if full {
        // one-way delay ms, jitter ms, loss per direction
        &[
            (2.0, 0.0, 0.0),
            (10.0, 0.0, 0.0),
            (25.0, 0.0, 0.0),
            (50.0, 0.0, 0.0),
            (10.0, 2.0, 0.0),
            (10.0, 0.0, 0.01),
            (10.0, 0.0, 0.05),
            (10.0, 0.0, 0.15),
            (25.0, 5.0, 0.10),
        ]
    } else {
        &[(5.0, 0.0, 0.05)]
    };
    let count = if full { 400 } else { 50 };
    println!(
        "| one-way delay | jitter | loss/dir | emulated RTT | measured RTT | emulated RT loss | measured loss | measured jitter |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (i, &(delay, jitter, loss)) in settings.iter().enumerate() {
        let params = LinkParams { delay_ms: delay, jitter_ms: jitter, loss, ..LinkParams::default() };
        // A fresh link and connection per setting, so earlier loss cannot linger in QUIC's state.
        let link = UdpLink::start(target, Conditions::symmetric(params), i as u64 + 1).await.expect("link");
        let conn = r2.connect(link.local_addr(), "r1", &[Role::Relay]).await.expect("connect");
        let plan = ProbePlan { count, interval: Duration::from_millis(5), grace: Duration::from_millis(500) };
        p2.attach("r1", conn.clone(), true);
        let s = p2.probe_link("r1", plan).await.expect("probe");
        let rt_loss = 1.0 - (1.0 - loss) * (1.0 - loss);
        println!(
            "| {delay} ms | ±{jitter} ms | {:.0} % | {:.1} ms | {} | {:.1} % | {:.1} % | {:.2} ms |",
            loss * 100.0,
            2.0 * delay,
            s.rtt_ms.map_or("—".into(), |r| format!("{r:.1} ms")),
            rt_loss * 100.0,
            s.loss * 100.0,
            s.jitter_ms
        );
        conn.close(0u32.into(), b"done");
    }
    println!("({count} probes per setting, 5 ms apart)");
}
