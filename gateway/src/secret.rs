//! Comparing secrets (tokens, account secrets, signatures) without leaking them through timing.

use sha2::{Digest, Sha256};

/// A secret's SHA-256: what to keep, and compare, instead of the secret itself.
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether `a` and `b` are equal, in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `given` is the secret whose digest is `expected`.
pub fn matches_digest(given: &str, expected: &[u8; 32]) -> bool {
    constant_time_eq(&digest(given), expected)
}

/// A fresh random secret that no account has: an unknown account's signature is checked
/// against it, so that it fails exactly as a wrong signature does.
pub fn decoy() -> String {
    let mut bytes = [0u8; 24];
    // Without system randomness the decoy is all zeros: still no account's secret (secrets
    // are at least 16 characters and stored as given, not as zero bytes).
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_only_when_equal() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(matches_digest("token", &digest("token")));
        assert!(!matches_digest("token ", &digest("token")));
    }
}
