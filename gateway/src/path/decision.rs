//! What a connection request decided, as recorded: every candidate path with its measured
//! metrics, score and explanation, the winner, and the request around it. Stored by the
//! controller and shown by `GET /v1/decisions`, so an operator can see why a path was chosen.

use serde::{Deserialize, Serialize};

use super::estimator::LinkStats;
use super::graph::NodeId;
use super::policy::Policy;

/// One candidate as the decision records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Candidate {
    /// The relays in order.
    pub path: Vec<NodeId>,
    /// Relay-to-relay hops.
    pub hops: u32,
    /// The path's cost in the link-state graph (sum of link latencies), ms.
    pub graph_cost_ms: f64,
    /// What the end-to-end probes measured.
    pub measured: LinkStats,
    /// The scorer's preference value, when it scored the path.
    pub score: Option<f64>,
    /// The scorer's explanation, or why the path was not scored.
    pub explanation: String,
}

/// A path selection: every candidate and the winner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Decision {
    /// The scorer that decided.
    pub scorer: String,
    /// The weights it was given.
    pub weights: Vec<(String, f64)>,
    /// Every candidate, in the order they were enumerated.
    pub candidates: Vec<Candidate>,
    /// Index of the winner in `candidates`.
    pub winner: usize,
}

impl Decision {
    /// The winning candidate.
    pub fn chosen(&self) -> &Candidate {
        &self.candidates[self.winner]
    }
}

/// A connection request's outcome, as stored and returned (`/v1/decisions`): who asked for
/// what, the routing relays, the policy in force, and the path decision with every candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRecord {
    /// Its id in the store.
    pub id: u64,
    /// The requesting platform.
    pub from: String,
    /// The target platform.
    pub to: String,
    /// The relay nearest the requesting platform (first routing node).
    pub first_relay: String,
    /// The relay nearest the target platform (second routing node).
    pub second_relay: String,
    /// When it was decided (Unix time, ms).
    pub created_unix_ms: u64,
    /// The policy the decision was made under.
    pub policy: Policy,
    /// Every candidate with its measured metrics, score and explanation, and the winner.
    pub decision: Decision,
}
