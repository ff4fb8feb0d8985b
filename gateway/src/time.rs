//! One clock for the whole gateway: wall time as Unix milliseconds.
//!
//! Sans-IO code never reads a clock: it takes `now` as an argument (a `u64` of Unix ms, or an
//! `Instant`), and only the IO layer calls [`now_unix_ms`]. Tests pass whatever time they need.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now (0 on a clock set before 1970).
pub fn now_unix_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// `at` as milliseconds since the Unix epoch (0 before it; saturating far in the future).
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn converts_and_never_goes_negative() {
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_millis(1_234)), 1_234);
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert!(now_unix_ms() > 1_700_000_000_000, "the machine's clock is after 2023");
    }
}
