//! HTTP session translation, sans-IO: a client's request head as adapters see it, the request
//! to send upstream from the adapter's rewrite, which headers never cross a proxy, and the
//! refusals a client gets. The hyper server that drives this is `ingress::http`.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, StatusCode};

use crate::plugin::{adapting, types};

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

/// Whether header `name` belongs to one connection only.
pub fn hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// A refusal: the status and one line for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: StatusCode,
    /// Why, in one line.
    pub reason: String,
    /// When to try again (`Retry-After`, seconds), if the client should.
    pub retry_after_s: Option<u64>,
}

impl Refusal {
    /// A refusal with `status` because of `reason`.
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Refusal { status, reason: reason.into(), retry_after_s: None }
    }

    /// 429: the client's source or account is blocked for `wait` after failed proofs.
    pub fn throttled(wait: std::time::Duration) -> Self {
        let seconds = crate::session::throttle::retry_after_s(wait);
        let reason = format!("too many failed authentications: try again in {seconds} s");
        Refusal { status: StatusCode::TOO_MANY_REQUESTS, reason, retry_after_s: Some(seconds) }
    }
}

/// The request head as adapters see it: path and query as on the wire, headers in order (a
/// `host` from the HTTP/2 authority when there is no Host header), without hop-by-hop headers
/// other than `proxy-authorization` (which the adapter may read as a client credential), nor
/// the headers the client's `Connection` names as its own. Two Host headers are refused (RFC
/// 9112 §3.2): the target and the signature could each read a different one.
pub fn request_head(
    parts: &http::request::Parts,
    body_sha256: Option<String>,
) -> Result<adapting::RequestHead, Refusal> {
    if parts.headers.get_all(http::header::HOST).iter().count() > 1 {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "more than one Host header"));
    }
    // `Connection: close, x-foo` makes x-foo this connection's alone (RFC 9110 §7.6.1).
    let connection_only: Vec<String> = parts
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    let mut headers = Vec::with_capacity(parts.headers.len() + 1);
    if !parts.headers.contains_key(http::header::HOST)
        && let Some(authority) = parts.uri.authority()
    {
        headers.push(types::Pair { key: "host".into(), value: authority.to_string() });
    }
    for (name, value) in &parts.headers {
        if (hop_by_hop(name.as_str()) && name != "proxy-authorization")
            || connection_only.iter().any(|t| t == name.as_str())
        {
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

/// The HTTP/1.1 request to send upstream, from the adapter's rewritten head: hop-by-hop
/// headers dropped, a `content-length` added for a body, a `host` required.
pub fn upstream_request(head: &adapting::RequestHead, body: Bytes) -> Result<Request<Bytes>, Refusal> {
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
        builder = builder.header(http::header::CONTENT_LENGTH, body.len());
    }
    if !head.headers.iter().any(|p| p.key.eq_ignore_ascii_case("host")) {
        return Err(invalid("a request without a Host header".into()));
    }
    builder.body(body).map_err(|e| invalid(format!("an invalid request ({e}): `{}` `{uri}`", head.method)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: Request<()>) -> http::request::Parts {
        req.into_parts().0
    }

    fn header<'a>(head: &'a adapting::RequestHead, name: &str) -> Option<&'a str> {
        head.headers.iter().find(|p| p.key == name).map(|p| p.value.as_str())
    }

    #[test]
    fn two_host_headers_are_refused_and_headers_named_in_connection_dropped() {
        let twice = Request::builder().uri("/").header("host", "a").header("host", "b").body(()).unwrap();
        let e = request_head(&parts(twice), None).unwrap_err();
        assert_eq!((e.status, e.reason.as_str()), (StatusCode::BAD_REQUEST, "more than one Host header"));
        let named = Request::builder()
            .uri("/")
            .header("host", "a")
            .header("connection", "close, X-Internal-Token")
            .header("connection", "x-trace")
            .header("x-internal-token", "secret")
            .header("x-trace", "1")
            .header("x-kept", "yes")
            .body(())
            .unwrap();
        let head = request_head(&parts(named), None).unwrap();
        let names: Vec<&str> = head.headers.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(names, ["host", "x-kept"]);
    }

    #[test]
    fn the_head_keeps_order_and_query_and_drops_connection_headers() {
        let req = Request::builder()
            .method("PUT")
            .uri("/bucket/key?x-id=PutObject&b=1")
            .header("host", "s3.example")
            .header("connection", "keep-alive")
            .header("x-amz-date", "20261204T000000Z")
            .header("proxy-authorization", "Basic abc")
            .header("transfer-encoding", "chunked")
            .body(())
            .unwrap();
        let head = request_head(&parts(req), Some("ab".into())).unwrap();
        assert_eq!((head.method.as_str(), head.path.as_str()), ("PUT", "/bucket/key"));
        assert_eq!(head.query, "x-id=PutObject&b=1");
        let names: Vec<&str> = head.headers.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(names, ["host", "x-amz-date", "proxy-authorization"]);
        assert_eq!(head.body_sha256.as_deref(), Some("ab"));
    }

    #[test]
    fn an_http2_authority_becomes_the_host_and_binary_headers_are_refused() {
        let req = Request::builder().uri("http://blob.example:10000/c?comp=list").body(()).unwrap();
        let head = request_head(&parts(req), None).unwrap();
        assert_eq!(header(&head, "host"), Some("blob.example:10000"));
        let req = Request::builder()
            .uri("/")
            .header("x-bin", HeaderValue::from_bytes(b"\xff").unwrap())
            .body(())
            .unwrap();
        let refusal = request_head(&parts(req), None).unwrap_err();
        assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
        assert!(refusal.reason.contains("x-bin"), "{}", refusal.reason);
    }

    #[test]
    fn the_upstream_request_gets_a_length_and_never_a_hop_by_hop_header() {
        let head = adapting::RequestHead {
            method: "POST".into(),
            path: "/v3/auth/tokens".into(),
            query: "nocatalog".into(),
            headers: vec![
                types::Pair { key: "host".into(), value: "keystone".into() },
                types::Pair { key: "upgrade".into(), value: "h2c".into() },
                types::Pair { key: "authorization".into(), value: "x".into() },
            ],
            body_sha256: None,
        };
        let req = upstream_request(&head, Bytes::from_static(b"{}")).unwrap();
        assert_eq!(req.uri(), "/v3/auth/tokens?nocatalog");
        assert_eq!(req.headers()["content-length"], "2");
        assert!(req.headers().get("upgrade").is_none());
        assert_eq!(req.headers()["authorization"], "x");
        assert_eq!(req.body().as_ref(), b"{}");
    }

    #[test]
    fn an_adapter_that_breaks_the_request_is_a_bad_gateway_naming_what() {
        let mut head = adapting::RequestHead {
            method: "GET".into(),
            path: "/".into(),
            query: String::new(),
            headers: vec![types::Pair { key: "host".into(), value: "h".into() }],
            body_sha256: None,
        };
        head.headers.push(types::Pair { key: "bad name".into(), value: "v".into() });
        let r = upstream_request(&head, Bytes::new()).unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
        assert!(r.reason.contains("`bad name`"), "{}", r.reason);
        head.headers = vec![types::Pair { key: "x".into(), value: "v".into() }];
        assert!(upstream_request(&head, Bytes::new()).unwrap_err().reason.contains("Host"));
        head.headers = vec![types::Pair { key: "host".into(), value: "line\nbreak".into() }];
        assert!(upstream_request(&head, Bytes::new()).unwrap_err().reason.contains("`host`"));
    }
}
