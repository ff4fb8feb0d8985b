//! # skybridge-gateway
//!
//! The Skybridge gateway: the library behind the `skybridge` binary.
//!
//! ## Layout
//!
//! - [`plugin`] — the WebAssembly plugin host: loads components that implement the worlds of
//!   `wit/plugin.wit` (scorers, authorizers, cloud adapters) and runs them sandboxed, with CPU
//!   deadlines, memory limits, a compile cache and hot reload.
//! - [`path`] — the path engine, sans-IO: link estimators, the link-state graph and its
//!   k-shortest paths, nearest-relay choice with hysteresis, scored selection with a decision
//!   record.
//! - [`mesh`] — the relay mesh protocol: control frames (so far).
//! - [`netem`] — the user-space link emulator (delay, jitter, loss, rate per direction) that
//!   tests and the demo put between nodes, since kernel traffic shaping is not available.
//! - `src/cli/` (binary only) — the `skybridge` command line.
//!
//! Still to come, each in its own module (see the issues): the relay mesh protocol (QUIC),
//! the tunnel data plane, the catalog (redb) and the admin API.
//!
//! ## How data flows today
//!
//! An operator names a plugin file ([`plugin::PluginSpec`]); the [`plugin::PluginEngine`]
//! compiles and links it; a [`plugin::PluginRegistry`] keeps it by name; callers take an
//! `Arc<Plugin>` and make typed calls ([`plugin::Plugin::score`],
//! [`plugin::Plugin::authorize`], …), each under the plugin's sandbox limits.

#![deny(unsafe_code)]

pub mod mesh;
pub mod netem;
pub mod node;
pub mod path;
pub mod plugin;
