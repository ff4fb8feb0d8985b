//! `azure-adapter` — session translation for Azure Storage (Blob, and the other services that
//! use the same scheme): Shared Key authorization.
//!
//! **Clients** sign as the Azure SDKs always do, with their Skybridge account as the storage
//! account name and, as the account key, the base64 of their Skybridge secret
//! (`base64(secret)`: Azure SDKs want keys in base64). `verify-client` recomputes that
//! signature over the request as received and checks `x-ms-date` is within 15 minutes.
//!
//! **`rewrite-request`** replaces the client's authorization with the target's: the mapping's
//! principal is the storage account and its secret the account key (base64, as the Azure
//! portal shows it). It drops `Authorization` and `Date`, sets `x-ms-date` from the host clock,
//! fixes `Host` when the mapping has a `host` attribute, and signs:
//!
//! ```text
//! VERB \n Content-Encoding \n Content-Language \n Content-Length (empty if 0) \n Content-MD5 \n
//! Content-Type \n Date \n If-Modified-Since \n If-Match \n If-None-Match \n
//! If-Unmodified-Since \n Range \n
//! x-ms-* headers (lower-case, sorted, `name:value\n`)
//! /ACCOUNT/PATH (the path as sent) then `\nname:value` per query parameter (lower-case
//! names, sorted, values decoded)
//! ```
//!
//! `Authorization: SharedKey ACCOUNT:base64(HMAC-SHA256(key, string-to-sign))`. Path-style
//! URLs (Azurite, `http://host/ACCOUNT/container/blob`) carry the target's account name in the
//! path: the client addresses the target account, and only the signing identity changes.
//!
//! x-ms-* headers are sorted by byte order, which matches the Azure SDKs' ordering for the
//! headers they send. Crypto is the host's.
//!
//! Discovery (`discovering`): the storage account's Blob containers, in `discovery`.

mod discovery;

use skybridge_plugin_sdk::clock::Civil;
use skybridge_plugin_sdk::{
    Adapter, CloudResponse, DiscoveryStep, RequestHead, ServiceRecord, TargetCredentials, clock, crypto,
    export_adapter, percent_decode,
};

/// The Azure Storage adapter.
pub struct AzureAdapter;

impl Adapter for AzureAdapter {
    const CLOUD_KIND: &'static str = "azure";

    fn parse_service_info(_document: &[u8], content_type: &str) -> Result<Vec<ServiceRecord>, String> {
        Err(format!("azure-adapter does not parse service information yet (got {content_type})"))
    }

    fn rewrite_request(head: RequestHead, creds: &TargetCredentials) -> Result<RequestHead, String> {
        let (seconds, _) = clock::now();
        sign(head, creds, seconds)
    }

    fn claimed_account(head: &RequestHead) -> Option<String> {
        head.header("authorization").and_then(shared_key).map(|(account, _)| account.to_owned())
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

export_adapter!(AzureAdapter);

/// `SharedKey ACCOUNT:SIGNATURE`, taken apart.
fn shared_key(authorization: &str) -> Option<(&str, &str)> {
    let (account, signature) = authorization.trim().strip_prefix("SharedKey ")?.split_once(':')?;
    (!account.is_empty()).then_some((account, signature))
}

const MONTHS: [&str; 12] =
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// RFC 1123 date (`Thu, 26 Nov 2026 21:24:43 GMT`) of Unix time `seconds`.
pub fn http_date(seconds: u64) -> String {
    let t = Civil::from_unix(seconds);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[t.weekday as usize],
        t.day,
        MONTHS[t.month as usize - 1],
        t.year,
        t.hour,
        t.minute,
        t.second
    )
}

/// Unix time of an RFC 1123 date.
fn parse_http_date(date: &str) -> Option<u64> {
    let mut parts = date.split_whitespace();
    let (_weekday, day, month, year, time, zone) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if zone != "GMT" || parts.next().is_some() {
        return None;
    }
    let mut hms = time.split(':').map(|p| p.parse::<u32>().ok());
    let civil = Civil {
        year: year.parse().ok()?,
        month: MONTHS.iter().position(|m| *m == month)? as u32 + 1,
        day: day.parse().ok()?,
        hour: hms.next()??,
        minute: hms.next()??,
        second: hms.next()??,
        weekday: 0,
    };
    if hms.next().is_some() {
        return None;
    }
    civil.to_unix()
}

/// The Shared Key string to sign for `head`, as `account`.
fn string_to_sign(head: &RequestHead, account: &str) -> String {
    let value = |name: &str| {
        let v = head.header(name).unwrap_or("").trim();
        if name == "content-length" && v == "0" { "" } else { v }
    };
    let mut out = format!("{}\n", head.method);
    for name in [
        "content-encoding",
        "content-language",
        "content-length",
        "content-md5",
        "content-type",
        "date",
        "if-modified-since",
        "if-match",
        "if-none-match",
        "if-unmodified-since",
        "range",
    ] {
        out.push_str(value(name));
        out.push('\n');
    }
    let mut ms: Vec<(String, &str)> = head
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim()))
        .filter(|(n, _)| n.starts_with("x-ms-"))
        .collect();
    ms.sort();
    for (name, value) in ms {
        out.push_str(&format!("{name}:{value}\n"));
    }
    let path = if head.path.is_empty() { "/" } else { head.path.as_str() };
    out.push_str(&format!("/{account}{path}"));
    let mut query: Vec<(String, String)> = Vec::new();
    for pair in head.query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(k).to_ascii_lowercase(), percent_decode(v));
        match query.iter_mut().find(|(name, _)| *name == k) {
            Some((_, values)) => {
                values.push(',');
                values.push_str(&v);
            }
            None => query.push((k, v)),
        }
    }
    query.sort();
    for (k, v) in query {
        out.push_str(&format!("\n{k}:{v}"));
    }
    out
}

/// Re-sign `head` for the storage account `creds` names, at Unix time `seconds`.
pub fn sign(mut head: RequestHead, creds: &TargetCredentials, seconds: u64) -> Result<RequestHead, String> {
    let key = crypto::base64_decode(creds.secret.trim())
        .ok_or("the mapped account key is not base64 (copy it as the Azure portal shows it)")?;
    head.remove_header("authorization");
    head.remove_header("date");
    head.set_header("x-ms-date", http_date(seconds));
    if let Some(host) = creds.attribute("host") {
        head.set_header("host", host);
    }
    let signature =
        crypto::base64(&crypto::hmac_sha256(&key, string_to_sign(&head, &creds.principal).as_bytes()));
    head.set_header("authorization", format!("SharedKey {}:{signature}", creds.principal));
    Ok(head)
}

/// How far a client's `x-ms-date` may be from the host clock (Azure allows 15 minutes).
const MAX_SKEW_S: u64 = 15 * 60;

/// Check a client's Shared Key signature, made with its Skybridge account as the account name
/// and `base64(secret)` as the account key, at Unix time `now`.
pub fn verify(head: &RequestHead, account_secret: &str, now: u64) -> Result<(), String> {
    let (account, signature) = head
        .header("authorization")
        .and_then(shared_key)
        .ok_or("the request carries no `Authorization: SharedKey …` header")?;
    let date = head
        .header("x-ms-date")
        .or_else(|| head.header("date"))
        .ok_or("the request has neither x-ms-date nor Date")?;
    let signed_at = parse_http_date(date).ok_or_else(|| format!("the date `{date}` is malformed"))?;
    if signed_at.abs_diff(now) > MAX_SKEW_S {
        return Err(format!("the request was signed at {date}, more than 15 minutes from now"));
    }
    let expected = crypto::hmac_sha256(account_secret.as_bytes(), string_to_sign(head, account).as_bytes());
    if crypto::constant_time_eq(crypto::base64(&expected).as_bytes(), signature.as_bytes()) {
        Ok(())
    } else {
        Err(format!(
            "the request signature does not match: sign with account name `{account}` and, as the \
             account key, the base64 of that Skybridge account's secret"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skybridge_plugin_sdk::testing::TestHost;

    const AZURITE_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    fn head(method: &str, path: &str, query: &str, headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body_sha256: None,
        }
    }

    fn creds(principal: &str, secret: &str) -> TargetCredentials {
        TargetCredentials {
            platform: "azure-west".into(),
            principal: principal.into(),
            secret: secret.into(),
            attributes: vec![],
        }
    }

    #[test]
    fn dates_are_rfc1123_and_parse_back() {
        assert_eq!(http_date(1_795_728_283), "Thu, 26 Nov 2026 21:24:43 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        for t in [0, 951_782_400, 1_795_728_283] {
            assert_eq!(parse_http_date(&http_date(t)), Some(t));
        }
        assert_eq!(parse_http_date("Thu, 26 Nov 2026 21:24:43 UTC"), None);
        assert_eq!(parse_http_date("26 Nov 2026"), None);
    }

    /// The string to sign and signature the Azure SDK for Python (azure-storage-blob 12.31)
    /// computed for the same request.
    #[test]
    fn matches_the_azure_python_sdk() {
        let _host = TestHost::new().install();
        let h = head(
            "PUT",
            "/devstoreaccount1/box1/a.txt",
            "",
            &[
                ("Host", "127.0.0.1:10000"),
                ("x-ms-blob-type", "BlockBlob"),
                ("Content-Length", "5"),
                ("x-ms-version", "2026-02-06"),
                ("Content-Type", "application/octet-stream"),
                ("x-ms-client-request-id", "5d1c5e64-cb0f-11f0-b2a4-0242ac110002"),
            ],
        );
        let signed = sign(h, &creds("devstoreaccount1", AZURITE_KEY), 1_795_728_283).unwrap();
        assert_eq!(signed.header("x-ms-date"), Some("Thu, 26 Nov 2026 21:24:43 GMT"));
        assert_eq!(
            string_to_sign(&signed, "devstoreaccount1"),
            "PUT\n\n\n5\n\napplication/octet-stream\n\n\n\n\n\n\n\
             x-ms-blob-type:BlockBlob\nx-ms-client-request-id:5d1c5e64-cb0f-11f0-b2a4-0242ac110002\n\
             x-ms-date:Thu, 26 Nov 2026 21:24:43 GMT\nx-ms-version:2026-02-06\n\
             /devstoreaccount1/devstoreaccount1/box1/a.txt"
        );
        assert_eq!(
            signed.header("authorization"),
            Some("SharedKey devstoreaccount1:0DZd0/wz/ZliYsU2rxs2c2gGxJMFiSdN0yVJnrCJj7I=")
        );

        let h = head(
            "GET",
            "/devstoreaccount1/box1",
            "restype=container&comp=list&prefix=a%2Fb",
            &[("Host", "127.0.0.1:10000"), ("x-ms-version", "2026-02-06"), ("Content-Length", "0")],
        );
        let signed = sign(h, &creds("devstoreaccount1", AZURITE_KEY), 1_795_728_283).unwrap();
        assert!(
            string_to_sign(&signed, "devstoreaccount1").ends_with(
                "/devstoreaccount1/devstoreaccount1/box1\ncomp:list\nprefix:a/b\nrestype:container"
            )
        );
        assert_eq!(
            signed.header("authorization"),
            Some("SharedKey devstoreaccount1:ovjMNnBvwVbZ86DgYX0uosFHtKJKhTibSaMug1nwtbU=")
        );
    }

    #[test]
    fn verifies_a_clients_own_signature() {
        let _host = TestHost::new().install();
        let at = 1_795_728_283;
        let account_key = crypto::base64(b"acme-ops-secret");
        let h = head(
            "GET",
            "/devstoreaccount1/box1/a.txt",
            "",
            &[("Host", "127.0.0.1:1"), ("x-ms-version", "2026-02-06")],
        );
        let req = sign(h, &creds("acme-ops", &account_key), at).unwrap();
        assert_eq!(AzureAdapter::claimed_account(&req).as_deref(), Some("acme-ops"));
        verify(&req, "acme-ops-secret", at + 60).unwrap();
        let err = verify(&req, "other-secret", at).unwrap_err();
        assert!(err.contains("does not match") && err.contains("acme-ops"), "{err}");
        assert!(verify(&req, "acme-ops-secret", at + 16 * 60).unwrap_err().contains("15 minutes"));
        let mut tampered = req.clone();
        tampered.path = "/devstoreaccount1/box2/a.txt".into();
        assert!(verify(&tampered, "acme-ops-secret", at).is_err());
        let mut tampered = req.clone();
        tampered.set_header("x-ms-version", "2020-01-01");
        assert!(verify(&tampered, "acme-ops-secret", at).is_err());
        let mut unsigned = req.clone();
        unsigned.remove_header("authorization");
        assert_eq!(AzureAdapter::claimed_account(&unsigned), None);
        assert!(sign(req, &creds("x", "not base64!"), at).unwrap_err().contains("not base64"));
    }
}
