//! Sealing secrets before they go into a shared store (issue 17, item 3: etcd does not encrypt
//! at rest, and its backups and `etcdctl get` show what was written). ChaCha20-Poly1305 with a
//! 256-bit key every controller of a cluster reads from its config, a random nonce per value,
//! and the value's store key as associated data: a sealed value copied to another key does not
//! open there.
//!
//! Layout: `sb1` (the format), the 12-byte nonce, then the ciphertext with its 16-byte tag.

use std::path::Path;

use base64::Engine as _;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

const FORMAT: &[u8; 3] = b"sb1";
/// A key file holds 32 bytes in base64, and little else.
const MAX_KEY_FILE_BYTES: u64 = 1024;

/// Why a value does not open, or a key cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The key file is missing, unreadable or not 32 bytes of base64.
    #[error("the sealing key {path}: {reason}")]
    BadKey {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The value is not sealed in this format.
    #[error("the value under `{0}` is not a sealed value")]
    NotSealed(String),
    /// The value was sealed with another key, for another store key, or altered.
    #[error(
        "the sealed value under `{0}` does not open: another key sealed it, it belongs elsewhere, or it was altered"
    )]
    DoesNotOpen(String),
    /// The system's random source failed.
    #[error("no randomness for a nonce")]
    Random,
}

/// A cluster's sealing key.
pub struct SealKey {
    key: LessSafeKey,
    random: SystemRandom,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(…)")
    }
}

impl SealKey {
    /// The key from 32 bytes.
    pub fn new(bytes: &[u8; 32]) -> SealKey {
        let key = UnboundKey::new(&CHACHA20_POLY1305, bytes).map(LessSafeKey::new);
        // A 32-byte key is always accepted by ChaCha20-Poly1305.
        let key = key.unwrap_or_else(|_| unreachable!("ChaCha20-Poly1305 takes 32-byte keys"));
        SealKey { key, random: SystemRandom::new() }
    }

    /// The key from a file holding 32 bytes in base64 (as `head -c 32 /dev/urandom | base64`
    /// writes).
    pub fn from_file(path: &Path) -> Result<SealKey, SealError> {
        let bad = |reason: String| SealError::BadKey { path: path.display().to_string(), reason };
        let text = crate::file::read_to_string(path, MAX_KEY_FILE_BYTES, "the sealing key")
            .map_err(|e| bad(e.to_string()))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| bad(format!("not base64 ({e})")))?;
        let bytes: [u8; 32] =
            bytes.as_slice().try_into().map_err(|_| bad(format!("{} bytes, not 32", bytes.len())))?;
        Ok(SealKey::new(&bytes))
    }

    /// `plain` sealed for store key `key`.
    pub fn seal(&self, key: &str, plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut body = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.as_bytes()),
                &mut body,
            )
            .map_err(|_| SealError::Random)?;
        Ok([FORMAT.as_slice(), &nonce, &body].concat())
    }

    /// What `sealed`, stored under `key`, holds.
    pub fn open(&self, key: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let rest =
            sealed.strip_prefix(FORMAT.as_slice()).ok_or_else(|| SealError::NotSealed(key.to_owned()))?;
        if rest.len() < NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return Err(SealError::NotSealed(key.to_owned()));
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::NotSealed(key.to_owned()))?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(key.as_bytes()), &mut body)
            .map_err(|_| SealError::DoesNotOpen(key.to_owned()))?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_under_its_store_key_and_unaltered() {
        let key = SealKey::new(&[7; 32]);
        let secret = b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        let sealed = key.seal("accounts/acme-ops", secret).expect("seal");
        assert!(!sealed.windows(secret.len()).any(|w| w == secret), "the secret is not in the sealed bytes");
        assert_eq!(key.open("accounts/acme-ops", &sealed).expect("open"), secret);
        assert_ne!(sealed, key.seal("accounts/acme-ops", secret).expect("seal"), "a fresh nonce each time");

        assert!(matches!(key.open("accounts/other", &sealed), Err(SealError::DoesNotOpen(_))), "moved");
        assert!(matches!(
            SealKey::new(&[8; 32]).open("accounts/acme-ops", &sealed),
            Err(SealError::DoesNotOpen(_))
        ));
        let mut altered = sealed.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(matches!(key.open("accounts/acme-ops", &altered), Err(SealError::DoesNotOpen(_))));
        assert!(matches!(key.open("accounts/acme-ops", secret), Err(SealError::NotSealed(_))), "plain text");
        assert!(matches!(key.open("accounts/acme-ops", b"sb1short"), Err(SealError::NotSealed(_))));
    }

    #[test]
    fn a_key_file_holds_32_bytes_of_base64() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("seal.key");
        std::fs::write(&file, format!("{}\n", base64::engine::general_purpose::STANDARD.encode([9u8; 32])))
            .expect("write");
        let key = SealKey::from_file(&file).expect("a good key file");
        let sealed = key.seal("k", b"v").expect("seal");
        assert_eq!(SealKey::new(&[9; 32]).open("k", &sealed).expect("same key"), b"v");

        std::fs::write(&file, base64::engine::general_purpose::STANDARD.encode([9u8; 16])).expect("write");
        let short = SealKey::from_file(&file).expect_err("16 bytes");
        assert!(short.to_string().contains("16 bytes, not 32"), "{short}");
        std::fs::write(&file, "not base64 at all!").expect("write");
        assert!(SealKey::from_file(&file).expect_err("text").to_string().contains("not base64"));
        assert!(SealKey::from_file(&dir.path().join("missing")).is_err());
    }
}
