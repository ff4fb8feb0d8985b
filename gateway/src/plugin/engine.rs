//! The wasmtime engine shared by every plugin: configuration (pooling allocator, epoch
//! interruption), the epoch ticker thread, the on-disk cache of compiled components, and the
//! linker that holds the host interfaces.

use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings;
use super::error::LoadError;
use super::loaded::Plugin;
use super::sandbox::Sandbox;
use super::{PluginLimits, PluginSpec};

/// How the shared engine is set up. The defaults suit a gateway; tests shrink the pool.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Where compiled components are cached, keyed by content hash. `None`: no cache.
    /// The directory must be writable only by the gateway's user: cached code is trusted.
    pub cache_dir: Option<PathBuf>,
    /// Granularity of CPU deadlines (the epoch tick). Deadlines are rounded up to it.
    pub epoch_tick: Duration,
    /// Pooling allocator: the most instances alive at once, over all plugins.
    pub max_instances: u32,
    /// Pooling allocator: the largest linear memory any plugin may be given.
    pub max_memory_bytes: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            cache_dir: default_cache_dir(),
            epoch_tick: Duration::from_millis(2),
            max_instances: 256,
            max_memory_bytes: 256 << 20,
        }
    }
}

/// `$XDG_CACHE_HOME/skybridge/plugins`, else `~/.cache/skybridge/plugins`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("skybridge").join("plugins"))
}

/// The engine every plugin runs on. Cheap to share behind an `Arc`.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<Sandbox>,
    options: EngineOptions,
    /// Component instances in the pool hold at most this many core instances/memories/tables.
    pooled: bool,
}

impl PluginEngine {
    /// Build the engine and start its epoch ticker (a thread that stops with the engine).
    pub fn new(options: EngineOptions) -> anyhow::Result<Arc<Self>> {
        let (engine, pooled) = match Engine::new(&config(&options, true)) {
            Ok(engine) => (engine, true),
            Err(e) => {
                // Some hosts restrict virtual memory too much for the pool; run without it.
                tracing::warn!(error = %e, "pooling allocator unavailable; using on-demand allocation");
                let engine = Engine::new(&config(&options, false))
                    .map_err(|e| anyhow::anyhow!("cannot create the wasm engine: {e}"))?;
                (engine, false)
            }
        };
        let mut linker = Linker::new(&engine);
        bindings::host::Host_::add_to_linker::<Sandbox, HasSelf<Sandbox>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("cannot link the host interfaces: {e}"))?;
        if let Some(dir) = &options.cache_dir {
            create_private_dir(dir)?;
        }
        spawn_epoch_ticker(&engine, options.epoch_tick)
            .map_err(|e| anyhow::anyhow!("cannot start the plugin epoch ticker: {e}"))?;
        Ok(Arc::new(PluginEngine { engine, linker, options, pooled }))
    }

    /// Load a plugin from its file.
    pub fn load(&self, spec: &PluginSpec) -> Result<Plugin, LoadError> {
        let bytes = crate::file::read(&spec.path, crate::file::MAX_PLUGIN_BYTES, "the plugin file").map_err(
            |source| LoadError::Read { plugin: spec.name.clone(), path: spec.path.clone(), source },
        )?;
        Plugin::load(self, spec, &bytes)
    }

    /// Load a plugin from bytes already in memory.
    pub fn load_bytes(&self, spec: &PluginSpec, bytes: &[u8]) -> Result<Plugin, LoadError> {
        Plugin::load(self, spec, bytes)
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn linker(&self) -> &Linker<Sandbox> {
        &self.linker
    }

    /// Whether the pooling allocator is in use.
    pub fn is_pooled(&self) -> bool {
        self.pooled
    }

    /// Check that `limits` fit this engine.
    pub(crate) fn check_limits(&self, plugin: &str, limits: &PluginLimits) -> Result<(), LoadError> {
        let bad = |reason: String| Err(LoadError::BadLimits { plugin: plugin.to_owned(), reason });
        if limits.memory_bytes() > self.options.max_memory_bytes {
            return bad(format!(
                "memory limit of {} MiB exceeds the engine's maximum of {} MiB",
                limits.memory_mib,
                self.options.max_memory_bytes >> 20
            ));
        }
        if limits.discovery_memory_mib << 20 > self.options.max_memory_bytes {
            return bad(format!(
                "discovery memory limit of {} MiB exceeds the engine's maximum of {} MiB",
                limits.discovery_memory_mib,
                self.options.max_memory_bytes >> 20
            ));
        }
        if limits.deadline_ms == 0 || limits.discovery_deadline_ms == 0 {
            return bad("deadline_ms and discovery_deadline_ms must be at least 1".into());
        }
        Ok(())
    }

    /// Epoch ticks that make up `deadline` (rounded up, at least one).
    pub(crate) fn ticks_for(&self, deadline: Duration) -> u64 {
        let tick = self.options.epoch_tick.as_nanos().max(1);
        u64::try_from(deadline.as_nanos().div_ceil(tick)).unwrap_or(u64::MAX).max(1)
    }

    /// Load the compiled artifact of the file with hash `sha256` from the cache, or compile
    /// the component that `prepare` makes from the file (and cache it).
    pub(crate) fn compile(
        &self,
        sha256: &str,
        prepare: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<Component, String> {
        let Some(dir) = &self.options.cache_dir else {
            return Component::new(&self.engine, prepare()?).map_err(|e| format!("{e:#}"));
        };
        let path = dir.join(format!("{sha256}-{}.cwasm", self.compat_key()));
        if path.exists() {
            match load_cached(&self.engine, &path) {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unusable compile cache entry");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        let component = Component::new(&self.engine, prepare()?).map_err(|e| format!("{e:#}"))?;
        if let Err(e) = store_cached(&component, &path) {
            // The cache is an optimisation: a read-only disk must not stop a plugin loading.
            tracing::warn!(path = %path.display(), error = %e, "cannot write compile cache entry");
        }
        Ok(component)
    }

    /// A key for "artifacts this engine can load": wasmtime version and settings.
    fn compat_key(&self) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("{:016x}", h.finish())
    }
}

fn config(options: &EngineOptions, pooling: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    if std::env::var_os("SKYBRIDGE_PLUGIN_PERFMAP").is_some() {
        // For profiling plugins with `perf`: names JIT code in /tmp/perf-PID.map.
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(options.max_instances)
            // A Rust component (with the WASI adapter) has a handful of core instances.
            .total_core_instances(options.max_instances * 8)
            .total_memories(options.max_instances * 2)
            .total_tables(options.max_instances * 4)
            .max_memory_size(options.max_memory_bytes)
            // Reset a freed instance's memory by zeroing only the pages it dirtied (found with
            // Linux's PAGEMAP_SCAN where available) instead of madvise: madvise on every
            // instance drop costs TLB-shootdown IPIs and page faults on the next use, which
            // dominated instantiation. 2 MiB covers a Rust guest's 1 MiB stack and its data.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(64 << 10);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// Create the cache directory readable and writable by this user only.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| anyhow::anyhow!("cannot create plugin cache {}: {e}", dir.display()))?;
    let mode = fs::metadata(dir)?.permissions().mode();
    if mode & 0o022 != 0 {
        anyhow::bail!(
            "plugin cache {} is writable by others (mode {:o}); cached compiled code must be private",
            dir.display(),
            mode & 0o777
        );
    }
    Ok(())
}

#[allow(unsafe_code)]
fn load_cached(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: deserializing runs native code from the file. The file was written by
    // `store_cached` into a directory only this user can write (checked at start-up), and its
    // name carries the engine's compatibility key, which wasmtime re-checks on load.
    unsafe { Component::deserialize_file(engine, path) }
}

fn store_cached(component: &Component, path: &Path) -> anyhow::Result<()> {
    let bytes = component.serialize().map_err(|e| anyhow::anyhow!("{e}"))?;
    // Write then rename, so a concurrent reader never sees half a file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)?;
    Ok(())
}

/// Advance the engine's epoch every `tick` until the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine, tick: Duration) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new().name("skybridge-epoch".into()).spawn(move || {
        loop {
            std::thread::sleep(tick);
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => break,
            }
        }
    })?;
    Ok(())
}
