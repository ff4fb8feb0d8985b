//! Holding a lease: renew it every third of its TTL, and know — without asking the store —
//! until when it is surely still held, so that its holder stops acting on it (closes its
//! listeners, stops granting) *before* the store can have expired it. That is how a controller
//! fences itself when it is cut off from etcd or paused past its TTL (issue 17, item 5).
//!
//! [`LeaseClock`] is the sans-IO rule; [`hold`] runs it against a [`Kv`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{Kv, KvError, LeaseId};

/// When to renew a lease and until when it is surely held. The store counts a TTL from the
/// moment it handles a grant or renewal, which is after the request was sent: counted from the
/// sending, less a margin for clocks running at different rates, the lease cannot have expired.
#[derive(Debug, Clone, Copy)]
pub struct LeaseClock {
    ttl: Duration,
    margin: Duration,
    held_until: Instant,
    next_renewal: Instant,
}

impl LeaseClock {
    /// A lease of `ttl` whose grant was requested at `sent`.
    pub fn new(ttl: Duration, sent: Instant) -> LeaseClock {
        // A tenth of the TTL, at least 200 ms, at most half of it.
        let margin = (ttl / 10).max(Duration::from_millis(200)).min(ttl / 2);
        let mut clock = LeaseClock { ttl, margin, held_until: sent, next_renewal: sent };
        clock.renewed(sent);
        clock
    }

    /// A renewal requested at `sent` was acknowledged.
    pub fn renewed(&mut self, sent: Instant) {
        self.held_until = self.held_until.max(sent + self.ttl - self.margin);
        self.next_renewal = sent + self.ttl / 3;
    }

    /// When to renew next.
    pub fn next_renewal(&self) -> Instant {
        self.next_renewal
    }

    /// Until when the lease is surely held.
    pub fn held_until(&self) -> Instant {
        self.held_until
    }

    /// Whether its holder may still act on it at `now`.
    pub fn held(&self, now: Instant) -> bool {
        now < self.held_until
    }
}

/// What the holder of a lease knows of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Surely held until then.
    Held(Instant),
    /// Lost (the store says so) or possibly lost (no renewal in time): stop acting on it.
    Lost,
}

/// A lease being kept alive by a task; dropping it stops the renewals (the lease then expires).
pub struct HeldLease {
    /// The lease.
    pub id: LeaseId,
    state: watch::Receiver<LeaseState>,
    task: tokio::task::JoinHandle<()>,
}

impl HeldLease {
    /// Whether its holder may still act on it now.
    pub fn held(&self) -> bool {
        matches!(*self.state.borrow(), LeaseState::Held(until) if Instant::now() < until)
    }

    /// Whether it is held now, as a check that can be cloned and kept apart from the handle.
    pub fn checker(&self) -> LeaseCheck {
        LeaseCheck(self.state.clone())
    }

    /// Wait until it is lost (or possibly lost): the moment to fence.
    pub async fn lost(&mut self) {
        loop {
            let until = match *self.state.borrow_and_update() {
                LeaseState::Lost => return,
                LeaseState::Held(until) => until,
            };
            tokio::select! {
                changed = self.state.changed() => if changed.is_err() { return },
                () = tokio::time::sleep_until(until) => return,
            }
        }
    }
}

/// Whether a [`HeldLease`] is held now (see [`HeldLease::checker`]).
#[derive(Debug, Clone)]
pub struct LeaseCheck(watch::Receiver<LeaseState>);

impl LeaseCheck {
    /// Whether its holder may still act on it now: by the clock, not only by what the renewal
    /// task said last (after a pause, the clock knows first).
    pub fn held(&self) -> bool {
        matches!(*self.0.borrow(), LeaseState::Held(until) if Instant::now() < until)
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Grant a lease of `ttl` on `kv` and keep it alive until the returned handle is dropped.
pub async fn hold(kv: Arc<dyn Kv>, ttl: Duration) -> Result<HeldLease, KvError> {
    let sent = Instant::now();
    let id = kv.grant(ttl).await?;
    let mut clock = LeaseClock::new(ttl, sent);
    let (tx, state) = watch::channel(LeaseState::Held(clock.held_until()));
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep_until(clock.next_renewal().min(clock.held_until())).await;
            let sent = Instant::now();
            if !clock.held(sent) {
                break;
            }
            // A renewal that cannot be answered before the lease may expire is no use.
            match tokio::time::timeout_at(clock.held_until(), kv.keep_alive(id)).await {
                Ok(Ok(())) => {
                    clock.renewed(sent);
                    let _ = tx.send(LeaseState::Held(clock.held_until()));
                }
                Ok(Err(KvError::LeaseLost(_))) => break,
                Ok(Err(e)) => {
                    tracing::warn!(lease = id, "lease renewal failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(250).min(ttl / 10)).await;
                }
                Err(_) => break,
            }
        }
        tracing::warn!(lease = id, "lease lost or not renewed in time: fencing");
        let _ = tx.send(LeaseState::Lost);
    });
    Ok(HeldLease { id, state, task })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::kv::redb::RedbKv;
    use crate::store::kv::{Commit, Op};
    use crate::testkit::kv::Faulty;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_lease_is_renewed_every_third_of_its_ttl_and_held_until_a_margin_before_it_can_expire() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(3);
        let mut clock = LeaseClock::new(ttl, t0);
        assert_eq!(clock.next_renewal(), t0 + Duration::from_secs(1));
        assert_eq!(clock.held_until(), t0 + Duration::from_millis(2700), "3 s less a tenth");
        assert!(
            clock.held(t0 + Duration::from_millis(2699)) && !clock.held(t0 + Duration::from_millis(2700))
        );
        // Renewed when asked at 1 s: held until 3.7 s, whenever the answer came.
        clock.renewed(t0 + Duration::from_secs(1));
        assert_eq!(clock.held_until(), t0 + Duration::from_millis(3700));
        assert_eq!(clock.next_renewal(), t0 + Duration::from_secs(2));
        // A late acknowledgement of an earlier request never shortens it.
        clock.renewed(t0 + Duration::from_millis(500));
        assert_eq!(clock.held_until(), t0 + Duration::from_millis(3700));
        // Short TTLs keep at least 200 ms of margin, never more than half.
        let short = LeaseClock::new(Duration::from_millis(300), t0);
        assert_eq!(short.held_until(), t0 + Duration::from_millis(150));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_holder_cut_off_from_the_store_fences_before_its_key_expires() {
        let dir = tempfile::tempdir().expect("tempdir");
        let redb: Arc<dyn Kv> = Arc::new(RedbKv::open(&dir.path().join("kv.redb")).expect("open"));
        let store = Arc::new(Faulty::new(redb, None));
        let ttl = Duration::from_secs(2);
        let mut lease = hold(store.clone(), ttl).await.expect("hold");
        let owned = Op::Put { key: "owner/bindings/1".into(), value: b"c1".to_vec(), lease: Some(lease.id) };
        assert!(matches!(store.commit(&[], &[owned]).await, Ok(Commit::Applied(_))));
        // Kept alive for three TTLs.
        tokio::time::sleep(ttl * 3).await;
        assert!(lease.held(), "renewed every third of its TTL");
        assert!(store.get("owner/bindings/1").await.expect("get").is_some());

        // Cut off: the holder gives up before the store can drop the key, never after.
        store.stall_keep_alives.store(true, Ordering::SeqCst);
        lease.lost().await;
        assert!(!lease.held());
        assert!(
            store.get("owner/bindings/1").await.expect("get").is_some(),
            "fenced while the store still held the key"
        );
        let deadline = Instant::now() + ttl * 3;
        while store.get("owner/bindings/1").await.expect("get").is_some() {
            assert!(Instant::now() < deadline, "the key outlived its lease");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revoked_lease_is_reported_lost_at_its_next_renewal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv: Arc<dyn Kv> = Arc::new(RedbKv::open(&dir.path().join("kv.redb")).expect("open"));
        let mut lease = hold(Arc::clone(&kv), Duration::from_secs(3)).await.expect("hold");
        let revoked_at = Instant::now();
        kv.revoke(lease.id).await.expect("revoke");
        lease.lost().await;
        assert!(revoked_at.elapsed() < Duration::from_secs(2), "noticed at the next renewal (every 1 s)");
    }
}
