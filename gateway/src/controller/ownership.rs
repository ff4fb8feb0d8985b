//! # Who serves each binding in a group of controllers
//!
//! Every kept binding (`tcp` and `http`; CONNECT bindings are each controller's own) is owned
//! by one controller: the key `owners/binding/{id}` names it and hangs on its lease, so it goes
//! when that controller dies. The key's create revision is the owner's **epoch**: it goes into
//! every hop grant of the binding's tunnels, and hops refuse older epochs
//! ([`crate::tunnel::hop`]).
//!
//! Each controller reconciles, several times a second, the kept bindings and their owners (two
//! watch-fed mirrors, so this reads memory) against what it serves ([`plan`], sans-IO; the
//! ingress carries the steps out, [`crate::ingress::follow_group`]):
//!
//! - a kept binding with no owner is claimed — a create guarded by the key's absence, so one
//!   controller wins — and the winner serves it: it listens on the binding's port on its own
//!   ingress address and sets the tunnel up again, with its epoch;
//! - a binding it serves that another controller owns now is let go at once (listener closed,
//!   no store change);
//! - when its lease is lost or may be (cut off from etcd, paused past the TTL) it lets every
//!   binding go *before* the lease can have expired ([`crate::store::kv::lease`]), so two
//!   controllers never listen for one binding at once; it claims again once it is back.
//!
//! A new binding is claimed before its tunnel is set up. A closed one loses its kept state and
//! its owner key in one commit guarded by its epoch: a controller that lost the binding (a
//! paused one, woken, reaping what it still held) cannot delete it from under the new owner.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Controller;
use super::bindings::{BindError, Prepared};
use super::restore::StoredBinding;
use crate::mesh::messages::Fence;
use crate::store::kv::mirror::{Mirror, mirror};
use crate::store::kv::{Commit, Condition, Item, Op};
use crate::tunnel::setup::SetupFailed;

/// The value of an owner key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Owner {
    controller: String,
}

/// What a controller does about one binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nobody owns it: try to claim it, and serve it if the claim wins.
    Claim(u64),
    /// It is served here but owned elsewhere, or no longer kept: let it go.
    LetGo(u64),
}

/// The steps for a controller named `me`: `kept` bindings, their `owners`, and the bindings it
/// `serves` (listens for, or is restoring).
pub fn plan(
    kept: &BTreeSet<u64>,
    owners: &BTreeMap<u64, String>,
    me: &str,
    serves: &BTreeSet<u64>,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for id in kept {
        match owners.get(id) {
            None => steps.push(Step::Claim(*id)),
            Some(owner) if owner != me && serves.contains(id) => steps.push(Step::LetGo(*id)),
            Some(_) => {}
        }
    }
    for id in serves.difference(kept) {
        // Its owner key without kept state: the binding is being made (kept once its tunnel is
        // up) — unless someone else owns it.
        if owners.get(id).is_some_and(|owner| owner != me) {
            steps.push(Step::LetGo(*id));
        }
    }
    steps
}

/// The id in a key ending in `/{id:020}`.
fn id_of(key: &str) -> Option<u64> {
    key.rsplit('/').next()?.parse().ok()
}

/// The group's view of its bindings: their kept state and their owners, mirrored.
pub(crate) struct Ledger {
    kept: Mirror,
    owners: Mirror,
    kept_prefix: String,
    owners_prefix: String,
}

impl Ledger {
    fn kept(&self) -> BTreeSet<u64> {
        let mut ids = BTreeSet::new();
        self.kept.for_each(&self.kept_prefix, |item| ids.extend(id_of(&item.key)));
        ids
    }

    fn owners(&self) -> BTreeMap<u64, String> {
        let mut owners = BTreeMap::new();
        self.owners.for_each(&self.owners_prefix, |item: &Item| {
            if let (Some(id), Ok(owner)) = (id_of(&item.key), serde_json::from_slice::<Owner>(&item.value)) {
                owners.insert(id, owner.controller);
            }
        });
        owners
    }
}

fn owner_key(prefix: &str, id: u64) -> String {
    format!("{prefix}{id:020}")
}

fn store_failed(e: impl std::fmt::Display) -> BindError {
    BindError::Setup(SetupFailed {
        failed: vec![("store".into(), format!("cannot record the binding's owner: {e}"))],
        rolled_back: Vec::new(),
        retry: true,
        denied: false,
    })
}

impl Controller {
    /// In a group: mirror the bindings' kept state and owners (the ingress reconciles with
    /// them: [`crate::ingress::follow_group`]), and follow the group's policy.
    pub(crate) async fn start_ownership(self: &Arc<Self>) -> anyhow::Result<()> {
        let Some(group) = self.group() else { return Ok(()) };
        let kept_prefix = group.key(&format!("state/{}", super::restore::PREFIX));
        let owners_prefix = group.key("owners/binding/");
        let ledger = Ledger {
            kept: mirror(Arc::clone(&group.kv), &kept_prefix).await?,
            owners: mirror(Arc::clone(&group.kv), &owners_prefix).await?,
            kept_prefix,
            owners_prefix,
        };
        if self.ledger.set(ledger).is_err() {
            anyhow::bail!("ownership started twice");
        }
        // The policy set at run time is the group's too.
        self.spawner.spawn(Arc::clone(self).follow_group_policy());
        Ok(())
    }

    /// This round's steps for the group's bindings (what the ingress's follower carries out,
    /// [`crate::ingress::follow_group`]): with the lease held, [`plan`]'s; with it lost or
    /// possibly lost, letting go of every binding served here.
    pub async fn ownership_steps(&self) -> Vec<Step> {
        let Some(ledger) = self.ledger.get() else { return Vec::new() };
        let served = self.served_kept_bindings();
        if self.group_lease().is_none() {
            return served.into_iter().map(Step::LetGo).collect();
        }
        plan(&ledger.kept(), &ledger.owners(), &self.name, &served)
    }

    /// Claim binding `id` with this controller's lease; its epoch if the claim won (`None`:
    /// another controller owns it).
    pub(crate) async fn claim_binding(&self, id: u64) -> Result<Option<Fence>, BindError> {
        let (Some(ledger), Some((group, lease))) = (self.ledger.get(), self.group_lease()) else {
            return Err(store_failed("this controller is not in its group (its lease is lost)"));
        };
        let key = owner_key(&ledger.owners_prefix, id);
        let value = serde_json::to_vec(&Owner { controller: self.name.clone() }).map_err(store_failed)?;
        let claim = Op::Put { key: key.clone(), value, lease: Some(lease) };
        match group.kv.commit(&[Condition::Absent(key)], &[claim]).await.map_err(store_failed)? {
            // Created at this revision: the epoch.
            Commit::Applied(revision) => Ok(Some(Fence { binding: id, epoch: revision })),
            Commit::ConditionFailed => Ok(None),
        }
    }

    /// A new binding in a group: owned by this controller before its tunnel is set up.
    pub(crate) async fn own_new_binding(&self, id: u64) -> Result<Option<Fence>, BindError> {
        if self.group().is_none() {
            return Ok(None);
        }
        match self.claim_binding(id).await? {
            Some(fence) => Ok(Some(fence)),
            None => Err(store_failed(format!("binding id {id} is owned already"))),
        }
    }

    /// A closed binding of the group: its kept state and its owner key go — in one commit,
    /// only while this controller still owns it at `fence`'s epoch (else the new owner keeps
    /// it).
    pub(crate) async fn forget_owned_binding(&self, id: u64, fence: Option<Fence>) {
        let (Some(ledger), Some(group)) = (self.ledger.get(), self.group()) else { return };
        let Some(fence) = fence else {
            return tracing::warn!(binding = id, "a group binding without an owner epoch stays kept");
        };
        let owner = owner_key(&ledger.owners_prefix, id);
        let kept = format!("{}{id:020}", ledger.kept_prefix);
        let still_mine = [Condition::CreateRevision(owner.clone(), fence.epoch)];
        match group.kv.commit(&still_mine, &[Op::Delete(kept), Op::Delete(owner)]).await {
            Ok(Commit::Applied(_)) => {}
            Ok(Commit::ConditionFailed) => tracing::warn!(
                binding = id,
                "another controller owns the binding now: it stays kept, for the new owner"
            ),
            Err(e) => tracing::error!(binding = id, "cannot remove the closed binding from the store: {e}"),
        }
    }

    /// Claim kept binding `id`: when the claim wins, the binding prepared with its epoch,
    /// its kept state, and where to listen — its port, at this controller's ingress address.
    pub async fn claim_kept(&self, id: u64) -> Option<(Prepared, StoredBinding, SocketAddr)> {
        let stored = match self.kept_binding(id).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(binding = id, "cannot read the kept binding: {e}");
                return None;
            }
        };
        let fence = match self.claim_binding(id).await {
            Ok(Some(fence)) => fence,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(binding = id, "cannot claim the binding: {e}");
                return None;
            }
        };
        let listen = SocketAddr::new(self.ingress.address, stored.request.listen?.port());
        tracing::warn!(binding = id, epoch = fence.epoch, %listen, "took the binding over");
        let mut prepared = self.prepare_binding(id);
        prepared.fence = Some(fence);
        Some((prepared, stored, listen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn unowned_bindings_are_claimed_and_bindings_owned_elsewhere_let_go() {
        let owners: BTreeMap<u64, String> =
            [(1, "c1"), (2, "c2"), (5, "c2")].into_iter().map(|(id, c)| (id, c.to_owned())).collect();
        // c1 serves 1 (its own) and 2 (c2 took it over while c1 was paused); 3 has no owner
        // (its owner died); 5 is c2's new binding, not kept yet; 6 is c1's, not kept yet.
        let steps = plan(&set(&[1, 2, 3]), &owners, "c1", &set(&[1, 2, 6]));
        assert_eq!(steps, [Step::LetGo(2), Step::Claim(3)]);
        // c2 serves what it owns and claims the orphan too (one of them wins the claim).
        assert_eq!(plan(&set(&[1, 2, 3]), &owners, "c2", &set(&[2, 5])), [Step::Claim(3)]);
        // Nothing kept, nothing owned: nothing to do.
        assert!(plan(&set(&[]), &BTreeMap::new(), "c1", &set(&[])).is_empty());
        // A binding served here whose owner key names another: let go even before it is kept.
        assert_eq!(plan(&set(&[]), &owners, "c1", &set(&[5])), [Step::LetGo(5)]);
    }

    #[test]
    fn ids_come_from_the_keys_last_part() {
        assert_eq!(id_of("skybridge/owners/binding/00000000000000000042"), Some(42));
        assert_eq!(id_of("skybridge/owners/binding/x"), None);
    }
}
