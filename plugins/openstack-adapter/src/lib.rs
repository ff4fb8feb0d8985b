//! `openstack-adapter` — session translation for OpenStack: Keystone (identity v3) tokens.
//!
//! Clients authenticate to the binding with HTTP Basic and their Skybridge account (OpenStack
//! clients have no request-signing scheme to reuse). For the account's mapping — `principal`
//! a Keystone user name, `secret` its password, attributes `project` (name; default: an
//! unscoped token), `user-domain` and `project-domain` (ids; default `default`) — the adapter
//! describes the token request:
//!
//! ```text
//! POST /v3/auth/tokens   {"auth": {"identity": {"methods": ["password"], "password": {"user":
//!                          {"name", "domain": {"id"}, "password"}}}, "scope": {"project": …}}}
//! ```
//!
//! sent by the host to the binding's endpoint (or to the site endpoint the `auth-endpoint`
//! attribute names, when Keystone is published separately from the service). `read-token`
//! takes the token from `X-Subject-Token` and its expiry from the body's `expires_at`. The host
//! caches the token until shortly before then; `rewrite-request` injects it as
//! `X-Auth-Token`, replacing anything the client sent, and fixes `Host` when the mapping has
//! a `host` attribute.
//!
//! Discovery (`discovering`, in `discovery`): Keystone's `/v3/auth/catalog`, with the site's
//! own token (the same token exchange, with the site's credentials).

mod discovery;

use skybridge_plugin_sdk::clock::Civil;
use skybridge_plugin_sdk::{
    Adapter, CloudResponse, DiscoveryStep, RequestHead, ServiceRecord, TargetCredentials, Token,
    TokenRequest, export_adapter,
};

/// The OpenStack adapter.
pub struct OpenStackAdapter;

impl Adapter for OpenStackAdapter {
    const CLOUD_KIND: &'static str = "openstack";

    fn parse_service_info(_document: &[u8], content_type: &str) -> Result<Vec<ServiceRecord>, String> {
        Err(format!("openstack-adapter does not parse service information yet (got {content_type})"))
    }

    fn rewrite_request(mut head: RequestHead, creds: &TargetCredentials) -> Result<RequestHead, String> {
        let token = creds.attribute("token").ok_or("no Keystone token: the host did not obtain one")?;
        head.remove_header("authorization");
        head.set_header("x-auth-token", token);
        if let Some(host) = creds.attribute("host") {
            head.set_header("host", host);
        }
        Ok(head)
    }

    fn request_token(creds: &TargetCredentials) -> Option<TokenRequest> {
        Some(TokenRequest {
            endpoint: creds.attribute("auth-endpoint").map(str::to_owned),
            method: "POST".into(),
            path: "/v3/auth/tokens".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: password_auth(creds).into_bytes(),
        })
    }

    fn read_token(status: u16, headers: &[(String, String)], body: &[u8]) -> Result<Token, String> {
        if status != 201 && status != 200 {
            let text = String::from_utf8_lossy(body);
            let excerpt: String = text.chars().take(200).collect();
            return Err(format!("Keystone refused the mapped credentials ({status}): {excerpt}"));
        }
        let value = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-subject-token"))
            .map(|(_, v)| v.clone())
            .ok_or("Keystone's answer has no X-Subject-Token")?;
        let text = std::str::from_utf8(body).map_err(|_| "Keystone's answer is not UTF-8")?;
        let expires = json_string(text, "expires_at").ok_or("Keystone's answer has no expires_at")?;
        let expires_unix_s = Civil::parse_utc(&expires)
            .ok_or_else(|| format!("Keystone's expires_at `{expires}` is malformed"))?;
        Ok(Token { value, expires_unix_s })
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

export_adapter!(OpenStackAdapter);

/// A JSON string literal for `s`.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The password authentication body for `creds`.
fn password_auth(creds: &TargetCredentials) -> String {
    let user_domain = creds.attribute("user-domain").unwrap_or("default");
    let identity = format!(
        r#"{{"methods":["password"],"password":{{"user":{{"name":{},"domain":{{"id":{}}},"password":{}}}}}}}"#,
        json_str(&creds.principal),
        json_str(user_domain),
        json_str(&creds.secret)
    );
    match creds.attribute("project") {
        Some(project) => format!(
            r#"{{"auth":{{"identity":{identity},"scope":{{"project":{{"name":{},"domain":{{"id":{}}}}}}}}}}}"#,
            json_str(project),
            json_str(creds.attribute("project-domain").unwrap_or("default"))
        ),
        None => format!(r#"{{"auth":{{"identity":{identity}}}}}"#),
    }
}

/// The first string value of `"key": "…"` in a JSON text (no escapes in the value: Keystone's
/// timestamps have none).
fn json_string(text: &str, key: &str) -> Option<String> {
    let at = text.find(&format!("\"{key}\""))? + key.len() + 2;
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(attributes: &[(&str, &str)]) -> TargetCredentials {
        TargetCredentials {
            platform: "openstack-lab".into(),
            principal: "lab-user".into(),
            secret: "pa\"ss\\word".into(),
            attributes: attributes.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn the_token_request_is_keystone_password_auth() {
        let req = OpenStackAdapter::request_token(&creds(&[("project", "lab")])).unwrap();
        assert_eq!((req.method.as_str(), req.path.as_str(), req.endpoint), ("POST", "/v3/auth/tokens", None));
        assert_eq!(
            String::from_utf8(req.body).unwrap(),
            r#"{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"lab-user","domain":{"id":"default"},"password":"pa\"ss\\word"}}},"scope":{"project":{"name":"lab","domain":{"id":"default"}}}}}"#
        );
        let req = OpenStackAdapter::request_token(&creds(&[("auth-endpoint", "keystone")])).unwrap();
        assert_eq!(req.endpoint.as_deref(), Some("keystone"));
        assert!(String::from_utf8(req.body).unwrap().ends_with(r#""password":"pa\"ss\\word"}}}}}"#));
    }

    #[test]
    fn reads_keystone_s_answer() {
        let body = br#"{"token": {"methods": ["password"], "expires_at": "2026-11-26T21:24:43.000000Z", "issued_at": "2026-11-26T20:24:43.000000Z"}}"#;
        let headers = vec![("X-Subject-Token".to_owned(), "gAAAAAB-token".to_owned())];
        let token = OpenStackAdapter::read_token(201, &headers, body).unwrap();
        assert_eq!((token.value.as_str(), token.expires_unix_s), ("gAAAAAB-token", 1_795_728_283));
        let err = OpenStackAdapter::read_token(401, &[], br#"{"error": {"code": 401}}"#).unwrap_err();
        assert!(err.contains("refused") && err.contains("401"), "{err}");
        assert!(OpenStackAdapter::read_token(201, &[], body).unwrap_err().contains("X-Subject-Token"));
        assert!(OpenStackAdapter::read_token(201, &headers, b"{}").unwrap_err().contains("expires_at"));
        assert_eq!(Civil::parse_utc("2026-11-26T21:24:43Z"), Some(1_795_728_283));
        assert_eq!(Civil::parse_utc("2026-11-26 21:24:43"), None);
        assert_eq!(Civil::parse_utc("2026-11-26T21:24:43é"), None);
        assert_eq!(Civil::parse_utc("2026-11-26T21:24:43.5Z"), Some(1_795_728_283));
    }

    #[test]
    fn the_token_replaces_the_clients_credentials() {
        let head = RequestHead {
            method: "GET".into(),
            path: "/v3/auth/projects".into(),
            headers: vec![("X-Auth-Token".into(), "client-forged".into()), ("host".into(), "h".into())],
            ..Default::default()
        };
        let err = OpenStackAdapter::rewrite_request(head.clone(), &creds(&[])).unwrap_err();
        assert!(err.contains("no Keystone token"), "{err}");
        let out = OpenStackAdapter::rewrite_request(head, &creds(&[("token", "T1")])).unwrap();
        assert_eq!(
            out.headers,
            vec![("host".to_owned(), "h".to_owned()), ("x-auth-token".to_owned(), "T1".to_owned())]
        );
    }
}
