//! Target tokens: some targets (OpenStack Keystone, …) take a token obtained with the mapped
//! credentials rather than a signature. The controller caches one per (platform, account) and
//! fetches a new one when the cached one is too close to expiry. Sans-IO: `now` is passed in.

use std::collections::BTreeMap;

/// A target token as cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedToken {
    /// The token.
    pub value: String,
    /// When it expires (Unix s).
    pub expires_unix_s: u64,
    /// When it was obtained (Unix s).
    pub fetched_unix_s: u64,
}

impl CachedToken {
    /// Whether it still has a while to live at `now_unix_s`: a tenth of its lifetime, at most
    /// 30 s, is kept in hand so that it does not expire on the way to the target.
    pub fn fresh(&self, now_unix_s: u64) -> bool {
        let margin = (self.expires_unix_s.saturating_sub(self.fetched_unix_s) / 10).min(30);
        now_unix_s.saturating_add(margin) < self.expires_unix_s
    }
}

/// Cached target tokens by (platform, account).
#[derive(Debug, Default)]
pub struct TokenCache {
    tokens: BTreeMap<(String, String), CachedToken>,
}

impl TokenCache {
    /// The cached token for `account` at `platform`, if it is fresh at `now_unix_s`.
    pub fn fresh(&self, platform: &str, account: &str, now_unix_s: u64) -> Option<&CachedToken> {
        self.tokens.get(&(platform.to_owned(), account.to_owned())).filter(|t| t.fresh(now_unix_s))
    }

    /// Keep `token` for `account` at `platform`.
    pub fn insert(&mut self, platform: &str, account: &str, token: CachedToken) {
        self.tokens.insert((platform.to_owned(), account.to_owned()), token);
    }

    /// Drop every token of `account` (its credentials changed, or it is gone).
    pub fn forget_account(&mut self, account: &str) {
        self.tokens.retain(|(_, a), _| a != account);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(fetched: u64, expires: u64) -> CachedToken {
        CachedToken { value: "t".into(), expires_unix_s: expires, fetched_unix_s: fetched }
    }

    #[test]
    fn a_token_is_fresh_until_a_tenth_of_its_life_or_30_s_before_expiry() {
        // One hour: the margin is capped at 30 s.
        let hour = token(1_000, 4_600);
        assert!(hour.fresh(1_000) && hour.fresh(4_569));
        assert!(!hour.fresh(4_570) && !hour.fresh(5_000));
        // 100 s: a tenth, 10 s.
        let short = token(1_000, 1_100);
        assert!(short.fresh(1_089) && !short.fresh(1_090));
        // Expired when fetched, or a far-future clock: never fresh, never overflows.
        assert!(!token(1_000, 900).fresh(1_000));
        assert!(!hour.fresh(u64::MAX));
    }

    #[test]
    fn the_cache_is_per_platform_and_account_and_forgets_an_account() {
        let mut cache = TokenCache::default();
        cache.insert("keystone", "acme", token(0, 3_600));
        cache.insert("keystone", "other", token(0, 3_600));
        cache.insert("aws", "acme", token(0, 10));
        assert!(cache.fresh("keystone", "acme", 100).is_some());
        assert!(cache.fresh("aws", "acme", 100).is_none(), "stale");
        assert!(cache.fresh("keystone", "nobody", 100).is_none());
        cache.forget_account("acme");
        assert!(cache.fresh("keystone", "acme", 100).is_none());
        assert!(cache.fresh("keystone", "other", 100).is_some());
    }
}
