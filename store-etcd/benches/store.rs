//! The controller's store on redb (one controller) and on etcd (a group), side by side on this
//! machine: admin-API-style writes (an account created; a capability granted: a conditional
//! commit), catalog lookups, and how long a new controller takes to load a catalog of ENTRIES
//! entries from etcd. Starts its own etcd member (Debian's `etcd-server`).
//!
//! `cargo bench -p skybridge-store-etcd --bench store [-- ENTRIES]` (default 100000). Under
//! `cargo test` it is a smoke run: 30 calls of each kind and 300 entries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use skybridge_gateway::catalog::{AuditRecord, CatalogEntry};
use skybridge_gateway::session::accounts::Account;
use skybridge_gateway::store::kv::Kv;
use skybridge_gateway::store::kv::seal::SealKey;
use skybridge_gateway::store::redb::RedbStore;
use skybridge_gateway::store::shared::SharedStore;
use skybridge_gateway::store::{Backend, Decided};
use skybridge_gateway::testkit::store::granted;
use skybridge_store_etcd::EtcdKv;

const WRITERS: usize = 32;

/// Under `cargo bench` (it passes `--bench`), or a smoke run under `cargo test`.
fn benching() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn stats(name: &str, what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "{name:5} {what:28} p50 {:8.3} ms   p99 {:8.3} ms   ({} samples)",
        at(0.5),
        at(0.99),
        samples.len()
    );
}

fn grant(i: usize, prefix: &str) -> Decided {
    let a = granted(&format!("{prefix}-p{}", i % 8), &format!("svc-{i:06}"), "object-store");
    Decided {
        audit: AuditRecord::of(&a, "bench", 1),
        grant: Some(CatalogEntry::new(format!("{prefix}-{i:08}"), &a.capability, 1)),
        authorization: a,
    }
}

/// Admin writes and catalog lookups against `store` (calls block: run off the runtime).
fn measure(name: &'static str, store: Arc<dyn Backend>) {
    let (writes, lookups) = if benching() { (300, 3_000) } else { (30, 300) };
    let mut accounts = Vec::new();
    for i in 0..writes {
        let account = Account {
            id: format!("acct-{i}"),
            secret: "0123456789abcdef".into(),
            created_unix_ms: 1,
            credentials: Default::default(),
        };
        let t = Instant::now();
        store.insert_account(&account).expect("account");
        accounts.push(t.elapsed());
    }
    stats(name, "create an account", accounts);
    let mut grants = Vec::new();
    for i in 0..writes {
        let t = Instant::now();
        store.decide_all(vec![grant(i, name)]).expect("grant");
        grants.push(t.elapsed());
    }
    stats(name, "grant a capability", grants);
    let mut found_in = Vec::new();
    for i in 0..lookups {
        let id = format!("{name}-{:08}", i % writes);
        let t = Instant::now();
        let found = store.entry(&id).expect("lookup");
        found_in.push(t.elapsed());
        assert!(found.is_some(), "entry {id}");
    }
    stats(name, "look a catalog entry up", found_in);
}

fn main() {
    let default = if benching() { 100_000 } else { 300 };
    let entries: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(default);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let members = skybridge_gateway::testkit::etcd::cluster(1, None);
    let endpoints = vec![members[0].client_url.clone()];
    let dir = tempfile::tempdir().expect("tempdir");
    runtime.block_on(async {
        let kv: Arc<dyn Kv> = loop {
            if let Ok(kv) = EtcdKv::connect(&endpoints, None).await
                && kv.get("ready").await.is_ok()
            {
                break Arc::new(kv);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let seal = Arc::new(SealKey::new(&[1; 32]));
        let redb: Arc<dyn Backend> = Arc::new(RedbStore::open(&dir.path().join("one.redb")).expect("redb"));
        let local = dir.path().join("a.redb");
        let shared = SharedStore::open(Arc::clone(&kv), "bench/", Arc::clone(&seal), &local).await;
        let shared: Arc<dyn Backend> = Arc::new(shared.expect("shared"));
        println!(
            "store latency, one call at a time (this machine: {} CPUs)",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        tokio::task::spawn_blocking(move || measure("redb", redb)).await.expect("redb");
        let writer = Arc::clone(&shared);
        tokio::task::spawn_blocking(move || measure("etcd", writer)).await.expect("etcd");

        // A catalog of `entries` entries in etcd, written by many writers at once.
        let t = Instant::now();
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let store = Arc::clone(&shared);
            writers.push(tokio::task::spawn_blocking(move || {
                for i in (w..entries).step_by(WRITERS) {
                    store.decide_all(vec![grant(i, "load")]).expect("grant");
                }
            }));
        }
        for w in writers {
            w.await.expect("writer");
        }
        println!("etcd  wrote {entries} grants with {WRITERS} writers in {:.1} s", t.elapsed().as_secs_f64());
        let t = Instant::now();
        let fresh = SharedStore::open(Arc::clone(&kv), "bench/", seal, &dir.path().join("b.redb"))
            .await
            .expect("open");
        let took = t.elapsed();
        let counts = tokio::task::spawn_blocking(move || fresh.catalog_counts().expect("counts"))
            .await
            .expect("counts");
        println!(
            "etcd  a new controller loads the catalog ({} entries, {} associations) in {:.2} s",
            counts.entries,
            counts.associations,
            took.as_secs_f64()
        );
    });
}
