//! The record of each refresh: when a platform reported, why, and what it changed — or why it
//! failed. Kept per platform, newest last, the most recent [`KEEP_REFRESHES`].

use serde::{Deserialize, Serialize};

use super::inventory::ReportSummary;

/// Refresh records kept per platform.
pub const KEEP_REFRESHES: usize = 100;

/// Why a site discovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// Its control channel came up.
    Connect,
    /// The periodic refresh.
    Periodic,
    /// An operator asked (`POST /v1/platforms/{p}/refresh`).
    OnDemand,
}

/// How a refresh ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// Integrated into the inventory.
    Integrated {
        /// What it changed.
        summary: ReportSummary,
    },
    /// Discovery failed at the site; nothing changed.
    DiscoveryFailed {
        /// The site's reason.
        reason: String,
    },
    /// The controller refused the report; nothing changed.
    Refused {
        /// Why.
        reason: String,
    },
}

/// One refresh of one platform. (No `deny_unknown_fields`: serde cannot combine it with the
/// flattened outcome.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RefreshRecord {
    /// Increasing per platform (set by the store).
    pub seq: u64,
    /// The platform.
    pub platform: String,
    /// When the controller recorded it (Unix ms).
    pub at_ms: u64,
    /// Why the site discovered (unknown for a report refused before it said).
    pub trigger: Option<Trigger>,
    /// Requests the site made to its cloud.
    pub requests: usize,
    /// How long discovery took at the site, ms.
    pub discovery_ms: u64,
    /// How long the controller took to integrate it, ms.
    pub integrate_ms: u64,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: Outcome,
}
