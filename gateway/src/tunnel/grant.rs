//! Hop grants and their tokens, sans-IO.
//!
//! For every hop of a tunnel the controller writes a [`HopGrant`] — which tunnel, which node,
//! its previous hop, where it leads (the next hop, or the target endpoint), for which account,
//! until when — and signs it with that hop's own key: HMAC-SHA256 over the grant's canonical
//! JSON. Each node learns its key from the controller at registration, over mutual TLS; the key
//! is derived from the controller's secret and the node's name, so a node can check tokens for
//! itself but cannot make one for any other hop.
//!
//! A hop installs its forwarding entry only for a grant whose token is its own key's signature,
//! unexpired. The ingress presents the site's token on every stream it opens end to end; the
//! site accepts the stream only if the token is its own key's signature of the grant it was
//! set up with, from the controller that set it up, before the grant expires.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The grant travels in [`crate::mesh::messages::Control::TunnelSetup`]; it is defined with the
/// other wire types so that the mesh protocol needs nothing from the tunnel layer.
pub use crate::mesh::messages::{HopGrant, Next};

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
            capability: None,
            fence: None,
            replaces: None,
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
            HopGrant { capability: Some("object-store/logs".into()), ..grant() },
            HopGrant { replaces: Some(6), ..grant() },
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
