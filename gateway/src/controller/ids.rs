//! Ids for bindings and tunnels. A controller on its own counts them itself; in a group the
//! ids come in blocks from the shared store ([`IdBlocks`]), so that no two controllers hand out
//! one id — a binding's id names its kept state, and a tunnel's id its forwarding state at
//! every hop.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::kv::KvError;
use crate::store::kv::ids::IdBlocks;

/// How many ids a controller of a group takes from the shared counter at once.
pub(crate) const BLOCK: u64 = 64;

/// See the module docs.
pub(crate) enum Ids {
    /// This controller's own counter: the next id.
    Own(AtomicU64),
    /// Blocks of a counter in the shared store.
    Shared(IdBlocks),
}

impl Ids {
    /// Ids of this controller alone, from 1.
    pub(crate) fn own() -> Ids {
        Ids::Own(AtomicU64::new(1))
    }

    /// The next id.
    pub(crate) async fn next(&self) -> Result<u64, KvError> {
        match self {
            Ids::Own(next) => Ok(next.fetch_add(1, Ordering::Relaxed)),
            Ids::Shared(blocks) => blocks.next().await,
        }
    }

    /// `id` is in use (kept by the previous run): later ids are above it. (A shared counter
    /// only grows, and it handed `id` out.)
    pub(crate) fn in_use(&self, id: u64) {
        if let Ids::Own(next) = self {
            next.fetch_max(id.saturating_add(1), Ordering::Relaxed);
        }
    }
}
