//! # The store of a controller in a group: shared state on a [`Kv`], the rest in local redb
//!
//! What every controller of a group must see alike lives in the key-value store (etcd), under
//! one prefix:
//!
//! | key (under the prefix)                    | value                                  |
//! |-------------------------------------------|----------------------------------------|
//! | `accounts/{id}`                           | the account, **sealed** ([`SealKey`])  |
//! | `catalog/entries/{id}`                    | a catalog entry (JSON)                 |
//! | `catalog/kinds/{kind}/{id}`               | the entry's id (an index by kind)      |
//! | `catalog/match/{match key}`               | the id of the entry with that key      |
//! | `catalog/assoc/{entry id}/{platform}`     | an association (JSON)                  |
//! | `catalog/auth/{platform}/{match key}`     | an authorization (JSON)                |
//! | `catalog/rev`                             | rewritten by every catalog change      |
//! | `state/{key}`                             | runtime state: bindings, the policy    |
//!
//! (Each `{…}` part is escaped: `/` as `%2F`, `%` as `%25`.) What is each controller's own
//! stays in its local redb file: decision records (numbered across the group, from the counter
//! `ids/decisions`), the audit, and each platform's inventory and refresh records (what that
//! platform's site reported to this controller).
//!
//! Writes are conditional commits: a grant creates the entry guarded by its match key's
//! absence, so two controllers granting one capability at once make one entry with two
//! associations (the loser of the race reads the winner's entry and associates with it); an
//! account changes guarded by its last revision. Catalog reads come from a watch-fed
//! [`Mirror`] of `catalog/`, which every commit of this controller waits for (read your own
//! writes); accounts are mirrored the same way (an http binding authenticates every request's
//! account); runtime state reads go to the store. A commit and its audit line are two
//! writes: a crash between them can lose the audit line, never the decision.
//!
//! The [`Backend`] calls block: they run on the store's blocking pool and wait on the
//! runtime the store was opened on.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::kv::ids::IdBlocks;
use super::kv::mirror::{Mirror, mirror};
use super::kv::seal::SealKey;
use super::kv::{Commit, Condition, Item, Kv, KvError, MAX_LIST, Op, Revision};
use super::redb::RedbStore;
use super::{Backend, CatalogCounts, Decided, Inventory, StoreError, Which};
use crate::catalog::{
    Association, AuditRecord, Authorization, CatalogEntry, InventoryRecord, PlatformReports, RefreshRecord,
};
use crate::path::DecisionRecord;
use crate::session::accounts::Account;

/// How many decision ids a controller takes from the group's counter at once.
const DECISION_ID_BLOCK: u64 = 64;

/// How often a conditional write is tried again when others keep changing what it depends on.
const CAS_ATTEMPTS: usize = 16;

/// How long a write waits for the mirror to show it before going on (a warning then: later
/// reads may not show it yet).
const MIRROR_WAIT: Duration = Duration::from_secs(5);

/// One part of a key: `/` and `%` escaped, so parts never run into each other.
fn part(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

/// The keys of the shared state, under one prefix.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn accounts(&self) -> String {
        format!("{}accounts/", self.prefix)
    }
    fn account(&self, id: &str) -> String {
        format!("{}{}", self.accounts(), part(id))
    }
    fn catalog(&self) -> String {
        format!("{}catalog/", self.prefix)
    }
    fn entries(&self) -> String {
        format!("{}catalog/entries/", self.prefix)
    }
    fn entry(&self, id: &str) -> String {
        format!("{}{}", self.entries(), part(id))
    }
    fn kinds(&self, kind: &str) -> String {
        format!("{}catalog/kinds/{}/", self.prefix, part(kind))
    }
    fn kind(&self, kind: &str, id: &str) -> String {
        format!("{}{}", self.kinds(kind), part(id))
    }
    fn match_key(&self, key: &str) -> String {
        format!("{}catalog/match/{}", self.prefix, part(key))
    }
    fn all_associations(&self) -> String {
        format!("{}catalog/assoc/", self.prefix)
    }
    fn associations(&self, entry: &str) -> String {
        format!("{}{}/", self.all_associations(), part(entry))
    }
    fn association(&self, entry: &str, platform: &str) -> String {
        format!("{}{}", self.associations(entry), part(platform))
    }
    fn authorizations(&self) -> String {
        format!("{}catalog/auth/", self.prefix)
    }
    fn authorization(&self, platform: &str, match_key: &str) -> String {
        format!("{}{}/{}", self.authorizations(), part(platform), part(match_key))
    }
    fn revision(&self) -> String {
        format!("{}catalog/rev", self.prefix)
    }
    fn states(&self) -> String {
        format!("{}state/", self.prefix)
    }
}

fn encode<T: Serialize>(doing: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::backend(doing, e))
}

fn decode<T: DeserializeOwned>(kind: &'static str, item: &Item) -> Result<T, StoreError> {
    serde_json::from_slice(&item.value).map_err(|e| StoreError::Corrupt {
        kind,
        key: item.key.clone(),
        reason: e.to_string(),
    })
}

fn text(kind: &'static str, item: &Item) -> Result<String, StoreError> {
    String::from_utf8(item.value.clone()).map_err(|e| StoreError::Corrupt {
        kind,
        key: item.key.clone(),
        reason: e.to_string(),
    })
}

/// See the module docs.
pub struct SharedStore {
    kv: Arc<dyn Kv>,
    keys: Keys,
    seal: Arc<SealKey>,
    catalog: Mirror,
    /// The accounts (sealed), mirrored: reads never wait on the store.
    accounts: Mirror,
    local: RedbStore,
    /// Decision ids, unique across the group.
    decision_ids: IdBlocks,
    runtime: tokio::runtime::Handle,
}

impl SharedStore {
    /// Shared state in `kv` under `prefix` (accounts sealed with `seal`), the controller's own
    /// in the redb file at `local`. Lists the catalog into memory before it returns.
    pub async fn open(
        kv: Arc<dyn Kv>,
        prefix: &str,
        seal: Arc<SealKey>,
        local: &Path,
    ) -> Result<SharedStore, StoreError> {
        let keys = Keys { prefix: prefix.to_owned() };
        let catalog = mirror(Arc::clone(&kv), &keys.catalog())
            .await
            .map_err(|e| StoreError::backend("listing the shared catalog", e))?;
        let accounts = mirror(Arc::clone(&kv), &keys.accounts())
            .await
            .map_err(|e| StoreError::backend("listing the shared accounts", e))?;
        let local = RedbStore::open(local)?;
        let decision_ids =
            IdBlocks::new(Arc::clone(&kv), format!("{prefix}ids/decisions"), DECISION_ID_BLOCK);
        let runtime = tokio::runtime::Handle::current();
        Ok(SharedStore { kv, keys, seal, catalog, accounts, local, decision_ids, runtime })
    }

    /// Wait for a call to the key-value store (from the store's blocking pool).
    fn wait<T>(
        &self,
        doing: &'static str,
        call: impl Future<Output = Result<T, KvError>>,
    ) -> Result<T, StoreError> {
        self.runtime.block_on(call).map_err(|e| StoreError::backend(doing, e))
    }

    /// Commit; whether it applied, and at which revision.
    fn commit(
        &self,
        doing: &'static str,
        conditions: &[Condition],
        ops: &[Op],
    ) -> Result<Option<Revision>, StoreError> {
        Ok(match self.wait(doing, self.kv.commit(conditions, ops))? {
            Commit::Applied(revision) => Some(revision),
            Commit::ConditionFailed => None,
        })
    }

    /// Wait until the catalog's mirror shows `revision` (this controller's own write).
    fn seen(&self, revision: Revision) {
        self.seen_in(&self.catalog, revision);
    }

    /// Wait until `mirror` shows `revision`.
    fn seen_in(&self, mirror: &Mirror, revision: Revision) {
        if !self.runtime.block_on(mirror.wait_for(revision, MIRROR_WAIT)) {
            tracing::warn!(
                revision,
                "the store's copy in memory did not show a write within {MIRROR_WAIT:?}; reads may lag"
            );
        }
    }

    /// Write `account` if `guard` holds for its key, else answer `refused`; reads of this
    /// controller show the write once it returns.
    fn put_account(
        &self,
        doing: &'static str,
        account: &Account,
        guard: fn(String) -> Condition,
        refused: StoreError,
    ) -> Result<(), StoreError> {
        let key = self.keys.account(&account.id);
        let value = self.sealed_account(account)?;
        match self.commit(doing, &[guard(key.clone())], &[Op::put(key, value)])? {
            Some(revision) => {
                self.seen_in(&self.accounts, revision);
                Ok(())
            }
            None => Err(refused),
        }
    }

    /// Every item under `prefix` in the store, page by page.
    fn list_all(&self, doing: &'static str, prefix: &str) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.wait(doing, self.kv.list(prefix, after.as_deref(), MAX_LIST))?;
            after = page.items.last().map(|i| i.key.clone());
            out.extend(page.items);
            if !page.more {
                return Ok(out);
            }
        }
    }

    fn sealed_account(&self, account: &Account) -> Result<Vec<u8>, StoreError> {
        let key = self.keys.account(&account.id);
        let plain = encode("storing an account", account)?;
        self.seal.seal(&key, &plain).map_err(|e| StoreError::backend("sealing an account", e))
    }

    fn open_account(&self, item: &Item) -> Result<Account, StoreError> {
        let plain = self.seal.open(&item.key, &item.value).map_err(|e| StoreError::Corrupt {
            kind: "account",
            key: item.key.clone(),
            reason: format!("cannot be opened with this controller's seal key: {e}"),
        })?;
        serde_json::from_slice(&plain).map_err(|e| StoreError::Corrupt {
            kind: "account",
            key: item.key.clone(),
            reason: e.to_string(),
        })
    }

    fn association_of(a: &Authorization, entry: &CatalogEntry) -> Association {
        Association {
            entry: entry.id.clone(),
            platform: a.platform.clone(),
            native_id: a.service.native_id.clone(),
            request_id: a.request_id.clone(),
            capability: a.capability.clone(),
            since_ms: a.updated_ms,
        }
    }

    /// A grant: find the entry with the authorization's match key or create `new_entry`,
    /// associate the platform, store the authorization — one commit, guarded so that of two
    /// controllers creating one entry at once, one creates and the other associates.
    fn grant(
        &self,
        a: &Authorization,
        new_entry: &CatalogEntry,
    ) -> Result<(CatalogEntry, Revision), StoreError> {
        let doing = "granting a capability";
        let match_key = self.keys.match_key(&a.match_key);
        for _ in 0..CAS_ATTEMPTS {
            let (entry, condition, mut ops) = match self.wait(doing, self.kv.get(&match_key))? {
                Some(found) => {
                    let id = text("catalog match key", &found)?;
                    let key = self.keys.entry(&id);
                    let item = self.wait(doing, self.kv.get(&key))?.ok_or_else(|| StoreError::Corrupt {
                        kind: "catalog entry",
                        key: key.clone(),
                        reason: "its match key names it, but it is missing".into(),
                    })?;
                    let entry: CatalogEntry = decode("catalog entry", &item)?;
                    (entry, Condition::ModRevision(match_key.clone(), found.mod_revision), Vec::new())
                }
                None => {
                    let e = new_entry.clone();
                    let ops = vec![
                        Op::put(match_key.clone(), e.id.clone()),
                        Op::put(self.keys.entry(&e.id), encode(doing, &e)?),
                        Op::put(self.keys.kind(&e.kind, &e.id), e.id.clone()),
                    ];
                    (e, Condition::Absent(match_key.clone()), ops)
                }
            };
            ops.push(Op::put(
                self.keys.association(&entry.id, &a.platform),
                encode(doing, &Self::association_of(a, &entry))?,
            ));
            ops.push(Op::put(self.keys.authorization(&a.platform, &a.match_key), encode(doing, a)?));
            ops.push(Op::put(self.keys.revision(), Vec::new()));
            if let Some(revision) = self.commit(doing, &[condition], &ops)? {
                return Ok((entry, revision));
            }
        }
        Err(StoreError::Backend {
            doing,
            reason: format!("`{}` kept changing over {CAS_ATTEMPTS} attempts", a.match_key),
        })
    }

    fn catalog_items<T: DeserializeOwned>(
        &self,
        kind: &'static str,
        prefix: &str,
    ) -> Result<Vec<T>, StoreError> {
        self.catalog.range(prefix, None, usize::MAX).iter().map(|i| decode(kind, i)).collect()
    }

    fn with_associations(&self, entry: CatalogEntry) -> Result<(CatalogEntry, Vec<Association>), StoreError> {
        let found = self.catalog_items("association", &self.keys.associations(&entry.id))?;
        Ok((entry, found))
    }
}

impl Backend for SharedStore {
    fn insert_decision(&self, record: &mut DecisionRecord) -> Result<u64, StoreError> {
        // Kept locally, numbered across the group: an id names one decision whichever
        // controller is asked.
        record.id = self.wait("numbering a decision", self.decision_ids.next())?;
        self.local.insert_decision_as(record)?;
        Ok(record.id)
    }

    fn decision(&self, id: u64) -> Result<Option<DecisionRecord>, StoreError> {
        self.local.decision(id)
    }

    fn recent_decisions(&self, limit: usize) -> Result<Vec<DecisionRecord>, StoreError> {
        self.local.recent_decisions(limit)
    }

    fn insert_account(&self, account: &Account) -> Result<(), StoreError> {
        let exists = StoreError::Exists { kind: "account", key: account.id.clone() };
        self.put_account("creating an account", account, Condition::Absent, exists)
    }

    fn update_account(&self, account: &Account) -> Result<(), StoreError> {
        let missing = StoreError::NotFound { kind: "account", key: account.id.clone() };
        self.put_account("updating an account", account, Condition::Present, missing)
    }

    fn change_account(
        &self,
        id: &str,
        change: &mut dyn FnMut(&mut Account) -> bool,
    ) -> Result<Option<Account>, StoreError> {
        let doing = "changing an account";
        let key = self.keys.account(id);
        for _ in 0..CAS_ATTEMPTS {
            let item = self
                .wait(doing, self.kv.get(&key))?
                .ok_or_else(|| StoreError::NotFound { kind: "account", key: id.to_owned() })?;
            let mut account = self.open_account(&item)?;
            if !change(&mut account) {
                return Ok(None);
            }
            let value = self.sealed_account(&account)?;
            let unchanged = Condition::ModRevision(key.clone(), item.mod_revision);
            if let Some(revision) = self.commit(doing, &[unchanged], &[Op::put(key.clone(), value)])? {
                self.seen_in(&self.accounts, revision);
                return Ok(Some(account));
            }
        }
        Err(StoreError::Backend { doing, reason: format!("account `{id}` kept changing") })
    }

    fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        // From the copy in memory: an http binding authenticates every request's account.
        match self.accounts.get(&self.keys.account(id)) {
            Some(item) => self.open_account(&item).map(Some),
            None => Ok(None),
        }
    }

    fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let items = self.accounts.range(&self.keys.accounts(), None, usize::MAX);
        items.iter().map(|i| self.open_account(i)).collect()
    }

    fn remove_account(&self, id: &str) -> Result<bool, StoreError> {
        let key = self.keys.account(id);
        let removed =
            self.commit("deleting an account", &[Condition::Present(key.clone())], &[Op::Delete(key)])?;
        if let Some(revision) = removed {
            self.seen_in(&self.accounts, revision);
        }
        Ok(removed.is_some())
    }

    fn inventory(&self, platform: &str) -> Result<Inventory, StoreError> {
        self.local.inventory(platform)
    }

    fn apply_report(
        &self,
        platform: &str,
        put: &[InventoryRecord],
        state: &PlatformReports,
        refresh: &mut RefreshRecord,
    ) -> Result<(), StoreError> {
        self.local.apply_report(platform, put, state, refresh)
    }

    fn record_refresh(&self, refresh: &mut RefreshRecord) -> Result<(), StoreError> {
        self.local.record_refresh(refresh)
    }

    fn inventory_page(
        &self,
        platform: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<InventoryRecord>, StoreError> {
        self.local.inventory_page(platform, after, limit)
    }

    fn refreshes(&self, platform: &str, limit: usize) -> Result<Vec<RefreshRecord>, StoreError> {
        self.local.refreshes(platform, limit)
    }

    fn authorizations(&self, which: &Which) -> Result<Vec<Authorization>, StoreError> {
        let mut out = Vec::new();
        let mut corrupt = None;
        self.catalog.for_each(&self.keys.authorizations(), |item| {
            match decode::<Authorization>("authorization", item) {
                Ok(a) if which.keeps(&a) => out.push(a),
                Ok(_) => {}
                Err(e) => corrupt = Some(e),
            }
        });
        match corrupt {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    fn authorizations_page(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<Authorization>, StoreError> {
        let after = after.map(|(platform, match_key)| self.keys.authorization(platform, match_key));
        let items = self.catalog.range(&self.keys.authorizations(), after.as_deref(), limit);
        items.iter().map(|item| decode("authorization", item)).collect()
    }

    fn authorization(&self, platform: &str, match_key: &str) -> Result<Option<Authorization>, StoreError> {
        match self.catalog.get(&self.keys.authorization(platform, match_key)) {
            Some(item) => decode("authorization", &item).map(Some),
            None => Ok(None),
        }
    }

    fn add_authorizations(&self, new: Vec<Authorization>) -> Result<Vec<Authorization>, StoreError> {
        let doing = "adding authorizations";
        let mut added = Vec::new();
        let mut last = None;
        for a in new {
            let key = self.keys.authorization(&a.platform, &a.match_key);
            let put = Op::put(key.clone(), encode(doing, &a)?);
            if let Some(revision) = self.commit(doing, &[Condition::Absent(key)], &[put])? {
                last = Some(revision);
                added.push(a);
            }
        }
        if let Some(revision) = last {
            self.seen(revision);
        }
        Ok(added)
    }

    fn decide_all(&self, batch: Vec<Decided>) -> Result<Vec<Option<CatalogEntry>>, StoreError> {
        let doing = "storing authorization decisions";
        let mut entries = Vec::with_capacity(batch.len());
        let mut audit = Vec::with_capacity(batch.len());
        let mut last = None;
        // One commit per decision: a batch could pass etcd's bound on operations per commit.
        for Decided { authorization: a, audit: mut line, grant } in batch {
            let entry = match grant {
                Some(new_entry) => {
                    let (entry, revision) = self.grant(&a, &new_entry)?;
                    line.entry = Some(entry.id.clone());
                    last = Some(revision);
                    Some(entry)
                }
                None => {
                    let put = Op::put(self.keys.authorization(&a.platform, &a.match_key), encode(doing, &a)?);
                    last = self.commit(doing, &[], &[put])?.or(last);
                    None
                }
            };
            entries.push(entry);
            audit.push(line);
        }
        if let Some(revision) = last {
            self.seen(revision);
        }
        self.local.append_audit(&mut audit)?;
        Ok(entries)
    }

    fn revoke(&self, a: &Authorization, audit: &mut AuditRecord) -> Result<(), StoreError> {
        let doing = "revoking a capability";
        let entry = match self.wait(doing, self.kv.get(&self.keys.match_key(&a.match_key)))? {
            Some(item) => Some(text("catalog match key", &item)?),
            None => None,
        };
        let mut ops = Vec::new();
        if let Some(id) = &entry {
            ops.push(Op::Delete(self.keys.association(id, &a.platform)));
        }
        ops.push(Op::put(self.keys.authorization(&a.platform, &a.match_key), encode(doing, a)?));
        ops.push(Op::put(self.keys.revision(), Vec::new()));
        if let Some(revision) = self.commit(doing, &[], &ops)? {
            self.seen(revision);
        }
        audit.entry = entry;
        self.local.append_audit(std::slice::from_mut(audit))
    }

    fn entries(
        &self,
        kind: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(CatalogEntry, Vec<Association>)>, StoreError> {
        let ids: Vec<String> = match kind {
            Some(kind) => {
                let after = after.map(|id| self.keys.kind(kind, id));
                let index = self.catalog.range(&self.keys.kinds(kind), after.as_deref(), limit);
                index.iter().map(|i| text("catalog kind index", i)).collect::<Result<_, _>>()?
            }
            None => {
                let after = after.map(|id| self.keys.entry(id));
                let items = self.catalog.range(&self.keys.entries(), after.as_deref(), limit);
                let entries: Vec<CatalogEntry> =
                    items.iter().map(|i| decode("catalog entry", i)).collect::<Result<_, _>>()?;
                return entries.into_iter().map(|e| self.with_associations(e)).collect();
            }
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(item) = self.catalog.get(&self.keys.entry(&id)) {
                out.push(self.with_associations(decode("catalog entry", &item)?)?);
            }
        }
        Ok(out)
    }

    fn entry(&self, id: &str) -> Result<Option<(CatalogEntry, Vec<Association>)>, StoreError> {
        match self.catalog.get(&self.keys.entry(id)) {
            Some(item) => self.with_associations(decode("catalog entry", &item)?).map(Some),
            None => Ok(None),
        }
    }

    fn entry_id(&self, match_key: &str) -> Result<Option<String>, StoreError> {
        match self.catalog.get(&self.keys.match_key(match_key)) {
            Some(item) => text("catalog match key", &item).map(Some),
            None => Ok(None),
        }
    }

    fn catalog_revision(&self) -> Result<u64, StoreError> {
        // Both parts only grow: their sum grows whenever either does.
        let shared = self.catalog.get(&self.keys.revision()).map_or(0, |i| i.mod_revision);
        Ok(shared + self.local.catalog_revision()?)
    }

    fn catalog_counts(&self) -> Result<CatalogCounts, StoreError> {
        #[derive(serde::Deserialize)]
        struct State {
            state: crate::catalog::AuthorizationState,
        }
        let mut authorizations = std::collections::BTreeMap::new();
        let mut corrupt = None;
        self.catalog.for_each(&self.keys.authorizations(), |item| {
            match decode::<State>("authorization", item) {
                Ok(State { state }) => *authorizations.entry(state).or_insert(0) += 1,
                Err(e) => corrupt = Some(e),
            }
        });
        if let Some(e) = corrupt {
            return Err(e);
        }
        Ok(CatalogCounts {
            entries: self.catalog.count(&self.keys.entries()) as u64,
            associations: self.catalog.count(&self.keys.all_associations()) as u64,
            inventory: self.local.catalog_counts()?.inventory,
            authorizations,
        })
    }

    fn associations(&self) -> Result<Vec<Association>, StoreError> {
        self.catalog_items("association", &self.keys.all_associations())
    }

    fn audit(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.local.audit(limit)
    }

    fn inventory_record(
        &self,
        platform: &str,
        native_id: &str,
    ) -> Result<Option<InventoryRecord>, StoreError> {
        self.local.inventory_record(platform, native_id)
    }

    fn put_state(&self, key: &str, value: Option<&[u8]>) -> Result<(), StoreError> {
        let key = format!("{}{key}", self.keys.states());
        let op = match value {
            Some(bytes) => Op::put(key, bytes.to_vec()),
            None => Op::Delete(key),
        };
        self.commit("writing runtime state", &[], &[op]).map(drop)
    }

    fn states(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let root = self.keys.states();
        let items = self.list_all("reading runtime state", &format!("{root}{prefix}"))?;
        Ok(items.into_iter().map(|i| (i.key[root.len()..].to_owned(), i.value)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::kv::redb::RedbKv;

    async fn shared(kv: &Arc<dyn Kv>, dir: &Path, name: &str) -> Arc<SharedStore> {
        let seal = Arc::new(SealKey::new(&[7; 32]));
        Arc::new(SharedStore::open(Arc::clone(kv), "sb/", seal, &dir.join(name)).await.expect("open"))
    }

    fn redb_kv(dir: &Path) -> Arc<dyn Kv> {
        Arc::new(RedbKv::open(&dir.join("kv.redb")).expect("kv"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_store_conformance_suite_and_seals_accounts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = redb_kv(dir.path());
        let store = shared(&kv, dir.path(), "local.redb").await;
        let s = Arc::clone(&store);
        tokio::task::spawn_blocking(move || crate::testkit::store::conformance(s.as_ref()))
            .await
            .expect("conformance");

        let account = Account {
            id: "acme".into(),
            secret: "a-secret-nobody-may-read".into(),
            created_unix_ms: 1,
            credentials: Default::default(),
        };
        let s = Arc::clone(&store);
        tokio::task::spawn_blocking(move || s.insert_account(&account)).await.expect("join").expect("insert");
        let raw = kv.get("sb/accounts/acme").await.expect("get").expect("stored");
        let text = String::from_utf8_lossy(&raw.value);
        assert!(!text.contains("a-secret-nobody-may-read") && !text.contains("acme"), "sealed: {text}");
        // Another key cannot open it: a controller with the wrong seal key reads a typed error.
        let other = Arc::new(
            SharedStore::open(
                Arc::clone(&kv),
                "sb/",
                Arc::new(SealKey::new(&[8; 32])),
                &dir.path().join("o.redb"),
            )
            .await
            .expect("open"),
        );
        let e = tokio::task::spawn_blocking(move || other.account("acme")).await.expect("join").unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { kind: "account", .. }), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn decisions_stay_local_but_their_ids_are_unique_across_the_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = redb_kv(dir.path());
        let (a, b) = (shared(&kv, dir.path(), "a.redb").await, shared(&kv, dir.path(), "b.redb").await);
        let ids = tokio::task::spawn_blocking(move || {
            let mut ids = Vec::new();
            for i in 0..100 {
                let (store, other) = if i % 3 == 0 { (&a, &b) } else { (&b, &a) };
                let mut record = crate::testkit::store::decision("site-a");
                let id = store.insert_decision(&mut record).expect("stored");
                assert_eq!(store.decision(id).expect("read").map(|r| r.id), Some(id), "kept where made");
                assert!(other.decision(id).expect("read").is_none(), "and only there");
                ids.push(id);
            }
            ids
        })
        .await
        .expect("join");
        let unique: std::collections::BTreeSet<u64> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "no id given twice: {ids:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn controllers_granting_one_capability_at_once_make_one_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::testkit::store::concurrent_grants(redb_kv(dir.path()), dir.path()).await;
    }
}
