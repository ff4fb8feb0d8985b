//! Node connections: relays and sites connect over mutual-TLS QUIC, register on a control
//! stream (name and role must match their certificate), then heartbeat and report their links
//! on it; sites also open request streams (connection requests). The mesh view is updated
//! from all of it; a node whose connection ends is down at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Controller;
use super::events::{Event, Events};
use super::view::MeshView;
use crate::mesh::identity::Role;
use crate::mesh::liveness;
use crate::mesh::membership::MembershipEvent;
use crate::mesh::messages::{Control, RefusalCode};
use crate::mesh::stream::Framed;
use crate::mesh::transport::{MeshEndpoint, peer_name};
use crate::shutdown::Signal;

/// The mesh view and the live connection of every registered node.
pub struct Nodes {
    view: Mutex<MeshView>,
    conns: Mutex<HashMap<String, quinn::Connection>>,
}

impl Nodes {
    /// Nodes seen through `view`, none connected yet.
    pub fn new(view: MeshView) -> Nodes {
        Nodes { view: Mutex::new(view), conns: Mutex::new(HashMap::new()) }
    }

    /// The mesh view, locked (keep the guard short: no `.await` while holding it).
    pub fn view(&self) -> MutexGuard<'_, MeshView> {
        super::lock(&self.view)
    }

    /// The live QUIC connection with a registered node.
    pub fn connection(&self, node: &str) -> Option<quinn::Connection> {
        super::lock(&self.conns).get(node).filter(|c| c.close_reason().is_none()).cloned()
    }

    /// Drop every node connection (at shutdown, after the endpoint closed them).
    pub fn forget_connections(&self) {
        super::lock(&self.conns).clear();
    }

    /// Whether a registered node is up.
    pub fn is_up(&self, node: &str) -> bool {
        self.view().is_up(node)
    }

    /// Mark silent nodes down at `now`.
    pub fn poll(&self, now: Instant, events: &Events) {
        let happened = self.view().membership_mut().poll(now);
        publish(&happened, events);
    }
}

/// Log membership changes and publish them.
fn publish(happened: &[MembershipEvent], events: &Events) {
    for e in happened {
        tracing::info!("membership: {e:?}");
        events.publish(Event::from(e));
    }
}

/// Accept node connections until the shutdown signal.
pub(super) async fn accept(controller: Arc<Controller>, endpoint: Arc<MeshEndpoint>, mut signal: Signal) {
    loop {
        let accepted = tokio::select! {
            a = endpoint.accept() => a,
            () = signal.recv() => return,
        };
        let Some((conn, role)) = accepted else { return };
        signal.spawn(Arc::clone(&controller).serve_node(conn, role));
    }
}

impl Controller {
    /// Serve one node connection: its control stream (registration, heartbeats, reports) and
    /// any request streams it opens (sites' connection requests).
    async fn serve_node(self: Arc<Self>, conn: quinn::Connection, role: Role) {
        let remote = conn.remote_address();
        let Some(name) = peer_name(&conn) else {
            conn.close(1u32.into(), b"certificate carries no node name");
            return;
        };
        let span = tracing::info_span!("node", node = %name, %role, %remote);
        // A node that falls silent (killed, cut off) is closed, hence down, at once rather than
        // after `down_after_ms` without heartbeats: its tunnels re-route, their streams end.
        let silent_after = Duration::from_millis(self.nodes.view().membership().config().silent_after_ms);
        let watch = {
            let conn = conn.clone();
            async move {
                if let Some(silent) = liveness::watch(&conn, silent_after).await {
                    let silent_ms = silent.as_millis() as u64;
                    tracing::warn!(silent_ms, "node fell silent: connection closed, node down");
                }
            }
        };
        tokio::spawn(tracing::Instrument::instrument(watch, span.clone()));
        let mut registered = false;
        while let Ok(stream) = conn.accept_bi().await {
            let mut stream = Framed::new(stream);
            let first = match stream.recv().await {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(parent: &span, "bad control frame: {e:#}");
                    stream.refuse(RefusalCode::BadRequest, &format!("{e:#}")).await;
                    continue;
                }
            };
            match first {
                Control::Register { name: claimed, role: claimed_role, listen } if !registered => {
                    if claimed != name || claimed_role != role {
                        let reason = format!(
                            "registration as {claimed_role} `{claimed}` does not match the certificate ({role} `{name}`)"
                        );
                        tracing::warn!(parent: &span, "{reason}");
                        stream.refuse(RefusalCode::Forbidden, &reason).await;
                        conn.close(2u32.into(), b"identity mismatch");
                        return;
                    }
                    // One live connection per node name. A second one is a double start or a
                    // copied key: taking it would send new tunnels to the impostor, and leave
                    // the real node shown up but unreachable once the impostor left. A node
                    // that restarted waits until its old connection times out (5 s).
                    let taken = {
                        let mut conns = super::lock(&self.nodes.conns);
                        let live = conns
                            .get(&name)
                            .filter(|c| c.close_reason().is_none() && c.stable_id() != conn.stable_id())
                            .map(quinn::Connection::remote_address);
                        if live.is_none() {
                            conns.insert(name.clone(), conn.clone());
                        }
                        live
                    };
                    if let Some(from) = taken {
                        let reason = format!(
                            "node `{name}` is already connected (from {from}); a second connection with its \
                             name is refused until that one ends"
                        );
                        tracing::warn!(parent: &span, "registration refused: {reason}");
                        stream.refuse(RefusalCode::Forbidden, &reason).await;
                        conn.close(2u32.into(), b"already connected");
                        return;
                    }
                    let (registered_now, heartbeat_ms) = {
                        let mut view = self.nodes.view();
                        let m = view.membership_mut();
                        (m.register(&name, role, listen, Instant::now()), m.config().heartbeat_ms)
                    };
                    match registered_now {
                        Ok(happened) => publish(&happened, &self.events),
                        Err(e) => {
                            tracing::warn!(parent: &span, "registration refused: {e}");
                            stream.refuse(RefusalCode::Forbidden, &e.to_string()).await;
                            conn.close(2u32.into(), b"registration refused");
                            return;
                        }
                    }
                    let registered_msg = Control::Registered {
                        controller: self.name.clone(),
                        heartbeat_ms,
                        hop_key: self.tunnels.hop_key(&name).to_hex(),
                    };
                    if stream.send(&registered_msg).await.is_err() {
                        return;
                    }
                    registered = true;
                    let this = Arc::clone(&self);
                    self.spawner.spawn(this.control_stream(
                        name.clone(),
                        role,
                        stream,
                        conn.clone(),
                        span.clone(),
                    ));
                }
                Control::Connect { target } if registered && role == Role::Site => {
                    let this = Arc::clone(&self);
                    let from = name.clone();
                    self.spawner.spawn(async move {
                        match this.decide(&from, &target).await {
                            Ok(record) => {
                                let _ = stream.send(&Control::Connected { decision: Box::new(record) }).await;
                                stream.finish();
                            }
                            Err(e) => {
                                let code = match &e {
                                    super::ConnectError::UnknownPlatform { .. } => RefusalCode::NotFound,
                                    super::ConnectError::Unavailable(_) => RefusalCode::Unavailable,
                                    _ => RefusalCode::Internal,
                                };
                                stream.refuse(code, &e.to_string()).await
                            }
                        }
                    });
                }
                Control::Revoke { request_id, reason } if registered && role == Role::Site => {
                    let this = Arc::clone(&self);
                    let from = name.clone();
                    self.spawner.spawn(async move {
                        let answer = match this.revoke(&from, &request_id, &reason).await {
                            Ok(existed) => Control::Revoked { request_id, existed },
                            Err(e) => Control::refused(e.code(), e.to_string()),
                        };
                        let _ = stream.send(&answer).await;
                        stream.finish();
                    });
                }
                first @ (Control::ReportPage { .. } | Control::DiscoveryFailed { .. })
                    if registered && role == Role::Site =>
                {
                    let this = Arc::clone(&self);
                    self.spawner.spawn(this.receive_report(name.clone(), first, stream));
                }
                other => {
                    let reason = if registered {
                        format!("unexpected request {other:?}")
                    } else {
                        "register first".to_owned()
                    };
                    stream.refuse(RefusalCode::BadRequest, &reason).await;
                }
            }
        }
        // The node's connection is gone: it is down now, not after a heartbeat timeout (unless
        // it already reconnected on another connection).
        let mut conns = super::lock(&self.nodes.conns);
        if conns.get(&name).is_some_and(|c| c.stable_id() == conn.stable_id()) {
            conns.remove(&name);
            drop(conns);
            let happened = self.nodes.view().membership_mut().disconnected(&name, Instant::now());
            publish(&happened, &self.events);
        }
    }

    /// The registered node's control stream: heartbeats and link reports until it ends.
    async fn control_stream(
        self: Arc<Self>,
        name: String,
        role: Role,
        mut stream: Framed,
        conn: quinn::Connection,
        span: tracing::Span,
    ) {
        loop {
            match stream.recv().await {
                Ok(Some(Control::Heartbeat { .. })) => {
                    if let Ok(happened) = self.nodes.view().membership_mut().heartbeat(&name, Instant::now())
                    {
                        publish(&happened, &self.events);
                    }
                }
                Ok(Some(Control::LinkReport { links })) => {
                    let now = Instant::now();
                    let mut view = self.nodes.view();
                    if let Ok(happened) = view.membership_mut().heartbeat(&name, now) {
                        publish(&happened, &self.events);
                    }
                    if let Some((from, to)) = view.on_link_report(&name, role, links, now) {
                        self.events.publish(Event::NearestRelay { platform: name.clone(), from, to });
                    }
                }
                Ok(Some(other)) => {
                    tracing::warn!(parent: &span, "unexpected message on the control stream: {other:?}");
                    stream.refuse(RefusalCode::BadRequest, "unexpected message on the control stream").await;
                    conn.close(3u32.into(), b"protocol error");
                    return;
                }
                Ok(None) => return,
                Err(_) if conn.close_reason().is_some() => {
                    tracing::info!(parent: &span, reason = ?conn.close_reason(), "node disconnected");
                    return;
                }
                Err(e) => {
                    tracing::warn!(parent: &span, "control stream closed: {e:#}");
                    stream.refuse(RefusalCode::BadRequest, &format!("{e:#}")).await;
                    conn.close(3u32.into(), b"protocol error");
                    return;
                }
            }
        }
    }
}
