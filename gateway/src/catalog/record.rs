//! A service as a platform reports it, and the bounds every report is held to — at the site
//! before it sends, and again at the controller, which trusts no site.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::taxonomy;

/// The attribute a site sets on a service reached through one of the endpoints it publishes to
/// tunnels (its value: that endpoint's name), so that bindings by capability can reach it.
pub const PUBLISHED_ENDPOINT: &str = "published-endpoint";

/// One service of a platform's cloud, keyed by the cloud's own id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceInfo {
    /// The cloud's own stable key (bucket, container, Keystone endpoint id, instance ARN).
    pub native_id: String,
    /// The capability kind, in the taxonomy's spelling.
    pub kind: String,
    /// The service's name at the platform.
    pub name: String,
    /// Where it is reached, as the cloud describes it.
    pub endpoint: String,
    /// Region, when the cloud has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Further attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// What applications may use it for, as the platform's adapter maps it (at least one).
    #[serde(default)]
    pub capabilities: Vec<CapabilityInfo>,
}

/// A capability a service offers, in the catalog's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CapabilityInfo {
    /// A kind of the taxonomy.
    pub kind: String,
    /// Its name within the kind.
    pub name: String,
    /// Attributes (region, tier, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

impl CapabilityInfo {
    /// What "the catalog has this capability" means: the kind and the name, trimmed, in lower
    /// case, inner runs of white space folded to one space.
    pub fn match_key(&self) -> String {
        match_key(&self.kind, &self.name)
    }
}

/// The match key of a capability of `kind` named `name`.
pub fn match_key(kind: &str, name: &str) -> String {
    let name = name.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    format!("{kind}/{name}")
}

/// How large a report and its records may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bounds {
    /// Records in one platform's report (default 100,000).
    pub max_services: usize,
    /// Bytes of a native id (default 512).
    pub max_native_id: usize,
    /// Bytes of a name (default 256).
    pub max_name: usize,
    /// Bytes of an endpoint (default 1,024).
    pub max_endpoint: usize,
    /// Attributes per record (default 32).
    pub max_attributes: usize,
    /// Bytes of an attribute key (default 64) and value (default 1,024).
    pub max_attribute_key: usize,
    /// See `max_attribute_key`.
    pub max_attribute_value: usize,
    /// Capabilities per service (default 8).
    pub max_capabilities: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            max_services: 100_000,
            max_native_id: 512,
            max_name: 256,
            max_endpoint: 1_024,
            max_attributes: 32,
            max_attribute_key: 64,
            max_attribute_value: 1_024,
            max_capabilities: 8,
        }
    }
}

/// Why a record or report is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// One record breaks a rule.
    #[error("service `{native_id}`: {reason}")]
    Invalid {
        /// Its native id (shortened when too long).
        native_id: String,
        /// Which rule.
        reason: String,
    },
    /// Two records share a native id.
    #[error("native id `{0}` appears twice in one report")]
    Duplicate(String),
    /// Too many records.
    #[error("a report of more than {limit} services")]
    TooMany {
        /// The bound.
        limit: usize,
    },
}

fn shorten(s: &str) -> String {
    if s.len() <= 80 {
        return s.to_owned();
    }
    let mut end = 80;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn check_text(what: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!("{what} is {} bytes long, more than {max}", value.len()));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{what} contains control characters"));
    }
    Ok(())
}

fn check_attributes(attributes: &BTreeMap<String, String>, bounds: &Bounds) -> Result<(), String> {
    if attributes.len() > bounds.max_attributes {
        return Err(format!("{} attributes, more than {}", attributes.len(), bounds.max_attributes));
    }
    for (key, value) in attributes {
        check_text("an attribute key", key, bounds.max_attribute_key)?;
        check_text(&format!("attribute `{}`", shorten(key)), value, bounds.max_attribute_value)?;
    }
    Ok(())
}

impl ServiceInfo {
    /// Check this record against `bounds`, and put its kind in the taxonomy's spelling.
    pub fn validate(&mut self, bounds: &Bounds) -> Result<(), RecordError> {
        let invalid = |reason: String| RecordError::Invalid { native_id: shorten(&self.native_id), reason };
        if self.native_id.is_empty() {
            return Err(invalid("the native id is empty".into()));
        }
        check_text("the native id", &self.native_id, bounds.max_native_id).map_err(invalid)?;
        if self.name.is_empty() {
            return Err(invalid("the name is empty".into()));
        }
        check_text("the name", &self.name, bounds.max_name).map_err(invalid)?;
        check_text("the endpoint", &self.endpoint, bounds.max_endpoint).map_err(invalid)?;
        if let Some(region) = &self.region {
            check_text("the region", region, bounds.max_name).map_err(invalid)?;
        }
        check_attributes(&self.attributes, bounds).map_err(invalid)?;
        self.kind = taxonomy::normalise(&self.kind).map_err(invalid)?.to_owned();
        if self.capabilities.is_empty() {
            return Err(invalid("the adapter selected no capability for it".into()));
        }
        if self.capabilities.len() > bounds.max_capabilities {
            return Err(invalid(format!(
                "{} capabilities, more than {}",
                self.capabilities.len(),
                bounds.max_capabilities
            )));
        }
        for capability in &mut self.capabilities {
            if capability.name.trim().is_empty() {
                return Err(invalid("a capability has an empty name".into()));
            }
            check_text("a capability name", &capability.name, bounds.max_name).map_err(invalid)?;
            check_attributes(&capability.attributes, bounds).map_err(invalid)?;
            capability.kind = taxonomy::normalise(&capability.kind)
                .map_err(|e| invalid(format!("capability `{}`: {e}", shorten(&capability.name))))?
                .to_owned();
        }
        Ok(())
    }

    /// A digest of everything in the record: equal digests, nothing to write.
    pub fn content_hash(&self) -> String {
        // BTreeMap serialises in key order, so equal records serialise equally.
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(&Sha256::digest(&bytes)[..16])
    }
}

/// Check a whole report: every record, no duplicate native id, not too many.
pub fn validate_report(services: &mut [ServiceInfo], bounds: &Bounds) -> Result<(), RecordError> {
    if services.len() > bounds.max_services {
        return Err(RecordError::TooMany { limit: bounds.max_services });
    }
    let mut seen = BTreeSet::new();
    for service in services.iter_mut() {
        service.validate(bounds)?;
        if !seen.insert(service.native_id.as_str()) {
            return Err(RecordError::Duplicate(shorten(&service.native_id)));
        }
    }
    Ok(())
}

/// Check a report's `gone` ids (native ids the cloud says no longer exist) against its
/// `services`: not too many, each a valid native id, none also reported as present. Returns
/// them as a set (a repeated id counts once).
pub fn validate_gone(
    gone: Vec<String>,
    services: &[ServiceInfo],
    bounds: &Bounds,
) -> Result<BTreeSet<String>, RecordError> {
    if gone.len() > bounds.max_services {
        return Err(RecordError::TooMany { limit: bounds.max_services });
    }
    let present: BTreeSet<&str> = services.iter().map(|s| s.native_id.as_str()).collect();
    let mut out = BTreeSet::new();
    for id in gone {
        let invalid = |reason: String| RecordError::Invalid { native_id: shorten(&id), reason };
        if id.is_empty() {
            return Err(invalid("a gone native id is empty".into()));
        }
        check_text("the gone native id", &id, bounds.max_native_id).map_err(invalid)?;
        if present.contains(id.as_str()) {
            return Err(invalid("reported both present and gone".into()));
        }
        out.insert(id);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn service(id: &str) -> ServiceInfo {
        ServiceInfo {
            native_id: id.into(),
            kind: "s3".into(),
            name: id.into(),
            endpoint: "http://x".into(),
            region: Some("r".into()),
            attributes: BTreeMap::new(),
            capabilities: vec![CapabilityInfo {
                kind: "blob".into(),
                name: id.into(),
                attributes: BTreeMap::new(),
            }],
        }
    }

    #[test]
    fn gone_ids_are_bounded_valid_and_never_also_present() {
        let b = Bounds::default();
        let services = [service("a")];
        let gone = validate_gone(vec!["b".into(), "b".into(), "c".into()], &services, &b).unwrap();
        assert_eq!(gone.into_iter().collect::<Vec<_>>(), ["b", "c"]);
        let both = validate_gone(vec!["a".into()], &services, &b).unwrap_err();
        assert!(both.to_string().contains("both present and gone"), "{both}");
        assert!(validate_gone(vec![String::new()], &services, &b).is_err());
        assert!(validate_gone(vec!["x\u{0}y".into()], &services, &b).is_err());
        let many = vec!["x".to_owned(); b.max_services + 1];
        assert_eq!(validate_gone(many, &services, &b), Err(RecordError::TooMany { limit: b.max_services }));
    }

    #[test]
    fn records_are_bounded_normalised_and_unique() {
        let b = Bounds::default();
        let mut ok = vec![service("a"), service("b")];
        validate_report(&mut ok, &b).unwrap();
        assert_eq!(ok[0].kind, "object-store");
        assert_eq!(ok[0].capabilities[0].kind, "object-store", "capability kinds are normalised too");

        let mut dup = vec![service("a"), service("a")];
        assert_eq!(validate_report(&mut dup, &b), Err(RecordError::Duplicate("a".into())));
        let mut many = vec![service("a"), service("b")];
        let small = Bounds { max_services: 1, ..b };
        assert_eq!(validate_report(&mut many, &small), Err(RecordError::TooMany { limit: 1 }));

        let cases: Vec<(ServiceInfo, &str)> = vec![
            (ServiceInfo { native_id: String::new(), ..service("a") }, "native id is empty"),
            (ServiceInfo { native_id: "x".repeat(600), ..service("a") }, "600 bytes long"),
            (ServiceInfo { name: "a\u{0}b".into(), ..service("a") }, "control characters"),
            (ServiceInfo { kind: "warp-drive".into(), ..service("a") }, "not a capability kind"),
            (
                ServiceInfo {
                    attributes: (0..40).map(|i| (i.to_string(), String::new())).collect(),
                    ..service("a")
                },
                "40 attributes",
            ),
            (
                ServiceInfo { attributes: [("k".into(), "v".repeat(2000))].into(), ..service("a") },
                "attribute `k` is 2000 bytes",
            ),
            (ServiceInfo { capabilities: vec![], ..service("a") }, "selected no capability"),
            (
                ServiceInfo {
                    capabilities: vec![CapabilityInfo {
                        kind: "ftl".into(),
                        name: "x".into(),
                        attributes: BTreeMap::new(),
                    }],
                    ..service("a")
                },
                "capability `x`: `ftl` is not a capability kind",
            ),
        ];
        for (mut s, expected) in cases {
            let e = s.validate(&b).unwrap_err().to_string();
            assert!(e.contains(expected), "{e} (expected {expected})");
        }
    }

    #[test]
    fn match_keys_ignore_case_and_spacing() {
        assert_eq!(match_key("object-store", "  My   Bucket "), "object-store/my bucket");
        assert_ne!(match_key("object-store", "a"), match_key("compute", "a"));
    }

    #[test]
    fn the_hash_changes_with_any_field_and_only_then() {
        let a = service("a");
        assert_eq!(a.content_hash(), service("a").content_hash());
        let mut b = service("a");
        b.attributes.insert("tier".into(), "hot".into());
        assert_ne!(a.content_hash(), b.content_hash());
        assert_ne!(
            a.content_hash(),
            ServiceInfo { endpoint: "http://y".into(), ..service("a") }.content_hash()
        );
    }
}
