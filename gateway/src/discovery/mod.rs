//! # Discovery, at the site
//!
//! A site finds its own cloud's services through its adapter plugin, so that the controller
//! never holds cloud credentials nor reaches a cloud API. The adapter is sans-IO: it names
//! each request (`start-discovery`, `continue-discovery`); this module sends it — only to an
//! endpoint of the site's configuration, signed by the adapter's `rewrite-request` with the
//! site's own credentials (with a token from `token-exchange` first, for Keystone) — and
//! hands the answer back, until the adapter is done.
//!
//! ```text
//! adapter.start-discovery(context) ─▶ step { services, next, cursor }
//!   loop: next ─▶ sign (rewrite-request, site credentials) ─▶ HTTP to the cloud endpoint
//!         answer ─▶ adapter.continue-discovery(context, cursor, answer) ─▶ step
//! services ─▶ adapter.select-capabilities, each ─▶ catalog::validate_report ─▶ the report
//! ```
//!
//! Everything is bounded ([`DiscoveryLimits`]): requests per run, bytes per answer, the
//! cursor, services per run, time per request and per run. Plugin calls run on the site's
//! blocking pool under the plugin's discovery limits (a fresh instance, more memory).

pub mod fetch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::blocking::Pool;
use crate::catalog::{Bounds, CapabilityInfo, RecordError, ServiceInfo, validate_report};
use crate::plugin::{
    CallError, CloudRequest, CloudResponse, Description, DiscoveredService, Plugin, adapting, types,
};
pub use fetch::{CloudUrl, tls_config};

/// How much one discovery run may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryLimits {
    /// Requests to the cloud per run (default 1,000).
    pub max_requests: usize,
    /// Bytes of one answer, MiB (default 16; moto's instance-type listing is ~5 MB).
    pub max_answer_mib: usize,
    /// Bytes of the adapter's cursor (default 64 KiB).
    pub max_cursor_bytes: usize,
    /// Seconds one request may take (default 30).
    pub request_timeout_s: u64,
    /// Seconds a whole run may take (default 600).
    pub run_timeout_s: u64,
}

impl Default for DiscoveryLimits {
    fn default() -> Self {
        DiscoveryLimits {
            max_requests: 1_000,
            max_answer_mib: 16,
            max_cursor_bytes: 64 << 10,
            request_timeout_s: 30,
            run_timeout_s: 600,
        }
    }
}

/// The site's access to its cloud: where, and as whom.
#[derive(Clone)]
pub struct CloudAccess {
    /// The platform's name.
    pub platform: String,
    /// Endpoints by name; the first is the default.
    pub endpoints: Vec<(String, CloudUrl)>,
    /// The site's identity at the cloud (access key id, storage account, user).
    pub principal: String,
    /// Its secret (never logged).
    pub secret: String,
    /// Region, project, domain, …: given to the adapter as context and credentials.
    pub attributes: Vec<(String, String)>,
    /// The TLS client configuration for `https://` endpoints.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for CloudAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudAccess")
            .field("platform", &self.platform)
            .field("endpoints", &self.endpoints)
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

/// Why a discovery run failed. Nothing is reported for a failed run: the platform's inventory
/// stays as it was.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The adapter failed or refused (its message says why).
    #[error("the adapter: {0}")]
    Adapter(#[from] CallError),
    /// The adapter does not export `discovering`.
    #[error("the adapter `{0}` does not discover services (it exports no `discovering`)")]
    NotSupported(String),
    /// A request to the cloud failed.
    #[error("{method} {target}: {reason}")]
    Cloud {
        /// Method.
        method: String,
        /// Endpoint URL and path.
        target: String,
        /// Why.
        reason: String,
    },
    /// A bound was exceeded.
    #[error("{0}")]
    Bound(String),
    /// The adapter named something the site does not allow.
    #[error("the adapter asked for {0}")]
    Refused(String),
    /// A service record breaks the catalog's rules.
    #[error("a discovered service: {0}")]
    Invalid(#[from] RecordError),
    /// The site's plugin pool is closed (the site is stopping).
    #[error("the site is stopping")]
    Stopping,
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct Discovered {
    /// Every service, checked against the catalog's bounds.
    pub services: Vec<ServiceInfo>,
    /// Native ids the cloud says are gone (checked: none of them among `services`).
    pub gone: Vec<String>,
    /// Services left out because their kind is outside the taxonomy: how many of each kind.
    pub skipped: BTreeMap<String, usize>,
    /// Requests made to the cloud.
    pub requests: usize,
    /// Bytes of the answers.
    pub answer_bytes: usize,
    /// How long it took.
    pub took: Duration,
}

/// Run the adapter's discovery against the site's cloud.
pub async fn discover(
    adapter: Arc<Plugin>,
    cloud: &CloudAccess,
    limits: &DiscoveryLimits,
    bounds: &Bounds,
    pool: &Pool,
) -> Result<Discovered, DiscoveryError> {
    let run = Duration::from_secs(limits.run_timeout_s.max(1));
    tokio::time::timeout(run, discover_inner(adapter, cloud, limits, bounds, pool)).await.map_err(|_| {
        DiscoveryError::Bound(format!("discovery took longer than {} s (run_timeout_s)", run.as_secs()))
    })?
}

async fn on_pool<R: Send + 'static>(
    pool: &Pool,
    f: impl FnOnce() -> Result<R, CallError> + Send + 'static,
) -> Result<R, DiscoveryError> {
    pool.run(f).await.map_err(|_| DiscoveryError::Stopping)?.map_err(DiscoveryError::Adapter)
}

fn pairs(list: &[(String, String)]) -> Vec<types::Pair> {
    list.iter().map(|(k, v)| types::Pair { key: k.clone(), value: v.clone() }).collect()
}

async fn discover_inner(
    adapter: Arc<Plugin>,
    cloud: &CloudAccess,
    limits: &DiscoveryLimits,
    bounds: &Bounds,
    pool: &Pool,
) -> Result<Discovered, DiscoveryError> {
    if !adapter.discovers() {
        return Err(DiscoveryError::NotSupported(adapter.info().name.clone()));
    }
    let started = Instant::now();
    let Some((_, default)) = cloud.endpoints.first() else {
        return Err(DiscoveryError::Refused("a request, but the site configures no cloud endpoint".into()));
    };
    let mut context = cloud.attributes.clone();
    context.push(("platform".into(), cloud.platform.clone()));
    context.push(("principal".into(), cloud.principal.clone()));
    context.push(("endpoint".into(), default.url.clone()));
    let context = Arc::new(pairs(&context));

    let plugin = Arc::clone(&adapter);
    let ctx = Arc::clone(&context);
    let mut step = on_pool(pool, move || plugin.start_discovery(&ctx)).await?;
    let mut found: Vec<ServiceInfo> = Vec::new();
    let mut gone: Vec<String> = Vec::new();
    let (mut requests, mut answer_bytes) = (0usize, 0usize);
    let mut token: Option<String> = None;
    loop {
        take_services(&mut found, std::mem::take(&mut step.services), bounds)?;
        if gone.len() + step.gone.len() > bounds.max_services {
            return Err(DiscoveryError::Invalid(RecordError::TooMany { limit: bounds.max_services }));
        }
        gone.append(&mut step.gone);
        let Some(request) = step.next.take() else { break };
        requests += 1;
        if requests > limits.max_requests {
            return Err(DiscoveryError::Bound(format!(
                "the adapter asked for more than {} requests (max_requests)",
                limits.max_requests
            )));
        }
        if step.cursor.len() > limits.max_cursor_bytes {
            return Err(DiscoveryError::Bound(format!(
                "the adapter's cursor is {} bytes, more than {} (max_cursor_bytes)",
                step.cursor.len(),
                limits.max_cursor_bytes
            )));
        }
        let answer = send_signed(&adapter, cloud, limits, pool, request, &mut token).await?;
        answer_bytes += answer.body.len();
        let plugin = Arc::clone(&adapter);
        let (ctx, cursor) = (Arc::clone(&context), std::mem::take(&mut step.cursor));
        step = on_pool(pool, move || plugin.continue_discovery(&ctx, &cursor, answer)).await?;
    }
    // Kinds the catalog does not know are left out, loudly: the cloud may offer more sorts of
    // service than the taxonomy names, and one of them must not keep the rest out.
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    found.retain(|s| {
        let known = crate::catalog::taxonomy::normalise(&s.kind).is_ok();
        if !known {
            *skipped.entry(s.kind.chars().take(64).collect()).or_default() += 1;
        }
        known
    });
    if !skipped.is_empty() {
        tracing::warn!(platform = %cloud.platform, ?skipped, "services of kinds outside the catalog's taxonomy are not reported");
    }
    select_capabilities(&adapter, &mut found, pool).await?;
    validate_report(&mut found, bounds)?;
    let gone = crate::catalog::validate_gone(gone, &found, bounds)?.into_iter().collect();
    Ok(Discovered { services: found, gone, skipped, requests, answer_bytes, took: started.elapsed() })
}

fn take_services(
    found: &mut Vec<ServiceInfo>,
    services: Vec<DiscoveredService>,
    bounds: &Bounds,
) -> Result<(), DiscoveryError> {
    if found.len() + services.len() > bounds.max_services {
        return Err(DiscoveryError::Invalid(RecordError::TooMany { limit: bounds.max_services }));
    }
    found.extend(services.into_iter().map(|s| ServiceInfo {
        native_id: s.native_id,
        kind: s.kind,
        name: s.name,
        endpoint: s.endpoint,
        region: s.region,
        attributes: s.attributes.into_iter().map(|p| (p.key, p.value)).collect(),
        capabilities: Vec::new(),
    }));
    Ok(())
}

/// Ask the adapter which capabilities each service offers (`select-capabilities`), in one
/// pool call for the lot.
async fn select_capabilities(
    adapter: &Arc<Plugin>,
    services: &mut [ServiceInfo],
    pool: &Pool,
) -> Result<(), DiscoveryError> {
    let records: Vec<adapting::ServiceRecord> = services
        .iter()
        .map(|s| adapting::ServiceRecord {
            kind: s.kind.clone(),
            name: s.name.clone(),
            endpoint: s.endpoint.clone(),
            region: s.region.clone(),
            attributes: s
                .attributes
                .iter()
                .map(|(k, v)| types::Pair { key: k.clone(), value: v.clone() })
                .collect(),
        })
        .collect();
    let plugin = Arc::clone(adapter);
    let selected = on_pool(pool, move || {
        records.iter().map(|r| plugin.select_capabilities(r)).collect::<Result<Vec<_>, CallError>>()
    })
    .await?;
    for (service, capabilities) in services.iter_mut().zip(selected) {
        service.capabilities = capabilities
            .into_iter()
            .map(|c| CapabilityInfo {
                kind: c.kind,
                name: c.name,
                attributes: c.attributes.into_iter().map(|p| (p.key, p.value)).collect(),
            })
            .collect();
    }
    Ok(())
}

/// The endpoint a request names (the default when none).
fn endpoint<'a>(cloud: &'a CloudAccess, name: Option<&str>) -> Result<&'a CloudUrl, DiscoveryError> {
    match name {
        None => Ok(&cloud.endpoints[0].1),
        Some(name) => cloud.endpoints.iter().find(|(n, _)| n == name).map(|(_, u)| u).ok_or_else(|| {
            let known: Vec<&str> = cloud.endpoints.iter().map(|(n, _)| n.as_str()).collect();
            DiscoveryError::Refused(format!(
                "cloud endpoint `{name}`, which the site does not configure (it has: {})",
                known.join(", ")
            ))
        }),
    }
}

/// Sign `request` with the site's credentials through the adapter, send it, and return the
/// answer for the adapter.
async fn send_signed(
    adapter: &Arc<Plugin>,
    cloud: &CloudAccess,
    limits: &DiscoveryLimits,
    pool: &Pool,
    request: CloudRequest,
    token: &mut Option<String>,
) -> Result<CloudResponse, DiscoveryError> {
    let to = endpoint(cloud, request.endpoint.as_deref())?.clone();
    let mut attributes = cloud.attributes.clone();
    for p in &request.signing {
        attributes.retain(|(k, _)| *k != p.key);
        attributes.push((p.key.clone(), p.value.clone()));
    }
    let mut credentials = adapting::TargetCredentials {
        platform: cloud.platform.clone(),
        principal: cloud.principal.clone(),
        secret: cloud.secret.clone(),
        attributes: pairs(&attributes),
    };
    if token.is_none() {
        *token = site_token(adapter, cloud, limits, pool, &credentials).await?;
    }
    if let Some(t) = token {
        credentials.attributes.push(types::Pair { key: "token".into(), value: t.clone() });
    }
    let needs_sha = matches!(&adapter.info().description, Description::Adapter(i) if i.needs_body_sha256);
    let mut headers = request.headers.clone();
    headers.retain(|p| !p.key.eq_ignore_ascii_case("host"));
    headers.push(types::Pair { key: "host".into(), value: to.authority.clone() });
    let head = adapting::RequestHead {
        method: request.method.clone(),
        path: format!("{}{}", to.base, request.path),
        query: request.query.clone(),
        headers,
        body_sha256: needs_sha.then(|| hex::encode(Sha256::digest(&request.body))),
    };
    let plugin = Arc::clone(adapter);
    let signed = on_pool(pool, move || plugin.rewrite_request(&head, &credentials)).await?;
    let target = if signed.query.is_empty() {
        signed.path.clone()
    } else {
        format!("{}?{}", signed.path, signed.query)
    };
    let headers: Vec<(String, String)> = signed.headers.into_iter().map(|p| (p.key, p.value)).collect();
    let outgoing = fetch::Outgoing {
        method: &signed.method,
        path_and_query: &target,
        headers: &headers,
        body: &request.body,
    };
    let answer = fetch::send(
        cloud.tls.as_ref(),
        &to,
        outgoing,
        limits.max_answer_mib << 20,
        Duration::from_secs(limits.request_timeout_s.max(1)),
    )
    .await
    .map_err(|reason| DiscoveryError::Cloud {
        method: signed.method.clone(),
        target: format!("{}{}", to.url, shorten(&target)),
        reason,
    })?;
    Ok(CloudResponse { status: answer.status, headers: pairs(&answer.headers), body: answer.body.to_vec() })
}

fn shorten(s: &str) -> &str {
    let mut end = s.len().min(200);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A token for the site's own credentials, when the adapter exchanges tokens (Keystone).
async fn site_token(
    adapter: &Arc<Plugin>,
    cloud: &CloudAccess,
    limits: &DiscoveryLimits,
    pool: &Pool,
    credentials: &adapting::TargetCredentials,
) -> Result<Option<String>, DiscoveryError> {
    let (plugin, creds) = (Arc::clone(adapter), credentials.clone());
    let Some(request) = on_pool(pool, move || plugin.request_token(&creds)).await? else {
        return Ok(None);
    };
    let to = endpoint(cloud, request.endpoint.as_deref())?.clone();
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .filter(|p| !p.key.eq_ignore_ascii_case("host"))
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect();
    headers.push(("host".into(), to.authority.clone()));
    let target = format!("{}{}", to.base, request.path);
    let outgoing = fetch::Outgoing {
        method: &request.method,
        path_and_query: &target,
        headers: &headers,
        body: &request.body,
    };
    let answer = fetch::send(
        cloud.tls.as_ref(),
        &to,
        outgoing,
        1 << 20,
        Duration::from_secs(limits.request_timeout_s.max(1)),
    )
    .await
    .map_err(|reason| DiscoveryError::Cloud {
        method: request.method.clone(),
        target: format!("{}{}", to.url, request.path),
        reason: format!("the token request: {reason}"),
    })?;
    let plugin = Arc::clone(adapter);
    let headers = pairs(&answer.headers);
    let token = on_pool(pool, move || plugin.read_token(answer.status, &headers, &answer.body)).await?;
    Ok(Some(token.value))
}
