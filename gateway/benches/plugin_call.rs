//! Cost of calling a plugin: the reference `weighted-scorer` component through the real host,
//! warm and freshly instantiated, against the same scorer code compiled natively.
//!
//! Run with `cargo xtask bench` (it builds the plugins first). Figures go in BENCHMARKS.md.

#![allow(missing_docs)]

mod common;

use std::hint::black_box;
use std::path::PathBuf;

use criterion::Criterion;
use skybridge_gateway::plugin::{EngineOptions, PluginEngine, PluginLimits, PluginSpec, scoring, types};
use skybridge_plugin_sdk::{PathMetrics, testing};

const GROUP: &str = "plugin_call";

fn benches(c: &mut Criterion) {
    let cache = tempfile::tempdir().expect("tempdir");
    let engine =
        PluginEngine::new(EngineOptions { cache_dir: Some(cache.path().into()), ..Default::default() })
            .expect("engine");
    let warm = engine.load(&PluginSpec::new("warm", common::weighted_scorer())).expect("load");
    let fresh = engine
        .load(
            &PluginSpec::new("fresh", common::weighted_scorer())
                .with_limits(PluginLimits { reuse_instances: false, ..PluginLimits::default() }),
        )
        .expect("load");
    let metrics = scoring::PathMetrics { rtt_ms: 30.0, loss: 0.01, jitter_ms: 2.0, hops: 3, extra: vec![] };
    let weights = vec![types::NamedValue { name: "latency".into(), value: 2.0 }];
    let native_metrics =
        PathMetrics { rtt_ms: 30.0, loss: 0.01, jitter_ms: 2.0, hops: 3, ..Default::default() };

    let mut group = c.benchmark_group(GROUP);
    group.bench_function("native", |b| {
        b.iter(|| {
            testing::score::<weighted_scorer::WeightedScorer>(black_box(&native_metrics), &[("latency", 2.0)])
        })
    });
    group.bench_function("warm", |b| b.iter(|| warm.score(black_box(&metrics), &weights).expect("score")));
    // The same without operator weights: no list or string to copy into the guest, so two
    // fewer entries into wasm (cabi_realloc). Shows what the weights cost.
    group.bench_function("warm_no_weights", |b| {
        b.iter(|| warm.score(black_box(&metrics), &[]).expect("score"))
    });
    group.bench_function("instantiate_and_call", |b| {
        b.iter(|| fresh.score(black_box(&metrics), &weights).expect("score"))
    });
    group.finish();
    println!("engine pooled: {}", engine.is_pooled());
}

/// Mean time of one benchmark from criterion's saved estimates, in nanoseconds.
fn mean_ns(name: &str) -> Option<f64> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = dir.join("criterion").join(GROUP).join(name).join("new/estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
    // In `cargo test` mode criterion runs each benchmark once and saves nothing new.
    if std::env::args().any(|a| a == "--bench")
        && let (Some(native), Some(warm), Some(fresh)) =
            (mean_ns("native"), mean_ns("warm"), mean_ns("instantiate_and_call"))
    {
        println!("\nsummary (means):");
        println!("  native                {native:>10.1} ns");
        println!(
            "  warm wasm call        {warm:>10.1} ns   {:>6.1}x native   target <= 1000 ns",
            warm / native
        );
        println!(
            "  instantiate + call    {fresh:>10.1} ns   {:>6.1}x native   {:>5.1}x warm   target <= 15000 ns",
            fresh / native,
            fresh / warm
        );
    }
}
