//! Named plugins with atomic hot reload.
//!
//! Each name maps to an `Arc<Plugin>`. A caller clones the `Arc` and calls on it, so replacing
//! the plugin swaps the pointer under a short write lock while in-flight calls finish on the
//! old one, which is freed when its last call returns.

use std::collections::BTreeMap;
use std::fs;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use super::engine::PluginEngine;
use super::error::LoadError;
use super::loaded::{Plugin, PluginInfo};
use super::sandbox::StatsSnapshot;
use super::{PluginSpec, World};

/// What identifies a plugin file's version without reading it: length and modification time.
type Fingerprint = (u64, Option<SystemTime>);

struct Slot {
    spec: PluginSpec,
    /// The world the plugin must implement, if the node said (a reload must keep it).
    world: Option<World>,
    plugin: Arc<Plugin>,
    fingerprint: Option<Fingerprint>,
}

/// The outcome of a reload for one plugin.
#[derive(Debug)]
pub enum Reload {
    /// The file changed and the new plugin replaced the old one.
    Swapped {
        /// Plugin name.
        name: String,
        /// SHA-256 of the new component.
        sha256: String,
    },
    /// The file changed but the new plugin failed to load; the old one stays in service.
    Failed {
        /// Plugin name.
        name: String,
        /// Why it failed.
        error: LoadError,
    },
}

/// One plugin in service, as [`PluginRegistry::entries`] lists it.
#[derive(Debug, Clone)]
pub struct RegistryEntry {
    /// What it is.
    pub info: PluginInfo,
    /// Its counters.
    pub stats: StatsSnapshot,
    /// The times of its timed calls.
    pub call_times: crate::metrics::HistogramSnapshot,
    /// The file it was loaded from.
    pub file: std::path::PathBuf,
}

/// The plugins a node runs, by name.
pub struct PluginRegistry {
    engine: Arc<PluginEngine>,
    slots: RwLock<BTreeMap<String, Slot>>,
}

impl PluginRegistry {
    /// Its plugins' calls, failures by kind, rejections and call times, for `/metrics`.
    pub fn write_metrics(&self, e: &mut crate::metrics::Exposition) {
        use crate::metrics::Kind;
        let plugins = self.entries();
        let mut f = e.family("skybridge_plugin_calls_total", Kind::Counter, "Calls into a plugin.");
        for p in &plugins {
            f.sample(&[("plugin", &p.info.name), ("world", p.info.world.name())], p.stats.calls as f64);
        }
        let mut f = e.family(
            "skybridge_plugin_failures_total",
            Kind::Counter,
            "Plugin calls that failed, by kind (deadline, memory, table, trap, invalid-answer).",
        );
        for p in &plugins {
            let s = &p.stats;
            for (kind, n) in [
                ("deadline", s.deadline_exceeded),
                ("memory", s.memory_limit),
                ("table", s.table_limit),
                ("trap", s.traps),
                ("invalid-answer", s.invalid_answers),
            ] {
                f.sample(&[("plugin", &p.info.name), ("kind", kind)], n as f64);
            }
        }
        let mut f = e.family(
            "skybridge_plugin_rejections_total",
            Kind::Counter,
            "Plugin calls the plugin answered with an error of its own.",
        );
        for p in &plugins {
            f.sample(&[("plugin", &p.info.name)], p.stats.rejections as f64);
        }
        let mut f = e.family(
            "skybridge_plugin_call_duration_seconds",
            Kind::Histogram,
            "Time of plugin calls, sampled (one call in 16, the first always).",
        );
        for p in &plugins {
            f.histogram(&[("plugin", &p.info.name)], &p.call_times);
        }
    }
}

impl PluginRegistry {
    /// An empty registry on `engine`.
    pub fn new(engine: Arc<PluginEngine>) -> Self {
        PluginRegistry { engine, slots: RwLock::new(BTreeMap::new()) }
    }

    /// The engine plugins are compiled and run on.
    pub fn engine(&self) -> &Arc<PluginEngine> {
        &self.engine
    }

    /// Load `spec` and put it in service under its name, replacing any plugin of that name.
    /// On error nothing changes.
    pub fn load(&self, spec: PluginSpec) -> Result<Arc<Plugin>, LoadError> {
        self.load_as(spec, None)
    }

    /// Like [`PluginRegistry::load`], but the plugin must implement `world` — now and at
    /// every reload (a file replaced by a plugin of another world keeps the old one in
    /// service).
    pub fn load_as(&self, spec: PluginSpec, world: Option<World>) -> Result<Arc<Plugin>, LoadError> {
        let fingerprint = fingerprint(&spec);
        let plugin = Arc::new(self.engine.load(&spec)?);
        if let Some(want) = world
            && plugin.world() != want
        {
            return Err(LoadError::WorldMismatch {
                plugin: spec.name.clone(),
                world: want.name(),
                reason: format!("{} is a {} plugin, not a {}", spec.path.display(), plugin.world(), want),
            });
        }
        tracing::info!(
            plugin = %spec.name,
            world = plugin.world().name(),
            sha256 = %plugin.info().sha256,
            "plugin loaded"
        );
        let name = spec.name.clone();
        let slot = Slot { spec, world, plugin: plugin.clone(), fingerprint };
        self.slots.write().unwrap_or_else(|p| p.into_inner()).insert(name, slot);
        Ok(plugin)
    }

    /// The plugin in service under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.slots.read().unwrap_or_else(|p| p.into_inner()).get(name).map(|s| s.plugin.clone())
    }

    /// Remove a plugin; calls in flight finish on it.
    pub fn remove(&self, name: &str) -> bool {
        self.slots.write().unwrap_or_else(|p| p.into_inner()).remove(name).is_some()
    }

    /// Every plugin with its info and counters, by name.
    pub fn list(&self) -> Vec<(PluginInfo, StatsSnapshot)> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        slots.values().map(|s| (s.plugin.info().clone(), s.plugin.stats())).collect()
    }

    /// Every plugin with its info, counters and file, by name.
    pub fn entries(&self) -> Vec<RegistryEntry> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        slots
            .values()
            .map(|s| RegistryEntry {
                info: s.plugin.info().clone(),
                stats: s.plugin.stats(),
                call_times: s.plugin.call_times(),
                file: s.spec.path.clone(),
            })
            .collect()
    }

    /// Reload every plugin whose file changed since it was loaded. A plugin that fails to
    /// reload stays in service in its old version; the failure is returned and logged.
    pub fn reload_changed(&self) -> Vec<Reload> {
        let changed: Vec<(PluginSpec, Option<World>)> = {
            let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
            slots
                .values()
                .filter(|s| fingerprint(&s.spec) != s.fingerprint)
                .map(|s| (s.spec.clone(), s.world))
                .collect()
        };
        let mut outcomes = Vec::new();
        for (spec, world) in changed {
            let name = spec.name.clone();
            // Compile outside the lock: calls keep flowing to the old plugin meanwhile.
            match self.load_as(spec.clone(), world) {
                Ok(plugin) => outcomes.push(Reload::Swapped { name, sha256: plugin.info().sha256.clone() }),
                Err(error) => {
                    tracing::error!(plugin = %name, %error, "plugin reload failed; keeping the old version");
                    // Remember this version so a broken file is not retried on every poll.
                    if let Some(slot) = self.slots.write().unwrap_or_else(|p| p.into_inner()).get_mut(&name) {
                        slot.fingerprint = fingerprint(&spec);
                    }
                    outcomes.push(Reload::Failed { name, error });
                }
            }
        }
        outcomes
    }
}

impl PluginRegistry {
    /// Reload changed plugin files every `interval` on a background thread, which stops by
    /// itself once the registry is dropped. A file is checked by length and modification
    /// time (a stat, not a read), so a short interval is cheap.
    pub fn spawn_watcher(
        self: &Arc<Self>,
        interval: Duration,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let registry: Weak<Self> = Arc::downgrade(self);
        std::thread::Builder::new().name("skybridge-plugin-watch".into()).spawn(move || {
            loop {
                std::thread::sleep(interval);
                let Some(registry) = registry.upgrade() else { break };
                // Outcomes are logged by reload_changed itself.
                registry.reload_changed();
            }
        })
    }
}

fn fingerprint(spec: &PluginSpec) -> Option<Fingerprint> {
    let meta = fs::metadata(&spec.path).ok()?;
    Some((meta.len(), meta.modified().ok()))
}
