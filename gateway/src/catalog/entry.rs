//! Catalog entries and their associations with platforms, sans-IO.
//!
//! An entry is a capability the catalog has: an id that never changes (random; clients keep
//! it), a kind, a name and its match key (kind + normalised name: "the catalog has this
//! capability"). It is created the first time a platform grants a capability with a new match
//! key; each platform that grants it is associated with it. Granted and found → associate;
//! granted and not found → create, then associate (one transaction, in the store).

use serde::{Deserialize, Serialize};

use super::record::CapabilityInfo;

/// A capability in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// Never changes.
    pub id: String,
    /// The kind (taxonomy).
    pub kind: String,
    /// The name, as the first granting platform spelt it.
    pub name: String,
    /// What "the catalog has this capability" means.
    pub match_key: String,
    /// When it was created (Unix ms).
    pub created_ms: u64,
}

impl CatalogEntry {
    /// A new entry for `capability`, with id `id`.
    pub fn new(id: String, capability: &CapabilityInfo, now_ms: u64) -> CatalogEntry {
        CatalogEntry {
            id,
            kind: capability.kind.clone(),
            name: capability.name.clone(),
            match_key: capability.match_key(),
            created_ms: now_ms,
        }
    }
}

/// A platform offering a catalog entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Association {
    /// The entry.
    pub entry: String,
    /// The platform.
    pub platform: String,
    /// The service at the platform that offers it (its native id).
    pub native_id: String,
    /// The authorization behind it.
    pub request_id: String,
    /// The capability as that platform described it (attributes: region, …).
    pub capability: CapabilityInfo,
    /// When it was associated (Unix ms).
    pub since_ms: u64,
}
