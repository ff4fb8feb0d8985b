//! Who an `http` binding's request comes from, proved from its head wherever the scheme
//! allows, so that a stranger's body is never read:
//!
//! ```text
//! head ──▶ source blocked? 429 ──▶ adapter `claimed-account`
//!   none ─▶ HTTP Basic account:secret, checked now (401 before any body byte is read)
//!   some ─▶ account blocked? 429 ──▶ (the body is read under the buffering budget)
//!           ──▶ adapter `verify-client` over head + body hash (403), against a random decoy
//!               secret when the account does not exist ──▶ not a replay from elsewhere (403)
//! ```
//!
//! Every failed proof is counted for the brute-force back-off.

use std::net::IpAddr;
use std::sync::Arc;

use hyper::StatusCode;

use super::http::adapter_call;
use crate::controller::Controller;
use crate::plugin::{CallError, CallFailure, Plugin, adapting};
use crate::session::accounts::Account;
use crate::session::client_auth::ClientCredentials;
use crate::session::translate::Refusal;

/// What the head alone established.
pub(super) enum Identified {
    /// HTTP Basic, checked: the account as stored.
    Basic(Account),
    /// Signed in the adapter's native scheme by the claimed account (as stored, if it
    /// exists): to be verified once the body's hash is known.
    Signed {
        /// The account the signature names.
        claimed: String,
        /// It, as stored.
        stored: Option<Account>,
    },
}

/// Identify the request from its `head`, sent from `source`: Basic is checked (and its
/// `Authorization` removed from the head); a native signature is left to [`verify_signed`].
pub(super) async fn identify(
    controller: &Controller,
    adapter: &Arc<Plugin>,
    head: &mut adapting::RequestHead,
    source: IpAddr,
) -> Result<Identified, Refusal> {
    let mut claimed = None;
    let identified = identify_inner(controller, adapter, head, source, &mut claimed).await;
    count_failure(controller, &identified, source, claimed.as_deref());
    identified
}

/// Verify a natively signed request whose `head` now carries its body's hash.
pub(super) async fn verify_signed(
    controller: &Controller,
    adapter: &Arc<Plugin>,
    head: &adapting::RequestHead,
    (claimed, stored): (String, Option<Account>),
    source: IpAddr,
) -> Result<Account, Refusal> {
    let verified = verify_inner(controller, adapter, head, stored, source).await;
    count_failure(controller, &verified, source, Some(&claimed));
    verified
}

fn count_failure<T>(
    controller: &Controller,
    outcome: &Result<T, Refusal>,
    source: IpAddr,
    claimed: Option<&str>,
) {
    if let Err(refusal) = outcome
        && matches!(refusal.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
    {
        controller.auth_failed(source, claimed, "http binding");
    }
}

fn adapter_failed(e: CallError) -> Refusal {
    Refusal::new(StatusCode::BAD_GATEWAY, format!("adapter failed: {e}"))
}

fn store_failed(e: crate::store::StoreError) -> Refusal {
    Refusal::new(StatusCode::SERVICE_UNAVAILABLE, format!("the controller's store: {e}"))
}

async fn identify_inner(
    controller: &Controller,
    adapter: &Arc<Plugin>,
    head: &mut adapting::RequestHead,
    source: IpAddr,
    claimed_account: &mut Option<String>,
) -> Result<Identified, Refusal> {
    let (plugin, call_head) = (Arc::clone(adapter), head.clone());
    let claimed = adapter_call(controller, move || plugin.claimed_account(&call_head))
        .await?
        .map_err(adapter_failed)?;
    if let Some(account) = claimed {
        controller.auth_allowed(source, Some(&account)).map_err(Refusal::throttled)?;
        *claimed_account = Some(account.clone());
        let stored = controller.stored_account(&account).await.map_err(store_failed)?;
        return Ok(Identified::Signed { claimed: account, stored });
    }
    let basic = head.headers.iter().find_map(|p| {
        if !p.key.eq_ignore_ascii_case("authorization") {
            return None;
        }
        match ClientCredentials::parse(p.value.as_bytes())? {
            ClientCredentials::Basic { user, secret } => Some((user, secret)),
            ClientCredentials::Bearer(_) => None,
        }
    });
    let Some((account, secret)) = basic else {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "authenticate with your Skybridge account: sign as the target cloud's SDK does with the \
             account as the key id, or send HTTP Basic account:secret",
        ));
    };
    controller.auth_allowed(source, Some(&account)).map_err(Refusal::throttled)?;
    *claimed_account = Some(account.clone());
    let stored = controller.stored_account(&account).await.map_err(store_failed)?;
    let Some(stored) = stored.filter(|a| a.secret_matches(&secret)) else {
        return Err(Refusal::new(StatusCode::UNAUTHORIZED, "wrong account or secret"));
    };
    head.headers.retain(|p| !p.key.eq_ignore_ascii_case("authorization"));
    Ok(Identified::Basic(stored))
}

async fn verify_inner(
    controller: &Controller,
    adapter: &Arc<Plugin>,
    head: &adapting::RequestHead,
    stored: Option<Account>,
    source: IpAddr,
) -> Result<Account, Refusal> {
    // An unknown account is checked against a secret nobody has: it fails as a wrong
    // signature does, with the same answer (no telling which account ids exist).
    let secret = stored.as_ref().map_or_else(crate::secret::decoy, |a| a.secret.clone());
    let (plugin, call_head) = (Arc::clone(adapter), head.clone());
    if let Err(e) = adapter_call(controller, move || plugin.verify_client(&call_head, &secret)).await? {
        return Err(match e.cause {
            CallFailure::Rejected(reason) => Refusal::new(StatusCode::FORBIDDEN, reason),
            _ => adapter_failed(e),
        });
    }
    let Some(stored) = stored else {
        return Err(Refusal::new(StatusCode::FORBIDDEN, "the request signature does not match"));
    };
    let authorization = head.headers.iter().filter(|p| p.key.eq_ignore_ascii_case("authorization"));
    if !controller.signature_may_be_used(authorization.map(|p| p.value.as_str()), source) {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "this signature was used before from another address: a replayed request is refused",
        ));
    }
    Ok(stored)
}
