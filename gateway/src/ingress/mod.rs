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
