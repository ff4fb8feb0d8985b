//! The embedded store: one redb file holding decision records (id → JSON) and accounts
//! (id → JSON, with secrets: the file is made private to the controller's user).

use std::path::Path;

use ::redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Backend, Decided, Inventory, KEEP_DECISIONS, StoreError, Which};
use crate::catalog::{
    Association, AuditRecord, Authorization, CatalogEntry, InventoryRecord, KEEP_REFRESHES, PlatformReports,
    RefreshRecord,
};
use crate::path::DecisionRecord;
use crate::session::accounts::Account;

/// Decision records: id → JSON.
const DECISIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("connections");

/// Accounts: id → JSON (with secrets).
const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");

/// Inventory: (platform, native id) → JSON [`InventoryRecord`].
const INVENTORY: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("inventory");

/// Platforms' report state: platform → JSON [`PlatformReports`].
const PLATFORMS: TableDefinition<&str, &[u8]> = TableDefinition::new("platform_reports");

/// Refresh records: (platform, seq) → JSON [`RefreshRecord`].
const REFRESHES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("refreshes");

/// Authorizations: (platform, match key) → JSON [`Authorization`].
const AUTHORIZATIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("authorizations");

/// Catalog entries: id → JSON [`CatalogEntry`].
const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("catalog_entries");

/// The entry of each match key: match key → id.
const MATCH_KEYS: TableDefinition<&str, &str> = TableDefinition::new("catalog_match_keys");

/// Entries by kind: (kind, entry id) → nothing (an index for listings by kind).
const ENTRIES_BY_KIND: TableDefinition<(&str, &str), ()> = TableDefinition::new("catalog_entries_by_kind");

/// Associations: (entry id, platform) → JSON [`Association`].
const ASSOCIATIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("catalog_associations");

/// Counters: name → value. `catalog_revision` counts the catalog's changes (grants,
/// revocations, inventories written), each bumped in the transaction that makes the change.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const CATALOG_REVISION: &str = "catalog_revision";

/// Runtime state a restarted controller restores (its bindings, the policy set at runtime):
/// key → JSON.
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("runtime_state");

/// The audit of authorizations: seq → JSON [`AuditRecord`].
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("authorization_audit");

/// The store holds secrets: readable by the controller's user only.
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(file = %path.display(), "cannot make the store private: {e}");
    }
}

fn encode<T: Serialize>(kind: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::backend(kind, e))
}

fn decode<T: DeserializeOwned>(
    kind: &'static str,
    key: impl ToString,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        kind,
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// A storage engine's result, as a [`StoreError::Backend`] saying what the store was doing.
trait Doing<T> {
    fn doing(self, what: &'static str) -> Result<T, StoreError>;
}

impl<T, E: std::fmt::Display> Doing<T> for Result<T, E> {
    fn doing(self, what: &'static str) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::backend(what, e))
    }
}

/// The associations of entry `id`.
fn associations_of(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    id: &str,
    doing: &'static str,
) -> Result<Vec<Association>, StoreError> {
    let mut out = Vec::new();
    for item in table.range((id, "")..).doing(doing)? {
        let (key, bytes) = item.doing(doing)?;
        let (entry_id, platform) = key.value();
        if entry_id != id {
            break;
        }
        out.push(decode("association", platform, bytes.value())?);
    }
    Ok(out)
}

/// A redb file.
pub struct RedbStore {
    db: Database,
}

/// redb's page cache. Its default (1 GiB) let a controller that listed a catalog of 100,000
/// entries hold ~250 MiB of pages it had read once; 64 MiB keeps the hot tables cached and
/// the resident size flat (`cargo bench -p skybridge --bench controller_memory`).
const CACHE_BYTES: usize = 64 << 20;

impl RedbStore {
    /// Open (or create) the database file, and its folder.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let opening = "opening the file";
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend {
                doing: opening,
                reason: format!("cannot create {}: {e}", dir.display()),
            })?;
        }
        // redb would take an empty file for a new store: every account and binding gone, without
        // a word. An empty file where a store was is a damaged or truncated copy.
        if std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0) {
            return Err(StoreError::Backend {
                doing: opening,
                reason: format!(
                    "{} is empty: not a store (a truncated copy?); move it away to start a new one",
                    path.display()
                ),
            });
        }
        let db = ::redb::Builder::new().set_cache_size(CACHE_BYTES).create(path).map_err(|e| {
            StoreError::Backend { doing: opening, reason: format!("{}: {e}", path.display()) }
        })?;
        let tx = db.begin_write().doing(opening)?;
        tx.open_table(DECISIONS).doing(opening)?;
        tx.open_table(ACCOUNTS).doing(opening)?;
        tx.open_table(INVENTORY).doing(opening)?;
        tx.open_table(PLATFORMS).doing(opening)?;
        tx.open_table(REFRESHES).doing(opening)?;
        tx.open_table(AUTHORIZATIONS).doing(opening)?;
        tx.open_table(ENTRIES).doing(opening)?;
        tx.open_table(MATCH_KEYS).doing(opening)?;
        tx.open_table(ASSOCIATIONS).doing(opening)?;
        tx.open_table(ENTRIES_BY_KIND).doing(opening)?;
        tx.open_table(META).doing(opening)?;
        tx.open_table(AUDIT).doing(opening)?;
        tx.commit().doing(opening)?;
        restrict_permissions(path);
        Ok(RedbStore { db })
    }

    /// Run `write` in a write transaction and commit it.
    fn write<R>(
        &self,
        doing: &'static str,
        write: impl FnOnce(&::redb::WriteTransaction) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let tx = self.db.begin_write().doing(doing)?;
        let out = write(&tx)?;
        tx.commit().doing(doing)?;
        Ok(out)
    }

    fn read(&self, doing: &'static str) -> Result<::redb::ReadTransaction, StoreError> {
        self.db.begin_read().doing(doing)
    }

    /// Append `audit` (assigning `seq`) and store `a`, in `tx`.
    fn put_authorization(
        tx: &::redb::WriteTransaction,
        doing: &'static str,
        a: &Authorization,
        audit: &mut AuditRecord,
    ) -> Result<(), StoreError> {
        let mut table = tx.open_table(AUTHORIZATIONS).doing(doing)?;
        table
            .insert((a.platform.as_str(), a.match_key.as_str()), encode(doing, a)?.as_slice())
            .doing(doing)?;
        Self::append_audit_in(tx, doing, std::slice::from_mut(audit))
    }

    /// Append audit lines in `tx`, assigning their `seq`.
    fn append_audit_in(
        tx: &::redb::WriteTransaction,
        doing: &'static str,
        lines: &mut [AuditRecord],
    ) -> Result<(), StoreError> {
        let mut log = tx.open_table(AUDIT).doing(doing)?;
        let mut last = log.last().doing(doing)?.map_or(0, |(k, _)| k.value());
        for audit in lines {
            last += 1;
            audit.seq = last;
            log.insert(audit.seq, encode(doing, &*audit)?.as_slice()).doing(doing)?;
        }
        Ok(())
    }

    /// Store a decision record under the id it carries (ids given out elsewhere: a group's
    /// shared counter); an id taken already is [`StoreError::Exists`]. The oldest past
    /// [`KEEP_DECISIONS`] below the newest id are dropped.
    pub fn insert_decision_as(&self, record: &DecisionRecord) -> Result<(), StoreError> {
        let doing = "storing a decision";
        self.write(doing, |tx| {
            let mut table = tx.open_table(DECISIONS).doing(doing)?;
            if table.get(record.id).doing(doing)?.is_some() {
                return Err(StoreError::Exists { kind: "decision", key: record.id.to_string() });
            }
            table.insert(record.id, encode(doing, record)?.as_slice()).doing(doing)?;
            let newest = table.last().doing(doing)?.map_or(record.id, |(id, _)| id.value());
            Self::forget_old_decisions(&mut table, doing, newest)
        })
    }

    /// Drop the decision records [`KEEP_DECISIONS`] or more below `newest`.
    fn forget_old_decisions(
        table: &mut ::redb::Table<u64, &[u8]>,
        doing: &'static str,
        newest: u64,
    ) -> Result<(), StoreError> {
        let Some(oldest_dropped) = newest.checked_sub(KEEP_DECISIONS) else { return Ok(()) };
        table.retain_in(..=oldest_dropped, |_, _| false).doing(doing)
    }

    /// Append audit lines (assigning their `seq`) in one transaction: for a store whose
    /// authorizations live elsewhere ([`super::shared`]).
    pub fn append_audit(&self, lines: &mut [AuditRecord]) -> Result<(), StoreError> {
        let doing = "appending to the audit";
        self.write(doing, |tx| Self::append_audit_in(tx, doing, lines))
    }

    /// Count one more change of the catalog, in `tx`.
    fn bump_revision(tx: &::redb::WriteTransaction, doing: &'static str) -> Result<(), StoreError> {
        let mut meta = tx.open_table(META).doing(doing)?;
        let now = meta.get(CATALOG_REVISION).doing(doing)?.map_or(0, |v| v.value());
        meta.insert(CATALOG_REVISION, now + 1).doing(doing)?;
        Ok(())
    }

    /// A grant inside `tx`: find or create the entry, associate, store, audit.
    fn grant_in(
        tx: &::redb::WriteTransaction,
        doing: &'static str,
        a: &Authorization,
        new_entry: CatalogEntry,
        audit: &mut AuditRecord,
    ) -> Result<CatalogEntry, StoreError> {
        let entry = {
            let mut keys = tx.open_table(MATCH_KEYS).doing(doing)?;
            let mut entries = tx.open_table(ENTRIES).doing(doing)?;
            let found = keys.get(a.match_key.as_str()).doing(doing)?.map(|id| id.value().to_owned());
            match found {
                Some(id) => {
                    let bytes = entries
                        .get(id.as_str())
                        .doing(doing)?
                        .ok_or_else(|| StoreError::Corrupt {
                            kind: "catalog entry",
                            key: id.clone(),
                            reason: "its match key names it, but it is missing".into(),
                        })?
                        .value()
                        .to_vec();
                    decode::<CatalogEntry>("catalog entry", &id, &bytes)?
                }
                None => {
                    keys.insert(new_entry.match_key.as_str(), new_entry.id.as_str()).doing(doing)?;
                    entries
                        .insert(new_entry.id.as_str(), encode(doing, &new_entry)?.as_slice())
                        .doing(doing)?;
                    let mut by_kind = tx.open_table(ENTRIES_BY_KIND).doing(doing)?;
                    by_kind.insert((new_entry.kind.as_str(), new_entry.id.as_str()), ()).doing(doing)?;
                    new_entry
                }
            }
        };
        let association = Association {
            entry: entry.id.clone(),
            platform: a.platform.clone(),
            native_id: a.service.native_id.clone(),
            request_id: a.request_id.clone(),
            capability: a.capability.clone(),
            since_ms: a.updated_ms,
        };
        {
            let mut table = tx.open_table(ASSOCIATIONS).doing(doing)?;
            let key = (entry.id.as_str(), a.platform.as_str());
            table.insert(key, encode(doing, &association)?.as_slice()).doing(doing)?;
        }
        audit.entry = Some(entry.id.clone());
        Self::put_authorization(tx, doing, a, audit)?;
        Self::bump_revision(tx, doing)?;
        Ok(entry)
    }

    /// Append `refresh` to its platform's records (assigning `seq`), dropping the oldest past
    /// [`KEEP_REFRESHES`].
    fn append_refresh(
        tx: &::redb::WriteTransaction,
        doing: &'static str,
        refresh: &mut RefreshRecord,
    ) -> Result<(), StoreError> {
        let mut table = tx.open_table(REFRESHES).doing(doing)?;
        let platform = refresh.platform.as_str();
        let mut seqs = Vec::new();
        for entry in table.range((platform, 0)..=(platform, u64::MAX)).doing(doing)? {
            let (key, _) = entry.doing(doing)?;
            seqs.push(key.value().1);
        }
        refresh.seq = seqs.last().map_or(1, |s| s + 1);
        table.insert((platform, refresh.seq), encode(doing, &*refresh)?.as_slice()).doing(doing)?;
        let excess = (seqs.len() + 1).saturating_sub(KEEP_REFRESHES);
        for seq in seqs.into_iter().take(excess) {
            table.remove((platform, seq)).doing(doing)?;
        }
        Ok(())
    }
}

impl Backend for RedbStore {
    fn insert_decision(&self, record: &mut DecisionRecord) -> Result<u64, StoreError> {
        let doing = "storing a decision";
        self.write(doing, |tx| {
            let mut table = tx.open_table(DECISIONS).doing(doing)?;
            let last = table.last().doing(doing)?;
            let id = last.map(|(k, _)| k.value() + 1).unwrap_or(1);
            record.id = id;
            table.insert(id, encode(doing, record)?.as_slice()).doing(doing)?;
            Self::forget_old_decisions(&mut table, doing, id)?;
            Ok(id)
        })
    }

    fn decision(&self, id: u64) -> Result<Option<DecisionRecord>, StoreError> {
        let doing = "reading a decision";
        let tx = self.read(doing)?;
        let table = tx.open_table(DECISIONS).doing(doing)?;
        let Some(bytes) = table.get(id).doing(doing)? else { return Ok(None) };
        decode("decision", id, bytes.value()).map(Some)
    }

    fn recent_decisions(&self, limit: usize) -> Result<Vec<DecisionRecord>, StoreError> {
        let doing = "listing decisions";
        let tx = self.read(doing)?;
        let table = tx.open_table(DECISIONS).doing(doing)?;
        let mut out = Vec::new();
        for entry in table.iter().doing(doing)?.rev().take(limit) {
            let (id, bytes) = entry.doing(doing)?;
            out.push(decode("decision", id.value(), bytes.value())?);
        }
        Ok(out)
    }

    fn insert_account(&self, account: &Account) -> Result<(), StoreError> {
        let doing = "creating an account";
        self.write(doing, |tx| {
            let mut table = tx.open_table(ACCOUNTS).doing(doing)?;
            if table.get(account.id.as_str()).doing(doing)?.is_some() {
                return Err(StoreError::Exists { kind: "account", key: account.id.clone() });
            }
            table.insert(account.id.as_str(), encode(doing, account)?.as_slice()).doing(doing)?;
            Ok(())
        })
    }

    fn update_account(&self, account: &Account) -> Result<(), StoreError> {
        let doing = "updating an account";
        self.write(doing, |tx| {
            let mut table = tx.open_table(ACCOUNTS).doing(doing)?;
            if table.get(account.id.as_str()).doing(doing)?.is_none() {
                return Err(StoreError::NotFound { kind: "account", key: account.id.clone() });
            }
            table.insert(account.id.as_str(), encode(doing, account)?.as_slice()).doing(doing)?;
            Ok(())
        })
    }

    fn change_account(
        &self,
        id: &str,
        change: &mut dyn FnMut(&mut Account) -> bool,
    ) -> Result<Option<Account>, StoreError> {
        let doing = "changing an account";
        // One write transaction: nothing else changes the account in between.
        let tx = self.db.begin_write().doing(doing)?;
        let account = {
            let mut table = tx.open_table(ACCOUNTS).doing(doing)?;
            let bytes = table
                .get(id)
                .doing(doing)?
                .ok_or_else(|| StoreError::NotFound { kind: "account", key: id.to_owned() })?
                .value()
                .to_vec();
            let mut account: Account = decode("account", id, &bytes)?;
            if !change(&mut account) {
                return Ok(None);
            }
            table.insert(id, encode(doing, &account)?.as_slice()).doing(doing)?;
            account
        };
        tx.commit().doing(doing)?;
        Ok(Some(account))
    }

    fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        let doing = "reading an account";
        let tx = self.read(doing)?;
        let table = tx.open_table(ACCOUNTS).doing(doing)?;
        let Some(bytes) = table.get(id).doing(doing)? else { return Ok(None) };
        decode("account", id, bytes.value()).map(Some)
    }

    fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let doing = "listing accounts";
        let tx = self.read(doing)?;
        let table = tx.open_table(ACCOUNTS).doing(doing)?;
        let mut out = Vec::new();
        for entry in table.iter().doing(doing)? {
            let (id, bytes) = entry.doing(doing)?;
            out.push(decode("account", id.value(), bytes.value())?);
        }
        Ok(out)
    }

    fn put_state(&self, key: &str, value: Option<&[u8]>) -> Result<(), StoreError> {
        let doing = "writing runtime state";
        self.write(doing, |tx| {
            let mut table = tx.open_table(STATE).doing(doing)?;
            match value {
                Some(bytes) => drop(table.insert(key, bytes).doing(doing)?),
                None => drop(table.remove(key).doing(doing)?),
            }
            Ok(())
        })
    }

    fn states(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let doing = "reading runtime state";
        let tx = self.read(doing)?;
        let table = match tx.open_table(STATE) {
            Ok(table) => table,
            Err(::redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::backend(doing, e)),
        };
        let mut out = Vec::new();
        for item in table.range(prefix..).doing(doing)? {
            let (key, bytes) = item.doing(doing)?;
            if !key.value().starts_with(prefix) {
                break;
            }
            out.push((key.value().to_owned(), bytes.value().to_vec()));
        }
        Ok(out)
    }

    fn remove_account(&self, id: &str) -> Result<bool, StoreError> {
        let doing = "deleting an account";
        self.write(doing, |tx| {
            let mut table = tx.open_table(ACCOUNTS).doing(doing)?;
            Ok(table.remove(id).doing(doing)?.is_some())
        })
    }

    fn inventory(&self, platform: &str) -> Result<Inventory, StoreError> {
        let doing = "reading an inventory";
        let tx = self.read(doing)?;
        let platforms = tx.open_table(PLATFORMS).doing(doing)?;
        let state = match platforms.get(platform).doing(doing)? {
            Some(bytes) => decode("platform report state", platform, bytes.value())?,
            None => PlatformReports::default(),
        };
        let table = tx.open_table(INVENTORY).doing(doing)?;
        let mut records = std::collections::BTreeMap::new();
        for entry in table.range((platform, "")..).doing(doing)? {
            let (key, bytes) = entry.doing(doing)?;
            let (p, id) = key.value();
            if p != platform {
                break;
            }
            let record: InventoryRecord = decode("inventory record", id, bytes.value())?;
            records.insert(id.to_owned(), record);
        }
        Ok(Inventory { platform: state, records })
    }

    fn apply_report(
        &self,
        platform: &str,
        put: &[InventoryRecord],
        state: &PlatformReports,
        refresh: &mut RefreshRecord,
    ) -> Result<(), StoreError> {
        let doing = "integrating a report";
        self.write(doing, |tx| {
            {
                let mut table = tx.open_table(INVENTORY).doing(doing)?;
                for record in put {
                    let key = (platform, record.service.native_id.as_str());
                    table.insert(key, encode(doing, record)?.as_slice()).doing(doing)?;
                }
                let mut platforms = tx.open_table(PLATFORMS).doing(doing)?;
                platforms.insert(platform, encode(doing, state)?.as_slice()).doing(doing)?;
            }
            if !put.is_empty() {
                Self::bump_revision(tx, doing)?;
            }
            Self::append_refresh(tx, doing, refresh)
        })
    }

    fn record_refresh(&self, refresh: &mut RefreshRecord) -> Result<(), StoreError> {
        let doing = "recording a refresh";
        self.write(doing, |tx| Self::append_refresh(tx, doing, refresh))
    }

    fn inventory_page(
        &self,
        platform: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<InventoryRecord>, StoreError> {
        let doing = "listing an inventory";
        let tx = self.read(doing)?;
        let table = tx.open_table(INVENTORY).doing(doing)?;
        let mut out = Vec::new();
        for entry in table.range((platform, after.unwrap_or(""))..).doing(doing)? {
            let (key, bytes) = entry.doing(doing)?;
            let (p, id) = key.value();
            if p != platform || out.len() >= limit {
                break;
            }
            if Some(id) == after {
                continue;
            }
            out.push(decode("inventory record", id, bytes.value())?);
        }
        Ok(out)
    }

    fn authorizations(&self, which: &Which) -> Result<Vec<Authorization>, StoreError> {
        let doing = "listing authorizations";
        let tx = self.read(doing)?;
        let table = tx.open_table(AUTHORIZATIONS).doing(doing)?;
        let mut out = Vec::new();
        for entry in table.iter().doing(doing)? {
            let (key, bytes) = entry.doing(doing)?;
            let a: Authorization = decode("authorization", key.value().1, bytes.value())?;
            if which.keeps(&a) {
                out.push(a);
            }
        }
        Ok(out)
    }

    fn authorizations_page(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<Authorization>, StoreError> {
        let doing = "listing authorizations";
        let tx = self.read(doing)?;
        let table = tx.open_table(AUTHORIZATIONS).doing(doing)?;
        let mut out = Vec::new();
        for entry in table.range(after.unwrap_or(("", ""))..).doing(doing)? {
            if out.len() >= limit {
                break;
            }
            let (key, bytes) = entry.doing(doing)?;
            let (platform, match_key) = key.value();
            if Some((platform, match_key)) == after {
                continue;
            }
            out.push(decode("authorization", match_key, bytes.value())?);
        }
        Ok(out)
    }

    fn authorization(&self, platform: &str, match_key: &str) -> Result<Option<Authorization>, StoreError> {
        let doing = "reading an authorization";
        let tx = self.read(doing)?;
        let table = tx.open_table(AUTHORIZATIONS).doing(doing)?;
        let Some(bytes) = table.get((platform, match_key)).doing(doing)? else { return Ok(None) };
        decode("authorization", match_key, bytes.value()).map(Some)
    }

    fn add_authorizations(&self, new: Vec<Authorization>) -> Result<Vec<Authorization>, StoreError> {
        let doing = "adding authorizations";
        self.write(doing, |tx| {
            let mut table = tx.open_table(AUTHORIZATIONS).doing(doing)?;
            let mut added = Vec::new();
            for a in new {
                let key = (a.platform.as_str(), a.match_key.as_str());
                if table.get(key).doing(doing)?.is_none() {
                    table.insert(key, encode(doing, &a)?.as_slice()).doing(doing)?;
                    added.push(a);
                }
            }
            Ok(added)
        })
    }

    fn decide_all(&self, batch: Vec<Decided>) -> Result<Vec<Option<CatalogEntry>>, StoreError> {
        let doing = "storing authorization decisions";
        self.write(doing, |tx| {
            let mut entries = Vec::with_capacity(batch.len());
            for Decided { authorization: a, mut audit, grant } in batch {
                entries.push(match grant {
                    Some(new_entry) => Some(Self::grant_in(tx, doing, &a, new_entry, &mut audit)?),
                    None => {
                        Self::put_authorization(tx, doing, &a, &mut audit)?;
                        None
                    }
                });
            }
            Ok(entries)
        })
    }

    fn revoke(&self, a: &Authorization, audit: &mut AuditRecord) -> Result<(), StoreError> {
        let doing = "revoking a capability";
        self.write(doing, |tx| {
            let keys = tx.open_table(MATCH_KEYS).doing(doing)?;
            if let Some(id) = keys.get(a.match_key.as_str()).doing(doing)? {
                let mut table = tx.open_table(ASSOCIATIONS).doing(doing)?;
                table.remove((id.value(), a.platform.as_str())).doing(doing)?;
                audit.entry = Some(id.value().to_owned());
            }
            Self::bump_revision(tx, doing)?;
            Self::put_authorization(tx, doing, a, audit)
        })
    }

    fn entries(
        &self,
        kind: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(CatalogEntry, Vec<Association>)>, StoreError> {
        let doing = "listing the catalog";
        let tx = self.read(doing)?;
        let entries = tx.open_table(ENTRIES).doing(doing)?;
        let associations = tx.open_table(ASSOCIATIONS).doing(doing)?;
        let after = after.unwrap_or("");
        // The ids of the page: from the kind index, or the entries themselves.
        let mut ids = Vec::new();
        match kind {
            Some(kind) => {
                let index = tx.open_table(ENTRIES_BY_KIND).doing(doing)?;
                for item in index.range((kind, after)..).doing(doing)? {
                    let (key, _) = item.doing(doing)?;
                    let (k, id) = key.value();
                    if k != kind || ids.len() >= limit {
                        break;
                    }
                    if id != after {
                        ids.push(id.to_owned());
                    }
                }
            }
            None => {
                for item in entries.range(after..).doing(doing)? {
                    let (id, _) = item.doing(doing)?;
                    if ids.len() >= limit {
                        break;
                    }
                    if id.value() != after {
                        ids.push(id.value().to_owned());
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(bytes) = entries.get(id.as_str()).doing(doing)? else { continue };
            let entry: CatalogEntry = decode("catalog entry", &id, bytes.value())?;
            let found = associations_of(&associations, &id, doing)?;
            out.push((entry, found));
        }
        Ok(out)
    }

    fn entry(&self, id: &str) -> Result<Option<(CatalogEntry, Vec<Association>)>, StoreError> {
        let doing = "reading a catalog entry";
        let tx = self.read(doing)?;
        let entries = tx.open_table(ENTRIES).doing(doing)?;
        let Some(bytes) = entries.get(id).doing(doing)? else { return Ok(None) };
        let entry: CatalogEntry = decode("catalog entry", id, bytes.value())?;
        let table = tx.open_table(ASSOCIATIONS).doing(doing)?;
        Ok(Some((entry, associations_of(&table, id, doing)?)))
    }

    fn catalog_revision(&self) -> Result<u64, StoreError> {
        let doing = "reading the catalog's revision";
        let tx = self.read(doing)?;
        let meta = tx.open_table(META).doing(doing)?;
        Ok(meta.get(CATALOG_REVISION).doing(doing)?.map_or(0, |v| v.value()))
    }

    fn catalog_counts(&self) -> Result<super::CatalogCounts, StoreError> {
        use ::redb::ReadableTableMetadata;
        let doing = "counting the catalog";
        let tx = self.read(doing)?;
        // Only each authorization's state is read: a scrape builds no list of them.
        #[derive(serde::Deserialize)]
        struct State {
            state: crate::catalog::AuthorizationState,
        }
        let mut authorizations = std::collections::BTreeMap::new();
        for entry in tx.open_table(AUTHORIZATIONS).doing(doing)?.iter().doing(doing)? {
            let (key, bytes) = entry.doing(doing)?;
            let State { state } = decode("authorization", key.value().1, bytes.value())?;
            *authorizations.entry(state).or_insert(0) += 1;
        }
        Ok(super::CatalogCounts {
            entries: tx.open_table(ENTRIES).doing(doing)?.len().doing(doing)?,
            associations: tx.open_table(ASSOCIATIONS).doing(doing)?.len().doing(doing)?,
            inventory: tx.open_table(INVENTORY).doing(doing)?.len().doing(doing)?,
            authorizations,
        })
    }

    fn entry_id(&self, match_key: &str) -> Result<Option<String>, StoreError> {
        let doing = "looking a capability up";
        let tx = self.read(doing)?;
        let keys = tx.open_table(MATCH_KEYS).doing(doing)?;
        Ok(keys.get(match_key).doing(doing)?.map(|id| id.value().to_owned()))
    }

    fn associations(&self) -> Result<Vec<Association>, StoreError> {
        let doing = "listing associations";
        let tx = self.read(doing)?;
        let table = tx.open_table(ASSOCIATIONS).doing(doing)?;
        let mut out = Vec::new();
        for item in table.iter().doing(doing)? {
            let (key, bytes) = item.doing(doing)?;
            out.push(decode("association", key.value().1, bytes.value())?);
        }
        Ok(out)
    }

    fn audit(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let doing = "reading the audit";
        let tx = self.read(doing)?;
        let table = tx.open_table(AUDIT).doing(doing)?;
        let mut out = Vec::new();
        for item in table.iter().doing(doing)?.rev().take(limit) {
            let (seq, bytes) = item.doing(doing)?;
            out.push(decode("audit record", seq.value(), bytes.value())?);
        }
        Ok(out)
    }

    fn inventory_record(
        &self,
        platform: &str,
        native_id: &str,
    ) -> Result<Option<InventoryRecord>, StoreError> {
        let doing = "reading an inventory record";
        let tx = self.read(doing)?;
        let table = tx.open_table(INVENTORY).doing(doing)?;
        let Some(bytes) = table.get((platform, native_id)).doing(doing)? else { return Ok(None) };
        decode("inventory record", native_id, bytes.value()).map(Some)
    }

    fn refreshes(&self, platform: &str, limit: usize) -> Result<Vec<RefreshRecord>, StoreError> {
        let doing = "listing refreshes";
        let tx = self.read(doing)?;
        let table = tx.open_table(REFRESHES).doing(doing)?;
        let mut out = Vec::new();
        for entry in table.range((platform, 0)..=(platform, u64::MAX)).doing(doing)?.rev().take(limit) {
            let (key, bytes) = entry.doing(doing)?;
            out.push(decode("refresh record", key.value().1, bytes.value())?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(from: &str) -> DecisionRecord {
        crate::testkit::store::decision(from)
    }

    #[test]
    fn records_get_increasing_ids_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/c.redb");
        let (mut a, mut b) = (record("a"), record("c"));
        {
            let store = RedbStore::open(&path).unwrap();
            assert_eq!(store.insert_decision(&mut a).unwrap(), 1);
            assert_eq!(store.insert_decision(&mut b).unwrap(), 2);
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.decision(1).unwrap(), Some(a.clone()));
        assert_eq!(store.decision(3).unwrap(), None);
        assert_eq!(store.recent_decisions(10).unwrap(), vec![b.clone(), a]);
        assert_eq!(store.recent_decisions(1).unwrap(), vec![b]);
        let mut c = record("d");
        assert_eq!(store.insert_decision(&mut c).unwrap(), 3);
    }

    #[test]
    fn decisions_past_the_kept_number_are_dropped_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("c.redb")).unwrap();
        let (mut a, mut b) = (record("a"), record("b"));
        assert_eq!(store.insert_decision(&mut a).unwrap(), 1);
        assert_eq!(store.insert_decision(&mut b).unwrap(), 2);
        // Numbered elsewhere (a group's counter): id 1 falls out of the newest KEEP_DECISIONS.
        let mut c = record("c");
        c.id = KEEP_DECISIONS + 1;
        store.insert_decision_as(&c).unwrap();
        assert_eq!(store.decision(1).unwrap(), None);
        assert_eq!(store.decision(2).unwrap(), Some(b.clone()));
        // Numbering on from the newest drops id 2 the same way.
        let mut d = record("d");
        assert_eq!(store.insert_decision(&mut d).unwrap(), KEEP_DECISIONS + 2);
        assert_eq!(store.decision(2).unwrap(), None);
        assert_eq!(store.recent_decisions(10).unwrap(), vec![d, c]);
    }

    #[test]
    fn passes_the_store_conformance_suite_in_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        crate::testkit::store::conformance(&store);
    }
}

#[cfg(test)]
mod catalog {
    use super::*;
    use crate::catalog::{Outcome, Trigger};

    #[test]
    fn refresh_records_are_numbered_per_platform_and_the_oldest_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("c.redb")).unwrap();
        for i in 0..KEEP_REFRESHES + 5 {
            let mut r = RefreshRecord {
                seq: 0,
                platform: "p".into(),
                at_ms: i as u64,
                trigger: Some(Trigger::Periodic),
                requests: 1,
                discovery_ms: 1,
                integrate_ms: 1,
                outcome: Outcome::DiscoveryFailed { reason: "x".into() },
            };
            store.record_refresh(&mut r).unwrap();
            assert_eq!(r.seq, i as u64 + 1);
        }
        let kept = store.refreshes("p", 1_000).unwrap();
        assert_eq!(kept.len(), KEEP_REFRESHES);
        assert_eq!((kept[0].seq, kept.last().unwrap().seq), (KEEP_REFRESHES as u64 + 5, 6));
        assert!(store.refreshes("q", 10).unwrap().is_empty());
    }
}

#[cfg(test)]
mod corrupt {
    use super::*;

    #[test]
    fn a_value_that_does_not_parse_is_a_typed_error_naming_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        let store = RedbStore::open(&path).unwrap();
        store
            .write("test", |tx| {
                let mut t = tx.open_table(ACCOUNTS).unwrap();
                t.insert("acme", b"{not json".as_slice()).unwrap();
                Ok(())
            })
            .unwrap();
        let e = store.account("acme").unwrap_err();
        assert!(matches!(&e, StoreError::Corrupt { kind: "account", key, .. } if key == "acme"), "{e}");
        assert!(matches!(store.accounts(), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn an_empty_file_is_refused_not_taken_for_a_new_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        std::fs::write(&path, b"").unwrap();
        let e = RedbStore::open(&path).err().expect("refused");
        assert!(e.to_string().contains("is empty: not a store"), "{e}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "left as it was");
        // No file at all is a new store.
        RedbStore::open(&dir.path().join("new.redb")).unwrap();
    }

    #[test]
    fn a_file_that_is_not_a_store_is_a_backend_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        std::fs::write(&path, b"this is not a redb file, just some text that is long enough").unwrap();
        let e = RedbStore::open(&path).err().expect("refused");
        assert!(matches!(&e, StoreError::Backend { .. }) && e.to_string().contains("c.redb"), "{e}");
    }
}
