//! The authorization handshake, the controller's side: for every capability a platform's
//! report offers that has no authorization yet, ask the platform ([`Control::Authorize`]),
//! and act on its answer — a grant associates the capability in the catalog (creating the
//! entry when the catalog has no capability with its match key), a refusal is only audited,
//! a pending answer or silence is asked again later with the same request id, and a request
//! pending too long expires (and any grant the site recorded for it is released).
//!
//! The rules are sans-IO in [`crate::catalog::consent`]; this room keeps the pending ones in
//! memory (loaded from the store at start, so a restart resumes them), asks those due at every
//! tick, at most one attempt in flight per (platform, capability) and [`MAX_IN_FLIGHT`] in all.
//! Answers are stored by group commit: whatever decisions arrive while one transaction is
//! being written go together in the next, so a report of thousands of services is decided in
//! a few transactions rather than one each.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::catalog::{
    AuditRecord, Authorization, AuthorizationState, CatalogEntry, Consent, Handshake, InventoryRecord,
    Presence, Step,
};
use crate::mesh::messages::Control;
use crate::mesh::stream as control;
use crate::session::accounts::OPERATOR;
use crate::store::{Decided, StoreError};
use crate::time::now_unix_ms;

use super::Controller;
use super::events::Event;

/// Why a revocation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// The request is another platform's.
    #[error("request {request_id} is not platform {platform}'s to revoke")]
    NotYours {
        /// The sender.
        platform: String,
        /// The request.
        request_id: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RevokeError {
    /// The refusal code to answer with.
    pub fn code(&self) -> crate::mesh::messages::RefusalCode {
        match self {
            RevokeError::NotYours { .. } => crate::mesh::messages::RefusalCode::Forbidden,
            RevokeError::Store(_) => crate::mesh::messages::RefusalCode::Internal,
        }
    }
}

/// (platform, match key).
type Key = (String, String);

/// Attempts in flight at once, over all platforms.
pub const MAX_IN_FLIGHT: usize = 256;

/// What one group commit's waiter hears: the entry of a grant, or why nothing was stored.
type Committed = Result<Option<CatalogEntry>, Arc<StoreError>>;

/// Decisions waiting for the next group commit.
#[derive(Default)]
struct Commits {
    queue: Vec<(Decided, tokio::sync::oneshot::Sender<Committed>)>,
    /// Whether an attempt is writing them (it writes every batch until the queue is empty).
    writing: bool,
}

/// The attempt writing group commits; should it be dropped mid-way (at shutdown), the next
/// decision leads instead of waiting for it.
struct Leading<'a> {
    commits: &'a Mutex<Commits>,
    done: bool,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if !self.done {
            super::lock(self.commits).writing = false;
        }
    }
}

/// The pending authorizations and the attempts in flight.
pub struct Consents {
    handshake: Handshake,
    pending: Mutex<BTreeMap<Key, Authorization>>,
    in_flight: Mutex<BTreeSet<Key>>,
    commits: Mutex<Commits>,
}

impl Consents {
    /// With these timings, none pending yet.
    pub fn new(handshake: Handshake) -> Consents {
        Consents {
            handshake,
            pending: Mutex::default(),
            in_flight: Mutex::default(),
            commits: Mutex::default(),
        }
    }

    fn schedule(&self, a: Authorization) {
        if a.state == AuthorizationState::Pending {
            super::lock(&self.pending).insert((a.platform.clone(), a.match_key.clone()), a);
        }
    }
}

/// A random id (128 bits, hex).
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // The system's CSPRNG; should it ever fail, the clock keeps ids apart.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        bytes[..8].copy_from_slice(&now_unix_ms().to_le_bytes());
    }
    hex::encode(bytes)
}

impl Controller {
    /// Resume the pending authorizations the store holds that are this controller's to ask:
    /// alone, all of them (after a restart); in a group of `live` controllers, those it asked
    /// before and those it adopts from controllers that left ([`consent::adopts`]). How many.
    pub(super) async fn resume_authorizations(
        &self,
        live: Option<&std::collections::BTreeSet<String>>,
    ) -> Result<usize, StoreError> {
        let pending = self.store.authorizations(crate::store::Which::Pending).await?;
        let mut resumed = 0;
        for mut a in pending {
            let scheduled =
                super::lock(&self.consents.pending).contains_key(&(a.platform.clone(), a.match_key.clone()));
            let mine = match live {
                None => true,
                Some(live) => {
                    a.asked_by == self.name || crate::catalog::consent::adopts(&a, live, &self.name)
                }
            };
            if mine && !scheduled {
                if a.asked_by != self.name && live.is_some() {
                    tracing::debug!(platform = %a.platform, capability = %a.match_key, from = %a.asked_by, "pending authorization taken over");
                }
                a.asked_by.clone_from(&self.name);
                self.consents.schedule(a);
                resumed += 1;
            }
        }
        Ok(resumed)
    }

    /// After a report: an authorization for every capability of the present records written
    /// (new, changed or returned) that has none yet.
    pub(super) async fn request_authorizations(
        &self,
        platform: &str,
        written: &[InventoryRecord],
    ) -> Result<(), StoreError> {
        let now = now_unix_ms();
        let new: Vec<Authorization> = written
            .iter()
            .filter(|r| r.presence == Presence::Present)
            .flat_map(|r| {
                r.service.capabilities.iter().map(move |c| {
                    let mut a = Authorization::new(
                        random_id(),
                        platform,
                        c.clone(),
                        r.service.clone(),
                        OPERATOR,
                        now,
                    );
                    a.asked_by.clone_from(&self.name);
                    a
                })
            })
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let added = self.store.add_authorizations(new).await?;
        tracing::info!(%platform, requests = added.len(), "capability authorizations to ask");
        for a in added {
            self.consents.schedule(a);
        }
        Ok(())
    }

    /// Ask every authorization that is due (called by the controller's tick).
    pub(super) fn ask_due(self: &Arc<Self>) {
        let now = now_unix_ms();
        let due: Vec<Authorization> = {
            let pending = super::lock(&self.consents.pending);
            let mut in_flight = super::lock(&self.consents.in_flight);
            let room = MAX_IN_FLIGHT.saturating_sub(in_flight.len());
            let due: Vec<Authorization> = pending
                .iter()
                .filter(|(key, a)| a.due(now) && !in_flight.contains(*key))
                .take(room)
                .map(|(_, a)| a.clone())
                .collect();
            for a in &due {
                in_flight.insert((a.platform.clone(), a.match_key.clone()));
            }
            due
        };
        for a in due {
            let this = Arc::clone(self);
            self.spawner.spawn(async move { this.ask(a).await });
        }
    }

    /// One attempt: ask the platform, act on the answer, store it.
    async fn ask(self: Arc<Self>, mut a: Authorization) {
        let key = (a.platform.clone(), a.match_key.clone());
        let rules = self.consents.handshake;
        let answer = match self.nodes.connection(&a.platform) {
            None => Err("the platform's site is not connected".to_owned()),
            Some(conn) => {
                let request = Control::Authorize {
                    request_id: a.request_id.clone(),
                    account: a.account.clone(),
                    capability: a.capability.clone(),
                    service: Box::new(a.service.clone()),
                };
                let timeout = Duration::from_millis(rules.timeout_ms.max(1));
                match tokio::time::timeout(timeout, control::request(&conn, &request)).await {
                    Err(_) => Err(format!("no answer within {} ms", rules.timeout_ms)),
                    Ok(Err(e)) => Err(format!("{e:#}")),
                    Ok(Ok(Control::AuthorizationDecided { request_id, consent }))
                        if request_id == a.request_id =>
                    {
                        Ok(consent)
                    }
                    Ok(Ok(other)) => {
                        Err(format!("an answer that is not a decision on this request: {other:?}"))
                    }
                }
            }
        };
        let now = now_unix_ms();
        let (step, by) = match answer {
            Ok(consent) => {
                let reason: String = match &consent {
                    Consent::Grant { reason }
                    | Consent::Refuse { reason }
                    | Consent::Pending { reason, .. } => reason.chars().take(1_000).collect(),
                };
                let consent = match consent {
                    Consent::Grant { .. } => Consent::Grant { reason },
                    Consent::Refuse { .. } => Consent::Refuse { reason },
                    Consent::Pending { retry_after_s, .. } => Consent::Pending { reason, retry_after_s },
                };
                (a.answered(consent, now, &rules), format!("platform:{}", a.platform))
            }
            Err(why) => (a.unanswered(&why, now, &rules), "controller".to_owned()),
        };
        let audit = AuditRecord::of(&a, &by, now);
        let stored = match step {
            Step::Nothing => Ok(()),
            Step::Record | Step::Release | Step::Grant => {
                let grant = (step == Step::Grant).then(|| CatalogEntry::new(random_id(), &a.capability, now));
                let decided = Decided { authorization: a.clone(), audit, grant };
                match self.commit(decided).await {
                    Ok(Some(entry)) => {
                        tracing::info!(platform = %a.platform, capability = %a.match_key, entry = %entry.id, "capability granted");
                        self.events.publish(Event::CapabilityGranted {
                            platform: a.platform.clone(),
                            capability: a.match_key.clone(),
                            entry: entry.id,
                        });
                        Ok(())
                    }
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = stored {
            // Not stored: keep it pending in memory, to be asked (and stored) again.
            tracing::warn!(platform = %a.platform, capability = %a.match_key, "authorization not stored: {e}");
            a.state = AuthorizationState::Pending;
            a.next_attempt_ms = now.saturating_add(rules.backoff_ms);
        } else if a.state != AuthorizationState::Pending {
            tracing::info!(platform = %a.platform, capability = %a.match_key, state = ?a.state, reason = %a.reason, "authorization decided");
        }
        if step == Step::Release {
            self.release(&a).await;
        }
        {
            let mut pending = super::lock(&self.consents.pending);
            if a.state == AuthorizationState::Pending {
                pending.insert(key.clone(), a);
            } else {
                pending.remove(&key);
            }
        }
        super::lock(&self.consents.in_flight).remove(&key);
    }

    /// Store a decision in the next group commit. The first attempt to find no commit under
    /// way writes batches until the queue is empty; the others wait for theirs.
    async fn commit(&self, decided: Decided) -> Committed {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let lead = {
            let mut commits = super::lock(&self.consents.commits);
            commits.queue.push((decided, tx));
            !std::mem::replace(&mut commits.writing, true)
        };
        if lead {
            let mut leading = Leading { commits: &self.consents.commits, done: false };
            loop {
                let batch = {
                    let mut commits = super::lock(&self.consents.commits);
                    if commits.queue.is_empty() {
                        commits.writing = false;
                        leading.done = true;
                        break;
                    }
                    std::mem::take(&mut commits.queue)
                };
                let (decisions, waiters): (Vec<Decided>, Vec<_>) = batch.into_iter().unzip();
                let grants = decisions.iter().filter(|d| d.grant.is_some()).count();
                match self.store.decide_all(decisions).await {
                    Ok(entries) => {
                        for (waiter, entry) in waiters.into_iter().zip(entries) {
                            let _ = waiter.send(Ok(entry));
                        }
                    }
                    Err(e) => {
                        let e = Arc::new(e);
                        for waiter in waiters {
                            let _ = waiter.send(Err(Arc::clone(&e)));
                        }
                    }
                }
                if grants > 0 {
                    self.note_catalog_change().await;
                }
            }
        }
        rx.await.unwrap_or_else(|_| {
            Err(Arc::new(StoreError::backend("storing a decision", "the commit was dropped")))
        })
    }

    /// Tell the site a grant it may have recorded is released (best effort: a site that is
    /// away releases it when asked again, since an expired request is never asked again).
    async fn release(&self, a: &Authorization) {
        let Some(conn) = self.nodes.connection(&a.platform) else { return };
        let request = Control::ReleaseGrant { request_id: a.request_id.clone() };
        match control::request(&conn, &request).await {
            Ok(Control::GrantReleased { existed, .. }) => {
                tracing::info!(platform = %a.platform, request = %a.request_id, existed, "late grant released");
            }
            other => tracing::warn!(platform = %a.platform, request = %a.request_id, "release: {other:?}"),
        }
    }

    /// Platform `from` revokes the grant of `request_id`: the authorization becomes revoked,
    /// the platform's association with the entry goes (new bindings are refused), the
    /// bindings made for the capability there are closed (live sessions cut), and it is
    /// audited. Whether there was a grant.
    pub async fn revoke(&self, from: &str, request_id: &str, reason: &str) -> Result<bool, RevokeError> {
        let which = crate::store::Which::Request(request_id.to_owned());
        let found = self.store.authorizations(which).await?.into_iter().next();
        let Some(mut a) = found else { return Ok(false) };
        if a.platform != from {
            return Err(RevokeError::NotYours {
                platform: from.to_owned(),
                request_id: request_id.to_owned(),
            });
        }
        let reason: String = reason.chars().take(1_000).collect();
        let now = now_unix_ms();
        if !a.revoked(&reason, now) {
            return Ok(false);
        }
        let entry = self.store.entry_id(&a.match_key).await?;
        self.store.revoke(a.clone(), AuditRecord::of(&a, &format!("platform:{from}"), now)).await?;
        self.note_catalog_change().await;
        let closed = match &entry {
            Some(entry) => {
                let why = format!("capability {} revoked by {from}: {reason}", a.match_key);
                self.close_capability_bindings(entry, from, &why).await
            }
            None => Vec::new(),
        };
        tracing::info!(platform = %from, capability = %a.match_key, ?closed, %reason, "capability revoked");
        self.events.publish(Event::CapabilityRevoked {
            platform: from.to_owned(),
            capability: a.match_key.clone(),
            bindings_closed: closed,
        });
        Ok(true)
    }

    /// In a group: close the bindings by capability this controller serves whose capability
    /// its platform revoked — the site told another controller, which closed only its own.
    /// Looks up only the served bindings' authorizations (memory reads on a group's store).
    pub async fn close_revoked_capability_bindings(&self) {
        let served: BTreeSet<(String, String)> = self
            .bindings
            .list()
            .into_iter()
            .filter_map(|b| b.capability.map(|entry| (entry, b.to)))
            .collect();
        for (entry, platform) in served {
            let Ok(Some((e, _))) = self.store.entry(&entry).await else { continue };
            let revoked = match self.store.authorization(&platform, &e.match_key).await {
                Ok(a) => a.is_some_and(|a| a.state == AuthorizationState::Revoked),
                Err(err) => {
                    tracing::warn!("cannot read an authorization: {err}");
                    continue;
                }
            };
            if revoked {
                let why = format!("capability {} revoked by {platform}", e.match_key);
                let closed = self.close_capability_bindings(&entry, &platform, &why).await;
                tracing::info!(%platform, capability = %e.match_key, ?closed, "capability revoked (seen in the group's store)");
            }
        }
    }

    /// The latest audit lines of the handshake, newest first.
    pub async fn authorization_audit(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.store.audit(limit).await
    }

    /// Up to `limit` authorizations after the one of `after` (a platform and a match key).
    pub async fn authorizations(
        &self,
        after: Option<(String, String)>,
        limit: usize,
    ) -> Result<Vec<Authorization>, StoreError> {
        self.store.authorizations_page(after, limit).await
    }
}
