//! # The relay mesh protocol
//!
//! How nodes reach and trust each other:
//!
//! - [`identity`] — a development CA and node certificates carrying each node's name and role
//!   (`skybridge certs init | issue`);
//! - [`tls`] — mutual TLS 1.3 whose verifiers check the CA, the node name and the role, so a
//!   foreign certificate or a wrong role fails the handshake;
//! - [`transport`] — QUIC endpoints (quinn) with that TLS;
//! - [`socket`] — the endpoints' UDP socket, which also carries tunnels' labelled packets:
//!   forwarded on, unread, at relays; handed to QUIC at a tunnel's two ends;
//! - [`label`] — the labelled packet format and virtual addresses (sans-IO);
//! - [`switch`] — forwarding entries and tunnel ends: where each labelled packet goes (sans-IO);
//! - [`frame`] — versioned, length-prefixed control frames on QUIC streams;
//! - [`messages`] — the control messages themselves;
//! - [`liveness`] — a connection whose peer fell silent (killed, blackholed) is closed within
//!   half a second, so its streams fail and its paths are avoided at once;
//! - [`membership`] — the controller's table of registered nodes, up or down (sans-IO);
//! - [`peers`] — a node's mesh connections by peer name, shared by probes and tunnel hops;
//! - [`stream`] — control frames on QUIC streams: framed request/answer, single frames;
//! - [`probe`] — RTT/loss/jitter probes over QUIC datagrams: link probes, and source-routed
//!   path probes that relays forward along a candidate path and back.
//!
//! The node roles that drive these are in [`crate::node`].

pub mod frame;
pub mod identity;
pub mod label;
pub mod liveness;
pub mod membership;
pub mod messages;
pub mod peers;
pub mod probe;
pub mod socket;
pub mod stream;
pub mod switch;
pub mod tls;
pub mod transport;
