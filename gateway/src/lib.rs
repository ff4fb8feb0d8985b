//! # skybridge-gateway
//!
//! The Skybridge gateway: the library behind the `skybridge` binary.
//!
//! ## Layout
//!
//! Lower layers first; each imports only from the layers above it in this list (checked by
//! `tests/layering.rs`).
//!
//! - [`time`], [`secret`], [`file`](mod@file), [`shutdown`], [`blocking`], [`runtime`] — one clock,
//!   constant-time secrets, size-capped reads of regular files, one shutdown signal with a
//!   drain, bounded pools for blocking work (plugin calls, store access), the tokio runtime
//!   with its optional idle poll.
//! - [`plugin`] — the WebAssembly plugin host: loads components that implement the worlds of
//!   `wit/plugin.wit` (scorers, authorizers, cloud adapters) and runs them sandboxed, with CPU
//!   deadlines, memory limits, a compile cache and a registry with hot reload.
//! - [`path`] — the path engine, sans-IO, importing nothing of the crate but [`time`]: link
//!   estimators, the link-state graph and its k-shortest paths, nearest-relay choice with
//!   hysteresis, the [`path::Policy`], scored selection through a [`path::PathScorer`], and
//!   the [`path::DecisionRecord`].
//! - [`catalog`] — the service catalog's rules, sans-IO: the capability taxonomy, bounded
//!   service records, and what a platform's report changes in its inventory.
//! - [`mesh`] — the relay mesh protocol: node identities, mutual-TLS QUIC, control frames and
//!   messages (refusals typed: whether a retry can help), membership, probes, framed streams.
//! - [`tunnel`] — the data plane: hop tokens ([`tunnel::grant`]), sans-IO setup planning
//!   ([`tunnel::setup`]), the hop table ([`tunnel::hop`]) and the splice ([`tunnel::splice`]).
//! - [`store`] — durable state behind one interface with typed errors; redb by default.
//! - [`session`] — session translation (DESIGN.md step 6) in one place: accounts, client
//!   credentials, sans-IO request translation, target tokens, session records.
//! - [`discovery`] — at a site: its adapter's discovery conversation with the site's own
//!   cloud, over HTTP, signed with the site's credentials, every answer bounded.
//! - [`controller`] — the controller as small services: the sans-IO mesh view, node
//!   connections, decisions, the policy, accounts, tunnels, bindings.
//! - [`ingress`] — listeners only: bindings' own listeners, the CONNECT proxy, the `http`
//!   proxy that translates sessions.
//! - [`admin`] — the admin API: its request/response types and its server.
//! - [`config`], [`node`] — the nodes' TOML files, and the role runners (controller, relay,
//!   site).
//! - `testkit` (feature `testkit`) — whole local meshes and the user-space link emulator, for
//!   tests, benchmarks and `skybridge demo`; not part of the default API.
//!
//! The `skybridge` command line is its own package (`cli/`), built on this library.
//!
//! The catalog (DESIGN.md step 7) is in [`catalog`] (rules), [`discovery`] and the site's
//! reporter and consent ([`node`]), and the controller's catalog and consent rooms.
//!
//! ## How data flows
//!
//! Relays probe their links and report them; sites probe the relays they know. The controller
//! keeps them in its mesh view ([`controller::view`]): the link-state graph and each platform's
//! nearest relay. A connection request ([`controller::Controller::decide`]) enumerates k paths
//! ([`path::Graph`]), has the first relay probe each end to end ([`mesh::probe`]), scores them
//! with the scorer plugin on the plugin pool ([`path::select`]) and stores the decision
//! ([`store`]).
//!
//! A binding then sets a tunnel up on every hop of the chosen path ([`tunnel::setup`]), each
//! hop with a token the controller signs ([`tunnel::grant`]). The ingress ([`ingress`]) accepts
//! clients and carries each connection as one QUIC stream per hop ([`tunnel::hop`],
//! [`tunnel::splice`]) to the target site, which connects only to endpoints it publishes. In
//! `http` mode the target platform's adapter plugin rewrites every request for the target
//! session (AWS SigV4, Azure Shared Key, a Keystone token), with the account's mapped
//! credentials ([`session`]). The controller records each use's sessions, and rebuilds a
//! tunnel on the next best path when a relay on it dies or the path degrades.
//!
//! Discovery: a site's adapter says which requests to make to the site's cloud
//! ([`discovery`]); the site makes them with its own credentials, checks the services found
//! ([`catalog::validate_report`]) and reports them in pages when its control channel comes
//! up and then periodically; the controller checks them again and writes only what changed
//! into the platform's inventory ([`catalog::plan_full_report`], [`store`]). Each new
//! capability is then put to the offering platform's authorizer (`controller::consent`,
//! `node::consent`); a grant finds or creates the catalog entry by its match key and
//! associates the platform, in one transaction; bindings may then name the capability.
//!
//! Plugins: an operator names a plugin file ([`plugin::PluginSpec`]); the [`plugin::PluginEngine`]
//! compiles and links it; a [`plugin::PluginRegistry`] keeps it by name and reloads it when
//! its file changes; callers take an `Arc<Plugin>` and make typed calls
//! ([`plugin::Plugin::score`], [`plugin::Plugin::authorize`], …), each under the plugin's
//! sandbox limits, on a bounded blocking pool ([`blocking`]).
//!
//! Several controllers (`[store] kind = "etcd"`): the shared state — accounts (sealed), the
//! catalog, kept bindings, the policy — lives in a key-value store ([`store::kv`], etcd through
//! the `skybridge-store-etcd` crate) behind the same [`store::Backend`] ([`store::shared`]);
//! each controller joins the group under a lease ([`controller::group`]), relays and sites keep
//! a session with each ([`node::uplinks`]), and each kept binding has one owner whose epoch
//! every hop checks; survivors take a dead owner's bindings over ([`controller::ownership`],
//! carried out by [`ingress::follow_group`]).
//!
//! Shutdown: a node's tasks hold a [`shutdown::Signal`]; stopping raises it and waits until
//! every task has let go, then closes the store.

#![deny(unsafe_code)]

pub mod admin;
pub mod blocking;
pub mod catalog;
pub mod config;
pub mod controller;
pub mod discovery;
pub mod file;
pub mod ingress;
pub mod mesh;
pub mod metrics;
pub mod node;
pub mod path;
pub mod plugin;
pub mod runtime;
pub mod secret;
pub mod session;
pub mod shutdown;
pub mod store;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod time;
pub mod tunnel;
