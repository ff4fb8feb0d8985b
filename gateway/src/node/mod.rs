//! # Node roles
//!
//! One binary, three roles, each started from a TOML file ([`config`]):
//!
//! - [`controller::Controller`] — accepts relays and sites over QUIC, keeps membership
//!   (heartbeats), the link-state graph (relays' link reports) and each platform's nearest
//!   relay (sites' reports), answers connection requests with a scored path decision stored in
//!   redb ([`store`]), and serves the admin API ([`admin`]).
//! - [`relay::Relay`] — dials its neighbours, probes each link continuously, forwards routed
//!   path probes, and reports its links.
//! - [`site::Site`] — a platform's agent: probes the relays it knows, and asks for connections.
//!
//! How a connection request flows:
//!
//! ```text
//! site A ──Connect{B}──▶ controller ──nearest(A)=R1, nearest(B)=R4──▶ k paths R1…R4
//!    (or POST /v1/connections)   │
//!                                ├──ProbePath{route}──▶ R1 ──routed probes──▶ R2 … R4 ──▶ back
//!                                ├──scorer plugin(metrics, weights) per candidate
//!                                └──decision record ──▶ redb, and back to the caller
//! ```
//!
//! [`local`] runs a whole mesh in one process over emulated links (`skybridge demo`, tests).
//! [`uplink`] is the relay's and site's session with the controller; [`control`] carries
//! control frames on QUIC streams.

pub mod accounts;
pub mod admin;
pub mod config;
pub mod control;
pub mod controller;
mod http_proxy;
pub mod ingress;
pub mod local;
pub mod relay;
pub mod site;
pub mod store;
pub mod uplink;

use serde::{Deserialize, Serialize};

use crate::path::Decision;
use config::Policy;

/// A connection request's outcome, as stored and returned: who asked for what, the routing
/// relays, the policy in force, and the path decision with every candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionRecord {
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

/// Run futures concurrently on this task and collect their outputs in order (for the few
/// requests a decision or a tunnel setup sends at once).
pub(crate) async fn join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (slot, future) in out.iter_mut().zip(pending.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *slot = Some(value),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
    out.into_iter().flatten().collect()
}
