//! The admin API's OpenAPI 3.1 document, generated from the route table ([`super::routes`])
//! and the JSON Schemas of the [`super::api`] types (schemars). Served at `/v1/openapi.json`.
//!
//! Answers are described as the server writes them (serialize contract) and request bodies as
//! it reads them (deserialize contract): a field the server may omit is not required in an
//! answer, and a field with a default is not required in a request. A type whose two shapes
//! differ gets a second component named `…Input` for the request side.

use schemars::SchemaGenerator;
use schemars::generate::{Contract, SchemaSettings};
use serde_json::{Map, Value, json};

use super::routes::{Answer, Route};

/// Where schemars puts the components, so its `$ref`s point into the document.
const COMPONENTS: &str = "/components/schemas";

fn generator(contract: Contract) -> SchemaGenerator {
    SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = COMPONENTS.into();
            s.meta_schema = None;
            s.contract = contract;
        })
        .into_generator()
}

fn error_description(status: u16) -> &'static str {
    match status {
        400 => "The request is malformed: its body, a query parameter or an id.",
        401 => "No bearer token, or the wrong one.",
        403 => "The account may not use the target.",
        404 => "No such record or platform.",
        409 => "The mesh cannot serve it now.",
        413 => "The body is larger than 64 KiB.",
        429 => "Too many failed authentications from this address (see `Retry-After`).",
        502 => "A hop or the platform's site refused or did not answer.",
        503 => "Not available yet (being restored), or too many streams open.",
        _ => "The controller failed.",
    }
}

/// The document for `routes`.
pub fn document(routes: &[Route]) -> Value {
    let mut answers = generator(Contract::Serialize);
    let mut requests = generator(Contract::Deserialize);
    let mut paths: Map<String, Value> = Map::new();
    for route in routes {
        let mut responses = Map::new();
        match route.answer {
            Answer::Json(status, schema) => {
                let schema = schema(&mut answers);
                responses.insert(
                    status.to_string(),
                    json!({ "description": "Done.", "content": { "application/json": { "schema": schema } } }),
                );
            }
            Answer::Other(media) => {
                let media = media.split(';').next().unwrap_or(media).trim();
                // A JSON body with no type of its own (this document) is an object; the rest is text.
                let schema = if media == "application/json" {
                    json!({ "type": "object" })
                } else {
                    json!({ "type": "string" })
                };
                responses.insert(
                    "200".into(),
                    json!({ "description": "Done.", "content": { media: { "schema": schema } } }),
                );
            }
        }
        let mut errors: Vec<u16> = route.errors.to_vec();
        if route.token {
            errors.extend([401, 429]);
        }
        if route.request.is_some() || !route.query.is_empty() || route.path.contains('{') {
            errors.push(400);
        }
        if route.request.is_some() {
            errors.push(413);
        }
        errors.push(500);
        errors.sort_unstable();
        errors.dedup();
        for status in errors {
            let schema = answers.subschema_for::<super::api::ErrorBody>();
            responses.insert(
                status.to_string(),
                json!({ "description": error_description(status), "content": { "application/json": { "schema": schema } } }),
            );
        }
        let mut parameters: Vec<Value> = path_parameters(route.path)
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        parameters.extend(route.query.iter().map(|q| {
            json!({ "name": q.name, "in": "query", "required": false, "description": q.description,
                    "schema": { "type": q.kind } })
        }));
        let mut operation = json!({
            "tags": [route.tag],
            "summary": route.summary,
            "operationId": operation_id(route),
            "responses": responses,
        });
        if !parameters.is_empty() {
            operation["parameters"] = Value::Array(parameters);
        }
        if let Some(body) = route.request {
            let schema = body(&mut requests);
            operation["requestBody"] =
                json!({ "required": true, "content": { "application/json": { "schema": schema } } });
        }
        if !route.token {
            operation["security"] = json!([]);
        }
        if route.deprecated {
            operation["deprecated"] = json!(true);
        }
        let item = paths.entry(route.path).or_insert_with(|| json!({}));
        item[route.method.as_str().to_ascii_lowercase()] = operation;
    }
    let mut schemas = answers.take_definitions(true);
    let mut requests = requests.take_definitions(true);
    // Request-side definitions that differ from the answer-side ones of the same name become
    // `…Input`, and every request-side reference to them is rewritten.
    let renamed: Vec<String> = requests
        .iter()
        .filter(|(name, schema)| schemas.get(*name).is_some_and(|s| s != *schema))
        .map(|(name, _)| name.clone())
        .collect();
    for name in &renamed {
        if let Some(schema) = requests.remove(name) {
            requests.insert(format!("{name}Input"), schema);
        }
    }
    let rename = |value: &mut Value| rename_refs(value, &renamed);
    for schema in requests.values_mut() {
        rename(schema);
    }
    for item in paths.values_mut() {
        for operation in item.as_object_mut().into_iter().flat_map(|o| o.values_mut()) {
            if let Some(body) = operation.get_mut("requestBody") {
                rename(body);
            }
        }
    }
    schemas.extend(requests);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Skybridge admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The controller's admin API: JSON over HTTP/1.1 with a bearer token \
                (the admin token file). Errors are `{\"error\": \"…\"}` with a fitting status.",
        },
        "servers": [{ "url": "/" }],
        "security": [{ "token": [] }],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": { "token": { "type": "http", "scheme": "bearer" } },
        },
    })
}

fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
}

/// `get-v1-bindings-id`: unique per route, stable, readable.
fn operation_id(route: &Route) -> String {
    let mut id = route.method.as_str().to_ascii_lowercase();
    for segment in route.path.split('/').filter(|s| !s.is_empty()) {
        id.push('-');
        id.extend(
            segment
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
                .map(|c| if c == '.' { '-' } else { c }),
        );
    }
    id
}

fn rename_refs(value: &mut Value, renamed: &[String]) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get_mut("$ref")
                && let Some(name) = target.strip_prefix(&format!("#{COMPONENTS}/"))
                && renamed.iter().any(|r| r == name)
            {
                *target = format!("#{COMPONENTS}/{name}Input");
            }
            map.values_mut().for_each(|v| rename_refs(v, renamed));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rename_refs(v, renamed)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_route_is_documented_and_every_reference_resolves() {
        let routes = super::super::routes::routes();
        let doc = document(&routes);
        for route in &routes {
            let op = &doc["paths"][route.path][route.method.as_str().to_ascii_lowercase()];
            assert!(op.is_object(), "{} {} is not in the document", route.method, route.path);
            assert!(op["responses"]["500"].is_object());
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 20, "the document references its schemas");
        for r in all {
            let name =
                r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{r} points elsewhere"));
            assert!(doc["components"]["schemas"][name].is_object(), "{r} does not resolve");
        }
        let ids: std::collections::BTreeSet<_> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|i| i.as_object().unwrap().values())
            .map(|o| o["operationId"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(ids.len(), routes.len(), "operation ids are unique");
        // Success statuses other than 200, and the answers that are not JSON.
        for (path, method, status) in [
            ("/v1/decisions", "post", "201"),
            ("/v1/bindings", "post", "201"),
            ("/v1/accounts", "post", "201"),
            ("/v1/platforms/{platform}/refresh", "post", "202"),
        ] {
            assert!(
                doc["paths"][path][method]["responses"][status]["content"]["application/json"].is_object(),
                "{method} {path}"
            );
        }
        assert!(doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]["text/plain"].is_object());
        assert!(
            doc["paths"]["/v1/events"]["get"]["responses"]["200"]["content"]["text/event-stream"].is_object()
        );
    }

    /// A type read with a default and written whole: its two shapes differ.
    #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    struct Both {
        #[serde(default)]
        a: u32,
    }

    #[test]
    fn a_request_shape_that_differs_from_the_answer_shape_gets_its_own_component() {
        fn both(generator: &mut SchemaGenerator) -> schemars::Schema {
            generator.subschema_for::<Both>()
        }
        let route = super::super::routes::Route {
            method: http::Method::PUT,
            path: "/both",
            tag: "t",
            summary: "s",
            token: true,
            query: &[],
            request: Some(both),
            answer: Answer::Json(200, both),
            errors: &[],
            deprecated: false,
        };
        let doc = document(&[route]);
        let op = &doc["paths"]["/both"]["put"];
        let read = &op["requestBody"]["content"]["application/json"]["schema"]["$ref"];
        let written = &op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"];
        assert_eq!(
            (read.as_str(), written.as_str()),
            (Some("#/components/schemas/BothInput"), Some("#/components/schemas/Both"))
        );
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["Both"]["required"], json!(["a"]), "an answer always has `a`");
        assert!(schemas["BothInput"].get("required").is_none(), "a request may leave `a` out");
    }
}
