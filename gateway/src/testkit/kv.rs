//! The conformance suite of the key-value interface: what every [`Kv`] engine must do, run
//! against redb (`store::kv::redb`'s tests) and etcd (`skybridge-store-etcd`'s tests, on a real
//! etcd). It works under a fresh prefix, so engines shared between runs need no cleaning.
//! Lease checks wait on the real clock (TTL 2 s: etcd's minimum with its default timings).

use std::time::Duration;

use crate::store::kv::{
    Commit, Condition, Item, Kv, KvError, MAX_KEY_BYTES, MAX_TXN_OPS, MAX_VALUE_BYTES, Op, Revision, Watch,
    WatchEvent,
};

/// Run every check against `kv`; panics, saying which, on the first that fails.
pub async fn conformance<K: Kv + ?Sized>(kv: &K) {
    let run = format!("conformance/{}/", crate::time::now_unix_ms());
    revisions_and_conditions(kv, &format!("{run}rev/")).await;
    listing(kv, &format!("{run}list/")).await;
    bounds(kv, &format!("{run}bounds/")).await;
    watches(kv, &format!("{run}watch/")).await;
    leases(kv, &format!("{run}lease/")).await;
    compaction(kv, &format!("{run}compact/")).await;
}

async fn applied<K: Kv + ?Sized>(kv: &K, conditions: &[Condition], ops: &[Op]) -> Revision {
    match kv.commit(conditions, ops).await.expect("commit") {
        Commit::Applied(rev) => rev,
        Commit::ConditionFailed => panic!("a commit whose conditions hold failed: {conditions:?}"),
    }
}

async fn item<K: Kv + ?Sized>(kv: &K, key: &str) -> Item {
    kv.get(key).await.expect("get").unwrap_or_else(|| panic!("no key {key}"))
}

/// Revisions grow per commit, a key keeps its create revision, and a commit applies all or
/// nothing: create-then-associate once, compare-and-swap, fencing by create revision.
async fn revisions_and_conditions<K: Kv + ?Sized>(kv: &K, p: &str) {
    let (a, b) = (format!("{p}a"), format!("{p}b"));
    let r1 = applied(kv, &[], &[Op::put(&a, "1")]).await;
    let first = item(kv, &a).await;
    assert_eq!((first.create_revision, first.mod_revision, first.value.as_slice()), (r1, r1, &b"1"[..]));
    let r2 = applied(kv, &[], &[Op::put(&a, "2")]).await;
    assert!(r2 > r1, "revisions grow: {r1} then {r2}");
    let second = item(kv, &a).await;
    assert_eq!((second.create_revision, second.mod_revision), (r1, r2), "a change keeps the create revision");

    // Create-then-associate: one commit guarded by the entry's absence; a second attempt
    // writes nothing.
    let (entry, assoc_1, assoc_2) = (format!("{p}entry"), format!("{p}assoc/1"), format!("{p}assoc/2"));
    let create = |assoc: &str| [Op::put(&entry, "entry"), Op::put(assoc, "granted")];
    let r3 = applied(kv, &[Condition::Absent(entry.clone())], &create(&assoc_1)).await;
    assert_eq!(item(kv, &assoc_1).await.mod_revision, r3, "both keys in one revision");
    assert_eq!(item(kv, &entry).await.mod_revision, r3);
    let again = kv.commit(&[Condition::Absent(entry.clone())], &create(&assoc_2)).await.expect("commit");
    assert_eq!(again, Commit::ConditionFailed);
    assert_eq!(kv.get(&assoc_2).await.expect("get"), None, "a failed commit writes nothing");
    assert_eq!(item(kv, &entry).await.mod_revision, r3);
    applied(kv, &[Condition::Present(entry.clone())], &[Op::put(&assoc_2, "granted")]).await;

    // Compare-and-swap on the mod revision; 0 means absent.
    let stale =
        kv.commit(&[Condition::ModRevision(a.clone(), r1)], &[Op::put(&a, "x")]).await.expect("commit");
    assert_eq!(stale, Commit::ConditionFailed, "a swap from a stale revision fails");
    applied(kv, &[Condition::ModRevision(a.clone(), r2)], &[Op::put(&a, "3")]).await;
    applied(kv, &[Condition::ModRevision(b.clone(), 0)], &[Op::put(&b, "new")]).await;

    // Fencing: an owner's epoch is its key's create revision; once re-created, the old epoch
    // no longer matches.
    let owner = format!("{p}owner");
    let epoch = applied(kv, &[Condition::Absent(owner.clone())], &[Op::put(&owner, "c1")]).await;
    applied(kv, &[], &[Op::Delete(owner.clone())]).await;
    let epoch2 = applied(kv, &[Condition::Absent(owner.clone())], &[Op::put(&owner, "c2")]).await;
    assert!(epoch2 > epoch);
    let fenced = kv
        .commit(&[Condition::CreateRevision(owner.clone(), epoch)], &[Op::put(format!("{p}grant"), "old")])
        .await
        .expect("commit");
    assert_eq!(fenced, Commit::ConditionFailed, "the old epoch is fenced off");
    applied(kv, &[Condition::CreateRevision(owner.clone(), epoch2)], &[Op::put(format!("{p}grant"), "new")])
        .await;

    // Deleting an absent key changes nothing.
    let now = kv.list(p, None, 1).await.expect("list").revision;
    assert_eq!(
        kv.commit(&[], &[Op::Delete(format!("{p}never"))]).await.expect("commit"),
        Commit::Applied(now)
    );
}

/// Prefix listings in key order, paged, with the revision they were read at.
async fn listing<K: Kv + ?Sized>(kv: &K, p: &str) {
    let ops: Vec<Op> = (0..25).map(|i| Op::put(format!("{p}k{i:02}"), format!("{i}"))).collect();
    let rev = applied(kv, &[], &ops).await;
    applied(
        kv,
        &[],
        &[Op::put(p, "the prefix itself"), Op::put(format!("{}x", p.trim_end_matches('/')), "beside")],
    )
    .await;
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = kv.list(&format!("{p}k"), after.as_deref(), 10).await.expect("list");
        assert!(page.revision > rev, "a page says the revision it was read at");
        assert!(page.items.len() <= 10);
        keys.extend(page.items.iter().map(|i| i.key.clone()));
        after = page.items.last().map(|i| i.key.clone());
        if !page.more {
            break;
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("{p}k{i:02}")).collect();
    assert_eq!(keys, expected, "every key once, in order, over three pages");
    let all = kv.list(p, None, 100).await.expect("list");
    assert_eq!(all.items.len(), 26, "the prefix's own key, not the one beside it");
    assert!(!all.more);
}

/// Inputs over their bounds are refused and write nothing.
async fn bounds<K: Kv + ?Sized>(kv: &K, p: &str) {
    let long_key = format!("{p}{}", "k".repeat(MAX_KEY_BYTES));
    assert!(matches!(
        kv.commit(&[], &[Op::put(&long_key, "v")]).await,
        Err(KvError::TooLarge { what: "key", .. })
    ));
    let big = vec![7u8; MAX_VALUE_BYTES + 1];
    let refused = kv.commit(&[], &[Op::put(format!("{p}ok"), "v"), Op::put(format!("{p}big"), big)]).await;
    assert!(matches!(refused, Err(KvError::TooLarge { what: "value", .. })), "{refused:?}");
    assert_eq!(kv.get(&format!("{p}ok")).await.expect("get"), None, "nothing of a refused commit is written");
    let many: Vec<Op> = (0..=MAX_TXN_OPS).map(|i| Op::put(format!("{p}m{i}"), "v")).collect();
    assert!(matches!(kv.commit(&[], &many).await, Err(KvError::TooLarge { what: "commit", .. })));
    let twice = [Op::put(format!("{p}d"), "1"), Op::put(format!("{p}d"), "2")];
    assert!(matches!(kv.commit(&[], &twice).await, Err(KvError::DuplicateKey(_))));
    let max_value = vec![1u8; MAX_VALUE_BYTES];
    applied(kv, &[], &[Op::put(format!("{p}max"), max_value)]).await;
    assert_eq!(item(kv, &format!("{p}max")).await.value.len(), MAX_VALUE_BYTES);
}

async fn next(watch: &mut Watch) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), watch.recv())
        .await
        .expect("a watch event within 10 s")
        .expect("the watch is open")
}

fn put_key(event: &WatchEvent) -> (&str, &[u8], Revision) {
    match event {
        WatchEvent::Put(item) => (item.key.as_str(), item.value.as_slice(), item.mod_revision),
        other => panic!("expected a put, got {other:?}"),
    }
}

/// A watch sees every change under its prefix after its revision, in order, and nothing else;
/// a watch from an earlier revision replays what it missed.
async fn watches<K: Kv + ?Sized>(kv: &K, p: &str) {
    let start = applied(kv, &[], &[Op::put(format!("{p}before"), "0")]).await;
    let mut live = kv.watch(&format!("{p}w/"), start).await.expect("watch");
    let r1 = applied(kv, &[], &[Op::put(format!("{p}w/a"), "1"), Op::put(format!("{p}other"), "x")]).await;
    let r2 = applied(kv, &[], &[Op::put(format!("{p}w/b"), "2")]).await;
    let r3 = applied(kv, &[], &[Op::Delete(format!("{p}w/a"))]).await;
    let first = next(&mut live).await;
    assert_eq!(put_key(&first), (format!("{p}w/a").as_str(), &b"1"[..], r1));
    assert_eq!(put_key(&next(&mut live).await).2, r2);
    assert_eq!(next(&mut live).await, WatchEvent::Delete { key: format!("{p}w/a"), revision: r3 });
    // Resumed from r1: the changes after it, again.
    let mut resumed = kv.watch(&format!("{p}w/"), r1).await.expect("watch");
    assert_eq!(put_key(&next(&mut resumed).await).2, r2);
    assert_eq!(next(&mut resumed).await, WatchEvent::Delete { key: format!("{p}w/a"), revision: r3 });
    // Both keep following.
    let r4 = applied(kv, &[], &[Op::put(format!("{p}w/c"), "4")]).await;
    assert_eq!(put_key(&next(&mut live).await).2, r4);
    assert_eq!(put_key(&next(&mut resumed).await).2, r4);
}

/// Keys on a lease go when it is revoked, or when it expires without keep-alives; kept alive,
/// they stay past the TTL; a lost lease is an error, not a silent success.
async fn leases<K: Kv + ?Sized>(kv: &K, p: &str) {
    let ttl = Duration::from_secs(2);
    let start = kv.list(p, None, 1).await.expect("list").revision;
    let mut watch = kv.watch(p, start).await.expect("watch");

    let revoked = kv.grant(ttl).await.expect("grant");
    let on =
        |key: &str, lease| Op::Put { key: format!("{p}{key}"), value: b"owned".to_vec(), lease: Some(lease) };
    applied(kv, &[], &[on("r1", revoked), on("r2", revoked)]).await;
    assert_eq!(item(kv, &format!("{p}r1")).await.lease, Some(revoked));
    kv.revoke(revoked).await.expect("revoke");
    assert_eq!(kv.get(&format!("{p}r1")).await.expect("get"), None, "revoked: gone at once");
    assert_eq!(kv.get(&format!("{p}r2")).await.expect("get"), None);
    put_key(&next(&mut watch).await);
    put_key(&next(&mut watch).await);
    let (d1, d2) = (next(&mut watch).await, next(&mut watch).await);
    let revs: Vec<Revision> = [d1, d2]
        .iter()
        .map(|e| match e {
            WatchEvent::Delete { revision, .. } => *revision,
            other => panic!("expected the lease's deletes, got {other:?}"),
        })
        .collect();
    assert_eq!(revs[0], revs[1], "a lease's keys go in one revision");
    assert!(matches!(kv.keep_alive(revoked).await, Err(KvError::LeaseLost(_))), "a revoked lease is lost");

    // Kept alive past its TTL, the key stays; left alone, it goes within a few TTLs.
    let kept = kv.grant(ttl).await.expect("grant");
    applied(kv, &[], &[on("kept", kept)]).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        kv.keep_alive(kept).await.expect("keep-alive");
    }
    assert!(kv.get(&format!("{p}kept")).await.expect("get").is_some(), "kept alive for 3 s on a 2 s lease");
    let deadline = tokio::time::Instant::now() + ttl * 4;
    while kv.get(&format!("{p}kept")).await.expect("get").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "an expired lease's key stayed for 4 TTLs");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(matches!(kv.keep_alive(kept).await, Err(KvError::LeaseLost(_))), "an expired lease is lost");
    let on_lost = kv.commit(&[], &[on("late", kept)]).await;
    assert!(on_lost.is_err(), "a put on a lost lease fails: {on_lost:?}");
    assert_eq!(kv.get(&format!("{p}late")).await.expect("get"), None);
}

/// A watch from before a compaction is told to list again.
async fn compaction<K: Kv + ?Sized>(kv: &K, p: &str) {
    let old = applied(kv, &[], &[Op::put(format!("{p}a"), "1")]).await;
    let now = applied(kv, &[], &[Op::put(format!("{p}a"), "2")]).await;
    kv.compact(now).await.expect("compact");
    let mut stale = kv.watch(p, old - 1).await.expect("watch");
    assert_eq!(next(&mut stale).await, WatchEvent::Relist);
    let mut fresh = kv.watch(p, now).await.expect("watch");
    let r = applied(kv, &[], &[Op::put(format!("{p}a"), "3")]).await;
    assert_eq!(
        put_key(&next(&mut fresh).await).2,
        r,
        "a watch from the compacted revision itself follows on"
    );
}

/// Several allocators (as several controllers would) taking ids from one counter at once:
/// every id is given once, and each allocator's ids grow.
pub async fn ids_are_unique_across_allocators(kv: std::sync::Arc<dyn Kv>) {
    use crate::store::kv::ids::IdBlocks;
    let key = format!("conformance/{}/ids/bindings", crate::time::now_unix_ms());
    let allocators: Vec<std::sync::Arc<IdBlocks>> = (0..4)
        .map(|_| std::sync::Arc::new(IdBlocks::new(std::sync::Arc::clone(&kv), key.clone(), 16)))
        .collect();
    let tasks: Vec<_> = allocators
        .iter()
        .map(|a| {
            let a = std::sync::Arc::clone(a);
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..250 {
                    ids.push(a.next().await.expect("an id"));
                }
                ids
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        let ids = task.await.expect("allocator");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "an allocator's ids grow: {ids:?}");
        all.extend(ids);
    }
    all.sort_unstable();
    let n = all.len();
    all.dedup();
    assert_eq!(all.len(), n, "an id was given twice");
    assert!(all[0] >= 1);
    // The blocks were taken in turn: no more than one block per allocator left unused.
    assert!(*all.last().expect("ids") <= 1000 + 4 * 16, "ids up to {}", all.last().expect("ids"));
}

/// A mirror of a prefix follows the store: it starts from a listing, applies later changes,
/// and — after a burst of changes and a compaction — still ends equal to the store.
pub async fn a_mirror_follows_the_store(kv: std::sync::Arc<dyn Kv>) {
    use crate::store::kv::mirror::mirror;
    let p = format!("conformance/{}/mirror/", crate::time::now_unix_ms());
    let ops: Vec<Op> = (0..20).map(|i| Op::put(format!("{p}k{i:02}"), "0")).collect();
    applied(kv.as_ref(), &[], &ops).await;
    let m = mirror(std::sync::Arc::clone(&kv), &p).await.expect("mirror");
    assert_eq!(m.items().len(), 20, "listed at start");

    applied(kv.as_ref(), &[], &[Op::put(format!("{p}k00"), "changed")]).await;
    applied(kv.as_ref(), &[], &[Op::Delete(format!("{p}k01"))]).await;
    applied(kv.as_ref(), &[], &[Op::put(format!("{}elsewhere", p.trim_end_matches('/')), "not mirrored")])
        .await;
    let last = applied(kv.as_ref(), &[], &[Op::put(format!("{p}new"), "1")]).await;
    assert!(m.wait_for(last, Duration::from_secs(10)).await, "the mirror saw revision {last}");
    assert_eq!(m.get(&format!("{p}k00")).map(|i| i.value), Some(b"changed".to_vec()));
    assert_eq!(m.get(&format!("{p}k01")), None);
    assert_eq!(m.items().len(), 20);

    // A burst bigger than a watch may buffer, then a compaction: whether the watch kept up,
    // resumed, or had to list again, the mirror ends as the store is.
    let mut last = 0;
    for round in 0..40 {
        let ops: Vec<Op> = (0..50).map(|i| Op::put(format!("{p}burst/{i:02}"), format!("{round}"))).collect();
        last = applied(kv.as_ref(), &[], &ops).await;
    }
    kv.compact(last).await.expect("compact");
    let deleted = applied(kv.as_ref(), &[], &[Op::Delete(format!("{p}burst/07"))]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let store = kv.list(&p, None, 1000).await.expect("list").items;
    loop {
        if m.revision() >= deleted && m.items() == store {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mirror (at {}, {} items) did not catch up with the store ({} items)",
            m.revision(),
            m.items().len(),
            store.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(m.get(&format!("{p}burst/03")).map(|i| i.value), Some(b"39".to_vec()));
}

/// A store that hands everything to `inner`, with faults a test switches on: keep-alives that
/// hang (a holder cut off from the store), watches that break after a few events (a dropped
/// connection), new watches held back (a reconnection that takes a while), the first commits
/// held until they can all go at once (writers that all read before any of them writes).
pub struct Faulty {
    /// The real store.
    pub inner: std::sync::Arc<dyn Kv>,
    /// Keep-alives hang while set.
    pub stall_keep_alives: std::sync::atomic::AtomicBool,
    /// Each watch ends after this many events.
    pub break_watches_after: Option<usize>,
    /// New watches wait while set.
    pub hold_watches: std::sync::atomic::AtomicBool,
    /// Watches opened so far.
    pub watches: std::sync::atomic::AtomicUsize,
    /// The first commits, as many as the barrier's size, wait for each other.
    together: Option<(usize, tokio::sync::Barrier)>,
    commits: std::sync::atomic::AtomicUsize,
}

impl Faulty {
    /// No fault switched on; watches break after `break_watches_after` events, if given.
    pub fn new(inner: std::sync::Arc<dyn Kv>, break_watches_after: Option<usize>) -> Faulty {
        Faulty {
            inner,
            stall_keep_alives: false.into(),
            break_watches_after,
            hold_watches: false.into(),
            watches: 0.into(),
            together: None,
            commits: 0.into(),
        }
    }

    /// No fault but this: the first `n` commits wait until all `n` have come.
    pub fn commits_together(inner: std::sync::Arc<dyn Kv>, n: usize) -> Faulty {
        Faulty { together: Some((n, tokio::sync::Barrier::new(n))), ..Faulty::new(inner, None) }
    }
}

#[async_trait::async_trait]
impl Kv for Faulty {
    async fn get(&self, key: &str) -> Result<Option<Item>, KvError> {
        self.inner.get(key).await
    }
    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<crate::store::kv::Listing, KvError> {
        self.inner.list(prefix, after, limit).await
    }
    async fn commit(&self, conditions: &[Condition], ops: &[Op]) -> Result<Commit, KvError> {
        if let Some((n, together)) = &self.together
            && self.commits.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < *n
        {
            together.wait().await;
        }
        self.inner.commit(conditions, ops).await
    }
    async fn grant(&self, ttl: Duration) -> Result<crate::store::kv::LeaseId, KvError> {
        self.inner.grant(ttl).await
    }
    async fn keep_alive(&self, lease: crate::store::kv::LeaseId) -> Result<(), KvError> {
        use std::sync::atomic::Ordering;
        if self.stall_keep_alives.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.keep_alive(lease).await
    }
    async fn revoke(&self, lease: crate::store::kv::LeaseId) -> Result<(), KvError> {
        self.inner.revoke(lease).await
    }
    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, KvError> {
        use std::sync::atomic::Ordering;
        self.watches.fetch_add(1, Ordering::SeqCst);
        while self.hold_watches.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut inner = self.inner.watch(prefix, after).await?;
        let Some(limit) = self.break_watches_after else { return Ok(inner) };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            for _ in 0..limit {
                let Some(e) = inner.recv().await else { return };
                if tx.send(e).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }
    async fn compact(&self, revision: Revision) -> Result<(), KvError> {
        self.inner.compact(revision).await
    }
}
