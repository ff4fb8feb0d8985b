//! The catalog room: platforms' reports in, inventories out.
//!
//! A site reports on a stream of its own ([`Control::ReportPage`]s); pages are gathered here
//! (bounded in count, size and time), checked again against the catalog's bounds (no site is
//! trusted), then diffed against the stored inventory ([`catalog::plan_full_report`]) and
//! written in one transaction together with the refresh record. A report is integrated
//! only after its last page, so a site that dies mid-report changes nothing. One
//! integration runs at a time, so two reports never interleave their read and write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::catalog::{
    self, Bounds, InventoryRecord, Outcome, PUBLISHED_ENDPOINT, RefreshRecord, ReportSummary, ServiceInfo,
    Trigger, Withdrawal,
};
use crate::mesh::messages::{Control, RefusalCode};
use crate::mesh::stream::{self as control, Framed};
use crate::store::StoreError;
use crate::time::now_unix_ms;

use super::Controller;
use super::events::Event;

/// How long a site may take to send all pages of one report.
const REPORT_TIME: Duration = Duration::from_secs(300);
/// Pages in one report (with ~1 MiB frames, far more than `max_services` needs).
const MAX_PAGES: u32 = 10_000;

/// The catalog's settings and its write lock.
pub struct Catalog {
    bounds: Bounds,
    withdrawal: Withdrawal,
    /// Held while a report is read from the store, planned and written.
    integrating: tokio::sync::Mutex<()>,
    /// The catalog's revision as last read from the store; watchers wait on it.
    revision: tokio::sync::watch::Sender<u64>,
}

impl Catalog {
    /// With these bounds and withdrawal rules.
    pub fn new(bounds: Bounds, withdrawal: Withdrawal) -> Catalog {
        Catalog {
            bounds,
            withdrawal,
            integrating: tokio::sync::Mutex::new(()),
            revision: tokio::sync::watch::Sender::new(0),
        }
    }
}

/// Why a report or a catalog request failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The report breaks the protocol or the bounds; nothing was written.
    #[error("{0}")]
    BadReport(String),
    /// The platform is unknown or its site is not connected.
    #[error("platform `{0}` has no connected site")]
    NotConnected(String),
    /// The site refused or failed the request.
    #[error("the site: {0}")]
    Site(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Controller {
    /// Read the catalog's revision from the store and wake the watchers when it moved.
    pub(super) async fn note_catalog_change(&self) {
        match self.store.catalog_revision().await {
            Ok(revision) => {
                self.catalog.revision.send_if_modified(|r| {
                    let moved = revision > *r;
                    *r = (*r).max(revision);
                    moved
                });
            }
            Err(e) => tracing::warn!("cannot read the catalog's revision: {e}"),
        }
    }

    /// Wait until the catalog's revision passes `since`, at most `wait`; the revision then.
    pub async fn wait_catalog(&self, since: u64, wait: Duration) -> u64 {
        // From the store: a change committed a moment ago may not have been noted yet.
        self.note_catalog_change().await;
        let mut rx = self.catalog.revision.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|r| *r > since)).await;
        *rx.borrow()
    }

    /// The catalog's revision now, as the store has it.
    pub async fn catalog_revision(&self) -> u64 {
        self.note_catalog_change().await;
        *self.catalog.revision.borrow()
    }

    /// Read a report that starts with `first` from site `from`, integrate it, and answer.
    pub(super) async fn receive_report(self: Arc<Self>, from: String, first: Control, mut stream: Framed) {
        let started = Instant::now();
        let mut discovery_failed = false;
        let answer = match tokio::time::timeout(REPORT_TIME, self.gather(&from, first, &mut stream)).await {
            Err(_) => Err(CatalogError::BadReport(format!(
                "the report did not arrive within {} s",
                REPORT_TIME.as_secs()
            ))),
            Ok(Err(e)) => Err(e),
            Ok(Ok(Gathered::Failed { trigger, reason })) => {
                tracing::warn!(platform = %from, ?trigger, "discovery failed at the site: {reason}");
                discovery_failed = true;
                let refresh =
                    refresh_record(&from, Some(trigger), 0, 0, started, Outcome::DiscoveryFailed { reason });
                self.store.record_refresh(refresh).await.map(|_| ReportSummary::default()).map_err(Into::into)
            }
            Ok(Ok(Gathered::Report(report))) => self.integrate(&from, report, started).await,
        };
        let outcome = match &answer {
            Ok(_) if discovery_failed => "discovery-failed",
            Ok(_) => "integrated",
            Err(CatalogError::BadReport(_)) => "refused",
            Err(_) => "failed",
        };
        self.recorded.refresh(&from, outcome, started.elapsed());
        match answer {
            Ok(summary) => {
                let _ = stream.send(&Control::ReportIntegrated { summary }).await;
                stream.finish();
            }
            Err(e) => {
                tracing::warn!(platform = %from, "report refused: {e}");
                let code = match &e {
                    CatalogError::Store(_) => RefusalCode::Internal,
                    _ => RefusalCode::BadRequest,
                };
                if let CatalogError::BadReport(reason) = &e {
                    let refresh = refresh_record(
                        &from,
                        None,
                        0,
                        0,
                        started,
                        Outcome::Refused { reason: reason.clone() },
                    );
                    let _ = self.store.record_refresh(refresh).await;
                }
                stream.refuse(code, &e.to_string()).await;
            }
        }
    }

    /// Gather every page of a report.
    async fn gather(
        &self,
        from: &str,
        first: Control,
        stream: &mut Framed,
    ) -> Result<Gathered, CatalogError> {
        let bad = |reason: String| Err(CatalogError::BadReport(reason));
        let mut services: Vec<ServiceInfo> = Vec::new();
        let mut gone: Vec<String> = Vec::new();
        let mut next = Some(first);
        let mut expected_page = 0u32;
        loop {
            let message = match next.take() {
                Some(m) => m,
                None => match stream.recv().await {
                    Ok(Some(m)) => m,
                    Ok(None) => return bad("the report ended before its last page".into()),
                    Err(e) => return bad(format!("reading the report: {e:#}")),
                },
            };
            match message {
                Control::DiscoveryFailed { platform, trigger, reason } if expected_page == 0 => {
                    if platform != from {
                        return bad(format!("site `{from}` may not report for platform `{platform}`"));
                    }
                    let reason: String = reason.chars().take(2_000).collect();
                    return Ok(Gathered::Failed { trigger, reason });
                }
                Control::ReportPage {
                    platform,
                    trigger,
                    page,
                    last,
                    services: mut page_services,
                    gone: mut page_gone,
                    requests,
                    discovery_ms,
                } => {
                    if platform != from {
                        return bad(format!("site `{from}` may not report for platform `{platform}`"));
                    }
                    if page != expected_page {
                        return bad(format!("page {page} arrived where page {expected_page} was due"));
                    }
                    if page >= MAX_PAGES {
                        return bad(format!("a report of more than {MAX_PAGES} pages"));
                    }
                    if services.len() + page_services.len() > self.catalog.bounds.max_services {
                        return bad(format!(
                            "a report of more than {} services",
                            self.catalog.bounds.max_services
                        ));
                    }
                    if gone.len() + page_gone.len() > self.catalog.bounds.max_services {
                        return bad(format!(
                            "a report of more than {} gone services",
                            self.catalog.bounds.max_services
                        ));
                    }
                    services.append(&mut page_services);
                    gone.append(&mut page_gone);
                    if last {
                        return Ok(Gathered::Report(Report {
                            trigger,
                            services,
                            gone,
                            requests,
                            discovery_ms,
                        }));
                    }
                    expected_page += 1;
                }
                other => {
                    return bad(format!("expected a report page, got {}", message_name(&other)));
                }
            }
        }
    }

    async fn integrate(
        &self,
        platform: &str,
        report: Report,
        started: Instant,
    ) -> Result<ReportSummary, CatalogError> {
        let Report { trigger, mut services, gone, requests, discovery_ms } = report;
        catalog::validate_report(&mut services, &self.catalog.bounds)
            .map_err(|e| CatalogError::BadReport(e.to_string()))?;
        let gone = catalog::validate_gone(gone, &services, &self.catalog.bounds)
            .map_err(|e| CatalogError::BadReport(e.to_string()))?;
        let _writer = self.catalog.integrating.lock().await;
        let stored = self.store.inventory(platform).await?;
        let (withdrawal, now) = (self.catalog.withdrawal, now_unix_ms());
        let plan =
            catalog::plan_full_report(&stored.platform, &stored.records, services, &gone, now, &withdrawal);
        let summary = plan.summary;
        let refresh = refresh_record(
            platform,
            Some(trigger),
            requests,
            discovery_ms,
            started,
            Outcome::Integrated { summary },
        );
        let written = plan.put.len();
        let present: Vec<InventoryRecord> =
            plan.put.iter().filter(|r| r.presence == catalog::Presence::Present).cloned().collect();
        self.store.apply_report(platform, plan.put, plan.platform, refresh).await?;
        drop(_writer);
        self.request_authorizations(platform, &present).await?;
        tracing::info!(
            %platform, ?trigger, reported = summary.reported, added = summary.added, changed = summary.changed,
            missing = summary.missing, withdrawn = summary.withdrawn, held = summary.held, written,
            "report integrated"
        );
        self.events.publish(Event::InventoryChanged { platform: platform.to_owned(), summary });
        self.note_catalog_change().await;
        Ok(summary)
    }

    /// Ask `platform`'s site to discover now. Returns whether a refresh was already running
    /// there (the request then joins it: one refresh in flight per platform).
    pub async fn refresh_platform(&self, platform: &str) -> Result<bool, CatalogError> {
        let conn =
            self.nodes.connection(platform).ok_or_else(|| CatalogError::NotConnected(platform.to_owned()))?;
        match control::request(&conn, &Control::Refresh).await {
            Ok(Control::RefreshStarted { already_running }) => Ok(already_running),
            Ok(other) => Err(CatalogError::Site(format!("unexpected answer {}", message_name(&other)))),
            Err(e) => Err(CatalogError::Site(format!("{e:#}"))),
        }
    }

    /// A page of `platform`'s inventory: up to `limit` records after native id `after`.
    pub async fn inventory_page(
        &self,
        platform: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<InventoryRecord>, CatalogError> {
        Ok(self.store.inventory_page(platform, after, limit).await?)
    }

    /// `platform`'s latest refreshes, newest first.
    pub async fn refreshes(&self, platform: &str, limit: usize) -> Result<Vec<RefreshRecord>, CatalogError> {
        Ok(self.store.refreshes(platform, limit).await?)
    }
}

/// A whole report, as its pages brought it (not yet validated).
struct Report {
    trigger: Trigger,
    services: Vec<ServiceInfo>,
    gone: Vec<String>,
    requests: usize,
    discovery_ms: u64,
}

enum Gathered {
    Report(Report),
    Failed { trigger: Trigger, reason: String },
}

fn refresh_record(
    platform: &str,
    trigger: Option<Trigger>,
    requests: usize,
    discovery_ms: u64,
    started: Instant,
    outcome: Outcome,
) -> RefreshRecord {
    RefreshRecord {
        seq: 0,
        platform: platform.to_owned(),
        at_ms: now_unix_ms(),
        trigger,
        requests,
        discovery_ms,
        integrate_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        outcome,
    }
}

/// A message's type, for errors (never its content: a report page can be large).
fn message_name(m: &Control) -> String {
    serde_json::to_value(m)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "a message".into())
}

/// A catalog entry as the API shows it: the capability and the platforms that offer it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct EntryView {
    /// The entry.
    #[serde(flatten)]
    pub entry: crate::catalog::CatalogEntry,
    /// Who offers it.
    pub offered_by: Vec<OfferView>,
    /// `orphaned` when no platform offers it any more, else `offered`.
    pub state: String,
}

/// One platform offering a catalog entry.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct OfferView {
    /// The platform.
    pub platform: String,
    /// The service there (its native id).
    pub native_id: String,
    /// The capability as the platform describes it.
    pub capability: crate::catalog::CapabilityInfo,
    /// The service as last reported, when the inventory still has it.
    pub service: Option<ServiceInfo>,
    /// Whether the platform still has the service: `present`, `missing`, `withdrawn`, or
    /// `unknown` while its site is not connected.
    pub presence: String,
    /// The best path from the ingress's platform to this platform, as the link reports have
    /// it (no probe): what a binding by capability weighs.
    pub path: Option<crate::controller::view::PathEstimate>,
    /// The endpoint the platform's site publishes for the service, which bindings reach.
    pub published_endpoint: Option<String>,
    /// When the platform first reported the service (Unix ms).
    pub first_seen_ms: Option<u64>,
    /// The authorization behind the offer.
    pub request_id: String,
    /// When it was associated (Unix ms).
    pub since_ms: u64,
}

/// Filters of `GET /v1/catalog`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogFilter {
    /// Only this kind (aliases accepted).
    pub kind: Option<String>,
    /// Only entries this platform offers.
    pub platform: Option<String>,
    /// Only entries offered in this region (by the offering service's region).
    pub region: Option<String>,
    /// Only entries in this state: `offered` or `orphaned`.
    pub state: Option<String>,
}

/// Entries scanned per store read while filtering.
const SCAN: usize = 500;

impl Controller {
    async fn entry_view(
        &self,
        entry: crate::catalog::CatalogEntry,
        associations: Vec<crate::catalog::Association>,
    ) -> Result<EntryView, CatalogError> {
        let mut offered_by = Vec::new();
        for a in associations {
            let record = self.store.inventory_record(&a.platform, &a.native_id).await?;
            let connected = self.nodes.connection(&a.platform).is_some();
            let presence = match (&record, connected) {
                (_, false) => "unknown".to_owned(),
                (Some(r), true) => serde_json::to_value(r.presence)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                (None, true) => "withdrawn".to_owned(),
            };
            let path = self.ingress.platform.as_ref().and_then(|from| {
                self.nodes.view().path_estimate(from, &a.platform, std::time::Instant::now())
            });
            let published_endpoint =
                record.as_ref().and_then(|r| r.service.attributes.get(PUBLISHED_ENDPOINT).cloned());
            offered_by.push(OfferView {
                path,
                published_endpoint,
                platform: a.platform,
                native_id: a.native_id,
                capability: a.capability,
                first_seen_ms: record.as_ref().map(|r| r.first_seen_ms),
                service: record.map(|r| r.service),
                presence,
                request_id: a.request_id,
                since_ms: a.since_ms,
            });
        }
        let state = if offered_by.is_empty() { "orphaned" } else { "offered" }.to_owned();
        Ok(EntryView { entry, offered_by, state })
    }

    /// One catalog entry, with the platforms that offer it.
    pub async fn catalog_entry(&self, id: &str) -> Result<Option<EntryView>, CatalogError> {
        match self.store.entry(id).await? {
            Some((entry, associations)) => Ok(Some(self.entry_view(entry, associations).await?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` entries after id `after` that pass `filter`; and whether more may follow.
    pub async fn catalog_page(
        &self,
        filter: &CatalogFilter,
        mut after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<EntryView>, bool), CatalogError> {
        if let Some(state) = &filter.state
            && state != "offered"
            && state != "orphaned"
        {
            return Err(CatalogError::BadReport(format!(
                "state `{state}`: expected `offered` or `orphaned`"
            )));
        }
        let kind = match &filter.kind {
            Some(k) => Some(crate::catalog::taxonomy::normalise(k).map_err(CatalogError::BadReport)?),
            None => None,
        };
        let mut out = Vec::new();
        loop {
            let batch = self.store.entries(kind.map(str::to_owned), after.clone(), SCAN).await?;
            let exhausted = batch.len() < SCAN;
            for (entry, associations) in batch {
                after = Some(entry.id.clone());
                if let Some(p) = &filter.platform
                    && !associations.iter().any(|a| &a.platform == p)
                {
                    continue;
                }
                let view = self.entry_view(entry, associations).await?;
                if filter.state.as_ref().is_some_and(|s| *s != view.state) {
                    continue;
                }
                if let Some(region) = &filter.region
                    && !view.offered_by.iter().any(|o| {
                        o.service.as_ref().and_then(|s| s.region.as_deref()) == Some(region.as_str())
                    })
                {
                    continue;
                }
                out.push(view);
                if out.len() == limit {
                    return Ok((out, true));
                }
            }
            if exhausted {
                return Ok((out, false));
            }
        }
    }
}

impl Controller {
    /// Where a binding to `capability` goes: (platform, endpoint, entry id, match key). The
    /// capability is an entry id or a `kind/name`; `platform` picks one offering platform, else each offering
    /// platform's path from `from` is decided (probed and scored) and the best one wins. Only
    /// offers whose service is still present (or missing, within its grace) and reached
    /// through an endpoint their site publishes qualify.
    pub async fn resolve_capability(
        &self,
        capability: &str,
        platform: Option<&str>,
        from: &str,
    ) -> Result<(String, String, String, String), crate::controller::BindError> {
        use crate::controller::BindError;
        let invalid = |why: String| BindError::Invalid(why);
        let id = match capability.split_once('/') {
            Some((kind, name)) => {
                let kind = crate::catalog::taxonomy::normalise(kind).map_err(invalid)?;
                let key = crate::catalog::match_key(kind, name);
                self.store.entry_id(&key).await.map_err(|e| invalid(e.to_string()))?.ok_or_else(|| {
                    invalid(format!(
                        "the catalog has no capability `{key}`: `skybridge ctl catalog ls` lists it"
                    ))
                })?
            }
            None => capability.to_owned(),
        };
        let view = self
            .catalog_entry(&id)
            .await
            .map_err(|e| invalid(e.to_string()))?
            .ok_or_else(|| invalid(format!("no catalog entry {id}")))?;
        let usable: Vec<&OfferView> = view
            .offered_by
            .iter()
            .filter(|o| o.presence == "present" || o.presence == "missing")
            .filter(|o| o.published_endpoint.is_some())
            .filter(|o| platform.is_none_or(|p| p == o.platform))
            .collect();
        if usable.is_empty() {
            let offers: Vec<String> = view
                .offered_by
                .iter()
                .map(|o| {
                    format!(
                        "{} ({}, {})",
                        o.platform,
                        o.presence,
                        o.published_endpoint
                            .as_deref()
                            .map_or("no published endpoint reaches it", |_| "reachable")
                    )
                })
                .collect();
            return Err(invalid(format!(
                "no usable offer of {} {}{}: offered by {}",
                view.entry.kind,
                view.entry.name,
                platform.map(|p| format!(" at {p}")).unwrap_or_default(),
                if offers.is_empty() { "nobody".to_owned() } else { offers.join(", ") }
            )));
        }
        let mut best: Option<(f64, &OfferView)> = None;
        let mut failures = Vec::new();
        for offer in usable {
            // Compared here, stored by the binding that uses one.
            match self.choose_path(from, &offer.platform).await {
                Ok(record) => {
                    let score = record
                        .decision
                        .candidates
                        .get(record.decision.winner)
                        .and_then(|c| c.score)
                        .unwrap_or(f64::NEG_INFINITY);
                    if best.is_none_or(|(s, _)| score > s) {
                        best = Some((score, offer));
                    }
                }
                Err(e) => failures.push(format!("{}: {e}", offer.platform)),
            }
        }
        match best {
            Some((_, offer)) => {
                let endpoint = offer.published_endpoint.clone().unwrap_or_default();
                tracing::info!(capability = %view.entry.match_key, platform = %offer.platform, %endpoint, "capability bound");
                Ok((offer.platform.clone(), endpoint, view.entry.id.clone(), view.entry.match_key.clone()))
            }
            None => Err(BindError::Connect(crate::controller::ConnectError::Unavailable(format!(
                "no path to any platform offering {}: {}",
                view.entry.match_key,
                failures.join("; ")
            )))),
        }
    }
}
