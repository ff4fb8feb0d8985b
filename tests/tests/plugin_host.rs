//! The plugin host against real wasm components built from `plugins/`: reference plugins,
//! misbehaving plugins, the adapter world, bad files, the compile cache and hot reload.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use skybridge_gateway::plugin::{
    CallFailure, Description, Format, ImportStatus, LoadError, Plugin, PluginLimits, PluginRegistry,
    PluginSpec, Reload, World, adapting, authorization, scoring, types,
};
use skybridge_tests::{TestEngine, plugin, test_plugin};

fn metrics(rtt_ms: f64, loss: f64, jitter_ms: f64, hops: u32) -> scoring::PathMetrics {
    scoring::PathMetrics { rtt_ms, loss, jitter_ms, hops, extra: vec![] }
}

fn weights(pairs: &[(&str, f64)]) -> Vec<types::NamedValue> {
    pairs.iter().map(|(n, v)| types::NamedValue { name: (*n).into(), value: *v }).collect()
}

fn misbehave(code: f64) -> scoring::PathMetrics {
    scoring::PathMetrics {
        extra: vec![types::NamedValue { name: "misbehave".into(), value: code }],
        ..metrics(7.0, 0.0, 0.0, 1)
    }
}

fn load(t: &TestEngine, spec: PluginSpec) -> Plugin {
    t.engine.load(&spec).unwrap_or_else(|e| panic!("loading {}: {e}", spec.path.display()))
}

/// Load with a 2 s deadline: deadlines are wall-clock (epoch ticks), and on a loaded 2-core
/// machine an ordinary call can be descheduled for longer than the default 50 ms. Tests that
/// are not about deadlines use this.
fn load_steady(t: &TestEngine, spec: PluginSpec) -> Plugin {
    let limits = PluginLimits { deadline_ms: 2_000, ..spec.limits.clone() };
    load(t, spec.with_limits(limits))
}

/// The documented formula of `weighted-scorer`.
fn weighted_formula(m: &scoring::PathMetrics, w: [f64; 4]) -> f64 {
    -(w[0] * m.rtt_ms + w[1] * m.loss * 1000.0 + w[2] * m.jitter_ms + w[3] * f64::from(m.hops))
}

// -------------------------------------------------------------------------------------------------
// Reference plugins

#[test]
fn weighted_scorer_follows_its_documented_formula() {
    let t = TestEngine::new();
    let scorer = load_steady(&t, PluginSpec::new("weighted", plugin("weighted-scorer")));
    assert_eq!(scorer.world(), World::Scorer);
    let Description::Scorer(info) = &scorer.info().description else { panic!("not a scorer description") };
    assert_eq!(info.name, "weighted-scorer");
    let defaults: Vec<(&str, f64)> =
        info.weights.iter().map(|w| (w.name.as_str(), w.default_value)).collect();
    assert_eq!(defaults, [("latency", 1.0), ("loss", 1.0), ("jitter", 0.5), ("hops", 1.0)]);

    let cases = [
        (metrics(30.0, 0.01, 2.0, 3), vec![], [1.0, 1.0, 0.5, 1.0]),
        (metrics(12.5, 0.0, 0.3, 2), vec![], [1.0, 1.0, 0.5, 1.0]),
        (metrics(80.0, 0.2, 15.0, 6), vec![("latency", 0.1), ("loss", 5.0)], [0.1, 5.0, 0.5, 1.0]),
        (
            metrics(5.0, 0.05, 1.0, 1),
            vec![("latency", 3.0), ("jitter", 0.0), ("hops", 10.0)],
            [3.0, 1.0, 0.0, 10.0],
        ),
        (metrics(0.0, 1.0, 0.0, 0), vec![("loss", 0.25)], [1.0, 0.25, 0.5, 1.0]),
    ];
    for (m, w, effective) in cases {
        let got = scorer.score(&m, &weights(&w)).expect("score");
        let want = weighted_formula(&m, effective);
        assert!((got.value - want).abs() < 1e-9, "{m:?} {w:?}: got {}, want {want}", got.value);
        assert!(got.explanation.contains(&format!("= {:.2}", -want)), "{}", got.explanation);
    }
}

#[test]
fn weighted_scorer_prefers_what_the_weights_say() {
    let t = TestEngine::new();
    let scorer = load_steady(&t, PluginSpec::new("weighted", plugin("weighted-scorer")));
    let slow_clean = metrics(60.0, 0.0, 1.0, 3);
    let fast_lossy = metrics(20.0, 0.03, 1.0, 3);
    let pick = |w: &[(&str, f64)]| {
        let a = scorer.score(&slow_clean, &weights(w)).expect("score").value;
        let b = scorer.score(&fast_lossy, &weights(w)).expect("score").value;
        if a > b { "slow-clean" } else { "fast-lossy" }
    };
    assert_eq!(pick(&[("latency", 5.0), ("loss", 0.1)]), "fast-lossy");
    assert_eq!(pick(&[("latency", 0.1), ("loss", 5.0)]), "slow-clean");
}

#[test]
fn scorer_refusals_are_guest_errors_not_faults() {
    let t = TestEngine::new();
    let scorer = load_steady(&t, PluginSpec::new("weighted", plugin("weighted-scorer")));
    let e = scorer.score(&metrics(1.0, 0.0, 0.0, 1), &weights(&[("latncy", 1.0)])).unwrap_err();
    assert_eq!(e.call, "score");
    assert_eq!(e.plugin, "weighted");
    match &e.cause {
        CallFailure::Rejected(msg) => assert!(msg.contains("unknown weight `latncy`"), "{msg}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(!e.cause.is_fault());
    let e = scorer.score(&metrics(1.0, 2.0, 0.0, 1), &[]).unwrap_err();
    assert!(matches!(&e.cause, CallFailure::Rejected(m) if m.contains("loss must be a ratio")), "{e}");
    // Still perfectly usable.
    assert!(scorer.score(&metrics(1.0, 0.0, 0.0, 1), &[]).is_ok());
    let stats = scorer.stats();
    assert_eq!((stats.rejections, stats.faults), (2, 0));
}

fn request(account: &str, platform: &str, kind: &str, name: &str) -> authorization::AuthorizationRequest {
    authorization::AuthorizationRequest {
        account: account.into(),
        platform: platform.into(),
        capability: types::Capability { kind: kind.into(), name: name.into(), attributes: vec![] },
        context: vec![],
    }
}

#[test]
fn allowlist_authorizer_grants_and_refuses_as_configured() {
    let t = TestEngine::new();
    let spec = PluginSpec::new("allow", plugin("allowlist-authorizer"))
        .with_config("allow.ops", "acme-* aws-* object-storage/*")
        .with_config("allow.lab", "alice openstack-lab *")
        .with_config("unrelated", "ignored");
    let authz = load_steady(&t, spec);
    assert_eq!(authz.world(), World::Authorizer);
    use authorization::Decision::{Grant, Refuse};
    assert_eq!(
        authz.authorize(&request("acme-ops", "aws-east", "object-storage", "logs")).expect("call"),
        Grant("matched rule `allow.ops`".into())
    );
    assert_eq!(
        authz.authorize(&request("alice", "openstack-lab", "compute", "vm")).expect("call"),
        Grant("matched rule `allow.lab`".into())
    );
    for r in [
        request("acme-ops", "azure-west", "object-storage", "logs"),
        request("bob", "aws-east", "object-storage", "logs"),
        request("acme-ops", "aws-east", "compute", "vm"),
    ] {
        match authz.authorize(&r).expect("call") {
            Refuse(why) => assert!(why.contains("no allowlist rule") && why.contains("2 rules"), "{why}"),
            Grant(why) => panic!("{r:?} was granted: {why}"),
        }
    }

    let broken = load_steady(
        &t,
        PluginSpec::new("broken", plugin("allowlist-authorizer")).with_config("allow", "too few"),
    );
    match broken.authorize(&request("acme-ops", "aws-east", "object-storage", "logs")).expect("call") {
        Refuse(why) => assert!(why.contains("rule `allow` is malformed"), "{why}"),
        Grant(why) => panic!("a malformed policy granted: {why}"),
    }
}

#[test]
fn a_call_outside_the_plugins_world_is_refused() {
    let t = TestEngine::new();
    let authz = load_steady(&t, PluginSpec::new("allow", plugin("allowlist-authorizer")));
    let e = authz.score(&metrics(1.0, 0.0, 0.0, 1), &[]).unwrap_err();
    assert_eq!(e.cause, CallFailure::WrongWorld { expected: "scorer", actual: "authorizer" });
}

// -------------------------------------------------------------------------------------------------
// The adapter world, through a real adapter using the host's crypto, clock and config

#[test]
fn adapter_world_round_trips_and_signs_with_host_crypto() {
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};

    let t = TestEngine::new();
    let adapter = load_steady(
        &t,
        PluginSpec::new("toy", test_plugin("signing-adapter")).with_config("default-region", "eu-1"),
    );
    let Description::Adapter(info) = &adapter.info().description else { panic!("not an adapter") };
    assert_eq!((info.cloud_kind.as_str(), info.needs_body_sha256), ("toy", true));

    let doc =
        b"# services\nobject-storage logs http://127.0.0.1:9000 us-2\ncompute vms http://127.0.0.1:9001\n";
    let services = adapter.parse_service_info(doc, "text/plain").expect("parse");
    assert_eq!(services.len(), 2);
    assert_eq!((services[0].name.as_str(), services[0].region.as_deref()), ("logs", Some("us-2")));
    assert_eq!(services[1].region.as_deref(), Some("eu-1"), "default region comes from config");
    let e = adapter.parse_service_info(b"just-one-field", "text/plain").unwrap_err();
    assert!(matches!(&e.cause, CallFailure::Rejected(m) if m.contains("line 1")), "{e}");
    let e = adapter.parse_service_info(doc, "application/json").unwrap_err();
    assert!(matches!(&e.cause, CallFailure::Rejected(m) if m.contains("unsupported content type")), "{e}");

    let caps = adapter.select_capabilities(&services[0]).expect("capabilities");
    assert_eq!(caps.len(), 1);
    assert_eq!((caps[0].kind.as_str(), caps[0].name.as_str()), ("object-storage", "logs"));
    assert!(caps[0].attributes.contains(&types::Pair { key: "region".into(), value: "us-2".into() }));

    let body_sha = hex::encode(Sha256::digest(b"hello"));
    let head = adapting::RequestHead {
        method: "PUT".into(),
        path: "/bucket/key".into(),
        query: "x=1".into(),
        headers: vec![
            types::Pair { key: "Authorization".into(), value: "Skybridge client-token".into() },
            types::Pair { key: "Host".into(), value: "skybridge.local".into() },
            types::Pair { key: "content-type".into(), value: "text/plain".into() },
        ],
        body_sha256: Some(body_sha.clone()),
    };
    let creds = adapting::TargetCredentials {
        platform: "toy-cloud".into(),
        principal: "AKID".into(),
        secret: "s3cret".into(),
        attributes: vec![types::Pair { key: "host".into(), value: "127.0.0.1:9000".into() }],
    };
    let out = adapter.rewrite_request(&head, &creds).expect("rewrite");
    let header = |name: &str| {
        let found: Vec<&str> = out
            .headers
            .iter()
            .filter(|p| p.key.eq_ignore_ascii_case(name))
            .map(|p| p.value.as_str())
            .collect();
        assert_eq!(found.len(), 1, "exactly one {name} header in {:?}", out.headers);
        found[0].to_owned()
    };
    assert_eq!(header("host"), "127.0.0.1:9000");
    assert_eq!(header("content-type"), "text/plain");
    let date = header("x-toy-date");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let signed_at: u64 = date.parse().expect("numeric date");
    assert!(now.abs_diff(signed_at) < 300, "the host clock reached the plugin: {signed_at} vs {now}");
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").expect("key");
    mac.update(format!("PUT\n/bucket/key\nx=1\n{date}\n{body_sha}").as_bytes());
    let expected = hex::encode(mac.finalize().into_bytes());
    assert_eq!(header("authorization"), format!("TOY AKID:{expected}"));

    let no_host = adapting::TargetCredentials { attributes: vec![], ..creds };
    let e = adapter.rewrite_request(&head, &no_host).unwrap_err();
    assert!(matches!(&e.cause, CallFailure::Rejected(m) if m.contains("`host` attribute")), "{e}");
}

// -------------------------------------------------------------------------------------------------
// Misbehaving plugins: each fails with the right typed error, and the host stays healthy

#[test]
fn misbehaving_plugins_fail_with_typed_errors_and_the_host_recovers() {
    let t = TestEngine::new();
    let good = load_steady(&t, PluginSpec::new("weighted", plugin("weighted-scorer")));
    // Deadlines are wall-clock (epoch ticks): a generous one keeps the memory and trap cases
    // from racing it on a loaded machine. The default deadline is tested below.
    let limits = PluginLimits { deadline_ms: 2_000, ..PluginLimits::default() };
    let bad = load(&t, PluginSpec::new("bad", test_plugin("misbehaving-scorer")).with_limits(limits.clone()));

    let e = bad.score(&misbehave(1.0), &[]).unwrap_err();
    assert_eq!(e.cause, CallFailure::DeadlineExceeded { limit: Duration::from_millis(2_000) }, "{e}");
    assert_eq!((e.plugin.as_str(), e.call), ("bad", "score"));

    let e = bad.score(&misbehave(2.0), &[]).unwrap_err();
    match e.cause {
        CallFailure::MemoryLimit { limit, requested } => {
            assert_eq!(limit, limits.memory_mib << 20);
            assert!(requested > limit);
        }
        other => panic!("expected the memory limit, got {other:?}"),
    }

    let e = bad.score(&misbehave(3.0), &[]).unwrap_err();
    match &e.cause {
        CallFailure::Trap(msg) => {
            assert!(
                msg.contains("misbehaving-scorer was told to trap"),
                "the panic message reaches the error: {msg}"
            )
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert!(e.cause.is_fault());

    // After every fault: the same plugin answers its next call, and so does another one.
    for _ in 0..3 {
        assert_eq!(bad.score(&misbehave(0.0), &[]).expect("recovered").explanation, "behaved");
        assert!(good.score(&metrics(10.0, 0.0, 0.0, 2), &[]).is_ok());
    }
    let stats = bad.stats();
    assert_eq!(stats.faults, 3);
    // Failures are counted by kind; the first call (describe, at load) is always timed.
    let kinds: Vec<(String, u64)> = stats.failures().into_iter().collect();
    let want: Vec<(String, u64)> =
        [("deadline", 1), ("memory", 1), ("trap", 1)].map(|(k, n)| (k.to_owned(), n)).into();
    assert_eq!(kinds, want);
    assert!(stats.timed_calls >= 1 && stats.timed_calls <= stats.calls, "{stats:?}");
    assert!(stats.mean_call_us() > 0.0, "{stats:?}");

    // An explanation of 1 MiB would land in every decision record: an invalid answer.
    let e = bad.score(&misbehave(5.0), &[]).unwrap_err();
    match &e.cause {
        CallFailure::InvalidAnswer(why) => {
            assert!(why.contains("explanation is 1048576 bytes long, more than 4096"), "{why}")
        }
        other => panic!("expected an invalid answer, got {other:?}"),
    }
    assert_eq!(bad.score(&misbehave(0.0), &[]).expect("recovered").explanation, "behaved");
}

#[test]
fn the_default_deadline_is_50_ms_and_limits_are_per_plugin() {
    let t = TestEngine::new();
    let looping = load(&t, PluginSpec::new("loop", test_plugin("misbehaving-scorer")));
    let e = looping.score(&misbehave(1.0), &[]).unwrap_err();
    assert_eq!(e.cause, CallFailure::DeadlineExceeded { limit: Duration::from_millis(50) });

    let slow = PluginLimits { deadline_ms: 300, ..PluginLimits::default() };
    let looping = load(&t, PluginSpec::new("loop-300", test_plugin("misbehaving-scorer")).with_limits(slow));
    let e = looping.score(&misbehave(1.0), &[]).unwrap_err();
    assert_eq!(e.cause, CallFailure::DeadlineExceeded { limit: Duration::from_millis(300) });

    let small = PluginLimits { deadline_ms: 5_000, memory_mib: 4, ..PluginLimits::default() };
    let hog = load(&t, PluginSpec::new("hog-4", test_plugin("misbehaving-scorer")).with_limits(small));
    let e = hog.score(&misbehave(2.0), &[]).unwrap_err();
    assert!(matches!(e.cause, CallFailure::MemoryLimit { limit, .. } if limit == 4 << 20), "{e}");
}

#[test]
fn a_memory_limit_below_the_plugins_needs_fails_at_load() {
    let t = TestEngine::new();
    let limits = PluginLimits { memory_mib: 0, ..PluginLimits::default() };
    let e =
        t.engine.load(&PluginSpec::new("tiny", plugin("weighted-scorer")).with_limits(limits)).unwrap_err();
    match e {
        LoadError::Describe { source, .. } => {
            assert!(matches!(source.cause, CallFailure::MemoryLimit { limit: 0, .. }), "{source}")
        }
        other => panic!("expected a describe failure, got {other}"),
    }
    let too_big = PluginLimits { memory_mib: 1024, ..PluginLimits::default() };
    let e =
        t.engine.load(&PluginSpec::new("huge", plugin("weighted-scorer")).with_limits(too_big)).unwrap_err();
    assert!(matches!(e, LoadError::BadLimits { .. }), "{e}");
}

#[test]
fn a_log_flood_is_rate_limited() {
    let t = TestEngine::new();
    // A generous deadline: what is tested is the log limit, not the CPU deadline.
    let limits =
        PluginLimits { deadline_ms: 10_000, log_per_second: 50, log_burst: 100, ..PluginLimits::default() };
    let flood = load(&t, PluginSpec::new("flood", test_plugin("misbehaving-scorer")).with_limits(limits));
    let started = std::time::Instant::now();
    let s = flood.score(&misbehave(4.0), &[]).expect("flood call completes");
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(s.explanation, "flooded the log, then scored");
    let stats = flood.stats();
    assert_eq!(stats.logs_emitted + stats.logs_dropped, 10_000);
    // At most the burst plus what the rate refilled while the call ran.
    let allowed = 100.0 + 50.0 * elapsed + 1.0;
    assert!((stats.logs_emitted as f64) <= allowed, "{} emitted, {allowed} allowed", stats.logs_emitted);
    assert!(stats.logs_emitted >= 100, "the burst is let through");
    assert!(stats.logs_dropped >= 10_000 - allowed as u64);
    assert_eq!(flood.score(&misbehave(0.0), &[]).expect("next call").explanation, "behaved");
}

#[test]
fn fresh_instance_per_call_mode_works() {
    let t = TestEngine::new();
    let limits = PluginLimits { reuse_instances: false, deadline_ms: 2_000, ..PluginLimits::default() };
    let scorer = load(&t, PluginSpec::new("fresh", plugin("weighted-scorer")).with_limits(limits));
    for i in 0..20 {
        let m = metrics(f64::from(i), 0.0, 0.0, 1);
        assert_eq!(scorer.score(&m, &[]).expect("score").value, weighted_formula(&m, [1.0, 1.0, 0.5, 1.0]));
    }
}

#[test]
fn concurrent_calls_share_one_plugin() {
    let t = TestEngine::new();
    let scorer = Arc::new(load_steady(&t, PluginSpec::new("weighted", plugin("weighted-scorer"))));
    let handles: Vec<_> = (0..4)
        .map(|k| {
            let scorer = scorer.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    let m = metrics(f64::from(i + k * 1000), 0.0, 0.0, 1);
                    let got = scorer.score(&m, &[]).expect("score").value;
                    assert_eq!(got, weighted_formula(&m, [1.0, 1.0, 0.5, 1.0]));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("worker");
    }
    assert_eq!(scorer.stats().calls, 1 + 800);
}

// -------------------------------------------------------------------------------------------------
// Loading: world detection, imports, bad files, the compile cache

#[test]
fn a_component_with_no_known_world_is_refused_at_load() {
    let t = TestEngine::new();
    let e = t.engine.load(&PluginSpec::new("stray", test_plugin("no-world"))).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, LoadError::UnknownWorld { .. }), "{msg}");
    for needle in
        ["skybridge:plugin/scoring@0.1.0", "authorization", "adapting", "it exports: hello", "`stray`"]
    {
        assert!(msg.contains(needle), "`{needle}` missing from: {msg}");
    }
}

#[test]
fn sdk_core_modules_import_no_wasi_and_are_wrapped_on_load() {
    let t = TestEngine::new();
    let scorer = load_steady(&t, PluginSpec::new("weighted", plugin("weighted-scorer")));
    assert_eq!(scorer.info().format, Format::CoreModule);
    assert_eq!(scorer.info().exports, ["skybridge:plugin/scoring@0.1.0"]);
    for (name, status) in &scorer.info().imports {
        assert!(name.starts_with("skybridge:plugin/"), "{name}");
        assert_eq!(*status, ImportStatus::Provided, "{name}");
    }
}

#[test]
fn wasip2_components_run_with_wasi_withheld() {
    let t = TestEngine::new();
    let spec = PluginSpec::new("p2", test_plugin("misbehaving-scorer-wasip2"))
        .with_limits(PluginLimits { deadline_ms: 2_000, ..PluginLimits::default() });
    let p2 = load(&t, spec);
    assert_eq!(p2.info().format, Format::Component);
    let imports = &p2.info().imports;
    assert!(imports.iter().any(|(n, s)| n.starts_with("wasi:cli/") && *s == ImportStatus::WithheldTraps));
    for (name, status) in imports {
        let expected =
            if name.starts_with("wasi:") { ImportStatus::WithheldTraps } else { ImportStatus::Provided };
        assert_eq!(*status, expected, "{name}");
    }
    // It works, its panics are reported through the SDK's hook (not std's, which would call
    // the withheld WASI), and it recovers.
    assert_eq!(p2.score(&misbehave(0.0), &[]).expect("score").explanation, "behaved");
    let e = p2.score(&misbehave(3.0), &[]).unwrap_err();
    assert!(matches!(&e.cause, CallFailure::Trap(m) if m.contains("told to trap")), "{e}");
    let e = p2.score(&misbehave(2.0), &[]).unwrap_err();
    assert!(matches!(e.cause, CallFailure::MemoryLimit { .. }), "{e}");
    assert_eq!(p2.score(&misbehave(0.0), &[]).expect("score").explanation, "behaved");
}

#[test]
fn corrupt_truncated_and_non_wasm_files_get_clear_errors() {
    let t = TestEngine::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let core = std::fs::read(plugin("weighted-scorer")).expect("read plugin");
    let component = std::fs::read(test_plugin("misbehaving-scorer-wasip2")).expect("read plugin");
    let flip = |bytes: &[u8]| -> Vec<u8> {
        let mut out = bytes.to_vec();
        for b in out.iter_mut().skip(64).step_by(97) {
            *b ^= 0x5a;
        }
        out
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "only 0 bytes"),
        ("text", b"#!/bin/sh\necho this is not wasm\n".to_vec(), "wasm magic number"),
        ("bare-core-module", b"\0asm\x01\0\0\0".to_vec(), "core wasm module without component metadata"),
        // The WIT metadata sits at the end of the module: cut off, it is missing.
        ("truncated-core", core[..core.len() / 2].to_vec(), "core wasm module without component metadata"),
        ("corrupt-core", flip(&core), "invalid wasm"),
        ("truncated-component", component[..component.len() / 2].to_vec(), "invalid wasm"),
        ("corrupt-component", flip(&component), "invalid wasm"),
        ("random", (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect(), "magic number"),
    ];
    for (name, bytes, needle) in cases {
        let path = dir.path().join(format!("{name}.wasm"));
        std::fs::write(&path, &bytes).expect("write");
        let e = t.engine.load(&PluginSpec::new(name, &path)).unwrap_err();
        assert!(matches!(e, LoadError::Invalid { .. }), "{name}: {e}");
        assert!(e.to_string().contains(needle), "{name}: `{needle}` not in: {e}");
    }
    let e = t.engine.load(&PluginSpec::new("missing", dir.path().join("nope.wasm"))).unwrap_err();
    assert!(matches!(e, LoadError::Read { .. }) && e.to_string().contains("nope.wasm"), "{e}");
    // The engine is unharmed.
    assert!(
        load_steady(&t, PluginSpec::new("ok", plugin("weighted-scorer")))
            .score(&metrics(1.0, 0.0, 0.0, 1), &[])
            .is_ok()
    );
}

#[test]
fn compiled_components_are_cached_by_content_hash() {
    let t = TestEngine::new();
    let first = load_steady(&t, PluginSpec::new("a", plugin("weighted-scorer")));
    let cached: Vec<_> =
        std::fs::read_dir(t.cache.path()).expect("cache dir").filter_map(Result::ok).collect();
    assert_eq!(cached.len(), 1);
    let entry = cached[0].path();
    let file_name = entry.file_name().expect("name").to_string_lossy().into_owned();
    assert!(file_name.starts_with(&first.info().sha256), "{file_name}");

    // A second load uses the entry; a corrupted entry is discarded and rebuilt, not trusted.
    let modified = std::fs::metadata(&entry).expect("meta").modified().expect("mtime");
    load_steady(&t, PluginSpec::new("b", plugin("weighted-scorer")));
    assert_eq!(std::fs::metadata(&entry).expect("meta").modified().expect("mtime"), modified);
    std::fs::write(&entry, b"garbage").expect("corrupt the cache");
    let again = load_steady(&t, PluginSpec::new("c", plugin("weighted-scorer")));
    assert!(again.score(&metrics(1.0, 0.0, 0.0, 1), &[]).is_ok());
    assert!(std::fs::metadata(&entry).expect("meta").len() > 1000, "the entry was rewritten");
}

// -------------------------------------------------------------------------------------------------
// Hot reload

/// `weighted-scorer` installed as `policy.wasm` in a fresh folder (kept alive by the guard).
fn installed_policy() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.wasm");
    std::fs::copy(plugin("weighted-scorer"), &path).expect("install v1");
    (dir, path)
}

#[test]
fn hot_reload_under_concurrent_calls_switches_behaviour_without_failing_a_call() {
    let t = TestEngine::new();
    let (dir, path) = installed_policy();
    let registry = Arc::new(PluginRegistry::new(t.engine.clone()));
    // Four busy threads on two cores: a generous deadline, so only a real failure fails a call.
    let steady = PluginLimits { deadline_ms: 2_000, ..PluginLimits::default() };
    registry.load(PluginSpec::new("policy", &path).with_limits(steady)).expect("load v1");

    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (registry, stop) = (registry.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut old, mut new) = (0u32, 0u32);
                while !stop.load(Ordering::Relaxed) {
                    let plugin = registry.get("policy").expect("policy is always present");
                    let s = plugin.score(&metrics(10.0, 0.0, 0.0, 2), &[]).expect("no call may fail");
                    match s.explanation.as_str() {
                        "behaved" => new += 1,
                        e if e.starts_with("latency") => old += 1,
                        other => panic!("unexpected explanation {other}"),
                    }
                }
                (old, new)
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(100));
    // Replace the file the way a deploy does: write beside, rename over.
    let staged = dir.path().join("policy.wasm.new");
    std::fs::copy(test_plugin("misbehaving-scorer"), &staged).expect("stage v2");
    std::fs::rename(&staged, &path).expect("install v2");
    let outcomes = registry.reload_changed();
    assert!(matches!(&outcomes[..], [Reload::Swapped { name, .. }] if name == "policy"), "{outcomes:?}");
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);

    let (mut old, mut new) = (0, 0);
    for w in workers {
        let (o, n) = w.join().expect("a worker failed a call");
        old += o;
        new += n;
    }
    assert!(old > 0 && new > 0, "saw {old} calls on v1 and {new} on v2");
    assert!(registry.reload_changed().is_empty(), "nothing changed since");
    let listed = registry.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0.sha256, registry.get("policy").expect("present").info().sha256);
}

#[test]
fn a_broken_reload_keeps_the_old_plugin_in_service() {
    let t = TestEngine::new();
    let (_dir, path) = installed_policy();
    let registry = PluginRegistry::new(t.engine.clone());
    let v1 = registry.load(PluginSpec::new("policy", &path)).expect("load v1");
    std::fs::write(&path, b"not wasm at all").expect("break the file");
    let outcomes = registry.reload_changed();
    assert!(
        matches!(&outcomes[..], [Reload::Failed { error: LoadError::Invalid { .. }, .. }]),
        "{outcomes:?}"
    );
    let current = registry.get("policy").expect("still present");
    assert_eq!(current.info().sha256, v1.info().sha256);
    assert!(current.score(&metrics(1.0, 0.0, 0.0, 1), &[]).is_ok());
    assert!(registry.reload_changed().is_empty(), "a broken file is not retried until it changes again");
}

#[test]
fn the_watcher_picks_up_a_replaced_file_and_stops_with_the_registry() {
    let t = TestEngine::new();
    let (dir, path) = installed_policy();
    let registry = Arc::new(PluginRegistry::new(t.engine.clone()));
    let v1 = registry.load(PluginSpec::new("policy", &path)).expect("load v1").info().sha256.clone();
    let watcher = registry.spawn_watcher(Duration::from_millis(20)).expect("watcher");

    let staged = dir.path().join("policy.wasm.new");
    std::fs::copy(test_plugin("misbehaving-scorer"), &staged).expect("stage v2");
    std::fs::rename(&staged, &path).expect("install v2");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let current = registry.get("policy").expect("present");
        if current.info().sha256 != v1 {
            assert_eq!(current.score(&misbehave(0.0), &[]).expect("v2 answers").explanation, "behaved");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the watcher never reloaded the plugin");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(registry);
    watcher.join().expect("the watcher exits once the registry is gone");
}

/// The shipped AWS adapter, built to wasm and run in the sandbox with the host's crypto and
/// clock, signs exactly as its native build does (which the adapter's own tests check against
/// AWS's example and botocore).
#[test]
fn the_aws_adapter_in_the_sandbox_signs_like_its_native_build() {
    use sha2::{Digest, Sha256};

    let t = TestEngine::new();
    let adapter = load_steady(&t, PluginSpec::new("aws", plugin("aws-adapter")));
    let body = b"<CreateBucketConfiguration/>";
    let body_sha = hex::encode(Sha256::digest(body));
    let client_auth = "AWS4-HMAC-SHA256 Credential=acme-ops/20261126/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc";
    let pairs = |list: &[(&str, &str)]| -> Vec<types::Pair> {
        list.iter().map(|(k, v)| types::Pair { key: k.to_string(), value: v.to_string() }).collect()
    };
    let head = adapting::RequestHead {
        method: "PUT".into(),
        path: "/my-bucket".into(),
        query: "".into(),
        headers: pairs(&[
            ("Host", "127.0.0.1:41000"),
            ("Authorization", client_auth),
            ("X-Amz-Date", "20261126T000000Z"),
            ("X-Amz-Content-SHA256", &body_sha),
        ]),
        body_sha256: Some(body_sha.clone()),
    };
    let creds = adapting::TargetCredentials {
        platform: "aws-east".into(),
        principal: "AKIAMAPPED".into(),
        secret: "mapped-secret".into(),
        attributes: pairs(&[("host", "127.0.0.1:5000")]),
    };
    let out = adapter.rewrite_request(&head, &creds).expect("rewrite");
    let get =
        |name: &str| out.headers.iter().find(|p| p.key.eq_ignore_ascii_case(name)).map(|p| p.value.clone());
    assert_eq!(get("host").as_deref(), Some("127.0.0.1:5000"));
    let date = get("x-amz-date").expect("x-amz-date");
    assert_ne!(date, "20261126T000000Z", "the client's date is replaced by the host clock's");

    // The same request signed natively at the time the sandboxed plugin used.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let seconds = (now.saturating_sub(300)..now + 300)
        .find(|s| aws_adapter::amz_date(*s) == date)
        .unwrap_or_else(|| panic!("the plugin's date {date} is not within 5 minutes of now"));
    let native_head = skybridge_plugin_sdk::RequestHead {
        method: head.method.clone(),
        path: head.path.clone(),
        query: head.query.clone(),
        headers: head.headers.iter().map(|p| (p.key.clone(), p.value.clone())).collect(),
        body_sha256: head.body_sha256.clone(),
    };
    let native_creds = skybridge_plugin_sdk::TargetCredentials {
        platform: creds.platform.clone(),
        principal: creds.principal.clone(),
        secret: creds.secret.clone(),
        attributes: vec![("host".into(), "127.0.0.1:5000".into())],
    };
    let _host = skybridge_plugin_sdk::testing::TestHost::new().install();
    let native = aws_adapter::sign(native_head, &native_creds, seconds).expect("native signing");
    assert_eq!(get("authorization").as_deref(), native.header("authorization"));
    assert!(
        get("authorization").expect("authorization").starts_with("AWS4-HMAC-SHA256 Credential=AKIAMAPPED/")
    );
}

/// The AWS adapter authenticates a client that signed with its Skybridge account (as an
/// unmodified AWS SDK does), through the sandbox; a wrong secret or a tampered request fails.
#[test]
fn the_aws_adapter_verifies_a_clients_own_signature_in_the_sandbox() {
    let t = TestEngine::new();
    let adapter = load_steady(&t, PluginSpec::new("aws", plugin("aws-adapter")));
    assert!(adapter.authenticates_clients());

    // Signed natively (the adapter's own `sign`, checked against botocore) as the client would.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let _host = skybridge_plugin_sdk::testing::TestHost::new().install();
    let client = skybridge_plugin_sdk::RequestHead {
        method: "GET".into(),
        path: "/".into(),
        query: "Action=DescribeInstances&Version=2016-11-15".into(),
        headers: vec![("Host".into(), "127.0.0.1:7000".into())],
        body_sha256: Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b""))),
    };
    let account = skybridge_plugin_sdk::TargetCredentials {
        platform: "skybridge".into(),
        principal: "acme-ops".into(),
        secret: "account-secret".into(),
        attributes: vec![("region".into(), "us-east-1".into()), ("service".into(), "ec2".into())],
    };
    let signed = aws_adapter::sign(client, &account, now).expect("client signing");
    let head = adapting::RequestHead {
        method: signed.method,
        path: signed.path,
        query: signed.query,
        headers: signed.headers.into_iter().map(|(key, value)| types::Pair { key, value }).collect(),
        body_sha256: signed.body_sha256,
    };

    assert_eq!(adapter.claimed_account(&head).expect("claimed").as_deref(), Some("acme-ops"));
    adapter.verify_client(&head, "account-secret").expect("the genuine signature verifies");
    let e = adapter.verify_client(&head, "wrong-secret").unwrap_err();
    assert!(matches!(&e.cause, CallFailure::Rejected(m) if m.contains("does not match")), "{e}");
    let mut tampered = head.clone();
    tampered.query = "Action=TerminateInstances&Version=2016-11-15".into();
    assert!(adapter.verify_client(&tampered, "account-secret").is_err());
    let mut unsigned = head.clone();
    unsigned.headers.retain(|p| !p.key.eq_ignore_ascii_case("authorization"));
    assert_eq!(adapter.claimed_account(&unsigned).expect("claimed"), None);
}

/// An adapter built against the plain `adapter` world — no `authenticating` export, as adapters
/// built before that interface existed — still loads and works; it just does not authenticate
/// clients, and an adapter built with the SDK's defaults claims no account.
#[test]
fn adapters_without_client_authentication_still_load() {
    let t = TestEngine::new();
    let plain = load_steady(&t, PluginSpec::new("plain", test_plugin("plain-adapter")));
    assert_eq!(plain.world(), World::Adapter);
    assert!(!plain.authenticates_clients());
    let head = adapting::RequestHead {
        method: "GET".into(),
        path: "/".into(),
        query: String::new(),
        headers: vec![types::Pair { key: "Authorization".into(), value: "Basic YTpi".into() }],
        body_sha256: None,
    };
    assert_eq!(plain.claimed_account(&head).expect("claimed"), None);
    let e = plain.verify_client(&head, "s").unwrap_err();
    assert!(matches!(&e.cause, CallFailure::Rejected(m) if m.contains("does not authenticate")), "{e}");
    let creds = adapting::TargetCredentials {
        platform: "p".into(),
        principal: "token-123".into(),
        secret: String::new(),
        attributes: vec![],
    };
    let out = plain.rewrite_request(&head, &creds).expect("rewrite");
    assert_eq!(
        out.headers,
        vec![types::Pair { key: "authorization".into(), value: "Bearer token-123".into() }]
    );

    // The host bounds what an adapter answers: a 1 MiB header, a 30,000-byte refusal.
    for (path, needle) in [("/huge", "rewritten request head"), ("/verbose", "rejection is 30000 bytes")] {
        let asked = adapting::RequestHead { path: path.into(), ..head.clone() };
        let e = plain.rewrite_request(&asked, &creds).unwrap_err();
        assert!(matches!(&e.cause, CallFailure::InvalidAnswer(m) if m.contains(needle)), "{path}: {e}");
    }

    let sdk_default = load_steady(&t, PluginSpec::new("toy", test_plugin("signing-adapter")));
    assert!(sdk_default.authenticates_clients());
    assert_eq!(sdk_default.claimed_account(&head).expect("claimed"), None);
}
