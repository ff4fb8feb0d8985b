//! What the ingress may hold at once, so that no number of clients — authenticated or not —
//! can exhaust the controller's memory or descriptors:
//!
//! - client connections of every binding and the CONNECT proxy together
//!   (`max_client_connections`, at most three quarters of the descriptor limit, which is
//!   raised to its hard maximum at start): past it, new connections are closed at once, so
//!   the admin API and the mesh keep descriptors;
//! - client connections of one binding (`max_connections`);
//! - request bodies being buffered by `http` bindings, in KiB, all together
//!   (`max_buffered_mib`) and per binding (`max_buffered_per_binding_mib`): a request
//!   reserves its declared length before a byte of its body is read.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::lock;
use crate::config::IngressConfig;
use crate::mesh::transport::RefusalLog;

/// The ingress's shared limits.
pub struct Budget {
    clients: Arc<Semaphore>,
    client_limit: usize,
    buffered: Arc<Semaphore>,
    refusals: std::sync::Mutex<RefusalLog>,
}

impl Budget {
    /// The limits of `ingress`, the client cap bounded by `descriptors` (the process's limit).
    pub fn new(ingress: &IngressConfig, descriptors: Option<u64>) -> Budget {
        let by_descriptors =
            descriptors.map_or(usize::MAX, |d| usize::try_from(d / 4 * 3).unwrap_or(usize::MAX));
        let client_limit = ingress.max_client_connections.min(by_descriptors).max(1);
        Budget {
            clients: Arc::new(Semaphore::new(client_limit)),
            client_limit,
            buffered: Arc::new(Semaphore::new(kib(ingress.max_buffered_mib << 20))),
            refusals: std::sync::Mutex::default(),
        }
    }

    /// How many client connections may be open at once.
    pub fn client_limit(&self) -> usize {
        self.client_limit
    }

    /// A place for a new client connection of `what` (a binding, the CONNECT proxy), or `None`
    /// when every place is taken (a warning at most every 10 s says how many were closed).
    pub fn admit(&self, what: &str) -> Option<OwnedSemaphorePermit> {
        let permit = Arc::clone(&self.clients).try_acquire_owned().ok();
        if permit.is_none() {
            let why = format!("the ingress holds max_client_connections ({})", self.client_limit);
            self.closed(what, &why);
        }
        permit
    }

    /// Note a client connection of `what` closed at once because of `why` (a warning at most
    /// every 10 s, with how many since the last).
    pub fn closed(&self, what: &str, why: &str) {
        if let Some(since) = lock(&self.refusals).refused(Instant::now()) {
            tracing::warn!(
                what,
                "client connection closed: {why} ({since} more closed since the last warning)"
            );
        }
    }

    /// The budget all `http` bindings share for bodies being buffered, in KiB.
    pub fn buffered(&self) -> &Arc<Semaphore> {
        &self.buffered
    }
}

/// `bytes` in whole KiB (at least one), as budget permits.
pub fn kib(bytes: usize) -> usize {
    bytes.div_ceil(1024).max(1)
}

/// One client connection of a binding, freed on drop.
pub struct ClientSlot(Arc<AtomicUsize>);

impl ClientSlot {
    /// Take a place among `open`'s at most `max`.
    pub fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<ClientSlot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| ClientSlot(Arc::clone(open)))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Raise the process's soft descriptor limit to its hard limit; the limit in force.
pub fn raise_descriptor_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(max) = limit.maximum
        && limit.current.is_some_and(|c| c < max)
    {
        limit.current = Some(max);
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!("cannot raise the descriptor limit to {max}: {e}");
        }
    }
    getrlimit(Resource::Nofile).current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_capped_by_config_and_by_descriptors() {
        let ingress = IngressConfig { max_client_connections: 3, ..IngressConfig::default() };
        let budget = Budget::new(&ingress, Some(1_000_000));
        assert_eq!(budget.client_limit(), 3);
        let held: Vec<_> = (0..3).map(|_| budget.admit("test").expect("a place")).collect();
        assert!(budget.admit("test").is_none(), "full");
        drop(held);
        assert!(budget.admit("test").is_some(), "freed");
        let few = Budget::new(&IngressConfig::default(), Some(1024));
        assert_eq!(few.client_limit(), 768, "three quarters of the descriptors");
        assert_eq!(budget.buffered().available_permits(), 256 * 1024, "KiB");
    }

    #[test]
    fn a_binding_takes_at_most_its_client_slots() {
        let open = Arc::new(AtomicUsize::new(0));
        let a = ClientSlot::take(&open, 1).expect("a slot");
        assert!(ClientSlot::take(&open, 1).is_none());
        drop(a);
        assert!(ClientSlot::take(&open, 1).is_some());
        assert_eq!((kib(1), kib(1024), kib(1025), kib(0)), (1, 1, 2, 1));
    }
}
