//! # Session translation (DESIGN.md step 6), in one place
//!
//! For a requesting account the controller keeps three sessions: account ↔ controller (the
//! client's connection at the ingress, authenticated with the account's secret), account ↔
//! transit (the tunnel), account ↔ target (the credentials the account maps to there).
//!
//! - [`accounts`] — accounts, their secrets and per-platform credential mappings;
//! - [`client_auth`] — what a client presents (`Authorization`, `Proxy-Authorization`),
//!   parsed once for every listener;
//! - [`translate`] — sans-IO: an HTTP request head as adapters see it and back, hop-by-hop
//!   headers, and the refusals a client gets;
//! - [`tokens`] — target tokens (Keystone, …) cached per platform and account, and when one
//!   is too close to expiry to use;
//! - [`records`] — the record of each use of a binding, as its three sessions;
//! - [`throttle`] — sans-IO: failed proofs per source and account, and the back-off that
//!   blocks brute force;
//! - [`replay`] — sans-IO: natively signed requests seen lately, so that none is used twice.

pub mod accounts;
pub mod client_auth;
pub mod records;
pub mod replay;
pub mod throttle;
pub mod tokens;
pub mod translate;
