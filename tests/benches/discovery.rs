//! Discovery through the sandbox on a real answer: moto's `DescribeInstanceTypes` is one
//! ~5 MB XML page of 1,263 instance types. Fetches it from moto once, then has the real
//! `aws-adapter` read it (`continue-discovery`, on a fresh instance under the discovery
//! limits, as the site runs it) and prints the time per call and the plugin's peak linear
//! memory — what `discovery_memory_mib` (default 64) and `discovery_deadline_ms` (2,000)
//! must cover.
//!
//! Run with `cargo xtask bench` (or, with the peers installed, `cargo bench -p skybridge-tests
//! --bench discovery`).

#![allow(missing_docs)]

use std::time::{Duration, Instant};

use skybridge_gateway::plugin::{CloudResponse, EngineOptions, PluginEngine, PluginSpec, types};
use skybridge_tests::peers::moto;
use skybridge_tests::{peer_script, peers_python, plugin};

fn main() {
    let moto = moto();
    let port = moto.ready["port"].as_u64().expect("port");
    let (key, secret) =
        (moto.ready["access_key"].as_str().expect("key"), moto.ready["secret_key"].as_str().expect("secret"));
    let out = peers_python()
        .arg(peer_script("aws_raw.py"))
        .args([
            &format!("http://127.0.0.1:{port}"),
            key,
            secret,
            "ec2",
            "Action=DescribeInstanceTypes&Version=2016-11-15",
        ])
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let body = out.stdout;
    let types_listed = body.windows(14).filter(|w| w == b"<instanceType>").count();
    println!("moto DescribeInstanceTypes: {} bytes, {types_listed} instance types", body.len());

    // The engine as nodes run it (the test engine's pool is sized for tests).
    let engine =
        PluginEngine::new(EngineOptions { cache_dir: None, ..EngineOptions::default() }).expect("engine");
    let adapter = engine.load(&PluginSpec::new("adapter", plugin("aws-adapter"))).expect("aws-adapter");
    let context = vec![
        types::Pair { key: "region".into(), value: "us-east-1".into() },
        types::Pair { key: "discover-instance-types".into(), value: "true".into() },
    ];
    let cursor = "instance-types\n123456789012\n0\n";
    let mut times = Vec::new();
    // 20 calls under `cargo bench`; one when `cargo test` runs this as a smoke test.
    let calls = if std::env::args().any(|a| a == "--bench") { 20 } else { 1 };
    for _ in 0..calls {
        let response = CloudResponse { status: 200, headers: vec![], body: body.clone() };
        let started = Instant::now();
        let step =
            adapter.continue_discovery(&context, cursor, response).expect("the adapter reads the listing");
        times.push(started.elapsed());
        assert_eq!(step.services.len(), types_listed, "every instance type is a service");
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let stats = adapter.stats();
    println!(
        "aws-adapter reads it: p50 {:.1} ms, min {:.1} ms, max {:.1} ms over {} calls; peak plugin memory {:.1} MiB (limit {} MiB)",
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1]),
        times.len(),
        stats.peak_memory_bytes as f64 / (1 << 20) as f64,
        adapter.limits().discovery_memory_mib
    );
}
