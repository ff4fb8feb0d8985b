//! # Node roles
//!
//! One binary, three roles, each started from a TOML file ([`crate::config`]). This module only
//! starts and stops them; what each does lives in its own module.
//!
//! - [`controller`] — starts a [`crate::controller::Controller`] with the admin API
//!   ([`crate::admin`]) and the ingress's CONNECT proxy ([`crate::ingress`]) above it, under
//!   one shutdown signal.
//! - [`relay::Relay`] — dials its neighbours, probes each link continuously, forwards routed
//!   path probes and tunnels' labelled packets, and reports its links.
//! - [`site::Site`] — a platform's agent: probes the relays it knows, asks for connections,
//!   is the last hop of tunnels to the endpoints it publishes, and runs the platform's
//!   plugins: its adapter discovers the cloud's services, which [`reporter`] reports.
//!
//! How a connection request flows:
//!
//! ```text
//! site A ──Connect{B}──▶ controller ──nearest(A)=R1, nearest(B)=R4──▶ k paths R1…R4
//!    (or POST /v1/decisions)     │
//!                                ├──ProbePath{route}──▶ R1 ──routed probes──▶ R2 … R4 ──▶ back
//!                                ├──scorer plugin(metrics, weights) per candidate
//!                                └──decision record ──▶ redb, and back to the caller
//! ```
//!
//! The test kit (`crate::testkit`, feature `testkit`) runs a whole mesh in one process over
//! emulated links (`skybridge demo`, tests).
//! [`uplink`] is the relay's and site's session with the controller.

/// The nodes' configuration files (kept at the crate's top level: the controller reads its
/// own part, and the controller sits below the role runners).
pub use crate::config;
pub mod consent;
pub mod controller;
pub mod metrics;
pub mod relay;
pub mod reporter;
pub mod site;
pub mod uplink;
pub mod uplinks;
