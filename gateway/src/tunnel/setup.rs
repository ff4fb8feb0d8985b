//! Tunnel setup, sans-IO (DESIGN.md step 5): the plan — one signed [`HopGrant`] per hop of the
//! chosen path, each hop's token and the token it presents to the next — and the outcome
//! once every hop has answered: live, or failed with the hops to roll back and an error that
//! names each hop that refused and why. The controller sends and collects; this decides.

use super::grant::{HopGrant, HopKey, Next};

/// What to send every hop of one tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupPlan {
    /// The tunnel.
    pub tunnel: u64,
    /// One per hop, in path order: relays, then the target site.
    pub hops: Vec<HopSetup>,
}

/// One hop's part of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopSetup {
    /// What the hop may do.
    pub grant: HopGrant,
    /// The controller's signature of `grant` with the hop's key.
    pub token: String,
}

/// A hop's answer to its setup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HopAnswer {
    /// Set up.
    Ready,
    /// Refused or failed, with why; `retry` when the hop said a retry can help (it had no key
    /// yet, say).
    Failed {
        /// Why.
        reason: String,
        /// Whether trying again may succeed.
        retry: bool,
    },
    /// The target site's authorizer refused the account, with why.
    Denied {
        /// Why.
        reason: String,
    },
}

/// Where a tunnel leads, and for whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// The endpoint the target site publishes.
    pub endpoint: &'a str,
    /// The account the tunnel carries traffic for.
    pub account: &'a str,
    /// A binding by capability: the capability's match key, which the site authorizes.
    pub capability: Option<&'a str>,
    /// A group's binding: its owner's epoch, which every hop checks.
    pub fence: Option<crate::mesh::messages::Fence>,
    /// A re-route: the binding's tunnel this one replaces (the site carries its streams on).
    pub replaces: Option<u64>,
}

/// Why a tunnel could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tunnel setup failed: {}{}", failures_text(.failed), rolled_back_text(.rolled_back))]
pub struct SetupFailed {
    /// Each hop that failed, and why.
    pub failed: Vec<(String, String)>,
    /// The hops that had accepted, torn down again.
    pub rolled_back: Vec<String>,
    /// Whether every failure said a retry can help.
    pub retry: bool,
    /// Whether the target site's authorizer refused the account.
    pub denied: bool,
}

fn failures_text(failed: &[(String, String)]) -> String {
    failed.iter().map(|(hop, why)| format!("{hop}: {why}")).collect::<Vec<_>>().join("; ")
}

fn rolled_back_text(hops: &[String]) -> String {
    if hops.is_empty() { String::new() } else { format!(" (rolled back on {})", hops.join(", ")) }
}

/// Plan tunnel `tunnel` from `ingress` (the controller) through `path` (relays, then the
/// target site) to `target`, until `expires_unix_ms`; `key` gives each hop's key.
pub fn plan(
    tunnel: u64,
    ingress: &str,
    path: &[String],
    target: Target<'_>,
    expires_unix_ms: u64,
    key: impl Fn(&str) -> HopKey,
) -> SetupPlan {
    let grants: Vec<HopGrant> = path
        .iter()
        .enumerate()
        .map(|(i, hop)| HopGrant {
            tunnel,
            hop: hop.clone(),
            prev: if i == 0 { ingress.to_owned() } else { path[i - 1].clone() },
            next: match path.get(i + 1) {
                Some(next) => Next::Node(next.clone()),
                None => Next::Endpoint(target.endpoint.to_owned()),
            },
            account: target.account.to_owned(),
            expires_unix_ms,
            // Only the site decides on it.
            capability: (i + 1 == path.len()).then(|| target.capability.map(str::to_owned)).flatten(),
            fence: target.fence,
            replaces: (i + 1 == path.len()).then_some(target.replaces).flatten(),
        })
        .collect();
    let hops =
        grants.into_iter().map(|grant| HopSetup { token: key(&grant.hop).sign(&grant), grant }).collect();
    SetupPlan { tunnel, hops }
}

impl SetupPlan {
    /// The target site's token, which the ingress presents when it opens a stream.
    pub fn site_token(&self) -> Option<&str> {
        self.hops.last().map(|h| h.token.as_str())
    }

    /// The hops in order.
    pub fn hop_names(&self) -> Vec<String> {
        self.hops.iter().map(|h| h.grant.hop.clone()).collect()
    }

    /// The outcome once every hop answered (`answers` in plan order): live, or failed — with
    /// the hops that had accepted, which must be torn down again.
    pub fn outcome(&self, answers: &[HopAnswer]) -> Result<(), SetupFailed> {
        let mut failed = Vec::new();
        let mut accepted = Vec::new();
        let (mut retry, mut denied) = (true, false);
        for (i, hop) in self.hops.iter().enumerate() {
            match answers.get(i) {
                Some(HopAnswer::Ready) => accepted.push(hop.grant.hop.clone()),
                Some(HopAnswer::Denied { reason }) => {
                    (retry, denied) = (false, true);
                    failed.push((hop.grant.hop.clone(), reason.clone()));
                }
                Some(HopAnswer::Failed { reason, retry: r }) => {
                    retry &= *r;
                    failed.push((hop.grant.hop.clone(), reason.clone()));
                }
                None => {
                    retry = false;
                    failed.push((hop.grant.hop.clone(), "no answer".to_owned()));
                }
            }
        }
        match failed.is_empty() {
            true => Ok(()),
            false => Err(SetupFailed { failed, rolled_back: accepted, retry, denied }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn key(name: &str) -> HopKey {
        HopKey::derive(&[7u8; 32], name)
    }

    fn to(endpoint: &str) -> Target<'_> {
        Target { endpoint, account: "acme", capability: None, fence: None, replaces: None }
    }

    #[test]
    fn each_hop_gets_its_grant_its_token_and_the_next_hops_token() {
        let p = plan(9, "controller", &path(&["r1", "r2", "site-b"]), to("web"), 5_000, key);
        assert_eq!(p.hop_names(), ["r1", "r2", "site-b"]);
        let [r1, r2, site] = &p.hops[..] else { panic!("three hops") };
        assert_eq!((r1.grant.prev.as_str(), &r1.grant.next), ("controller", &Next::Node("r2".into())));
        assert_eq!((r2.grant.prev.as_str(), &r2.grant.next), ("r1", &Next::Node("site-b".into())));
        assert_eq!((site.grant.prev.as_str(), &site.grant.next), ("r2", &Next::Endpoint("web".into())));
        for h in &p.hops {
            assert_eq!(
                (h.grant.tunnel, h.grant.account.as_str(), h.grant.expires_unix_ms),
                (9, "acme", 5_000)
            );
            assert!(key(&h.grant.hop).verifies(&h.grant, &h.token), "signed with the hop's own key");
        }
        assert_eq!(p.site_token(), Some(site.token.as_str()));
        assert_ne!(r1.token, r2.token);
        assert!(p.hops.iter().all(|h| h.grant.capability.is_none()));
    }

    #[test]
    fn a_capability_goes_to_the_site_alone_and_its_refusal_is_a_denial() {
        let target = Target { capability: Some("object-store/logs"), ..to("s3") };
        let p = plan(2, "c", &path(&["r1", "site-b"]), target, 1, key);
        let caps: Vec<_> = p.hops.iter().map(|h| h.grant.capability.as_deref()).collect();
        assert_eq!(caps, [None, Some("object-store/logs")]);
        let denied = HopAnswer::Denied { reason: "no rule grants acme".into() };
        let e = p.outcome(&[HopAnswer::Ready, denied]).unwrap_err();
        assert!(e.denied && !e.retry && e.rolled_back == ["r1"], "{e:?}");
        let refused = HopAnswer::Failed { reason: "bad token".into(), retry: false };
        assert!(!p.outcome(&[HopAnswer::Ready, refused]).unwrap_err().denied);
    }

    #[test]
    fn a_refusal_names_the_hop_and_rolls_back_the_others() {
        let p = plan(1, "c", &path(&["r1", "r2", "site-b"]), to("db"), 1, key);
        assert_eq!(p.outcome(&[HopAnswer::Ready, HopAnswer::Ready, HopAnswer::Ready]), Ok(()));
        let refused =
            HopAnswer::Failed { reason: "site-b does not publish endpoint `db`".into(), retry: false };
        let e = p.outcome(&[HopAnswer::Ready, HopAnswer::Ready, refused]).unwrap_err();
        assert_eq!(e.rolled_back, ["r1", "r2"]);
        assert!(!e.retry);
        assert_eq!(
            e.to_string(),
            "tunnel setup failed: site-b: site-b does not publish endpoint `db` (rolled back on r1, r2)"
        );
    }

    #[test]
    fn only_transient_failures_everywhere_are_worth_a_retry() {
        let p = plan(1, "c", &path(&["r1", "site-b"]), to("db"), 1, key);
        let transient = HopAnswer::Failed { reason: "no hop key yet".into(), retry: true };
        let permanent = HopAnswer::Failed { reason: "bad token".into(), retry: false };
        let e = p.outcome(&[transient.clone(), HopAnswer::Ready]).unwrap_err();
        assert!(e.retry && e.rolled_back == ["site-b"]);
        assert!(!p.outcome(&[transient, permanent]).unwrap_err().retry);
        let e = p.outcome(&[HopAnswer::Ready]).unwrap_err();
        assert!(!e.retry && e.failed == [("site-b".to_owned(), "no answer".to_owned())]);
    }
}
