//! What a controller restart keeps: every `tcp` and `http` binding is written to the store's
//! runtime state when it opens (`binding/ID`: the request, its listener address, the account,
//! its expiry) and removed when it closes. A restarted controller reads them back
//! ([`Controller::bindings_to_restore`]); the ingress listens again on each one's address at
//! once and retries its tunnel until the path's nodes are back
//! ([`crate::ingress::restore`]). Meanwhile the binding is *restoring*: its listener refuses
//! clients, `GET` says so, `DELETE` gives it up. CONNECT bindings are not kept: the next
//! CONNECT makes its binding again. Accounts and decisions live in the store anyway; the
//! policy set at runtime is kept as `policy` ([`super::policy`]).

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use super::bindings::{BindRequest, Prepared};
use super::{Controller, lock};
use crate::path::{Policy, PolicyUpdate};
use crate::store::StoreError;
use crate::time::now_unix_ms;

/// Where bindings are kept in the runtime state.
pub(crate) const PREFIX: &str = "binding/";
/// Where the policy set at runtime is kept.
const POLICY: &str = "policy";

/// The policy set at runtime, with the configuration's it was changed from: a configuration
/// changed since then wins (the operator edited it on purpose), else the runtime one is
/// restored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeptPolicy {
    base: Policy,
    policy: Policy,
}

/// A binding as the store keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredBinding {
    /// The request, resolved: its requesting platform and listener address filled in.
    pub request: BindRequest,
    /// The account its tunnel carries traffic for.
    pub account: String,
    /// Made for a capability: its match key (the target site authorizes it).
    #[serde(default)]
    pub capability_key: Option<String>,
    /// When it expires (Unix ms).
    pub expires_unix_ms: u64,
}

fn key(id: u64) -> String {
    format!("{PREFIX}{id:020}")
}

impl Controller {
    /// Keep binding `id` in the store (a failure is logged: the binding works, but would not
    /// come back after a restart).
    pub(super) async fn keep_binding(&self, id: u64, stored: &StoredBinding) {
        if let Err(e) = self.store.put_state(key(id), stored).await {
            tracing::error!(
                binding = id,
                "cannot keep the binding in the store; a restart would lose it: {e}"
            );
        }
    }

    /// Remove binding `id` from the store. In a group only its owner may, and only while it
    /// owns it (`fence`, its epoch): a controller that lost the binding leaves it to the new
    /// owner.
    pub(super) async fn forget_binding(&self, id: u64, fence: Option<crate::mesh::messages::Fence>) {
        if self.in_group() {
            return self.forget_owned_binding(id, fence).await;
        }
        if let Err(e) = self.store.remove_state(key(id)).await {
            tracing::error!(binding = id, "cannot remove the closed binding from the store: {e}");
        }
    }

    /// Forget kept binding `id` (one that cannot be restored).
    pub async fn forget_kept_binding(&self, id: u64) {
        self.forget_binding(id, None).await;
    }

    /// Binding `id` as the store keeps it.
    pub(crate) async fn kept_binding(&self, id: u64) -> Result<Option<StoredBinding>, StoreError> {
        let key = key(id);
        let found = self.store.states::<StoredBinding>(key.clone()).await?;
        Ok(found.into_iter().find(|(k, _)| *k == key).map(|(_, stored)| stored))
    }

    /// The bindings kept by the previous run, to restore, oldest first; expired ones are
    /// forgotten, and new bindings get ids above every kept one.
    pub async fn bindings_to_restore(&self) -> Result<Vec<(u64, StoredBinding)>, StoreError> {
        let mut out = Vec::new();
        for (key, stored) in self.store.states::<StoredBinding>(PREFIX).await? {
            let Some(id) = key.strip_prefix(PREFIX).and_then(|id| id.parse::<u64>().ok()) else {
                tracing::warn!(%key, "a kept binding with an unreadable id is skipped");
                continue;
            };
            self.bindings.id_in_use(id);
            if stored.expires_unix_ms <= now_unix_ms() {
                tracing::info!(binding = id, "a kept binding expired while the controller was down");
                self.forget_binding(id, None).await;
                continue;
            }
            out.push((id, stored));
        }
        Ok(out)
    }

    /// Note that `prepared` is being restored (its tunnel is not up yet).
    pub fn restoring(&self, prepared: &Prepared) {
        lock(&self.bindings.restoring).insert(prepared.id, prepared.clone());
    }

    /// Binding `id` is restored (or given up).
    pub fn restore_ended(&self, id: u64) {
        lock(&self.bindings.restoring).remove(&id);
    }

    /// Whether binding `id` is being restored.
    pub fn is_restoring(&self, id: u64) -> bool {
        lock(&self.bindings.restoring).contains_key(&id)
    }

    /// Give up restoring binding `id` (on `DELETE`): its listener closes and the store
    /// forgets it. Whether it was being restored.
    pub async fn abandon_restore(&self, id: u64) -> bool {
        let Some(prepared) = lock(&self.bindings.restoring).remove(&id) else { return false };
        prepared.close();
        self.forget_binding(id, prepared.fence).await;
        tracing::info!(binding = id, "binding given up while being restored");
        true
    }

    /// Keep the policy set at runtime (a failure is logged: it is in force, but a restart
    /// would go back to the configuration's).
    pub(super) async fn keep_policy(&self, policy: &Policy) {
        let kept = KeptPolicy { base: self.policy.base().clone(), policy: policy.clone() };
        if let Err(e) = self.store.put_state(POLICY.to_owned(), &kept).await {
            tracing::error!("cannot keep the changed policy in the store; a restart would lose it: {e}");
        }
    }

    /// Put the policy set at runtime before the restart back in force — unless the
    /// configuration's policy changed since, which then wins. Whether it was restored.
    pub async fn restore_policy(self: &Arc<Self>) -> Result<bool, String> {
        let kept = self.store.states::<KeptPolicy>(POLICY).await.map_err(|e| e.to_string())?;
        let Some((_, kept)) = kept.into_iter().find(|(key, _)| key == POLICY) else { return Ok(false) };
        let Some(p) = policy_to_restore(kept, self.policy.base()) else {
            tracing::info!(
                "the configuration's [policy] changed since the policy was set at runtime: it is in force"
            );
            self.store.remove_state(POLICY.to_owned()).await.map_err(|e| e.to_string())?;
            return Ok(false);
        };
        let restored = self.set_policy(update_to(p)).await?;
        tracing::info!(?restored, "the policy set at runtime before the restart is in force again");
        Ok(true)
    }
}

/// How often a controller of a group looks for a policy another controller set.
const POLICY_FOLLOW: std::time::Duration = std::time::Duration::from_secs(1);

impl Controller {
    /// In a group: put in force the policy another controller set at run time (the kept
    /// policy is shared), checking every [`POLICY_FOLLOW`]; in memory only, so that the
    /// controllers do not write it back and forth.
    pub(crate) async fn follow_group_policy(self: Arc<Self>) {
        loop {
            tokio::time::sleep(POLICY_FOLLOW).await;
            let kept = match self.store.states::<KeptPolicy>(POLICY).await {
                Ok(kept) => kept.into_iter().find(|(key, _)| key == POLICY).map(|(_, k)| k),
                Err(e) => {
                    tracing::warn!("cannot read the group's policy: {e}");
                    continue;
                }
            };
            let Some(wanted) = kept.and_then(|k| policy_to_restore(k, self.policy.base())) else { continue };
            if wanted == self.policy.policy() {
                continue;
            }
            let update = update_to(wanted);
            let this = Arc::clone(&self);
            match self.plugin_calls.run(move || this.policy.update(&update)).await {
                Ok(Ok(p)) => {
                    tracing::info!(policy = ?p, "another controller of the group changed the policy: in force here too");
                    self.events.publish(super::events::Event::PolicyChanged);
                }
                Ok(Err(e)) => tracing::warn!("the group's policy cannot be put in force here: {e}"),
                Err(e) => tracing::warn!("the group's policy cannot be put in force here: {e}"),
            }
        }
    }
}

/// The update that puts `p` in force.
fn update_to(p: Policy) -> PolicyUpdate {
    PolicyUpdate {
        scorer: Some(p.scorer),
        weights: p.weights,
        k: Some(p.k),
        probes: Some(p.probes),
        probe_interval_ms: Some(p.probe_interval_ms),
        reroute_loss: Some(p.reroute_loss),
    }
}

/// The runtime policy to put back in force: `kept`'s, unless the configuration's policy is no
/// longer the one it was changed from.
fn policy_to_restore(kept: KeptPolicy, config: &Policy) -> Option<Policy> {
    (kept.base == *config).then_some(kept.policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_policy_comes_back_unless_the_configuration_changed_since() {
        let config = Policy {
            scorer: "scorer.wasm".into(),
            weights: Default::default(),
            k: 4,
            probes: 20,
            probe_interval_ms: 10,
            reroute_loss: 0.2,
        };
        let runtime = Policy { k: 2, ..config.clone() };
        let kept = KeptPolicy { base: config.clone(), policy: runtime.clone() };
        assert_eq!(policy_to_restore(kept.clone(), &config), Some(runtime));
        let edited = Policy { probes: 50, ..config };
        assert_eq!(policy_to_restore(kept, &edited), None, "the edited configuration wins");
    }
}
