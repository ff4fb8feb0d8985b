//! # The admin API
//!
//! JSON over HTTP/1.1 with a bearer token, served by the controller's role runner on top of
//! the controller (which knows nothing of it).
//!
//! - [`api`] — the request and response types, `Serialize + Deserialize`, shared by the
//!   server and its clients;
//! - [`routes`] — the table of routes the server dispatches by, and [`openapi`] — the OpenAPI
//!   document generated from it and the types' schemas;
//! - [`server`] — the hyper server and the status each error maps to;
//! - [`events`] — the live event stream (server-sent events);
//! - [`ui`] — the dashboard's page, script and style, embedded;
//! - [`client`] — the one client: `skybridge ctl`, the demo and the tests use it.

pub mod api;
pub mod client;
pub mod events;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod ui;

pub use client::{AdminClient, ClientError};
pub use server::{read_token, serve};
