//! The per-instance store data: what a plugin instance can reach (its config, the host
//! interfaces) and what it may use (the resource limiter). Nothing else is in it — no files,
//! sockets, environment or ambient clock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::ResourceLimiter;

use super::PluginLimits;
use super::bindings::{clock, config, crypto, log, types};
use super::error::CallFailure;

/// Longest log message kept; longer ones are cut (with a marker) so one call cannot flood memory.
const MAX_LOG_MESSAGE: usize = 4096;

/// Counters of one loaded plugin, shared by all its instances.
#[derive(Debug, Default)]
pub struct PluginStats {
    pub(crate) calls: AtomicU64,
    pub(crate) faults: AtomicU64,
    pub(crate) rejections: AtomicU64,
    pub(crate) logs_emitted: AtomicU64,
    pub(crate) logs_dropped: AtomicU64,
    pub(crate) deadline_exceeded: AtomicU64,
    pub(crate) memory_limit: AtomicU64,
    pub(crate) table_limit: AtomicU64,
    pub(crate) traps: AtomicU64,
    pub(crate) invalid_answers: AtomicU64,
    /// Calls timed (one in [`TIME_ONE_IN`], the first always) and their time, ns (wall clock,
    /// instantiation included).
    pub(crate) timed_calls: AtomicU64,
    pub(crate) timed_ns: AtomicU64,
    /// The largest linear memory any instance grew to, bytes.
    pub(crate) peak_memory: AtomicU64,
    /// The timed calls' times.
    pub(crate) call_times: CallTimes,
}

/// The times of the timed calls, in buckets from 10 µs to 1 s (for `/metrics`).
#[derive(Debug)]
pub(crate) struct CallTimes(pub(crate) crate::metrics::Histogram);

impl Default for CallTimes {
    fn default() -> Self {
        CallTimes(crate::metrics::Histogram::new(crate::metrics::MICROS_BUCKETS))
    }
}

/// One call in this many is timed: reading the clock twice costs about a tenth of a warm
/// call, and a sample gives the mean as well.
pub(crate) const TIME_ONE_IN: u64 = 16;

impl PluginStats {
    /// Count a failed call by its kind (rejections are answers, counted apart).
    pub(crate) fn count_failure(&self, failure: &CallFailure) {
        let counter = match failure {
            CallFailure::DeadlineExceeded { .. } => &self.deadline_exceeded,
            CallFailure::MemoryLimit { .. } => &self.memory_limit,
            CallFailure::TableLimit { .. } => &self.table_limit,
            CallFailure::Trap(_) => &self.traps,
            CallFailure::InvalidAnswer(_) => &self.invalid_answers,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A snapshot of a plugin's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct StatsSnapshot {
    /// Calls made (including `describe` at load).
    pub calls: u64,
    /// Calls that trapped or breached a limit.
    pub faults: u64,
    /// Calls the plugin answered with an error of its own.
    pub rejections: u64,
    /// Log messages written to the gateway log.
    pub logs_emitted: u64,
    /// Log messages dropped by the rate limit.
    pub logs_dropped: u64,
    /// Calls stopped at the CPU deadline.
    pub deadline_exceeded: u64,
    /// Calls that breached the memory limit.
    pub memory_limit: u64,
    /// Calls that breached the table limit.
    pub table_limit: u64,
    /// Calls that trapped (a panic, an unreachable, …).
    pub traps: u64,
    /// Calls whose answer the host could not use.
    pub invalid_answers: u64,
    /// Calls timed (one in 16, the first always).
    pub timed_calls: u64,
    /// Their time, ns.
    pub timed_ns: u64,
    /// The largest linear memory any instance grew to, bytes (the initial memory counts as a
    /// growth from zero).
    pub peak_memory_bytes: u64,
}

impl StatsSnapshot {
    /// Mean time of a call, µs, over the timed calls (0 before any call).
    pub fn mean_call_us(&self) -> f64 {
        if self.timed_calls == 0 { 0.0 } else { self.timed_ns as f64 / self.timed_calls as f64 / 1000.0 }
    }

    /// Failed calls by kind, only the kinds that happened: `deadline`, `memory`, `table`,
    /// `trap`, `invalid-answer`.
    pub fn failures(&self) -> std::collections::BTreeMap<String, u64> {
        [
            ("deadline", self.deadline_exceeded),
            ("memory", self.memory_limit),
            ("table", self.table_limit),
            ("trap", self.traps),
            ("invalid-answer", self.invalid_answers),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_owned(), n))
        .collect()
    }
}

impl PluginStats {
    /// Read the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            calls: self.calls.load(Ordering::Relaxed),
            faults: self.faults.load(Ordering::Relaxed),
            rejections: self.rejections.load(Ordering::Relaxed),
            logs_emitted: self.logs_emitted.load(Ordering::Relaxed),
            logs_dropped: self.logs_dropped.load(Ordering::Relaxed),
            deadline_exceeded: self.deadline_exceeded.load(Ordering::Relaxed),
            memory_limit: self.memory_limit.load(Ordering::Relaxed),
            table_limit: self.table_limit.load(Ordering::Relaxed),
            traps: self.traps.load(Ordering::Relaxed),
            invalid_answers: self.invalid_answers.load(Ordering::Relaxed),
            timed_calls: self.timed_calls.load(Ordering::Relaxed),
            timed_ns: self.timed_ns.load(Ordering::Relaxed),
            peak_memory_bytes: self.peak_memory.load(Ordering::Relaxed),
        }
    }
}

/// A token bucket shared by all instances of one plugin: `rate` messages per second on
/// average, bursts of up to `burst`.
#[derive(Debug)]
pub(crate) struct LogBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl LogBucket {
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        LogBucket { rate: f64::from(rate), burst, state: Mutex::new((burst, Instant::now())) }
    }

    /// Take one token if there is one.
    fn admit(&self, now: Instant) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = &mut *state;
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the limiter refused, remembered so that the call's error can say so precisely.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Breach {
    Memory { limit: usize, requested: usize },
    Table { limit: usize, requested: usize },
}

/// Store data of one plugin instance.
pub struct Sandbox {
    pub(crate) plugin: Arc<str>,
    pub(crate) config: Arc<BTreeMap<String, String>>,
    pub(crate) stats: Arc<PluginStats>,
    pub(crate) log_bucket: Arc<LogBucket>,
    pub(crate) call: &'static str,
    pub(crate) dropped_this_call: u64,
    /// The last error-level message of the current call: a panicking plugin says why here.
    pub(crate) last_error_log: Option<String>,
    memory_limit: usize,
    table_limit: usize,
    instance_limit: usize,
    pub(crate) breach: Option<Breach>,
    started: Instant,
}

impl Sandbox {
    pub(crate) fn new(
        plugin: Arc<str>,
        config: Arc<BTreeMap<String, String>>,
        stats: Arc<PluginStats>,
        log_bucket: Arc<LogBucket>,
        limits: &PluginLimits,
    ) -> Self {
        Sandbox {
            plugin,
            config,
            stats,
            log_bucket,
            call: "instantiate",
            dropped_this_call: 0,
            last_error_log: None,
            memory_limit: limits.memory_bytes(),
            table_limit: limits.table_elements,
            instance_limit: limits.instances,
            breach: None,
            started: Instant::now(),
        }
    }

    /// Prepare for a call: attribute logs to it and clear the last call's state.
    pub(crate) fn begin(&mut self, call: &'static str) {
        self.call = call;
        self.breach = None;
        self.dropped_this_call = 0;
        self.last_error_log = None;
    }

    /// Finish a call: report messages the rate limit dropped, once, instead of each one.
    pub(crate) fn end(&mut self) {
        if self.dropped_this_call > 0 {
            tracing::warn!(
                plugin = %self.plugin,
                call = self.call,
                dropped = self.dropped_this_call,
                "plugin log rate limit: messages dropped"
            );
            self.dropped_this_call = 0;
        }
    }

    /// The limit breach behind a failed call, if the limiter refused something.
    pub(crate) fn breach_failure(&self) -> Option<CallFailure> {
        self.breach.map(|b| match b {
            Breach::Memory { limit, requested } => CallFailure::MemoryLimit { limit, requested },
            Breach::Table { limit, requested } => CallFailure::TableLimit { limit, requested },
        })
    }
}

impl ResourceLimiter for Sandbox {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.breach = Some(Breach::Memory { limit: self.memory_limit, requested: desired });
            // An error (not `Ok(false)`) stops the plugin at once instead of letting it retry.
            wasmtime::bail!("memory limit of {} bytes exceeded", self.memory_limit);
        }
        self.stats.peak_memory.fetch_max(u64::try_from(desired).unwrap_or(u64::MAX), Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_limit {
            self.breach = Some(Breach::Table { limit: self.table_limit, requested: desired });
            wasmtime::bail!("table limit of {} elements exceeded", self.table_limit);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instance_limit
    }

    fn tables(&self) -> usize {
        self.instance_limit
    }

    fn memories(&self) -> usize {
        self.instance_limit
    }
}

// ---------------------------------------------------------------------------------------------
// Host interfaces

impl types::Host for Sandbox {}

impl log::Host for Sandbox {
    fn log(&mut self, level: log::Level, mut message: String) {
        if level == log::Level::Error {
            // Kept even when rate-limited: it explains a trap that may follow.
            self.last_error_log = Some(message.chars().take(MAX_LOG_MESSAGE).collect());
        }
        if !self.log_bucket.admit(Instant::now()) {
            self.stats.logs_dropped.fetch_add(1, Ordering::Relaxed);
            self.dropped_this_call += 1;
            return;
        }
        self.stats.logs_emitted.fetch_add(1, Ordering::Relaxed);
        if message.len() > MAX_LOG_MESSAGE {
            let mut cut = MAX_LOG_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" …[truncated]");
        }
        let (plugin, call) = (&*self.plugin, self.call);
        match level {
            log::Level::Trace => {
                tracing::trace!(target: "skybridge::plugin::guest", plugin, call, "{message}")
            }
            log::Level::Debug => {
                tracing::debug!(target: "skybridge::plugin::guest", plugin, call, "{message}")
            }
            log::Level::Info => tracing::info!(target: "skybridge::plugin::guest", plugin, call, "{message}"),
            log::Level::Warn => tracing::warn!(target: "skybridge::plugin::guest", plugin, call, "{message}"),
            log::Level::Error => {
                tracing::error!(target: "skybridge::plugin::guest", plugin, call, "{message}")
            }
        }
    }
}

impl config::Host for Sandbox {
    fn get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }

    fn entries(&mut self) -> Vec<types::Pair> {
        self.config.iter().map(|(k, v)| types::Pair { key: k.clone(), value: v.clone() }).collect()
    }
}

impl clock::Host for Sandbox {
    fn now(&mut self) -> clock::Datetime {
        // A clock before 1970 is a broken host; report the epoch rather than failing the plugin.
        let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        clock::Datetime { seconds: d.as_secs(), nanoseconds: d.subsec_nanos() }
    }

    fn monotonic_ns(&mut self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

impl crypto::Host for Sandbox {
    fn sha256(&mut self, data: Vec<u8>) -> Vec<u8> {
        Sha256::digest(&data).to_vec()
    }

    fn hmac_sha256(&mut self, key: Vec<u8>, data: Vec<u8>) -> Vec<u8> {
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&key) else {
            unreachable!("HMAC accepts keys of any length")
        };
        mac.update(&data);
        mac.finalize().into_bytes().to_vec()
    }
}
