//! # Tunnels
//!
//! A tunnel carries TCP connections from the controller's ingress along a chosen relay path to
//! an endpoint the target site publishes:
//!
//! ```text
//! client ─TCP─ controller ─QUIC stream─ R1 ─QUIC stream─ … ─ Rn ─QUIC stream─ site ─TCP─ endpoint
//!              (binding)                                                   (egress)
//! ```
//!
//! - [`grant`] — what each hop may do, and the controller-signed tokens that prove it (sans-IO).
//! - [`hop`] — a relay's or site's tunnel table: set up, tear down, and carry streams on.
//! - [`splice`] — moving bytes between two streams with end-to-end backpressure, half-close and
//!   prompt failure.
//!
//! Each tunnelled connection is one QUIC stream per hop, on the one QUIC connection each
//! neighbouring pair already keeps; its first frame ([`crate::mesh::messages::Control::TunnelOpen`])
//! names the tunnel and presents the hop's token, and the answer travels back once the whole
//! path, endpoint included, is connected. The client's first bytes, when it has already sent
//! some, ride in the same flight as `TunnelOpen` on every hop, so that a request-response
//! client costs no extra round of packets for the setup.

pub mod grant;
pub mod hop;
pub mod packet;
pub mod setup;
pub mod splice;
pub mod switch;

pub use grant::{HopGrant, HopKey, Next};
