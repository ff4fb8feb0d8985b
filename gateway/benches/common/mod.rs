//! Shared by the benchmarks: where the built plugins are.

use std::path::PathBuf;

/// The built `weighted-scorer`: `$SKYBRIDGE_PLUGIN_DIR`, else `target/plugins/`.
pub fn weighted_scorer() -> PathBuf {
    let dir = std::env::var_os("SKYBRIDGE_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"));
    let path = dir.join("weighted-scorer.wasm");
    assert!(path.is_file(), "{} is missing: run `cargo xtask bench`", path.display());
    path
}
