//! The path policy in force and its scorer plugin. The policy changes at run time
//! (`PUT /v1/policy`); a new scorer is loaded and checked before anything changes. When the
//! controller's plugin registry reloads the scorer's file, the next decision uses the new one.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::Context;

use crate::path::{PathMetrics, PathScorer, Policy, PolicyUpdate, Preference};
use crate::plugin::{Plugin, PluginRegistry, PluginSpec, World, scoring, types};

/// The scorer plugin as the path engine sees it.
impl PathScorer for Plugin {
    fn name(&self) -> String {
        let (name, version) = self.info().description.name_version();
        format!("{name} {version}")
    }

    fn score(&self, m: &PathMetrics, weights: &[(String, f64)]) -> Result<Preference, String> {
        let metrics = scoring::PathMetrics {
            rtt_ms: m.rtt_ms,
            loss: m.loss,
            jitter_ms: m.jitter_ms,
            hops: m.hops,
            extra: vec![],
        };
        let weights: Vec<types::NamedValue> = weights
            .iter()
            .map(|(name, value)| types::NamedValue { name: name.clone(), value: *value })
            .collect();
        Plugin::score(self, &metrics, &weights)
            .map(|p| Preference { value: p.value, explanation: p.explanation })
            .map_err(|e| e.cause.to_string())
    }
}

/// The name the scorer has in the plugin registry.
pub const SCORER: &str = "scorer";

/// The policy in force; the scorer lives in the registry under [`SCORER`].
pub struct ActivePolicy {
    policy: Mutex<Policy>,
    /// The policy the configuration gives, which runtime changes start from.
    base: Policy,
    registry: Arc<PluginRegistry>,
}

impl ActivePolicy {
    /// Load `policy`'s scorer into `registry` and keep the policy.
    pub fn new(policy: Policy, registry: Arc<PluginRegistry>) -> anyhow::Result<ActivePolicy> {
        load_scorer(&registry, &policy)?;
        Ok(ActivePolicy { policy: Mutex::new(policy.clone()), base: policy, registry })
    }

    /// The policy the configuration gives.
    pub fn base(&self) -> &Policy {
        &self.base
    }

    fn lock(&self) -> MutexGuard<'_, Policy> {
        self.policy.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The policy in force and the scorer to decide with.
    pub fn current(&self) -> (Policy, Option<Arc<Plugin>>) {
        (self.lock().clone(), self.registry.get(SCORER))
    }

    /// The policy in force.
    pub fn policy(&self) -> Policy {
        self.lock().clone()
    }

    /// Change the policy; a new scorer file is loaded (and checked to be a scorer) first.
    /// Blocking: loading may compile a plugin.
    pub fn update(&self, update: &PolicyUpdate) -> Result<Policy, String> {
        let current = self.policy();
        let next = current.updated(update);
        next.validate()?;
        if next.scorer != current.scorer {
            load_scorer(&self.registry, &next).map_err(|e| format!("{e:#}"))?;
        }
        *self.lock() = next.clone();
        tracing::info!(?next, "policy changed");
        Ok(next)
    }
}

/// Load `policy`'s scorer into the registry as [`SCORER`], refusing a plugin of another world.
fn load_scorer(registry: &PluginRegistry, policy: &Policy) -> anyhow::Result<()> {
    registry
        .load_as(PluginSpec::new(SCORER, &policy.scorer), Some(World::Scorer))
        .with_context(|| format!("cannot load the scorer {}", policy.scorer.display()))?;
    Ok(())
}
