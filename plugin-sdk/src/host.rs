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

    /// A UTC calendar time, for the date formats signing schemes use.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Civil {
        /// Year, e.g. 2026.
        pub year: i64,
        /// Month, 1–12.
        pub month: u32,
        /// Day of the month, 1–31.
        pub day: u32,
        /// Hour, 0–23.
        pub hour: u32,
        /// Minute, 0–59.
        pub minute: u32,
        /// Second, 0–60.
        pub second: u32,
        /// Day of the week, 0 = Sunday.
        pub weekday: u32,
    }

    impl Civil {
        /// The calendar time of Unix time `seconds` (Howard Hinnant's `civil_from_days`).
        pub fn from_unix(seconds: u64) -> Civil {
            let days = (seconds / 86_400) as i64;
            let secs = (seconds % 86_400) as u32;
            let z = days + 719_468;
            let era = z.div_euclid(146_097);
            let doe = z - era * 146_097;
            let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
            let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
            Civil {
                year: yoe + era * 400 + i64::from(month <= 2),
                month,
                day,
                hour: secs / 3600,
                minute: secs / 60 % 60,
                second: secs % 60,
                weekday: (days + 4).rem_euclid(7) as u32, // 1970-01-01 was a Thursday
            }
        }

        /// Unix time of a calendar time (`days_from_civil`); `None` when out of range or
        /// before 1970. The weekday is not checked.
        pub fn to_unix(&self) -> Option<u64> {
            if !(1..=12).contains(&self.month)
                || !(1..=31).contains(&self.day)
                || self.hour > 23
                || self.minute > 59
                || self.second > 60
            {
                return None;
            }
            let (m, d) = (i64::from(self.month), i64::from(self.day));
            let y = if m <= 2 { self.year - 1 } else { self.year };
            let era = y.div_euclid(400);
            let yoe = y - era * 400;
            let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
            let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
            let days = era * 146_097 + doe - 719_468;
            let secs = i64::from(self.hour * 3600 + self.minute * 60 + self.second);
            u64::try_from(days * 86_400 + secs).ok()
        }

        /// Unix time of an ISO 8601 / RFC 3339 UTC time, `YYYY-MM-DDTHH:MM:SS[.fraction]Z`
        /// (the fraction is dropped); `None` for anything else.
        pub fn parse_utc(s: &str) -> Option<u64> {
            let b = s.as_bytes();
            if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':'
            {
                return None;
            }
            let fraction = s.strip_suffix('Z')?.get(19..)?;
            if !(fraction.is_empty() || fraction.starts_with('.')) {
                return None;
            }
            let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
            Civil {
                year: i64::from(num(0..4)?),
                month: num(5..7)?,
                day: num(8..10)?,
                hour: num(11..13)?,
                minute: num(14..16)?,
                second: num(17..19)?,
                weekday: 0,
            }
            .to_unix()
        }
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

    /// Whether `a` and `b` are equal, in time that depends on their length only (for comparing
    /// signatures without telling an attacker how much of a guess was right).
    pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    /// Standard base64 (RFC 4648, padded) of `bytes`.
    pub fn base64(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(BASE64[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    /// Decode standard, padded base64; `None` if `text` is not that.
    pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
        let bytes = text.as_bytes();
        if !bytes.len().is_multiple_of(4) {
            return None;
        }
        let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
        for (q, quad) in bytes.chunks(4).enumerate() {
            let last = q + 1 == bytes.len() / 4;
            let pad = quad.iter().rev().take_while(|b| **b == b'=').count();
            if pad > 2 || (pad > 0 && !last) {
                return None;
            }
            let mut n = 0u32;
            for (i, b) in quad[..4 - pad].iter().enumerate() {
                let v = BASE64.iter().position(|c| c == b)? as u32;
                n |= v << (18 - 6 * i);
            }
            out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
        }
        Some(out)
    }

    fn to_array(v: Vec<u8>) -> [u8; 32] {
        let mut out = [0u8; 32];
        // The host always returns 32 bytes; a shorter answer leaves zeros rather than panicking.
        let n = v.len().min(32);
        out[..n].copy_from_slice(&v[..n]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::clock::Civil;
    use super::crypto::{base64, base64_decode};

    #[test]
    fn base64_round_trips_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
            assert_eq!(base64_decode(encoded).as_deref(), Some(plain.as_bytes()));
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64(&all)), Some(all));
        for bad in ["Zg=", "Z===", "Zg==Zg==", "Zm9v!A==", "Zm9"] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn civil_times_round_trip() {
        let t = Civil::from_unix(1_795_728_283);
        assert_eq!((t.year, t.month, t.day, t.hour, t.minute, t.second), (2026, 11, 26, 21, 24, 43));
        assert_eq!(t.weekday, 4, "2026-11-26 is a Thursday");
        assert_eq!(Civil::from_unix(951_782_400).day, 29, "2000 is a leap year");
        for s in [0, 951_782_400, 1_440_938_160, 1_795_728_283, 4_102_444_799] {
            assert_eq!(Civil::from_unix(s).to_unix(), Some(s));
        }
        assert_eq!(Civil { month: 13, ..Civil::from_unix(0) }.to_unix(), None);
    }
}
