//! `allowlist-authorizer` — grants capability requests that match an operator's allowlist and
//! refuses everything else, with the reason either way.
//!
//! # Configuration
//!
//! Each configuration key that starts with `allow` is one rule (`allow`, `allow.ops`,
//! `allow.2`, …; rules are tried in key order). A rule is three space-separated patterns:
//!
//! ```text
//! allow.ops = "acme-* aws-* object-storage/*"
//!              account platform capability (KIND/NAME)
//! ```
//!
//! Sites also ask about tunnels to their endpoints, as capability `endpoint/NAME`
//! (`allow.web = "acme-* site-b endpoint/web"`).
//!
//! A pattern is `*` (anything), `prefix*`, `*suffix`, or an exact value. A request is granted
//! by the first rule whose three patterns all match; with no matching rule it is refused. A
//! malformed rule refuses every request and says which rule is wrong, so a typo in the policy
//! fails closed and loudly.
//!
//! A key starting with `pending` (`pending.review = "* aws-* database/*"`) is a rule of the
//! same form whose requests a person must decide: they are answered *not decided yet*, to be
//! asked again after `pending-retry-s` seconds (default 60), for as long as the rule applies.
//! Pending rules are tried before the allow rules.
//!
//! A rule may end with `until=TIME` (`2026-12-31T00:00:00Z`, or Unix seconds): after that it
//! grants nothing. Sites decide their granted capabilities again from time to time, so a grant
//! by an expired rule is revoked then.

use skybridge_plugin_sdk::{AuthorizationRequest, Authorizer, Decision, clock, config, export_authorizer};

/// The allowlist authorizer.
pub struct AllowlistAuthorizer;

struct Rule {
    key: String,
    account: String,
    platform: String,
    capability: String,
    /// Unix seconds after which the rule grants nothing.
    until: Option<u64>,
}

/// `until=` as Unix seconds: digits, or `YYYY-MM-DDTHH:MM:SSZ`.
fn parse_until(value: &str) -> Option<u64> {
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(seconds);
    }
    skybridge_plugin_sdk::clock::Civil::parse_utc(value)
}

fn rules(prefix: &str) -> Result<Vec<Rule>, String> {
    config::entries()
        .into_iter()
        .filter(|(key, _)| {
            key == prefix || key.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('.'))
        })
        .map(|(key, value)| {
            let mut parts: Vec<&str> = value.split_whitespace().collect();
            let until = match parts.last().and_then(|p| p.strip_prefix("until=")) {
                Some(t) => {
                    let until = parse_until(t).ok_or_else(|| {
                        format!(
                            "rule `{key}`: `until={t}` is not a time (YYYY-MM-DDTHH:MM:SSZ or Unix seconds)"
                        )
                    })?;
                    parts.pop();
                    Some(until)
                }
                None => None,
            };
            match parts[..] {
                [account, platform, capability] => Ok(Rule {
                    account: account.to_owned(),
                    platform: platform.to_owned(),
                    capability: capability.to_owned(),
                    until,
                    key,
                }),
                _ => Err(format!(
                    "rule `{key}` is malformed: expected `ACCOUNT PLATFORM KIND/NAME` patterns, got `{value}`"
                )),
            }
        })
        .collect()
}

/// `*`, `prefix*`, `*suffix` or an exact match.
fn matches(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        true
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        value.starts_with(prefix)
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        value.ends_with(suffix)
    } else {
        pattern == value
    }
}

impl Authorizer for AllowlistAuthorizer {
    fn authorize(r: &AuthorizationRequest) -> Decision {
        let (rules, pending) = match (rules("allow"), rules("pending")) {
            (Ok(rules), Ok(pending)) => (rules, pending),
            (Err(e), _) | (_, Err(e)) => return Decision::Refuse(format!("authorizer misconfigured: {e}")),
        };
        let capability = format!("{}/{}", r.capability.kind, r.capability.name);
        let (now, _) = clock::now();
        let live = |rule: &&Rule| rule.until.is_none_or(|until| now < until);
        let applies = |rule: &Rule| {
            matches(&rule.account, &r.account)
                && matches(&rule.platform, &r.platform)
                && matches(&rule.capability, &capability)
        };
        if let Some(rule) = pending.iter().filter(live).find(|rule| applies(rule)) {
            let retry_after_s = config::get("pending-retry-s").and_then(|v| v.parse().ok()).unwrap_or(60);
            return Decision::Pending {
                reason: format!("a person must decide (rule `{}`)", rule.key),
                retry_after_s,
            };
        }
        for rule in rules.iter().filter(live) {
            if matches(&rule.account, &r.account)
                && matches(&rule.platform, &r.platform)
                && matches(&rule.capability, &capability)
            {
                return Decision::Grant(format!("matched rule `{}`", rule.key));
            }
        }
        Decision::Refuse(format!(
            "no allowlist rule grants account `{}` capability `{capability}` on platform `{}` ({} checked)",
            r.account,
            r.platform,
            match rules.len() {
                1 => "1 rule".to_owned(),
                n => format!("{n} rules"),
            }
        ))
    }
}

export_authorizer!(AllowlistAuthorizer);

#[cfg(test)]
mod tests {
    use super::*;
    use skybridge_plugin_sdk::{Capability, testing::TestHost};

    fn request(account: &str, platform: &str, kind: &str, name: &str) -> AuthorizationRequest {
        AuthorizationRequest {
            account: account.into(),
            platform: platform.into(),
            capability: Capability { kind: kind.into(), name: name.into(), attributes: vec![] },
            context: vec![],
        }
    }

    #[test]
    fn grants_by_pattern_and_refuses_the_rest() {
        let _host = TestHost::new()
            .config("allow.ops", "acme-* aws-* object-storage/*")
            .config("allow.lab", "alice openstack-lab *")
            .install();
        let d = AllowlistAuthorizer::authorize(&request("acme-ops", "aws-east", "object-storage", "logs"));
        assert_eq!(d, Decision::Grant("matched rule `allow.ops`".into()));
        let d = AllowlistAuthorizer::authorize(&request("alice", "openstack-lab", "compute", "vm1"));
        assert_eq!(d, Decision::Grant("matched rule `allow.lab`".into()));
        let d = AllowlistAuthorizer::authorize(&request("acme-ops", "azure-west", "object-storage", "x"));
        assert!(matches!(d, Decision::Refuse(ref why) if why.contains("no allowlist rule")), "{d:?}");
    }

    #[test]
    fn a_rule_grants_until_its_time() {
        let rule = "* * object-store/* until=2026-12-04T16:00:00Z";
        let at = |seconds: u64| TestHost::new().config("allow.t", rule).clock(seconds, 0).install();
        let before = at(1_796_399_999);
        assert!(matches!(
            AllowlistAuthorizer::authorize(&request("a", "p", "object-store", "b")),
            Decision::Grant(_)
        ));
        drop(before);
        let _after = at(1_796_400_000);
        let d = AllowlistAuthorizer::authorize(&request("a", "p", "object-store", "b"));
        assert!(matches!(d, Decision::Refuse(ref why) if why.contains("no allowlist rule")), "{d:?}");
        assert_eq!(parse_until("2026-12-04T16:00:00Z"), Some(1_796_400_000));
        let _bad = TestHost::new().config("allow.t", "* * * until=tomorrow").install();
        let d = AllowlistAuthorizer::authorize(&request("a", "p", "k", "n"));
        assert!(matches!(d, Decision::Refuse(ref why) if why.contains("is not a time")), "{d:?}");
    }

    #[test]
    fn pending_rules_come_first_and_say_when_to_ask_again() {
        let _host = TestHost::new()
            .config("allow.all", "* * *")
            .config("pending.db", "* * database/*")
            .config("pending-retry-s", "5")
            .install();
        let d = AllowlistAuthorizer::authorize(&request("a", "p", "database", "orders"));
        assert_eq!(
            d,
            Decision::Pending { reason: "a person must decide (rule `pending.db`)".into(), retry_after_s: 5 }
        );
        assert!(matches!(
            AllowlistAuthorizer::authorize(&request("a", "p", "compute", "vm")),
            Decision::Grant(_)
        ));
        // `pending-retry-s` is a setting, not a rule.
        assert!(rules("pending").unwrap().iter().all(|r| r.key == "pending.db"));
    }

    #[test]
    fn empty_config_refuses() {
        let _host = TestHost::new().install();
        let d = AllowlistAuthorizer::authorize(&request("a", "p", "k", "n"));
        assert!(matches!(d, Decision::Refuse(ref why) if why.contains("0 rules")), "{d:?}");
    }

    #[test]
    fn malformed_rule_fails_closed() {
        let _host = TestHost::new().config("allow.x", "only-two patterns").install();
        let d = AllowlistAuthorizer::authorize(&request("a", "p", "k", "n"));
        assert!(matches!(d, Decision::Refuse(ref why) if why.contains("`allow.x` is malformed")), "{d:?}");
    }

    #[test]
    fn suffix_and_exact_patterns() {
        assert!(matches("*-prod", "db-prod"));
        assert!(!matches("*-prod", "db-dev"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exactly"));
    }
}
