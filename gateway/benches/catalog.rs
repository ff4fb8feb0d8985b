//! The catalog at scale, in the store the controller uses (redb, on disk): 100,000 entries
//! from 1,000 platforms (100 each, half `object-store`, half `compute`), each with one
//! association.
//!
//! - `lookup_by_id`: one entry and its associations (issue target: p50 ≤ 20 µs);
//! - `page_of_100_by_kind`: a page of 100 `compute` entries, from a random point (≤ 1 ms);
//! - `integrate_10k_report_1pct_changed`: a platform's full report of 10,000 services of
//!   which 100 changed: read its inventory, plan, write the changes with the refresh record
//!   (≤ 200 ms; the plan must write exactly the 100 changed);
//! - `decide_256_grants_one_commit` against `…_one_commit_each`: the handshake's group commit
//!   (256 grants in one transaction) against one transaction per answer.
//!
//! Run with `cargo xtask bench -- catalog`.

#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use skybridge_gateway::catalog::{
    Outcome, RefreshRecord, ServiceInfo, Trigger, Withdrawal, plan_full_report,
};
use skybridge_gateway::store::redb::RedbStore;
use skybridge_gateway::store::{Backend, Decided};
use skybridge_gateway::testkit::catalog;

const PER_PLATFORM: usize = 100;

/// 1,000 platforms under `cargo bench`; 10 when `cargo test` runs this as a smoke test.
fn platforms() -> usize {
    if std::env::args().any(|a| a == "--bench") { 1_000 } else { 10 }
}

fn id(platform: usize, i: usize) -> String {
    catalog::entry_id(platform, i)
}

fn filled(dir: &std::path::Path) -> RedbStore {
    let store = RedbStore::open(&dir.join("catalog.redb")).expect("store");
    catalog::fill(&store, platforms(), PER_PLATFORM).expect("filled");
    store
}

fn main() {
    let mut c =
        Criterion::default().configure_from_args().sample_size(50).measurement_time(Duration::from_secs(5));
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let store = filled(dir.path());
    let total = platforms() * PER_PLATFORM;
    eprintln!("catalog: {total} entries written in {:.1} s", started.elapsed().as_secs_f64());

    let mut n = 0usize;
    c.bench_function("catalog/lookup_by_id_100k", |b| {
        b.iter(|| {
            n = (n * 7919 + 13) % total;
            let (entry, associations) =
                store.entry(&id(n / PER_PLATFORM, n % PER_PLATFORM)).expect("read").expect("found");
            black_box((entry, associations));
        })
    });
    c.bench_function("catalog/page_of_100_by_kind_100k", |b| {
        b.iter(|| {
            n = (n * 7919 + 13) % total;
            let after = id(n / PER_PLATFORM, n % PER_PLATFORM);
            let page = store.entries(Some("compute"), Some(&after), 100).expect("page");
            assert!(page.len() == 100 || after > id(0, 0), "a full page unless near the end");
            black_box(page);
        })
    });

    // One platform with 10,000 services; each iteration changes 100 of them.
    let platform = "platform-big";
    let report = |version: u64| -> Vec<ServiceInfo> {
        (0..10_000).map(|i| catalog::service(9_999, i, if i < 100 { version } else { 0 })).collect()
    };
    let integrate = |version: u64| {
        let stored = store.inventory(platform).expect("inventory");
        let plan = plan_full_report(
            &stored.platform,
            &stored.records,
            report(version),
            &Default::default(),
            version,
            &Withdrawal::default(),
        );
        let written = plan.put.len();
        let mut refresh = RefreshRecord {
            seq: 0,
            platform: platform.into(),
            at_ms: version,
            trigger: Some(Trigger::Periodic),
            requests: 1,
            discovery_ms: 1,
            integrate_ms: 0,
            outcome: Outcome::Integrated { summary: plan.summary },
        };
        store.apply_report(platform, &plan.put, &plan.platform, &mut refresh).expect("applied");
        written
    };
    assert_eq!(integrate(0), 10_000, "the first report writes everything");
    let mut version = 0;
    c.bench_function("catalog/integrate_10k_report_1pct_changed", |b| {
        b.iter(|| {
            version += 1;
            assert_eq!(integrate(version), 100, "only the changed records are written");
        })
    });

    // The handshake's group commit: 256 grants (new entries) in one transaction, against one
    // transaction each — what an answer costs when decisions arrive one by one.
    let mut fresh = 20_000usize;
    let mut grants = |n: usize| -> Vec<Decided> {
        fresh += 1;
        (0..n).map(|i| catalog::grant(fresh, i)).collect()
    };
    c.bench_function("catalog/decide_256_grants_one_commit", |b| {
        b.iter_batched(
            || grants(256),
            |batch| store.decide_all(batch).expect("stored"),
            BatchSize::PerIteration,
        )
    });
    c.bench_function("catalog/decide_256_grants_one_commit_each", |b| {
        b.iter_batched(
            || grants(256),
            |batch| {
                for d in batch {
                    store.decide_all(vec![d]).expect("stored");
                }
            },
            BatchSize::PerIteration,
        )
    });
    c.final_summary();
}
