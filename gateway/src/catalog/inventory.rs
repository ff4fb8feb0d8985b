//! Each platform's inventory, by native id, and what a full report changes in it. Sans-IO:
//! the caller reads what is stored, calls [`plan_full_report`] with the time, and writes the
//! plan's records in one transaction.
//!
//! The rules (the catalog section of the README says why):
//! - a record is written only when it is new, its content hash changed, or its presence did;
//!   an unchanged record costs nothing;
//! - a record absent from a full report becomes *missing*; after `grace_reports` further
//!   reports without it, or `grace_ms` after it went missing, it is *withdrawn*; if it comes
//!   back first, it is present again;
//! - a record the report says is *gone* (the cloud itself says so: an EC2 instance in state
//!   `terminated`) is withdrawn at once, with no grace;
//! - a report that would make more than half of a platform's present records missing is
//!   *held*: they are marked missing but their grace does not start until a second report
//!   confirms the shrink (an emulator or a throttled page can silently truncate a list);
//! - a site going away makes its platform's presence *unknown*; nothing is withdrawn for that.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::record::ServiceInfo;

/// Whether a platform still has a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Presence {
    /// In the latest full report.
    Present,
    /// Not in the latest full report; withdrawn after the grace period.
    Missing,
    /// Gone.
    Withdrawn,
}

/// One service in a platform's inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InventoryRecord {
    /// The service as last reported.
    pub service: ServiceInfo,
    /// Its content hash.
    pub hash: String,
    /// Whether the platform still has it.
    pub presence: Presence,
    /// When it was first reported (Unix ms).
    pub first_seen_ms: u64,
    /// When its content or presence last changed (Unix ms).
    pub changed_ms: u64,
    /// When it went missing (Unix ms), while missing or withdrawn; `None` while a held shrink
    /// is unconfirmed.
    pub missing_since_ms: Option<u64>,
    /// Confirmed full reports in a row without it.
    pub misses: u32,
}

/// What is kept about a platform's reports.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformReports {
    /// Full reports integrated.
    pub reports: u64,
    /// When the last one was (Unix ms).
    pub last_report_ms: Option<u64>,
    /// A shrink waiting for a second report to confirm it: how many records it would remove.
    pub held_shrink: Option<usize>,
}

/// When missing records are withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Withdrawal {
    /// Further full reports a record may miss before it is withdrawn (default 2).
    pub grace_reports: u32,
    /// Or this long after it went missing, ms (default 24 h), whichever comes first.
    pub grace_ms: u64,
}

impl Default for Withdrawal {
    fn default() -> Self {
        Withdrawal { grace_reports: 2, grace_ms: 24 * 3600 * 1000 }
    }
}

/// What a report did, counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportSummary {
    /// Services reported.
    pub reported: usize,
    /// New to the inventory.
    pub added: usize,
    /// Content changed.
    pub changed: usize,
    /// Nothing to write.
    pub unchanged: usize,
    /// Missing or withdrawn before, present again.
    pub returned: usize,
    /// Newly missing.
    pub missing: usize,
    /// Withdrawn by this report.
    pub withdrawn: usize,
    /// Whether the report shrank the platform by more than half and is held for confirmation.
    pub held: bool,
}

/// What to write for one full report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Records to write (only these changed).
    pub put: Vec<InventoryRecord>,
    /// The platform's report state after this report.
    pub platform: PlatformReports,
    /// The counts.
    pub summary: ReportSummary,
}

/// Plan the integration of a full `report` (already validated) into the `stored` inventory;
/// `gone`: native ids the report says no longer exist (none of them in `report`).
pub fn plan_full_report(
    platform: &PlatformReports,
    stored: &BTreeMap<String, InventoryRecord>,
    report: Vec<ServiceInfo>,
    gone: &BTreeSet<String>,
    now_ms: u64,
    rules: &Withdrawal,
) -> Plan {
    let mut summary = ReportSummary { reported: report.len(), ..ReportSummary::default() };
    let mut put = Vec::new();
    let mut reported = BTreeSet::new();
    for service in report {
        let hash = service.content_hash();
        reported.insert(service.native_id.clone());
        match stored.get(&service.native_id) {
            Some(old) if old.hash == hash && old.presence == Presence::Present => summary.unchanged += 1,
            Some(old) => {
                if old.presence == Presence::Present {
                    summary.changed += 1;
                } else {
                    summary.returned += 1;
                }
                put.push(InventoryRecord {
                    service,
                    hash,
                    presence: Presence::Present,
                    first_seen_ms: old.first_seen_ms,
                    changed_ms: now_ms,
                    missing_since_ms: None,
                    misses: 0,
                });
            }
            None => {
                summary.added += 1;
                put.push(InventoryRecord {
                    service,
                    hash,
                    presence: Presence::Present,
                    first_seen_ms: now_ms,
                    changed_ms: now_ms,
                    missing_since_ms: None,
                    misses: 0,
                });
            }
        }
    }

    let present = stored.values().filter(|r| r.presence == Presence::Present).count();
    // Explicit removals are not a suspiciously short list: they do not count toward a hold.
    let vanishing = stored
        .values()
        .filter(|r| {
            r.presence == Presence::Present
                && !reported.contains(&r.service.native_id)
                && !gone.contains(&r.service.native_id)
        })
        .count();
    // More than half of what was there, not confirmed by the previous report: hold it.
    let hold = vanishing * 2 > present && platform.held_shrink.is_none();
    let mut next = PlatformReports {
        reports: platform.reports + 1,
        last_report_ms: Some(now_ms),
        held_shrink: hold.then_some(vanishing),
    };
    summary.held = hold;

    for old in stored.values() {
        if reported.contains(&old.service.native_id) || old.presence == Presence::Withdrawn {
            continue;
        }
        let mut record = old.clone();
        if gone.contains(&old.service.native_id) {
            record.presence = Presence::Withdrawn;
            record.changed_ms = now_ms;
            record.missing_since_ms.get_or_insert(now_ms);
            summary.withdrawn += 1;
            put.push(record);
            continue;
        }
        if hold {
            if old.presence == Presence::Present {
                // Marked, but the grace does not start until a second report confirms it.
                record.presence = Presence::Missing;
                record.changed_ms = now_ms;
                record.missing_since_ms = None;
                record.misses = 0;
                summary.missing += 1;
                put.push(record);
            }
            continue;
        }
        record.misses += 1;
        let since = *record.missing_since_ms.get_or_insert(now_ms);
        if old.presence == Presence::Present {
            record.presence = Presence::Missing;
            record.changed_ms = now_ms;
            summary.missing += 1;
        }
        let expired = now_ms.saturating_sub(since) >= rules.grace_ms;
        if record.misses > rules.grace_reports || expired {
            record.presence = Presence::Withdrawn;
            record.changed_ms = now_ms;
            summary.withdrawn += 1;
        }
        put.push(record);
    }
    if !hold {
        next.held_shrink = None;
    }
    Plan { put, platform: next, summary }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(id: &str, endpoint: &str) -> ServiceInfo {
        ServiceInfo {
            native_id: id.into(),
            kind: "object-store".into(),
            name: id.into(),
            endpoint: endpoint.into(),
            region: None,
            attributes: BTreeMap::new(),
            capabilities: vec![],
        }
    }

    /// Apply plans to an in-memory inventory, as the store would.
    struct Inventory {
        platform: PlatformReports,
        stored: BTreeMap<String, InventoryRecord>,
    }

    impl Inventory {
        fn new() -> Self {
            Inventory { platform: PlatformReports::default(), stored: BTreeMap::new() }
        }
        fn report(&mut self, ids: &[&str], now_ms: u64) -> Plan {
            self.report_gone(ids, &[], now_ms)
        }
        fn report_gone(&mut self, ids: &[&str], gone: &[&str], now_ms: u64) -> Plan {
            let report = ids.iter().map(|id| service(id, "e")).collect();
            let gone: BTreeSet<String> = gone.iter().map(|id| (*id).to_owned()).collect();
            let plan =
                plan_full_report(&self.platform, &self.stored, report, &gone, now_ms, &Withdrawal::default());
            for r in &plan.put {
                self.stored.insert(r.service.native_id.clone(), r.clone());
            }
            self.platform = plan.platform.clone();
            plan
        }
        fn presence(&self, id: &str) -> Presence {
            self.stored[id].presence
        }
    }

    #[test]
    fn unchanged_records_are_not_written_and_changes_are() {
        let mut inv = Inventory::new();
        let first = inv.report(&["a", "b", "c"], 1);
        assert_eq!((first.summary.added, first.put.len()), (3, 3));
        let again = inv.report(&["a", "b", "c"], 2);
        assert_eq!((again.summary.unchanged, again.put.len()), (3, 0));
        let report = vec![service("a", "e"), service("b", "moved"), service("c", "e")];
        let plan =
            plan_full_report(&inv.platform, &inv.stored, report, &BTreeSet::new(), 3, &Withdrawal::default());
        assert_eq!((plan.summary.changed, plan.put.len()), (1, 1));
        assert_eq!(plan.put[0].first_seen_ms, 1, "first seen is kept");
        assert_eq!(plan.platform.reports, 3);
    }

    #[test]
    fn missing_then_withdrawn_after_two_further_reports_unless_it_returns() {
        let mut inv = Inventory::new();
        inv.report(&["a", "b", "c", "d"], 0);
        let plan = inv.report(&["a", "b", "c"], 10);
        assert_eq!((plan.summary.missing, plan.summary.held), (1, false));
        assert_eq!(inv.presence("d"), Presence::Missing);
        inv.report(&["a", "b", "c"], 20);
        assert_eq!(inv.presence("d"), Presence::Missing, "one further report: still in grace");
        let plan = inv.report(&["a", "b", "c"], 30);
        assert_eq!((plan.summary.withdrawn, inv.presence("d")), (1, Presence::Withdrawn));
        let plan = inv.report(&["a", "b", "c"], 40);
        assert!(plan.put.is_empty(), "withdrawn records are not rewritten");
        let plan = inv.report(&["a", "b", "c", "d"], 50);
        assert_eq!((plan.summary.returned, inv.presence("d")), (1, Presence::Present));

        // A record that returns within its grace is present again, and its misses reset.
        inv.report(&["a", "b", "c"], 60);
        inv.report(&["a", "b", "c", "d"], 70);
        assert_eq!(inv.stored["d"].misses, 0);
    }

    #[test]
    fn what_the_cloud_says_is_gone_is_withdrawn_at_once_and_does_not_count_toward_a_hold() {
        let mut inv = Inventory::new();
        inv.report(&["a", "b", "c"], 1);
        // Two of three gone: no hold (the cloud said so), both withdrawn now; an id the
        // inventory never had is ignored.
        let plan = inv.report_gone(&["a"], &["b", "c", "never-seen"], 2);
        assert!(!plan.summary.held);
        assert_eq!((plan.summary.withdrawn, plan.summary.missing, plan.put.len()), (2, 0, 2));
        assert_eq!((inv.presence("b"), inv.presence("c")), (Presence::Withdrawn, Presence::Withdrawn));
        assert!(!inv.stored.contains_key("never-seen"));
        // A missing record said gone later is withdrawn then, without waiting out its grace.
        inv.report(&["a", "d"], 3);
        inv.report(&["a"], 4);
        assert_eq!(inv.presence("d"), Presence::Missing);
        let plan = inv.report_gone(&["a"], &["d"], 5);
        assert_eq!((plan.summary.withdrawn, inv.presence("d")), (1, Presence::Withdrawn));
        // Gone again: already withdrawn, nothing to write.
        assert!(inv.report_gone(&["a"], &["d"], 6).put.is_empty());
    }

    #[test]
    fn the_time_grace_withdraws_without_further_reports() {
        let mut inv = Inventory::new();
        inv.report(&["a", "b", "c", "d"], 0);
        inv.report(&["a", "b", "c"], 1_000);
        let day = Withdrawal::default().grace_ms;
        let plan = inv.report(&["a", "b", "c"], 1_000 + day);
        assert_eq!((plan.summary.withdrawn, inv.presence("d")), (1, Presence::Withdrawn));
    }

    #[test]
    fn a_shrink_by_more_than_half_is_held_until_a_second_report_confirms_it() {
        let mut inv = Inventory::new();
        inv.report(&["a", "b", "c", "d"], 0);
        let plan = inv.report(&["a"], 10);
        assert!(plan.summary.held);
        assert_eq!(inv.presence("b"), Presence::Missing);
        assert_eq!((inv.stored["b"].misses, inv.stored["b"].missing_since_ms), (0, None));
        // The truncation was a fluke: the next report has everything back.
        let plan = inv.report(&["a", "b", "c", "d"], 20);
        assert_eq!((plan.summary.returned, plan.summary.held), (3, false));
        assert_eq!(inv.platform.held_shrink, None);

        // A real shrink: held once, confirmed by the second, withdrawn after the grace.
        inv.report(&["a"], 30);
        let plan = inv.report(&["a"], 40);
        assert!(!plan.summary.held);
        assert_eq!((inv.stored["b"].misses, inv.stored["b"].missing_since_ms), (1, Some(40)));
        inv.report(&["a"], 50);
        inv.report(&["a"], 60);
        assert_eq!(inv.presence("b"), Presence::Withdrawn);
        // Exactly half is not "more than half".
        let mut half = Inventory::new();
        half.report(&["a", "b"], 0);
        assert!(!half.report(&["a"], 1).summary.held);
    }
}
