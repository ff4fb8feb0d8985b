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
//! A pattern is `*` (anything), `prefix*`, `*suffix`, or an exact value. A request is granted
//! by the first rule whose three patterns all match; with no matching rule it is refused. A
//! malformed rule refuses every request and says which rule is wrong, so a typo in the policy
//! fails closed and loudly.

use skybridge_plugin_sdk::{AuthorizationRequest, Authorizer, Decision, config, export_authorizer};

/// The allowlist authorizer.
pub struct AllowlistAuthorizer;

struct Rule {
    key: String,
    account: String,
    platform: String,
    capability: String,
}

fn rules() -> Result<Vec<Rule>, String> {
    config::entries()
        .into_iter()
        .filter(|(key, _)| key == "allow" || key.starts_with("allow."))
        .map(|(key, value)| {
            let parts: Vec<&str> = value.split_whitespace().collect();
            match parts[..] {
                [account, platform, capability] => Ok(Rule {
                    account: account.to_owned(),
                    platform: platform.to_owned(),
                    capability: capability.to_owned(),
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
        let rules = match rules() {
            Ok(rules) => rules,
            Err(e) => return Decision::Refuse(format!("authorizer misconfigured: {e}")),
        };
        let capability = format!("{}/{}", r.capability.kind, r.capability.name);
        for rule in &rules {
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
