//! `CONNECT platform:endpoint` on one shared listener (HTTP/1.1). The client authenticates
//! with `Proxy-Authorization`: the operator's admin token (Bearer, or the Basic password with
//! any user) or an account (Basic `account:secret`). Each account and target gets its own
//! binding, made on first use; the connection is then carried over it like a `tcp` client.
//! An account reaches only platforms it has credentials at, and only endpoints the target
//! site's authorizer grants it (403 otherwise, with the authorizer's reason).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::controller::{BindError, ConnectError, Controller};
use crate::session::accounts::OPERATOR;
use crate::session::client_auth::ClientCredentials;
use crate::shutdown::Signal;
use crate::tunnel::splice::Side;

/// The longest CONNECT request head accepted.
const MAX_HEAD: usize = 8 * 1024;
/// How long a CONNECT client has to send its request head.
const CONNECT_HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve `CONNECT` requests on `listener` until the shutdown signal. `admin_token` is the
/// digest of the operator's token.
pub async fn serve(
    controller: Arc<Controller>,
    listener: TcpListener,
    admin_token: Arc<[u8; 32]>,
    mut signal: Signal,
) {
    while let Some((client, remote)) = crate::shutdown::accept(&listener, signal.recv()).await {
        let Some(place) = controller.budget().admit("CONNECT") else { continue };
        let (controller, token) = (Arc::clone(&controller), Arc::clone(&admin_token));
        // Debug level, as a binding's client spans: it lives as long as the connection.
        let span = tracing::debug_span!("connect", %remote, session = tracing::field::Empty);
        signal.spawn(tracing::Instrument::instrument(
            async move {
                let _place = place;
                if let Err(e) = handle(&controller, client, &token).await {
                    tracing::info!(%remote, "CONNECT failed: {e}");
                }
            },
            span,
        ));
    }
}

/// Read an HTTP request head (through the blank line) within [`CONNECT_HEAD_TIMEOUT`]: a
/// client that dribbles or stalls is dropped rather than holding a task forever. Returns the
/// head and any bytes the client sent after it.
async fn read_head(client: &mut (impl tokio::io::AsyncRead + Unpin)) -> Result<(Vec<u8>, Vec<u8>), String> {
    let read = async {
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        loop {
            let n = client.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the client closed before the end of its request".to_owned());
            }
            let scan_from = buf.len().saturating_sub(3);
            buf.extend_from_slice(&chunk[..n]);
            let end = buf[scan_from..].windows(4).position(|w| w == b"\r\n\r\n").map(|p| scan_from + p + 4);
            // The cap is on the head, wherever in a read its end falls.
            if end.unwrap_or(buf.len()) > MAX_HEAD {
                return Err(format!("request head larger than {MAX_HEAD} bytes"));
            }
            if let Some(end) = end {
                let rest = buf.split_off(end);
                return Ok((buf, rest));
            }
            if buf.len() > MAX_HEAD {
                return Err(format!("request head larger than {MAX_HEAD} bytes"));
            }
        }
    };
    tokio::time::timeout(CONNECT_HEAD_TIMEOUT, read)
        .await
        .map_err(|_| "no complete request in time".to_owned())?
}

/// Who a `Proxy-Authorization` value names: the operator (the admin token, as Bearer or as a
/// Basic password with any user name) or an account (Basic `account:secret`). Secrets are
/// compared by digest in constant time.
async fn principal(value: Option<&[u8]>, admin_token: &[u8; 32], controller: &Controller) -> Option<String> {
    let credentials = ClientCredentials::parse(value?)?;
    if crate::secret::matches_digest(credentials.secret(), admin_token) {
        return Some(OPERATOR.to_owned());
    }
    match credentials {
        ClientCredentials::Basic { user, secret } => {
            controller.authenticate(&user, &secret).await.then_some(user)
        }
        ClientCredentials::Bearer(_) => None,
    }
}

/// Answer a failed target: the operator reads `detail`; an account reads only `generic`, since
/// the detail names the mesh's inside (relays, other platforms, endpoints). The log keeps the
/// detail either way.
async fn target_failed(
    client: &mut TcpStream,
    account: &str,
    status: &str,
    detail: &str,
    generic: &str,
) -> Result<(), String> {
    if account == OPERATOR {
        return answer(client, status, "", detail).await;
    }
    answer(client, status, "", generic).await.map_err(|_| format!("{status} for account {account}: {detail}"))
}

/// Answer `status` with `reason` and end the exchange.
async fn answer(client: &mut TcpStream, status: &str, extra: &str, reason: &str) -> Result<(), String> {
    let body = format!("{reason}\n");
    let response = format!(
        "HTTP/1.1 {status}\r\n{extra}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(response.as_bytes()).await;
    Err(format!("{status}: {reason}"))
}

/// A CONNECT request, as its head says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// The request target: `PLATFORM:ENDPOINT` when well formed (see [`split_target`]).
    pub target: String,
    /// The `Proxy-Authorization` value, when the client sent one.
    pub credentials: Option<Vec<u8>>,
}

/// Why a request head is refused: the status line, an extra header, the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadRefused {
    /// `400 Bad Request`, `405 Method Not Allowed`.
    pub status: &'static str,
    /// A header line to add (`Allow: CONNECT`), or empty.
    pub extra: &'static str,
    /// Why.
    pub reason: &'static str,
}

/// Parse a request head (through its blank line), sans-IO: a CONNECT with its target and
/// credentials, or why not.
pub fn parse_request(head: &[u8]) -> Result<ConnectRequest, HeadRefused> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    if !matches!(request.parse(head), Ok(httparse::Status::Complete(_))) {
        return Err(HeadRefused { status: "400 Bad Request", extra: "", reason: "malformed request" });
    }
    if request.method != Some("CONNECT") {
        return Err(HeadRefused {
            status: "405 Method Not Allowed",
            extra: "Allow: CONNECT\r\n",
            reason: "only CONNECT is served here",
        });
    }
    let credentials = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("proxy-authorization"))
        .map(|h| h.value.to_vec());
    Ok(ConnectRequest { target: request.path.unwrap_or_default().to_owned(), credentials })
}

/// `PLATFORM:ENDPOINT` taken apart (the endpoint after the last colon), both non-empty.
pub fn split_target(target: &str) -> Option<(&str, &str)> {
    target.rsplit_once(':').filter(|(to, endpoint)| !to.is_empty() && !endpoint.is_empty())
}

async fn handle(
    controller: &Controller,
    mut client: TcpStream,
    admin_token: &[u8; 32],
) -> Result<(), String> {
    let _ = client.set_nodelay(true);
    let (head, early) = match read_head(&mut client).await {
        Ok(h) => h,
        Err(reason) => return answer(&mut client, "400 Bad Request", "", &reason).await,
    };
    let request = match parse_request(&head) {
        Ok(request) => request,
        Err(refused) => return answer(&mut client, refused.status, refused.extra, refused.reason).await,
    };
    let auth = request.credentials.as_deref();
    let source = client.peer_addr().map_err(|e| e.to_string())?.ip();
    let claimed = match auth.and_then(ClientCredentials::parse) {
        Some(ClientCredentials::Basic { user, .. }) => Some(user),
        _ => None,
    };
    if let Err(wait) = controller.auth_allowed(source, claimed.as_deref()) {
        let refusal = crate::session::translate::Refusal::throttled(wait);
        let retry = format!("Retry-After: {}\r\n", refusal.retry_after_s.unwrap_or(1));
        return answer(&mut client, "429 Too Many Requests", &retry, &refusal.reason).await;
    }
    let Some(account) = principal(auth, admin_token, controller).await else {
        if auth.is_some() {
            controller.auth_failed(source, claimed.as_deref(), "CONNECT");
        }
        let challenge = "Proxy-Authenticate: Basic realm=\"skybridge\"\r\n";
        return answer(&mut client, "407 Proxy Authentication Required", challenge, "missing or wrong token")
            .await;
    };
    let target = request.target;
    let Some((to, endpoint)) = split_target(&target) else {
        return answer(&mut client, "400 Bad Request", "", "the target must be PLATFORM:ENDPOINT").await;
    };
    let id = match controller.connect_binding(&account, to, endpoint).await {
        Ok(id) => id,
        Err(BindError::Forbidden(reason)) => {
            return answer(&mut client, "403 Forbidden", "", &reason).await;
        }
        Err(BindError::Setup(e)) if e.denied => {
            // The authorizer's reasons are written for the requester; the relays are not.
            let reasons: Vec<&str> = e.failed.iter().map(|(_, why)| why.as_str()).collect();
            let reason = format!("{to} refused {target}: {}", reasons.join("; "));
            return answer(&mut client, "403 Forbidden", "", &reason).await;
        }
        Err(e @ BindError::Connect(ConnectError::UnknownPlatform { .. })) => {
            let generic = format!("no target {target}");
            return target_failed(&mut client, &account, "404 Not Found", &e.to_string(), &generic).await;
        }
        Err(e) => {
            let generic = format!("no path to {target} now");
            return target_failed(&mut client, &account, "502 Bad Gateway", &e.to_string(), &generic).await;
        }
    };
    let Some((cancel, stats)) = controller.bindings().carrier(id) else {
        return answer(&mut client, "502 Bad Gateway", "", "the tunnel closed").await;
    };
    let remote = client.peer_addr().map_err(|e| e.to_string())?;
    let session = controller.start_session(id, remote, client.local_addr().unwrap_or(remote), None).await;
    tracing::Span::current().record("session", session);
    let early_len = early.len() as u64;
    let (send, recv, _slot) = match controller.open_stream(id, &stats, Bytes::from(early)).await {
        Ok(opened) => opened,
        Err(e) => {
            controller.end_session(session, 0, 0, format!("{e:#}"));
            let generic = format!("no path to {target} now");
            return target_failed(&mut client, &account, "502 Bad Gateway", &format!("{e:#}"), &generic)
                .await;
        }
    };
    client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.map_err(|e| e.to_string())?;
    super::carry(controller, session, Side::Tcp(client), (send, recv, early_len), cancel, &stats).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A head of `len` bytes (ending in the blank line), then `after`.
    fn head(len: usize, after: &[u8]) -> Vec<u8> {
        let start = b"CONNECT site-b:80 HTTP/1.1\r\nX-Pad: ";
        let mut bytes = start.to_vec();
        bytes.resize(len - 4, b'a');
        bytes.extend_from_slice(b"\r\n\r\n");
        bytes.extend_from_slice(after);
        bytes
    }

    #[test]
    fn a_head_parses_into_its_target_and_credentials_or_a_refusal() {
        let head = b"CONNECT site-b:web HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic abc\r\n\r\n";
        let request = parse_request(head).unwrap();
        assert_eq!(request.target, "site-b:web");
        assert_eq!(request.credentials.as_deref(), Some(&b"Basic abc"[..]));
        assert_eq!(split_target(&request.target), Some(("site-b", "web")));
        assert_eq!(split_target("[::1]:80"), Some(("[::1]", "80")), "the endpoint after the last colon");
        for bad in ["site-b", ":80", "site-b:", ""] {
            assert_eq!(split_target(bad), None, "{bad}");
        }
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\n\r\n").unwrap_err().status, "405 Method Not Allowed");
        assert_eq!(parse_request(b"CONNECT \x01\r\n\r\n").unwrap_err().status, "400 Bad Request");
        assert_eq!(parse_request(b"CONNECT a:b HTTP/1.1\r\n").unwrap_err().reason, "malformed request");
    }

    #[tokio::test]
    async fn a_head_is_read_up_to_its_cap_and_refused_beyond_it_wherever_a_read_ends() {
        let mut at_cap = &head(MAX_HEAD, b"")[..];
        assert_eq!(read_head(&mut at_cap).await.unwrap().0.len(), MAX_HEAD);
        // Bytes after the head, in the same read, are handed back.
        let mut early = &head(100, b"early")[..];
        let (got, rest) = read_head(&mut early).await.unwrap();
        assert_eq!((got.len(), rest.as_slice()), (100, &b"early"[..]));
        // 9.1 KB: its end falls inside the read that crosses the cap.
        for len in [MAX_HEAD + 1, 9_100] {
            let mut over = &head(len, b"")[..];
            let e = read_head(&mut over).await.unwrap_err();
            assert!(e.contains("larger than 8192 bytes"), "{len}: {e}");
        }
    }
}
