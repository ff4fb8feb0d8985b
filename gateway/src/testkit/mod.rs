//! # The test kit (feature `testkit`)
//!
//! What tests, benchmarks and `skybridge demo` need and a deployment does not, so it is not
//! part of the library's default API:
//!
//! - [`netem`] — the user-space link emulator (delay, jitter, loss, rate per direction), since
//!   kernel traffic shaping is not available on the test machines;
//! - [`catalog`] — a synthetic catalog at scale, written straight into a store;
//! - [`clouds`] — how the cloud emulators are started (tests and demo alike); [`etcd`] — real
//!   etcd members as processes;
//! - [`kv`] — the conformance suite every [`crate::store::kv::Kv`] engine passes, [`store`]
//!   the one every [`crate::store::Backend`] passes;
//! - [`local`] — a whole mesh in one process: a development CA, a controller, relays and sites
//!   on loopback with an emulated link under every mesh link.

pub mod catalog;
pub mod clouds;
pub mod etcd;
pub mod kv;
pub mod local;
pub mod netem;
pub mod store;
