//! # The relay mesh protocol
//!
//! How nodes reach and trust each other:
//!
//! - [`identity`] — a development CA and node certificates carrying each node's name and role
//!   (`skybridge certs init | issue`);
//! - [`tls`] — mutual TLS 1.3 whose verifiers check the CA, the node name and the role, so a
//!   foreign certificate or a wrong role fails the handshake;
//! - [`transport`] — QUIC endpoints (quinn) with that TLS;
//! - [`frame`] — versioned, length-prefixed control frames on QUIC streams;
//! - [`probe`] — RTT/loss/jitter probes over QUIC datagrams.
//!
//! Membership, heartbeats and probing built on these are the relay-mesh issue's next steps.

pub mod frame;
pub mod identity;
pub mod probe;
pub mod tls;
pub mod transport;
