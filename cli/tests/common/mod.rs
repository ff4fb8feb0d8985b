//! Helpers shared by the binary's integration tests.

use std::path::PathBuf;

/// A built plugin under `$SKYBRIDGE_PLUGIN_DIR` (default `target/plugins`), e.g.
/// `plugin("weighted-scorer.wasm")`; fails with how to build it when missing.
pub fn plugin(rel: &str) -> PathBuf {
    let dir = std::env::var_os("SKYBRIDGE_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"));
    let path = dir.join(rel);
    assert!(path.is_file(), "{} is missing: run `cargo xtask plugins`", path.display());
    path
}
