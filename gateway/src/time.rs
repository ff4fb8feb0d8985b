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

/// `unix_ms` as `YYYY-MM-DD HH:MM:SSZ` (UTC), for people reading tables and logs.
pub fn format_utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rest) = (i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2), secs % 86_400);
    // The civil date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(format_utc(1_795_728_283_999), "2026-11-26 21:24:43Z");
    }

    #[test]
    fn converts_and_never_goes_negative() {
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_millis(1_234)), 1_234);
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert!(now_unix_ms() > 1_700_000_000_000, "the machine's clock is after 2023");
    }
}
