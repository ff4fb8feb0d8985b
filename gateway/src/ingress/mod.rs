//! # The ingress: where applications' traffic enters
//!
//! Listeners only; what a binding is, and its tunnel, live in [`crate::controller`].
//!
//! - [`tcp`] — a binding's own listener: each accepted client becomes one tunnel stream
//!   (`tcp` mode) or an HTTP connection served by [`http`] (`http` mode);
//! - [`connect_proxy`] — `CONNECT platform:endpoint` on one shared listener, making a binding
//!   per account and target on first use;
//! - [`http`] — the HTTP reverse proxy of `http` bindings: authenticates each request's
//!   account (from its head wherever the scheme allows: `http_auth`), reads its body within
//!   the buffering budgets, has the target's adapter rewrite it (on the plugin pool), and
//!   carries it over a tunnel stream.
//!
//! Every listener and connection task is spawned with the controller's spawner, so it ends at
//! the controller's shutdown.

pub mod connect_proxy;
pub mod http;
mod http_auth;
pub mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::controller::bindings::Stats;
use crate::controller::{BindError, BindRequest, BindingView, Controller, Mode};
use crate::tunnel::splice::{self, Side};

/// Make a binding on request (`POST /v1/bindings`): check the request, listen, decide the path,
/// set the tunnel up, and serve the listener until the binding ends.
pub async fn bind(
    controller: &Arc<Controller>,
    mut req: BindRequest,
    account: &str,
) -> Result<BindingView, BindError> {
    let mut match_key = None;
    if let Some(capability) = req.capability.clone() {
        if !req.endpoint.is_empty() {
            return Err(BindError::Invalid("give `capability` or `endpoint`, not both".into()));
        }
        let from =
            req.from.clone().or_else(|| controller.ingress_config().platform.clone()).ok_or_else(|| {
                BindError::Invalid("no requesting platform: give `from`, or set `[ingress] platform`".into())
            })?;
        let platform = (!req.to.is_empty()).then(|| req.to.clone());
        let (to, endpoint, entry, key) =
            controller.resolve_capability(&capability, platform.as_deref(), &from).await?;
        (req.to, req.endpoint, req.from, req.capability) = (to, endpoint, Some(from), Some(entry));
        match_key = Some(key);
    } else if req.to.is_empty() {
        return Err(BindError::Invalid("give `to` and `endpoint`, or a `capability`".into()));
    }
    match req.mode {
        Mode::Tcp if req.account.is_some() => {
            return Err(BindError::Invalid(
                "`account` applies to `http` bindings only (a `tcp` binding does not authenticate)".into(),
            ));
        }
        Mode::Tcp => {}
        Mode::Http if controller.adapter(&req.to).is_none() => {
            return Err(BindError::Invalid(format!(
                "no adapter translates sessions for platform {}: add an [[adapter]] with \
                 platform = \"{}\" to the controller's configuration, or use mode `tcp`",
                req.to, req.to
            )));
        }
        Mode::Http => {}
        Mode::Connect => {
            return Err(BindError::Invalid(
                "only `tcp` and `http` bindings can be requested here (CONNECT makes its own)".into(),
            ));
        }
    }
    let listen = req.listen.unwrap_or(SocketAddr::new(controller.ingress_config().address, 0));
    match req.mode {
        Mode::Tcp if !listen.ip().is_loopback() && !req.open => {
            return Err(BindError::Invalid(format!(
                "a `tcp` binding authenticates no one: listening on {} lets every host that \
                 reaches it use the tunnel; say `\"open\": true` (`ctl bind --open`) if that \
                 is meant, or use mode `http`",
                listen.ip()
            )));
        }
        Mode::Http if req.open => {
            return Err(BindError::Invalid("`open` applies to `tcp` bindings only".into()));
        }
        _ => {}
    }
    // Bind first: a busy port should fail before any hop does work.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| BindError::Invalid(format!("cannot listen on {listen}: {e}")))?;
    let listen = listener.local_addr().map_err(|e| BindError::Invalid(e.to_string()))?;
    let (view, cancelled, stats) =
        controller.create_binding(req, account, listen, match_key.as_deref()).await?;
    let span =
        tracing::info_span!("binding", binding = view.id, %listen, to = %view.to, endpoint = %view.endpoint);
    let task = tcp::serve_binding(Arc::clone(controller), listener, view.id, view.mode, cancelled, stats);
    controller.spawner().spawn(tracing::Instrument::instrument(task, span));
    Ok(view)
}

/// Bring back the bindings the previous run kept ([`crate::controller::restore`]): each
/// listens again on its address at once, and its tunnel is set up as soon as the path's
/// nodes are back — tried every second, then up to every 5 s, until it is up, expires, or is
/// given up (`DELETE`). Returns how many are being restored.
pub async fn restore(controller: &Arc<Controller>) -> Result<usize, crate::store::StoreError> {
    if controller.in_group() {
        // The group's bindings are claimed by whichever controller gets there first
        // (`controller::ownership`), not restored by each.
        return Ok(0);
    }
    let kept = controller.bindings_to_restore().await?;
    let count = kept.len();
    for (id, stored) in kept {
        let Some(listen) = stored.request.listen else {
            tracing::warn!(binding = id, "a kept binding without a listener address is given up");
            controller.forget_kept_binding(id).await;
            continue;
        };
        serve_kept(controller, controller.prepare_binding(id), stored, listen);
    }
    Ok(count)
}

/// How often a controller of a group reconciles its bindings with their owners.
const RECONCILE_EVERY: Duration = Duration::from_millis(200);

/// In a group of controllers, until the shutdown: serve the bindings this controller claims
/// (nobody owned them: their owner died), let go of those another controller owns now, and of
/// all of them while its lease is lost ([`crate::controller::ownership`]); close those whose
/// capability was revoked through another controller.
pub async fn follow_group(controller: Arc<Controller>) {
    use crate::controller::ownership::Step;
    let mut round = 0u64;
    loop {
        tokio::time::sleep(RECONCILE_EVERY).await;
        round += 1;
        // Once a second: capabilities revoked through another controller close our bindings.
        if round.is_multiple_of(5) {
            controller.close_revoked_capability_bindings().await;
        }
        // Every 2 s: what this controller serves, for the others' admin API.
        if round.is_multiple_of(10) {
            controller.publish_binding_statuses().await;
        }
        for step in controller.ownership_steps().await {
            match step {
                Step::Claim(id) => {
                    if let Some((prepared, stored, listen)) = controller.claim_kept(id).await {
                        serve_kept(&controller, prepared, stored, listen);
                    }
                }
                Step::LetGo(id) => {
                    let why = if controller.holds_group_lease() {
                        "another controller owns it now"
                    } else {
                        "this controller lost its group lease"
                    };
                    controller.let_binding_go(id, why).await;
                }
                Step::Close(id) => {
                    if controller.unbind(id).await.is_none() {
                        controller.abandon_restore(id).await;
                    }
                }
                Step::Drop(id) => controller.drop_unowned_binding(id).await,
            }
        }
    }
}

/// Serve kept binding `prepared` on `listen` (its own address after a restart; the same port
/// on this controller's address when it takes a group's binding over): listen at once, and set
/// its tunnel up as soon as the path's nodes are there.
pub fn serve_kept(
    controller: &Arc<Controller>,
    prepared: crate::controller::bindings::Prepared,
    stored: crate::controller::restore::StoredBinding,
    listen: SocketAddr,
) {
    controller.restoring(&prepared);
    let id = prepared.id;
    let span = tracing::info_span!("binding", binding = id, to = %stored.request.to, endpoint = %stored.request.endpoint);
    let task = restore_one(Arc::clone(controller), prepared, stored, listen);
    controller.spawner().spawn(tracing::Instrument::instrument(task, span));
}

/// How often a kept binding's tunnel is tried again, at most.
const RESTORE_RETRY_MAX: Duration = Duration::from_secs(5);

async fn restore_one(
    controller: Arc<Controller>,
    prepared: crate::controller::bindings::Prepared,
    stored: crate::controller::restore::StoredBinding,
    listen: SocketAddr,
) {
    let id = prepared.id;
    let expired = || crate::time::now_unix_ms() >= stored.expires_unix_ms;
    let mut wait = Duration::from_secs(1);
    // Its address is the applications': the same port, as soon as it is free.
    let listener = loop {
        match tokio::net::TcpListener::bind(listen).await {
            Ok(listener) => break listener,
            Err(e) if !expired() && controller.is_restoring(id) => {
                tracing::warn!(%listen, "cannot listen again on the binding's address, retrying: {e}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RESTORE_RETRY_MAX);
            }
            Err(_) => {
                controller.abandon_restore(id).await;
                return;
            }
        }
    };
    let mode = stored.request.mode;
    let serve = tcp::serve_binding(
        Arc::clone(&controller),
        listener,
        id,
        mode,
        prepared.cancelled(),
        prepared.stats(),
    );
    controller.spawner().spawn(tracing::Instrument::in_current_span(serve));
    let mut wait = Duration::from_secs(1);
    loop {
        if !controller.is_restoring(id) {
            return; // given up
        }
        if expired() {
            tracing::info!("a kept binding expired before its tunnel came back");
            controller.abandon_restore(id).await;
            return;
        }
        let (req, account) = (stored.request.clone(), stored.account.as_str());
        let opened = controller
            .open_binding(
                &prepared,
                req,
                account,
                listen,
                stored.capability_key.as_deref(),
                stored.expires_unix_ms,
            )
            .await;
        match opened {
            Ok(view) if controller.is_restoring(id) => {
                controller.restore_ended(id);
                tracing::info!(%listen, tunnel = view.tunnel.id, hops = ?view.tunnel.hops, "binding restored");
                return;
            }
            Ok(_) => {
                // Given up while its tunnel was being set up.
                controller.unbind(id).await;
                return;
            }
            Err(e) => {
                tracing::info!("the kept binding's tunnel is not up yet, retrying in {wait:?}: {e}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RESTORE_RETRY_MAX);
            }
        }
    }
}

/// Splice a client with its opened tunnel stream (which already carried `early` bytes of the
/// client's) until either ends or the binding closes; count the bytes; end the session.
pub(crate) async fn carry(
    controller: &Controller,
    session: u64,
    client: Side,
    (send, recv, early): (quinn::SendStream, quinn::RecvStream, u64),
    cancel: tokio::sync::watch::Receiver<bool>,
    stats: &Stats,
) {
    let idle = Duration::from_secs(controller.ingress_config().idle_timeout_s.max(1));
    let (mut moved, ended) = splice::splice(client, Side::Quic(send, recv), cancel, Some(idle)).await;
    moved.a_to_b += early;
    stats.up.fetch_add(moved.a_to_b, std::sync::atomic::Ordering::Relaxed);
    stats.down.fetch_add(moved.b_to_a, std::sync::atomic::Ordering::Relaxed);
    let outcome = match ended {
        Ok(()) => "closed".to_owned(),
        Err(e) => {
            tracing::info!(session, "connection ended: {e}");
            e.to_string()
        }
    };
    controller.end_session(session, moved.a_to_b, moved.b_to_a, outcome);
}
