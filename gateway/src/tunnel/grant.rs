//! Hop grants and their tokens, sans-IO.
//!
//! For every hop of a tunnel the controller writes a [`HopGrant`] — which tunnel, which node,
//! who may open it (the previous hop), where it leads (the next hop, or the target endpoint),
//! for which account, until when — and signs it with that hop's own key: HMAC-SHA256 over the
//! grant's canonical JSON. Each node learns its key from the controller at registration, over
//! mutual TLS; the key is derived from the controller's secret and the node's name, so a node can
//! check tokens for itself but cannot make one for any other hop.
//!
//! The controller hands hop *i*'s token to hop *i − 1*, which presents it when it opens the
//! tunnel stream to hop *i*. Hop *i* accepts the stream only if the token is its own key's
//! signature of the grant it was set up with, the stream comes from the granted previous hop,
//! and the grant has not expired.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// A node's secret for checking its hop tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct HopKey([u8; 32]);

impl std::fmt::Debug for HopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HopKey(<redacted>)")
    }
}

impl HopKey {
    /// Derive node `name`'s key from the controller's secret.
    pub fn derive(secret: &[u8; 32], name: &str) -> HopKey {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(b"skybridge hop key\0");
        mac.update(name.as_bytes());
        HopKey(mac.finalize().into_bytes().into())
    }

    /// The key as hex, to send to its node.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse a key sent by the controller.
    pub fn from_hex(s: &str) -> Option<HopKey> {
        let bytes = hex::decode(s).ok()?;
        Some(HopKey(bytes.try_into().ok()?))
    }

    /// Sign `grant`: the token hop `grant.hop` will accept.
    pub fn sign(&self, grant: &HopGrant) -> String {
        hex::encode(self.mac(grant))
    }

    /// Whether `token` is this key's signature of `grant` (constant-time comparison).
    pub fn verifies(&self, grant: &HopGrant, token: &str) -> bool {
        let Ok(given) = hex::decode(token) else { return false };
        let expected = self.mac(grant);
        crate::secret::constant_time_eq(&given, &expected)
    }

    fn mac(&self, grant: &HopGrant) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        // Field order is fixed by the struct, so the JSON is canonical.
        mac.update(&serde_json::to_vec(grant).unwrap_or_default());
        mac.finalize().into_bytes().into()
    }
}

/// Where a hop sends the tunnel's traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Next {
    /// On to the next node of the path.
    Node(String),
    /// Out to this endpoint, which the node (the target site) publishes.
    Endpoint(String),
}

/// What one hop of a tunnel may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HopGrant {
    /// The tunnel.
    pub tunnel: u64,
    /// The node this grant is for.
    pub hop: String,
    /// The only node that may open the tunnel's streams at this hop.
    pub prev: String,
    /// Where this hop sends them.
    pub next: Next,
    /// The account the tunnel carries traffic for.
    pub account: String,
    /// When the grant expires (Unix time, ms).
    pub expires_unix_ms: u64,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> HopGrant {
        HopGrant {
            tunnel: 7,
            hop: "r2".into(),
            prev: "r1".into(),
            next: Next::Node("r3".into()),
            account: "acme-ops".into(),
            expires_unix_ms: 1_000,
        }
    }

    #[test]
    fn a_token_verifies_only_with_its_hops_key_and_its_exact_grant() {
        let secret = [9u8; 32];
        let (r2, r3) = (HopKey::derive(&secret, "r2"), HopKey::derive(&secret, "r3"));
        assert_ne!(r2, r3);
        assert_eq!(HopKey::from_hex(&r2.to_hex()), Some(r2.clone()));
        assert_eq!(format!("{r2:?}"), "HopKey(<redacted>)");
        let token = r2.sign(&grant());
        assert!(r2.verifies(&grant(), &token));
        assert!(!r3.verifies(&grant(), &token), "another hop's key");
        for tampered in [
            HopGrant { tunnel: 8, ..grant() },
            HopGrant { prev: "r9".into(), ..grant() },
            HopGrant { next: Next::Endpoint("db".into()), ..grant() },
            HopGrant { account: "intruder".into(), ..grant() },
            HopGrant { expires_unix_ms: u64::MAX, ..grant() },
        ] {
            assert!(!r2.verifies(&tampered, &token), "{tampered:?}");
        }
        assert!(!r2.verifies(&grant(), "zz"));
        assert!(!r2.verifies(&grant(), &token[..10]));
        assert!(!r2.verifies(&grant(), ""));
        // Another controller secret makes other keys.
        assert_ne!(HopKey::derive(&[1u8; 32], "r2"), r2);
    }
}
