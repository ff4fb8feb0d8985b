//! Brute-force protection for every place a client proves who it is (the admin API, the
//! CONNECT proxy, `http` bindings), sans-IO: time is passed in.
//!
//! Failed proofs are counted per source address and per claimed account. Past a free
//! allowance (10 per source, 20 per account) each further failure blocks the source or the
//! account for a back-off that doubles from 1 s up to 60 s; while blocked, requests are
//! answered `429` with `Retry-After` *before* any credential is checked, so guesses made then
//! are wasted. Counts are forgotten 15 minutes after the last failure; a success forgets
//! nothing (else one valid account would reset a source that guesses others). Both tables
//! are bounded: when full, the entry whose last failure is oldest makes room.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failures a source may make before it is blocked.
pub const SOURCE_ALLOWANCE: u32 = 10;
/// Failures an account may see (from anywhere) before it is blocked.
pub const ACCOUNT_ALLOWANCE: u32 = 20;
/// The first block; each further failure doubles it.
const FIRST_BLOCK: Duration = Duration::from_secs(1);
/// The longest block.
pub const MAX_BLOCK: Duration = Duration::from_secs(60);
/// Failures are forgotten this long after the last one.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Entries each table holds at most.
const MAX_ENTRIES: usize = 16_384;

/// One source's or account's failures.
#[derive(Debug, Clone, Copy)]
struct Strikes {
    count: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

/// Failures by key, bounded.
#[derive(Debug)]
struct Table<K> {
    by_key: HashMap<K, Strikes>,
    allowance: u32,
}

impl<K: Eq + Hash + Clone> Table<K> {
    fn new(allowance: u32) -> Self {
        Table { by_key: HashMap::new(), allowance }
    }

    /// How long `key` is still blocked at `now`.
    fn blocked(&mut self, key: &K, now: Instant) -> Option<Duration> {
        let strikes = self.by_key.get(key)?;
        if now.duration_since(strikes.last) >= FORGET_AFTER {
            self.by_key.remove(key);
            return None;
        }
        strikes.blocked_until.and_then(|until| until.checked_duration_since(now)).filter(|d| !d.is_zero())
    }

    /// Count a failure of `key` at `now`; the block it starts, if it does.
    fn fail(&mut self, key: &K, now: Instant) -> (u32, Option<Duration>) {
        if !self.by_key.contains_key(key) && self.by_key.len() >= MAX_ENTRIES {
            self.make_room(now);
        }
        let strikes =
            self.by_key.entry(key.clone()).or_insert(Strikes { count: 0, last: now, blocked_until: None });
        if now.duration_since(strikes.last) >= FORGET_AFTER {
            *strikes = Strikes { count: 0, last: now, blocked_until: None };
        }
        strikes.count = strikes.count.saturating_add(1);
        strikes.last = now;
        let over = strikes.count.saturating_sub(self.allowance);
        if over == 0 {
            return (strikes.count, None);
        }
        let block = FIRST_BLOCK.saturating_mul(1u32 << (over - 1).min(16)).min(MAX_BLOCK);
        strikes.blocked_until = Some(now + block);
        (strikes.count, Some(block))
    }

    /// Drop forgotten entries; if none were, the one whose last failure is oldest.
    fn make_room(&mut self, now: Instant) {
        self.by_key.retain(|_, s| now.duration_since(s.last) < FORGET_AFTER);
        if self.by_key.len() >= MAX_ENTRIES
            && let Some(oldest) = self.by_key.iter().min_by_key(|(_, s)| s.last).map(|(k, _)| k.clone())
        {
            self.by_key.remove(&oldest);
        }
    }
}

/// What a failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The source's first failure since it was last forgotten: worth a warning.
    pub first_from_source: bool,
    /// A block this failure started (the source's or the account's, the longer).
    pub blocked_for: Option<Duration>,
}

/// Failed proofs by source and account, and what they were answered.
#[derive(Debug)]
pub struct AuthThrottle {
    sources: Table<IpAddr>,
    accounts: Table<String>,
    /// Failed proofs counted so far.
    pub failures: u64,
    /// Requests answered 429 without a look at their credentials.
    pub throttled: u64,
}

impl Default for AuthThrottle {
    fn default() -> Self {
        AuthThrottle {
            sources: Table::new(SOURCE_ALLOWANCE),
            accounts: Table::new(ACCOUNT_ALLOWANCE),
            failures: 0,
            throttled: 0,
        }
    }
}

impl AuthThrottle {
    /// Whether a proof from `source` for `account` may be checked at `now`; else how long to
    /// wait (counted as throttled).
    pub fn check(&mut self, source: IpAddr, account: Option<&str>, now: Instant) -> Result<(), Duration> {
        let by_source = self.sources.blocked(&source, now);
        let by_account = account.and_then(|a| self.accounts.blocked(&a.to_owned(), now));
        match by_source.max(by_account) {
            None => Ok(()),
            Some(wait) => {
                self.throttled += 1;
                Err(wait)
            }
        }
    }

    /// Count a failed proof from `source` for `account` at `now`.
    pub fn failed(&mut self, source: IpAddr, account: Option<&str>, now: Instant) -> Failure {
        self.failures += 1;
        let (count, by_source) = self.sources.fail(&source, now);
        let by_account = account.and_then(|a| self.accounts.fail(&a.to_owned(), now).1);
        Failure { first_from_source: count == 1, blocked_for: by_source.max(by_account) }
    }

    /// Sources and accounts with failures on record.
    pub fn tracked(&self) -> (usize, usize) {
        (self.sources.by_key.len(), self.accounts.by_key.len())
    }
}

/// Seconds for a `Retry-After` header: at least 1.
pub fn retry_after_s(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn a_source_is_blocked_past_its_allowance_with_a_doubling_back_off() {
        let (mut t, now) = (AuthThrottle::default(), Instant::now());
        for _ in 0..SOURCE_ALLOWANCE {
            assert_eq!(t.check(ip(1), None, now), Ok(()));
            assert_eq!(t.failed(ip(1), None, now).blocked_for, None);
        }
        assert_eq!(t.failed(ip(1), None, now).blocked_for, Some(Duration::from_secs(1)));
        assert_eq!(t.check(ip(1), Some("acme"), now), Err(Duration::from_secs(1)), "blocked, any account");
        assert_eq!(t.check(ip(2), None, now), Ok(()), "another source is not");
        let later = now + Duration::from_secs(1);
        assert_eq!(t.check(ip(1), None, later), Ok(()), "the block ends");
        assert_eq!(t.failed(ip(1), None, later).blocked_for, Some(Duration::from_secs(2)), "and doubles");
        let mut at = later;
        for _ in 0..20 {
            at += MAX_BLOCK;
            t.failed(ip(1), None, at);
        }
        assert_eq!(t.check(ip(1), None, at), Err(MAX_BLOCK), "capped");
        assert_eq!((t.failures, t.throttled), (2 + u64::from(SOURCE_ALLOWANCE) + 20, 2));
    }

    #[test]
    fn an_account_guessed_from_many_sources_is_blocked_for_all_of_them() {
        let (mut t, now) = (AuthThrottle::default(), Instant::now());
        for n in 0..ACCOUNT_ALLOWANCE {
            t.failed(ip(n as u8), Some("acme"), now);
        }
        let f = t.failed(ip(200), Some("acme"), now);
        assert_eq!(f, Failure { first_from_source: true, blocked_for: Some(Duration::from_secs(1)) });
        assert!(t.check(ip(201), Some("acme"), now).is_err(), "a fresh source, the same account");
        assert_eq!(t.check(ip(201), Some("beta"), now), Ok(()), "another account");
    }

    #[test]
    fn failures_are_forgotten_and_the_tables_stay_bounded() {
        let (mut t, now) = (AuthThrottle::default(), Instant::now());
        for _ in 0..=SOURCE_ALLOWANCE {
            t.failed(ip(1), None, now);
        }
        assert!(t.check(ip(1), None, now).is_err());
        let much_later = now + FORGET_AFTER;
        assert_eq!(t.check(ip(1), None, much_later), Ok(()));
        assert!(t.failed(ip(1), None, much_later).first_from_source, "counting starts over");
        for n in 0..(MAX_ENTRIES as u32 + 100) {
            t.failed(IpAddr::from(n.to_be_bytes()), Some(&format!("a{n}")), much_later);
        }
        let (sources, accounts) = t.tracked();
        assert!(sources <= MAX_ENTRIES && accounts <= MAX_ENTRIES, "{sources} {accounts}");
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_s(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_s(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_s(Duration::from_millis(2_500)), 3);
    }
}
