//! Accounts and their credential mappings (DESIGN.md step 6, the first and third sessions).
//!
//! An account is an id and a secret its clients prove they hold. For each target platform an
//! account may map to credentials there: a principal (access key id, storage account, user), its
//! secret, and attributes (region, project, …). Secrets are stored in the controller's redb
//! file (keep it private to the controller's user), compared in constant time, never logged
//! (`Debug` redacts them) and never returned by the API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Who acts with the admin token: reserved, never an account id.
pub const OPERATOR: &str = "operator";

/// An account as stored.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// Its id: lower-case letters, digits, `-`, `_`, `.`.
    pub id: String,
    /// The secret its clients present.
    pub secret: String,
    /// When it was created (Unix ms).
    pub created_unix_ms: u64,
    /// Credentials at each target platform, by platform.
    #[serde(default)]
    pub credentials: BTreeMap<String, Credentials>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("created_unix_ms", &self.created_unix_ms)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// What an account maps to at one target platform.
#[derive(Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The identity there: an access key id, a storage account, a user name.
    pub principal: String,
    /// Its secret: a secret key, an account key, a password.
    pub secret: String,
    /// Anything else: region, project, domain.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("principal", &self.principal)
            .field("secret", &"<redacted>")
            .field("attributes", &self.attributes)
            .finish()
    }
}

/// An account as the API shows it: no secrets anywhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AccountView {
    /// Id.
    pub id: String,
    /// Created (Unix ms).
    pub created_unix_ms: u64,
    /// Per target platform: the principal and the attributes (never the secret).
    pub credentials: BTreeMap<String, CredentialsView>,
}

/// A credential mapping as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CredentialsView {
    /// The identity at the target.
    pub principal: String,
    /// The attributes.
    pub attributes: BTreeMap<String, String>,
}

impl Account {
    /// What the API may show.
    pub fn view(&self) -> AccountView {
        AccountView {
            id: self.id.clone(),
            created_unix_ms: self.created_unix_ms,
            credentials: self
                .credentials
                .iter()
                .map(|(p, c)| {
                    (
                        p.clone(),
                        CredentialsView { principal: c.principal.clone(), attributes: c.attributes.clone() },
                    )
                })
                .collect(),
        }
    }

    /// Whether `secret` is this account's, compared in constant time (over digests, so the
    /// length leaks nothing either).
    pub fn secret_matches(&self, secret: &str) -> bool {
        crate::secret::matches_digest(secret, &crate::secret::digest(&self.secret))
    }
}

/// The body of `POST /v1/accounts`.
#[derive(Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    /// Id.
    pub id: String,
    /// Secret, at least 16 characters.
    pub secret: String,
}

impl std::fmt::Debug for NewAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAccount").field("id", &self.id).field("secret", &"<redacted>").finish()
    }
}

/// Check a new account's id and secret.
pub fn validate(new: &NewAccount) -> Result<(), String> {
    let ok_id = !new.id.is_empty()
        && new.id.len() <= 64
        && new.id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    if !ok_id {
        return Err(format!(
            "account id `{}` must be 1-64 characters of lower-case letters, digits, `-`, `_`, `.`",
            new.id
        ));
    }
    if new.id == OPERATOR {
        return Err("`operator` is reserved for the admin token".into());
    }
    if new.secret.chars().count() < 16 {
        return Err("the secret must be at least 16 characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_and_compare_exactly() {
        let mut a = Account {
            id: "acme-ops".into(),
            secret: "s3cr3t-s3cr3t-s3cr3t".into(),
            created_unix_ms: 1,
            credentials: BTreeMap::new(),
        };
        a.credentials.insert(
            "aws-east".into(),
            Credentials {
                principal: "AKIAEXAMPLE".into(),
                secret: "wJalrXUtnFEMI".into(),
                attributes: [("region".to_owned(), "us-east-1".to_owned())].into(),
            },
        );
        let debug = format!("{a:?}");
        assert!(!debug.contains("s3cr3t") && !debug.contains("wJalr"), "{debug}");
        let json = serde_json::to_string(&a.view()).unwrap();
        assert!(!json.contains("s3cr3t") && !json.contains("wJalr"), "{json}");
        assert!(json.contains("AKIAEXAMPLE") && json.contains("us-east-1"));
        assert!(a.secret_matches("s3cr3t-s3cr3t-s3cr3t"));
        assert!(!a.secret_matches("s3cr3t-s3cr3t-s3cr3"));
        assert!(!a.secret_matches(""));
    }

    #[test]
    fn ids_and_secrets_are_checked() {
        let new = |id: &str, secret: &str| NewAccount { id: id.into(), secret: secret.into() };
        validate(&new("acme-ops", "0123456789abcdef")).unwrap();
        for (id, secret) in [
            ("Acme", "0123456789abcdef"),
            ("", "0123456789abcdef"),
            ("a b", "0123456789abcdef"),
            ("operator", "0123456789abcdef"),
            ("acme", "short"),
        ] {
            assert!(validate(&new(id, secret)).is_err(), "{id:?} {secret:?}");
        }
    }
}
