//! The site's HTTP client for its own cloud: one request at a time to a configured endpoint,
//! every answer bounded in time and size.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// A cloud endpoint as configured: `http://host:port[/base]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudUrl {
    /// `host:port`, for the connection and the `Host` header.
    pub authority: String,
    /// A path prefix every request goes under (no trailing `/`), often empty.
    pub base: String,
    /// The URL as written, for records and messages.
    pub url: String,
}

impl CloudUrl {
    /// Parse an endpoint URL. Only plain `http://` is spoken yet: a cloud endpoint over TLS
    /// is refused with a clear error rather than reached without one.
    pub fn parse(url: &str) -> Result<CloudUrl, String> {
        let rest = match url.strip_prefix("http://") {
            Some(rest) => rest,
            None if url.starts_with("https://") => {
                return Err(format!(
                    "`{url}`: https cloud endpoints are not supported yet; reach the cloud API over \
                     plain http on a trusted network (emulators, a local proxy)"
                ));
            }
            None => return Err(format!("`{url}` is not an http:// URL")),
        };
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("`{url}`: give host:port, without user information"));
        }
        let authority = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(CloudUrl { authority, base: base.to_owned(), url: url.trim_end_matches('/').to_owned() })
    }
}

/// An answer, read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status.
    pub status: u16,
    /// Headers, names lower case.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Bytes,
}

/// Send one request to `to` and read the answer, at most `max_body` bytes, within `timeout`.
pub async fn send(
    to: &CloudUrl,
    method: &str,
    path_and_query: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
    max_body: usize,
    timeout: Duration,
) -> Result<Answer, String> {
    tokio::time::timeout(timeout, send_inner(to, method, path_and_query, headers, body, max_body))
        .await
        .map_err(|_| format!("no answer within {} s", timeout.as_secs()))?
}

async fn send_inner(
    to: &CloudUrl,
    method: &str,
    path_and_query: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
    max_body: usize,
) -> Result<Answer, String> {
    let stream = tokio::net::TcpStream::connect(&to.authority)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", to.authority))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = Request::builder().method(method).uri(path_and_query);
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request =
        request.body(Full::new(Bytes::from(body))).map_err(|e| format!("an invalid request: {e}"))?;
    let result = async {
        let response =
            sender.send_request(request).await.map_err(|e| format!("the cloud did not answer: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, max_body).collect().await.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                format!("an answer larger than {} MiB (bounded by discovery.max_answer_mib)", max_body >> 20)
            } else {
                format!("reading the answer: {e}")
            }
        })?;
        let headers = parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        Ok(Answer { status: parts.status.as_u16(), headers, body: body.to_bytes() })
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_https_is_refused_clearly() {
        let u = CloudUrl::parse("http://127.0.0.1:5000/").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.base.as_str(), u.url.as_str()),
            ("127.0.0.1:5000", "", "http://127.0.0.1:5000")
        );
        let u = CloudUrl::parse("http://keystone.local/identity/").unwrap();
        assert_eq!((u.authority.as_str(), u.base.as_str()), ("keystone.local:80", "/identity"));
        assert!(CloudUrl::parse("https://s3.amazonaws.com").unwrap_err().contains("not supported yet"));
        assert!(CloudUrl::parse("ftp://x").unwrap_err().contains("not an http"));
        assert!(CloudUrl::parse("http://user:pw@x").unwrap_err().contains("user information"));
    }
}
