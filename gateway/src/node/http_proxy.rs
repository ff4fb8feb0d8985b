//! `http` bindings: a reverse proxy (HTTP/1.1 and HTTP/2 with prior knowledge, hyper) that
//! translates each request into the target session (DESIGN.md step 6).
//!
//! For each request:
//!
//! ```text
//! client ──request──▶ read body (≤ max_http_body_mib; hashed if the adapter wants it)
//!   ──▶ authenticate the account: the adapter's native scheme (`claimed-account` +
//!       `verify-client`, e.g. SigV4 signed with the Skybridge secret), else HTTP Basic
//!   ──▶ the account's credentials at the target platform (`ctl account map`)
//!   ──▶ adapter `rewrite-request` (re-sign, inject a token, fix Host)
//!   ──▶ a new tunnel stream, HTTP/1.1 to the endpoint ──▶ response streamed back
//! ```
//!
//! Every request is one session record (three sessions, bytes both ways). Refusals are plain
//! text with a status the client can act on: 401 no or unknown credentials, 403 a signature
//! that does not verify, an account without a mapping, or a binding reserved for another
//! account, 413 a body over the limit, 502 the tunnel or the adapter failed; the reason is
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

use super::controller::Controller;
use super::ingress::{ActiveSlot, Mode, Stats, lock};
use crate::plugin::{CallFailure, Description, Plugin, adapting, types};
use crate::tunnel::grant::now_unix_ms;
use crate::tunnel::splice::{Activity, Moved};

type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// How long a client has to send a request head (also bounds idle keep-alive connections).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1), plus the proxy's
/// own credentials and `expect` (the body is already read).
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
];

fn hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// A refusal: status and one line for the client.
struct Refusal(StatusCode, String);

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Refusal(status, reason.into())
    }

    fn response(self) -> Response<ProxyBody> {
        let mut response = Response::new(full(format!("skybridge: {}\n", self.1)));
        *response.status_mut() = self.0;
        let headers = response.headers_mut();
        headers.insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        // The reason in a header too: SDKs that parse error bodies as XML or JSON drop ours,
        // but expose response headers.
        if let Ok(reason) = HeaderValue::from_str(&self.1) {
            headers.insert(HeaderName::from_static("x-skybridge-error"), reason);
        }
        if self.0 == StatusCode::UNAUTHORIZED {
            headers.insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"skybridge\""),
            );
        }
        response
    }
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

impl Controller {
    /// Serve one client connection of `http` binding `id` until it closes or the binding does.
    pub(super) async fn serve_http(
        self: Arc<Self>,
        id: u64,
        client: tokio::net::TcpStream,
        remote: SocketAddr,
        mut cancel: watch::Receiver<bool>,
        stats: Arc<Stats>,
    ) {
        let ingress = client.local_addr().unwrap_or(remote);
        let this = Arc::clone(&self);
        let service = hyper::service::service_fn(move |req| {
            let (this, stats) = (Arc::clone(&this), Arc::clone(&stats));
            async move {
                let response = match this.proxy(id, remote, ingress, req, &stats).await {
                    Ok(response) => response,
                    Err(refusal) => {
                        tracing::info!(binding = id, %remote, status = %refusal.0, "http request refused: {}", refusal.1);
                        refusal.response()
                    }
                };
                Ok::<_, Infallible>(response)
            }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(HEAD_TIMEOUT);
        builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(HEAD_TIMEOUT));
        let client = Watched::new(client);
        let activity = Arc::clone(&client.last);
        let connection = builder.serve_connection(TokioIo::new(client), service);
        let idle = Duration::from_secs(self.ingress.config().idle_timeout_s.max(1));
        tokio::select! {
            served = connection => {
                if let Err(e) = served {
                    tracing::debug!(binding = id, %remote, "http connection ended: {e}");
                }
            }
            _ = cancel.wait_for(|c| *c) => {}
            _ = activity.idle_for(idle) => {
                tracing::info!(binding = id, %remote, "http connection idle for {idle:?}: closed");
            }
        }
    }

    fn http_target(&self, id: u64) -> Result<Target, Refusal> {
        let binding = self.ingress.binding(id).filter(|b| b.mode == Mode::Http).ok_or_else(|| {
            Refusal::new(StatusCode::SERVICE_UNAVAILABLE, format!("binding {id} is closed"))
        })?;
        let adapter = self.adapter(&binding.to).ok_or_else(|| {
            Refusal::new(StatusCode::BAD_GATEWAY, format!("no adapter for platform {}", binding.to))
        })?;
        let needs_body_sha256 =
            matches!(&adapter.info().description, Description::Adapter(a) if a.needs_body_sha256);
        Ok(Target { to: binding.to, account: binding.account, adapter, needs_body_sha256 })
    }

    /// Carry one request, or say why not.
    async fn proxy(
        self: &Arc<Self>,
        id: u64,
        remote: SocketAddr,
        ingress: SocketAddr,
        req: Request<Incoming>,
        stats: &Arc<Stats>,
    ) -> Result<Response<ProxyBody>, Refusal> {
        let target = self.http_target(id)?;
        let (parts, body) = req.into_parts();
        let limit = self.ingress.config().max_http_body_mib.saturating_mul(1 << 20);
        let body = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the request body is larger than {} MiB",
                        self.ingress.config().max_http_body_mib
                    ),
                ));
            }
            Err(e) => {
                return Err(Refusal::new(StatusCode::BAD_REQUEST, format!("reading the request body: {e}")));
            }
        };

        let mut head =
            request_head(&parts, target.needs_body_sha256.then(|| hex::encode(Sha256::digest(&body))))?;
        let account = self.authenticate_request(&target.adapter, &mut head)?;
        if let Some(only) = &target.account
            && *only != account
        {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                format!("binding {id} is reserved for another account, not `{account}`"),
            ));
        }
        let credentials = self.credentials(&account, &target.to).ok_or_else(|| {
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
            self.target_token(id, &target, &account, &credentials, host.as_deref(), false).await?;
        let mut retried = false;
        loop {
            let mut credentials = credentials.clone();
            if let Some(t) = &token {
                credentials.attributes.push(types::Pair { key: "token".into(), value: t.value.clone() });
            }
            let rewritten =
                target.adapter.rewrite_request(&head, &credentials).map_err(|e| match e.cause {
                    CallFailure::Rejected(reason) => Refusal::new(
                        StatusCode::FORBIDDEN,
                        format!("the {} adapter refused: {reason}", target.to),
                    ),
                    cause => Refusal::new(
                        StatusCode::BAD_GATEWAY,
                        format!("the {} adapter failed: {cause}", target.to),
                    ),
                })?;
            let upstream = upstream_request(&rewritten, body.clone())?;

            let session = self.start_session(id, remote, ingress, Some((&account, &credentials.principal)));
            if let Some(t) = &token {
                self.ingress.note_session_token(session, t.expires_unix_s);
            }
            let up = upstream.body().size_hint().exact().unwrap_or(0);
            let guard = SessionGuard {
                controller: Arc::clone(self),
                session,
                up,
                down: 0,
                outcome: None,
                _slot: None,
            };
            let response = self.forward(id, upstream, guard, stats).await?;
            // A cached token the target no longer accepts (revoked, or its clock runs ahead):
            // fetch a new one and try once more, so the client never sees it.
            if response.status() == StatusCode::UNAUTHORIZED
                && !retried
                && token.as_ref().is_some_and(|t| t.cached)
            {
                retried = true;
                token = self.target_token(id, &target, &account, &credentials, host.as_deref(), true).await?;
                continue;
            }
            return Ok(response);
        }
    }

    /// The token the target's adapter wants for `account` (if any): the cached one while it
    /// has a while to live, else a new one from the identity service, which the host asks on
    /// the adapter's behalf over the tunnel. `refresh` skips the cache.
    async fn target_token(
        &self,
        id: u64,
        target: &Target,
        account: &str,
        credentials: &adapting::TargetCredentials,
        host: Option<&str>,
        refresh: bool,
    ) -> Result<Option<TokenUse>, Refusal> {
        let failed = |what: String| Refusal::new(StatusCode::BAD_GATEWAY, what);
        let Some(request) = target
            .adapter
            .request_token(credentials)
            .map_err(|e| failed(format!("the {} adapter failed: {e}", target.to)))?
        else {
            return Ok(None);
        };
        let key = (target.to.clone(), account.to_owned());
        let now = now_unix_ms() / 1000;
        if !refresh && let Some(cached) = lock(&self.ingress.tokens).get(&key).filter(|t| t.fresh(now)) {
            return Ok(Some(TokenUse {
                value: cached.value.clone(),
                expires_unix_s: cached.expires_unix_s,
                cached: true,
            }));
        }

        // Where to ask: the binding's own endpoint, or another endpoint of the same site.
        let via = match &request.endpoint {
            None => id,
            Some(endpoint) => self.connect_binding(account, &target.to, endpoint).await.map_err(|e| {
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
        let stats = self.ingress.binding_stats(via).ok_or_else(|| failed(format!("binding {via} closed")))?;
        let (response, _slot) =
            self.send_over(via, upstream, &stats).await.map_err(|e| failed(format!("token request: {e}")))?;
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
        let token =
            target.adapter.read_token(parts.status.as_u16(), &headers, &body).map_err(|e| match e.cause {
                CallFailure::Rejected(reason) => failed(reason),
                cause => failed(format!("the {} adapter failed: {cause}", target.to)),
            })?;
        tracing::info!(platform = %target.to, %account, expires_unix_s = token.expires_unix_s, "target token obtained");
        let cached =
            CachedToken { value: token.value, expires_unix_s: token.expires_unix_s, fetched_unix_s: now };
        let value = cached.value.clone();
        lock(&self.ingress.tokens).insert(key, cached);
        Ok(Some(TokenUse { value, expires_unix_s: token.expires_unix_s, cached: false }))
    }

    /// Who the request comes from: the adapter's native scheme when the request uses it,
    /// else HTTP Basic `account:secret` (removed before the request goes on).
    fn authenticate_request(
        &self,
        adapter: &Plugin,
        head: &mut adapting::RequestHead,
    ) -> Result<String, Refusal> {
        let adapter_failed = |e: crate::plugin::CallError| {
            Refusal::new(StatusCode::BAD_GATEWAY, format!("adapter failed: {e}"))
        };
        if let Some(account) = adapter.claimed_account(head).map_err(adapter_failed)? {
            let secret = self.account_secret(&account).ok_or_else(|| {
                Refusal::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "no account `{account}`: sign with your Skybridge account as the identity \
                             (not the target cloud's own credentials)"
                    ),
                )
            })?;
            return match adapter.verify_client(head, &secret) {
                Ok(()) => Ok(account),
                Err(e) => match e.cause {
                    CallFailure::Rejected(reason) => Err(Refusal::new(StatusCode::FORBIDDEN, reason)),
                    _ => Err(adapter_failed(e)),
                },
            };
        }
        let basic = head.headers.iter().find_map(|p| {
            p.key.eq_ignore_ascii_case("authorization").then(|| basic_credentials(&p.value)).flatten()
        });
        let Some((account, secret)) = basic else {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "authenticate with your Skybridge account: sign as the target cloud's SDK does with the \
                 account as the key id, or send HTTP Basic account:secret",
            ));
        };
        if !self.authenticate(&account, &secret) {
            return Err(Refusal::new(StatusCode::UNAUTHORIZED, "wrong account or secret"));
        }
        head.headers.retain(|p| !p.key.eq_ignore_ascii_case("authorization"));
        Ok(account)
    }

    /// Send `request` over a new stream of binding `id`'s tunnel; stream the answer back.
    async fn forward(
        &self,
        id: u64,
        request: Request<Full<Bytes>>,
        mut guard: SessionGuard,
        stats: &Arc<Stats>,
    ) -> Result<Response<ProxyBody>, Refusal> {
        let bad_gateway = |what: &str, e: &str| Refusal::new(StatusCode::BAD_GATEWAY, format!("{what}: {e}"));
        let (response, slot) = match self.send_over(id, request, stats).await {
            Ok(sent) => sent,
            Err(e) => {
                guard.outcome = Some(e.clone());
                return Err(bad_gateway("the tunnel", &e));
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
}

impl Controller {
    /// Send `request` as HTTP/1.1 over a new stream of binding `id`'s tunnel. The slot counts
    /// the stream against the binding's limit until dropped.
    async fn send_over(
        &self,
        id: u64,
        request: Request<Full<Bytes>>,
        stats: &Arc<Stats>,
    ) -> Result<(Response<Incoming>, ActiveSlot), String> {
        let (send, recv, slot) =
            self.open_stream(id, stats, Bytes::new()).await.map_err(|e| format!("{e:#}"))?;
        let io = TokioIo::new(tokio::io::join(recv, send));
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(binding = id, "upstream http connection ended: {e}");
            }
        });
        let response =
            sender.send_request(request).await.map_err(|e| format!("the endpoint did not answer: {e}"))?;
        Ok((response, slot))
    }
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

/// A target token as the ingress caches it, per (platform, account).
pub(super) struct CachedToken {
    value: String,
    expires_unix_s: u64,
    fetched_unix_s: u64,
}

impl CachedToken {
    /// Whether it still has a while to live at `now`: a tenth of its lifetime, at most 30 s,
    /// is kept in hand so that it does not expire on the way to the target.
    fn fresh(&self, now: u64) -> bool {
        let margin = (self.expires_unix_s.saturating_sub(self.fetched_unix_s) / 10).min(30);
        now + margin < self.expires_unix_s
    }
}

/// The token one request carries.
struct TokenUse {
    value: String,
    expires_unix_s: u64,
    /// Taken from the cache (so worth refreshing if the target refuses it).
    cached: bool,
}

/// The request head as adapters see it: path and query as on the wire, headers in order (a
/// `host` from the HTTP/2 authority when there is no Host header).
fn request_head(
    parts: &hyper::http::request::Parts,
    body_sha256: Option<String>,
) -> Result<adapting::RequestHead, Refusal> {
    let mut headers = Vec::with_capacity(parts.headers.len() + 1);
    if !parts.headers.contains_key(hyper::header::HOST)
        && let Some(authority) = parts.uri.authority()
    {
        headers.push(types::Pair { key: "host".into(), value: authority.to_string() });
    }
    for (name, value) in &parts.headers {
        if hop_by_hop(name.as_str()) && name != "proxy-authorization" {
            continue;
        }
        let value = value.to_str().map_err(|_| {
            Refusal::new(StatusCode::BAD_REQUEST, format!("header `{name}` is not visible ASCII"))
        })?;
        headers.push(types::Pair { key: name.as_str().to_owned(), value: value.to_owned() });
    }
    Ok(adapting::RequestHead {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers,
        body_sha256,
    })
}

/// The HTTP/1.1 request to send upstream, from the adapter's rewritten head.
fn upstream_request(head: &adapting::RequestHead, body: Bytes) -> Result<Request<Full<Bytes>>, Refusal> {
    let invalid =
        |what: String| Refusal::new(StatusCode::BAD_GATEWAY, format!("the adapter produced {what}"));
    let uri = if head.query.is_empty() { head.path.clone() } else { format!("{}?{}", head.path, head.query) };
    let mut builder = Request::builder().method(head.method.as_str()).uri(uri.as_str());
    let mut has_length = false;
    for pair in &head.headers {
        if hop_by_hop(&pair.key) {
            continue;
        }
        has_length |= pair.key.eq_ignore_ascii_case("content-length");
        let name = HeaderName::from_bytes(pair.key.as_bytes())
            .map_err(|_| invalid(format!("an invalid header name `{}`", pair.key)))?;
        let value = HeaderValue::from_str(&pair.value)
            .map_err(|_| invalid(format!("an invalid value for header `{}`", pair.key)))?;
        builder = builder.header(name, value);
    }
    if !has_length && !body.is_empty() {
        builder = builder.header(hyper::header::CONTENT_LENGTH, body.len());
    }
    if !head.headers.iter().any(|p| p.key.eq_ignore_ascii_case("host")) {
        return Err(invalid("a request without a Host header".into()));
    }
    builder
        .body(Full::new(body))
        .map_err(|e| invalid(format!("an invalid request ({e}): `{}` `{uri}`", head.method)))
}

/// `Basic base64(account:secret)`, decoded.
fn basic_credentials(value: &str) -> Option<(String, String)> {
    use base64::Engine;
    let encoded = value.trim().strip_prefix("Basic ")?.trim();
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let (account, secret) =
        String::from_utf8(decoded).ok()?.split_once(':').map(|(a, s)| (a.to_owned(), s.to_owned()))?;
    Some((account, secret))
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
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let moved = Moved { a_to_b: self.up, b_to_a: self.down };
        let outcome = self.outcome.take().unwrap_or_else(|| "refused".into());
        self.controller.ingress.end_session(self.session, moved, outcome);
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
