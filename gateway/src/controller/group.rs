//! A controller in a group (`[store] kind = "etcd"`): it registers under its own lease — the
//! key `members/{name}` with its addresses — and keeps the lease alive; the others see it as
//! long as the key is there. A controller killed without a word drops out when its lease
//! expires (its TTL); one that stops gracefully revokes it, so the others notice at once.
//!
//! A name is one process: a controller started while its name's key still hangs on the
//! previous process's lease waits for that lease to end rather than take the name over (a
//! killed controller restarted at once waits up to one TTL).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use tokio::sync::watch;

use crate::store::kv::lease::{LeaseCheck, hold};
use crate::store::kv::{Commit, Condition, LeaseId, MAX_LIST, Op};
use crate::store::open::Group;

/// A controller as its group knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MemberView {
    /// Its node name.
    pub name: String,
    /// Where relays and sites reach it.
    pub mesh: SocketAddr,
    /// Its admin API.
    pub admin: SocketAddr,
    /// When it joined (Unix ms).
    pub since_ms: u64,
    /// Whether this is the controller that answered.
    #[serde(default)]
    pub this: bool,
}

/// This controller's place in its group, held while the value lives.
pub struct Membership {
    group: Group,
    me: MemberView,
    lease: LeaseId,
    /// Whether the lease is held now, by the clock.
    held: LeaseCheck,
    /// Holds the lease (renewing it) and raises `lost` when it is lost; aborted to let go.
    holder: tokio::task::JoinHandle<()>,
    lost: watch::Receiver<bool>,
}

/// How often a controller looks at its group's members.
const MEMBERS_FOLLOW: Duration = Duration::from_secs(1);

fn members_prefix(group: &Group) -> String {
    group.key("members/")
}

impl Membership {
    /// Register `me` under a new lease; wait (at most the lease's TTL and a little) while the
    /// name is held by a previous process.
    pub async fn join(group: Group, me: MemberView) -> anyhow::Result<Membership> {
        let key = format!("{}{}", members_prefix(&group), me.name);
        let mut lease =
            hold(Arc::clone(&group.kv), group.lease_ttl).await.context("taking the controller's lease")?;
        let value = serde_json::to_vec(&MemberView { this: false, ..me.clone() })?;
        let put = Op::Put { key: key.clone(), value, lease: Some(lease.id) };
        let deadline = tokio::time::Instant::now() + group.lease_ttl + Duration::from_secs(5);
        let mut told = false;
        loop {
            match group.kv.commit(&[Condition::Absent(key.clone())], std::slice::from_ref(&put)).await? {
                Commit::Applied(_) => break,
                Commit::ConditionFailed if tokio::time::Instant::now() < deadline => {
                    if !told {
                        tracing::warn!(
                            controller = %me.name,
                            "another process holds this controller's name in the group (a previous run \
                             whose lease has not ended yet?); waiting up to {:?} for it to go",
                            group.lease_ttl
                        );
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Commit::ConditionFailed => anyhow::bail!(
                    "controller `{}` is registered in the group by another running process: two \
                     controllers may not share a name",
                    me.name
                ),
            }
        }
        tracing::info!(controller = %me.name, lease = lease.id, ttl = ?group.lease_ttl, "joined the group");
        let (id, held) = (lease.id, lease.checker());
        let (raise, lost) = watch::channel(false);
        let holder = tokio::spawn(async move {
            lease.lost().await;
            raise.send_replace(true);
            // Keep the handle until let go: dropping it is what stops the renewals.
            std::future::pending::<()>().await;
            drop(lease);
        });
        Ok(Membership { group, me, lease: id, held, holder, lost })
    }

    /// Every controller of the group, by name.
    pub async fn members(&self) -> anyhow::Result<Vec<MemberView>> {
        let page = self.group.kv.list(&members_prefix(&self.group), None, MAX_LIST).await?;
        page.items
            .iter()
            .map(|item| {
                let mut m: MemberView = serde_json::from_slice(&item.value)
                    .with_context(|| format!("the group member `{}` does not parse", item.key))?;
                m.this = m.name == self.me.name;
                Ok(m)
            })
            .collect()
    }

    /// The lease it holds.
    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    /// Wait until the lease is lost or possibly lost (then this controller must stop acting
    /// for the group).
    pub async fn lost(&self) {
        let _ = self.lost.clone().wait_for(|lost| *lost).await;
    }

    /// Whether the lease is lost or possibly lost (by the clock: a controller woken from a
    /// pause knows at once, before its renewal task has run).
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow() || !self.held.held()
    }

    /// Leave at once: stop renewing and revoke the lease, so the others take over without
    /// waiting for its TTL.
    pub async fn leave(&self) {
        self.holder.abort();
        match tokio::time::timeout(Duration::from_secs(3), self.group.kv.revoke(self.lease)).await {
            Ok(Ok(())) => tracing::info!(controller = %self.me.name, "left the group"),
            Ok(Err(e)) => {
                tracing::warn!("cannot revoke the controller's lease (the others wait for its TTL): {e}")
            }
            Err(_) => {
                tracing::warn!("revoking the controller's lease timed out (the others wait for its TTL)")
            }
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.holder.abort();
    }
}

/// Where this controller stands: its own entry, and its membership when it is in a group.
pub(crate) struct Place {
    me: MemberView,
    group: Option<Group>,
    membership: std::sync::Mutex<Option<Arc<Membership>>>,
}

impl super::Controller {
    /// Take this controller's place: alone, or — with `group` — registered in it (waiting
    /// while a previous process still holds the name), and registered again whenever the lease
    /// is lost while the controller runs.
    pub(crate) async fn take_place(
        self: &Arc<Self>,
        group: Option<Group>,
        mesh: SocketAddr,
        admin: SocketAddr,
    ) -> anyhow::Result<()> {
        let me = MemberView {
            name: self.name.clone(),
            mesh,
            admin,
            since_ms: crate::time::now_unix_ms(),
            this: true,
        };
        let membership = match &group {
            Some(g) => Some(Arc::new(Membership::join(g.clone(), me.clone()).await?)),
            None => None,
        };
        let place = Place { me, group, membership: std::sync::Mutex::new(membership.clone()) };
        if self.place.set(place).is_err() {
            anyhow::bail!("the controller's place is taken already");
        }
        if let Some(first) = membership {
            // Dropped at the shutdown, like the controller's other tasks.
            self.spawner.spawn(Arc::clone(self).keep_membership(first));
        }
        Ok(())
    }

    /// Join again whenever the lease is lost (etcd unreachable past the TTL, the process
    /// paused): until then this controller is not in the group.
    async fn keep_membership(self: Arc<Self>, mut current: Arc<Membership>) {
        let Some(place) = self.place.get() else { return };
        let Some(group) = place.group.clone() else { return };
        loop {
            current.lost().await;
            tracing::error!(controller = %self.name, "lost the group lease: out of the group until it joins again");
            *super::lock(&place.membership) = None;
            // Its keys (its name, the bindings it owned) go with it at once if etcd is there
            // to hear it, rather than when the lease expires.
            current.leave().await;
            let mut pause = Duration::from_millis(500);
            current = loop {
                let me = MemberView { since_ms: crate::time::now_unix_ms(), ..place.me.clone() };
                match Membership::join(group.clone(), me).await {
                    Ok(m) => break Arc::new(m),
                    Err(e) => tracing::warn!("joining the group again failed, retrying in {pause:?}: {e:#}"),
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            };
            *super::lock(&place.membership) = Some(Arc::clone(&current));
        }
    }

    /// Whether this controller is in a group (`[store] kind = "etcd"`).
    pub fn in_group(&self) -> bool {
        self.group().is_some()
    }

    /// The group this controller is in, if any.
    pub(crate) fn group(&self) -> Option<&Group> {
        self.place.get()?.group.as_ref()
    }

    /// The group and this controller's lease in it, while it holds one (not lost).
    pub(crate) fn group_lease(&self) -> Option<(&Group, LeaseId)> {
        let place = self.place.get()?;
        let group = place.group.as_ref()?;
        let membership = super::lock(&place.membership).clone()?;
        (!membership.is_lost()).then(|| (group, membership.lease()))
    }

    /// Whether this controller holds its group lease now.
    pub fn holds_group_lease(&self) -> bool {
        self.group_lease().is_some()
    }

    /// The controllers of this one's group (itself alone when it is in none).
    pub async fn controllers(&self) -> anyhow::Result<Vec<MemberView>> {
        let Some(place) = self.place.get() else { anyhow::bail!("the controller is still starting") };
        let membership = super::lock(&place.membership).clone();
        match (&place.group, membership) {
            (None, _) => Ok(vec![place.me.clone()]),
            (Some(_), Some(m)) => m.members().await,
            (Some(_), None) => {
                anyhow::bail!("this controller lost its place in the group and is joining again")
            }
        }
    }

    /// Follow the group's members: once joined, and whenever a controller leaves (dies, or
    /// stops), take over asking the pending authorizations that are this controller's now
    /// ([`crate::catalog::consent::adopts`]).
    pub(crate) async fn follow_group_members(self: Arc<Self>) {
        let mut known: Option<std::collections::BTreeSet<String>> = None;
        loop {
            if self.holds_group_lease() {
                match self.controllers().await {
                    Ok(members) => {
                        let live: std::collections::BTreeSet<String> =
                            members.into_iter().map(|m| m.name).collect();
                        let departed =
                            known.as_ref().is_none_or(|known| known.difference(&live).next().is_some());
                        if departed {
                            match self.resume_authorizations(Some(&live)).await {
                                Ok(0) => {}
                                Ok(n) => {
                                    tracing::info!(pending = n, "capability authorizations to ask from here")
                                }
                                Err(e) => {
                                    tracing::warn!("cannot read the pending capability authorizations: {e}")
                                }
                            }
                        }
                        known = Some(live);
                    }
                    Err(e) => tracing::warn!("cannot list the group's controllers: {e}"),
                }
            }
            tokio::time::sleep(MEMBERS_FOLLOW).await;
        }
    }

    /// Leave the group at once (a graceful stop), so the others need not wait for the TTL.
    pub(crate) async fn leave_group(&self) {
        let membership = self.place.get().and_then(|p| super::lock(&p.membership).take());
        if let Some(m) = membership {
            m.leave().await;
        }
    }
}
