//! # A group's bindings, seen and closed through any of its controllers
//!
//! Each controller publishes the bindings it serves — their views, counters included — under
//! `status/binding/{id}` on its lease, when they changed and at most every
//! [`crate::ingress::follow_group`] publishing round (2 s). Every controller mirrors them, so
//! `GET /v1/bindings` on any controller lists the group's bindings: its own live, the others'
//! as last published. A status is shown only while its epoch is its owner key's: a write
//! that a former owner made late never shows.
//!
//! `DELETE /v1/bindings/{id}` on a controller that does not serve the binding puts a close
//! request under `closing/binding/{id}`. The owner closes the binding as if asked directly
//! ([`super::ownership::Step::Close`]); when it has no owner (its owner died), no one claims it
//! and any controller forgets it ([`super::ownership::Step::Drop`]).

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Controller;
use super::bindings::{BindingView, Mode};
use crate::store::kv::{Commit, Condition, MAX_TXN_OPS, Op};

/// How long `DELETE` through another controller waits for the owner to close the binding.
pub const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// The value of a close request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseRequest {
    /// The controller asked.
    by: String,
    at_unix_ms: u64,
}

/// Why a binding served elsewhere could not be closed from here.
#[derive(Debug, thiserror::Error)]
pub enum CloseElsewhereError {
    /// The close request could not be written.
    #[error("cannot ask the group to close binding {id}: {why}")]
    Store {
        /// The binding.
        id: u64,
        /// The store's error.
        why: String,
    },
    /// Asked, but its owner did not close it in time; the request stands.
    #[error(
        "asked the group to close binding {id}, but {owner} has not closed it within {}s; the request stands and is carried out when {owner} or a controller taking its bindings over reads it",
        CLOSE_WAIT.as_secs()
    )]
    NotYet {
        /// The binding.
        id: u64,
        /// Its owner when asked (or "nobody").
        owner: String,
    },
}

/// Whether published view `v` is its owner's at the owner's current epoch.
fn current(ledger: &super::ownership::Ledger, v: &BindingView) -> bool {
    v.epoch.is_some_and(|epoch| ledger.owner(v.id) == Some((v.owner.clone(), epoch)))
}

impl Controller {
    /// Every binding of the group: those served here, live, and those other controllers serve,
    /// as last published; by id.
    pub fn group_bindings(&self) -> Vec<BindingView> {
        let mut views = self.bindings.list();
        let here: BTreeSet<u64> = views.iter().map(|v| v.id).collect();
        views.extend(self.published_bindings().into_iter().filter(|v| !here.contains(&v.id)));
        views.sort_by_key(|v| v.id);
        views
    }

    /// Binding `id`: served here, live, or served by another controller, as last published.
    pub fn group_binding(&self, id: u64) -> Option<BindingView> {
        self.bindings.get(id).or_else(|| {
            let ledger = self.ledger.get()?;
            let item = ledger.statuses.get(&format!("{}{id:020}", ledger.status_prefix))?;
            serde_json::from_slice(&item.value).ok().filter(|v| current(ledger, v))
        })
    }

    /// The published views whose epoch is their owner's now.
    fn published_bindings(&self) -> Vec<BindingView> {
        let Some(ledger) = self.ledger.get() else { return Vec::new() };
        let mut views = Vec::new();
        ledger.statuses.for_each(&ledger.status_prefix, |item| {
            if let Ok(view) = serde_json::from_slice::<BindingView>(&item.value) {
                views.push(view);
            }
        });
        views.retain(|v| current(ledger, v));
        views
    }

    /// Publish the views of the bindings served here that changed since last published.
    pub async fn publish_binding_statuses(&self) {
        let (Some(ledger), Some((group, lease))) = (self.ledger.get(), self.group_lease()) else { return };
        let mut changed = Vec::new();
        for view in self.bindings.list() {
            let Some(epoch) = view.epoch.filter(|_| view.mode != Mode::Connect) else { continue };
            let key = format!("{}{:020}", ledger.status_prefix, view.id);
            let Ok(value) = serde_json::to_vec(&view) else { continue };
            let same = ledger.statuses.get(&key).is_some_and(|i| i.value == value && i.lease == Some(lease));
            if !same {
                let owned = Condition::CreateRevision(
                    super::ownership::owner_key(&ledger.owners_prefix, view.id),
                    epoch,
                );
                changed.push((owned, Op::Put { key, value, lease: Some(lease) }));
            }
        }
        // Each write only while the binding is still ours at its epoch (a binding closed or
        // taken over meanwhile gets no status); a batch whose condition fails goes one by one.
        for batch in changed.chunks(MAX_TXN_OPS / 2) {
            let (conditions, ops): (Vec<Condition>, Vec<Op>) = batch.iter().cloned().unzip();
            match group.kv.commit(&conditions, &ops).await {
                Ok(Commit::Applied(_)) => continue,
                Ok(Commit::ConditionFailed) => {}
                Err(e) => return tracing::warn!("cannot publish the bindings' status to the group: {e}"),
            }
            for (condition, op) in batch {
                if let Err(e) =
                    group.kv.commit(std::slice::from_ref(condition), std::slice::from_ref(op)).await
                {
                    return tracing::warn!("cannot publish a binding's status to the group: {e}");
                }
            }
        }
    }

    /// Whether binding `id` is kept by the group but not served here: one to close through its
    /// owner ([`Controller::close_elsewhere`]).
    pub fn served_elsewhere(&self, id: u64) -> bool {
        self.ledger.get().is_some_and(|ledger| ledger.is_kept(id))
            && !self.served_kept_bindings().contains(&id)
    }

    /// Ask the group to close binding `id`, served elsewhere, and wait up to [`CLOSE_WAIT`] for
    /// it to be gone; its last published view (if it had one).
    pub async fn close_elsewhere(&self, id: u64) -> Result<Option<BindingView>, CloseElsewhereError> {
        let store = |why: String| CloseElsewhereError::Store { id, why };
        let (Some(ledger), Some(group)) = (self.ledger.get(), self.group()) else {
            return Err(store("this controller is in no group".into()));
        };
        let last = self.group_binding(id);
        let owner = ledger.owner(id).map_or_else(|| "nobody".to_owned(), |(name, _)| name);
        let request = CloseRequest { by: self.name.clone(), at_unix_ms: crate::time::now_unix_ms() };
        let value = serde_json::to_vec(&request).map_err(|e| store(e.to_string()))?;
        let put = Op::Put { key: ledger.closing_key(id), value, lease: None };
        group.kv.commit(&[], &[put]).await.map_err(|e| store(e.to_string()))?;
        tracing::info!(binding = id, %owner, "asked the group to close the binding");
        let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
        while ledger.is_kept(id) {
            if tokio::time::Instant::now() >= deadline {
                return Err(CloseElsewhereError::NotYet { id, owner });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(last)
    }
}
