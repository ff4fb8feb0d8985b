//! The dashboard in a real browser: Debian's Chromium, driven by playwright-core (npm, a test
//! peer; never a downloaded browser), against the demo binary with its degrade scenario.
//! Screenshots land in `target/ui-screenshots/`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::Demo;

/// The npm test peers' `node_modules` (`cargo xtask test` installs playwright-core there).
fn node_modules() -> PathBuf {
    let bin = std::env::var_os("SKYBRIDGE_PEERS_BIN").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/peers/node/node_modules/.bin")
    });
    let modules = bin.parent().expect("node_modules").to_path_buf();
    assert!(
        modules.join("playwright-core").is_dir(),
        "no playwright-core in {}: run cargo xtask test",
        modules.display()
    );
    modules
}

#[test]
fn the_dashboard_shows_the_mesh_the_decisions_the_catalog_and_a_live_reroute() {
    // The built-in fixture clouds (the demo's end-to-end test runs the real emulators): the
    // catalog's contents below are theirs.
    let mut demo = Demo::start(&["--scenario", "degrade", "--degrade-after-s", "20", "--clouds", "fixtures"]);
    let (url, token_file) = (demo.url.as_str(), demo.token_file.as_str());
    let seen = &demo.steps;
    assert!(
        seen.iter().any(|l| l == "  site-b: Azure Blob storage — a built-in fixture, not the cloud"),
        "{}",
        seen.join("\n")
    );
    assert!(seen.iter().any(|l| l.starts_with(&format!("dashboard:  {url}/ui"))), "{}", seen.join("\n"));

    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/peers/dashboard.cjs");
    let out = Command::new("node")
        .arg(&script)
        .args([url, token_file])
        .arg(&shots)
        .env("NODE_PATH", node_modules())
        .output()
        .expect("node runs");
    let log = demo.log();
    let later = demo.later.try_iter().collect::<Vec<String>>().join("\n");
    demo.interrupt();
    assert!(
        out.status.success(),
        "{}\nthe demo's warnings:\n{log}\nwhat it printed after its steps:\n{later}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        later.contains("[degrade] link r2–r4 now loses 30 %"),
        "after its steps the demo printed:\n{later}"
    );
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the script's JSON");

    // Every node, every relay link, the chosen path drawn over them.
    let names: Vec<&str> =
        found["nodes"].as_array().expect("nodes").iter().filter_map(|n| n.as_str()).collect();
    assert_eq!(names, ["r1", "r2", "r3", "r4", "r5", "site-a", "site-b", "site-c", "site-d"], "{found:#}");
    let links: Vec<&str> =
        found["links"].as_array().expect("links").iter().filter_map(|n| n.as_str()).collect();
    for link in ["r1-r2", "r1-r3", "r2-r4", "r2-r5", "r3-r4", "r5-r4"] {
        assert!(links.contains(&link), "no link {link}: {found:#}");
    }
    let highlighted = found["highlighted"].as_array().expect("highlighted");
    assert!(
        highlighted.first() == Some(&serde_json::json!("site-a-r1")) && highlighted.len() >= 3,
        "{found:#}"
    );
    // Decisions with a winner each; the catalog's seven object stores; the three refusals.
    assert_eq!(found["winners"].as_array().map(Vec::len), Some(7), "{found:#}");
    assert_eq!(found["entries"].as_array().map(Vec::len), Some(7), "{found:#}");
    assert!(found["entries"].as_array().expect("entries").contains(&serde_json::json!("object-store/logs")));
    assert_eq!(found["refused"], serde_json::json!(3), "{found:#}");
    // The feed opens with the recent events: step 5's re-route, from before the page was open.
    assert_eq!(found["earlier"], serde_json::json!(true), "{found:#}");
    // The degraded link's re-route in the live feed.
    let rerouted = found["rerouted"].as_str().expect("a re-route in the feed");
    assert!(rerouted.contains("link r2–r4 loses") && rerouted.contains("\"r5\""), "{rerouted}");
    assert_eq!(found["page_errors"], serde_json::json!([]), "{found:#}");
    for shot in ["topology.png", "decisions.png", "catalog.png", "bindings.png", "rerouted.png"] {
        assert!(shots.join(shot).is_file(), "no screenshot {shot}");
    }
}
