//! Path selection cost on a large mesh, excluding probe time: enumerate k = 8 loop-free
//! candidates on a 1,000-relay random graph (Yen's algorithm), then score every candidate with
//! the real `weighted-scorer` plugin. Issue target: ≤ 10 ms for the whole decision.
//!
//! Run with `cargo xtask bench`.

#![allow(missing_docs)]

mod common;

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion};
use skybridge_gateway::path::{Graph, LinkStats, Path, select};
use skybridge_gateway::plugin::{EngineOptions, PluginEngine, PluginSpec};

/// A connected random graph: a ring (so everything is reachable) plus `extra` random chords
/// per node, link costs 1–50 ms. Seeded, so every run measures the same graph.
fn random_mesh(nodes: usize, extra: usize, seed: u64) -> Graph {
    let mut state = seed;
    let mut next = move || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let name = |i: usize| format!("r{i:04}");
    let mut g = Graph::new();
    for i in 0..nodes {
        let cost = 1.0 + (next() % 4900) as f64 / 100.0;
        g.set_link(&name(i), &name((i + 1) % nodes), cost).expect("valid cost");
        for _ in 0..extra {
            let j = (next() % nodes as u64) as usize;
            let cost = 1.0 + (next() % 4900) as f64 / 100.0;
            g.set_link(&name(i), &name(j), cost).expect("valid cost");
        }
    }
    g
}

/// Synthetic measurements standing in for probes (excluded from the target): RTT from the
/// path's graph cost, some loss and jitter per hop.
fn measured(p: &Path) -> LinkStats {
    LinkStats {
        rtt_ms: Some(p.cost_ms * 1.05),
        jitter_ms: 0.2 * f64::from(p.hops()),
        loss: 0.001 * f64::from(p.hops()),
        samples: 20,
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let cache = tempfile::tempdir().expect("tempdir");
    let engine =
        PluginEngine::new(EngineOptions { cache_dir: Some(cache.path().into()), ..Default::default() })
            .expect("engine");
    let scorer = engine.load(&PluginSpec::new("weighted", common::weighted_scorer())).expect("load scorer");
    let weights = vec![("latency".to_owned(), 1.0), ("loss".to_owned(), 2.0)];

    let mut group = c.benchmark_group("path_select");
    for nodes in [100usize, 1000] {
        let g = random_mesh(nodes, 2, 42);
        let (from, to) = ("r0000".to_owned(), format!("r{:04}", nodes / 2));
        let k = 8;
        group.bench_function(BenchmarkId::new("enumerate_k8", nodes), |b| {
            b.iter(|| g.k_shortest_paths(black_box(&from), black_box(&to), k).expect("paths"))
        });
        group.bench_function(BenchmarkId::new("enumerate_and_score_k8", nodes), |b| {
            b.iter(|| {
                let paths = g.k_shortest_paths(black_box(&from), black_box(&to), k).expect("paths");
                let candidates: Vec<(Path, LinkStats)> = paths
                    .into_iter()
                    .map(|p| {
                        let m = measured(&p);
                        (p, m)
                    })
                    .collect();
                select(&candidates, &scorer, &weights).expect("decision")
            })
        });
        let paths = g.k_shortest_paths(&from, &to, k).expect("paths");
        println!(
            "{nodes} relays: {} candidates, {}..{} hops, cost {:.1}..{:.1} ms",
            paths.len(),
            paths.iter().map(Path::hops).min().unwrap_or(0),
            paths.iter().map(Path::hops).max().unwrap_or(0),
            paths.first().map(|p| p.cost_ms).unwrap_or(0.0),
            paths.last().map(|p| p.cost_ms).unwrap_or(0.0),
        );
    }
    group.finish();
    c.final_summary();
}
