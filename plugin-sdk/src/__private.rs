//! Generated bindings and the glue the export macros expand to. Not part of the API.
//!
//! Each world's bindings are generated once here with a public export macro; wit-bindgen then
//! embeds a world's exports only in the crate that invokes that macro, so a plugin that exports
//! a scorer does not also claim to be an authorizer.

#![allow(missing_docs, clippy::all, unsafe_code)]

use crate::{Adapter, Authorizer, Decision, Scorer, Weights};

/// The host imports alone, used by [`crate::host`].
pub mod host {
    wit_bindgen::generate!({ world: "host", path: "../wit" });
}

pub mod scorer {
    wit_bindgen::generate!({
        world: "scorer",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_scorer_world",
        default_bindings_module: "skybridge_plugin_sdk::__private::scorer",
    });
}

pub mod authorizer {
    wit_bindgen::generate!({
        // Every authorizer exports `deferring` too (the trait's answer may be pending); the
        // host accepts authorizers with or without it.
        world: "full-authorizer",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_full_authorizer_world",
        default_bindings_module: "skybridge_plugin_sdk::__private::authorizer",
    });
}

pub mod adapter {
    wit_bindgen::generate!({
        // Every adapter exports `authenticating` too (the trait gives defaults); the host
        // accepts adapters with or without it.
        world: "full-adapter",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_full_adapter_world",
        default_bindings_module: "skybridge_plugin_sdk::__private::adapter",
    });
}

/// Route panics to the host log instead of std's default hook, which would call WASI (withheld
/// by the sandbox) before printing anything. The panic still aborts: the host sees a trap and
/// reports this message with it.
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            crate::host::log(crate::Level::Error, &format!("panic: {info}"));
        }))
    });
}

// ---------------------------------------------------------------------------------------------
// Scorer glue

use scorer::exports::skybridge::plugin::scoring as sw;

pub fn describe_scorer<S: Scorer>(name: &str, version: &str) -> sw::ScorerInfo {
    install_panic_hook();
    sw::ScorerInfo {
        name: name.to_owned(),
        version: version.to_owned(),
        weights: S::weights()
            .iter()
            .map(|w| sw::WeightInfo {
                name: w.name.to_owned(),
                default_value: w.default_value,
                description: w.description.to_owned(),
            })
            .collect(),
    }
}

pub fn score<S: Scorer>(
    metrics: sw::PathMetrics,
    weights: Vec<sw::NamedValue>,
) -> Result<sw::Preference, String> {
    install_panic_hook();
    let metrics = crate::PathMetrics {
        rtt_ms: metrics.rtt_ms,
        loss: metrics.loss,
        jitter_ms: metrics.jitter_ms,
        hops: metrics.hops,
        extra: metrics.extra.into_iter().map(|v| (v.name, v.value)).collect(),
    };
    let given = weights.into_iter().map(|v| (v.name, v.value));
    let weights = Weights::resolve(S::weights(), given, S::accepts_unknown_weights())?;
    let score = S::score(&metrics, &weights)?;
    if !score.value.is_finite() {
        return Err(format!("scorer produced a non-finite value ({})", score.value));
    }
    Ok(sw::Preference { value: score.value, explanation: score.explanation })
}

// ---------------------------------------------------------------------------------------------
// Authorizer glue

use authorizer::exports::skybridge::plugin::authorization as aw;

pub fn authorize<A: Authorizer>(request: aw::AuthorizationRequest) -> aw::Decision {
    install_panic_hook();
    match A::authorize(&request_in(request)) {
        Decision::Grant(why) => aw::Decision::Grant(why),
        Decision::Refuse(why) => aw::Decision::Refuse(why),
        Decision::Pending { reason, .. } => aw::Decision::Refuse(format!("not decided yet: {reason}")),
    }
}

use authorizer::exports::skybridge::plugin::deferring as fw;

pub fn decide<A: Authorizer>(request: aw::AuthorizationRequest) -> fw::Consent {
    install_panic_hook();
    match A::authorize(&request_in(request)) {
        Decision::Grant(why) => fw::Consent::Grant(why),
        Decision::Refuse(why) => fw::Consent::Refuse(why),
        Decision::Pending { reason, retry_after_s } => {
            fw::Consent::Pending(fw::PendingDecision { reason, retry_after_s })
        }
    }
}

fn request_in(request: aw::AuthorizationRequest) -> crate::AuthorizationRequest {
    crate::AuthorizationRequest {
        account: request.account,
        platform: request.platform,
        capability: crate::Capability {
            kind: request.capability.kind,
            name: request.capability.name,
            attributes: pairs_in(request.capability.attributes, |p| (p.key, p.value)),
        },
        context: pairs_in(request.context, |p| (p.key, p.value)),
    }
}

// ---------------------------------------------------------------------------------------------
// Adapter glue

use adapter::exports::skybridge::plugin::adapting as dw;

pub fn describe_adapter<A: Adapter>(name: &str, version: &str) -> dw::AdapterInfo {
    install_panic_hook();
    dw::AdapterInfo {
        cloud_kind: A::CLOUD_KIND.to_owned(),
        name: name.to_owned(),
        version: version.to_owned(),
        needs_body_sha256: A::needs_body_sha256(),
    }
}

pub fn parse_service_info<A: Adapter>(
    document: Vec<u8>,
    content_type: String,
) -> Result<Vec<dw::ServiceRecord>, String> {
    install_panic_hook();
    Ok(A::parse_service_info(&document, &content_type)?.into_iter().map(service_out).collect())
}

pub fn select_capabilities<A: Adapter>(service: dw::ServiceRecord) -> Vec<dw::Capability> {
    install_panic_hook();
    A::select_capabilities(&service_in(service))
        .into_iter()
        .map(|c| dw::Capability {
            kind: c.kind,
            name: c.name,
            attributes: pairs_out(c.attributes, |key, value| dw::Pair { key, value }),
        })
        .collect()
}

pub fn rewrite_request<A: Adapter>(
    head: dw::RequestHead,
    credentials: dw::TargetCredentials,
) -> Result<dw::RequestHead, String> {
    install_panic_hook();
    let head = head_in(head);
    let credentials = credentials_in(credentials);
    let out = A::rewrite_request(head, &credentials)?;
    Ok(dw::RequestHead {
        method: out.method,
        path: out.path,
        query: out.query,
        headers: pairs_out(out.headers, |key, value| dw::Pair { key, value }),
        body_sha256: out.body_sha256,
    })
}

pub fn claimed_account<A: Adapter>(head: dw::RequestHead) -> Option<String> {
    install_panic_hook();
    A::claimed_account(&head_in(head))
}

pub fn verify_client<A: Adapter>(head: dw::RequestHead, account_secret: String) -> Result<(), String> {
    install_panic_hook();
    A::verify_client(&head_in(head), &account_secret)
}

use adapter::exports::skybridge::plugin::token_exchange as tw;

pub fn request_token<A: Adapter>(credentials: dw::TargetCredentials) -> Option<tw::TokenRequest> {
    install_panic_hook();
    A::request_token(&credentials_in(credentials)).map(|r| tw::TokenRequest {
        endpoint: r.endpoint,
        method: r.method,
        path: r.path,
        headers: pairs_out(r.headers, |key, value| dw::Pair { key, value }),
        body: r.body,
    })
}

pub fn read_token<A: Adapter>(
    status: u16,
    headers: Vec<dw::Pair>,
    body: Vec<u8>,
) -> Result<tw::Token, String> {
    install_panic_hook();
    let headers = pairs_in(headers, |p| (p.key, p.value));
    A::read_token(status, &headers, &body)
        .map(|t| tw::Token { value: t.value, expires_unix_s: t.expires_unix_s })
}

use adapter::exports::skybridge::plugin::discovering as xw;

pub fn start_discovery<A: Adapter>(context: Vec<dw::Pair>) -> Result<xw::DiscoveryStep, String> {
    install_panic_hook();
    let context = pairs_in(context, |p| (p.key, p.value));
    A::start_discovery(&context).map(step_out)
}

pub fn continue_discovery<A: Adapter>(
    context: Vec<dw::Pair>,
    cursor: String,
    response: xw::CloudResponse,
) -> Result<xw::DiscoveryStep, String> {
    install_panic_hook();
    let context = pairs_in(context, |p| (p.key, p.value));
    let response = crate::CloudResponse {
        status: response.status,
        headers: pairs_in(response.headers, |p| (p.key, p.value)),
        body: response.body,
    };
    A::continue_discovery(&context, &cursor, &response).map(step_out)
}

fn step_out(step: crate::DiscoveryStep) -> xw::DiscoveryStep {
    xw::DiscoveryStep {
        services: step
            .services
            .into_iter()
            .map(|d| {
                let s = service_out(d.service);
                xw::DiscoveredService {
                    native_id: d.native_id,
                    kind: s.kind,
                    name: s.name,
                    endpoint: s.endpoint,
                    region: s.region,
                    attributes: s.attributes,
                }
            })
            .collect(),
        next: step.next.map(|r| xw::CloudRequest {
            endpoint: r.endpoint,
            method: r.method,
            path: r.path,
            query: r.query,
            headers: pairs_out(r.headers, |key, value| dw::Pair { key, value }),
            body: r.body,
            signing: pairs_out(r.signing, |key, value| dw::Pair { key, value }),
        }),
        cursor: step.cursor,
        gone: step.gone,
    }
}

fn credentials_in(credentials: dw::TargetCredentials) -> crate::TargetCredentials {
    crate::TargetCredentials {
        platform: credentials.platform,
        principal: credentials.principal,
        secret: credentials.secret,
        attributes: pairs_in(credentials.attributes, |p| (p.key, p.value)),
    }
}

fn head_in(head: dw::RequestHead) -> crate::RequestHead {
    crate::RequestHead {
        method: head.method,
        path: head.path,
        query: head.query,
        headers: pairs_in(head.headers, |p| (p.key, p.value)),
        body_sha256: head.body_sha256,
    }
}

fn service_in(s: dw::ServiceRecord) -> crate::ServiceRecord {
    crate::ServiceRecord {
        kind: s.kind,
        name: s.name,
        endpoint: s.endpoint,
        region: s.region,
        attributes: pairs_in(s.attributes, |p| (p.key, p.value)),
    }
}

fn service_out(s: crate::ServiceRecord) -> dw::ServiceRecord {
    dw::ServiceRecord {
        kind: s.kind,
        name: s.name,
        endpoint: s.endpoint,
        region: s.region,
        attributes: pairs_out(s.attributes, |key, value| dw::Pair { key, value }),
    }
}

fn pairs_in<P>(pairs: Vec<P>, f: impl Fn(P) -> (String, String)) -> Vec<(String, String)> {
    pairs.into_iter().map(f).collect()
}

fn pairs_out<P>(pairs: Vec<(String, String)>, f: impl Fn(String, String) -> P) -> Vec<P> {
    pairs.into_iter().map(|(k, v)| f(k, v)).collect()
}
