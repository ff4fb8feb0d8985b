//! # The admin API
//!
//! JSON over HTTP/1.1 with a bearer token, served by the controller's role runner on top of
//! the controller (which knows nothing of it).
//!
//! - [`api`] — the request and response types, `Serialize + Deserialize`, shared by the
//!   server and its clients;
//! - [`server`] — the hyper server, its routes and the status each error maps to;
//! - [`client`] — the one client: `skybridge ctl`, the demo and the tests use it.

pub mod api;
pub mod client;
pub mod server;

pub use client::{AdminClient, ClientError};
pub use server::{read_token, serve};
