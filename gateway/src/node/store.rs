//! The controller's durable state in redb: connection decision records, by id.
//!
//! A narrow interface on purpose (DESIGN.md, Storage): a distributed backend can replace it
//! for a multi-controller deployment. Calls block on disk I/O; async callers use
//! `spawn_blocking`.

use std::path::Path;

use anyhow::Context;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::ConnectionRecord;

/// Connection decision records: id → JSON.
const CONNECTIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("connections");

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
        tx.commit()?;
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
