//! The conformance suite of the controller's store ([`Backend`]): what the embedded redb
//! store and the shared store of a controller group ([`crate::store::shared`], on redb's or
//! etcd's key-value engine) must both do. Each check wants a fresh store; calls block, so run
//! it off the async workers (`spawn_blocking`).

use crate::catalog::{
    AuditRecord, Authorization, AuthorizationState, CapabilityInfo, CatalogEntry, ServiceInfo,
};
use crate::path::{Candidate, Decision, DecisionRecord, LinkStats, Policy};
use crate::session::accounts::{Account, Credentials};
use crate::store::{Backend, Decided, StoreError};

/// Run every check against `store` (fresh); panics, saying which, on the first that fails.
pub fn conformance(store: &dyn Backend) {
    runtime_state(store);
    accounts(store);
    catalog(store);
}

/// Runtime state documents are written, listed by prefix in key order, and deleted.
pub fn runtime_state(store: &dyn Backend) {
    assert_eq!(store.states("binding/").expect("the store answers"), vec![], "nothing yet");
    store.put_state("binding/02", Some(b"two")).expect("the store answers");
    store.put_state("binding/01", Some(b"one")).expect("the store answers");
    store.put_state("policy", Some(b"p")).expect("the store answers");
    let keys = |prefix| {
        store.states(prefix).expect("the store answers").into_iter().map(|(k, _)| k).collect::<Vec<_>>()
    };
    assert_eq!(keys("binding/"), ["binding/01", "binding/02"]);
    assert_eq!(
        store.states("policy").expect("the store answers"),
        vec![("policy".to_owned(), b"p".to_vec())]
    );
    store.put_state("binding/01", None).expect("the store answers");
    assert_eq!(keys("binding/"), ["binding/02"]);
}

/// Account ids are unique; updates need the account; changes are atomic and may be refused.
pub fn accounts(store: &dyn Backend) {
    let mut a = Account {
        id: "acme".into(),
        secret: "0123456789abcdef".into(),
        created_unix_ms: 5,
        credentials: Default::default(),
    };
    assert!(matches!(store.update_account(&a), Err(StoreError::NotFound { .. })), "no such account yet");
    store.insert_account(&a).expect("the store answers");
    assert!(
        matches!(store.insert_account(&a), Err(StoreError::Exists { kind: "account", .. })),
        "ids are unique"
    );
    let aws = Credentials { principal: "AK".into(), secret: "SK".into(), attributes: Default::default() };
    a.credentials.insert("aws".into(), aws.clone());
    store.update_account(&a).expect("the store answers");
    let got = store.account("acme").expect("the store answers").expect("the store answers");
    assert_eq!(got.credentials["aws"].secret, "SK");
    assert_eq!(store.accounts().expect("the store answers").len(), 1);

    let changed =
        store.change_account("acme", &mut |a| a.credentials.insert("gcp".into(), aws.clone()).is_none());
    let changed = changed.expect("the store answers").expect("changed");
    assert_eq!(changed.credentials.len(), 2);
    assert_eq!(
        store.account("acme").expect("the store answers").expect("the store answers").credentials.len(),
        2,
        "stored"
    );
    assert!(
        store.change_account("acme", &mut |_| false).expect("the store answers").is_none(),
        "refused: nothing stored"
    );
    assert!(matches!(
        store.change_account("nobody", &mut |_| true),
        Err(StoreError::NotFound { kind: "account", .. })
    ));

    assert!(store.remove_account("acme").expect("the store answers"));
    assert!(!store.remove_account("acme").expect("the store answers"));
    assert!(store.account("acme").expect("the store answers").is_none());
}

/// A granted authorization of `name` (`kind`) at `platform`.
pub fn granted(platform: &str, name: &str, kind: &str) -> Authorization {
    let capability = CapabilityInfo { kind: kind.into(), name: name.into(), attributes: Default::default() };
    let service = ServiceInfo {
        native_id: format!("{platform}:{name}"),
        kind: kind.into(),
        name: name.into(),
        endpoint: "e".into(),
        region: None,
        attributes: Default::default(),
        capabilities: vec![capability.clone()],
    };
    let mut a = Authorization::new(format!("req-{platform}-{name}"), platform, capability, service, "op", 1);
    a.state = AuthorizationState::Granted;
    a
}

/// The decision of `a`, creating entry `id` when its match key has none.
pub fn grant(a: &Authorization, id: &str, at: u64) -> Decided {
    Decided {
        authorization: a.clone(),
        audit: AuditRecord::of(a, &format!("platform:{}", a.platform), at),
        grant: Some(CatalogEntry::new(id.into(), &a.capability, at)),
    }
}

/// Grants share an entry by match key, refusals change only the audit, listings page by kind
/// and id, counts agree with listings, revocations leave the entry orphaned.
pub fn catalog(store: &dyn Backend) {
    let (east, west) = (granted("east", "Logs", "object-store"), granted("west", "logs", "object-store"));
    let revision = store.catalog_revision().expect("the store answers");
    assert_eq!(
        store.add_authorizations(vec![east.clone(), west.clone()]).expect("the store answers").len(),
        2
    );
    assert!(
        store.add_authorizations(vec![east.clone()]).expect("the store answers").is_empty(),
        "one per platform and capability"
    );
    // Two grants of one match key in one group commit: one entry, two associations.
    let entries =
        store.decide_all(vec![grant(&east, "id-1", 2), grant(&west, "id-2", 3)]).expect("the store answers");
    let ids: Vec<&str> = entries.iter().flatten().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["id-1", "id-1"], "the same match key finds the same entry");
    assert!(
        store.catalog_revision().expect("the store answers") > revision,
        "grants move the catalog's revision"
    );
    let audit = store.audit(10).expect("the store answers");
    let lines: Vec<(u64, Option<&str>)> = audit.iter().map(|a| (a.seq, a.entry.as_deref())).collect();
    assert_eq!(lines, [(2, Some("id-1")), (1, Some("id-1"))]);
    let (_, associations) = store.entry("id-1").expect("the store answers").expect("the store answers");
    assert_eq!(associations.iter().map(|a| a.platform.as_str()).collect::<Vec<_>>(), ["east", "west"]);
    assert_eq!(store.entry_id("object-store/logs").expect("the store answers").as_deref(), Some("id-1"));

    // A refusal in the same batch as a grant changes only the audit.
    let compute = granted("east", "vm", "compute");
    let mut refused = granted("west", "db", "database");
    refused.state = AuthorizationState::Refused;
    let refusal = Decided { grant: None, ..grant(&refused, "unused", 4) };
    let entries = store.decide_all(vec![grant(&compute, "id-0", 4), refusal]).expect("the store answers");
    assert_eq!((entries[0].as_ref().map(|e| e.id.as_str()), entries[1].is_none()), (Some("id-0"), true));
    assert_eq!(store.entry_id("database/db").expect("the store answers"), None);
    let by_kind: Vec<String> = store
        .entries(Some("object-store"), None, 10)
        .expect("the store answers")
        .into_iter()
        .map(|(e, _)| e.id)
        .collect();
    assert_eq!(by_kind, ["id-1"]);
    let all: Vec<String> =
        store.entries(None, None, 10).expect("the store answers").into_iter().map(|(e, _)| e.id).collect();
    assert_eq!(all, ["id-0", "id-1"]);
    assert_eq!(
        store.entries(None, Some("id-0"), 10).expect("the store answers").len(),
        1,
        "paging after an id"
    );
    assert_eq!(
        store.entries(None, None, 1).expect("the store answers").len(),
        1,
        "a page holds at most its limit"
    );
    // One still waiting for its platform's answer.
    let mut waiting = granted("east", "jobs", "message");
    waiting.state = AuthorizationState::Pending;
    assert_eq!(store.add_authorizations(vec![waiting]).expect("the store answers").len(), 1);
    // The counts by state (what /metrics shows) agree with the full listing.
    let mut tally = std::collections::BTreeMap::new();
    let all = store.authorizations_page(None, usize::MAX).expect("the store answers");
    for a in &all {
        *tally.entry(a.state).or_insert(0u64) += 1;
    }
    // The selective listings keep exactly what they select.
    let pending = store.authorizations(&crate::store::Which::Pending).expect("the store answers");
    let expected: Vec<&Authorization> =
        all.iter().filter(|a| a.state == crate::catalog::AuthorizationState::Pending).collect();
    assert!(!expected.is_empty() && expected.len() < all.len(), "the suite has pending and decided ones");
    assert_eq!(pending.iter().collect::<Vec<_>>(), expected);
    for a in &all {
        let one = store.authorizations(&crate::store::Which::Request(a.request_id.clone()));
        assert_eq!(one.expect("the store answers"), std::slice::from_ref(a));
    }
    // Pages of any size visit each authorization once, in one order.
    for limit in [1, 2, all.len() + 1] {
        let mut paged: Vec<Authorization> = Vec::new();
        loop {
            let after = paged.last().map(|a| (a.platform.as_str(), a.match_key.as_str()));
            let page = store.authorizations_page(after, limit).expect("the store answers");
            assert!(page.len() <= limit, "a page holds at most its limit");
            if page.is_empty() {
                break;
            }
            paged.extend(page);
        }
        let key = |a: &Authorization| (a.platform.clone(), a.match_key.clone());
        let mut seen: Vec<_> = paged.iter().map(key).collect();
        let mut expected: Vec<_> = all.iter().map(key).collect();
        seen.sort();
        expected.sort();
        assert_eq!(seen, expected, "pages of {limit}");
    }
    let none = store.authorizations(&crate::store::Which::Request("no-such-request".into()));
    assert!(none.expect("the store answers").is_empty());
    let counts = store.catalog_counts().expect("the store answers");
    assert_eq!(counts.authorizations, tally);
    assert_eq!((counts.entries, counts.associations), (2, 3));
    assert_eq!(counts.authorizations.get(&AuthorizationState::Refused), Some(&1), "{tally:?}");
    assert!(counts.authorizations.get(&AuthorizationState::Granted).is_some_and(|n| *n >= 2), "{tally:?}");
    assert_eq!(store.associations().expect("the store answers").len(), 3);

    let mut revoked = east.clone();
    assert!(revoked.revoked("policy changed", 5));
    store.revoke(&revoked, &mut AuditRecord::of(&revoked, "platform:east", 5)).expect("the store answers");
    store.revoke(&west, &mut AuditRecord::of(&west, "platform:west", 6)).expect("the store answers");
    let (entry, associations) = store.entry("id-1").expect("the store answers").expect("the store answers");
    assert!(associations.is_empty(), "orphaned, but kept: {entry:?}");
    let audit = store.audit(10).expect("the store answers");
    assert_eq!(audit.iter().map(|a| a.seq).collect::<Vec<_>>(), [6, 5, 4, 3, 2, 1]);
    assert_eq!(audit[1].state, AuthorizationState::Revoked);
    let state = |platform: &str, key: &str| {
        store.authorization(platform, key).expect("the store answers").map(|a| a.state)
    };
    assert_eq!(state("east", "object-store/logs"), Some(AuthorizationState::Revoked), "looked up by key");
    assert_eq!(state("east", "compute/vm"), Some(AuthorizationState::Granted));
    assert_eq!(state("north", "object-store/logs"), None);
    assert_eq!(audit[1].entry.as_deref(), Some("id-1"));
    assert_eq!(audit[2].state, AuthorizationState::Refused);
}

/// Six controllers' shared stores on `kv` grant one capability (each for its own platform)
/// with every first commit held until all six read: one entry, six associations. Local files
/// go in `dir`.
pub async fn concurrent_grants(kv: std::sync::Arc<dyn crate::store::kv::Kv>, dir: &std::path::Path) {
    use crate::store::kv::seal::SealKey;
    use crate::store::shared::SharedStore;
    use std::sync::Arc;
    let n = 6;
    let prefix = format!("grants-{}/", crate::time::now_unix_ms());
    let kv: Arc<dyn crate::store::kv::Kv> = Arc::new(super::kv::Faulty::commits_together(kv, n));
    let open = |name: String| {
        let (kv, prefix) = (Arc::clone(&kv), prefix.clone());
        async move {
            let local = dir.join(name);
            Arc::new(
                SharedStore::open(kv, &prefix, Arc::new(SealKey::new(&[7; 32])), &local).await.expect("open"),
            )
        }
    };
    let mut granting = Vec::new();
    for i in 0..n {
        let store = open(format!("grants-c{i}.redb")).await;
        let decided = grant(&granted(&format!("p{i}"), "logs", "object-store"), &format!("entry-of-c{i}"), 1);
        granting.push(tokio::task::spawn_blocking(move || store.decide_all(vec![decided])));
    }
    let mut ids = Vec::new();
    for g in granting {
        let entries = g.await.expect("join").expect("granted");
        ids.push(entries[0].as_ref().map(|e| e.id.clone()).expect("an entry"));
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every controller names the same entry: {ids:?}");
    let reader = open("grants-reader.redb".into()).await;
    let (entries, associations) = tokio::task::spawn_blocking(move || {
        (reader.entries(None, None, 100).expect("entries"), reader.associations().expect("associations"))
    })
    .await
    .expect("join");
    assert_eq!(entries.len(), 1, "one entry");
    assert_eq!(entries[0].1.len(), n, "one association per platform");
    assert_eq!(associations.len(), n);
}

/// A decision record from `from` (id 0: the store gives it one).
pub fn decision(from: &str) -> DecisionRecord {
    DecisionRecord {
        id: 0,
        from: from.into(),
        to: "b".into(),
        first_relay: "r1".into(),
        second_relay: "r2".into(),
        created_unix_ms: 1,
        policy: Policy {
            scorer: "s.wasm".into(),
            weights: Default::default(),
            k: 4,
            probes: 20,
            probe_interval_ms: 10,
            reroute_loss: 0.2,
        },
        decision: Decision {
            scorer: "s".into(),
            weights: vec![("latency".into(), 1.0)],
            candidates: vec![Candidate {
                path: vec!["r1".into(), "r2".into()],
                hops: 1,
                graph_cost_ms: 3.0,
                measured: LinkStats { rtt_ms: Some(3.2), jitter_ms: 0.1, loss: 0.0, samples: 20 },
                score: Some(-3.3),
                explanation: "x".into(),
            }],
            winner: 0,
        },
    }
}
