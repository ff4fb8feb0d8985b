//! # The path engine (sans-IO)
//!
//! Plain data and functions over an injected `now`; no sockets, no tasks. The mesh layer
//! feeds it probe results and link state, and asks it for decisions.
//!
//! ## How a connection request becomes a path
//!
//! 1. Each relay measures its links continuously with a [`LinkEstimator`] (smoothed RTT,
//!    jitter, loss over a sliding window); the controller keeps the resulting costs in a
//!    [`Graph`].
//! 2. Each platform's nearest relay is tracked by a [`NearestRelay`], whose [`Hysteresis`]
//!    keeps small fluctuations from flipping it.
//! 3. [`Graph::k_shortest_paths`] enumerates up to k loop-free candidates between the two
//!    routing relays (Yen's algorithm over Dijkstra, deterministic on ties).
//! 4. Each candidate is probed end to end; a [`ProbeSeries`] summarises the probes.
//! 5. [`select`] scores every candidate with a [`PathScorer`] (the scorer plugin) and keeps
//!    a [`Decision`] that records all of them and the winner; the controller stores it in a
//!    [`DecisionRecord`] with the request and the [`Policy`] in force.
//!
//! The path engine imports nothing of the rest of the crate: scorers reach it through the
//! [`PathScorer`] trait, over the path engine's own types.

mod decision;
mod estimator;
mod graph;
mod nearest;
mod policy;
mod select;

pub use decision::{Candidate, Decision, DecisionRecord};
pub use estimator::{LinkEstimator, LinkStats, ProbeSeries};
pub use graph::{Graph, GraphError, NodeId, Path};
pub use nearest::{Hysteresis, NearestRelay};
pub use policy::{Policy, PolicyUpdate};
pub use select::{PathMetrics, PathScorer, Preference, SelectError, select};
