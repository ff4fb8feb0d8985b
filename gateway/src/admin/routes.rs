//! The admin API's routes, in one table. The server looks every request up here first (a path
//! not listed is a 404, a method not listed for it a 405 that says which are), and the OpenAPI
//! document ([`super::openapi`]) is generated from the same rows and the types' schemas — so
//! the document cannot list a route the server does not have, nor miss one it has.

use http::Method;
use schemars::{JsonSchema, Schema, SchemaGenerator};

use super::api::{
    AccountView, AuditRecord, Authorization, BindRequest, BindingView, ConnectRequest, Credentials,
    DecisionRecord, Deleted, EntryView, InventoryRecord, LinkView, MemberView, NewAccount, NodeView, Page,
    PlatformView, PluginView, Policy, PolicyUpdate, RefreshRecord, RefreshStarted, SessionRecord,
};
use crate::controller::accounts::AuthFailures;

/// How a body's schema is made: a reference into the document's components.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// What a route answers when it succeeds.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// JSON with this status and schema.
    Json(u16, SchemaFn),
    /// A body of this media type that is not JSON (metrics, events, the dashboard).
    Other(&'static str),
}

/// One query parameter.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    /// The parameter's name.
    pub name: &'static str,
    /// Its JSON Schema type: `integer` or `string`.
    pub kind: &'static str,
    /// What it does.
    pub description: &'static str,
}

/// One route: a method on a path template (`{name}` stands for one path segment).
#[derive(Debug, Clone)]
pub struct Route {
    /// The method.
    pub method: Method,
    /// The path template.
    pub path: &'static str,
    /// The document groups routes by this.
    pub tag: &'static str,
    /// What it does, in a line.
    pub summary: &'static str,
    /// Whether the bearer token is required.
    pub token: bool,
    /// The query parameters it reads.
    pub query: &'static [Query],
    /// The request body's schema, if it reads one.
    pub request: Option<SchemaFn>,
    /// What it answers when it succeeds.
    pub answer: Answer,
    /// Error statuses this route may answer with besides 401 and 429 (every route behind the
    /// token may) and 400 for a bad body or query.
    pub errors: &'static [u16],
    /// Kept for earlier clients; use the route named in the summary.
    pub deprecated: bool,
}

const PAGING: [Query; 2] = [
    Query { name: "limit", kind: "integer", description: "Items per page, 1 to 1000 (default 100)." },
    Query { name: "page", kind: "string", description: "The `next_page` token of the previous page." },
];
const CATALOG_QUERY: [Query; 8] = [
    PAGING[0],
    PAGING[1],
    Query { name: "kind", kind: "string", description: "Only entries of this kind (`object-store/bucket`)." },
    Query { name: "platform", kind: "string", description: "Only entries this platform offers." },
    Query { name: "region", kind: "string", description: "Only entries in this region." },
    Query { name: "state", kind: "string", description: "`offered` or `orphaned`." },
    Query {
        name: "since",
        kind: "integer",
        description: "Wait until the catalog's revision passes this one (a long poll).",
    },
    Query {
        name: "wait",
        kind: "integer",
        description: "How long to wait with `since`, in seconds (≤ 300, default 60).",
    },
];

/// A route answering JSON: `GET`, 200, behind the token, unless the caller's fields say otherwise.
const fn route(path: &'static str, tag: &'static str, summary: &'static str, answer: SchemaFn) -> Route {
    Route {
        method: Method::GET,
        path,
        tag,
        summary,
        token: true,
        query: &[],
        request: None,
        answer: Answer::Json(200, answer),
        errors: &[],
        deprecated: false,
    }
}

/// A `GET` route answering something other than JSON.
const fn other(path: &'static str, summary: &'static str, media: &'static str) -> Route {
    Route {
        method: Method::GET,
        path,
        tag: "service",
        summary,
        token: true,
        query: &[],
        request: None,
        answer: Answer::Other(media),
        errors: &[],
        deprecated: false,
    }
}

impl Route {
    /// The same route answering `status` on success.
    fn answering(mut self, status: u16) -> Route {
        if let Answer::Json(_, schema) = self.answer {
            self.answer = Answer::Json(status, schema);
        }
        self
    }
}

/// The binding a `DELETE` closed, or the one given up while being restored.
fn closed_binding(generator: &mut SchemaGenerator) -> Schema {
    let binding = generator.subschema_for::<BindingView>();
    let abandoned = generator.subschema_for::<super::api::Abandoned>();
    schemars::json_schema!({ "anyOf": [binding, abandoned] })
}

/// Every route the admin listener serves.
pub fn routes() -> Vec<Route> {
    let mut routes = vec![
        Route {
            token: false,
            ..route(
                "/healthz",
                "service",
                "Liveness; answers without a token and reveals nothing.",
                schema::<Health>,
            )
        },
        Route {
            token: false,
            ..other("/ui", "The dashboard (its page, script and style hold no data).", "text/html")
        },
        other("/metrics", "Prometheus metrics (text format 0.0.4).", crate::metrics::CONTENT_TYPE),
        Route {
            errors: &[503],
            query: &[Query {
                name: "recent",
                kind: "integer",
                description: "Send the latest N events first (0 to 100, default 0), then each as it happens.",
            }],
            ..other(
                "/v1/events",
                "The controller's events as they happen (server-sent events: `event:` the type, `data:` a `Stamped` event).",
                super::events::CONTENT_TYPE,
            )
        },
        Route { token: false, ..other("/v1/openapi.json", "This document.", "application/json") },
        route("/v1/nodes", "mesh", "Registered relays and sites, up or down.", schema::<Vec<NodeView>>),
        Route {
            errors: &[503],
            ..route(
                "/v1/controllers",
                "mesh",
                "The controllers of this one's group, with their addresses (itself alone when it is in none).",
                schema::<Vec<MemberView>>,
            )
        },
        route("/v1/links", "mesh", "Link statistics as the nodes report them.", schema::<Vec<LinkView>>),
        route(
            "/v1/platforms",
            "mesh",
            "Platforms, their nearest relay and measured RTTs.",
            schema::<Vec<PlatformView>>,
        ),
        Route {
            query: &PAGING,
            errors: &[404, 409],
            ..route(
                "/v1/platforms/{platform}/inventory",
                "catalog",
                "The services the platform's site discovered, by native id, paged.",
                schema::<Page<InventoryRecord>>,
            )
        },
        Route {
            errors: &[404],
            ..route(
                "/v1/platforms/{platform}/refreshes",
                "catalog",
                "The platform's latest discovery runs: when, why, what changed or why it failed.",
                schema::<Vec<RefreshRecord>>,
            )
        },
        Route {
            method: Method::POST,
            errors: &[404, 409, 502],
            ..route(
                "/v1/platforms/{platform}/refresh",
                "catalog",
                "Ask the platform's site to discover now (one run at a time).",
                schema::<RefreshStarted>,
            )
            .answering(202)
        },
        Route {
            query: &CATALOG_QUERY,
            ..route(
                "/v1/catalog",
                "catalog",
                "Catalog entries with the platforms offering each, paged; an ETag, and 304 on `If-None-Match`.",
                schema::<Page<EntryView>>,
            )
        },
        Route {
            errors: &[404],
            ..route(
                "/v1/catalog/{id}",
                "catalog",
                "One entry: who offers it, their service info, presence, first seen.",
                schema::<EntryView>,
            )
        },
        Route {
            query: &PAGING,
            ..route(
                "/v1/authorizations",
                "catalog",
                "Capability authorizations (pending, granted, refused, revoked, expired), paged.",
                schema::<Page<Authorization>>,
            )
        },
        route(
            "/v1/authorizations/audit",
            "catalog",
            "The latest 200 authorization decisions: who decided what, and why.",
            schema::<Vec<AuditRecord>>,
        ),
        Route {
            method: Method::POST,
            request: Some(schema::<ConnectRequest>),
            errors: &[404, 409],
            ..route(
                "/v1/decisions",
                "paths",
                "Decide a path from one platform to another.",
                schema::<DecisionRecord>,
            )
            .answering(201)
        },
        route("/v1/decisions", "paths", "The 50 latest decision records.", schema::<Vec<DecisionRecord>>),
        Route {
            errors: &[404],
            ..route(
                "/v1/decisions/{id}",
                "paths",
                "One decision record (the newest 10,000 ids are kept; an older one is 404).",
                schema::<DecisionRecord>,
            )
        },
        route("/v1/policy", "paths", "The path policy in force.", schema::<Policy>),
        Route {
            method: Method::PUT,
            request: Some(schema::<PolicyUpdate>),
            ..route("/v1/policy", "paths", "Change any of the policy's fields.", schema::<Policy>)
        },
        route(
            "/v1/plugins",
            "paths",
            "Plugins in service: world, version, SHA-256, calls, failures.",
            schema::<Vec<PluginView>>,
        ),
        Route {
            method: Method::POST,
            request: Some(schema::<BindRequest>),
            errors: &[403, 404, 409, 502],
            ..route(
                "/v1/bindings",
                "bindings",
                "Bind a local port to an endpoint of a platform; the tunnel is built before the answer.",
                schema::<BindingView>,
            )
            .answering(201)
        },
        route(
            "/v1/bindings",
            "bindings",
            "Bindings with their tunnels and byte counts (in a group, every controller's).",
            schema::<Vec<BindingView>>,
        ),
        Route {
            errors: &[404, 503],
            ..route("/v1/bindings/{id}", "bindings", "One binding.", schema::<BindingView>)
        },
        Route {
            method: Method::DELETE,
            errors: &[404, 503],
            ..route(
                "/v1/bindings/{id}",
                "bindings",
                "Close a binding and tear its tunnel down (in a group, through the controller serving it).",
                closed_binding,
            )
        },
        route(
            "/v1/sessions",
            "bindings",
            "Recent uses of bindings, each as its three sessions, with byte counts.",
            schema::<Vec<SessionRecord>>,
        ),
        Route {
            method: Method::POST,
            request: Some(schema::<NewAccount>),
            errors: &[409],
            ..route(
                "/v1/accounts",
                "accounts",
                "Create an account; secrets are never returned.",
                schema::<AccountView>,
            )
            .answering(201)
        },
        route(
            "/v1/accounts",
            "accounts",
            "Accounts and their credential mappings (no secrets).",
            schema::<Vec<AccountView>>,
        ),
        Route {
            errors: &[404],
            ..route("/v1/accounts/{id}", "accounts", "One account.", schema::<AccountView>)
        },
        Route {
            method: Method::DELETE,
            errors: &[404],
            ..route("/v1/accounts/{id}", "accounts", "Delete an account.", schema::<Deleted>)
        },
        Route {
            method: Method::PUT,
            request: Some(schema::<Credentials>),
            errors: &[404],
            ..route(
                "/v1/accounts/{id}/credentials/{platform}",
                "accounts",
                "What the account maps to on a platform.",
                schema::<AccountView>,
            )
        },
        Route {
            method: Method::DELETE,
            errors: &[404],
            ..route(
                "/v1/accounts/{id}/credentials/{platform}",
                "accounts",
                "Remove the account's mapping on a platform.",
                schema::<AccountView>,
            )
        },
        route(
            "/v1/auth-failures",
            "accounts",
            "Failed proofs of identity counted, requests throttled, sources and accounts on record.",
            schema::<AuthFailures>,
        ),
    ];
    // `/v1/connections` is the old name of `/v1/decisions`.
    let aliases: Vec<Route> = routes
        .iter()
        .filter(|r| r.path.starts_with("/v1/decisions"))
        .map(|r| Route {
            path: if r.path == "/v1/decisions" { "/v1/connections" } else { "/v1/connections/{id}" },
            summary: "The old name of the same route under `/v1/decisions`.",
            deprecated: true,
            ..r.clone()
        })
        .collect();
    routes.extend(aliases);
    routes
}

/// The answer of `/healthz`.
#[derive(serde::Serialize, JsonSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// What the table says of a request's method and path.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// The route serving it.
    Found(&'a Route),
    /// The path is served, not with this method; these are (for `Allow`).
    WrongMethod(String),
    /// No route has this path.
    Unknown,
}

/// Whether `path` (no query, no trailing slash) fits `template`.
fn fits(template: &str, path: &str) -> bool {
    let mut given = path.split('/');
    let fits = template.split('/').all(|want| match given.next() {
        Some(seg) if want.starts_with('{') => !seg.is_empty(),
        Some(seg) => seg == want,
        None => false,
    });
    fits && given.next().is_none()
}

/// Look a request up.
pub fn lookup<'a>(routes: &'a [Route], method: &Method, path: &str) -> Lookup<'a> {
    let on_path: Vec<&Route> = routes.iter().filter(|r| fits(r.path, path)).collect();
    if let Some(route) = on_path.iter().find(|r| r.method == method) {
        return Lookup::Found(route);
    }
    if on_path.is_empty() {
        return Lookup::Unknown;
    }
    let mut allow: Vec<&str> = on_path.iter().map(|r| r.method.as_str()).collect();
    allow.dedup();
    Lookup::WrongMethod(allow.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_looked_up_by_template_and_method() {
        let routes = routes();
        let found = |m: Method, p: &str| match lookup(&routes, &m, p) {
            Lookup::Found(r) => Some((r.method.clone(), r.path)),
            _ => None,
        };
        assert_eq!(found(Method::GET, "/v1/bindings/7"), Some((Method::GET, "/v1/bindings/{id}")));
        assert_eq!(found(Method::DELETE, "/v1/bindings/7"), Some((Method::DELETE, "/v1/bindings/{id}")));
        assert_eq!(
            found(Method::PUT, "/v1/accounts/acme/credentials/aws"),
            Some((Method::PUT, "/v1/accounts/{id}/credentials/{platform}"))
        );
        // A literal segment is not taken for a parameter, nor the other way round.
        assert_eq!(
            found(Method::GET, "/v1/authorizations/audit"),
            Some((Method::GET, "/v1/authorizations/audit"))
        );
        let unknown = |p: &str| matches!(lookup(&routes, &Method::GET, p), Lookup::Unknown);
        assert!(unknown("/v1/bindings/7/extra") && unknown("/v1/bindings//") && unknown("/v2/nodes"));
        let allowed = |m: Method, p: &str| match lookup(&routes, &m, p) {
            Lookup::WrongMethod(allow) => Some(allow),
            _ => None,
        };
        assert_eq!(allowed(Method::PATCH, "/v1/bindings/7").as_deref(), Some("GET, DELETE"));
        assert_eq!(allowed(Method::DELETE, "/v1/policy").as_deref(), Some("GET, PUT"));
        assert_eq!(found(Method::GET, "/v1/connections/3"), Some((Method::GET, "/v1/connections/{id}")));
    }

    #[test]
    fn no_route_is_listed_twice() {
        let routes = routes();
        for (i, a) in routes.iter().enumerate() {
            for b in &routes[i + 1..] {
                assert!(!(a.method == b.method && a.path == b.path), "{} {} listed twice", a.method, a.path);
            }
        }
    }
}
