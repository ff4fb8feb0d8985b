//! # The service catalog's rules, sans-IO
//!
//! What the platforms' sites report, how it is checked, and what it changes — with no I/O, so
//! that every rule is unit-tested with the time passed in. The controller's `catalog` room
//! reads the store, calls these, and writes the result; the site's discovery checks its
//! report with the same bounds before sending it.
//!
//! ```text
//! site: adapter discovery ──▶ ServiceInfo[], gone ids ──validate_report, validate_gone──▶ pages
//! controller: pages ──validate_report, validate_gone──▶ plan_full_report(stored inventory, now)
//!            ──▶ Plan { records to write, platform state, summary } ──▶ store (one transaction)
//! ```
//!
//! - [`taxonomy`]: the capability kinds (OpenStack's service types) and their aliases;
//! - [`record`]: [`ServiceInfo`], its [`Bounds`], content hash;
//! - [`refresh`]: the record of each refresh;
//! - [`consent`]: the authorization handshake: states, retries with backoff, expiry, audit;
//! - [`entry`]: catalog entries (an id that never changes, a match key) and associations;
//! - [`inventory`]: presence (present → missing → withdrawn), held shrinks, [`plan_full_report`].

pub mod consent;
pub mod entry;
pub mod inventory;
pub mod record;
pub mod refresh;
pub mod taxonomy;

pub use consent::{AuditRecord, Authorization, AuthorizationState, Consent, Handshake, Step};
pub use entry::{Association, CatalogEntry};
pub use inventory::{
    InventoryRecord, Plan, PlatformReports, Presence, ReportSummary, Withdrawal, plan_full_report,
};
pub use record::{
    Bounds, CapabilityInfo, PUBLISHED_ENDPOINT, RecordError, ServiceInfo, match_key, validate_gone,
    validate_report,
};
pub use refresh::{KEEP_REFRESHES, Outcome, RefreshRecord, Trigger};
