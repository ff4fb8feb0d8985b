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

use skybridge_plugin_sdk::{
    Adapter, RequestHead, ServiceRecord, TargetCredentials, clock, crypto, export_adapter,
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
}

export_adapter!(AwsAdapter);

/// The credential scope of a SigV4 `Authorization` header: (region, service).
fn client_scope(authorization: &str) -> Option<(String, String)> {
    let credential = authorization.split([',', ' ']).find_map(|p| p.trim().strip_prefix("Credential="))?;
    let mut parts = credential.split('/').skip(2); // access key, date
    Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
}

/// `YYYYMMDD'T'HHMMSS'Z'` for Unix time `seconds` (UTC).
pub fn amz_date(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let secs = seconds % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// RFC 3986 percent-encoding as SigV4 wants it (unreserved characters kept).
fn uri_encode(s: &str) -> String {
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

/// Decode `%XX` escapes (and nothing else), so that a query can be re-encoded canonically.
fn uri_decode(s: &str) -> String {
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

/// The canonical query string: parameters sorted by encoded name, then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(&uri_decode(k)), uri_encode(&uri_decode(v)))
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// Re-sign `head` for `creds` at Unix time `seconds`.
pub fn sign(mut head: RequestHead, creds: &TargetCredentials, seconds: u64) -> Result<RequestHead, String> {
    let scope = head.header("authorization").and_then(client_scope);
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

    // Canonical headers: lower-case names, values trimmed with inner runs of spaces folded,
    // sorted by name; repeated headers joined with commas.
    let mut signed: Vec<(String, String)> = Vec::new();
    for (name, value) in &head.headers {
        let name = name.to_ascii_lowercase();
        if !(name == "host" || name == "content-type" || name == "content-md5" || name.starts_with("x-amz-"))
        {
            continue;
        }
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        match signed.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push(',');
                v.push_str(&value);
            }
            None => signed.push((name, value)),
        }
    }
    signed.sort();
    let canonical_headers: String = signed.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed_headers = signed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(";");
    let path = if head.path.is_empty() { "/" } else { head.path.as_str() };
    let canonical_request = format!(
        "{}\n{path}\n{}\n{canonical_headers}\n{signed_headers}\n{payload}",
        head.method,
        canonical_query(&head.query)
    );

    let day = &date[..8];
    let credential_scope = format!("{day}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{credential_scope}\n{}",
        crypto::hex(&crypto::sha256(canonical_request.as_bytes()))
    );
    let mut key = crypto::hmac_sha256(format!("AWS4{}", creds.secret).as_bytes(), day.as_bytes()).to_vec();
    for part in [region.as_str(), service.as_str(), "aws4_request"] {
        key = crypto::hmac_sha256(&key, part.as_bytes()).to_vec();
    }
    let signature = crypto::hex(&crypto::hmac_sha256(&key, string_to_sign.as_bytes()));
    head.set_header(
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{credential_scope}, SignedHeaders={signed_headers}, Signature={signature}",
            creds.principal
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
        let s3_auth = "AWS4-HMAC-SHA256 Credential=acme/20261126/eu-west-1/s3/aws4_request, SignedHeaders=host, Signature=00";
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
