//! The plain-Rust values plugins work with. They mirror the records of `wit/plugin.wit`; the
//! export glue converts at the boundary so plugin code never sees generated bindings.

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
    pub extra: Vec<(String, f64)>,
}

impl PathMetrics {
    /// An extra metric by name, if the gateway measured it.
    pub fn extra(&self, name: &str) -> Option<f64> {
        self.extra.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

/// A weight a scorer understands, with its default. Declared once, as a constant:
/// `const WEIGHTS: &[WeightInfo] = &[WeightInfo::new("latency", 1.0, "per ms")];`
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightInfo {
    /// The weight's name, as operators write it (`"latency"`).
    pub name: &'static str,
    /// The value used when the operator sets none.
    pub default_value: f64,
    /// One line: what it does and in which unit it applies.
    pub description: &'static str,
}

impl WeightInfo {
    /// A weight with its default and a one-line description.
    pub const fn new(name: &'static str, default_value: f64, description: &'static str) -> Self {
        WeightInfo { name, default_value, description }
    }
}

/// The operator's weights over the scorer's declared defaults. The operator's values are kept
/// in the vector they arrived in and searched first, then the declarations: a handful of
/// entries, so a linear search beats any map, and resolving allocates nothing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Weights {
    declared: &'static [WeightInfo],
    given: Vec<(String, f64)>,
}

impl Weights {
    /// The operator's `given` weights over the `declared` defaults.
    ///
    /// With `allow_unknown` false, a weight that is not declared is an error naming it and the
    /// known ones: a misspelt weight must not be silently ignored.
    pub fn resolve(
        declared: &'static [WeightInfo],
        given: impl IntoIterator<Item = (String, f64)>,
        allow_unknown: bool,
    ) -> Result<Weights, String> {
        let given: Vec<(String, f64)> = given.into_iter().collect();
        for (name, value) in &given {
            if !value.is_finite() {
                return Err(format!("weight `{name}` is not a finite number ({value})"));
            }
            if !allow_unknown && !declared.iter().any(|w| w.name == name) {
                let known: Vec<&str> = declared.iter().map(|w| w.name).collect();
                return Err(format!(
                    "unknown weight `{name}`; this scorer understands: {}",
                    if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                ));
            }
        }
        Ok(Weights { declared, given })
    }

    /// The weight's value: the operator's (the last one given wins), else the declared
    /// default, else 0.0.
    pub fn get(&self, name: &str) -> f64 {
        if let Some((_, v)) = self.given.iter().rev().find(|(n, _)| same_name(n, name)) {
            return *v;
        }
        self.declared.iter().find(|w| same_name(w.name, name)).map(|w| w.default_value).unwrap_or(0.0)
    }

    /// Every weight with its value: declared ones first, in declaration order, then
    /// undeclared ones the operator gave.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        let declared = self.declared.iter().map(|w| (w.name, self.get(w.name)));
        let extra = self
            .given
            .iter()
            .enumerate()
            .filter(|(i, (n, _))| {
                !self.declared.iter().any(|w| w.name == n) && !self.given[i + 1..].iter().any(|(m, _)| m == n)
            })
            .map(|(_, (n, v))| (n.as_str(), *v));
        declared.chain(extra)
    }
}

/// `a == b` for short names, compared inline: in wasm `==` on strings calls `memcmp`, a
/// byte loop behind a function call, and `get` runs several times per scoring call.
fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// Formats a number with two decimals using integer arithmetic: much cheaper than `{:.2}`,
/// which matters in a scorer's explanation, built on every call. It rounds `x·100` to the
/// nearest integer, so for a value within float error of a half-hundredth (0.015 is really
/// 0.01499…) the last digit may differ from `{:.2}`, which rounds the exact binary value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fixed2(pub f64);

impl Fixed2 {
    /// Append the number to `out` without going through `core::fmt` (the cheapest way to
    /// build an explanation on every call).
    pub fn push_to(self, out: &mut String) {
        if !self.0.is_finite() || self.0.abs() >= 9.0e14 {
            out.push_str(&format!("{:.2}", self.0));
            return;
        }
        // Round half away from zero; the saturating cast avoids a libm `round` call in wasm.
        let cents = (self.0 * 100.0 + 0.5f64.copysign(self.0)) as i64;
        let mut n = cents.unsigned_abs();
        // Filled from the end: two decimals, the point, the integer part, the sign.
        let mut buf = [0u8; 24];
        let mut at = buf.len();
        let mut put = |byte: u8| {
            at -= 1;
            buf[at] = byte;
        };
        for _ in 0..2 {
            put(b'0' + (n % 10) as u8);
            n /= 10;
        }
        put(b'.');
        loop {
            put(b'0' + (n % 10) as u8);
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if cents < 0 {
            put(b'-');
        }
        // Only ASCII was written, so this cannot fail; one append instead of one per digit.
        out.push_str(std::str::from_utf8(&buf[at..]).unwrap_or("?"));
    }
}

impl std::fmt::Display for Fixed2 {
    /// Width and fill flags are ignored.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = String::with_capacity(24);
        self.push_to(&mut out);
        f.write_str(&out)
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
    /// A kind of the catalog's taxonomy: `"object-store"`, `"compute"`, `"identity"`, ….
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
    /// Not decided yet (a person must look at it): the gateway asks again after
    /// `retry_after_s` seconds. Hosts that predate `deferring` see a refusal saying so.
    Pending {
        /// Why, and who must decide.
        reason: String,
        /// When to ask again, in seconds.
        retry_after_s: u32,
    },
}

/// One service of a cloud, as the catalog records it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceRecord {
    /// A kind of the catalog's taxonomy: `"object-store"`, `"compute"`, `"identity"`, ….
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

/// Decode `%XX` escapes in a path or query component (and nothing else: `+` stays `+`);
/// invalid UTF-8 after decoding is replaced. Signing schemes use it to canonicalise queries.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encode everything but RFC 3986's unreserved characters (`A–Z a–z 0–9 - _ . ~`):
/// query values, SigV4's canonical forms.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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

/// An HTTP request for a token, which the host sends on the adapter's behalf.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct TokenRequest {
    /// The target site's endpoint to send it to; `None`: the binding's own endpoint.
    pub endpoint: Option<String>,
    /// `POST`, ….
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// The body (it usually carries the password: never log it).
    pub body: Vec<u8>,
}

impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRequest")
            .field("endpoint", &self.endpoint)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .finish_non_exhaustive()
    }
}

/// A token from an identity service and when it expires.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The token.
    pub value: String,
    /// Unix time, seconds.
    pub expires_unix_s: u64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("expires_unix_s", &self.expires_unix_s)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Discovery

/// One service a cloud has, with the cloud's own stable key for it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiscoveredService {
    /// The cloud's own key, unique within the platform (bucket, container, endpoint id, …).
    pub native_id: String,
    /// The service itself.
    pub service: ServiceRecord,
}

/// An HTTP request to the site's cloud, made by the site on the adapter's behalf.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CloudRequest {
    /// Which of the site's cloud endpoints, by name; `None`: the default one.
    pub endpoint: Option<String>,
    /// `GET`, `POST`, ….
    pub method: String,
    /// Percent-encoded path, without the query.
    pub path: String,
    /// Query string without the `?`.
    pub query: String,
    /// Headers (the site adds `host` and the authentication).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Credential attributes for signing this request, over the site's (AWS: `service`).
    pub signing: Vec<(String, String)>,
}

impl CloudRequest {
    /// A `GET` of `path?query` on the default endpoint.
    pub fn get(path: impl Into<String>, query: impl Into<String>) -> Self {
        CloudRequest { method: "GET".into(), path: path.into(), query: query.into(), ..Default::default() }
    }

    /// A `POST` of the form `form` (`application/x-www-form-urlencoded`) to `path` on the
    /// default endpoint: how the AWS query APIs (STS, EC2) are called.
    pub fn post_form(path: impl Into<String>, form: impl Into<String>) -> Self {
        CloudRequest {
            method: "POST".into(),
            path: path.into(),
            headers: vec![("content-type".into(), "application/x-www-form-urlencoded; charset=utf-8".into())],
            body: form.into().into_bytes(),
            ..Default::default()
        }
    }

    /// The same request, with one more header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The same request, signed with one more credential attribute (AWS: `("service", "s3")`).
    pub fn signing(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.signing.push((key.into(), value.into()));
        self
    }
}

/// The cloud's answer to a [`CloudRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CloudResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl CloudResponse {
    /// The first header named `name` (give it in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 is an error naming the request's purpose).
    pub fn text(&self, what: &str) -> Result<&str, String> {
        std::str::from_utf8(&self.body).map_err(|e| format!("{what}: the answer is not UTF-8 ({e})"))
    }

    /// Ok when the status is 2xx; otherwise an error naming `what` and the start of the body.
    pub fn success(&self, what: &str) -> Result<&Self, String> {
        if (200..300).contains(&self.status) {
            return Ok(self);
        }
        let start = String::from_utf8_lossy(&self.body[..self.body.len().min(300)]).into_owned();
        Err(format!("{what}: the cloud answered {}: {}", self.status, start.trim()))
    }
}

/// One step of discovery: what was found, and what to ask next.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiscoveryStep {
    /// Services found in the answer just read.
    pub services: Vec<DiscoveredService>,
    /// The next request; `None`: discovery is complete.
    pub next: Option<CloudRequest>,
    /// The adapter's state, handed back with the answer to `next`.
    pub cursor: String,
    /// Native ids the cloud says are gone (not merely unlisted): withdrawn at once.
    pub gone: Vec<String>,
}

impl DiscoveryStep {
    /// Ask `request` next, remembering `cursor`.
    pub fn fetch(request: CloudRequest, cursor: impl Into<String>) -> Self {
        DiscoveryStep { services: Vec::new(), next: Some(request), cursor: cursor.into(), gone: Vec::new() }
    }

    /// Discovery is complete.
    pub fn done() -> Self {
        DiscoveryStep::default()
    }

    /// The same step, carrying `services` found.
    pub fn with_services(mut self, services: Vec<DiscoveredService>) -> Self {
        self.services = services;
        self
    }

    /// The same step, carrying the native ids of services the cloud says are gone.
    pub fn with_gone(mut self, gone: Vec<String>) -> Self {
        self.gone = gone;
        self
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(percent_encode("a/b c+d~e_f.g-h€"), "a%2Fb%20c%2Bd~e_f.g-h%E2%82%AC");
        assert_eq!(percent_decode(&percent_encode("x y/z")), "x y/z");
    }

    #[test]
    fn percent_decoding_decodes_escapes_only() {
        assert_eq!(percent_decode("a%2Fb%20c+d%zz%4"), "a/b c+d%zz%4");
        assert_eq!(percent_decode("%E2%82%AC"), "€");
    }

    #[test]
    fn fixed2_matches_float_formatting() {
        for x in [0.0, 1.0, -1.0, 0.0149, 12.3449, -0.004, -12.346, 44.0, 1234567.891, 0.1 + 0.2, 99.999] {
            assert_eq!(Fixed2(x).to_string(), format!("{x:.2}").replace("-0.00", "0.00"), "{x}");
        }
        assert_eq!(Fixed2(0.015).to_string(), "0.02", "rounds x·100 (see the type's docs)");
        assert_eq!(Fixed2(f64::NAN).to_string(), "NaN");
        let mut out = String::from("x=");
        Fixed2(-7.125_01).push_to(&mut out);
        assert_eq!(out, "x=-7.13");
        assert_eq!(Fixed2(1e300).to_string(), format!("{:.2}", 1e300));
    }

    #[test]
    fn weights_resolve_defaults_overrides_and_unknowns() {
        const W: &[WeightInfo] = &[WeightInfo::new("a", 1.0, ""), WeightInfo::new("b", 2.0, "")];
        let w = Weights::resolve(W, [("b".to_owned(), 5.0)], false).unwrap();
        assert_eq!((w.get("a"), w.get("b"), w.get("zzz")), (1.0, 5.0, 0.0));
        assert!(
            Weights::resolve(W, [("c".to_owned(), 1.0)], false).unwrap_err().contains("understands: a, b")
        );
        assert!(Weights::resolve(W, [("a".to_owned(), f64::NAN)], false).is_err());
        let w = Weights::resolve(W, [("c".to_owned(), 3.0)], true).unwrap();
        assert_eq!(w.iter().collect::<Vec<_>>(), [("a", 1.0), ("b", 2.0), ("c", 3.0)]);
    }
}
