//! The control messages nodes exchange, carried as [`super::frame`]s on QUIC streams.
//! Every message a node may send is listed here; unknown fields are refused, so a peer that
//! speaks a different dialect is caught at once rather than half-understood.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::identity::Role;
use crate::path::LinkStats;

/// A control message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Control {
    /// Node → controller: join the mesh. Name and role must match the node's certificate.
    Register {
        /// The node's name.
        name: String,
        /// Its role.
        role: Role,
        /// Where it listens for mesh peers (relays).
        listen: Option<SocketAddr>,
    },
    /// Controller → node: registration accepted.
    Registered {
        /// The controller's name.
        controller: String,
        /// How often to heartbeat, ms.
        heartbeat_ms: u64,
        /// The node's key for checking hop tokens ([`crate::tunnel::grant`]), hex. Sent only
        /// over the mutually authenticated control stream; never logged.
        hop_key: String,
    },
    /// Node → controller: still here.
    Heartbeat {
        /// Increasing sequence number.
        seq: u64,
    },
    /// Relay → controller: what its link probes measure.
    LinkReport {
        /// One entry per neighbour.
        links: Vec<LinkReport>,
    },
    /// Controller → relay: probe this route end to end (it starts at the relay) and answer
    /// with [`Control::PathProbed`].
    ProbePath {
        /// The relays, from the one asked to the far end.
        route: Vec<String>,
        /// Probes to send.
        count: u32,
        /// Time between probes, ms.
        interval_ms: u64,
    },
    /// Relay → controller: what the route's probes measured.
    PathProbed {
        /// RTT, jitter and loss over the series.
        stats: LinkStats,
    },
    /// Site → controller: connect my platform to `target`; answered by
    /// [`Control::Connected`] or [`Control::Refused`].
    Connect {
        /// The target platform.
        target: String,
    },
    /// Controller → site: the path decision for a connection request.
    Connected {
        /// The stored decision record.
        connection: Box<crate::node::ConnectionRecord>,
    },
    /// Controller → relay or target site: be a hop of this tunnel. Answered by
    /// [`Control::TunnelReady`] or [`Control::Refused`].
    TunnelSetup {
        /// What the hop may do, signed by `token`.
        grant: crate::tunnel::HopGrant,
        /// The controller's signature of `grant` with this hop's key.
        token: String,
        /// The token to present to the next hop (none at the target site).
        next_token: Option<String>,
    },
    /// Hop → controller: set up.
    TunnelReady {
        /// The tunnel.
        tunnel: u64,
    },
    /// Controller → hop: tear the tunnel down, ending its streams with an error.
    TunnelTeardown {
        /// The tunnel.
        tunnel: u64,
    },
    /// Hop → controller: torn down (`existed` is false if the hop did not know it).
    TunnelClosed {
        /// The tunnel.
        tunnel: u64,
        /// Whether the hop had it.
        existed: bool,
    },
    /// Previous hop → hop, first frame of a tunnel stream: carry this stream on. Answered by
    /// [`Control::TunnelOpened`] once the rest of the path (and the endpoint) is connected, or
    /// by [`Control::Refused`]; the stream's raw bytes follow.
    TunnelOpen {
        /// The tunnel.
        tunnel: u64,
        /// This hop's token, as the controller gave it to the previous hop.
        token: String,
    },
    /// Hop → previous hop: the stream is connected through to the endpoint.
    TunnelOpened,
    /// Either way: the request was refused; the stream closes after this.
    Refused {
        /// Why, for the log.
        reason: String,
    },
}

/// One link as a relay measures it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkReport {
    /// The neighbour relay.
    pub neighbour: String,
    /// Smoothed RTT, jitter, loss.
    pub stats: LinkStats,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::frame::{DEFAULT_MAX_FRAME, FrameDecoder, FrameError, encode};

    #[test]
    fn messages_round_trip_as_frames_and_strangers_are_refused() {
        let messages = vec![
            Control::Register {
                name: "r1".into(),
                role: Role::Relay,
                listen: Some("127.0.0.1:7000".parse().unwrap()),
            },
            Control::Registered { controller: "ctl".into(), heartbeat_ms: 1000, hop_key: "00".into() },
            Control::TunnelOpen { tunnel: 3, token: "ab".into() },
            Control::TunnelOpened,
            Control::Heartbeat { seq: 3 },
            Control::LinkReport {
                links: vec![LinkReport {
                    neighbour: "r2".into(),
                    stats: LinkStats { rtt_ms: Some(12.5), jitter_ms: 0.4, loss: 0.01, samples: 50 },
                }],
            },
            Control::Refused { reason: "no".into() },
        ];
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        for m in &messages {
            d.push(&encode(m, DEFAULT_MAX_FRAME).unwrap());
        }
        for m in &messages {
            assert_eq!(d.decode::<Control>().unwrap().as_ref(), Some(m));
        }
        let json = serde_json::to_string(&Control::Heartbeat { seq: 1 }).unwrap();
        assert_eq!(json, r#"{"type":"heartbeat","seq":1}"#);

        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        d.push(
            &encode(&serde_json::json!({"type": "heartbeat", "seq": 1, "extra": true}), DEFAULT_MAX_FRAME)
                .unwrap(),
        );
        assert!(matches!(d.decode::<Control>(), Err(FrameError::Malformed(_))));
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        d.push(&encode(&serde_json::json!({"type": "teleport"}), DEFAULT_MAX_FRAME).unwrap());
        assert!(matches!(d.decode::<Control>(), Err(FrameError::Malformed(m)) if m.contains("teleport")));
    }
}
