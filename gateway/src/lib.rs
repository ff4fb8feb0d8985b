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
//! - [`mesh`] — the relay mesh protocol: node identities, mutual-TLS QUIC, control frames and
//!   messages, membership, probes (link probes and source-routed path probes).
//! - [`node`] — the node roles built from those: controller (admin API, decision store),
//!   relay and site, their TOML configs, and whole local meshes for the demo and tests.
//! - [`tunnel`] — the data plane: hop tokens ([`tunnel::grant`]), the per-hop stream protocol
//!   ([`tunnel::hop`]) and the splice that carries bytes between TCP and QUIC streams
//!   ([`tunnel::splice`]).
//! - [`netem`] — the user-space link emulator (delay, jitter, loss, rate per direction) that
//!   tests and the demo put between nodes, since kernel traffic shaping is not available.
//! - [`runtime`] — the tokio runtime a node runs on, with its optional idle poll.
//! - [`secret`] — constant-time comparison of secrets.
//! - `src/cli/` (binary only) — the `skybridge` command line.
//!
//! Still to come (see DESIGN.md): the service catalog.
//!
//! ## How data flows
//!
//! Relays probe their links and report them; sites probe the relays they know. The controller
//! ([`node::controller`]) keeps the link-state graph and each platform's nearest relay. A
//! connection request enumerates k paths ([`path::Graph`]), has the first relay probe each end
//! to end ([`mesh::probe`]), scores them with the scorer plugin ([`path::select`]) and stores
//! the decision.
//!
//! A binding then sets a tunnel up on every hop of the chosen path, each hop with a token the
//! controller signs ([`tunnel::grant`]). The controller's ingress ([`node::ingress`]) accepts
//! clients and carries each connection as one QUIC stream per hop ([`tunnel::hop`],
//! [`tunnel::splice`]) to the target site, which connects only to endpoints it publishes. In
//! `http` mode the target platform's adapter plugin rewrites every request for the target
//! session (AWS SigV4, Azure Shared Key, a Keystone token), with the account's mapped
//! credentials ([`node::accounts`]). The controller records each use's sessions, and rebuilds
//! a tunnel on the next best path when a relay on it dies or the path degrades.
//!
//! Plugins: an operator names a plugin file ([`plugin::PluginSpec`]); the [`plugin::PluginEngine`]
//! compiles and links it; a [`plugin::PluginRegistry`] keeps it by name; callers take an
//! `Arc<Plugin>` and make typed calls ([`plugin::Plugin::score`],
//! [`plugin::Plugin::authorize`], …), each under the plugin's sandbox limits.

#![deny(unsafe_code)]

pub mod mesh;
pub mod netem;
pub mod node;
pub mod path;
pub mod plugin;
pub mod runtime;
pub mod secret;
pub mod tunnel;
