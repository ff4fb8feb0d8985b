//! The authorization handshake, sans-IO: the controller asks the platform offering a
//! capability whether it may be used, and the platform's authorizer decides.
//!
//! One [`Authorization`] per (platform, capability match key): at most one request in flight
//! for it, under one `request_id` that is also the idempotency key — a retry carries the same
//! id, and the site answers the decision it recorded. Its life:
//!
//! ```text
//! pending ──grant──▶ granted ──revoke──▶ revoked
//!    │ ──refuse─▶ refused
//!    │ ──pending (a person must decide; retry after N s)──▶ pending, asked again then
//!    │ ──no answer in `timeout`, site away──▶ pending, asked again after a backoff
//!    └──still pending after `max_pending`──▶ expired (a grant recorded at the site is released)
//! ```

use serde::{Deserialize, Serialize};

use super::record::{CapabilityInfo, ServiceInfo};

/// Where an authorization stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum AuthorizationState {
    /// Asked, or to be asked; no decision yet.
    Pending,
    /// The platform granted it: the capability is in the catalog, associated with the platform.
    Granted,
    /// The platform refused it.
    Refused,
    /// Granted once, revoked by the platform since.
    Revoked,
    /// No decision within the maximum time; given up.
    Expired,
}

impl AuthorizationState {
    /// Every state, in order.
    pub const ALL: [AuthorizationState; 5] =
        [Self::Pending, Self::Granted, Self::Refused, Self::Revoked, Self::Expired];

    /// Its name, as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Granted => "granted",
            Self::Refused => "refused",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

/// The platform's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Consent {
    /// Granted; why (which rule).
    Grant {
        /// Why.
        reason: String,
    },
    /// Refused; why.
    Refuse {
        /// Why.
        reason: String,
    },
    /// Not decided yet (a person must look at it); ask again after `retry_after_s`.
    Pending {
        /// Why.
        reason: String,
        /// When to ask again, s.
        retry_after_s: u64,
    },
}

/// Timing of the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Handshake {
    /// How long the controller waits for one answer, ms (default 60 s).
    pub timeout_ms: u64,
    /// The first wait before asking again after no answer, ms (default 5 s); it doubles.
    pub backoff_ms: u64,
    /// The longest wait between attempts, ms (default 5 min); a pending answer's own
    /// retry-after is honoured up to this too.
    pub max_backoff_ms: u64,
    /// How long an authorization may stay pending before it expires, ms (default 24 h).
    pub max_pending_ms: u64,
}

impl Default for Handshake {
    fn default() -> Self {
        Handshake {
            timeout_ms: 60_000,
            backoff_ms: 5_000,
            max_backoff_ms: 300_000,
            max_pending_ms: 24 * 3600 * 1000,
        }
    }
}

/// In a group: whether controller `me`, one of the `live` controllers, takes over asking
/// pending authorization `a`, whose asker is not among them (it died or left). Of the live
/// controllers the one ranking first for its request id does (rendezvous hashing): every
/// controller that sees the same members picks the same one, and a departure moves only the
/// departed controller's requests.
pub fn adopts(a: &Authorization, live: &std::collections::BTreeSet<String>, me: &str) -> bool {
    if a.state != AuthorizationState::Pending || live.contains(&a.asked_by) {
        return false;
    }
    let rank = |name: &String| {
        let digest =
            ring::digest::digest(&ring::digest::SHA256, format!("{}\0{name}", a.request_id).as_bytes());
        digest.as_ref().iter().take(8).fold(0u64, |n, b| n << 8 | u64::from(*b))
    };
    live.iter().max_by_key(|name| rank(name)).is_some_and(|first| first == me)
}

/// One (platform, capability) authorization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// The request id: the idempotency key of every attempt.
    pub request_id: String,
    /// The platform asked.
    pub platform: String,
    /// The capability's match key.
    pub match_key: String,
    /// The capability as the platform's adapter selected it.
    pub capability: CapabilityInfo,
    /// The service offering it (its native id names it at the platform).
    pub service: ServiceInfo,
    /// The account the request is made for.
    pub account: String,
    /// Where it stands.
    pub state: AuthorizationState,
    /// The platform's last word (or why there was none).
    pub reason: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it was created (Unix ms).
    pub created_ms: u64,
    /// When its state last changed (Unix ms).
    pub updated_ms: u64,
    /// When to ask (again), while pending (Unix ms).
    pub next_attempt_ms: u64,
    /// The controller asking the platform while it is pending (in a group, another controller
    /// takes over when this one leaves: [`adopts`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub asked_by: String,
}

impl Authorization {
    /// A new pending authorization, to be asked at once.
    pub fn new(
        request_id: String,
        platform: &str,
        capability: CapabilityInfo,
        service: ServiceInfo,
        account: &str,
        now_ms: u64,
    ) -> Authorization {
        Authorization {
            request_id,
            platform: platform.to_owned(),
            match_key: capability.match_key(),
            capability,
            service,
            account: account.to_owned(),
            state: AuthorizationState::Pending,
            reason: "not asked yet".into(),
            attempts: 0,
            created_ms: now_ms,
            updated_ms: now_ms,
            next_attempt_ms: now_ms,
            asked_by: String::new(),
        }
    }

    /// Whether it should be asked now.
    pub fn due(&self, now_ms: u64) -> bool {
        self.state == AuthorizationState::Pending && self.next_attempt_ms <= now_ms
    }

    /// The backoff before attempt `attempts + 1`.
    fn backoff(&self, rules: &Handshake) -> u64 {
        let doublings = self.attempts.saturating_sub(1).min(20);
        rules.backoff_ms.saturating_mul(1 << doublings).min(rules.max_backoff_ms)
    }

    /// It expires if pending past the maximum; whether it did.
    fn expire_if_old(&mut self, now_ms: u64, rules: &Handshake) -> bool {
        if self.state == AuthorizationState::Pending
            && now_ms.saturating_sub(self.created_ms) >= rules.max_pending_ms
        {
            self.state = AuthorizationState::Expired;
            self.reason =
                format!("no decision within {} s (last: {})", rules.max_pending_ms / 1000, self.reason);
            self.updated_ms = now_ms;
            return true;
        }
        false
    }

    /// The platform answered an attempt.
    pub fn answered(&mut self, consent: Consent, now_ms: u64, rules: &Handshake) -> Step {
        self.attempts += 1;
        if self.state != AuthorizationState::Pending {
            // Given up (expired) or decided meanwhile: a late grant must not dangle.
            return if matches!(consent, Consent::Grant { .. }) { Step::Release } else { Step::Nothing };
        }
        self.updated_ms = now_ms;
        match consent {
            Consent::Grant { reason } => {
                self.state = AuthorizationState::Granted;
                self.reason = reason;
                Step::Grant
            }
            Consent::Refuse { reason } => {
                self.state = AuthorizationState::Refused;
                self.reason = reason;
                Step::Record
            }
            Consent::Pending { reason, retry_after_s } => {
                self.reason = reason;
                let wait = retry_after_s
                    .saturating_mul(1000)
                    .max(rules.backoff_ms.min(1000))
                    .min(rules.max_backoff_ms);
                self.next_attempt_ms = now_ms.saturating_add(wait);
                if self.expire_if_old(now_ms, rules) { Step::Release } else { Step::Record }
            }
        }
    }

    /// An attempt got no answer (timeout, site away, a refusal of the request itself).
    pub fn unanswered(&mut self, why: &str, now_ms: u64, rules: &Handshake) -> Step {
        self.attempts += 1;
        if self.state != AuthorizationState::Pending {
            return Step::Nothing;
        }
        self.reason = format!("no answer: {why}");
        self.updated_ms = now_ms;
        self.next_attempt_ms = now_ms.saturating_add(self.backoff(rules));
        if self.expire_if_old(now_ms, rules) { Step::Release } else { Step::Record }
    }

    /// The platform revoked a grant.
    pub fn revoked(&mut self, reason: &str, now_ms: u64) -> bool {
        if self.state != AuthorizationState::Granted {
            return false;
        }
        self.state = AuthorizationState::Revoked;
        self.reason = reason.to_owned();
        self.updated_ms = now_ms;
        true
    }
}

/// What the controller does after a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Store the authorization and its audit record.
    Record,
    /// Associate (creating the catalog entry when there is none), store, audit — in one
    /// transaction.
    Grant,
    /// Store it, and tell the site its recorded grant is released (the controller gave up).
    Release,
    /// Nothing changes.
    Nothing,
}

/// One line of the audit: who decided what about which capability, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Increasing (set by the store).
    pub seq: u64,
    /// When (Unix ms).
    pub at_ms: u64,
    /// The request id.
    pub request_id: String,
    /// The platform.
    pub platform: String,
    /// The capability's match key.
    pub match_key: String,
    /// The account it was asked for.
    pub account: String,
    /// Who decided: `platform:NAME` (its authorizer) or `controller`.
    pub by: String,
    /// The state it led to.
    pub state: AuthorizationState,
    /// Why.
    pub reason: String,
    /// The catalog entry it associated, when granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
}

impl AuditRecord {
    /// The audit line for `a` as it stands, decided `by`.
    pub fn of(a: &Authorization, by: &str, now_ms: u64) -> AuditRecord {
        AuditRecord {
            seq: 0,
            at_ms: now_ms,
            request_id: a.request_id.clone(),
            platform: a.platform.clone(),
            match_key: a.match_key.clone(),
            account: a.account.clone(),
            by: by.to_owned(),
            state: a.state,
            reason: a.reason.clone(),
            entry: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_states_name_is_its_json() {
        for state in AuthorizationState::ALL {
            assert_eq!(serde_json::to_value(state).unwrap(), serde_json::json!(state.as_str()));
        }
    }

    fn auth(now: u64) -> Authorization {
        let service = ServiceInfo {
            native_id: "arn:aws:s3:::b".into(),
            kind: "object-store".into(),
            name: "b".into(),
            endpoint: "e".into(),
            region: None,
            attributes: Default::default(),
            capabilities: vec![],
        };
        let capability =
            CapabilityInfo { kind: "object-store".into(), name: "B".into(), attributes: Default::default() };
        Authorization::new("req-1".into(), "aws", capability, service, "operator", now)
    }

    #[test]
    fn a_departed_controllers_pending_requests_are_each_adopted_by_one_survivor() {
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<std::collections::BTreeSet<_>>();
        let live = names(&["c1", "c2", "c3"]);
        let mut adopted_by = std::collections::BTreeMap::<String, usize>::new();
        for i in 0..300 {
            let mut a = auth(0);
            a.request_id = format!("req-{i}");
            // Asked by a live controller: nobody else takes it.
            a.asked_by = "c2".into();
            assert!(live.iter().all(|me| !adopts(&a, &live, me)));
            // Its asker left: exactly one survivor takes it — the same after the others leave.
            a.asked_by = "c4".into();
            let takers: Vec<&String> = live.iter().filter(|me| adopts(&a, &live, me)).collect();
            assert_eq!(takers.len(), 1, "{takers:?}");
            *adopted_by.entry(takers[0].clone()).or_default() += 1;
            // Decided ones are nobody's to ask.
            a.state = AuthorizationState::Granted;
            assert!(live.iter().all(|me| !adopts(&a, &live, me)));
        }
        // Spread over the survivors (each gets some of 300).
        assert_eq!(adopted_by.len(), 3, "{adopted_by:?}");
        assert!(adopted_by.values().all(|n| *n > 50), "{adopted_by:?}");
    }

    #[test]
    fn grant_refuse_and_the_match_key() {
        let rules = Handshake::default();
        let mut a = auth(0);
        assert_eq!(a.match_key, "object-store/b");
        assert!(a.due(0));
        assert_eq!(a.answered(Consent::Grant { reason: "rule ops".into() }, 5, &rules), Step::Grant);
        assert_eq!((a.state, a.reason.as_str(), a.attempts), (AuthorizationState::Granted, "rule ops", 1));
        assert!(!a.due(10));
        assert!(a.revoked("no longer", 20));
        assert_eq!(a.state, AuthorizationState::Revoked);
        let mut b = auth(0);
        assert_eq!(b.answered(Consent::Refuse { reason: "no".into() }, 5, &rules), Step::Record);
        assert_eq!(b.state, AuthorizationState::Refused);
        assert!(!b.revoked("x", 6), "only grants are revoked");
    }

    #[test]
    fn no_answer_backs_off_keeps_the_id_and_expires() {
        let rules =
            Handshake { backoff_ms: 1_000, max_backoff_ms: 4_000, max_pending_ms: 20_000, timeout_ms: 500 };
        let mut a = auth(0);
        let mut waits = vec![];
        let mut now = 0;
        for _ in 0..4 {
            assert_eq!(a.unanswered("timeout", now, &rules), Step::Record);
            waits.push(a.next_attempt_ms - now);
            now = a.next_attempt_ms;
        }
        assert_eq!(waits, [1_000, 2_000, 4_000, 4_000], "doubling up to the maximum");
        assert_eq!((a.request_id.as_str(), a.state), ("req-1", AuthorizationState::Pending));
        assert!(a.reason.contains("timeout"));
        // Past the maximum pending time it expires, and a grant arriving after that is released.
        assert_eq!(a.unanswered("site away", 20_000, &rules), Step::Release);
        assert_eq!(a.state, AuthorizationState::Expired);
        assert!(!a.due(u64::MAX));
        assert_eq!(a.answered(Consent::Grant { reason: "late".into() }, 21_000, &rules), Step::Release);
        assert_eq!(a.state, AuthorizationState::Expired, "a late grant changes nothing");
    }

    #[test]
    fn a_pending_answer_is_asked_again_after_its_retry_after() {
        let rules = Handshake::default();
        let mut a = auth(0);
        let pending = Consent::Pending { reason: "needs a person".into(), retry_after_s: 30 };
        assert_eq!(a.answered(pending, 100, &rules), Step::Record);
        assert_eq!((a.state, a.next_attempt_ms), (AuthorizationState::Pending, 30_100));
        assert!(!a.due(30_099) && a.due(30_100));
        // A retry-after beyond the maximum backoff is capped.
        a.answered(Consent::Pending { reason: "x".into(), retry_after_s: 86_400 }, 30_100, &rules);
        assert_eq!(a.next_attempt_ms, 30_100 + rules.max_backoff_ms);
        assert_eq!(
            a.answered(Consent::Grant { reason: "approved by ana".into() }, 40_000, &rules),
            Step::Grant
        );
    }
}
