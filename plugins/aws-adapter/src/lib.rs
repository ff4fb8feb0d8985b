//! `aws-adapter` — session translation for AWS: re-signs a proxied request with AWS Signature
//! Version 4 for the credentials the requesting account maps to at the target platform.
//!
//! `rewrite-request` (the host has authenticated the client with its Skybridge account):
//!
//! 1. The service and region are the ones the client signed for (read from its
//!    `Authorization` credential scope) — so S3, EC2 or any other SigV4 service work alike —
//!    unless the mapping's attributes name a `region` (or `service`) to use instead.
//! 2. `Host` becomes the mapping's `host` attribute (the endpoint as the target sees it) when
//!    given; the client's `Authorization`, `X-Amz-Date` and `X-Amz-Security-Token` are dropped.
//! 3. The payload hash is the client's `X-Amz-Content-Sha256` when it sent one (S3 always does,
//!    `UNSIGNED-PAYLOAD` included), else the body's SHA-256 from the host.
//! 4. The request is signed as AWS documents it: canonical request → string to sign →
//!    signing key (HMAC chain over date, region, service) → `Authorization: AWS4-HMAC-SHA256
//!    Credential=…, SignedHeaders=…, Signature=…`, signing `host`, `x-amz-date`, every other
//!    `x-amz-*` header and `content-type`/`content-md5` when present. The time comes from the
//!    host clock; an `x-amz-security-token` attribute is added for temporary credentials.
//!
//! Crypto (SHA-256, HMAC-SHA256) is the host's, so the plugin bundles none. Paths are signed as
//! sent (S3's rule); services that want the path encoded twice are not handled yet (EC2 and
//! the other query APIs use `/`, which is the same either way).
//!
//! Tested against AWS's documented example and against botocore's signers.
//!
//! Discovery (the `discovering` interface) is in `discovery`: STS, S3 and EC2 listings.

mod discovery;

use skybridge_plugin_sdk::clock::Civil;
use skybridge_plugin_sdk::{
    Adapter, CloudResponse, DiscoveryStep, RequestHead, ServiceRecord, TargetCredentials, clock, crypto,
    export_adapter, percent_decode, percent_encode,
};

/// The AWS adapter.
pub struct AwsAdapter;

impl Adapter for AwsAdapter {
    const CLOUD_KIND: &'static str = "aws";

    fn needs_body_sha256() -> bool {
        true
    }

    fn parse_service_info(_document: &[u8], content_type: &str) -> Result<Vec<ServiceRecord>, String> {
        Err(format!("aws-adapter does not parse service information yet (got {content_type})"))
    }

    fn rewrite_request(head: RequestHead, creds: &TargetCredentials) -> Result<RequestHead, String> {
        let (seconds, _) = clock::now();
        sign(head, creds, seconds)
    }

    fn claimed_account(head: &RequestHead) -> Option<String> {
        head.header("authorization").and_then(client_auth).map(|a| a.access_key)
    }

    fn verify_client(head: &RequestHead, account_secret: &str) -> Result<(), String> {
        let (seconds, _) = clock::now();
        verify(head, account_secret, seconds)
    }

    fn start_discovery(context: &[(String, String)]) -> Result<DiscoveryStep, String> {
        discovery::start(context)
    }

    fn continue_discovery(
        context: &[(String, String)],
        cursor: &str,
        response: &CloudResponse,
    ) -> Result<DiscoveryStep, String> {
        discovery::next(context, cursor, response)
    }
}

export_adapter!(AwsAdapter);

/// A SigV4 credential scope.
struct Scope {
    /// `YYYYMMDD`.
    day: String,
    region: String,
    service: String,
}

impl Scope {
    fn credential_scope(&self) -> String {
        format!("{}/{}/{}/aws4_request", self.day, self.region, self.service)
    }
}

/// A client's SigV4 `Authorization` header, taken apart.
struct ClientAuth {
    access_key: String,
    scope: Scope,
    signed_headers: Vec<String>,
    signature: String,
}

/// Parse `AWS4-HMAC-SHA256 Credential=AK/DAY/REGION/SERVICE/aws4_request, SignedHeaders=a;b,
/// Signature=hex`.
fn client_auth(authorization: &str) -> Option<ClientAuth> {
    let rest = authorization.trim().strip_prefix("AWS4-HMAC-SHA256")?;
    let field = |name: &str| {
        rest.split(',').find_map(|p| p.trim().strip_prefix(name).and_then(|v| v.strip_prefix('=')))
    };
    let mut credential = field("Credential")?.split('/');
    let access_key = credential.next()?.to_owned();
    let scope = Scope {
        day: credential.next()?.to_owned(),
        region: credential.next()?.to_owned(),
        service: credential.next()?.to_owned(),
    };
    if credential.next() != Some("aws4_request") || credential.next().is_some() {
        return None;
    }
    let signed_headers = field("SignedHeaders")?.split(';').map(str::to_owned).collect();
    Some(ClientAuth { access_key, scope, signed_headers, signature: field("Signature")?.to_owned() })
}

/// The SigV4 signature of `head` over the headers `names` (lower-case, sorted), as AWS
/// documents it: canonical request → string to sign → signing key (HMAC chain over day,
/// region, service) → hex HMAC of the string to sign.
fn signature(
    head: &RequestHead,
    names: &[String],
    date: &str,
    scope: &Scope,
    payload: &str,
    secret: &str,
) -> String {
    // Canonical headers: values trimmed with inner runs of spaces folded; repeated headers
    // joined with commas.
    let mut canonical_headers = String::new();
    for name in names {
        let values: Vec<String> = head
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let path = if head.path.is_empty() { "/" } else { head.path.as_str() };
    let canonical_request = format!(
        "{}\n{path}\n{}\n{canonical_headers}\n{}\n{payload}",
        head.method,
        canonical_query(&head.query),
        names.join(";")
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{}\n{}",
        scope.credential_scope(),
        crypto::hex(&crypto::sha256(canonical_request.as_bytes()))
    );
    let mut key = crypto::hmac_sha256(format!("AWS4{secret}").as_bytes(), scope.day.as_bytes()).to_vec();
    for part in [scope.region.as_str(), scope.service.as_str(), "aws4_request"] {
        key = crypto::hmac_sha256(&key, part.as_bytes()).to_vec();
    }
    crypto::hex(&crypto::hmac_sha256(&key, string_to_sign.as_bytes()))
}

/// How far a client's `X-Amz-Date` may be from the host clock (AWS allows 15 minutes).
const MAX_SKEW_S: u64 = 15 * 60;

/// Check a client's SigV4 signature, made with its Skybridge account as the access key id and
/// the account's secret as the secret key, at Unix time `now` — as strictly as AWS, since what
/// passes is re-signed with the account's real cloud key: every `x-amz-*` header must be
/// signed (AWS refuses unsigned ones too), and a payload hash must be the body's
/// (`UNSIGNED-PAYLOAD` and unsigned aws-chunked trailers pass as AWS lets them; chunk-signed
/// streaming payloads cannot be re-signed and are refused). `Content-Type` and `Content-MD5`
/// may go unsigned, as at AWS; the re-signing then leaves them unsigned too.
pub fn verify(head: &RequestHead, account_secret: &str, now: u64) -> Result<(), String> {
    let auth = head
        .header("authorization")
        .and_then(client_auth)
        .ok_or("the request carries no AWS Signature V4 `Authorization` header")?;
    let date = head.header("x-amz-date").ok_or("the request has no X-Amz-Date header")?;
    let signed_at = parse_amz_date(date).ok_or_else(|| format!("X-Amz-Date `{date}` is malformed"))?;
    if signed_at.abs_diff(now) > MAX_SKEW_S {
        return Err(format!("the request was signed at {date}, more than 15 minutes from now"));
    }
    if !date.starts_with(&auth.scope.day) {
        return Err("the credential scope's date is not the X-Amz-Date's".into());
    }
    if !auth.signed_headers.iter().any(|h| h == "host") {
        return Err("the signature does not cover the Host header".into());
    }
    if let Some((name, _)) = head.headers.iter().find(|(name, _)| {
        let name = name.to_ascii_lowercase();
        name.starts_with("x-amz-") && !auth.signed_headers.contains(&name)
    }) {
        return Err(format!("the header `{name}` is not signed: sign every x-amz-* header"));
    }
    let body = head.body_sha256.as_deref().ok_or("the host did not supply the body's SHA-256")?;
    let payload = match head.header("x-amz-content-sha256") {
        Some(claimed @ ("UNSIGNED-PAYLOAD" | "STREAMING-UNSIGNED-PAYLOAD-TRAILER")) => claimed.to_owned(),
        Some(claimed) if claimed.starts_with("STREAMING-") => {
            return Err(format!(
                "x-amz-content-sha256 `{claimed}`: chunk-signed payloads cannot be re-signed; send the \
                 body's SHA-256 or UNSIGNED-PAYLOAD"
            ));
        }
        Some(claimed) if claimed.eq_ignore_ascii_case(body) => claimed.to_owned(),
        Some(_) => return Err("the body's SHA-256 is not the x-amz-content-sha256 the request signed".into()),
        None => body.to_owned(),
    };
    let expected = signature(head, &auth.signed_headers, date, &auth.scope, &payload, account_secret);
    if crypto::constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        Ok(())
    } else {
        Err(format!(
            "the request signature does not match: sign with access key id `{}` and that Skybridge \
             account's secret",
            auth.access_key
        ))
    }
}

/// Whether the re-signing signs header `name` (lower-case): host, x-amz-*, and
/// content-type/content-md5 when present.
fn resigned(name: &str) -> bool {
    name == "host" || name == "content-type" || name == "content-md5" || name.starts_with("x-amz-")
}

/// Unix time of `YYYYMMDD'T'HHMMSS'Z'`.
fn parse_amz_date(date: &str) -> Option<u64> {
    let b = date.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| date.get(r)?.parse::<u32>().ok();
    Civil {
        year: i64::from(num(0..4)?),
        month: num(4..6)?,
        day: num(6..8)?,
        hour: num(9..11)?,
        minute: num(11..13)?,
        second: num(13..15)?,
        weekday: 0,
    }
    .to_unix()
}

/// `YYYYMMDD'T'HHMMSS'Z'` for Unix time `seconds` (UTC).
pub fn amz_date(seconds: u64) -> String {
    let t = Civil::from_unix(seconds);
    format!("{:04}{:02}{:02}T{:02}{:02}{:02}Z", t.year, t.month, t.day, t.hour, t.minute, t.second)
}

/// The canonical query string: parameters sorted by encoded name, then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_encode(&percent_decode(k)), percent_encode(&percent_decode(v)))
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// Re-sign `head` for `creds` at Unix time `seconds`.
pub fn sign(mut head: RequestHead, creds: &TargetCredentials, seconds: u64) -> Result<RequestHead, String> {
    let client = head.header("authorization").and_then(client_auth);
    // What the client left unsigned stays unsigned: never vouched for with the real key.
    let client_signed = client.as_ref().map(|c| c.signed_headers.clone());
    let scope = client.map(|c| (c.scope.region, c.scope.service));
    let region = creds
        .attribute("region")
        .map(str::to_owned)
        .or_else(|| scope.as_ref().map(|s| s.0.clone()))
        .ok_or("no region: the client's request carries no SigV4 scope and the mapping no `region`")?;
    let service = creds
        .attribute("service")
        .map(str::to_owned)
        .or_else(|| scope.as_ref().map(|s| s.1.clone()))
        .ok_or("no service: the client's request carries no SigV4 scope and the mapping no `service`")?;
    let payload = match head.header("x-amz-content-sha256") {
        Some(h) => h.to_owned(),
        None => head.body_sha256.clone().ok_or("the host did not supply the body's SHA-256")?,
    };
    // S3 wants the payload hash as a header on every request (and signs it).
    if service == "s3" && head.header("x-amz-content-sha256").is_none() {
        head.set_header("x-amz-content-sha256", payload.clone());
    }
    for name in ["authorization", "x-amz-date", "x-amz-security-token"] {
        head.remove_header(name);
    }
    if let Some(host) = creds.attribute("host") {
        head.set_header("host", host);
    }
    if head.header("host").is_none() {
        return Err("the request has no Host header and the mapping no `host`".into());
    }
    let date = amz_date(seconds);
    head.set_header("x-amz-date", date.clone());
    if let Some(token) = creds.attribute("session-token") {
        head.set_header("x-amz-security-token", token);
    }

    let mut names: Vec<String> = head
        .headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .filter(|n| resigned(n))
        .filter(|n| {
            n == "host" || n.starts_with("x-amz-") || client_signed.as_ref().is_none_or(|s| s.contains(n))
        })
        .collect();
    names.sort();
    names.dedup();
    let scope = Scope { day: date[..8].to_owned(), region, service };
    let signature = signature(&head, &names, &date, &scope, &payload, &creds.secret);
    head.set_header(
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={}, Signature={signature}",
            creds.principal,
            scope.credential_scope(),
            names.join(";")
        ),
    );
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skybridge_plugin_sdk::testing::{self, TestHost};

    fn creds(attributes: &[(&str, &str)]) -> TargetCredentials {
        TargetCredentials {
            platform: "aws-east".into(),
            principal: "AKIDEXAMPLE".into(),
            secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            attributes: attributes.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    fn head(method: &str, path: &str, query: &str, headers: &[(&str, &str)], body: &[u8]) -> RequestHead {
        RequestHead {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body_sha256: Some(crypto::hex(&crypto::sha256(body))),
        }
    }

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(amz_date(951_782_400), "20000229T000000Z");
        assert_eq!(amz_date(1_795_728_283), "20261126T212443Z");
    }

    /// AWS's own example (the SigV4 test suite's `get-vanilla`).
    #[test]
    fn matches_the_aws_documented_example() {
        let _host = TestHost::new().install();
        let h = head("GET", "/", "", &[("Host", "example.amazonaws.com")], b"");
        let signed =
            sign(h, &creds(&[("region", "us-east-1"), ("service", "service")]), 1_440_938_160).unwrap();
        assert_eq!(
            signed.header("authorization"),
            Some(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders=host;x-amz-date, \
                 Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            )
        );
    }

    /// Signatures botocore computed for the same requests at the same time.
    #[test]
    fn matches_botocore() {
        let _host = TestHost::new().install();
        let at = 1_795_728_283; // 2026-11-26T21:24:43Z
        let client_auth = "AWS4-HMAC-SHA256 Credential=acme/20261126/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=00";
        let h = head(
            "GET",
            "/",
            "Param2=value2&Param1=value1",
            &[("Host", "127.0.0.1:7000"), ("Authorization", client_auth), ("X-Amz-Date", "20200101T000000Z")],
            b"",
        );
        let signed = sign(h, &creds(&[("host", "example.amazonaws.com")]), at).unwrap();
        assert_eq!(signed.header("host"), Some("example.amazonaws.com"));
        assert_eq!(signed.header("x-amz-date"), Some("20261126T212443Z"));
        assert!(
            signed
                .header("authorization")
                .unwrap()
                .ends_with("Signature=688e29be513309ebf09afebb1386c4a5dd702e9221d4599a66c7960a18579e3c")
        );

        let body = b"hello world";
        let payload = crypto::hex(&crypto::sha256(body));
        let s3_auth = "AWS4-HMAC-SHA256 Credential=acme/20261126/eu-west-1/s3/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256, Signature=00";
        let h = head(
            "PUT",
            "/bucket/key%20name.txt",
            "x-id=PutObject",
            &[
                ("Host", "127.0.0.1:5000"),
                ("Content-Type", "text/plain"),
                ("X-Amz-Content-SHA256", &payload),
                ("Authorization", s3_auth),
            ],
            body,
        );
        // botocore's S3 signer (S3 paths are not encoded twice), 24 s later.
        let signed = sign(h, &creds(&[]), at + 24).unwrap();
        assert_eq!(
            signed.header("authorization"),
            Some(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261126/eu-west-1/s3/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date, \
                 Signature=12cdc1ac1f379e5bde6f740c39acb19442c1cd87d480c36d6263ba70c32adfe9"
            )
        );
    }

    #[test]
    fn dates_parse_back() {
        for t in [0, 951_782_400, 1_440_938_160, 1_795_728_283, 4_102_444_799] {
            assert_eq!(parse_amz_date(&amz_date(t)), Some(t));
        }
        for bad in ["", "20261126T212443", "2026-11-26T21:24", "20261326T212443Z", "2026112xT212443Z"] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    /// A client request as an SDK signs it with the Skybridge account `acme-ops`.
    fn client_request(at: u64) -> RequestHead {
        let body = b"<CreateBucketConfiguration/>";
        let h = head(
            "PUT",
            "/bucket",
            "",
            &[
                ("Host", "127.0.0.1:7000"),
                ("Content-Length", "28"),
                ("X-Amz-Content-SHA256", &crypto::hex(&crypto::sha256(body))),
            ],
            body,
        );
        sign(h, &client_credentials(), at).unwrap()
    }

    /// The Skybridge account `acme-ops` as a client signs with it.
    fn client_credentials() -> TargetCredentials {
        TargetCredentials {
            platform: "skybridge".into(),
            principal: "acme-ops".into(),
            secret: "account-secret".into(),
            attributes: vec![("region".into(), "us-east-1".into()), ("service".into(), "s3".into())],
        }
    }

    #[test]
    fn verifies_a_clients_own_signature() {
        let _host = TestHost::new().install();
        let at = 1_795_728_283;
        let req = client_request(at);
        assert_eq!(AwsAdapter::claimed_account(&req).as_deref(), Some("acme-ops"));
        verify(&req, "account-secret", at + 60).unwrap();
        verify(&req, "account-secret", at - 600).unwrap();

        let err = verify(&req, "another-secret", at).unwrap_err();
        assert!(err.contains("does not match") && err.contains("acme-ops"), "{err}");
        let err = verify(&req, "account-secret", at + 16 * 60).unwrap_err();
        assert!(err.contains("15 minutes"), "{err}");

        // Any signed header changed in transit breaks the signature.
        for (name, value) in
            [("host", "evil.example"), ("x-amz-content-sha256", "00"), ("x-amz-date", "20261126T212444Z")]
        {
            let mut tampered = req.clone();
            tampered.set_header(name, value);
            assert!(verify(&tampered, "account-secret", at).is_err(), "{name}");
        }
        let mut other_path = req.clone();
        other_path.path = "/other-bucket".into();
        assert!(verify(&other_path, "account-secret", at).is_err());

        // Unsigned or not SigV4 at all.
        let mut unsigned = req.clone();
        unsigned.remove_header("authorization");
        assert_eq!(AwsAdapter::claimed_account(&unsigned), None);
        assert!(verify(&unsigned, "account-secret", at).unwrap_err().contains("no AWS Signature V4"));
        unsigned.set_header("authorization", "Basic YWNtZTpzZWNyZXQ=");
        assert_eq!(AwsAdapter::claimed_account(&unsigned), None);
    }

    /// What would be re-signed with the account's real key must have been signed by the
    /// client, and the signed payload hash must be the body's.
    #[test]
    fn unsigned_headers_and_a_swapped_body_are_refused() {
        let _host = TestHost::new().install();
        let at = 1_795_728_283;
        let req = client_request(at);
        for (name, value) in [("x-amz-acl", "public-read"), ("X-Amz-Copy-Source", "/other/key")] {
            let mut added = req.clone();
            added.headers.push((name.into(), value.into()));
            let err = verify(&added, "account-secret", at).unwrap_err();
            assert!(err.contains("is not signed") && err.contains(name), "{name}: {err}");
        }
        // Other headers may be added unsigned, as AWS allows; the re-signing leaves an
        // unsigned Content-Type unsigned, and signs a signed one.
        let mut added = req.clone();
        added.headers.push(("User-Agent".into(), "curl".into()));
        added.headers.push(("Content-Type".into(), "text/html".into()));
        verify(&added, "account-secret", at).unwrap();
        let target = creds(&[("region", "us-east-1")]);
        let resigned = sign(added, &target, at).unwrap();
        let signed_headers =
            |h: &RequestHead| client_auth(h.header("authorization").unwrap()).unwrap().signed_headers;
        assert!(!signed_headers(&resigned).contains(&"content-type".to_owned()), "{resigned:?}");
        assert!(signed_headers(&resigned).contains(&"x-amz-content-sha256".to_owned()));
        let typed = head("PUT", "/b", "", &[("Host", "h"), ("Content-Type", "text/plain")], b"");
        let by_client = sign(typed, &client_credentials(), at).unwrap();
        let resigned = sign(by_client, &target, at).unwrap();
        assert!(signed_headers(&resigned).contains(&"content-type".to_owned()));
        // The body swapped after signing: its hash is not the one signed.
        let mut swapped = req.clone();
        swapped.body_sha256 = Some(crypto::hex(&crypto::sha256(b"<Evil/>")));
        let err = verify(&swapped, "account-secret", at).unwrap_err();
        assert!(err.contains("not the x-amz-content-sha256"), "{err}");
        // Chunk-signed streaming cannot be re-signed; an unsigned payload passes as at AWS.
        for (payload, ok) in [("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", false), ("UNSIGNED-PAYLOAD", true)] {
            let h = head("PUT", "/b/k", "", &[("Host", "h"), ("X-Amz-Content-SHA256", payload)], b"data");
            let signed = sign(h, &client_credentials(), at).unwrap();
            assert_eq!(verify(&signed, "account-secret", at).is_ok(), ok, "{payload}");
        }
    }

    #[test]
    fn missing_scope_or_host_is_a_clear_error_and_the_clock_is_the_hosts() {
        let _host = TestHost::new().clock(1_440_938_160, 0).install();
        let h = head("GET", "/", "", &[("Host", "example.amazonaws.com")], b"");
        let err = testing::rewrite_request::<AwsAdapter>(h.clone(), &creds(&[])).unwrap_err();
        assert!(err.contains("no region"), "{err}");
        let signed = testing::rewrite_request::<AwsAdapter>(
            h,
            &creds(&[("region", "us-east-1"), ("service", "service")]),
        )
        .unwrap();
        assert!(
            signed
                .header("authorization")
                .unwrap()
                .ends_with("5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
        );
        let nohost = head("GET", "/", "", &[], b"");
        let err = sign(nohost, &creds(&[("region", "r"), ("service", "s")]), 0).unwrap_err();
        assert!(err.contains("no Host"), "{err}");
    }
}
