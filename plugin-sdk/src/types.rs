//! The plain-Rust values plugins work with. They mirror the records of `wit/plugin.wit`; the
//! export glue converts at the boundary so plugin code never sees generated bindings.

use std::collections::BTreeMap;

// ---------------------------------------------------------------------------------------------
// Scorer

/// One candidate path's measured metrics, end to end.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PathMetrics {
    /// Round-trip latency in milliseconds.
    pub rtt_ms: f64,
    /// Packet loss ratio, 0.0 (none) to 1.0 (all lost).
    pub loss: f64,
    /// Jitter in milliseconds.
    pub jitter_ms: f64,
    /// Number of relay-to-relay hops.
    pub hops: u32,
    /// Further metrics by name.
    pub extra: BTreeMap<String, f64>,
}

impl PathMetrics {
    /// An extra metric by name, if the gateway measured it.
    pub fn extra(&self, name: &str) -> Option<f64> {
        self.extra.get(name).copied()
    }
}

/// A weight a scorer understands, with its default.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightInfo {
    /// The weight's name, as operators write it (`"latency"`).
    pub name: String,
    /// The value used when the operator sets none.
    pub default_value: f64,
    /// One line: what it does and in which unit it applies.
    pub description: String,
}

impl WeightInfo {
    /// A weight with its default and a one-line description.
    pub fn new(name: &str, default_value: f64, description: &str) -> Self {
        WeightInfo { name: name.to_owned(), default_value, description: description.to_owned() }
    }
}

/// The operator's weights, already merged with the scorer's declared defaults.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Weights {
    values: BTreeMap<String, f64>,
}

impl Weights {
    /// Merge the operator's `given` weights over the `declared` defaults.
    ///
    /// With `allow_unknown` false, a weight that is not declared is an error naming it and the
    /// known ones: a misspelt weight must not be silently ignored.
    pub fn resolve(
        declared: &[WeightInfo],
        given: impl IntoIterator<Item = (String, f64)>,
        allow_unknown: bool,
    ) -> Result<Weights, String> {
        let mut values: BTreeMap<String, f64> =
            declared.iter().map(|w| (w.name.clone(), w.default_value)).collect();
        for (name, value) in given {
            if !value.is_finite() {
                return Err(format!("weight `{name}` is not a finite number ({value})"));
            }
            if !allow_unknown && !values.contains_key(&name) {
                let known: Vec<&str> = declared.iter().map(|w| w.name.as_str()).collect();
                return Err(format!(
                    "unknown weight `{name}`; this scorer understands: {}",
                    if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                ));
            }
            values.insert(name, value);
        }
        Ok(Weights { values })
    }

    /// The weight's value: the operator's, else the declared default, else 0.0.
    pub fn get(&self, name: &str) -> f64 {
        self.values.get(name).copied().unwrap_or(0.0)
    }

    /// Every weight by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.values.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

/// A scorer's verdict on one path.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// Preference value: higher is better. Must be finite.
    pub value: f64,
    /// A short, one-line explanation for the decision record.
    pub explanation: String,
}

impl Score {
    /// A score with its explanation.
    pub fn new(value: f64, explanation: impl Into<String>) -> Self {
        Score { value, explanation: explanation.into() }
    }
}

// ---------------------------------------------------------------------------------------------
// Authorizer and adapter

/// A capability: something a platform can do that applications may bind to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capability {
    /// `"object-storage"`, `"compute"`, `"tcp"`, ….
    pub kind: String,
    /// The capability's name within its kind.
    pub name: String,
    /// Free-form attributes.
    pub attributes: Vec<(String, String)>,
}

/// A request to authorize a capability for an account on a platform.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthorizationRequest {
    /// The requesting master account.
    pub account: String,
    /// The platform offering the capability.
    pub platform: String,
    /// The capability asked for.
    pub capability: Capability,
    /// Request context (request id, time, source).
    pub context: Vec<(String, String)>,
}

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Granted; the reason (which rule matched) goes to the audit log.
    Grant(String),
    /// Refused; the reason is shown to the requester.
    Refuse(String),
}

/// One service of a cloud, as the catalog records it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceRecord {
    /// `"object-storage"`, `"compute"`, `"identity"`, ….
    pub kind: String,
    /// The service's name at the platform.
    pub name: String,
    /// URL or host:port where it is reached.
    pub endpoint: String,
    /// Region or site, when the cloud has one.
    pub region: Option<String>,
    /// Free-form attributes.
    pub attributes: Vec<(String, String)>,
}

/// The head of a proxied HTTP request. The body never reaches the plugin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestHead {
    /// `GET`, `PUT`, ….
    pub method: String,
    /// Percent-encoded path, without the query.
    pub path: String,
    /// Query string without the `?`.
    pub query: String,
    /// Headers in order, repeated ones repeated.
    pub headers: Vec<(String, String)>,
    /// Lower-case hex SHA-256 of the body, when the adapter asked for it.
    pub body_sha256: Option<String>,
}

impl RequestHead {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Replace every header named `name` (case-insensitive) with one `name: value`.
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        self.remove_header(name);
        self.headers.push((name.to_owned(), value.into()));
    }

    /// Remove every header named `name` (case-insensitive).
    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }
}

/// The credentials the requesting account maps to at the target platform.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct TargetCredentials {
    /// The target platform's name in Skybridge.
    pub platform: String,
    /// The identity at the target (access key id, account, user).
    pub principal: String,
    /// Its secret. Never log it.
    pub secret: String,
    /// Region, project, domain, cached token, ….
    pub attributes: Vec<(String, String)>,
}

impl TargetCredentials {
    /// An attribute by key.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

// Hand-written so that a stray `{:?}` cannot leak the secret.
impl std::fmt::Debug for TargetCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetCredentials")
            .field("platform", &self.platform)
            .field("principal", &self.principal)
            .field("secret", &"<redacted>")
            .field("attributes", &self.attributes)
            .finish()
    }
}
