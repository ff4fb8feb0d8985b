//! Carrying a client over a binding: a stream onto the binding's current tunnel (the new one
//! when its path just died), and the session record of each use.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bindings::{ActiveSlot, REROUTE_WAIT, Stats};
use super::carriers::CarrierLease;
use super::tunnels::TunnelRecord;
use super::{Controller, lock};
use crate::session::records::{FirstSession, SecondSession, SessionRecord, ThirdSession};
use crate::time::now_unix_ms;

/// How long after a stream failed to open the controller may take to learn that the path is
/// dead (a relay closes a silent link after 0.5 s, then reports it).
pub const PATH_NOTICE: Duration = Duration::from_millis(1500);

impl Controller {
    /// Open a stream of binding `id`'s tunnel at its first hop, sending the client's `early`
    /// bytes with the opening frame, and count it against the binding's connection limit (the
    /// returned slot frees it when dropped).
    pub async fn open_stream(
        &self,
        id: u64,
        stats: &Arc<Stats>,
        early: bytes::Bytes,
    ) -> anyhow::Result<(quinn::SendStream, quinn::RecvStream, ActiveSlot)> {
        let max = self.ingress.max_connections;
        let mut slot = ActiveSlot::take(stats, max)
            .ok_or_else(|| anyhow::anyhow!("binding {id} already carries {max} connections"))?;
        let tunnel = self.live_tunnel(id).await?;
        let (send, recv, lease) = match self.open_on(id, &tunnel, early.clone()).await {
            Ok(opened) => opened,
            // A relay on the path may have found a link dead an instant before its report
            // reached us: if the path turns out dead, take the new one (once).
            Err(e) => match self.replacement(id, tunnel.id).await {
                Some(new) => self.open_on(id, &new, early).await?,
                None => return Err(e),
            },
        };
        slot.carried_by(lease);
        Ok((send, recv, slot))
    }

    /// Open a stream of binding `id` on `tunnel`, on the binding's end-to-end connection.
    async fn open_on(
        &self,
        id: u64,
        tunnel: &TunnelRecord,
        early: bytes::Bytes,
    ) -> anyhow::Result<(quinn::SendStream, quinn::RecvStream, CarrierLease)> {
        let early = if early.is_empty() { Vec::new() } else { vec![early] };
        let lease = self.carrier(id, tunnel).await.map_err(|e| e.context(format!("tunnel {}", tunnel.id)))?;
        let (send, recv) =
            crate::tunnel::hop::open(lease.connection(), tunnel.id, tunnel.site_token.clone(), early)
                .await
                .map_err(|e| {
                e.context(format!("tunnel {} to {}", tunnel.id, tunnel.hops.last().map_or("?", |s| s)))
            })?;
        Ok((send, recv, lease))
    }

    /// After a stream failed to open on tunnel `old` of binding `id`: the binding's new tunnel
    /// if, within [`PATH_NOTICE`], its path is found dead or a re-route starts, and the re-route
    /// then completes within [`REROUTE_WAIT`]; `None` when the path still looks fine (the
    /// failure was something else: the caller reports it) or no new tunnel came.
    async fn replacement(&self, id: u64, old: u64) -> Option<TunnelRecord> {
        let started = Instant::now();
        loop {
            // Registered before looking, so that a re-route ending in between still wakes us.
            let rerouted = self.bindings.rerouted();
            let (tunnel, rerouting) = self.bindings.tunnel(id)?;
            if tunnel.id != old {
                return Some(tunnel);
            }
            let now = Instant::now();
            let dead = self.nodes.view().path_problem(&tunnel.hops, 1.0, now).is_some_and(|p| p.dead);
            let waited = now.duration_since(started);
            if (!(rerouting || dead) && waited >= PATH_NOTICE) || waited >= PATH_NOTICE + REROUTE_WAIT {
                return None;
            }
            tokio::select! {
                () = rerouted => {}
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// Binding `id`'s tunnel — once re-routed, if its path is dead or a re-route is running
    /// (waiting at most [`REROUTE_WAIT`]), so that a client arriving just after a relay died
    /// is carried by the new path instead of refused.
    async fn live_tunnel(&self, id: u64) -> anyhow::Result<TunnelRecord> {
        let deadline = Instant::now() + REROUTE_WAIT;
        loop {
            // Registered before looking, so that a re-route ending in between still wakes us.
            let rerouted = self.bindings.rerouted();
            let (tunnel, rerouting) =
                self.bindings.tunnel(id).ok_or_else(|| anyhow::anyhow!("binding {id} closed"))?;
            let now = Instant::now();
            let dead = || self.nodes.view().path_problem(&tunnel.hops, 1.0, now).is_some_and(|p| p.dead);
            if now >= deadline || !(rerouting || dead()) {
                return Ok(tunnel);
            }
            // The tick starts a re-route within 100 ms of the path dying; look again then.
            tokio::select! {
                () = rerouted => {}
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// Record the start of a use of binding `id` by the client at `client`, for `who`: an
    /// account and its principal at the target, when the caller already knows them (else the
    /// tunnel's account, and its principal is looked up). Returns the session id.
    pub async fn start_session(
        &self,
        id: u64,
        client: SocketAddr,
        ingress: SocketAddr,
        who: Option<(&str, &str)>,
    ) -> u64 {
        let view = self.bindings.get(id);
        let session = lock(&self.sessions).next_id();
        let Some(view) = view else { return session };
        self.recorded.sessions.inc(&[view.mode.as_str()]);
        let (account, principal) = match who {
            Some((account, principal)) => (account.to_owned(), Some(principal.to_owned())),
            // The operator (the admin token) is no account and maps to nothing: no look-up.
            None if view.tunnel.account == crate::session::accounts::OPERATOR => {
                (view.tunnel.account.clone(), None)
            }
            None => {
                let account = view.tunnel.account.clone();
                let principal = match self.credentials(&account, &view.to).await {
                    Ok(c) => c.map(|c| c.principal),
                    Err(e) => {
                        tracing::warn!(binding = id, "cannot look up the account's principal: {e}");
                        None
                    }
                };
                (account, principal)
            }
        };
        let record = SessionRecord {
            id: session,
            account,
            binding: id,
            first: FirstSession { client, ingress },
            second: SecondSession { tunnel: view.tunnel.id, hops: view.tunnel.hops.clone() },
            third: ThirdSession {
                platform: view.to.clone(),
                endpoint: view.endpoint.clone(),
                principal,
                token_expires_unix_s: None,
            },
            started_unix_ms: now_unix_ms(),
            ended_unix_ms: None,
            bytes_up: 0,
            bytes_down: 0,
            outcome: None,
        };
        lock(&self.sessions).push(record);
        session
    }

    /// Record the end of session `id`.
    pub fn end_session(&self, id: u64, up: u64, down: u64, outcome: String) {
        lock(&self.sessions).end(id, up, down, outcome, now_unix_ms());
    }

    /// Record that session `id` carried a target token expiring at `expires_unix_s`.
    pub fn note_session_token(&self, id: u64, expires_unix_s: u64) {
        lock(&self.sessions).note_token(id, expires_unix_s);
    }

    /// Recent sessions, newest first.
    pub fn sessions(&self) -> Vec<SessionRecord> {
        lock(&self.sessions).newest_first()
    }
}
