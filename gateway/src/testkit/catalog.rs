//! A synthetic catalog at scale, written straight into a store: for the benchmarks of the
//! catalog and of the controller's memory. Platform `p` (named `platform-pppp`) has services
//! `0..per_platform`, half `object-store` and half `compute`, each reported by a full report
//! and granted, so every one is an inventory record, an authorization, a catalog entry and an
//! association, as a real handshake leaves them.

use std::collections::{BTreeMap, BTreeSet};

use crate::catalog::{
    AuditRecord, Authorization, AuthorizationState, CapabilityInfo, CatalogEntry, Outcome, PlatformReports,
    RefreshRecord, ServiceInfo, Trigger, Withdrawal, plan_full_report,
};
use crate::store::{Backend, Decided, StoreError};

/// The platform's name in the synthetic catalog.
pub fn platform_name(platform: usize) -> String {
    format!("platform-{platform:04}")
}

/// Service `i` of `platform`; `version` goes into an attribute, so a new version is a change.
pub fn service(platform: usize, i: usize, version: u64) -> ServiceInfo {
    let kind = if i.is_multiple_of(2) { "object-store" } else { "compute" };
    let name = format!("p{platform:04}-svc-{i:05}");
    ServiceInfo {
        native_id: format!("native/{name}"),
        kind: kind.into(),
        name: name.clone(),
        endpoint: format!("http://cloud-{platform}/{name}"),
        region: Some("region-1".into()),
        attributes: [("version".to_owned(), version.to_string()), ("tier".to_owned(), "standard".to_owned())]
            .into(),
        capabilities: vec![CapabilityInfo { kind: kind.into(), name, attributes: BTreeMap::new() }],
    }
}

/// The catalog entry id of service `i` of `platform` (also its request id): spread over the
/// id space as random ids are.
pub fn entry_id(platform: usize, i: usize) -> String {
    format!("{:032x}", (platform * 1_000_000 + i) as u128 * 0x9e37_79b9_7f4a_7c15)
}

/// Report and grant `per_platform` services for each of `platforms` platforms, one
/// transaction for each platform's report and one for its grants.
pub fn fill(store: &dyn Backend, platforms: usize, per_platform: usize) -> Result<(), StoreError> {
    for platform in 0..platforms {
        let name = platform_name(platform);
        let services: Vec<ServiceInfo> = (0..per_platform).map(|i| service(platform, i, 0)).collect();
        let plan = plan_full_report(
            &PlatformReports::default(),
            &BTreeMap::new(),
            services,
            &BTreeSet::new(),
            1,
            &Withdrawal::default(),
        );
        let mut refresh = RefreshRecord {
            seq: 0,
            platform: name.clone(),
            at_ms: 1,
            trigger: Some(Trigger::Connect),
            requests: 1,
            discovery_ms: 1,
            integrate_ms: 1,
            outcome: Outcome::Integrated { summary: plan.summary },
        };
        store.apply_report(&name, &plan.put, &plan.platform, &mut refresh)?;
        store.decide_all((0..per_platform).map(|i| grant(platform, i)).collect())?;
    }
    Ok(())
}

/// The grant of service `i` of `platform`, as the handshake stores it.
pub fn grant(platform: usize, i: usize) -> Decided {
    let s = service(platform, i, 0);
    let capability = s.capabilities[0].clone();
    let mut a =
        Authorization::new(entry_id(platform, i), &platform_name(platform), capability, s, "import", 1);
    a.state = AuthorizationState::Granted;
    let entry = CatalogEntry::new(entry_id(platform, i), &a.capability, 1);
    Decided { audit: AuditRecord::of(&a, "import", 1), authorization: a, grant: Some(entry) }
}
