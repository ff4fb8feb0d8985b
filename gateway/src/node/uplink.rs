//! A relay's or site's session with one controller: register, heartbeat, report what the
//! node's link watchers measure, and serve the controller's requests (path probes, tunnel
//! setup). When the controller goes away the node keeps retrying, so nodes and controller may
//! start in any order and survive each other's restarts. A node configured with a group's
//! controllers runs one uplink per controller ([`super::uplinks`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::config::Peer;
use crate::mesh::identity::Role;
use crate::mesh::messages::{Control, RefusalCode};
use crate::mesh::probe::{ProbePlan, Prober};
use crate::mesh::stream::{Framed, read_frame, write_frame};
use crate::mesh::transport::MeshEndpoint;
use crate::tunnel::HopKey;
use crate::tunnel::hop::HopTable;

use super::consent::SiteConsent;
use super::reporter::Reporter;

/// Wait between attempts to reach the controller.
const RETRY: Duration = Duration::from_secs(1);

/// What the uplink needs to know about its node.
pub struct Uplink {
    /// The node's endpoint (also used to dial the controller).
    pub endpoint: Arc<MeshEndpoint>,
    /// The node's role.
    pub role: Role,
    /// Where the node listens for mesh peers, announced at registration (relays).
    pub listen: Option<SocketAddr>,
    /// The controller.
    pub controller: Peer,
    /// The node's probe hub: its link statistics are reported, its routes probed.
    pub prober: Arc<Prober>,
    /// The node's tunnels, set up and torn down at the controller's request.
    pub tunnels: Arc<HopTable>,
    /// How often to report link statistics.
    pub report_every: Duration,
    /// The node's live controller sessions, this one's among them while it is up.
    pub uplinks: super::uplinks::Uplinks,
    /// A site's reporter, which the controller may ask for a refresh.
    pub reporter: Option<Arc<Reporter>>,
    /// A site's authorization decisions.
    pub consent: Option<Arc<SiteConsent>>,
}

impl Uplink {
    /// Keep a session with the controller up, forever.
    pub async fn run(self) {
        let me = self.endpoint.name().to_owned();
        let mut failures = 0u32;
        loop {
            match self.session().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    // Log the first failure and then every 30th, so a long outage is visible
                    // without flooding the log.
                    if failures.is_multiple_of(30) {
                        tracing::warn!(node = %me, controller = %self.controller.name, "controller session: {e:#}");
                    }
                    failures += 1;
                }
            }
            self.uplinks.down(&self.controller.name);
            tokio::time::sleep(RETRY).await;
        }
    }

    async fn session(&self) -> anyhow::Result<()> {
        let Peer { name, addr } = &self.controller;
        let conn = self.endpoint.connect(*addr, name, &[Role::Controller]).await?;
        let mut control = Framed::new(conn.open_bi().await.context("opening the control stream")?);
        let register =
            Control::Register { name: self.endpoint.name().to_owned(), role: self.role, listen: self.listen };
        control.send(&register).await?;
        let heartbeat_ms = match control.recv().await? {
            Some(Control::Registered { heartbeat_ms, hop_key, .. }) => {
                let key = HopKey::from_hex(&hop_key).context("the controller sent a malformed hop key")?;
                if self.tunnels.set_key(key) {
                    tracing::warn!(
                        node = %self.endpoint.name(), controller = %name,
                        "this controller hands out a different hop key from the one this node had: \
                         tunnels of the other controllers will be refused (controllers that share a \
                         node must be one group, on one etcd)"
                    );
                }
                heartbeat_ms
            }
            Some(Control::Refused { reason, .. }) => bail!("registration refused: {reason}"),
            other => bail!("unexpected answer to registration: {other:?}"),
        };
        tracing::info!(node = %self.endpoint.name(), controller = %name, "registered");
        self.uplinks.up(name, conn.clone());
        let serving = tokio::spawn(serve_requests(
            conn.clone(),
            name.clone(),
            Arc::clone(&self.prober),
            Arc::clone(&self.tunnels),
            self.reporter.clone(),
            self.consent.clone(),
        ));

        let mut heartbeat = tokio::time::interval(Duration::from_millis(heartbeat_ms.clamp(10, 60_000)));
        let mut report = tokio::time::interval(self.report_every);
        let mut seq = 0u64;
        let result = loop {
            tokio::select! {
                _ = heartbeat.tick() => {
                    seq += 1;
                    if let Err(e) = control.send(&Control::Heartbeat { seq }).await { break Err(e) }
                }
                // Periodically, and at once when a neighbour fell silent.
                () = async {
                    tokio::select! { _ = report.tick() => {}, () = self.prober.changed() => {} }
                } => {
                    let links = self.prober.link_reports();
                    if let Err(e) = control.send(&Control::LinkReport { links }).await { break Err(e) }
                }
                reason = conn.closed() => break Err(anyhow::anyhow!("connection lost: {reason}")),
            }
        };
        serving.abort();
        result
    }
}

/// Answer the controller's requests, one stream each: path probes, tunnel setup and teardown,
/// discovery refreshes and authorizations.
async fn serve_requests(
    conn: quinn::Connection,
    controller: String,
    prober: Arc<Prober>,
    tunnels: Arc<HopTable>,
    reporter: Option<Arc<Reporter>>,
    consent: Option<Arc<SiteConsent>>,
) {
    let controller_addr = conn.remote_address();
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let (prober, tunnels, controller) = (Arc::clone(&prober), Arc::clone(&tunnels), controller.clone());
        let (reporter, consent) = (reporter.clone(), consent.clone());
        tokio::spawn(async move {
            let answer = match read_frame(&mut recv, Duration::from_secs(10)).await {
                Ok(Control::ProbePath { route, count, interval_ms }) => {
                    let plan = ProbePlan {
                        count: count.clamp(1, 1000),
                        interval: Duration::from_millis(interval_ms.clamp(1, 1000)),
                        ..ProbePlan::default()
                    };
                    match prober.probe_route(&route, plan).await {
                        Ok(stats) => Control::PathProbed { stats },
                        Err(e) => Control::refused(RefusalCode::Unavailable, e.to_string()),
                    }
                }
                Ok(Control::TunnelSetup { grant, token }) => {
                    let tunnel = grant.tunnel;
                    let now = crate::time::now_unix_ms();
                    // A grant that checks out is put to the site's authorizer, then set up.
                    let checked = tunnels.check(&grant, &token, now);
                    let authorized = match (checked, &consent) {
                        (Ok(()), Some(c)) => c.authorize_tunnel(&grant).await,
                        (checked, _) => checked,
                    };
                    // A neighbour's packets come from where its mesh connection comes from.
                    let neighbour = |name: &str| match name == controller {
                        true => Some(controller_addr),
                        false => prober.peers().connection(name).map(|c| c.remote_address()),
                    };
                    let set_up = |()| tunnels.setup(grant, &token, now, &controller, neighbour);
                    match authorized.and_then(set_up) {
                        Ok(()) => Control::TunnelReady { tunnel },
                        Err(refusal) => refusal.to_control(),
                    }
                }
                Ok(Control::Refresh) => match &reporter {
                    Some(r) => Control::RefreshStarted { already_running: r.request() },
                    None => Control::refused(
                        RefusalCode::NotFound,
                        "this node discovers nothing: configure [cloud] on the site",
                    ),
                },
                Ok(Control::Authorize { request_id, account, capability, service }) => match &consent {
                    Some(c) => match c.decide(&request_id, &account, &capability, &service).await {
                        Ok(consent) => Control::AuthorizationDecided { request_id, consent },
                        Err(e) => Control::refused(RefusalCode::Unavailable, e),
                    },
                    None => Control::refused(RefusalCode::NotFound, "this node decides no authorizations"),
                },
                Ok(Control::ReleaseGrant { request_id }) => match &consent {
                    Some(c) => match c.release(&request_id) {
                        Ok(existed) => Control::GrantReleased { request_id, existed },
                        Err(e) => Control::refused(RefusalCode::Internal, e),
                    },
                    None => Control::refused(RefusalCode::NotFound, "this node decides no authorizations"),
                },
                Ok(Control::TunnelTeardown { tunnel }) => {
                    Control::TunnelClosed { tunnel, existed: tunnels.teardown(tunnel) }
                }
                Ok(other) => Control::refused(
                    RefusalCode::BadRequest,
                    format!("not a request this node serves: {other:?}"),
                ),
                Err(e) => Control::refused(RefusalCode::BadRequest, format!("{e:#}")),
            };
            let _ = write_frame(&mut send, &answer).await;
            let _ = send.finish();
        });
    }
}
