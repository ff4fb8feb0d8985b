//! Shared harness for Skybridge's integration tests.
//!
//! Tests here run real components through the real host: the plugins are built to wasm by
//! `cargo xtask plugins` (which `cargo xtask test` runs first) into `target/plugins/`. A test
//! that cannot find a plugin fails and says how to build it — it never skips.
//!
//! [`mesh`] starts whole meshes — a controller, relays and sites, with the user-space link
//! emulator on every link — inside the test process, over real QUIC and TLS on loopback.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use skybridge_gateway::plugin::{EngineOptions, PluginEngine};
use tempfile::TempDir;

pub mod mesh;
pub mod peers;

/// The folder holding built plugins: `$SKYBRIDGE_PLUGIN_DIR`, else `<workspace>/target/plugins`.
pub fn plugin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SKYBRIDGE_PLUGIN_DIR") {
        return dir.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("plugins")
}

/// A shipped plugin, e.g. `plugin("weighted-scorer")`.
pub fn plugin(name: &str) -> PathBuf {
    existing(plugin_dir().join(format!("{name}.wasm")))
}

/// A test-only plugin from `plugins/testing/`, e.g. `test_plugin("misbehaving-scorer")`.
pub fn test_plugin(name: &str) -> PathBuf {
    existing(plugin_dir().join("testing").join(format!("{name}.wasm")))
}

fn existing(path: PathBuf) -> PathBuf {
    assert!(
        path.is_file(),
        "{} is missing: build the plugins with `cargo xtask plugins` (or run `cargo xtask test`)",
        path.display()
    );
    path
}

/// The Python that has the cloud peers (moto, boto3, …) installed: `$SKYBRIDGE_PEERS_PYTHON`
/// (`cargo xtask test` sets it to the virtualenv it installs them into), else `python3`.
pub fn peers_python() -> std::process::Command {
    let python = std::env::var_os("SKYBRIDGE_PEERS_PYTHON").unwrap_or_else(|| "python3".into());
    std::process::Command::new(python)
}

/// A helper script from `tests/peers/`.
pub fn peer_script(name: &str) -> PathBuf {
    existing(Path::new(env!("CARGO_MANIFEST_DIR")).join("peers").join(name))
}

/// A plugin engine with its own compile cache in a temporary folder (removed on drop).
pub struct TestEngine {
    /// The engine.
    pub engine: Arc<PluginEngine>,
    /// The compile cache folder.
    pub cache: TempDir,
}

impl TestEngine {
    /// An engine sized for tests: a small pool, a 2 ms epoch tick.
    pub fn new() -> TestEngine {
        let cache = tempfile::tempdir().expect("temporary cache folder");
        let engine = PluginEngine::new(EngineOptions {
            cache_dir: Some(cache.path().to_owned()),
            epoch_tick: Duration::from_millis(2),
            max_instances: 64,
            max_memory_bytes: 64 << 20,
        })
        .expect("plugin engine");
        TestEngine { engine, cache }
    }
}

impl Default for TestEngine {
    fn default() -> Self {
        Self::new()
    }
}
