//! The controller's resident memory with a catalog of 100,000 entries from 1,000 platforms.
//!
//! The store is filled as the handshake leaves it (for each service: an inventory record, an
//! authorization with its audit line, a catalog entry and an association; see
//! `skybridge_gateway::testkit::catalog`), then a real `skybridge controller` process starts
//! on it and `skybridge ctl catalog ls --json` lists the whole catalog through its admin API,
//! four times. The controller's VmRSS (now) and VmHWM (peak) are read from `/proc` after it
//! starts and after each listing, beside the same controller on an empty store.
//!
//! Run with `cargo xtask bench` (or `cargo bench -p skybridge --bench controller_memory`);
//! under `cargo test` it runs at 1,000 entries as a smoke test.

#![allow(missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::Instant;

use common::{Node, ok, pki_and_token, skybridge, write_controller_toml};
use skybridge_gateway::store::redb::RedbStore;
use skybridge_gateway::testkit::catalog;

const PER_PLATFORM: usize = 100;

/// 1,000 platforms under `cargo bench`; 10 when `cargo test` runs this as a smoke test.
fn platforms() -> usize {
    if std::env::args().any(|a| a == "--bench") { 1_000 } else { 10 }
}

/// A field of `/proc/PID/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the controller's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Listings of the whole catalog per controller: growth that goes on across them is a leak;
/// growth that stops after the first is memory kept for reuse.
const LISTINGS: usize = 4;

/// Start a controller on the store in `dir`, list its catalog [`LISTINGS`] times; print its
/// memory after each.
fn measure(dir: &Path, label: &str, expected: usize) {
    write_controller_toml(dir, "127.0.0.1:0");
    let controller = Node::start(dir, "controller", "controller.toml", &[]);
    let line = controller.line("controller: mesh on ");
    let url = line.rsplit(' ').next().expect("admin URL").to_owned();
    let pid = controller.child.id();
    println!("controller, {label}: started, {:.1} MiB resident", mib(status_kib(pid, "VmRSS:")));
    for n in 1..=LISTINGS {
        let t = Instant::now();
        let listed = ok(skybridge(dir, &["ctl", "--url", &url, "catalog", "ls", "--json"]));
        let took = t.elapsed().as_secs_f64();
        let entries = serde_json::from_str::<serde_json::Value>(&listed).expect("json");
        assert_eq!(entries.as_array().map(Vec::len), Some(expected), "the whole catalog is listed");
        println!(
            "controller, {label}: listing {n} took {took:.2} s; {:.1} MiB resident (peak {:.1})",
            mib(status_kib(pid, "VmRSS:")),
            mib(status_kib(pid, "VmHWM:"))
        );
    }
}

fn main() {
    let entries = platforms() * PER_PLATFORM;
    for (label, filled) in [("empty store".to_owned(), false), (format!("{entries} entries"), true)] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        pki_and_token(dir, &[("controller", "controller")]);
        std::fs::create_dir_all(dir.join("state")).expect("state dir");
        if filled {
            let t = Instant::now();
            let store = RedbStore::open(&dir.join("state/c.redb")).expect("store");
            catalog::fill(&store, platforms(), PER_PLATFORM).expect("filled");
            drop(store);
            let size = std::fs::metadata(dir.join("state/c.redb")).map(|m| m.len()).unwrap_or(0);
            println!(
                "store: {entries} entries from {} platforms written in {:.1} s, {:.1} MiB on disk",
                platforms(),
                t.elapsed().as_secs_f64(),
                size as f64 / (1024.0 * 1024.0)
            );
        }
        measure(dir, &label, if filled { entries } else { 0 });
    }
}
