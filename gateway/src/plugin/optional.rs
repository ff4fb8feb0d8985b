//! The types of the optional interfaces — `deferring`, `discovering`, `token-exchange` — lifted
//! and lowered by hand: bindgen's per-world types would give each world its own copy, and these
//! are found in a component's exports at load time rather than through a world's bindings.

use super::bindings::types;

/// `deferring.consent`: an authorizer's answer that may be "not yet".
#[derive(Debug, Clone, PartialEq, Eq, wasmtime::component::ComponentType, wasmtime::component::Lift)]
#[component(variant)]
pub enum Consent {
    /// Granted; why.
    #[component(name = "grant")]
    Grant(String),
    /// Refused; why.
    #[component(name = "refuse")]
    Refuse(String),
    /// Not decided yet.
    #[component(name = "pending")]
    Pending(PendingDecision),
}

/// `deferring.pending-decision`.
#[derive(Debug, Clone, PartialEq, Eq, wasmtime::component::ComponentType, wasmtime::component::Lift)]
#[component(record)]
pub struct PendingDecision {
    /// Why, who must decide.
    pub reason: String,
    /// When to ask again, s.
    #[component(name = "retry-after-s")]
    pub retry_after_s: u32,
}

/// `discovering.discovered-service`: one service of the cloud, with its native key.
#[derive(Debug, Clone, PartialEq, wasmtime::component::ComponentType, wasmtime::component::Lift)]
#[component(record)]
pub struct DiscoveredService {
    /// The cloud's own key for it.
    #[component(name = "native-id")]
    pub native_id: String,
    /// Its kind (taxonomy).
    pub kind: String,
    /// Its name at the platform.
    pub name: String,
    /// Where it is reached.
    pub endpoint: String,
    /// Region, if any.
    pub region: Option<String>,
    /// Attributes.
    pub attributes: Vec<types::Pair>,
}

/// `discovering.cloud-request`: a request the site makes to its cloud for the adapter.
#[derive(Debug, Clone, PartialEq, wasmtime::component::ComponentType, wasmtime::component::Lift)]
#[component(record)]
pub struct CloudRequest {
    /// Which configured cloud endpoint; `None`: the default.
    pub endpoint: Option<String>,
    /// Method.
    pub method: String,
    /// Percent-encoded path.
    pub path: String,
    /// Query, without `?`.
    pub query: String,
    /// Headers.
    pub headers: Vec<types::Pair>,
    /// Body.
    pub body: Vec<u8>,
    /// Credential attributes for signing it.
    pub signing: Vec<types::Pair>,
}

/// `discovering.cloud-response`: the cloud's answer, handed to the adapter.
#[derive(Debug, Clone, PartialEq, wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(record)]
pub struct CloudResponse {
    /// Status.
    pub status: u16,
    /// Headers, names in lower case.
    pub headers: Vec<types::Pair>,
    /// Body.
    pub body: Vec<u8>,
}

/// `discovering.discovery-step`.
#[derive(Debug, Clone, PartialEq, wasmtime::component::ComponentType, wasmtime::component::Lift)]
#[component(record)]
pub struct DiscoveryStep {
    /// Services found in the answer just read.
    pub services: Vec<DiscoveredService>,
    /// The next request; `None`: done.
    pub next: Option<CloudRequest>,
    /// The adapter's state for the next call.
    pub cursor: String,
    /// Native ids the cloud says are gone.
    pub gone: Vec<String>,
}

/// `token-exchange.token-request`: an HTTP request the host sends for a token.
#[derive(Clone, PartialEq, wasmtime::component::ComponentType, wasmtime::component::Lift)]
#[component(record)]
pub struct TokenRequest {
    /// The target site's endpoint to send it to; `None`: the binding's own.
    pub endpoint: Option<String>,
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers.
    pub headers: Vec<types::Pair>,
    /// Body (it carries a password: never log it).
    pub body: Vec<u8>,
}

impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRequest")
            .field("endpoint", &self.endpoint)
            .field("method", &self.method)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// `token-exchange.token`: a token and its expiry.
#[derive(Clone, PartialEq, wasmtime::component::ComponentType, wasmtime::component::Lift)]
#[component(record)]
pub struct Token {
    /// The token.
    pub value: String,
    /// Unix seconds.
    #[component(name = "expires-unix-s")]
    pub expires_unix_s: u64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("expires_unix_s", &self.expires_unix_s).finish_non_exhaustive()
    }
}
