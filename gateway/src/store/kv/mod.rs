//! # A key-value store with revisions, leases and watches
//!
//! What several controllers share state through (issue 17), shaped after etcd's v3 API and
//! Teleport's backend interface:
//!
//! - every commit bumps one store-wide [`Revision`]; a key remembers the revision that created
//!   it (it only grows: a fencing epoch for whoever created it) and the one that last changed it;
//! - a [`Kv::commit`] applies all its [`Op`]s or, when one of its [`Condition`]s does not hold,
//!   none ("create the entry, then associate" is one commit guarded by the entry's absence);
//! - a key may hang on a lease ([`Kv::grant`]): it goes, in one revision with the lease's other
//!   keys, when the lease expires (no [`Kv::keep_alive`] within its TTL) or is revoked;
//! - [`Kv::watch`] delivers every change under a prefix after a revision, in order; a watch
//!   whose history was compacted away says [`WatchEvent::Relist`], and a watch that ends (its
//!   consumer fell behind, the connection dropped) is resumed from the last revision seen.
//!
//! [`redb::RedbKv`] is the embedded engine (one controller; leases live as long as the process);
//! the `skybridge-store-etcd` crate is the shared one. One conformance suite
//! (`testkit::kv`) runs against both.

pub mod cluster_secret;
pub mod ids;
pub mod lease;
pub mod mirror;
pub mod redb;
pub mod seal;

use std::time::Duration;

/// A store-wide revision: 0 before the first commit.
pub type Revision = u64;

/// A lease's id (etcd's are signed 64-bit).
pub type LeaseId = i64;

/// The longest key (bytes).
pub const MAX_KEY_BYTES: usize = 1024;
/// The largest value (bytes): under etcd's default 1.5 MiB request limit with room for the rest.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// The most operations and conditions in one commit (etcd's default `--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;
/// The most items one [`Kv::list`] returns.
pub const MAX_LIST: usize = 10_000;

/// A stored key with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// The revision of the commit that created the key (since it last did not exist).
    pub create_revision: Revision,
    /// The revision of the commit that last changed it.
    pub mod_revision: Revision,
    /// The lease it hangs on, if any.
    pub lease: Option<LeaseId>,
}

/// What must hold for a commit to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The key does not exist.
    Absent(String),
    /// The key exists.
    Present(String),
    /// The key was last changed at this revision (0: it does not exist).
    ModRevision(String, Revision),
    /// The key was created at this revision (0: it does not exist) — an owner's epoch.
    CreateRevision(String, Revision),
}

/// One change in a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set the key's value, hanging it on `lease` (or on none).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// The lease, which must be alive.
        lease: Option<LeaseId>,
    },
    /// Remove the key (nothing when it does not exist).
    Delete(String),
}

impl Op {
    /// A put without a lease.
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Op {
        Op::Put { key: key.into(), value: value.into(), lease: None }
    }
}

/// How a commit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Every operation applied, at this revision.
    Applied(Revision),
    /// A condition did not hold: nothing changed.
    ConditionFailed,
}

/// A page of keys under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// In key order.
    pub items: Vec<Item>,
    /// The store's revision when the page was read: watch from here to follow on.
    pub revision: Revision,
    /// Whether more keys follow the last one.
    pub more: bool,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was created or changed (its `mod_revision` is the change's revision).
    Put(Item),
    /// A key was removed (deleted, or its lease ended) at `revision`.
    Delete {
        /// The key.
        key: String,
        /// The revision of the removal.
        revision: Revision,
    },
    /// The changes asked for were compacted away: list again, then watch from the listing's
    /// revision. Nothing follows on this watch.
    Relist,
}

/// A watch: its changes in revision order; `None` when it ended (resume from the last
/// revision seen).
pub type Watch = tokio::sync::mpsc::Receiver<WatchEvent>;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// The lease expired or was revoked (or never existed): what hung on it is gone.
    #[error("lease {0:x} is gone")]
    LeaseLost(LeaseId),
    /// An input is over its bound.
    #[error("{what} is {len} long; the most is {max}")]
    TooLarge {
        /// What (`key`, `value`, `commit`…).
        what: &'static str,
        /// How long it is.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A commit changes the same key twice (etcd refuses it too).
    #[error("the commit changes key `{0}` twice")]
    DuplicateKey(String),
    /// The revision asked for was compacted away.
    #[error("revision {0} was compacted")]
    Compacted(Revision),
    /// The engine could not be reached or did not answer in time (worth retrying).
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The engine failed.
    #[error("the store failed: {0}")]
    Backend(String),
}

/// The key-value interface several controllers share state through. See the module docs.
#[async_trait::async_trait]
pub trait Kv: Send + Sync {
    /// The key's item, if it exists.
    async fn get(&self, key: &str) -> Result<Option<Item>, KvError>;
    /// Up to `limit` (at most [`MAX_LIST`]) keys starting with `prefix`, after `start_after`
    /// when given, in key order.
    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Listing, KvError>;
    /// Apply every op if every condition holds; else nothing.
    async fn commit(&self, conditions: &[Condition], ops: &[Op]) -> Result<Commit, KvError>;
    /// A new lease living `ttl` (whole seconds, at least 1) unless kept alive.
    async fn grant(&self, ttl: Duration) -> Result<LeaseId, KvError>;
    /// Renew the lease to its full TTL; [`KvError::LeaseLost`] when it is gone.
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), KvError>;
    /// End the lease now, removing its keys (nothing when it is already gone).
    async fn revoke(&self, lease: LeaseId) -> Result<(), KvError>;
    /// Every change under `prefix` after revision `after`.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, KvError>;
    /// Forget the history up to `revision` (watches from before it get [`WatchEvent::Relist`]).
    async fn compact(&self, revision: Revision) -> Result<(), KvError>;
}

/// Check a commit's bounds (shared by the engines, so both refuse the same inputs).
pub fn check_commit(conditions: &[Condition], ops: &[Op]) -> Result<(), KvError> {
    let n = conditions.len() + ops.len();
    if n > MAX_TXN_OPS {
        return Err(KvError::TooLarge { what: "commit", len: n, max: MAX_TXN_OPS });
    }
    let condition_keys = conditions.iter().map(|c| match c {
        Condition::Absent(k)
        | Condition::Present(k)
        | Condition::ModRevision(k, _)
        | Condition::CreateRevision(k, _) => k,
    });
    let op_keys = ops.iter().map(|o| match o {
        Op::Put { key, .. } | Op::Delete(key) => key,
    });
    for key in condition_keys.chain(op_keys.clone()) {
        check_key(key)?;
    }
    let mut written = std::collections::HashSet::new();
    if let Some(twice) = op_keys.into_iter().find(|k| !written.insert(*k)) {
        return Err(KvError::DuplicateKey(twice.clone()));
    }
    for op in ops {
        if let Op::Put { value, .. } = op
            && value.len() > MAX_VALUE_BYTES
        {
            return Err(KvError::TooLarge { what: "value", len: value.len(), max: MAX_VALUE_BYTES });
        }
    }
    Ok(())
}

/// Check a key's bounds.
pub fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(KvError::TooLarge { what: "key", len: key.len(), max: MAX_KEY_BYTES });
    }
    Ok(())
}

/// A lease's TTL in whole seconds (at least 1), as etcd counts it.
pub fn ttl_seconds(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX)
}
