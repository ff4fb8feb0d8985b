//! What the gateway lends a plugin: logging, its configuration, time and crypto.
//!
//! In a wasm build these call the host imports of `wit/plugin.wit`. In a native build (plain
//! `cargo test`) they are served by the thread-local [`crate::testing::TestHost`], so plugin
//! logic can be unit-tested without a wasm runtime.

/// Severity of a log message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something looks wrong.
    Warn,
    /// Something failed.
    Error,
}

#[cfg(target_family = "wasm")]
mod imp {
    use super::Level;
    use crate::__private::host::skybridge::plugin::{clock, config, crypto, log};

    pub fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => log::Level::Trace,
            Level::Debug => log::Level::Debug,
            Level::Info => log::Level::Info,
            Level::Warn => log::Level::Warn,
            Level::Error => log::Level::Error,
        };
        log::log(level, message);
    }
    pub fn config_get(key: &str) -> Option<String> {
        config::get(key)
    }
    pub fn config_entries() -> Vec<(String, String)> {
        config::entries().into_iter().map(|p| (p.key, p.value)).collect()
    }
    pub fn now() -> (u64, u32) {
        let t = clock::now();
        (t.seconds, t.nanoseconds)
    }
    pub fn monotonic_ns() -> u64 {
        clock::monotonic_ns()
    }
    pub fn sha256(data: &[u8]) -> Vec<u8> {
        crypto::sha256(data)
    }
    pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
        crypto::hmac_sha256(key, data)
    }
}

#[cfg(not(target_family = "wasm"))]
mod imp {
    pub use crate::testing::native::*;
}

/// Write one message to the gateway's log (rate-limited by the host).
pub fn log(level: Level, message: &str) {
    imp::log(level, message)
}

/// Log at [`Level::Debug`].
pub fn debug(message: &str) {
    log(Level::Debug, message)
}

/// Log at [`Level::Info`].
pub fn info(message: &str) {
    log(Level::Info, message)
}

/// Log at [`Level::Warn`].
pub fn warn(message: &str) {
    log(Level::Warn, message)
}

/// Log at [`Level::Error`].
pub fn error(message: &str) {
    log(Level::Error, message)
}

/// The operator's configuration for this plugin instance.
pub mod config {
    /// The value for `key`, if the operator set one.
    pub fn get(key: &str) -> Option<String> {
        super::imp::config_get(key)
    }

    /// Every configured key and value, sorted by key.
    pub fn entries() -> Vec<(String, String)> {
        super::imp::config_entries()
    }
}

/// Time as given by the host.
pub mod clock {
    /// Wall-clock time since the Unix epoch: (seconds, nanoseconds).
    pub fn now() -> (u64, u32) {
        super::imp::now()
    }

    /// A monotonic reading in nanoseconds.
    pub fn monotonic_ns() -> u64 {
        super::imp::monotonic_ns()
    }
}

/// Cryptographic primitives computed by the host.
pub mod crypto {
    /// SHA-256 of `data`.
    pub fn sha256(data: &[u8]) -> [u8; 32] {
        to_array(super::imp::sha256(data))
    }

    /// HMAC-SHA256 of `data` under `key`.
    pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
        to_array(super::imp::hmac_sha256(key, data))
    }

    /// Lower-case hex of `bytes`.
    pub fn hex(bytes: &[u8]) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            out.push(DIGITS[usize::from(b >> 4)] as char);
            out.push(DIGITS[usize::from(b & 0xf)] as char);
        }
        out
    }

    fn to_array(v: Vec<u8>) -> [u8; 32] {
        let mut out = [0u8; 32];
        // The host always returns 32 bytes; a shorter answer leaves zeros rather than panicking.
        let n = v.len().min(32);
        out[..n].copy_from_slice(&v[..n]);
        out
    }
}
