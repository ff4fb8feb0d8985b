//! Discovery: the services and endpoints of the site's OpenStack cloud, from Keystone's
//! `GET /v3/auth/catalog` with the site's own token (a member-scoped one will do; the admin
//! API's `/v3/services` would need more). One record per endpoint: its id is Keystone's
//! endpoint id, its kind the service type (the catalog's taxonomy is OpenStack's service
//! types), its name the service's name, with the region and the interface (public, internal,
//! admin).

use skybridge_plugin_sdk::{CloudRequest, CloudResponse, DiscoveredService, DiscoveryStep, ServiceRecord};

/// The one request.
pub fn start(_context: &[(String, String)]) -> Result<DiscoveryStep, String> {
    let request = CloudRequest::get("/v3/auth/catalog", "").header("accept", "application/json");
    Ok(DiscoveryStep::fetch(request, String::new()))
}

/// Read Keystone's catalog.
pub fn next(
    _context: &[(String, String)],
    _cursor: &str,
    response: &CloudResponse,
) -> Result<DiscoveryStep, String> {
    let what = "Keystone's catalog";
    let body = response.success(what)?.text(what)?;
    let doc: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("{what} is not JSON: {e}"))?;
    let services = doc["catalog"].as_array().ok_or(format!("{what} has no `catalog` list"))?;
    let mut found = Vec::new();
    for service in services {
        let kind = service["type"].as_str().ok_or(format!("{what}: a service without a type"))?;
        let name = service["name"].as_str().filter(|n| !n.is_empty()).unwrap_or(kind);
        let service_id = service["id"].as_str().unwrap_or_default();
        for endpoint in service["endpoints"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let id =
                endpoint["id"].as_str().ok_or(format!("{what}: an endpoint of `{name}` without an id"))?;
            let region = endpoint["region_id"].as_str().or(endpoint["region"].as_str());
            let attributes = [
                ("interface", endpoint["interface"].as_str()),
                ("service-id", Some(service_id)),
                ("service-type", Some(kind)),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| (k.to_owned(), v.to_owned())))
            .collect();
            found.push(DiscoveredService {
                native_id: id.to_owned(),
                service: ServiceRecord {
                    kind: kind.to_owned(),
                    name: name.to_owned(),
                    endpoint: endpoint["url"].as_str().unwrap_or_default().to_owned(),
                    region: region.map(str::to_owned),
                    attributes,
                },
            });
        }
    }
    Ok(DiscoveryStep::done().with_services(found))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OpenStackAdapter;
    use skybridge_plugin_sdk::testing;

    #[test]
    fn one_record_per_endpoint_keyed_by_keystone_s_id() {
        let catalog = r#"{"catalog": [
            {"id": "s1", "type": "identity", "name": "keystone", "endpoints": [
                {"id": "e1", "interface": "public", "region_id": "RegionOne", "region": "RegionOne", "url": "http://k:5000/v3"},
                {"id": "e2", "interface": "internal", "region_id": "RegionOne", "url": "http://k:5001/v3"}]},
            {"id": "s2", "type": "volumev3", "name": "cinder", "endpoints": []}],
            "links": {}}"#;
        let found = testing::discover::<OpenStackAdapter>(&[], 3, |r| {
            assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/v3/auth/catalog"));
            CloudResponse { status: 200, headers: vec![], body: catalog.as_bytes().to_vec() }
        })
        .unwrap()
        .services;
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].native_id, "e1");
        let s = &found[0].service;
        assert_eq!(
            (s.kind.as_str(), s.name.as_str(), s.endpoint.as_str()),
            ("identity", "keystone", "http://k:5000/v3")
        );
        assert_eq!(s.region.as_deref(), Some("RegionOne"));
        assert!(s.attributes.contains(&("interface".into(), "public".into())));
        let bad = CloudResponse { status: 200, headers: vec![], body: b"{\"catalog\": 3}".to_vec() };
        assert!(next(&[], "", &bad).unwrap_err().contains("no `catalog` list"));
        let refused = CloudResponse { status: 401, headers: vec![], body: b"{}".to_vec() };
        assert!(next(&[], "", &refused).unwrap_err().contains("401"));
    }
}
