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
    /// Another controller asked to close it, and this one owns it: close it.
    Close(u64),
    /// Asked to be closed while nobody owns it (its owner died): forget it, unclaimed.
    Drop(u64),
}

/// The group's bindings as one controller sees them (all from mirrors, so from memory).
#[derive(Debug, Default)]
pub struct Seen {
    /// Kept bindings.
    pub kept: BTreeSet<u64>,
    /// Their owners.
    pub owners: BTreeMap<u64, String>,
    /// Bindings some controller was asked to close.
    pub closing: BTreeSet<u64>,
}

/// The steps for a controller named `me`, given what it has `seen` of the group and the
/// bindings it `serves` (listens for, or is restoring).
pub fn plan(seen: &Seen, me: &str, serves: &BTreeSet<u64>) -> Vec<Step> {
    let mut steps = Vec::new();
    for id in &seen.kept {
        let closing = seen.closing.contains(id);
        match seen.owners.get(id) {
            None if closing => steps.push(Step::Drop(*id)),
            None => steps.push(Step::Claim(*id)),
            Some(owner) if owner != me && serves.contains(id) => steps.push(Step::LetGo(*id)),
            Some(owner) if owner == me && closing && serves.contains(id) => steps.push(Step::Close(*id)),
            Some(_) => {}
        }
    }
    for id in serves.difference(&seen.kept) {
        // Its owner key without kept state: the binding is being made (kept once its tunnel is
        // up) — unless someone else owns it.
        if seen.owners.get(id).is_some_and(|owner| owner != me) {
            steps.push(Step::LetGo(*id));
        }
    }
    // A request to close a binding that is gone already.
    for id in seen.closing.difference(&seen.kept) {
        if !seen.owners.contains_key(id) {
            steps.push(Step::Drop(*id));
        }
    }
    steps
}

/// The id in a key ending in `/{id:020}`.
fn id_of(key: &str) -> Option<u64> {
    key.rsplit('/').next()?.parse().ok()
}

/// The group's view of its bindings: their kept state, owners, close requests and statuses,
/// mirrored.
pub(crate) struct Ledger {
    kept: Mirror,
    owners: Mirror,
    closing: Mirror,
    pub(super) statuses: Mirror,
    kept_prefix: String,
    pub(super) owners_prefix: String,
    closing_prefix: String,
    pub(super) status_prefix: String,
}

impl Ledger {
    fn ids(mirror: &Mirror, prefix: &str) -> BTreeSet<u64> {
        let mut ids = BTreeSet::new();
        mirror.for_each(prefix, |item| ids.extend(id_of(&item.key)));
        ids
    }

    pub(super) fn is_kept(&self, id: u64) -> bool {
        self.kept.get(&format!("{}{id:020}", self.kept_prefix)).is_some()
    }

    /// Binding `id`'s owner and epoch, if it has an owner.
    pub(super) fn owner(&self, id: u64) -> Option<(String, u64)> {
        let item = self.owners.get(&owner_key(&self.owners_prefix, id))?;
        let owner: Owner = serde_json::from_slice(&item.value).ok()?;
        Some((owner.controller, item.create_revision))
    }

    fn seen(&self) -> Seen {
        let mut owners = BTreeMap::new();
        self.owners.for_each(&self.owners_prefix, |item: &Item| {
            if let (Some(id), Ok(owner)) = (id_of(&item.key), serde_json::from_slice::<Owner>(&item.value)) {
                owners.insert(id, owner.controller);
            }
        });
        Seen {
            kept: Self::ids(&self.kept, &self.kept_prefix),
            owners,
            closing: Self::ids(&self.closing, &self.closing_prefix),
        }
    }

    /// Every key the group holds for binding `id`.
    fn keys(&self, id: u64) -> [String; 4] {
        [
            format!("{}{id:020}", self.kept_prefix),
            owner_key(&self.owners_prefix, id),
            self.closing_key(id),
            format!("{}{id:020}", self.status_prefix),
        ]
    }

    pub(super) fn closing_key(&self, id: u64) -> String {
        format!("{}{id:020}", self.closing_prefix)
    }
}

pub(super) fn owner_key(prefix: &str, id: u64) -> String {
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
        let closing_prefix = group.key("closing/binding/");
        let status_prefix = group.key("status/binding/");
        let ledger = Ledger {
            kept: mirror(Arc::clone(&group.kv), &kept_prefix).await?,
            owners: mirror(Arc::clone(&group.kv), &owners_prefix).await?,
            closing: mirror(Arc::clone(&group.kv), &closing_prefix).await?,
            statuses: mirror(Arc::clone(&group.kv), &status_prefix).await?,
            kept_prefix,
            owners_prefix,
            closing_prefix,
            status_prefix,
        };
        if self.ledger.set(ledger).is_err() {
            anyhow::bail!("ownership started twice");
        }
        // The policy set at run time is the group's too.
        self.spawner.spawn(Arc::clone(self).follow_group_policy());
        // And its members: a departed controller's pending authorizations are taken over.
        self.spawner.spawn(Arc::clone(self).follow_group_members());
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
        plan(&ledger.seen(), &self.name, &served)
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

    /// A closed binding of the group: every key it has goes — in one commit, only while this
    /// controller still owns it at `fence`'s epoch (else the new owner keeps it).
    pub(crate) async fn forget_owned_binding(&self, id: u64, fence: Option<Fence>) {
        let (Some(ledger), Some(group)) = (self.ledger.get(), self.group()) else { return };
        let Some(fence) = fence else {
            return tracing::warn!(binding = id, "a group binding without an owner epoch stays kept");
        };
        let still_mine = [Condition::CreateRevision(owner_key(&ledger.owners_prefix, id), fence.epoch)];
        let ops: Vec<Op> = ledger.keys(id).into_iter().map(Op::Delete).collect();
        match group.kv.commit(&still_mine, &ops).await {
            Ok(Commit::Applied(_)) => {}
            Ok(Commit::ConditionFailed) => tracing::warn!(
                binding = id,
                "another controller owns the binding now: it stays kept, for the new owner"
            ),
            Err(e) => tracing::error!(binding = id, "cannot remove the closed binding from the store: {e}"),
        }
    }

    /// Forget binding `id`, asked to be closed while nobody owns it: every key it has goes, in
    /// one commit that applies only while it still has no owner.
    pub async fn drop_unowned_binding(&self, id: u64) {
        let (Some(ledger), Some(group)) = (self.ledger.get(), self.group()) else { return };
        let unowned = [Condition::Absent(owner_key(&ledger.owners_prefix, id))];
        let ops: Vec<Op> = ledger.keys(id).into_iter().map(Op::Delete).collect();
        match group.kv.commit(&unowned, &ops).await {
            Ok(Commit::Applied(_)) => tracing::info!(binding = id, "closed on request while it had no owner"),
            Ok(Commit::ConditionFailed) => {} // claimed meanwhile: its owner closes it
            Err(e) => tracing::warn!(binding = id, "cannot forget the binding asked to be closed: {e}"),
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

    fn seen(kept: &[u64], owners: &[(u64, &str)], closing: &[u64]) -> Seen {
        Seen {
            kept: set(kept),
            owners: owners.iter().map(|(id, c)| (*id, (*c).to_owned())).collect(),
            closing: set(closing),
        }
    }

    #[test]
    fn unowned_bindings_are_claimed_and_bindings_owned_elsewhere_let_go() {
        let owners = [(1, "c1"), (2, "c2"), (5, "c2")];
        // c1 serves 1 (its own) and 2 (c2 took it over while c1 was paused); 3 has no owner
        // (its owner died); 5 is c2's new binding, not kept yet; 6 is c1's, not kept yet.
        let group = seen(&[1, 2, 3], &owners, &[]);
        assert_eq!(plan(&group, "c1", &set(&[1, 2, 6])), [Step::LetGo(2), Step::Claim(3)]);
        // c2 serves what it owns and claims the orphan too (one of them wins the claim).
        assert_eq!(plan(&group, "c2", &set(&[2, 5])), [Step::Claim(3)]);
        // Nothing kept, nothing owned: nothing to do.
        assert!(plan(&Seen::default(), "c1", &set(&[])).is_empty());
        // A binding served here whose owner key names another: let go even before it is kept.
        assert_eq!(plan(&seen(&[], &owners, &[]), "c1", &set(&[5])), [Step::LetGo(5)]);
    }

    #[test]
    fn a_close_request_is_carried_out_by_the_owner_or_by_anyone_when_there_is_none() {
        // 1 is c1's, 2 is c2's, 3's owner died; all three asked to be closed. 4 was closed
        // already but its request is still there.
        let group = seen(&[1, 2, 3], &[(1, "c1"), (2, "c2")], &[1, 2, 3, 4]);
        assert_eq!(plan(&group, "c1", &set(&[1])), [Step::Close(1), Step::Drop(3), Step::Drop(4)]);
        // c2 closes its own; nobody claims the orphan asked to be closed.
        assert_eq!(plan(&group, "c2", &set(&[2])), [Step::Close(2), Step::Drop(3), Step::Drop(4)]);
        // c1 claimed 3 just before the request: it closes it as its owner; c2 leaves it.
        let claimed = seen(&[3], &[(3, "c1")], &[3]);
        assert_eq!(plan(&claimed, "c1", &set(&[3])), [Step::Close(3)]);
        assert!(plan(&claimed, "c2", &set(&[])).is_empty());
    }

    #[test]
    fn ids_come_from_the_keys_last_part() {
        assert_eq!(id_of("skybridge/owners/binding/00000000000000000042"), Some(42));
        assert_eq!(id_of("skybridge/owners/binding/x"), None);
    }
}
