//! The control messages nodes exchange, carried as [`super::frame`]s on QUIC streams.
//! Every message a node may send is listed here; unknown fields are refused, so a peer that
//! speaks a different dialect is caught at once rather than half-understood.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::identity::Role;
use crate::catalog::{CapabilityInfo, Consent, ReportSummary, ServiceInfo, Trigger};
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
        decision: Box<crate::path::DecisionRecord>,
    },
    /// Controller → relay or target site: be a hop of this tunnel. Answered by
    /// [`Control::TunnelReady`] or [`Control::Refused`].
    TunnelSetup {
        /// What the hop may do, signed by `token`.
        grant: HopGrant,
        /// The controller's signature of `grant` with this hop's key.
        token: String,
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
    /// Ingress → site, first frame of a stream on a binding's end-to-end connection: carry
    /// this stream to the tunnel's endpoint. Answered by [`Control::TunnelOpened`] once the
    /// endpoint is connected, or by [`Control::Refused`]; the stream's raw bytes follow.
    TunnelOpen {
        /// The tunnel.
        tunnel: u64,
        /// The site's token for the tunnel.
        token: String,
    },
    /// Site → ingress: the stream is connected through to the endpoint.
    TunnelOpened,
    /// Site → controller, on a stream of its own: one page of a full report of the platform's
    /// services; the pages follow each other on the stream, the last with `last` set. The
    /// controller integrates the report after the last page and answers
    /// [`Control::ReportIntegrated`] or [`Control::Refused`].
    ReportPage {
        /// The platform reported on: must be the sender's own.
        platform: String,
        /// Why the site discovered.
        trigger: Trigger,
        /// Page number, from 0.
        page: u32,
        /// Whether this is the last page.
        last: bool,
        /// The services on this page.
        services: Vec<ServiceInfo>,
        /// Native ids the cloud says are gone (withdrawn at once), on any page.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        gone: Vec<String>,
        /// Requests the site made to its cloud (on the last page).
        requests: usize,
        /// How long discovery took, ms (on the last page).
        discovery_ms: u64,
    },
    /// Site → controller: discovery failed, so there is no report (answered like a report).
    DiscoveryFailed {
        /// The platform: must be the sender's own.
        platform: String,
        /// Why the site discovered.
        trigger: Trigger,
        /// Why it failed.
        reason: String,
    },
    /// Controller → site: the report was integrated (or, for a failure, recorded).
    ReportIntegrated {
        /// What it changed.
        summary: ReportSummary,
    },
    /// Controller → site: discover now. Answered by [`Control::RefreshStarted`].
    Refresh,
    /// Site → controller: a refresh runs now.
    RefreshStarted {
        /// Whether one was already running, which this request joined.
        already_running: bool,
    },
    /// Controller → site: may `capability`, offered by the platform's `service`, be used for
    /// `account`? Answered by [`Control::AuthorizationDecided`]. `request_id` is the
    /// idempotency key: asked again with the same id, the site answers the decision it recorded.
    Authorize {
        /// The idempotency key.
        request_id: String,
        /// The account it is asked for.
        account: String,
        /// The capability, as the platform's adapter selected it.
        capability: CapabilityInfo,
        /// The service offering it.
        service: Box<ServiceInfo>,
    },
    /// Site → controller: the platform's decision.
    AuthorizationDecided {
        /// The request it answers.
        request_id: String,
        /// Grant, refuse, or pending.
        consent: Consent,
    },
    /// Controller → site: the controller gave up on this request (it expired); a grant the
    /// site recorded for it is released. Answered by [`Control::GrantReleased`].
    ReleaseGrant {
        /// The request.
        request_id: String,
    },
    /// Site → controller: released (`existed`: the site had recorded a grant for it).
    GrantReleased {
        /// The request.
        request_id: String,
        /// Whether there was a recorded grant.
        existed: bool,
    },
    /// Site → controller: the platform revokes a grant (its authorizer now refuses it). The
    /// controller removes the capability's association and closes the bindings made for it.
    /// Answered by [`Control::Revoked`].
    Revoke {
        /// The authorization request that was granted.
        request_id: String,
        /// Why.
        reason: String,
    },
    /// Controller → site: done (`existed`: there was a grant to revoke).
    Revoked {
        /// The request.
        request_id: String,
        /// Whether a grant was revoked.
        existed: bool,
    },
    /// Either way: the request was refused; the stream closes after this.
    Refused {
        /// What kind of refusal.
        code: RefusalCode,
        /// Whether the same request may succeed if sent again shortly.
        retry: bool,
        /// Why, for the log.
        reason: String,
    },
}

impl Control {
    /// A refusal of kind `code`; a retry may help exactly when the code says so.
    pub fn refused(code: RefusalCode, reason: impl Into<String>) -> Control {
        Control::Refused { code, retry: code.retry_may_help(), reason: reason.into() }
    }
}

/// What kind of refusal a [`Control::Refused`] is, so that the asker can decide what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RefusalCode {
    /// This node is not ready for it yet (not registered, no hop key): try again shortly.
    NotReady,
    /// The request is malformed, unexpected here, or out of order.
    BadRequest,
    /// The asker may not do this: identity, token or grant do not check out.
    Forbidden,
    /// The platform's authorizer refused the account what it asked for.
    Denied,
    /// What was asked for does not exist here: an unknown tunnel, an unpublished endpoint, an
    /// unknown platform.
    NotFound,
    /// The mesh cannot serve it now (no path, a node down); it may later.
    Unavailable,
    /// This node failed.
    Internal,
}

impl RefusalCode {
    /// Whether the same request may succeed if sent again shortly.
    pub fn retry_may_help(self) -> bool {
        matches!(self, RefusalCode::NotReady | RefusalCode::Unavailable)
    }
}

/// A peer's refusal as an error, for callers that must tell a transient refusal from a
/// permanent one (it is what [`crate::mesh::stream::request`] fails with on a refusal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    /// The kind.
    pub code: RefusalCode,
    /// Whether a retry may help.
    pub retry: bool,
    /// Why.
    pub reason: String,
}

impl Refusal {
    /// A refusal of kind `code`.
    pub fn new(code: RefusalCode, reason: impl Into<String>) -> Refusal {
        Refusal { code, retry: code.retry_may_help(), reason: reason.into() }
    }

    /// As a message to send.
    pub fn to_control(&self) -> Control {
        Control::Refused { code: self.code, retry: self.retry, reason: self.reason.clone() }
    }
}

/// Where a hop sends the tunnel's traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Next {
    /// On to the next node of the path.
    Node(String),
    /// Out to this endpoint, which the node (the target site) publishes.
    Endpoint(String),
}

/// What one hop of a tunnel may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HopGrant {
    /// The tunnel.
    pub tunnel: u64,
    /// The node this grant is for.
    pub hop: String,
    /// The only node that may open the tunnel's streams at this hop.
    pub prev: String,
    /// Where this hop sends them.
    pub next: Next,
    /// The account the tunnel carries traffic for.
    pub account: String,
    /// When the grant expires (Unix time, ms).
    pub expires_unix_ms: u64,
    /// On the target site's grant of a binding made by capability: that capability's match
    /// key (`kind/name`), which the site's authorizer decides on instead of the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// For a binding of a group of controllers: which binding, and its owner's epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<Fence>,
    /// On the target site's grant of a re-routed binding's new tunnel: the tunnel it replaces.
    /// The streams under way on that one carry on (end to end, they move to the new path),
    /// and end only when neither tunnel is set up any more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<u64>,
}

/// A binding's owner epoch in a group of controllers: the revision at which its current
/// owner claimed it (it only grows). A hop refuses grants for the binding with an older epoch
/// than the newest it has seen, and drops the binding's tunnels of older epochs when a newer
/// one arrives — so a controller that lost a binding cannot keep carrying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fence {
    /// The binding.
    pub binding: u64,
    /// Its owner's epoch.
    pub epoch: u64,
}

/// One link as a relay measures it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkReport {
    /// The neighbour relay.
    pub neighbour: String,
    /// Smoothed RTT, jitter, loss.
    pub stats: LinkStats,
    /// The neighbour fell silent and its connection was closed (see `mesh::liveness`): the
    /// link is down whatever the other end last reported.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub silent: bool,
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
                    silent: false,
                }],
            },
            Control::refused(RefusalCode::NotFound, "no"),
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
