//! `signing-adapter` — test-only, never shipped. A toy cloud adapter that exercises every
//! export of the `adapter` world and the host's `crypto`, `clock` and `config` interfaces, with a
//! scheme simple enough for a test to recompute:
//!
//! - service info: one service per line, `KIND NAME ENDPOINT [REGION]`, `#` comments;
//! - rewrite: drops the client's `authorization`, sets `host` to the credentials' `host`
//!   attribute, `x-toy-date` to the host clock, and
//!   `authorization: TOY principal:hex(hmac-sha256(secret, METHOD\nPATH\nQUERY\nDATE\nBODY-SHA256))`.

use skybridge_plugin_sdk::{
    Adapter, RequestHead, ServiceRecord, TargetCredentials, clock, config, crypto, export_adapter,
};

/// The toy adapter.
pub struct SigningAdapter;

impl Adapter for SigningAdapter {
    const CLOUD_KIND: &'static str = "toy";

    fn needs_body_sha256() -> bool {
        true
    }

    fn parse_service_info(document: &[u8], content_type: &str) -> Result<Vec<ServiceRecord>, String> {
        if content_type != "text/plain" {
            return Err(format!("unsupported content type `{content_type}`, expected text/plain"));
        }
        let text = std::str::from_utf8(document).map_err(|e| format!("document is not UTF-8: {e}"))?;
        let mut services = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [kind, name, endpoint, rest @ ..] = fields.as_slice() else {
                return Err(format!("line {}: expected `KIND NAME ENDPOINT [REGION]`", n + 1));
            };
            services.push(ServiceRecord {
                kind: (*kind).into(),
                name: (*name).into(),
                endpoint: (*endpoint).into(),
                region: rest.first().map(|r| (*r).to_owned()).or_else(|| config::get("default-region")),
                attributes: vec![],
            });
        }
        Ok(services)
    }

    fn rewrite_request(mut head: RequestHead, creds: &TargetCredentials) -> Result<RequestHead, String> {
        let host = creds.attribute("host").ok_or("credentials lack a `host` attribute")?.to_owned();
        let body = head.body_sha256.clone().ok_or("the host did not supply the body's SHA-256")?;
        let (seconds, _) = clock::now();
        let date = seconds.to_string();
        let string_to_sign = format!("{}\n{}\n{}\n{date}\n{body}", head.method, head.path, head.query);
        let signature = crypto::hex(&crypto::hmac_sha256(creds.secret.as_bytes(), string_to_sign.as_bytes()));
        head.remove_header("authorization");
        head.set_header("host", host);
        head.set_header("x-toy-date", date);
        head.set_header("authorization", format!("TOY {}:{signature}", creds.principal));
        Ok(head)
    }
}

export_adapter!(SigningAdapter);
