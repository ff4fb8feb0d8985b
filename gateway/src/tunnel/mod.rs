//! # Tunnels
//!
//! A tunnel carries TCP connections from the controller's ingress along a chosen relay path to
//! an endpoint the target site publishes. Each binding has one QUIC connection from the
//! ingress to the target site, end to end; its packets travel the path labelled, and relays
//! forward them without being able to read them:
//!
//! ```text
//! client ─TCP─ ingress ══ QUIC (mutual TLS, end to end) ══ site ─TCP─ endpoint
//!                  └── label ─ r1 ─ label ─ … ─ rn ─ label ──┘
//! ```
//!
//! How a packet travels: the ingress's QUIC sends to a virtual address standing for the site;
//! its mesh socket ([`crate::mesh::socket`]) looks the address up in the node's label switch
//! ([`crate::mesh::switch`]), puts the tunnel's label in front ([`crate::mesh::label`]) and
//! sends it to the first relay.
//! Each relay's socket finds the label's forwarding entry — installed when the hop's grant was
//! set up — and sends the packet on to the other granted neighbour, unchanged. The site's
//! socket strips the label and hands the packet to its QUIC as coming from the tunnel's
//! virtual address. A re-route sets a new tunnel up and moves the ingress's virtual address
//! onto it, which QUIC at the site sees as its peer migrating: streams carry on.
//!
//! - [`grant`] — what each hop may do, and the controller-signed tokens that prove it (sans-IO).
//! - [`setup`] — the plan of a tunnel's grants and the outcome of its hops' answers (sans-IO).
//! - [`hop`] — a relay's or site's tunnel table: set up and tear down (installing entries in
//!   the switch), and, at the site, the streams of the end-to-end connection.
//! - [`splice`] — moving bytes between two streams with end-to-end backpressure, half-close and
//!   prompt failure.
//!
//! Each client connection is one stream on the binding's end-to-end connection; its first
//! frame ([`crate::mesh::messages::Control::TunnelOpen`]) names the tunnel and presents the
//! site's token, and the answer comes back once the endpoint is connected. The client's first
//! bytes, when it has already sent some, ride in the same flight as `TunnelOpen`, so that a
//! request-response client costs no extra round trip for the setup.

pub mod grant;
pub mod hop;
pub mod setup;
pub mod splice;

pub use grant::{HopGrant, HopKey, Next};
