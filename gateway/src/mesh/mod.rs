//! # The relay mesh protocol
//!
//! How nodes talk: versioned, length-prefixed control frames ([`frame`]) on QUIC streams.
//! The QUIC transport, membership and probing built on it are the relay-mesh issue's next steps.

pub mod frame;
