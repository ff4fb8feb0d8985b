//! The controller's durable state in redb: connection decision records by id, and accounts
//! with their credential mappings.
//!
//! A narrow interface on purpose (DESIGN.md, Storage): a distributed backend can replace it
//! for a multi-controller deployment. Calls block on disk I/O; async callers use
//! `spawn_blocking`.

use std::path::Path;

use anyhow::Context;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::ConnectionRecord;
use super::accounts::Account;

/// The store holds secrets: readable by the controller's user only.
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(file = %path.display(), "cannot make the store private: {e}");
    }
}

/// Connection decision records: id → JSON.
const CONNECTIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("connections");

/// Accounts: id → JSON (with secrets: the redb file must stay private to the controller).
const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");

/// The controller's store.
pub struct Store {
    db: Database,
}

impl Store {
    /// Open (or create) the database file.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let db =
            Database::create(path).with_context(|| format!("cannot open the store {}", path.display()))?;
        let tx = db.begin_write()?;
        tx.open_table(CONNECTIONS)?;
        tx.open_table(ACCOUNTS)?;
        tx.commit()?;
        restrict_permissions(path);
        Ok(Store { db })
    }

    /// Store a new record, giving it the next id (which is written into it).
    pub fn insert_connection(&self, record: &mut ConnectionRecord) -> anyhow::Result<u64> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(CONNECTIONS)?;
            let id = table.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
            record.id = id;
            table.insert(id, serde_json::to_vec(record)?.as_slice())?;
        }
        tx.commit().context("committing the connection record")?;
        Ok(record.id)
    }

    /// Create an account; an error if the id is taken.
    pub fn insert_account(&self, account: &Account) -> anyhow::Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(ACCOUNTS)?;
            if table.get(account.id.as_str())?.is_some() {
                anyhow::bail!("account `{}` exists", account.id);
            }
            table.insert(account.id.as_str(), serde_json::to_vec(account)?.as_slice())?;
        }
        tx.commit().context("committing the account")?;
        Ok(())
    }

    /// Replace an existing account (after changing its credentials).
    pub fn update_account(&self, account: &Account) -> anyhow::Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(ACCOUNTS)?;
            table.insert(account.id.as_str(), serde_json::to_vec(account)?.as_slice())?;
        }
        tx.commit().context("committing the account")?;
        Ok(())
    }

    /// An account by id.
    pub fn account(&self, id: &str) -> anyhow::Result<Option<Account>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(ACCOUNTS)?;
        let Some(bytes) = table.get(id)? else { return Ok(None) };
        Ok(Some(serde_json::from_slice(bytes.value()).context("a stored account does not parse")?))
    }

    /// Every account, by id.
    pub fn accounts(&self) -> anyhow::Result<Vec<Account>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(ACCOUNTS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, bytes) = entry?;
            out.push(serde_json::from_slice(bytes.value()).context("a stored account does not parse")?);
        }
        Ok(out)
    }

    /// Delete an account; whether it existed.
    pub fn remove_account(&self, id: &str) -> anyhow::Result<bool> {
        let tx = self.db.begin_write()?;
        let existed = tx.open_table(ACCOUNTS)?.remove(id)?.is_some();
        tx.commit().context("committing the deletion")?;
        Ok(existed)
    }

    /// The record with this id.
    pub fn connection(&self, id: u64) -> anyhow::Result<Option<ConnectionRecord>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(CONNECTIONS)?;
        let Some(bytes) = table.get(id)? else { return Ok(None) };
        Ok(Some(serde_json::from_slice(bytes.value()).context("a stored record does not parse")?))
    }

    /// The most recent `limit` records, newest first.
    pub fn recent_connections(&self, limit: usize) -> anyhow::Result<Vec<ConnectionRecord>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(CONNECTIONS)?;
        let mut out = Vec::new();
        for entry in table.iter()?.rev().take(limit) {
            let (_, bytes) = entry?;
            out.push(serde_json::from_slice(bytes.value()).context("a stored record does not parse")?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::config::Policy;
    use crate::path::{Candidate, Decision, LinkStats};

    fn record(from: &str) -> ConnectionRecord {
        ConnectionRecord {
            id: 0,
            from: from.into(),
            to: "b".into(),
            first_relay: "r1".into(),
            second_relay: "r2".into(),
            created_unix_ms: 1,
            policy: Policy {
                scorer: "s.wasm".into(),
                weights: Default::default(),
                k: 4,
                probes: 20,
                probe_interval_ms: 10,
                reroute_loss: 0.2,
            },
            decision: Decision {
                scorer: "s".into(),
                weights: vec![("latency".into(), 1.0)],
                candidates: vec![Candidate {
                    path: vec!["r1".into(), "r2".into()],
                    hops: 1,
                    graph_cost_ms: 3.0,
                    measured: LinkStats { rtt_ms: Some(3.2), jitter_ms: 0.1, loss: 0.0, samples: 20 },
                    score: Some(-3.3),
                    explanation: "x".into(),
                }],
                winner: 0,
            },
        }
    }

    #[test]
    fn records_get_increasing_ids_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/c.redb");
        let (mut a, mut b) = (record("a"), record("c"));
        {
            let store = Store::open(&path).unwrap();
            assert_eq!(store.insert_connection(&mut a).unwrap(), 1);
            assert_eq!(store.insert_connection(&mut b).unwrap(), 2);
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.connection(1).unwrap(), Some(a.clone()));
        assert_eq!(store.connection(3).unwrap(), None);
        assert_eq!(store.recent_connections(10).unwrap(), vec![b.clone(), a]);
        assert_eq!(store.recent_connections(1).unwrap(), vec![b]);
        let mut c = record("d");
        assert_eq!(store.insert_connection(&mut c).unwrap(), 3);
    }

    #[test]
    fn accounts_are_stored_privately_and_ids_are_unique() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        let store = Store::open(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let mut a = Account {
            id: "acme".into(),
            secret: "0123456789abcdef".into(),
            created_unix_ms: 5,
            credentials: Default::default(),
        };
        store.insert_account(&a).unwrap();
        assert!(store.insert_account(&a).is_err(), "ids are unique");
        a.credentials.insert(
            "aws".into(),
            crate::node::accounts::Credentials {
                principal: "AK".into(),
                secret: "SK".into(),
                attributes: Default::default(),
            },
        );
        store.update_account(&a).unwrap();
        let got = store.account("acme").unwrap().unwrap();
        assert_eq!(got.credentials["aws"].secret, "SK");
        assert_eq!(store.accounts().unwrap().len(), 1);
        assert!(store.remove_account("acme").unwrap());
        assert!(!store.remove_account("acme").unwrap());
        assert!(store.account("acme").unwrap().is_none());
    }
}
