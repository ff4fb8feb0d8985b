//! Native test harness: unit-test a plugin's logic with plain `cargo test`, no wasm runtime.
//!
//! The functions here run the same glue the wasm export runs (weight resolution, unknown-weight
//! checks), and [`TestHost`] stands in for the gateway's host imports on the current thread:
//!
//! ```
//! use skybridge_plugin_sdk::{testing::{self, TestHost}, PathMetrics, Score, Scorer, Weights, WeightInfo};
//!
//! struct Fastest;
//! const WEIGHTS: &[WeightInfo] = &[WeightInfo::new("latency", 1.0, "per ms")];
//! impl Scorer for Fastest {
//!     fn weights() -> &'static [WeightInfo] { WEIGHTS }
//!     fn score(m: &PathMetrics, w: &Weights) -> Result<Score, String> {
//!         Ok(Score::new(-w.get("latency") * m.rtt_ms, "latency only"))
//!     }
//! }
//!
//! let _host = TestHost::new().config("mode", "strict").install();
//! let m = PathMetrics { rtt_ms: 20.0, ..Default::default() };
//! assert_eq!(testing::score::<Fastest>(&m, &[("latency", 2.0)]).unwrap().value, -40.0);
//! assert!(testing::score::<Fastest>(&m, &[("latncy", 2.0)]).is_err());
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::host::Level;
use crate::{
    Adapter, AuthorizationRequest, Authorizer, CloudRequest, CloudResponse, Decision, DiscoveredService,
    PathMetrics, RequestHead, Score, Scorer, TargetCredentials, Weights,
};

/// Score `metrics` with scorer `S` and the operator weights `weights`, exactly as the gateway
/// would (defaults merged, unknown weights refused unless `S` accepts them).
pub fn score<S: Scorer>(metrics: &PathMetrics, weights: &[(&str, f64)]) -> Result<Score, String> {
    let given = weights.iter().map(|(k, v)| ((*k).to_owned(), *v));
    let weights = Weights::resolve(S::weights(), given, S::accepts_unknown_weights())?;
    S::score(metrics, &weights)
}

/// Decide `request` with authorizer `A`.
pub fn authorize<A: Authorizer>(request: &AuthorizationRequest) -> Decision {
    A::authorize(request)
}

/// Rewrite `head` with adapter `A` for `credentials`.
pub fn rewrite_request<A: Adapter>(
    head: RequestHead,
    credentials: &TargetCredentials,
) -> Result<RequestHead, String> {
    A::rewrite_request(head, credentials)
}

/// What a whole discovery conversation found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// Every service found, in order.
    pub services: Vec<DiscoveredService>,
    /// The native ids said to be gone, in order.
    pub gone: Vec<String>,
}

/// Run adapter `A`'s whole discovery conversation with `cloud` answering each request, as the
/// site would (at most `max_steps` requests).
pub fn discover<A: Adapter>(
    context: &[(&str, &str)],
    max_steps: usize,
    mut cloud: impl FnMut(&CloudRequest) -> CloudResponse,
) -> Result<Discovery, String> {
    let context: Vec<(String, String)> =
        context.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let mut step = A::start_discovery(&context)?;
    let mut found =
        Discovery { services: std::mem::take(&mut step.services), gone: std::mem::take(&mut step.gone) };
    for _ in 0..max_steps {
        let Some(request) = step.next.take() else { return Ok(found) };
        let answer = cloud(&request);
        step = A::continue_discovery(&context, &step.cursor, &answer)?;
        found.services.append(&mut step.services);
        found.gone.append(&mut step.gone);
    }
    Err(format!("discovery did not finish within {max_steps} requests"))
}

/// A stand-in for the gateway's host imports on the current thread: configuration values, a
/// fixed clock, and a record of what the plugin logged. Install it for the duration of a test.
#[derive(Debug, Clone)]
pub struct TestHost {
    config: BTreeMap<String, String>,
    now: (u64, u32),
    monotonic_ns: u64,
    logs: Vec<(Level, String)>,
}

impl Default for TestHost {
    fn default() -> Self {
        // 2026-01-01T00:00:00Z: a fixed instant keeps time-dependent tests deterministic.
        TestHost { config: BTreeMap::new(), now: (1_767_225_600, 0), monotonic_ns: 0, logs: vec![] }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<TestHost>> = const { RefCell::new(None) };
}

impl TestHost {
    /// An empty host: no configuration, clock at 2026-01-01T00:00:00Z.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set one configuration value.
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.config.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Set the wall clock (seconds since the Unix epoch, nanoseconds).
    pub fn clock(mut self, seconds: u64, nanoseconds: u32) -> Self {
        self.now = (seconds, nanoseconds);
        self
    }

    /// Make this the host of the current thread until the guard is dropped.
    pub fn install(self) -> TestHostGuard {
        CURRENT.with(|c| *c.borrow_mut() = Some(self));
        TestHostGuard { _not_send: std::marker::PhantomData }
    }
}

/// Keeps a [`TestHost`] installed; dropping it uninstalls it.
#[derive(Debug)]
pub struct TestHostGuard {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl TestHostGuard {
    /// Everything logged so far, in order.
    pub fn logs(&self) -> Vec<(Level, String)> {
        with(|h| h.logs.clone())
    }
}

impl Drop for TestHostGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = None);
    }
}

/// Run `f` on the installed host, or on an empty default one when none is installed.
fn with<R>(f: impl FnOnce(&mut TestHost) -> R) -> R {
    CURRENT.with(|c| {
        let mut slot = c.borrow_mut();
        f(slot.get_or_insert_with(TestHost::default))
    })
}

/// The native implementations behind [`crate::host`].
#[cfg(not(target_family = "wasm"))]
pub(crate) mod native {
    use super::with;
    use crate::host::Level;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};

    pub fn log(level: Level, message: &str) {
        with(|h| h.logs.push((level, message.to_owned())))
    }
    pub fn config_get(key: &str) -> Option<String> {
        with(|h| h.config.get(key).cloned())
    }
    pub fn config_entries() -> Vec<(String, String)> {
        with(|h| h.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
    pub fn now() -> (u64, u32) {
        with(|h| h.now)
    }
    pub fn monotonic_ns() -> u64 {
        // Advances on every reading, like a real clock would.
        with(|h| {
            h.monotonic_ns += 1_000;
            h.monotonic_ns
        })
    }
    pub fn sha256(data: &[u8]) -> Vec<u8> {
        Sha256::digest(data).to_vec()
    }
    pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length, so construction cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }
}
