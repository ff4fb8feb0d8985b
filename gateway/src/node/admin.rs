//! The controller's admin API: JSON over HTTP/1.1 (hyper), bearer-token auth.
//!
//! | method | path | |
//! | --- | --- | --- |
//! | GET | `/healthz` | liveness; the only path served without a token, and it reveals nothing |
//! | GET | `/v1/nodes` | registered relays and sites, up or down |
//! | GET | `/v1/links` | link statistics as relays report them |
//! | GET | `/v1/platforms` | platforms, their nearest relay and measured RTTs |
//! | POST | `/v1/connections` | `{"from": A, "to": B}` → the decision record (201) |
//! | GET | `/v1/connections` | the 50 latest decision records |
//! | GET | `/v1/connections/{id}` | one decision record |
//! | POST | `/v1/bindings` | `{"from", "to", "endpoint", "mode": "tcp", "listen"?, "ttl_s"?}` → the binding (201) |
//! | GET | `/v1/bindings`, `/v1/bindings/{id}` | bindings with their tunnels and byte counts |
//! | DELETE | `/v1/bindings/{id}` | close a binding and tear its tunnel down |
//! | POST | `/v1/accounts` | `{"id", "secret"}` → the account (201); secrets are never returned |
//! | GET | `/v1/accounts`, `/v1/accounts/{id}` | accounts and their credential mappings (no secrets) |
//! | DELETE | `/v1/accounts/{id}` | delete an account |
//! | PUT, DELETE | `/v1/accounts/{id}/credentials/{platform}` | `{"principal", "secret", "attributes"?}`: what the account maps to there |
//! | GET | `/v1/sessions` | recent uses of bindings, each as its three sessions, with byte counts |
//! | GET | `/v1/policy` | the path policy in force |
//! | PUT | `/v1/policy` | change it: any of `scorer`, `weights`, `k`, `probes`, `probe_interval_ms` |
//!
//! Errors are `{"error": "…"}` with a fitting status: 400 bad request, 401 no or wrong token,
//! 404 unknown path, record or platform, 405 wrong method, 409 the mesh cannot serve it now,
//! 413 body too large, 500 the controller failed, 502 a hop refused or did not answer.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::secret;
use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};

use super::accounts::{Account, Credentials, NewAccount};
use super::config::PolicyUpdate;
use super::controller::{AccountError, ConnectError, Controller};
use super::ingress::{BindError, BindRequest};

/// Request bodies larger than this are refused.
const MAX_BODY: usize = 64 * 1024;

/// The body of `POST /v1/connections`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectRequest {
    /// The requesting platform.
    pub from: String,
    /// The target platform.
    pub to: String,
}

/// Read the bearer token: the first line of `path`, which must not be empty.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the admin token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.len() < 16 {
        anyhow::bail!("the admin token in {} must be at least 16 characters", path.display());
    }
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(file = %path.display(), "the admin token file is readable by others; chmod 600 it");
    }
    Ok(token)
}

/// Serve the admin API on `listener` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, controller: Arc<Controller>, token: String) {
    let token: Arc<[u8; 32]> = Arc::new(secret::digest(&token));
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: back off rather than spin.
                tracing::warn!("admin API accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (controller, token) = (Arc::clone(&controller), Arc::clone(&token));
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (controller, token) = (Arc::clone(&controller), Arc::clone(&token));
                async move { Ok::<_, Infallible>(handle(req, &controller, &token).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%remote, "admin connection ended: {e}");
            }
        });
    }
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body =
        serde_json::to_vec_pretty(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message.into() }))
}

fn account_error(e: AccountError) -> Response<Full<Bytes>> {
    let status = match &e {
        AccountError::Invalid(_) => StatusCode::BAD_REQUEST,
        AccountError::NotFound(_) => StatusCode::NOT_FOUND,
        AccountError::Exists(_) => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

fn authorized(req: &Request<Incoming>, token: &[u8; 32]) -> bool {
    let Some(given) = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    let Some(given) = given.strip_prefix("Bearer ") else { return false };
    secret::matches_digest(given.trim(), token)
}

async fn body<T: for<'de> Deserialize<'de>>(req: Request<Incoming>) -> Result<T, Response<Full<Bytes>>> {
    let bytes = Limited::new(req.into_body(), MAX_BODY).collect().await.map_err(|e| {
        if e.is::<http_body_util::LengthLimitError>() {
            error(StatusCode::PAYLOAD_TOO_LARGE, format!("request body larger than {MAX_BODY} bytes"))
        } else {
            error(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}"))
        }
    })?;
    serde_json::from_slice(&bytes.to_bytes())
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

async fn handle(req: Request<Incoming>, c: &Arc<Controller>, token: &[u8; 32]) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let method = req.method().clone();
    if path == "/healthz" {
        return json(StatusCode::OK, &serde_json::json!({ "status": "ok" }));
    }
    if !authorized(&req, token) {
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut().insert(WWW_AUTHENTICATE, hyper::header::HeaderValue::from_static("Bearer"));
        return r;
    }
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let result = match (segments.as_slice(), &method) {
        (["v1", "nodes"], &Method::GET) => Ok(json(StatusCode::OK, &c.nodes())),
        (["v1", "links"], &Method::GET) => Ok(json(StatusCode::OK, &c.links())),
        (["v1", "platforms"], &Method::GET) => Ok(json(StatusCode::OK, &c.platforms())),
        (["v1", "policy"], &Method::GET) => Ok(json(StatusCode::OK, &c.policy())),
        (["v1", "policy"], &Method::PUT) => match body::<PolicyUpdate>(req).await {
            Ok(update) => Ok(match c.set_policy(&update) {
                Ok(policy) => json(StatusCode::OK, &policy),
                Err(e) => error(StatusCode::BAD_REQUEST, e),
            }),
            Err(r) => Err(r),
        },
        (["v1", "connections"], &Method::POST) => match body::<ConnectRequest>(req).await {
            Ok(r) => Ok(match c.connect(&r.from, &r.to).await {
                Ok(record) => json(StatusCode::CREATED, &record),
                Err(e @ ConnectError::UnknownPlatform { .. }) => error(StatusCode::NOT_FOUND, e.to_string()),
                Err(e @ ConnectError::Unavailable(_)) => error(StatusCode::CONFLICT, e.to_string()),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }),
            Err(r) => Err(r),
        },
        (["v1", "bindings"], &Method::POST) => match body::<BindRequest>(req).await {
            // Accounts arrive with session translation; until then bindings are the operator's.
            Ok(r) => Ok(match c.bind(r, "operator").await {
                Ok(binding) => json(StatusCode::CREATED, &binding),
                Err(e) => {
                    let status = match &e {
                        BindError::Invalid(_) => StatusCode::BAD_REQUEST,
                        BindError::Connect(ConnectError::UnknownPlatform { .. }) => StatusCode::NOT_FOUND,
                        BindError::Connect(ConnectError::Unavailable(_)) => StatusCode::CONFLICT,
                        BindError::Setup(_) => StatusCode::BAD_GATEWAY,
                        _ => StatusCode::INTERNAL_SERVER_ERROR,
                    };
                    error(status, e.to_string())
                }
            }),
            Err(r) => Err(r),
        },
        (["v1", "bindings"], &Method::GET) => Ok(json(StatusCode::OK, &c.ingress.bindings())),
        (["v1", "bindings", id], &Method::GET | &Method::DELETE) => Ok(match id.parse::<u64>() {
            Err(_) => error(StatusCode::BAD_REQUEST, format!("binding id `{id}` is not a number")),
            Ok(id) => {
                let found = if method == Method::DELETE { c.unbind(id).await } else { c.ingress.binding(id) };
                match found {
                    Some(binding) => json(StatusCode::OK, &binding),
                    None => error(StatusCode::NOT_FOUND, format!("no binding {id}")),
                }
            }
        }),
        (["v1", "accounts"], &Method::POST) => match body::<NewAccount>(req).await {
            Ok(new) => Ok(match c.create_account(new).await {
                Ok(view) => json(StatusCode::CREATED, &view),
                Err(e) => account_error(e),
            }),
            Err(r) => Err(r),
        },
        (["v1", "accounts"], &Method::GET) => Ok(match c.accounts().await {
            Ok(all) => json(StatusCode::OK, &all),
            Err(e) => account_error(e),
        }),
        (["v1", "accounts", id], &Method::GET) => Ok(match c.account(id).await {
            Ok(view) => json(StatusCode::OK, &view),
            Err(e) => account_error(e),
        }),
        (["v1", "accounts", id], &Method::DELETE) => Ok(match c.delete_account(id).await {
            Ok(()) => json(StatusCode::OK, &serde_json::json!({ "deleted": id })),
            Err(e) => account_error(e),
        }),
        (["v1", "accounts", id, "credentials", platform], &Method::PUT) => {
            match body::<Credentials>(req).await {
                Ok(credentials) => {
                    let platform = platform.to_string();
                    let set = move |a: &mut Account| {
                        a.credentials.insert(platform, credentials);
                        Ok(())
                    };
                    Ok(match c.change_account(id, set).await {
                        Ok(view) => json(StatusCode::OK, &view),
                        Err(e) => account_error(e),
                    })
                }
                Err(r) => Err(r),
            }
        }
        (["v1", "accounts", id, "credentials", platform], &Method::DELETE) => {
            let platform = platform.to_string();
            let remove = move |a: &mut Account| match a.credentials.remove(&platform) {
                Some(_) => Ok(()),
                None => Err(AccountError::NotFound(format!("no credentials for platform `{platform}`"))),
            };
            Ok(match c.change_account(id, remove).await {
                Ok(view) => json(StatusCode::OK, &view),
                Err(e) => account_error(e),
            })
        }
        (["v1", "sessions"], &Method::GET) => Ok(json(StatusCode::OK, &c.ingress.sessions())),
        (["v1", "connections"], &Method::GET) => Ok(match c.recent_connections(50).await {
            Ok(records) => json(StatusCode::OK, &records),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
        }),
        (["v1", "connections", id], &Method::GET) => Ok(match id.parse::<u64>() {
            Err(_) => error(StatusCode::BAD_REQUEST, format!("connection id `{id}` is not a number")),
            Ok(id) => match c.connection(id).await {
                Ok(Some(record)) => json(StatusCode::OK, &record),
                Ok(None) => error(StatusCode::NOT_FOUND, format!("no connection {id}")),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
            },
        }),
        (["v1", "nodes" | "links" | "platforms" | "policy" | "connections"], _)
        | (["v1", "connections", _], _) => {
            Ok(error(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {path}")))
        }
        _ => Ok(error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}"))),
    };
    result.unwrap_or_else(|r| r)
}
