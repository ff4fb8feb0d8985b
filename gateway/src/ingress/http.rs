//! `http` bindings: a reverse proxy (HTTP/1.1 and HTTP/2 with prior knowledge, hyper) that
//! translates each request into the target session (DESIGN.md step 6).
//!
//! For each request:
//!
//! ```text
//! client ──request head──▶ who it is (`http_auth`): HTTP Basic checked now, or the account
//!       a native signature claims (SigV4, Shared Key) — a stranger's body is never read
//!   ──▶ read the body (≤ max_http_body_mib; its length reserved in the binding's and the
//!       ingress's buffering budgets first; hashed if the adapter wants it)
//!   ──▶ a native signature verified over head and body (`verify-client`), not a replay
//!   ──▶ the account's credentials at the target platform (`ctl account map`)
//!   ──▶ adapter `rewrite-request` (re-sign, inject a token, fix Host)
//!   ──▶ a new tunnel stream, HTTP/1.1 to the endpoint ──▶ response streamed back
//! ```
//!
//! Every adapter call runs on the controller's plugin pool, never on an async worker: a call
//! may take up to the adapter's CPU deadline. The conversions are pure and live in
//! [`crate::session::translate`].
//!
//! Every request is one session record (three sessions, bytes both ways). Refusals are plain
//! text with a status the client can act on: 401 no or unknown credentials, 403 a signature
//! that does not verify (or replayed from another address), an account without a mapping, or
//! a binding reserved for another account, 408 a body that does not arrive in time, 413 a
//! body over the limit, 429 too many failed proofs (`Retry-After`), 503 no room in the
//! buffering budget within 10 s (`Retry-After`), 502 the tunnel or the adapter failed; the reason is
//! also in an `x-skybridge-error` header, for SDKs that parse error bodies. Errors from the
//! target itself (moto's 403, say) are passed through unchanged.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use tokio::sync::OwnedSemaphorePermit;

use super::http_auth::{self, Identified};
use crate::controller::bindings::{ActiveSlot, Stats};
use crate::controller::budget;
use crate::controller::{Controller, Mode};
use crate::plugin::{CallError, CallFailure, Description, Plugin, adapting, types};
use crate::session::tokens::CachedToken;
use crate::session::translate::{Refusal, hop_by_hop, request_head, upstream_request};
use crate::time::now_unix_ms;
use crate::tunnel::splice::Activity;

type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// How long an `http` binding's client has to send a request head (also bounds idle
/// keep-alive connections).
const HTTP_HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request waits for room in the buffering budgets before it is answered 503.
const BUDGET_WAIT: Duration = Duration::from_secs(10);
/// HTTP/2 streams one client connection may have open: each may buffer a body, and all of
/// them share the binding's budget.
const H2_MAX_STREAMS: u32 = 32;

/// A refusal as the client sees it.
fn refusal_response(refusal: Refusal) -> Response<ProxyBody> {
    let mut response = Response::new(full(format!("skybridge: {}\n", refusal.reason)));
    *response.status_mut() = refusal.status;
    let headers = response.headers_mut();
    headers.insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    // The reason in a header too: SDKs that parse error bodies as XML or JSON drop ours,
    // but expose response headers.
    if let Ok(reason) = HeaderValue::from_str(&refusal.reason) {
        headers.insert(HeaderName::from_static("x-skybridge-error"), reason);
    }
    if refusal.status == StatusCode::UNAUTHORIZED {
        headers
            .insert(hyper::header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"skybridge\""));
    }
    if let Some(seconds) = refusal.retry_after_s {
        headers.insert(hyper::header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn full(text: String) -> ProxyBody {
    Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed_unsync()
}

/// What a request needs to know of its binding.
struct Target {
    to: String,
    account: Option<String>,
    adapter: Arc<Plugin>,
    needs_body_sha256: bool,
}

/// Run an adapter call on the plugin pool.
pub(super) async fn adapter_call<R: Send + 'static>(
    controller: &Controller,
    call: impl FnOnce() -> Result<R, CallError> + Send + 'static,
) -> Result<Result<R, CallError>, Refusal> {
    controller
        .plugin_calls()
        .run(call)
        .await
        .map_err(|e| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, format!("adapter call: {e}")))
}

/// Serve one client connection of `http` binding `id` until it closes or the binding does.
pub(super) async fn serve(
    controller: Arc<Controller>,
    id: u64,
    client: tokio::net::TcpStream,
    remote: SocketAddr,
    mut cancel: watch::Receiver<bool>,
    stats: Arc<Stats>,
) {
    let ingress = client.local_addr().unwrap_or(remote);
    let this = Arc::clone(&controller);
    let service = hyper::service::service_fn(move |req| {
        let (this, stats) = (Arc::clone(&this), Arc::clone(&stats));
        let span = tracing::info_span!(
            "request",
            method = %req.method(),
            path = %req.uri().path(),
            account = tracing::field::Empty,
            session = tracing::field::Empty,
        );
        let served = async move {
            let response = match proxy(&this, id, remote, ingress, req, &stats).await {
                Ok(response) => response,
                Err(refusal) => {
                    tracing::info!(%remote, status = %refusal.status, "http request refused: {}", refusal.reason);
                    refusal_response(refusal)
                }
            };
            this.recorded().http_answers.inc(&[response.status().as_str()]);
            Ok::<_, Infallible>(response)
        };
        tracing::Instrument::instrument(served, span)
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HTTP_HEAD_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(HTTP_HEAD_TIMEOUT))
        .max_concurrent_streams(H2_MAX_STREAMS);
    // Wait for the first byte before hyper reads: its header timeout starts only once it
    // knows the protocol, so a client that sends nothing would otherwise be held until idle.
    let first_byte = Duration::from_secs(controller.ingress_config().first_byte_timeout_s.max(1));
    match tokio::time::timeout(first_byte, client.peek(&mut [0u8; 1])).await {
        Ok(Ok(n)) if n > 0 => {}
        Ok(_) => return,
        Err(_) => {
            tracing::info!(%remote, "http client sent nothing for {first_byte:?}: closed");
            return;
        }
    }
    let client = Watched::new(client);
    let activity = Arc::clone(&client.last);
    let connection = builder.serve_connection(TokioIo::new(client), service);
    let idle = Duration::from_secs(controller.ingress_config().idle_timeout_s.max(1));
    tokio::select! {
        served = connection => {
            if let Err(e) = served {
                tracing::debug!("http connection ended: {e}");
            }
        }
        _ = cancel.wait_for(|c| *c) => {}
        _ = activity.idle_for(idle) => {
            tracing::info!(%remote, "http connection idle for {idle:?}: closed");
        }
    }
}

fn http_target(controller: &Controller, id: u64) -> Result<Target, Refusal> {
    let binding =
        controller.bindings().get(id).filter(|b| b.mode == Mode::Http).ok_or_else(|| {
            Refusal::new(StatusCode::SERVICE_UNAVAILABLE, format!("binding {id} is closed"))
        })?;
    let adapter = controller.adapter(&binding.to).ok_or_else(|| {
        Refusal::new(StatusCode::BAD_GATEWAY, format!("no adapter for platform {}", binding.to))
    })?;
    let needs_body_sha256 =
        matches!(&adapter.info().description, Description::Adapter(a) if a.needs_body_sha256);
    Ok(Target { to: binding.to, account: binding.account, adapter, needs_body_sha256 })
}

/// Carry one request, or say why not.
async fn proxy(
    controller: &Arc<Controller>,
    id: u64,
    remote: SocketAddr,
    ingress: SocketAddr,
    req: Request<Incoming>,
    stats: &Arc<Stats>,
) -> Result<Response<ProxyBody>, Refusal> {
    let target = http_target(controller, id)?;
    // A blocked source costs nothing more: not its body, not a look at its credentials.
    controller.auth_allowed(remote.ip(), None).map_err(Refusal::throttled)?;
    let (parts, body) = req.into_parts();
    let mut head = request_head(&parts, None)?;
    let identified = http_auth::identify(controller, &target.adapter, &mut head, remote.ip()).await?;
    let body = read_body(controller, stats, body).await?;
    if target.needs_body_sha256 {
        head.body_sha256 = Some(hex::encode(Sha256::digest(&body.bytes)));
    }
    let stored = match identified {
        Identified::Basic(account) => account,
        Identified::Signed { claimed, stored } => {
            http_auth::verify_signed(controller, &target.adapter, &head, (claimed, stored), remote.ip())
                .await?
        }
    };
    let account = stored.id.clone();
    tracing::Span::current().record("account", tracing::field::display(&account));
    if let Some(only) = &target.account
        && *only != account
    {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!("binding {id} is reserved for another account, not `{account}`"),
        ));
    }
    let credentials = stored.credentials.get(&target.to).cloned().ok_or_else(|| {
        Refusal::new(
            StatusCode::FORBIDDEN,
            format!(
                "account `{account}` has no credentials at platform {}: map some with \
                 `skybridge ctl account map {account} {} …`",
                target.to, target.to
            ),
        )
    })?;
    let credentials = adapting::TargetCredentials {
        platform: target.to.clone(),
        principal: credentials.principal,
        secret: credentials.secret,
        attributes: credentials
            .attributes
            .into_iter()
            .map(|(key, value)| types::Pair { key, value })
            .collect(),
    };
    let host = head.headers.iter().find(|p| p.key.eq_ignore_ascii_case("host")).map(|p| p.value.clone());
    let mut token =
        target_token(controller, id, &target, &account, &credentials, host.as_deref(), false).await?;
    let mut retried = false;
    loop {
        let mut with_token = credentials.clone();
        if let Some(t) = &token {
            with_token.attributes.push(types::Pair { key: "token".into(), value: t.value.clone() });
        }
        let (adapter, call_head) = (Arc::clone(&target.adapter), head.clone());
        let principal = credentials.principal.clone();
        let rewritten = adapter_call(controller, move || adapter.rewrite_request(&call_head, &with_token))
            .await?
            .map_err(|e| match e.cause {
                CallFailure::Rejected(reason) => Refusal::new(
                    StatusCode::FORBIDDEN,
                    format!("the {} adapter refused: {reason}", target.to),
                ),
                cause => Refusal::new(
                    StatusCode::BAD_GATEWAY,
                    format!("the {} adapter failed: {cause}", target.to),
                ),
            })?;
        let upstream = upstream_request(&rewritten, body.bytes.clone())?.map(Full::new);

        let session = controller.start_session(id, remote, ingress, Some((&account, &principal))).await;
        tracing::Span::current().record("session", session);
        if let Some(t) = &token {
            controller.note_session_token(session, t.expires_unix_s);
        }
        let up = upstream.body().size_hint().exact().unwrap_or(0);
        let guard = SessionGuard {
            controller: Arc::clone(controller),
            session,
            up,
            down: 0,
            outcome: None,
            _slot: None,
            span: tracing::Span::current(),
        };
        let response = forward(controller, id, upstream, guard, stats).await?;
        // A cached token the target no longer accepts (revoked, or its clock runs ahead):
        // fetch a new one and try once more, so the client never sees it.
        if response.status() == StatusCode::UNAUTHORIZED
            && !retried
            && token.as_ref().is_some_and(|t| t.cached)
        {
            retried = true;
            token =
                target_token(controller, id, &target, &account, &credentials, host.as_deref(), true).await?;
            continue;
        }
        return Ok(response);
    }
}

/// A request body read whole, with its places in the buffering budgets (freed on drop).
struct ReadBody {
    bytes: Bytes,
    _budget: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

/// Read a request's body whole: its declared length (else the largest allowed) is reserved
/// in the binding's and the ingress's budgets first — waiting at most [`BUDGET_WAIT`], then
/// 503 — and it must arrive within [`body_deadline`] (408).
async fn read_body(controller: &Controller, stats: &Stats, body: Incoming) -> Result<ReadBody, Refusal> {
    let max_mib = controller.ingress_config().max_http_body_mib;
    let max = max_mib.saturating_mul(1 << 20);
    let too_large = || {
        Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is larger than {max_mib} MiB"))
    };
    let declared = body.size_hint().exact().map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let reserve = declared.unwrap_or(max);
    let permits = u32::try_from(budget::kib(reserve)).unwrap_or(u32::MAX);
    let reserved = async {
        let binding = Arc::clone(&stats.buffered).acquire_many_owned(permits).await;
        let all = Arc::clone(controller.budget().buffered()).acquire_many_owned(permits).await;
        binding.ok().zip(all.ok())
    };
    let busy = || {
        let mut r =
            Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "busy: too many request bodies being read now");
        r.retry_after_s = Some(1);
        r
    };
    let budget = tokio::time::timeout(BUDGET_WAIT, reserved).await.map_err(|_| busy())?.ok_or_else(busy)?;
    let deadline = body_deadline(reserve);
    let bytes = match tokio::time::timeout(deadline, Limited::new(body, max).collect()).await {
        Err(_) => {
            let reason = format!("the request body did not arrive within {} s", deadline.as_secs());
            return Err(Refusal::new(StatusCode::REQUEST_TIMEOUT, reason));
        }
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Ok(Err(e)) => {
            return Err(Refusal::new(StatusCode::BAD_REQUEST, format!("reading the request body: {e}")));
        }
    };
    Ok(ReadBody { bytes, _budget: budget })
}

/// How long a body of `len` bytes may take to arrive: 30 s, plus 1 s per 256 KiB (a client
/// slower than that holds its budget for no one).
fn body_deadline(len: usize) -> Duration {
    Duration::from_secs(30 + (len >> 18) as u64)
}

/// The token one request carries.
struct TokenUse {
    value: String,
    expires_unix_s: u64,
    /// Taken from the cache (so worth refreshing if the target refuses it).
    cached: bool,
}

/// The token the target's adapter wants for `account` (if any): the cached one while it has a
/// while to live, else a new one from the identity service, which the host asks on the
/// adapter's behalf over the tunnel. `refresh` skips the cache.
async fn target_token(
    controller: &Arc<Controller>,
    id: u64,
    target: &Target,
    account: &str,
    credentials: &adapting::TargetCredentials,
    host: Option<&str>,
    refresh: bool,
) -> Result<Option<TokenUse>, Refusal> {
    let failed = |what: String| Refusal::new(StatusCode::BAD_GATEWAY, what);
    let (adapter, call_credentials) = (Arc::clone(&target.adapter), credentials.clone());
    let Some(request) = adapter_call(controller, move || adapter.request_token(&call_credentials))
        .await?
        .map_err(|e| failed(format!("the {} adapter failed: {e}", target.to)))?
    else {
        return Ok(None);
    };
    let now = now_unix_ms() / 1000;
    if !refresh && let Some(cached) = controller.tokens().fresh(&target.to, account, now) {
        return Ok(Some(TokenUse {
            value: cached.value.clone(),
            expires_unix_s: cached.expires_unix_s,
            cached: true,
        }));
    }

    // Where to ask: the binding's own endpoint, or another endpoint of the same site.
    let via = match &request.endpoint {
        None => id,
        Some(endpoint) => controller.connect_binding(account, &target.to, endpoint).await.map_err(|e| {
            failed(format!("no tunnel to {}/{endpoint} for the token request: {e}", target.to))
        })?,
    };
    let mut builder = Request::builder().method(request.method.as_str()).uri(request.path.as_str());
    for pair in &request.headers {
        builder = builder.header(pair.key.as_str(), pair.value.as_str());
    }
    if !request.headers.iter().any(|p| p.key.eq_ignore_ascii_case("host")) {
        builder = builder.header(hyper::header::HOST, host.unwrap_or(target.to.as_str()));
    }
    let upstream = builder
        .body(Full::new(Bytes::from(request.body)))
        .map_err(|e| failed(format!("the {} adapter's token request is invalid: {e}", target.to)))?;
    let (_, stats) =
        controller.bindings().carrier(via).ok_or_else(|| failed(format!("binding {via} closed")))?;
    let (response, _slot) = send_over(controller, via, upstream, &stats)
        .await
        .map_err(|e| failed(format!("token request: {e}")))?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, 1 << 20)
        .collect()
        .await
        .map_err(|e| failed(format!("reading the token answer: {e}")))?
        .to_bytes();
    let headers: Vec<types::Pair> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| {
            Some(types::Pair { key: k.as_str().to_owned(), value: v.to_str().ok()?.to_owned() })
        })
        .collect();
    let adapter = Arc::clone(&target.adapter);
    let status = parts.status.as_u16();
    let token = adapter_call(controller, move || adapter.read_token(status, &headers, &body))
        .await?
        .map_err(|e| match e.cause {
            CallFailure::Rejected(reason) => failed(reason),
            cause => failed(format!("the {} adapter failed: {cause}", target.to)),
        })?;
    tracing::info!(platform = %target.to, %account, expires_unix_s = token.expires_unix_s, "target token obtained");
    let cached =
        CachedToken { value: token.value, expires_unix_s: token.expires_unix_s, fetched_unix_s: now };
    let value = cached.value.clone();
    controller.tokens().insert(&target.to, account, cached);
    Ok(Some(TokenUse { value, expires_unix_s: token.expires_unix_s, cached: false }))
}

/// Send `request` over a new stream of binding `id`'s tunnel; stream the answer back.
async fn forward(
    controller: &Controller,
    id: u64,
    request: Request<Full<Bytes>>,
    mut guard: SessionGuard,
    stats: &Arc<Stats>,
) -> Result<Response<ProxyBody>, Refusal> {
    let (response, slot) = match send_over(controller, id, request, stats).await {
        Ok(sent) => sent,
        Err(e) => {
            guard.outcome = Some(e.clone());
            return Err(Refusal::new(StatusCode::BAD_GATEWAY, format!("the tunnel: {e}")));
        }
    };
    guard._slot = Some(slot);
    stats.up.fetch_add(guard.up, Ordering::Relaxed);
    let (mut parts, body) = response.into_parts();
    let forwarded: Vec<HeaderName> =
        parts.headers.keys().filter(|n| hop_by_hop(n.as_str())).cloned().collect();
    for name in forwarded {
        parts.headers.remove(name);
    }
    guard.outcome = Some(format!("HTTP {}", parts.status.as_u16()));
    let metered = Metered { inner: body, guard, stats: Arc::clone(stats) };
    Ok(Response::from_parts(parts, metered.boxed_unsync()))
}

/// Send `request` as HTTP/1.1 over a new stream of binding `id`'s tunnel. The slot counts the
/// stream against the binding's limit until dropped.
async fn send_over(
    controller: &Controller,
    id: u64,
    request: Request<Full<Bytes>>,
    stats: &Arc<Stats>,
) -> Result<(Response<Incoming>, ActiveSlot), String> {
    let (send, recv, slot) =
        controller.open_stream(id, stats, Bytes::new()).await.map_err(|e| format!("{e:#}"))?;
    let io = TokioIo::new(tokio::io::join(recv, send));
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    controller.spawner().spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("upstream http connection ended: {e}");
        }
    });
    let response =
        sender.send_request(request).await.map_err(|e| format!("the endpoint did not answer: {e}"))?;
    Ok((response, slot))
}

/// A client connection that notes when bytes last moved either way, so that an idle one (a
/// keep-alive connection nobody uses, a client that stopped reading) can be let go.
struct Watched {
    inner: tokio::net::TcpStream,
    last: Arc<Activity>,
}

impl Watched {
    fn new(inner: tokio::net::TcpStream) -> Watched {
        Watched { inner, last: Arc::new(Activity::new()) }
    }
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last.touch();
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.last.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.last.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Ends a request's session record when dropped (the response body finished, failed, or the
/// client went away), with the bytes carried.
struct SessionGuard {
    controller: Arc<Controller>,
    session: u64,
    up: u64,
    down: u64,
    outcome: Option<String>,
    /// The binding's connection slot, held while the response streams.
    _slot: Option<ActiveSlot>,
    /// The request's span: the body may finish streaming outside it.
    span: tracing::Span,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let outcome = self.outcome.take().unwrap_or_else(|| "refused".into());
        tracing::info!(parent: &self.span, %outcome, up = self.up, down = self.down, "http request done");
        self.controller.end_session(self.session, self.up, self.down, outcome);
    }
}

/// The response body, counting what it carries into the session and the binding.
struct Metered {
    inner: Incoming,
    guard: SessionGuard,
    stats: Arc<Stats>,
}

impl Body for Metered {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    self.guard.down += n;
                    self.stats.down.fetch_add(n, Ordering::Relaxed);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let outcome = format!("response body failed: {e}");
                self.guard.outcome = Some(outcome);
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
