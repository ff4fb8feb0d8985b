//! Accounts (DESIGN.md step 6): create, read, change and delete them in the store, check a
//! client's secret, look up what an account maps to at a target. Changing or deleting an
//! account drops the target tokens obtained with its old credentials.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::Controller;
use crate::session::accounts::{self, Account, AccountView, Credentials, NewAccount};
use crate::store::StoreError;

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// Bad id, secret or change.
    #[error("{0}")]
    Invalid(String),
    /// No such account, or no such mapping.
    #[error("{0}")]
    NotFound(String),
    /// The id is taken.
    #[error("account `{0}` exists")]
    Exists(String),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for AccountError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Exists { key, .. } => AccountError::Exists(key),
            StoreError::NotFound { kind, key } => AccountError::NotFound(format!("no {kind} `{key}`")),
            other => AccountError::Store(other),
        }
    }
}

/// What the brute-force back-off has counted (`GET /v1/auth-failures`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct AuthFailures {
    /// Failed proofs of identity since the controller started.
    pub failures: u64,
    /// Requests answered 429 without a look at their credentials.
    pub throttled: u64,
    /// Source addresses with failures on record.
    pub sources: usize,
    /// Accounts with failures on record.
    pub accounts: usize,
}

impl Controller {
    /// Whether a proof of identity from `source` (claiming `account`) may be checked now; else
    /// how long the source or account is blocked for (answer 429 without checking it).
    pub fn auth_allowed(&self, source: IpAddr, account: Option<&str>) -> Result<(), Duration> {
        let wait = super::lock(&self.throttle).check(source, account, Instant::now());
        if let Err(wait) = wait {
            tracing::debug!(%source, account, "throttled for {wait:?}");
        }
        wait
    }

    /// Count a failed proof of identity from `source` (claiming `account`) at `place` (the
    /// admin API, CONNECT, a binding). Logged at warn on a source's first failure and when a
    /// block starts, so that a flood of guesses cannot flood the log.
    pub fn auth_failed(&self, source: IpAddr, account: Option<&str>, place: &str) {
        let failure = super::lock(&self.throttle).failed(source, account, Instant::now());
        match failure.blocked_for {
            Some(block) => {
                tracing::warn!(%source, account, place, "authentication failed again: blocked for {block:?}")
            }
            None if failure.first_from_source => {
                tracing::warn!(%source, account, place, "authentication failed")
            }
            None => tracing::debug!(%source, account, place, "authentication failed"),
        }
    }

    /// Whether the signature `authorization` carries may be used from `source`: not a replay
    /// of a natively signed request first sent from elsewhere (see [`crate::session::replay`]).
    pub fn signature_may_be_used<'a>(
        &self,
        authorization: impl Iterator<Item = &'a str>,
        source: IpAddr,
    ) -> bool {
        let digest = crate::session::replay::digest(authorization);
        super::lock(&self.replay).may_use(digest, source, Instant::now())
    }

    /// What the brute-force back-off has counted.
    pub fn auth_failures(&self) -> AuthFailures {
        let throttle = super::lock(&self.throttle);
        let (sources, accounts) = throttle.tracked();
        AuthFailures { failures: throttle.failures, throttled: throttle.throttled, sources, accounts }
    }

    /// Whether `secret` is account `id`'s secret. A store failure counts as no (and is logged).
    pub async fn authenticate(&self, id: &str, secret: &str) -> bool {
        match self.store.account(id).await {
            Ok(Some(a)) => a.secret_matches(secret),
            Ok(None) => false,
            Err(e) => {
                tracing::error!(account = id, "cannot check the account's secret: {e}");
                false
            }
        }
    }

    /// Create an account.
    pub async fn create_account(&self, new: NewAccount) -> Result<AccountView, AccountError> {
        accounts::validate(&new).map_err(AccountError::Invalid)?;
        let account = Account {
            id: new.id,
            secret: new.secret,
            created_unix_ms: crate::time::now_unix_ms(),
            credentials: Default::default(),
        };
        let view = account.view();
        self.store.insert_account(account).await?;
        tracing::info!(account = %view.id, "account created");
        Ok(view)
    }

    /// Every account (no secrets).
    pub async fn accounts(&self) -> Result<Vec<AccountView>, AccountError> {
        Ok(self.store.accounts().await?.iter().map(Account::view).collect())
    }

    /// One account (no secrets). A read: nothing is written, no token is dropped.
    pub async fn account(&self, id: &str) -> Result<AccountView, AccountError> {
        let account = self.store.account(id).await?;
        account.map(|a| a.view()).ok_or_else(|| AccountError::NotFound(format!("no account `{id}`")))
    }

    /// Map account `id` to `credentials` at `platform`.
    pub async fn map_credentials(
        &self,
        id: &str,
        platform: &str,
        credentials: Credentials,
    ) -> Result<AccountView, AccountError> {
        let platform = platform.to_owned();
        self.change_account(id, move |a| {
            a.credentials.insert(platform.clone(), credentials.clone());
            Ok(())
        })
        .await
    }

    /// Remove account `id`'s mapping at `platform`.
    pub async fn unmap_credentials(&self, id: &str, platform: &str) -> Result<AccountView, AccountError> {
        let platform = platform.to_owned();
        self.change_account(id, move |a| match a.credentials.remove(&platform) {
            Some(_) => Ok(()),
            None => Err(AccountError::NotFound(format!("no credentials for platform `{platform}`"))),
        })
        .await
    }

    async fn change_account(
        &self,
        id: &str,
        change: impl FnMut(&mut Account) -> Result<(), AccountError> + Send + 'static,
    ) -> Result<AccountView, AccountError> {
        let account = self.store.change_account(id, change).await?;
        // Tokens obtained with the old credentials must not outlive them.
        self.forget_tokens(id);
        Ok(account.view())
    }

    /// Delete an account.
    pub async fn delete_account(&self, id: &str) -> Result<(), AccountError> {
        let existed = self.store.remove_account(id).await?;
        self.forget_tokens(id);
        if existed { Ok(()) } else { Err(AccountError::NotFound(format!("no account `{id}`"))) }
    }

    /// Account `id` as stored, secrets included: for checking a client's proof and reading its
    /// mappings in one store read (never logged or shown).
    pub(crate) async fn stored_account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        self.store.account(id).await
    }

    /// The credentials account `id` maps to at `platform`, if any.
    pub async fn credentials(&self, id: &str, platform: &str) -> Result<Option<Credentials>, StoreError> {
        Ok(self.store.account(id).await?.and_then(|a| a.credentials.get(platform).cloned()))
    }

    fn forget_tokens(&self, account: &str) {
        super::lock(&self.tokens).forget_account(account);
    }
}
