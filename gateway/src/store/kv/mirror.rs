//! A prefix of the store mirrored in memory: listed once, then kept current from a watch —
//! resumed from the last revision seen when the watch ends, listed again when the history it
//! needs was compacted. What a controller will read shared state from (issue 17, item 4:
//! "reads from a watch-fed cache"), the pattern of Kubernetes' informers.
//!
//! The listing's pages are read at different revisions, and the watch replays changes from the
//! first page's revision on: a change is applied only when it is newer than what the mirror
//! holds for that key, so the replay converges on the store's state instead of regressing it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use super::{Item, Kv, KvError, MAX_LIST, Revision, WatchEvent};

/// See the module docs. Dropping it stops following the store.
pub struct Mirror {
    state: Arc<RwLock<State>>,
    relists: Arc<std::sync::atomic::AtomicU64>,
    seen: watch::Receiver<Revision>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct State {
    items: BTreeMap<String, Item>,
    /// The latest revision applied.
    revision: Revision,
}

impl State {
    fn apply(&mut self, event: WatchEvent) {
        match event {
            WatchEvent::Put(item) => {
                // The watch is in revision order, so an older put never follows a removal; only
                // a page listed after the change can hold something newer.
                self.revision = self.revision.max(item.mod_revision);
                if self.items.get(&item.key).is_none_or(|i| i.mod_revision < item.mod_revision) {
                    self.items.insert(item.key.clone(), item);
                }
            }
            WatchEvent::Delete { key, revision } => {
                self.revision = self.revision.max(revision);
                if self.items.get(&key).is_some_and(|i| i.mod_revision < revision) {
                    self.items.remove(&key);
                }
            }
            WatchEvent::Relist => {}
        }
    }
}

/// Every key under `prefix`, page by page; and the first page's revision.
async fn list_all(kv: &dyn Kv, prefix: &str) -> Result<(BTreeMap<String, Item>, Revision), KvError> {
    let mut items = BTreeMap::new();
    let mut after: Option<String> = None;
    let mut first = None;
    loop {
        let page = kv.list(prefix, after.as_deref(), MAX_LIST).await?;
        first.get_or_insert(page.revision);
        after = page.items.last().map(|i| i.key.clone());
        items.extend(page.items.into_iter().map(|i| (i.key.clone(), i)));
        if !page.more {
            return Ok((items, first.unwrap_or(0)));
        }
    }
}

/// Mirror `prefix` of `kv`.
pub async fn mirror(kv: Arc<dyn Kv>, prefix: &str) -> Result<Mirror, KvError> {
    let (items, revision) = list_all(kv.as_ref(), prefix).await?;
    let state = Arc::new(RwLock::new(State { items, revision }));
    let (tx, seen) = watch::channel(revision);
    let relists = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let task = tokio::spawn(follow(kv, prefix.to_owned(), Arc::clone(&state), tx, Arc::clone(&relists)));
    Ok(Mirror { state, relists, seen, task })
}

fn write(state: &RwLock<State>) -> std::sync::RwLockWriteGuard<'_, State> {
    state.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read(state: &RwLock<State>) -> std::sync::RwLockReadGuard<'_, State> {
    state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn follow(
    kv: Arc<dyn Kv>,
    prefix: String,
    state: Arc<RwLock<State>>,
    seen: watch::Sender<Revision>,
    relists: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut pause = Duration::from_millis(50);
    loop {
        let from = read(&state).revision;
        let mut changes = match kv.watch(&prefix, from).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(%prefix, "mirror: cannot watch, retrying in {pause:?}: {e}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        pause = Duration::from_millis(50);
        while let Some(event) = changes.recv().await {
            if event == WatchEvent::Relist {
                tracing::info!(%prefix, "mirror: the history was compacted; listing again");
                relists.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match list_all(kv.as_ref(), &prefix).await {
                    Ok((items, revision)) => {
                        let mut st = write(&state);
                        *st = State { items, revision };
                    }
                    Err(e) => tracing::warn!(%prefix, "mirror: cannot list again: {e}"),
                }
                break;
            }
            let revision = {
                let mut st = write(&state);
                st.apply(event);
                st.revision
            };
            seen.send_replace(revision);
        }
        seen.send_replace(read(&state).revision);
    }
}

impl Mirror {
    /// The key's item as the mirror has it.
    pub fn get(&self, key: &str) -> Option<Item> {
        read(&self.state).items.get(key).cloned()
    }

    /// Every item, in key order.
    pub fn items(&self) -> Vec<Item> {
        read(&self.state).items.values().cloned().collect()
    }

    /// Up to `limit` items under `prefix` with keys after `after` (when given), in key order.
    pub fn range(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<Item> {
        use std::ops::Bound;
        let st = read(&self.state);
        let start = match after {
            Some(key) => Bound::Excluded(key.to_owned()),
            None => Bound::Included(prefix.to_owned()),
        };
        st.items
            .range((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(_, item)| item.clone())
            .collect()
    }

    /// How many items are under `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        let st = read(&self.state);
        st.items.range(prefix.to_owned()..).take_while(|(k, _)| k.starts_with(prefix)).count()
    }

    /// Run `f` over every item under `prefix`, in key order, without copying them.
    pub fn for_each(&self, prefix: &str, mut f: impl FnMut(&Item)) {
        let st = read(&self.state);
        st.items
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .for_each(|(_, i)| f(i));
    }

    /// How often it listed again because the changes it missed were compacted away.
    pub fn relists(&self) -> u64 {
        self.relists.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The latest revision applied.
    pub fn revision(&self) -> Revision {
        read(&self.state).revision
    }

    /// Wait (at most `limit`) until the mirror has applied `revision`, the revision of a change
    /// under its prefix — after a commit, to read one's own write. Returns whether it has.
    pub async fn wait_for(&self, revision: Revision, limit: Duration) -> bool {
        let mut seen = self.seen.clone();
        tokio::time::timeout(limit, seen.wait_for(|r| *r >= revision)).await.is_ok_and(|r| r.is_ok())
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::kv::redb::RedbKv;
    use crate::store::kv::{Commit, Op};
    use crate::testkit::kv::Faulty;
    use std::sync::atomic::Ordering;

    fn item(key: &str, value: &str, rev: Revision) -> Item {
        Item { key: key.into(), value: value.into(), create_revision: 1, mod_revision: rev, lease: None }
    }

    #[test]
    fn replayed_changes_never_regress_what_a_later_page_listed() {
        let mut st = State::default();
        // A page listed at revision 12 holds `k` as changed at 12; the watch, from the first
        // page's revision 10, replays the put at 11 and a delete at 11 of its former self.
        st.items.insert("k".into(), item("k", "new", 12));
        st.apply(WatchEvent::Put(item("k", "old", 11)));
        st.apply(WatchEvent::Delete { key: "k".into(), revision: 11 });
        assert_eq!(st.items.get("k").map(|i| i.value.clone()), Some(b"new".to_vec()));
        // Later changes do apply.
        st.apply(WatchEvent::Put(item("k", "newer", 13)));
        assert_eq!(st.items.get("k").map(|i| i.value.clone()), Some(b"newer".to_vec()));
        st.apply(WatchEvent::Delete { key: "k".into(), revision: 14 });
        assert!(st.items.is_empty());
        assert_eq!(st.revision, 14);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mirror_resumes_a_broken_watch_and_lists_again_after_a_compaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let redb: Arc<dyn Kv> = Arc::new(RedbKv::open(&dir.path().join("kv.redb")).expect("open"));
        let store = Arc::new(Faulty::new(redb, Some(3)));
        let kv: Arc<dyn Kv> = store.clone();
        let m = mirror(Arc::clone(&kv), "p/").await.expect("mirror");
        // Ten changes one by one: the watch breaks every three, and is resumed each time.
        let mut last = 0;
        for i in 0..10 {
            if let Ok(Commit::Applied(r)) = kv.commit(&[], &[Op::put(format!("p/{i}"), "v")]).await {
                last = r;
            }
            assert!(m.wait_for(last, Duration::from_secs(5)).await, "change {i} reached the mirror");
        }
        assert!(store.watches.load(Ordering::SeqCst) >= 4, "the broken watch was resumed");
        assert_eq!(m.items().len(), 10);

        // Changes the mirror has not seen yet, compacted away while it reconnects: it lists
        // again. (Its watch breaks within three of the six changes; the next one waits.)
        let at = m.revision();
        store.hold_watches.store(true, Ordering::SeqCst);
        for i in 0..6 {
            if let Ok(Commit::Applied(r)) = kv.commit(&[], &[Op::put(format!("p/late/{i}"), "v")]).await {
                last = r;
            }
        }
        kv.compact(last).await.expect("compact");
        store.hold_watches.store(false, Ordering::SeqCst);
        assert!(m.wait_for(last, Duration::from_secs(5)).await, "caught up from {at} to {last}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while m.items().len() < 16 {
            assert!(tokio::time::Instant::now() < deadline, "{} items", m.items().len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(m.items(), kv.list("p/", None, 100).await.expect("list").items);
        assert_eq!(m.relists(), 1, "it listed again once");
    }
}
