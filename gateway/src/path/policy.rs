//! The path policy: which scorer, with which weights, over how many candidates and probes,
//! and when a live tunnel's path counts as degraded. Set in the controller's `[policy]` table
//! and changed at run time with `PUT /v1/policy`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The path policy: which scorer, with which weights, over how many candidates and probes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The scorer plugin (a `.wasm` component of the `scorer` world).
    pub scorer: PathBuf,
    /// Weights handed to the scorer, by name (e.g. `latency`, `loss`).
    #[serde(default)]
    pub weights: BTreeMap<String, f64>,
    /// Candidate paths to enumerate and probe (default 4).
    #[serde(default = "default_k")]
    pub k: usize,
    /// End-to-end probes per candidate (default 20).
    #[serde(default = "default_probes")]
    pub probes: u32,
    /// Time between two probes of a candidate, ms (default 10).
    #[serde(default = "default_probe_interval_ms")]
    pub probe_interval_ms: u64,
    /// A live tunnel is re-routed when a link on its path loses more than this ratio of probes
    /// (default 0.2); a dead relay or link re-routes it at once.
    #[serde(default = "default_reroute_loss")]
    pub reroute_loss: f64,
}

fn default_k() -> usize {
    4
}
fn default_probes() -> u32 {
    20
}
fn default_reroute_loss() -> f64 {
    0.2
}
fn default_probe_interval_ms() -> u64 {
    10
}

impl Policy {
    /// Check the numbers are sensible; the scorer is checked by loading it.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=32).contains(&self.k) {
            return Err(format!("k must be between 1 and 32, not {}", self.k));
        }
        if !(1..=1000).contains(&self.probes) {
            return Err(format!("probes must be between 1 and 1000, not {}", self.probes));
        }
        if !(1..=1000).contains(&self.probe_interval_ms) {
            return Err(format!(
                "probe_interval_ms must be between 1 and 1000, not {}",
                self.probe_interval_ms
            ));
        }
        if !(self.reroute_loss > 0.0 && self.reroute_loss <= 1.0) {
            return Err(format!("reroute_loss must be a ratio in (0, 1], not {}", self.reroute_loss));
        }
        let series_ms = u64::from(self.probes) * self.probe_interval_ms;
        if series_ms > 20_000 {
            return Err(format!("probes × probe_interval_ms = {series_ms} ms: a path test must fit in 20 s"));
        }
        if let Some((name, value)) = self.weights.iter().find(|(_, v)| !v.is_finite()) {
            return Err(format!("weight {name} = {value} is not a finite number"));
        }
        Ok(())
    }
}

/// A change to the policy: the fields given replace the current ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyUpdate {
    /// New scorer plugin file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scorer: Option<PathBuf>,
    /// Weights to set (merged into the current ones).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub weights: BTreeMap<String, f64>,
    /// New k.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    /// New probe count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    /// New probe interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_interval_ms: Option<u64>,
    /// New re-route loss threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reroute_loss: Option<f64>,
}

impl Policy {
    /// The policy with `update` applied (not yet validated).
    pub fn updated(&self, update: &PolicyUpdate) -> Policy {
        let mut p = self.clone();
        if let Some(s) = &update.scorer {
            p.scorer = s.clone();
        }
        p.weights.extend(update.weights.iter().map(|(k, v)| (k.clone(), *v)));
        p.k = update.k.unwrap_or(p.k);
        p.probes = update.probes.unwrap_or(p.probes);
        p.probe_interval_ms = update.probe_interval_ms.unwrap_or(p.probe_interval_ms);
        p.reroute_loss = update.reroute_loss.unwrap_or(p.reroute_loss);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_updates_merge_and_are_validated() {
        let p = Policy {
            scorer: "s.wasm".into(),
            weights: [("latency".to_owned(), 1.0)].into(),
            k: 4,
            probes: 20,
            probe_interval_ms: 10,
            reroute_loss: 0.2,
        };
        let u = PolicyUpdate { weights: [("loss".to_owned(), 2.0)].into(), k: Some(6), ..Default::default() };
        let next = p.updated(&u);
        assert_eq!(next.weights.len(), 2);
        assert_eq!((next.k, next.probes, next.scorer.clone()), (6, 20, PathBuf::from("s.wasm")));
        next.validate().unwrap();
        for bad in [
            PolicyUpdate { k: Some(0), ..Default::default() },
            PolicyUpdate { probes: Some(5000), ..Default::default() },
            PolicyUpdate { probe_interval_ms: Some(0), ..Default::default() },
            PolicyUpdate { probes: Some(1000), probe_interval_ms: Some(100), ..Default::default() },
            PolicyUpdate { reroute_loss: Some(0.0), ..Default::default() },
            PolicyUpdate { weights: [("loss".to_owned(), f64::NAN)].into(), ..Default::default() },
        ] {
            assert!(p.updated(&bad).validate().is_err(), "{bad:?}");
        }
    }
}
