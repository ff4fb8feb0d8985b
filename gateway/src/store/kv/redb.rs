//! The embedded [`Kv`] engine: keys in one redb table, each stored with its create revision,
//! mod revision and lease; the store's revision in a second table. Leases, the watch history
//! and the watchers live in memory: with one controller, a lease lives as long as the process
//! that holds it, so keys left on a lease by an earlier process are removed when the file is
//! opened. Writes run on the blocking pool, one at a time, and are published to the watchers
//! under the same lock, so a watch sees them in revision order.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use ::redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::mpsc;

use super::{
    Commit, Condition, Item, Kv, KvError, LeaseId, Listing, MAX_LIST, Op, Revision, Watch, WatchEvent,
    check_commit, check_key, ttl_seconds,
};

/// key → create revision (8 bytes LE), mod revision (8), lease (8, 0 for none), value.
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// `revision` → the store's revision.
const META: TableDefinition<&str, u64> = TableDefinition::new("kv_meta");
const HEADER: usize = 24;

/// Changes kept for watches that resume from an earlier revision.
const HISTORY: usize = 10_000;
/// Events a watch may have waiting; a watch further behind is ended (its consumer resumes).
const WATCH_BUFFER: usize = 1024;
/// How often expired leases are looked for.
const LEASE_TICK: Duration = Duration::from_millis(100);

/// See the module docs.
pub struct RedbKv {
    db: Arc<Database>,
    state: Arc<Mutex<State>>,
}

struct State {
    revision: Revision,
    /// Changes up to here are forgotten.
    compacted: Revision,
    history: VecDeque<(Revision, WatchEvent)>,
    watchers: Vec<(String, mpsc::Sender<WatchEvent>)>,
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

fn backend(e: impl std::fmt::Display) -> KvError {
    KvError::Backend(e.to_string())
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn encode(create: Revision, modified: Revision, lease: Option<LeaseId>, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + value.len());
    out.extend_from_slice(&create.to_le_bytes());
    out.extend_from_slice(&modified.to_le_bytes());
    out.extend_from_slice(&lease.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn decode(key: &str, bytes: &[u8]) -> Result<Item, KvError> {
    let word = |i: usize| -> Result<[u8; 8], KvError> {
        bytes
            .get(i * 8..i * 8 + 8)
            .and_then(|w| w.try_into().ok())
            .ok_or_else(|| KvError::Backend(format!("the stored key `{key}` is damaged")))
    };
    let lease = i64::from_le_bytes(word(2)?);
    Ok(Item {
        key: key.to_owned(),
        create_revision: u64::from_le_bytes(word(0)?),
        mod_revision: u64::from_le_bytes(word(1)?),
        lease: (lease != 0).then_some(lease),
        value: bytes[HEADER..].to_vec(),
    })
}

impl RedbKv {
    /// Open (or create) the store at `path`, removing keys left on the leases of an earlier
    /// process. Call within a tokio runtime: leases expire on a task of it.
    pub fn open(path: &Path) -> Result<Arc<RedbKv>, KvError> {
        let db = Database::create(path).map_err(backend)?;
        let txn = db.begin_write().map_err(backend)?;
        let (revision, leftover) = {
            let meta = txn.open_table(META).map_err(backend)?;
            let revision = meta.get("revision").map_err(backend)?.map(|v| v.value()).unwrap_or(0);
            let keys = txn.open_table(KEYS).map_err(backend)?;
            let mut leftover = Vec::new();
            for row in keys.iter().map_err(backend)? {
                let (k, v) = row.map_err(backend)?;
                if decode(k.value(), v.value())?.lease.is_some() {
                    leftover.push(k.value().to_owned());
                }
            }
            (revision, leftover)
        };
        txn.commit().map_err(backend)?;
        let kv = Arc::new(RedbKv {
            db: Arc::new(db),
            state: Arc::new(Mutex::new(State {
                revision,
                compacted: revision,
                history: VecDeque::new(),
                watchers: Vec::new(),
                leases: HashMap::new(),
                // Ids unlike an earlier process's: its keys are gone, but a client may still
                // hold one of its ids.
                next_lease: i64::try_from(crate::time::now_unix_ms()).unwrap_or(1) << 16,
            })),
        });
        if !leftover.is_empty() {
            let ops: Vec<Op> = leftover.into_iter().map(Op::Delete).collect();
            for chunk in ops.chunks(super::MAX_TXN_OPS) {
                kv.apply(&mut lock(&kv.state), &[], chunk)?;
            }
        }
        let weak = Arc::downgrade(&kv);
        tokio::spawn(expire_leases(weak));
        Ok(kv)
    }

    /// Check the conditions, apply the ops and publish the changes, with `st` held.
    fn apply(&self, st: &mut State, conditions: &[Condition], ops: &[Op]) -> Result<Commit, KvError> {
        check_commit(conditions, ops)?;
        let txn = self.db.begin_write().map_err(backend)?;
        let rev = st.revision + 1;
        let mut events = Vec::new();
        // (key, lease it leaves, lease it joins), applied once the transaction commits.
        let mut moves: Vec<(String, Option<LeaseId>, Option<LeaseId>)> = Vec::new();
        {
            let mut keys = txn.open_table(KEYS).map_err(backend)?;
            let current = |keys: &::redb::Table<&str, &[u8]>, key: &str| -> Result<Option<Item>, KvError> {
                keys.get(key).map_err(backend)?.map(|v| decode(key, v.value())).transpose()
            };
            for condition in conditions {
                let holds = match condition {
                    Condition::Absent(k) => current(&keys, k)?.is_none(),
                    Condition::Present(k) => current(&keys, k)?.is_some(),
                    Condition::ModRevision(k, r) => current(&keys, k)?.map_or(0, |i| i.mod_revision) == *r,
                    Condition::CreateRevision(k, r) => {
                        current(&keys, k)?.map_or(0, |i| i.create_revision) == *r
                    }
                };
                if !holds {
                    return Ok(Commit::ConditionFailed);
                }
            }
            for op in ops {
                match op {
                    Op::Put { key, value, lease } => {
                        if let Some(l) = lease
                            && !st.leases.contains_key(l)
                        {
                            return Err(KvError::LeaseLost(*l));
                        }
                        let before = current(&keys, key)?;
                        let create = before.as_ref().map_or(rev, |i| i.create_revision);
                        keys.insert(key.as_str(), encode(create, rev, *lease, value).as_slice())
                            .map_err(backend)?;
                        moves.push((key.clone(), before.and_then(|i| i.lease), *lease));
                        events.push(WatchEvent::Put(Item {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision: create,
                            mod_revision: rev,
                            lease: *lease,
                        }));
                    }
                    Op::Delete(key) => {
                        let before = current(&keys, key)?;
                        if let Some(item) = before {
                            keys.remove(key.as_str()).map_err(backend)?;
                            moves.push((key.clone(), item.lease, None));
                            events.push(WatchEvent::Delete { key: key.clone(), revision: rev });
                        }
                    }
                }
            }
            if events.is_empty() {
                // Nothing changed (deletes of absent keys): no new revision, as in etcd.
                return Ok(Commit::Applied(st.revision));
            }
            txn.open_table(META).map_err(backend)?.insert("revision", rev).map_err(backend)?;
        }
        txn.commit().map_err(backend)?;
        st.revision = rev;
        for (key, left, joined) in moves {
            if let Some(lease) = left.and_then(|l| st.leases.get_mut(&l)) {
                lease.keys.remove(&key);
            }
            if let Some(lease) = joined.and_then(|l| st.leases.get_mut(&l)) {
                lease.keys.insert(key);
            }
        }
        publish(st, rev, events);
        Ok(Commit::Applied(rev))
    }

    /// End `lease`, removing its keys in one revision.
    fn end_lease(&self, st: &mut State, lease: LeaseId) -> Result<(), KvError> {
        let Some(ended) = st.leases.remove(&lease) else { return Ok(()) };
        let ops: Vec<Op> = ended.keys.into_iter().map(Op::Delete).collect();
        for chunk in ops.chunks(super::MAX_TXN_OPS) {
            self.apply(st, &[], chunk)?;
        }
        Ok(())
    }

    /// Run `f` with the state locked, on the blocking pool.
    async fn locked<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&RedbKv, &mut State) -> Result<T, KvError> + Send + 'static,
    ) -> Result<T, KvError> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let state = Arc::clone(&this.state);
            let mut st = lock(&state);
            f(&this, &mut st)
        })
        .await
        .map_err(|e| KvError::Backend(format!("the store's worker failed: {e}")))?
    }
}

/// Record `events` (all at `rev`) in the history and hand them to the watchers of their keys;
/// a watcher that is gone or too far behind is dropped (its watch ends).
fn publish(st: &mut State, rev: Revision, events: Vec<WatchEvent>) {
    for event in events {
        let key = match &event {
            WatchEvent::Put(item) => item.key.as_str(),
            WatchEvent::Delete { key, .. } => key.as_str(),
            WatchEvent::Relist => continue,
        };
        st.watchers
            .retain(|(prefix, tx)| !key.starts_with(prefix.as_str()) || tx.try_send(event.clone()).is_ok());
        st.history.push_back((rev, event));
        while st.history.len() > HISTORY {
            if let Some((old, _)) = st.history.pop_front() {
                st.compacted = st.compacted.max(old);
            }
        }
    }
}

/// End leases whose deadline passed, every [`LEASE_TICK`], while the store is open.
async fn expire_leases(kv: Weak<RedbKv>) {
    loop {
        tokio::time::sleep(LEASE_TICK).await;
        let Some(kv) = kv.upgrade() else { return };
        let ended = kv
            .locked(|kv, st| {
                let now = Instant::now();
                let due: Vec<LeaseId> =
                    st.leases.iter().filter(|(_, l)| l.deadline <= now).map(|(id, _)| *id).collect();
                for lease in due {
                    kv.end_lease(st, lease)?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = ended {
            tracing::error!("cannot remove the keys of expired leases: {e}");
        }
    }
}

#[async_trait::async_trait]
impl Kv for Arc<RedbKv> {
    async fn get(&self, key: &str) -> Result<Option<Item>, KvError> {
        check_key(key)?;
        let (db, key) = (Arc::clone(&self.db), key.to_owned());
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(backend)?;
            let keys = txn.open_table(KEYS).map_err(backend)?;
            keys.get(key.as_str()).map_err(backend)?.map(|v| decode(&key, v.value())).transpose()
        })
        .await
        .map_err(backend)?
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Listing, KvError> {
        let limit = limit.clamp(1, MAX_LIST);
        let (db, state) = (Arc::clone(&self.db), Arc::clone(&self.state));
        let (prefix, after) = (prefix.to_owned(), start_after.map(str::to_owned));
        tokio::task::spawn_blocking(move || {
            // The snapshot and its revision, taken together.
            let (txn, revision) = {
                let st = lock(&state);
                (db.begin_read().map_err(backend)?, st.revision)
            };
            let keys = txn.open_table(KEYS).map_err(backend)?;
            let from = match &after {
                Some(a) if a.as_str() >= prefix.as_str() => a.as_str(),
                _ => prefix.as_str(),
            };
            let mut items = Vec::new();
            let mut more = false;
            for row in keys.range(from..).map_err(backend)? {
                let (k, v) = row.map_err(backend)?;
                let k = k.value();
                if !k.starts_with(prefix.as_str()) {
                    break;
                }
                if after.as_deref() == Some(k) {
                    continue;
                }
                if items.len() == limit {
                    more = true;
                    break;
                }
                items.push(decode(k, v.value())?);
            }
            Ok(Listing { items, revision, more })
        })
        .await
        .map_err(backend)?
    }

    async fn commit(&self, conditions: &[Condition], ops: &[Op]) -> Result<Commit, KvError> {
        check_commit(conditions, ops)?;
        let (conditions, ops) = (conditions.to_vec(), ops.to_vec());
        self.locked(move |kv, st| kv.apply(st, &conditions, &ops)).await
    }

    async fn grant(&self, ttl: Duration) -> Result<LeaseId, KvError> {
        let ttl = Duration::from_secs(ttl_seconds(ttl).unsigned_abs());
        self.locked(move |_, st| {
            st.next_lease += 1;
            let id = st.next_lease;
            st.leases.insert(id, Lease { ttl, deadline: Instant::now() + ttl, keys: BTreeSet::new() });
            Ok(id)
        })
        .await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), KvError> {
        self.locked(move |_, st| {
            let now = Instant::now();
            match st.leases.get_mut(&lease) {
                Some(l) if l.deadline > now => {
                    l.deadline = now + l.ttl;
                    Ok(())
                }
                _ => Err(KvError::LeaseLost(lease)),
            }
        })
        .await
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), KvError> {
        self.locked(move |kv, st| kv.end_lease(st, lease)).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, KvError> {
        let prefix = prefix.to_owned();
        self.locked(move |_, st| {
            let (tx, rx) = mpsc::channel(WATCH_BUFFER);
            if after < st.compacted {
                let _ = tx.try_send(WatchEvent::Relist);
                return Ok(rx);
            }
            for (rev, event) in &st.history {
                let key = match event {
                    WatchEvent::Put(item) => &item.key,
                    WatchEvent::Delete { key, .. } => key,
                    WatchEvent::Relist => continue,
                };
                if *rev > after && key.starts_with(prefix.as_str()) && tx.try_send(event.clone()).is_err() {
                    // More waiting than a watch may hold: it ends here, and resumes.
                    return Ok(rx);
                }
            }
            st.watchers.push((prefix, tx));
            Ok(rx)
        })
        .await
    }

    async fn compact(&self, revision: Revision) -> Result<(), KvError> {
        self.locked(move |_, st| {
            if revision > st.revision {
                return Err(KvError::Backend(format!(
                    "cannot compact to revision {revision}: the store is at {}",
                    st.revision
                )));
            }
            while st.history.front().is_some_and(|(r, _)| *r <= revision) {
                st.history.pop_front();
            }
            st.compacted = st.compacted.max(revision);
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redb_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = RedbKv::open(&dir.path().join("kv.redb")).expect("open");
        crate::testkit::kv::conformance(&kv).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ids_from_redb_are_unique_across_allocators() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = RedbKv::open(&dir.path().join("kv.redb")).expect("open");
        crate::testkit::kv::ids_are_unique_across_allocators(Arc::new(kv)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mirror_follows_redb() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = RedbKv::open(&dir.path().join("kv.redb")).expect("open");
        crate::testkit::kv::a_mirror_follows_the_store(Arc::new(kv)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_on_a_lease_go_with_the_process_and_the_rest_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kv.redb");
        let before = {
            let kv = RedbKv::open(&path).expect("open");
            let lease = kv.grant(Duration::from_secs(60)).await.expect("lease");
            let put = [
                Op::put("kept", "1"),
                Op::Put { key: "leased".into(), value: b"2".to_vec(), lease: Some(lease) },
            ];
            let Commit::Applied(rev) = kv.commit(&[], &put).await.expect("commit") else {
                panic!("not applied")
            };
            rev
        };
        // Wait for the expiry task to let go of the file.
        let kv = loop {
            match RedbKv::open(&path) {
                Ok(kv) => break kv,
                Err(_) => tokio::time::sleep(LEASE_TICK).await,
            }
        };
        assert_eq!(kv.get("kept").await.expect("get").map(|i| i.value), Some(b"1".to_vec()));
        assert_eq!(kv.get("leased").await.expect("get"), None);
        let listing = kv.list("", None, 10).await.expect("list");
        assert_eq!(listing.revision, before + 1, "the removal is a revision of its own");
    }
}
