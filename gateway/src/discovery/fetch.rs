//! The site's HTTP client for its own cloud: one request at a time to a configured endpoint,
//! over TLS for `https://` (the machine's CA roots, plus the site's own `ca_file`), every
//! answer bounded in time and size.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// A cloud endpoint as configured: `http[s]://host[:port][/base]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudUrl {
    /// Whether it is reached over TLS (`https://`).
    pub tls: bool,
    /// The host, for TLS's server name.
    pub host: String,
    /// `host:port`, for the connection and the `Host` header.
    pub authority: String,
    /// A path prefix every request goes under (no trailing `/`), often empty.
    pub base: String,
    /// The URL as written, for records and messages.
    pub url: String,
}

impl CloudUrl {
    /// Parse an endpoint URL (`http://` or `https://`; default ports 80 and 443).
    pub fn parse(url: &str) -> Result<CloudUrl, String> {
        let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => return Err(format!("`{url}` is not an http:// or https:// URL")),
        };
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("`{url}`: give host:port, without user information"));
        }
        let (host, authority) = match authority.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() => (host, authority.to_owned()),
            _ => (authority, format!("{authority}:{}", if tls { 443 } else { 80 })),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Ok(CloudUrl {
            tls,
            host,
            authority,
            base: base.to_owned(),
            url: url.trim_end_matches('/').to_owned(),
        })
    }
}

/// The TLS client configuration for a site's cloud endpoints: the machine's CA roots and the
/// PEM certificates of `extra_roots` (a private cloud's CA).
pub fn tls_config(
    extra_roots: Option<&std::path::Path>,
) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A certificate the store cannot use is skipped, as every TLS client does.
        let _ = roots.add(cert);
    }
    if let Some(path) = extra_roots {
        let pem =
            crate::file::read(path, crate::file::MAX_PEM_BYTES, "the CA file").map_err(|e| e.to_string())?;
        let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
            .map(|c| c.map(rustls_pki_types::CertificateDer::into_owned))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("reading the CA file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("the CA file {} holds no certificate", path.display()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| format!("a certificate of {}: {e}", path.display()))?;
        }
    }
    if roots.is_empty() {
        return Err("no CA certificates: the machine has none, and [cloud] names no ca_file".into());
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
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

/// One request to a cloud endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// Method.
    pub method: &'a str,
    /// Path and query, as sent.
    pub path_and_query: &'a str,
    /// Headers.
    pub headers: &'a [(String, String)],
    /// Body.
    pub body: &'a [u8],
}

/// Send `request` to `to` (over TLS with `tls` for https) and read the answer, at most
/// `max_body` bytes, within `timeout`.
pub async fn send(
    tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
    to: &CloudUrl,
    request: Outgoing<'_>,
    max_body: usize,
    timeout: Duration,
) -> Result<Answer, String> {
    tokio::time::timeout(timeout, send_inner(tls, to, request, max_body))
        .await
        .map_err(|_| format!("no answer within {} s", timeout.as_secs()))?
}

async fn send_inner(
    tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
    to: &CloudUrl,
    request: Outgoing<'_>,
    max_body: usize,
) -> Result<Answer, String> {
    let stream = tokio::net::TcpStream::connect(&to.authority)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", to.authority))?;
    let _ = stream.set_nodelay(true);
    if !to.tls {
        return exchange(stream, request, max_body).await;
    }
    let config = tls.ok_or_else(|| format!("{}: no TLS configuration for https", to.url))?;
    let name = rustls_pki_types::ServerName::try_from(to.host.clone())
        .map_err(|e| format!("`{}` is not a server name: {e}", to.host))?;
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::clone(config))
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS with {}: {e}", to.authority))?;
    exchange(stream, request, max_body).await
}

/// One HTTP/1.1 exchange over `io`.
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static>(
    io: S,
    out: Outgoing<'_>,
    max_body: usize,
) -> Result<Answer, String> {
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| e.to_string())?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = Request::builder().method(out.method).uri(out.path_and_query);
    for (name, value) in out.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(Full::new(Bytes::copy_from_slice(out.body)))
        .map_err(|e| format!("an invalid request: {e}"))?;
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
    fn urls_parse_with_their_default_ports() {
        let u = CloudUrl::parse("http://127.0.0.1:5000/").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.base.as_str(), u.url.as_str()),
            ("127.0.0.1:5000", "", "http://127.0.0.1:5000")
        );
        let u = CloudUrl::parse("http://keystone.local/identity/").unwrap();
        assert_eq!((u.authority.as_str(), u.base.as_str(), u.tls), ("keystone.local:80", "/identity", false));
        let u = CloudUrl::parse("https://s3.amazonaws.com").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.host.as_str(), u.tls),
            ("s3.amazonaws.com:443", "s3.amazonaws.com", true)
        );
        assert!(CloudUrl::parse("ftp://x").unwrap_err().contains("not an http"));
        assert!(CloudUrl::parse("http://user:pw@x").unwrap_err().contains("user information"));
    }
}
