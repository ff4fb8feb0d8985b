//! Discovery: the Blob containers of the site's storage account (List Containers, following
//! `NextMarker`), each an `object-store`, keyed by its URL.
//!
//! The account is the context's `account`, else the site's `principal`. Requests address it
//! path-style (`/ACCOUNT/?comp=list`, as Azurite and other emulators serve it) when the
//! context says `url-style = path` or the endpoint's host is an IP address or `localhost`, and
//! host-style (`https://ACCOUNT.blob.core.windows.net/?comp=list`) otherwise.

use skybridge_plugin_sdk::xml;
use skybridge_plugin_sdk::{
    CloudRequest, CloudResponse, DiscoveredService, DiscoveryStep, ServiceRecord, percent_encode,
};

/// Containers per page.
const PAGE: u32 = 100;
/// The Blob service API version discovery speaks.
const VERSION: &str = "2021-08-06";

fn get<'a>(context: &'a [(String, String)], key: &str) -> Option<&'a str> {
    context.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

/// The storage account, and the URL of its Blob service.
fn account(context: &[(String, String)]) -> Result<(String, String, bool), String> {
    let account = get(context, "account")
        .or(get(context, "principal"))
        .ok_or("azure-adapter: no storage account (set the site's principal or `account`)")?;
    let endpoint = get(context, "endpoint").unwrap_or("").trim_end_matches('/');
    let host = endpoint.split("://").nth(1).unwrap_or(endpoint).split(['/', ':']).next().unwrap_or("");
    let path_style = match get(context, "url-style") {
        Some("path") => true,
        Some("host") => false,
        Some(other) => return Err(format!("azure-adapter: url-style `{other}`: expected `path` or `host`")),
        None => {
            host == "localhost" || host.starts_with(|c: char| c.is_ascii_digit()) || host.starts_with('[')
        }
    };
    let service = if path_style { format!("{endpoint}/{account}") } else { endpoint.to_owned() };
    Ok((account.to_owned(), service, path_style))
}

fn list(account: &str, path_style: bool, marker: &str) -> CloudRequest {
    let path = if path_style { format!("/{account}/") } else { "/".to_owned() };
    let mut query = format!("comp=list&maxresults={PAGE}");
    if !marker.is_empty() {
        query.push_str("&marker=");
        query.push_str(&percent_encode(marker));
    }
    CloudRequest::get(path, query).header("x-ms-version", VERSION)
}

/// The first page.
pub fn start(context: &[(String, String)]) -> Result<DiscoveryStep, String> {
    let (account, _, path_style) = account(context)?;
    Ok(DiscoveryStep::fetch(list(&account, path_style, ""), String::new()))
}

/// One page read; the next, if any.
pub fn next(
    context: &[(String, String)],
    _cursor: &str,
    response: &CloudResponse,
) -> Result<DiscoveryStep, String> {
    let (account, service, path_style) = account(context)?;
    let what = "Azure List Containers";
    let body = response.success(what)?.text(what)?;
    let mut found = Vec::new();
    for container in xml::records(body, "Containers/Container")? {
        let name = container
            .get("Name")
            .filter(|n| !n.is_empty())
            .ok_or(format!("{what}: a container without a Name"))?;
        let url = format!("{service}/{name}");
        let attributes = [
            ("account", Some(account.as_str())),
            ("last-modified", container.get("Properties/Last-Modified")),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned())))
        .collect();
        found.push(DiscoveredService {
            native_id: url.clone(),
            service: ServiceRecord {
                kind: "object-store".into(),
                name: name.to_owned(),
                endpoint: url,
                region: get(context, "region").map(str::to_owned),
                attributes,
            },
        });
    }
    let step = match xml::text(body, "EnumerationResults/NextMarker")? {
        Some(marker) if !marker.is_empty() => {
            DiscoveryStep::fetch(list(&account, path_style, &marker), String::new())
        }
        _ => DiscoveryStep::done(),
    };
    Ok(step.with_services(found))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AzureAdapter;
    use skybridge_plugin_sdk::testing;

    fn page(names: &[&str], next: &str) -> CloudResponse {
        let containers: String = names
            .iter()
            .map(|n| format!("<Container><Name>{n}</Name><Properties><Last-Modified>Fri</Last-Modified></Properties></Container>"))
            .collect();
        let body = format!(
            "<?xml version=\"1.0\"?><EnumerationResults ServiceEndpoint=\"x\"><MaxResults>2</MaxResults>\
             <Containers>{containers}</Containers><NextMarker>{next}</NextMarker></EnumerationResults>"
        );
        CloudResponse { status: 200, headers: vec![], body: body.into_bytes() }
    }

    #[test]
    fn lists_every_page_of_containers_path_style_for_emulators() {
        let context = [("principal", "devstoreaccount1"), ("endpoint", "http://127.0.0.1:10000")];
        let mut asked = vec![];
        let found = testing::discover::<AzureAdapter>(&context, 10, |r| {
            asked.push(format!("{} {}?{}", r.method, r.path, r.query));
            assert!(r.headers.iter().any(|(k, _)| k == "x-ms-version"));
            match r.query.split("marker=").nth(1) {
                None => page(&["a", "b"], "/devstoreaccount1/c"),
                Some("%2Fdevstoreaccount1%2Fc") => page(&["c"], ""),
                other => panic!("unexpected marker {other:?}"),
            }
        })
        .unwrap()
        .services;
        assert_eq!(asked[0], "GET /devstoreaccount1/?comp=list&maxresults=100");
        let ids: Vec<&str> = found.iter().map(|s| s.native_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "http://127.0.0.1:10000/devstoreaccount1/a",
                "http://127.0.0.1:10000/devstoreaccount1/b",
                "http://127.0.0.1:10000/devstoreaccount1/c"
            ]
        );
        assert_eq!(found[0].service.kind, "object-store");
    }

    #[test]
    fn host_style_for_real_endpoints_and_refusals_say_why() {
        let context = [("principal", "acct"), ("endpoint", "http://acct.blob.example.net")];
        let (_, service, path_style) = account(&context.map(|(k, v)| (k.to_owned(), v.to_owned()))).unwrap();
        assert_eq!((service.as_str(), path_style), ("http://acct.blob.example.net", false));
        let refused = CloudResponse { status: 403, headers: vec![], body: b"AuthorizationFailure".to_vec() };
        let ctx = [("principal".to_owned(), "a".to_owned())];
        assert!(next(&ctx, "", &refused).unwrap_err().contains("403"));
        assert!(start(&[]).unwrap_err().contains("no storage account"));
    }
}
