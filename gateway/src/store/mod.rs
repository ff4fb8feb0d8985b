//! # The controller's durable state
//!
//! Decision records by id, accounts with their credential mappings, and each platform's
//! inventory with its refresh records, behind one interface:
//! [`Backend`] is what a storage engine implements (blocking calls, typed [`StoreError`]s);
//! [`Store`] is what the controller holds — every call runs on a bounded blocking pool, so disk
//! I/O never runs on an async worker. [`redb`] is the embedded default; [`shared`] is a
//! controller's store in a group (shared state on a [`kv::Kv`] such as etcd, the rest in a
//! local redb file); [`open`] opens whichever the configuration names.
//!
//! The store holds secrets (account secrets and their mapped credentials): the redb file is
//! made private to the controller's user.

pub mod kv;
pub mod open;
pub mod redb;
pub mod shared;

use std::path::Path;
use std::sync::Arc;

use std::collections::BTreeMap;

use crate::blocking::{Pool, PoolError};
use crate::catalog::{
    Association, AuditRecord, Authorization, CatalogEntry, InventoryRecord, PlatformReports, RefreshRecord,
};
use crate::path::DecisionRecord;
use crate::session::accounts::Account;

/// Why a store operation failed. A caller decides on the kind: [`StoreError::Exists`] and
/// [`StoreError::NotFound`] are answers about the data; the others are failures of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A record with this key exists already.
    #[error("{kind} `{key}` exists")]
    Exists {
        /// What kind of record (`account`, …).
        kind: &'static str,
        /// Its key.
        key: String,
    },
    /// No record with this key.
    #[error("no {kind} `{key}`")]
    NotFound {
        /// What kind of record.
        kind: &'static str,
        /// Its key.
        key: String,
    },
    /// A stored value does not parse: the file was written by an incompatible version, or
    /// damaged.
    #[error("the stored {kind} `{key}` does not parse: {reason}")]
    Corrupt {
        /// What kind of record.
        kind: &'static str,
        /// Its key.
        key: String,
        /// The parser's message.
        reason: String,
    },
    /// The storage engine failed (disk, locking, a transaction).
    #[error("the store failed {doing}: {reason}")]
    Backend {
        /// What it was doing.
        doing: &'static str,
        /// The engine's message.
        reason: String,
    },
    /// The store is closed or its worker failed.
    #[error(transparent)]
    Unavailable(#[from] PoolError),
}

impl StoreError {
    /// A storage engine failure while `doing` something.
    pub fn backend(doing: &'static str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Backend { doing, reason: e.to_string() }
    }
}

/// One decision of the authorization handshake to store.
#[derive(Debug, Clone)]
pub struct Decided {
    /// The authorization in its new state.
    pub authorization: Authorization,
    /// Its audit line (`seq` is assigned when it is stored).
    pub audit: AuditRecord,
    /// For a grant: the entry to create when the catalog has none with its match key.
    pub grant: Option<CatalogEntry>,
}

/// The catalog's size.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CatalogCounts {
    /// Catalog entries.
    pub entries: u64,
    /// Platforms offering an entry, over all entries.
    pub associations: u64,
    /// Discovered services on record, over all platforms.
    pub inventory: u64,
    /// Capability authorizations by state (states with none are absent).
    pub authorizations: BTreeMap<crate::catalog::AuthorizationState, u64>,
}

/// Which authorizations a listing keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    /// Those still pending (to resume asking them).
    Pending,
    /// The one with this request id (a platform's revocation names it).
    Request(String),
}

impl Which {
    /// Whether `a` is kept.
    pub fn keeps(&self, a: &Authorization) -> bool {
        match self {
            Which::Pending => a.state == crate::catalog::AuthorizationState::Pending,
            Which::Request(id) => a.request_id == *id,
        }
    }
}

/// Decision records kept: a record whose id is this many or more below the newest is dropped
/// as a newer one is stored. Every binding made or re-routed and every `POST /v1/decisions`
/// stores one (about a kilobyte); without a bound a controller's file — and redb's page cache,
/// so its memory — grew with every decision it ever made.
pub const KEEP_DECISIONS: u64 = 10_000;

/// What a storage engine implements. Calls may block on I/O; [`Store`] runs them on its pool.
pub trait Backend: Send + Sync + 'static {
    /// Store a new decision record, giving it the next id (written into it); the oldest past
    /// [`KEEP_DECISIONS`] are dropped.
    fn insert_decision(&self, record: &mut DecisionRecord) -> Result<u64, StoreError>;
    /// The decision record with this id.
    fn decision(&self, id: u64) -> Result<Option<DecisionRecord>, StoreError>;
    /// The latest `limit` decision records, newest first.
    fn recent_decisions(&self, limit: usize) -> Result<Vec<DecisionRecord>, StoreError>;
    /// Create an account; [`StoreError::Exists`] if the id is taken.
    fn insert_account(&self, account: &Account) -> Result<(), StoreError>;
    /// Replace an account; [`StoreError::NotFound`] if there is none with its id.
    fn update_account(&self, account: &Account) -> Result<(), StoreError>;
    /// Read account `id`, let `change` change it, and store it — atomically: when the account
    /// changed in between (another controller), it is read and changed again. `change` returns
    /// false to refuse: nothing is stored and the answer is `None`.
    /// [`StoreError::NotFound`] if there is no such account.
    fn change_account(
        &self,
        id: &str,
        change: &mut dyn FnMut(&mut Account) -> bool,
    ) -> Result<Option<Account>, StoreError>;
    /// An account by id.
    fn account(&self, id: &str) -> Result<Option<Account>, StoreError>;
    /// Every account, by id.
    fn accounts(&self) -> Result<Vec<Account>, StoreError>;
    /// Delete an account; whether it existed.
    fn remove_account(&self, id: &str) -> Result<bool, StoreError>;

    /// A platform's report state and whole inventory, by native id.
    fn inventory(&self, platform: &str) -> Result<Inventory, StoreError>;
    /// In one transaction: write `put` into the platform's inventory, its new report state,
    /// and the refresh record (its `seq` is assigned here). All of it or nothing.
    fn apply_report(
        &self,
        platform: &str,
        put: &[InventoryRecord],
        state: &PlatformReports,
        refresh: &mut RefreshRecord,
    ) -> Result<(), StoreError>;
    /// Record a refresh that changed nothing (a failure or a refusal).
    fn record_refresh(&self, refresh: &mut RefreshRecord) -> Result<(), StoreError>;
    /// Up to `limit` inventory records of a platform with native ids after `after`, in order.
    fn inventory_page(
        &self,
        platform: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<InventoryRecord>, StoreError>;
    /// A platform's latest `limit` refresh records, newest first.
    fn refreshes(&self, platform: &str, limit: usize) -> Result<Vec<RefreshRecord>, StoreError>;

    /// The authorizations `which` selects, each decoded and kept or dropped at once (a
    /// listing for the few pending ones of a large catalog holds only those).
    fn authorizations(&self, which: &Which) -> Result<Vec<Authorization>, StoreError>;
    /// Up to `limit` authorizations after the one of `after` (a platform and a match key), in
    /// the backend's order of their keys (stable: paging by the last one seen visits each once).
    fn authorizations_page(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<Authorization>, StoreError>;
    /// The authorization of `match_key` at `platform`, if there is one.
    fn authorization(&self, platform: &str, match_key: &str) -> Result<Option<Authorization>, StoreError>;
    /// Store new authorizations, skipping any whose (platform, match key) has one already;
    /// returns those stored.
    fn add_authorizations(&self, new: Vec<Authorization>) -> Result<Vec<Authorization>, StoreError>;
    /// Store decisions of the handshake, all in one transaction (a group commit), each with
    /// its audit line (`seq` assigned). A grant finds the catalog entry with the
    /// authorization's match key or creates the one it carries, associates the platform with
    /// it and names it in the audit line. Returns, in order, the entry of each grant.
    fn decide_all(&self, batch: Vec<Decided>) -> Result<Vec<Option<CatalogEntry>>, StoreError>;
    /// A revocation, in one transaction: store the authorization, remove the platform's
    /// association (the entry stays, orphaned when it was the last), audit.
    fn revoke(&self, a: &Authorization, audit: &mut AuditRecord) -> Result<(), StoreError>;
    /// Up to `limit` catalog entries (of `kind`, when given) with ids after `after`, in id
    /// order, each with its associations — one read.
    fn entries(
        &self,
        kind: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(CatalogEntry, Vec<Association>)>, StoreError>;
    /// One entry and its associations.
    fn entry(&self, id: &str) -> Result<Option<(CatalogEntry, Vec<Association>)>, StoreError>;
    /// The id of the entry with this match key.
    fn entry_id(&self, match_key: &str) -> Result<Option<String>, StoreError>;
    /// How many changes the catalog has seen (grants, revocations, inventory writes): its
    /// revision, which watchers wait on. It only grows, across restarts too.
    fn catalog_revision(&self) -> Result<u64, StoreError>;
    /// How many catalog entries, associations (a platform offering an entry) and inventory
    /// records there are (each count read in constant time).
    fn catalog_counts(&self) -> Result<CatalogCounts, StoreError>;
    /// The associations of every entry (for listings that show who offers what).
    fn associations(&self) -> Result<Vec<Association>, StoreError>;
    /// The latest `limit` audit lines, newest first.
    fn audit(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;
    /// The inventory record of `native_id` at `platform`.
    fn inventory_record(
        &self,
        platform: &str,
        native_id: &str,
    ) -> Result<Option<InventoryRecord>, StoreError>;

    /// Write (`Some`) or delete (`None`) the runtime state document `key` (JSON): what a
    /// restarted controller restores — its bindings, the policy set at runtime.
    fn put_state(&self, key: &str, value: Option<&[u8]>) -> Result<(), StoreError>;
    /// Every runtime state document whose key starts with `prefix`, in key order.
    fn states(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
}

/// A platform's stored inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Its report state.
    pub platform: PlatformReports,
    /// Its records by native id.
    pub records: BTreeMap<String, InventoryRecord>,
}

/// Store calls that may run at once (redb serialises writers anyway; readers are cheap).
const STORE_CALLS: usize = 4;

/// The controller's store: a [`Backend`] behind a bounded blocking pool. Clones share it.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` once closed: the backend (and a redb file's lock) is released.
    backend: std::sync::Mutex<Option<Arc<dyn Backend>>>,
    pool: Pool,
}

impl Store {
    /// Open (or create) the embedded redb store at `path`.
    pub fn open_redb(path: &Path) -> Result<Store, StoreError> {
        Ok(Store::new(Arc::new(redb::RedbStore::open(path)?)))
    }

    /// A store over any backend.
    pub fn new(backend: Arc<dyn Backend>) -> Store {
        let inner =
            Inner { backend: std::sync::Mutex::new(Some(backend)), pool: Pool::new("store", STORE_CALLS) };
        Store { inner: Arc::new(inner) }
    }

    fn backend(&self) -> Result<Arc<dyn Backend>, StoreError> {
        let backend = self.inner.backend.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        backend.clone().ok_or(StoreError::Unavailable(PoolError::Closed("store")))
    }

    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Backend) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let backend = self.backend()?;
        self.inner.pool.run(move || f(backend.as_ref())).await?
    }

    /// Write runtime state document `key` (see [`Backend::put_state`]).
    pub async fn put_state<T: serde::Serialize>(&self, key: String, value: &T) -> Result<(), StoreError> {
        let bytes =
            serde_json::to_vec(value).map_err(|e| StoreError::backend("encoding runtime state", e))?;
        self.call(move |b| b.put_state(&key, Some(&bytes))).await
    }

    /// Delete runtime state document `key`.
    pub async fn remove_state(&self, key: String) -> Result<(), StoreError> {
        self.call(move |b| b.put_state(&key, None)).await
    }

    /// The runtime state documents under `prefix`, decoded; one that does not decode is an
    /// error naming its key.
    pub async fn states<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        prefix: impl Into<String>,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let prefix = prefix.into();
        let raw = self.call(move |b| b.states(&prefix)).await?;
        raw.into_iter()
            .map(|(key, bytes)| match serde_json::from_slice(&bytes) {
                Ok(value) => Ok((key, value)),
                Err(e) => Err(StoreError::Corrupt { kind: "runtime state", key, reason: e.to_string() }),
            })
            .collect()
    }

    /// Store a new decision record; it comes back with its id.
    pub async fn insert_decision(&self, mut record: DecisionRecord) -> Result<DecisionRecord, StoreError> {
        self.call(move |b| b.insert_decision(&mut record).map(|_| record)).await
    }

    /// The decision record with this id.
    pub async fn decision(&self, id: u64) -> Result<Option<DecisionRecord>, StoreError> {
        self.call(move |b| b.decision(id)).await
    }

    /// The latest `limit` decision records, newest first.
    pub async fn recent_decisions(&self, limit: usize) -> Result<Vec<DecisionRecord>, StoreError> {
        self.call(move |b| b.recent_decisions(limit)).await
    }

    /// Create an account.
    pub async fn insert_account(&self, account: Account) -> Result<(), StoreError> {
        self.call(move |b| b.insert_account(&account)).await
    }

    /// Replace an account.
    pub async fn update_account(&self, account: Account) -> Result<(), StoreError> {
        self.call(move |b| b.update_account(&account)).await
    }

    /// Read account `id`, change it with `change`, and store it, atomically (see
    /// [`Backend::change_account`]: `change` may run again when the account changed in
    /// between). `change` may refuse with its own error.
    pub async fn change_account<E: From<StoreError> + Send + 'static>(
        &self,
        id: &str,
        mut change: impl FnMut(&mut Account) -> Result<(), E> + Send + 'static,
    ) -> Result<Account, E> {
        let backend = self.backend()?;
        let id = id.to_owned();
        let run = move || -> Result<Account, E> {
            let mut refused = None;
            let changed = backend.change_account(&id, &mut |account| match change(account) {
                Ok(()) => true,
                Err(e) => {
                    refused = Some(e);
                    false
                }
            })?;
            match (changed, refused) {
                (Some(account), _) => Ok(account),
                (None, Some(e)) => Err(e),
                (None, None) => Err(E::from(StoreError::NotFound { kind: "account", key: id.clone() })),
            }
        };
        self.inner.pool.run(run).await.map_err(|e| E::from(StoreError::from(e)))?
    }

    /// An account by id.
    pub async fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        let id = id.to_owned();
        self.call(move |b| b.account(&id)).await
    }

    /// Every account.
    pub async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.call(|b| b.accounts()).await
    }

    /// Delete an account; whether it existed.
    pub async fn remove_account(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.call(move |b| b.remove_account(&id)).await
    }

    /// A platform's report state and inventory.
    pub async fn inventory(&self, platform: &str) -> Result<Inventory, StoreError> {
        let platform = platform.to_owned();
        self.call(move |b| b.inventory(&platform)).await
    }

    /// Write a report's changes, the platform's state and the refresh record, atomically;
    /// returns the refresh record with its sequence number.
    pub async fn apply_report(
        &self,
        platform: &str,
        put: Vec<InventoryRecord>,
        state: PlatformReports,
        mut refresh: RefreshRecord,
    ) -> Result<RefreshRecord, StoreError> {
        let platform = platform.to_owned();
        self.call(move |b| b.apply_report(&platform, &put, &state, &mut refresh).map(|()| refresh)).await
    }

    /// Record a refresh that changed nothing.
    pub async fn record_refresh(&self, mut refresh: RefreshRecord) -> Result<RefreshRecord, StoreError> {
        self.call(move |b| b.record_refresh(&mut refresh).map(|()| refresh)).await
    }

    /// A page of a platform's inventory, after native id `after`.
    pub async fn inventory_page(
        &self,
        platform: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<InventoryRecord>, StoreError> {
        let platform = platform.to_owned();
        self.call(move |b| b.inventory_page(&platform, after.as_deref(), limit)).await
    }

    /// A platform's latest refresh records, newest first.
    pub async fn refreshes(&self, platform: &str, limit: usize) -> Result<Vec<RefreshRecord>, StoreError> {
        let platform = platform.to_owned();
        self.call(move |b| b.refreshes(&platform, limit)).await
    }

    /// The authorizations `which` selects.
    pub async fn authorizations(&self, which: Which) -> Result<Vec<Authorization>, StoreError> {
        self.call(move |b| b.authorizations(&which)).await
    }

    /// Up to `limit` authorizations after the one of `after` (a platform and a match key).
    pub async fn authorizations_page(
        &self,
        after: Option<(String, String)>,
        limit: usize,
    ) -> Result<Vec<Authorization>, StoreError> {
        self.call(move |b| {
            b.authorizations_page(after.as_ref().map(|(p, m)| (p.as_str(), m.as_str())), limit)
        })
        .await
    }

    /// The authorization of `match_key` at `platform`.
    pub async fn authorization(
        &self,
        platform: &str,
        match_key: &str,
    ) -> Result<Option<Authorization>, StoreError> {
        let (platform, match_key) = (platform.to_owned(), match_key.to_owned());
        self.call(move |b| b.authorization(&platform, &match_key)).await
    }

    /// Store new authorizations unless their (platform, match key) has one; those stored.
    pub async fn add_authorizations(
        &self,
        new: Vec<Authorization>,
    ) -> Result<Vec<Authorization>, StoreError> {
        self.call(move |b| b.add_authorizations(new)).await
    }

    /// Store decisions of the handshake in one transaction; the entry of each grant.
    pub async fn decide_all(&self, batch: Vec<Decided>) -> Result<Vec<Option<CatalogEntry>>, StoreError> {
        self.call(move |b| b.decide_all(batch)).await
    }

    /// Apply a revocation in one transaction.
    pub async fn revoke(&self, a: Authorization, mut audit: AuditRecord) -> Result<(), StoreError> {
        self.call(move |b| b.revoke(&a, &mut audit)).await
    }

    /// A page of catalog entries (of `kind`) after id `after`, with their associations.
    pub async fn entries(
        &self,
        kind: Option<String>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(CatalogEntry, Vec<Association>)>, StoreError> {
        self.call(move |b| b.entries(kind.as_deref(), after.as_deref(), limit)).await
    }

    /// One entry and its associations.
    pub async fn entry(&self, id: &str) -> Result<Option<(CatalogEntry, Vec<Association>)>, StoreError> {
        let id = id.to_owned();
        self.call(move |b| b.entry(&id)).await
    }

    /// The catalog's revision.
    pub async fn catalog_revision(&self) -> Result<u64, StoreError> {
        self.call(|b| b.catalog_revision()).await
    }

    /// How many entries, associations and inventory records the catalog holds.
    pub async fn catalog_counts(&self) -> Result<CatalogCounts, StoreError> {
        self.call(|b| b.catalog_counts()).await
    }

    /// The id of the entry with this match key.
    pub async fn entry_id(&self, match_key: &str) -> Result<Option<String>, StoreError> {
        let key = match_key.to_owned();
        self.call(move |b| b.entry_id(&key)).await
    }

    /// Every association.
    pub async fn associations(&self) -> Result<Vec<Association>, StoreError> {
        self.call(|b| b.associations()).await
    }

    /// The latest audit lines, newest first.
    pub async fn audit(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.call(move |b| b.audit(limit)).await
    }

    /// One inventory record.
    pub async fn inventory_record(
        &self,
        platform: &str,
        native_id: &str,
    ) -> Result<Option<InventoryRecord>, StoreError> {
        let (platform, native_id) = (platform.to_owned(), native_id.to_owned());
        self.call(move |b| b.inventory_record(&platform, &native_id)).await
    }

    /// Wait for the calls running now, refuse any further ones, and release the backend (a
    /// redb file can be opened again once this returns).
    pub async fn close(&self) {
        self.inner.pool.close().await;
        let backend = self.inner.backend.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        drop(backend);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_store_refuses_calls_and_releases_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        let store = Store::open_redb(&path).unwrap();
        let account = Account {
            id: "acme".into(),
            secret: "0123456789abcdef".into(),
            created_unix_ms: 1,
            credentials: Default::default(),
        };
        store.insert_account(account.clone()).await.unwrap();
        let e = store.insert_account(account).await.unwrap_err();
        assert!(matches!(e, StoreError::Exists { kind: "account", .. }), "{e}");
        let e = store.change_account::<StoreError>("nobody", |_| Ok(())).await.unwrap_err();
        assert!(matches!(e, StoreError::NotFound { kind: "account", .. }), "{e}");
        let clone = store.clone();
        store.close().await;
        assert!(matches!(clone.account("acme").await, Err(StoreError::Unavailable(_))));
        // The file is free again: the same process can open it, and the data is there.
        let again = Store::open_redb(&path).unwrap();
        assert!(again.account("acme").await.unwrap().is_some());
    }
}
