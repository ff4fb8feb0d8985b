//! The kinds of capability the catalog knows: OpenStack's service types (the one published,
//! cloud-neutral registry of them), one spelling each, and the other clouds' and projects'
//! names for them as aliases. A kind outside this list is refused with the list in the error.

/// The kinds, in the spelling the catalog stores.
pub const KINDS: &[&str] = &[
    "identity",
    "compute",
    "image",
    "object-store",
    "block-storage",
    "shared-file-system",
    "network",
    "load-balancer",
    "dns",
    "database",
    "message",
    "key-manager",
    "orchestration",
    "placement",
    "container-infrastructure",
    "metric",
    "tcp",
];

/// Other names for the kinds: (alias, kind).
pub const ALIASES: &[(&str, &str)] = &[
    ("object-storage", "object-store"),
    ("objectstore", "object-store"),
    ("s3", "object-store"),
    ("swift", "object-store"),
    ("blob", "object-store"),
    ("storage", "object-store"),
    ("gcs", "object-store"),
    ("ec2", "compute"),
    ("nova", "compute"),
    ("vm", "compute"),
    ("server", "compute"),
    ("keystone", "identity"),
    ("iam", "identity"),
    ("sts", "identity"),
    ("glance", "image"),
    ("ami", "image"),
    ("cinder", "block-storage"),
    ("volume", "block-storage"),
    ("volumev2", "block-storage"),
    ("volumev3", "block-storage"),
    ("ebs", "block-storage"),
    ("manila", "shared-file-system"),
    ("sharev2", "shared-file-system"),
    ("efs", "shared-file-system"),
    ("files", "shared-file-system"),
    ("neutron", "network"),
    ("vpc", "network"),
    ("octavia", "load-balancer"),
    ("elb", "load-balancer"),
    ("designate", "dns"),
    ("route53", "dns"),
    ("trove", "database"),
    ("rds", "database"),
    ("sql", "database"),
    ("zaqar", "message"),
    ("messaging", "message"),
    ("queue", "message"),
    ("sqs", "message"),
    ("barbican", "key-manager"),
    ("kms", "key-manager"),
    ("key-vault", "key-manager"),
    ("heat", "orchestration"),
    ("cloudformation", "orchestration"),
    ("magnum", "container-infrastructure"),
    ("container-infra", "container-infrastructure"),
    ("eks", "container-infrastructure"),
    ("gnocchi", "metric"),
];

/// The catalog's spelling of `kind` (case and `_`/`-` ignored, aliases resolved), or an error
/// listing the kinds.
pub fn normalise(kind: &str) -> Result<&'static str, String> {
    let wanted = kind.trim().to_ascii_lowercase().replace('_', "-");
    if let Some(k) = KINDS.iter().find(|k| **k == wanted) {
        return Ok(k);
    }
    if let Some((_, k)) = ALIASES.iter().find(|(a, _)| *a == wanted) {
        return Ok(k);
    }
    let shown: String = kind.chars().take(64).collect();
    Err(format!("`{shown}` is not a capability kind of the catalog; the kinds are: {}", KINDS.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_aliases_and_strangers() {
        assert_eq!(normalise("object-store"), Ok("object-store"));
        assert_eq!(normalise("S3"), Ok("object-store"));
        assert_eq!(normalise("volumev3"), Ok("block-storage"));
        assert_eq!(normalise("Object_Storage"), Ok("object-store"));
        let e = normalise("teleporter").unwrap_err();
        assert!(e.contains("`teleporter`") && e.contains("object-store, block-storage"), "{e}");
        // Every alias points at a kind, and no alias shadows a kind.
        for (alias, kind) in ALIASES {
            assert!(KINDS.contains(kind), "{alias} → {kind}");
            assert!(!KINDS.contains(alias), "{alias} is a kind");
        }
    }
}
