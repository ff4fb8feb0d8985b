//! What a client presents to prove who it is: `Authorization` (admin API, `http` bindings)
//! or `Proxy-Authorization` (the CONNECT proxy) as `Bearer TOKEN` or `Basic base64(user:secret)`.
//! Parsed here once; who the credentials name is the caller's to check.

use base64::Engine;

/// Credentials from one header value.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientCredentials {
    /// `Bearer TOKEN`.
    Bearer(String),
    /// `Basic base64(user:secret)`; the secret may contain `:`.
    Basic {
        /// The user (an account id, or anything when the secret is the admin token).
        user: String,
        /// The secret.
        secret: String,
    },
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientCredentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            ClientCredentials::Basic { user, .. } => write!(f, "Basic({user}:<redacted>)"),
        }
    }
}

impl ClientCredentials {
    /// Parse a header value; `None` when it is neither scheme or does not decode. The scheme
    /// name is case-insensitive (RFC 9110 §11.1).
    pub fn parse(value: &[u8]) -> Option<ClientCredentials> {
        let value = std::str::from_utf8(value).ok()?.trim();
        let (scheme, rest) = value.split_once(' ')?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return (!rest.is_empty()).then(|| ClientCredentials::Bearer(rest.to_owned()));
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, secret) = decoded.split_once(':')?;
        Some(ClientCredentials::Basic { user: user.to_owned(), secret: secret.to_owned() })
    }

    /// The secret presented, whichever the scheme.
    pub fn secret(&self) -> &str {
        match self {
            ClientCredentials::Bearer(token) => token,
            ClientCredentials::Basic { secret, .. } => secret,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(s: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s))
    }

    #[test]
    fn bearer_and_basic_parse_and_nothing_else_does() {
        assert_eq!(ClientCredentials::parse(b"Bearer abc"), Some(ClientCredentials::Bearer("abc".into())));
        assert_eq!(ClientCredentials::parse(b"bearer  abc "), Some(ClientCredentials::Bearer("abc".into())));
        assert_eq!(
            ClientCredentials::parse(basic("acme:s3:cret").as_bytes()),
            Some(ClientCredentials::Basic { user: "acme".into(), secret: "s3:cret".into() })
        );
        for bad in [
            b"Bearer".as_slice(),
            b"Bearer ",
            b"Digest abc",
            b"Basic !!!",
            basic("no-colon").as_bytes(),
            b"\xff\xfe",
            b"",
        ] {
            assert_eq!(ClientCredentials::parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let b = ClientCredentials::parse(basic("acme:hunter2-hunter2").as_bytes()).unwrap();
        assert_eq!(b.secret(), "hunter2-hunter2");
        assert!(!format!("{b:?}").contains("hunter2"));
        assert!(!format!("{:?}", ClientCredentials::Bearer("tok".into())).contains("tok"));
    }
}
