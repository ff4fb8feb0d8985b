//! `gcs-adapter` — Google Cloud Storage: bearer-token session translation and bucket discovery
//! over the GCS JSON API.
//!
//! **`rewrite-request`** injects the mapping's OAuth 2.0 access token (the credentials'
//! `token` attribute when the host has one, else the mapping's secret) as
//! `Authorization: Bearer …`, replacing whatever the client sent (clients authenticate to the
//! binding with HTTP Basic and their Skybridge account), and fixes `Host` when the mapping
//! has a `host` attribute.
//!
//! **Discovery** lists the project's buckets — `GET /storage/v1/b?project=P&maxResults=100`,
//! following `nextPageToken` — each an `object-store` keyed by its resource name
//! `projects/_/buckets/NAME`, with its location (as the region) and storage class. The
//! project is the context's `project`.

use skybridge_plugin_sdk::{
    Adapter, CloudRequest, CloudResponse, DiscoveredService, DiscoveryStep, RequestHead, ServiceRecord,
    TargetCredentials, export_adapter, percent_encode,
};

/// The GCS adapter.
pub struct GcsAdapter;

/// Buckets per page asked for.
const PAGE: u32 = 100;

impl Adapter for GcsAdapter {
    const CLOUD_KIND: &'static str = "gcp";

    fn parse_service_info(_document: &[u8], content_type: &str) -> Result<Vec<ServiceRecord>, String> {
        Err(format!("gcs-adapter reads services through discovery, not documents (got {content_type})"))
    }

    fn rewrite_request(mut head: RequestHead, creds: &TargetCredentials) -> Result<RequestHead, String> {
        let token = creds.attribute("token").unwrap_or(&creds.secret);
        if token.is_empty() {
            return Err("no access token: the mapping's secret is empty".into());
        }
        head.set_header("authorization", format!("Bearer {token}"));
        if let Some(host) = creds.attribute("host") {
            head.set_header("host", host);
        }
        Ok(head)
    }

    fn start_discovery(context: &[(String, String)]) -> Result<DiscoveryStep, String> {
        Ok(DiscoveryStep::fetch(list(project(context)?, ""), String::new()))
    }

    fn continue_discovery(
        context: &[(String, String)],
        _cursor: &str,
        response: &CloudResponse,
    ) -> Result<DiscoveryStep, String> {
        let project = project(context)?;
        let endpoint =
            get(context, "endpoint").unwrap_or("https://storage.googleapis.com").trim_end_matches('/');
        let what = "GCS buckets.list";
        let body = response.success(what)?.text(what)?;
        let doc: serde_json::Value =
            serde_json::from_str(body).map_err(|e| format!("{what}: not JSON: {e}"))?;
        let mut found = Vec::new();
        for bucket in doc["items"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let name = bucket["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .ok_or(format!("{what}: a bucket without a name"))?;
            let attributes = [("project", Some(project)), ("storage-class", bucket["storageClass"].as_str())]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned())))
                .collect();
            found.push(DiscoveredService {
                native_id: format!("projects/_/buckets/{name}"),
                service: ServiceRecord {
                    kind: "object-store".into(),
                    name: name.to_owned(),
                    endpoint: format!("{endpoint}/storage/v1/b/{name}"),
                    region: bucket["location"].as_str().map(str::to_ascii_lowercase),
                    attributes,
                },
            });
        }
        let step = match doc["nextPageToken"].as_str() {
            Some(token) if !token.is_empty() => DiscoveryStep::fetch(list(project, token), String::new()),
            _ => DiscoveryStep::done(),
        };
        Ok(step.with_services(found))
    }
}

export_adapter!(GcsAdapter);

fn get<'a>(context: &'a [(String, String)], key: &str) -> Option<&'a str> {
    context.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

fn project(context: &[(String, String)]) -> Result<&str, String> {
    get(context, "project")
        .ok_or_else(|| "gcs-adapter: no `project` in the site's cloud attributes".to_owned())
}

fn list(project: &str, page_token: &str) -> CloudRequest {
    let mut query = format!("project={}&maxResults={PAGE}", percent_encode(project));
    if !page_token.is_empty() {
        query.push_str(&format!("&pageToken={}", percent_encode(page_token)));
    }
    CloudRequest::get("/storage/v1/b", query).header("accept", "application/json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use skybridge_plugin_sdk::testing;

    #[test]
    fn lists_buckets_across_pages() {
        let context = [("project", "lab proj"), ("endpoint", "http://127.0.0.1:4443")];
        let found = testing::discover::<GcsAdapter>(&context, 5, |r| {
            let body = match r.query.split("pageToken=").nth(1) {
                None => {
                    assert_eq!(r.query, "project=lab%20proj&maxResults=100");
                    r#"{"kind":"storage#buckets","items":[{"name":"a","location":"US-EAST1","storageClass":"STANDARD"}],"nextPageToken":"t/2"}"#
                }
                Some("t%2F2") => r#"{"kind":"storage#buckets","items":[{"name":"b"}]}"#,
                other => panic!("unexpected page {other:?}"),
            };
            CloudResponse { status: 200, headers: vec![], body: body.as_bytes().to_vec() }
        })
        .unwrap()
        .services;
        assert_eq!(
            found.iter().map(|s| s.native_id.as_str()).collect::<Vec<_>>(),
            ["projects/_/buckets/a", "projects/_/buckets/b"]
        );
        let a = &found[0].service;
        assert_eq!(
            (a.endpoint.as_str(), a.region.as_deref()),
            ("http://127.0.0.1:4443/storage/v1/b/a", Some("us-east1"))
        );
        assert!(GcsAdapter::start_discovery(&[]).unwrap_err().contains("project"));
    }

    #[test]
    fn injects_the_access_token_replacing_the_client_s_authorization() {
        let head = RequestHead {
            method: "GET".into(),
            path: "/storage/v1/b/a/o".into(),
            headers: vec![("authorization".into(), "Basic YWNtZTpzZWNyZXQ=".into())],
            ..Default::default()
        };
        let creds = TargetCredentials {
            platform: "gcp".into(),
            principal: "sa@lab.iam".into(),
            secret: "ya29.token".into(),
            attributes: vec![("host".into(), "storage.googleapis.com".into())],
        };
        let out = testing::rewrite_request::<GcsAdapter>(head, &creds).unwrap();
        assert_eq!(out.header("authorization"), Some("Bearer ya29.token"));
        assert_eq!(out.header("host"), Some("storage.googleapis.com"));
        assert_eq!(out.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("authorization")).count(), 1);
        let empty = TargetCredentials { secret: String::new(), ..creds };
        assert!(testing::rewrite_request::<GcsAdapter>(RequestHead::default(), &empty).is_err());
    }
}
