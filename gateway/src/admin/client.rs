//! The one client of the admin API: typed calls over the [`super::api`] types, used by
//! `skybridge ctl`, the demo and the integration tests. A field renamed on the server is a
//! compile error here, not an empty column.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::api::{
    AccountView, AuditRecord, Authorization, BindRequest, BindingView, ConnectRequest, Credentials,
    DecisionRecord, Deleted, EntryView, ErrorBody, InventoryRecord, LinkView, NewAccount, NodeView, Page,
    PlatformView, PluginView, Policy, PolicyUpdate, RefreshRecord, RefreshStarted, SessionRecord, Unbound,
};

/// HTTP methods, for [`AdminClient::exchange`] and [`AdminClient::call`].
pub use hyper::Method;

/// The largest answer read (the API's lists are bounded; this bounds a misbehaving server).
const MAX_ANSWER: usize = 16 << 20;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL is not one the client can use.
    #[error("`{url}`: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server could not be reached or the exchange broke off.
    #[error("cannot reach the admin API at {url}: {reason}")]
    Unreachable {
        /// The server.
        url: String,
        /// The transport's message.
        reason: String,
    },
    /// The server answered with an error.
    #[error("{message} (HTTP {status})")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The server's `error`.
        message: String,
    },
    /// The answer is not what the API promises.
    #[error("the admin API answered {status} with a body that does not parse: {reason}")]
    Decode {
        /// The HTTP status.
        status: u16,
        /// The parser's message.
        reason: String,
    },
}

/// An answer as it came: status, headers, body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The headers.
    pub headers: hyper::HeaderMap,
    /// The body.
    pub body: Bytes,
}

/// What an event stream brings.
#[derive(Debug, Clone, PartialEq)]
pub enum Watched {
    /// An event.
    Event(super::api::Stamped),
    /// The client fell behind: this many events were lost.
    Lagged(u64),
}

/// The controller's events, as [`AdminClient::events`] streams them.
#[derive(Debug)]
pub struct EventStream {
    url: String,
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

/// The longest message an event stream may carry before the client gives up on it.
const MAX_EVENT: usize = 1 << 20;

impl EventStream {
    /// The next event; `None` when the controller ended the stream.
    pub async fn next(&mut self) -> Result<Option<Watched>, ClientError> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let message: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&message);
                let mut kind = "message";
                let mut data = String::new();
                for line in text.lines() {
                    if let Some(k) = line.strip_prefix("event: ") {
                        kind = k;
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push_str(d);
                    }
                }
                if data.is_empty() {
                    continue; // a comment (keep-alive)
                }
                let decode =
                    |e: serde_json::Error| ClientError::Decode { status: 200, reason: e.to_string() };
                return Ok(Some(if kind == "lagged" {
                    let v: serde_json::Value = serde_json::from_str(&data).map_err(decode)?;
                    Watched::Lagged(v["missed"].as_u64().unwrap_or(0))
                } else {
                    Watched::Event(serde_json::from_str(&data).map_err(decode)?)
                }));
            }
            if self.buf.len() > MAX_EVENT {
                return Err(ClientError::Decode { status: 200, reason: "an event larger than 1 MiB".into() });
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(ClientError::Unreachable { url: self.url.clone(), reason: e.to_string() });
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// A client of one controller's admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    url: String,
    authority: String,
    token: String,
    /// How long one exchange may take, connecting and reading the answer included.
    timeout: Duration,
}

/// How long one exchange may take by default: past the longest an answer may legitimately
/// take (a binding's path decision and tunnel setup take seconds; a catalog watch gets its
/// wait on top), so that a controller that does not answer (paused, wedged) fails the call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(90);

impl AdminClient {
    /// A client for `url` (`http://HOST:PORT`) with the admin bearer `token`.
    pub fn new(url: &str, token: impl Into<String>) -> Result<AdminClient, ClientError> {
        let bad = |reason: &str| ClientError::Url { url: url.to_owned(), reason: reason.to_owned() };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("the admin API speaks plain http (put it behind a TLS proxy for remote use)"));
        }
        let authority = uri.authority().ok_or_else(|| bad("the URL has no host"))?.to_string();
        let url = url.trim_end_matches('/').to_owned();
        Ok(AdminClient { url, authority, token: token.into(), timeout: DEFAULT_TIMEOUT })
    }

    /// A new HTTP/1.1 connection to the API, its driver spawned.
    async fn connect(&self) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable { url: self.url.clone(), reason };
        let stream =
            tokio::net::TcpStream::connect(&self.authority).await.map_err(|e| unreachable(e.to_string()))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// A client for the API listening at `addr`.
    pub fn for_addr(addr: SocketAddr, token: impl Into<String>) -> AdminClient {
        let url = format!("http://{addr}");
        AdminClient { url, authority: addr.to_string(), token: token.into(), timeout: DEFAULT_TIMEOUT }
    }

    /// One request, and its answer whatever it is (for callers that look at errors
    /// themselves). `token: false` sends none.
    pub async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        token: bool,
    ) -> Result<Answer, ClientError> {
        self.exchange_with(method, path, body, token, &[]).await
    }

    /// The same client, with calls that give up after `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> AdminClient {
        self.timeout = timeout;
        self
    }

    /// [`AdminClient::exchange`] with extra request headers; within the client's timeout.
    pub async fn exchange_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        token: bool,
        headers: &[(&str, &str)],
    ) -> Result<Answer, ClientError> {
        let exchange = self.exchange_untimed(method, path, body, token, headers);
        tokio::time::timeout(self.timeout, exchange).await.unwrap_or_else(|_| {
            Err(ClientError::Unreachable {
                url: self.url.clone(),
                reason: format!(
                    "no answer within {} s (the controller is stopped or overloaded?)",
                    self.timeout.as_secs()
                ),
            })
        })
    }

    async fn exchange_untimed(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        token: bool,
        headers: &[(&str, &str)],
    ) -> Result<Answer, ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable { url: self.url.clone(), reason };
        let mut sender = self.connect().await?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.authority)
            .header(CONTENT_TYPE, "application/json");
        if token {
            request = request.header(AUTHORIZATION, format!("Bearer {}", self.token));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Url { url: format!("{}{path}", self.url), reason: e.to_string() })?;
        let response = sender.send_request(request).await.map_err(|e| unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        let (parts, body) = response.into_parts();
        let body = http_body_util::Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| unreachable(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok(Answer { status, headers: parts.headers, body })
    }

    /// A call whose success answer is an `R`; an error answer is [`ClientError::Api`].
    pub async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<R, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Url { url: path.to_owned(), reason: e.to_string() })?;
        let Answer { status, body: bytes, .. } = self.exchange(method, path, body, true).await?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_owned());
            return Err(ClientError::Api { status, message });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode { status, reason: e.to_string() })
    }

    async fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R, ClientError> {
        self.call::<(), R>(Method::GET, path, None).await
    }

    /// Every item of the paged listing at `path` (which has a query already), page after page.
    async fn all_pages<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, ClientError> {
        let mut all = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let got: Page<T> = match &page {
                Some(page) => self.get(&format!("{path}&page={page}")).await?,
                None => self.get(path).await?,
            };
            all.extend(got.items);
            match got.next_page {
                Some(next) => page = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// The controller's events from now on (`GET /v1/events`).
    pub async fn events(&self) -> Result<EventStream, ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable { url: self.url.clone(), reason };
        let mut sender = self.connect().await?;
        let request = Request::builder()
            .method(Method::GET)
            .uri("/v1/events")
            .header(HOST, &self.authority)
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Url { url: self.url.clone(), reason: e.to_string() })?;
        let response = sender.send_request(request).await.map_err(|e| unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().to_owned());
            return Err(ClientError::Api { status, message });
        }
        Ok(EventStream { url: self.url.clone(), body: response.into_body(), buf: Vec::new() })
    }

    /// Registered relays and sites.
    pub async fn nodes(&self) -> Result<Vec<NodeView>, ClientError> {
        self.get("/v1/nodes").await
    }

    /// The controllers of the group (the one asked alone when it is in none).
    pub async fn controllers(&self) -> Result<Vec<super::api::MemberView>, ClientError> {
        self.get("/v1/controllers").await
    }

    /// Links as relays report them.
    pub async fn links(&self) -> Result<Vec<LinkView>, ClientError> {
        self.get("/v1/links").await
    }

    /// Platforms and their nearest relays.
    pub async fn platforms(&self) -> Result<Vec<PlatformView>, ClientError> {
        self.get("/v1/platforms").await
    }

    /// Plugins in service.
    pub async fn plugins(&self) -> Result<Vec<PluginView>, ClientError> {
        self.get("/v1/plugins").await
    }

    /// A page of `platform`'s inventory (`page`: the previous page's `next_page`).
    pub async fn inventory(
        &self,
        platform: &str,
        limit: usize,
        page: Option<&str>,
    ) -> Result<Page<InventoryRecord>, ClientError> {
        let mut path = format!("/v1/platforms/{platform}/inventory?limit={limit}");
        if let Some(page) = page {
            path.push_str(&format!("&page={page}"));
        }
        self.get(&path).await
    }

    /// Every record of `platform`'s inventory, page after page.
    pub async fn inventory_all(&self, platform: &str) -> Result<Vec<InventoryRecord>, ClientError> {
        self.all_pages(&format!("/v1/platforms/{platform}/inventory?limit=1000")).await
    }

    /// `platform`'s latest refreshes, newest first.
    pub async fn refreshes(&self, platform: &str) -> Result<Vec<RefreshRecord>, ClientError> {
        self.get(&format!("/v1/platforms/{platform}/refreshes")).await
    }

    /// Ask `platform`'s site to discover now.
    pub async fn refresh(&self, platform: &str) -> Result<RefreshStarted, ClientError> {
        self.call::<(), _>(Method::POST, &format!("/v1/platforms/{platform}/refresh"), None).await
    }

    /// A page of the catalog (`query`: e.g. `kind=object-store&platform=aws-east`, may be empty).
    pub async fn catalog(&self, query: &str, page: Option<&str>) -> Result<Page<EntryView>, ClientError> {
        let mut path = format!("/v1/catalog?limit=1000&{query}");
        if let Some(page) = page {
            path.push_str(&format!("&page={page}"));
        }
        self.get(&path).await
    }

    /// Every catalog entry passing `query`, page after page.
    pub async fn catalog_all(&self, query: &str) -> Result<Vec<EntryView>, ClientError> {
        self.all_pages(&format!("/v1/catalog?limit=1000&{query}")).await
    }

    /// Wait (at most `wait_s` seconds) for the catalog to change past revision `since`; the
    /// first page (of `query`) then, with the new revision.
    pub async fn watch_catalog(
        &self,
        query: &str,
        since: u64,
        wait_s: u64,
    ) -> Result<Page<EntryView>, ClientError> {
        // The server may wait `wait_s` before it answers: the call may take that much longer.
        let patient = self.clone().with_timeout(self.timeout + Duration::from_secs(wait_s));
        patient.get(&format!("/v1/catalog?limit=1000&since={since}&wait={wait_s}&{query}")).await
    }

    /// One catalog entry.
    pub async fn catalog_entry(&self, id: &str) -> Result<EntryView, ClientError> {
        self.get(&format!("/v1/catalog/{id}")).await
    }

    /// Every capability authorization, page after page.
    pub async fn authorizations(&self) -> Result<Vec<Authorization>, ClientError> {
        self.all_pages("/v1/authorizations?limit=1000").await
    }

    /// The latest decisions of the handshake, newest first.
    pub async fn authorization_audit(&self) -> Result<Vec<AuditRecord>, ClientError> {
        self.get("/v1/authorizations/audit").await
    }

    /// Decide a path from platform `from` to platform `to`.
    pub async fn decide(&self, from: &str, to: &str) -> Result<DecisionRecord, ClientError> {
        let request = ConnectRequest { from: from.to_owned(), to: to.to_owned() };
        self.call(Method::POST, "/v1/decisions", Some(&request)).await
    }

    /// A stored decision.
    pub async fn decision(&self, id: u64) -> Result<DecisionRecord, ClientError> {
        self.get(&format!("/v1/decisions/{id}")).await
    }

    /// The latest decisions, newest first.
    pub async fn decisions(&self) -> Result<Vec<DecisionRecord>, ClientError> {
        self.get("/v1/decisions").await
    }

    /// Open a binding.
    pub async fn bind(&self, request: &BindRequest) -> Result<BindingView, ClientError> {
        self.call(Method::POST, "/v1/bindings", Some(request)).await
    }

    /// One binding.
    pub async fn binding(&self, id: u64) -> Result<BindingView, ClientError> {
        self.get(&format!("/v1/bindings/{id}")).await
    }

    /// Every binding.
    pub async fn bindings(&self) -> Result<Vec<BindingView>, ClientError> {
        self.get("/v1/bindings").await
    }

    /// Close a binding (through its owner, when another controller of the group serves it).
    pub async fn unbind(&self, id: u64) -> Result<Unbound, ClientError> {
        self.call::<(), _>(Method::DELETE, &format!("/v1/bindings/{id}"), None).await
    }

    /// Recent sessions, newest first.
    pub async fn sessions(&self) -> Result<Vec<SessionRecord>, ClientError> {
        self.get("/v1/sessions").await
    }

    /// Every account.
    pub async fn accounts(&self) -> Result<Vec<AccountView>, ClientError> {
        self.get("/v1/accounts").await
    }

    /// One account.
    pub async fn account(&self, id: &str) -> Result<AccountView, ClientError> {
        self.get(&format!("/v1/accounts/{id}")).await
    }

    /// Create an account.
    pub async fn create_account(&self, new: &NewAccount) -> Result<AccountView, ClientError> {
        self.call(Method::POST, "/v1/accounts", Some(new)).await
    }

    /// Delete an account.
    pub async fn delete_account(&self, id: &str) -> Result<Deleted, ClientError> {
        self.call::<(), _>(Method::DELETE, &format!("/v1/accounts/{id}"), None).await
    }

    /// Map account `id` to `credentials` at `platform`.
    pub async fn map_credentials(
        &self,
        id: &str,
        platform: &str,
        credentials: &Credentials,
    ) -> Result<AccountView, ClientError> {
        self.call(Method::PUT, &format!("/v1/accounts/{id}/credentials/{platform}"), Some(credentials)).await
    }

    /// Remove account `id`'s mapping at `platform`.
    pub async fn unmap_credentials(&self, id: &str, platform: &str) -> Result<AccountView, ClientError> {
        self.call::<(), _>(Method::DELETE, &format!("/v1/accounts/{id}/credentials/{platform}"), None).await
    }

    /// The policy in force.
    pub async fn policy(&self) -> Result<Policy, ClientError> {
        self.get("/v1/policy").await
    }

    /// Change the policy.
    pub async fn set_policy(&self, update: &PolicyUpdate) -> Result<Policy, ClientError> {
        self.call(Method::PUT, "/v1/policy", Some(update)).await
    }
}
