//! Discovery: what an AWS account has, read from AWS's own APIs, one request at a time.
//!
//! The conversation (each request signed by the site with its own key, for the `service`
//! named in `signing`; the query APIs are POSTed as forms, as AWS's SDKs do):
//!
//! 1. STS `GetCallerIdentity` — the account id, carried on every record;
//! 2. S3 `ListBuckets`, following `ContinuationToken` — one `object-store` per bucket;
//! 3. EC2 `DescribeRegions` — one `compute` record per region (its EC2 endpoint);
//! 4. EC2 `DescribeInstances` in each of the site's regions (`regions`, else `region`),
//!    100 per page following `nextToken` — one `compute` record per instance not terminated;
//!    terminated ones (still listed for a while) are reported gone, withdrawn at once;
//! 5. only when the context sets `discover-instance-types = true`: EC2
//!    `DescribeInstanceTypes` in the site's region, following `nextToken`.
//!
//! Native ids are AWS's own keys: ARNs for buckets and instances; `ec2-region:NAME` and
//! `ec2-instance-type:REGION:TYPE` for what has no ARN. The cursor is the stage, the account,
//! the region index and the page token, one per line.

use skybridge_plugin_sdk::xml::{self, Fields};
use skybridge_plugin_sdk::{
    CloudRequest, CloudResponse, DiscoveredService, DiscoveryStep, ServiceRecord, percent_encode,
};

const EC2_VERSION: &str = "2016-11-15";
const PAGE: u32 = 100;

/// What the site told us.
struct Context<'a> {
    pairs: &'a [(String, String)],
}

impl<'a> Context<'a> {
    fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    fn region(&self) -> &'a str {
        self.get("region").unwrap_or("us-east-1")
    }

    /// The regions whose instances are listed.
    fn regions(&self) -> Vec<&'a str> {
        match self.get("regions") {
            Some(list) => list.split(',').map(str::trim).filter(|r| !r.is_empty()).collect(),
            None => vec![self.region()],
        }
    }

    /// The cloud endpoint's URL as the site reaches it, for records' endpoints.
    fn endpoint(&self) -> &'a str {
        self.get("endpoint").unwrap_or("https://s3.amazonaws.com").trim_end_matches('/')
    }
}

/// Where discovery stands between requests.
#[derive(Debug, PartialEq)]
struct Cursor {
    stage: Stage,
    account: String,
    region: usize,
    token: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    Identity,
    Buckets,
    Regions,
    Instances,
    InstanceTypes,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Identity => "identity",
            Stage::Buckets => "buckets",
            Stage::Regions => "regions",
            Stage::Instances => "instances",
            Stage::InstanceTypes => "instance-types",
        }
    }
}

impl Cursor {
    fn encode(&self) -> String {
        format!("{}\n{}\n{}\n{}", self.stage.name(), self.account, self.region, self.token)
    }

    fn decode(s: &str) -> Result<Cursor, String> {
        let mut parts = s.split('\n');
        let bad = || format!("aws-adapter: a discovery cursor it did not write: {s:?}");
        let stage = match parts.next().ok_or_else(bad)? {
            "identity" => Stage::Identity,
            "buckets" => Stage::Buckets,
            "regions" => Stage::Regions,
            "instances" => Stage::Instances,
            "instance-types" => Stage::InstanceTypes,
            _ => return Err(bad()),
        };
        let account = parts.next().ok_or_else(bad)?.to_owned();
        let region = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let token = parts.next().ok_or_else(bad)?.to_owned();
        Ok(Cursor { stage, account, region, token })
    }
}

/// The first request: who are we?
pub fn start(_context: &[(String, String)]) -> Result<DiscoveryStep, String> {
    let request =
        CloudRequest::post_form("/", "Action=GetCallerIdentity&Version=2011-06-15").signing("service", "sts");
    let cursor = Cursor { stage: Stage::Identity, account: String::new(), region: 0, token: String::new() };
    Ok(DiscoveryStep::fetch(request, cursor.encode()))
}

/// Read one answer; the next step.
pub fn next(
    context: &[(String, String)],
    cursor: &str,
    response: &CloudResponse,
) -> Result<DiscoveryStep, String> {
    let context = Context { pairs: context };
    let mut cursor = Cursor::decode(cursor)?;
    let what = match cursor.stage {
        Stage::Identity => "STS GetCallerIdentity",
        Stage::Buckets => "S3 ListBuckets",
        Stage::Regions => "EC2 DescribeRegions",
        Stage::Instances => "EC2 DescribeInstances",
        Stage::InstanceTypes => "EC2 DescribeInstanceTypes",
    };
    let body = response.success(what)?.text(what)?;
    let (services, gone) = match cursor.stage {
        Stage::Identity => {
            cursor.account = xml::text(body, "GetCallerIdentityResult/Account")?
                .ok_or("STS GetCallerIdentity: the answer names no Account")?;
            cursor.token.clear();
            return Ok(after(&context, Stage::Identity, cursor));
        }
        Stage::Buckets => {
            let found = buckets(&context, &cursor.account, body)?;
            match xml::text(body, "ListAllMyBucketsResult/ContinuationToken")? {
                Some(token) if !token.is_empty() => {
                    cursor.token = token;
                    return Ok(DiscoveryStep::fetch(list_buckets(&cursor.token), cursor.encode())
                        .with_services(found));
                }
                _ => (found, Vec::new()),
            }
        }
        Stage::Regions => (regions(&cursor.account, body)?, Vec::new()),
        Stage::Instances => {
            let region = context.regions().get(cursor.region).copied().unwrap_or(context.region());
            let (found, gone) = instances(region, &cursor.account, body)?;
            if let Some(token) =
                xml::text(body, "DescribeInstancesResponse/nextToken")?.filter(|t| !t.is_empty())
            {
                cursor.token = token;
                let request = describe_instances(region, &cursor.token);
                return Ok(DiscoveryStep::fetch(request, cursor.encode())
                    .with_services(found)
                    .with_gone(gone));
            }
            (found, gone)
        }
        Stage::InstanceTypes => {
            let region = context.region();
            let found = instance_types(region, body)?;
            if let Some(token) =
                xml::text(body, "DescribeInstanceTypesResponse/nextToken")?.filter(|t| !t.is_empty())
            {
                cursor.token = token;
                let request = describe_instance_types(region, &cursor.token);
                return Ok(DiscoveryStep::fetch(request, cursor.encode()).with_services(found));
            }
            (found, Vec::new())
        }
    };
    let stage = cursor.stage;
    cursor.token.clear();
    Ok(after(&context, stage, cursor).with_services(services).with_gone(gone))
}

/// The step that follows a finished `stage`.
fn after(context: &Context<'_>, stage: Stage, mut cursor: Cursor) -> DiscoveryStep {
    let regions = context.regions();
    let (stage, request) = match stage {
        Stage::Identity => (Stage::Buckets, list_buckets("")),
        Stage::Buckets => (
            Stage::Regions,
            CloudRequest::post_form("/", format!("Action=DescribeRegions&Version={EC2_VERSION}"))
                .signing("service", "ec2"),
        ),
        Stage::Regions if !regions.is_empty() => {
            cursor.region = 0;
            (Stage::Instances, describe_instances(regions[0], ""))
        }
        Stage::Instances if cursor.region + 1 < regions.len() => {
            cursor.region += 1;
            (Stage::Instances, describe_instances(regions[cursor.region], ""))
        }
        Stage::Regions | Stage::Instances if context.get("discover-instance-types") == Some("true") => {
            (Stage::InstanceTypes, describe_instance_types(context.region(), ""))
        }
        _ => return DiscoveryStep::done(),
    };
    cursor.stage = stage;
    DiscoveryStep::fetch(request, cursor.encode())
}

fn list_buckets(token: &str) -> CloudRequest {
    let query = if token.is_empty() {
        String::new()
    } else {
        format!("continuation-token={}", percent_encode(token))
    };
    CloudRequest::get("/", query).signing("service", "s3")
}

fn paged_ec2(action: &str, region: &str, token: &str) -> CloudRequest {
    let mut form = format!("Action={action}&Version={EC2_VERSION}&MaxResults={PAGE}");
    if !token.is_empty() {
        form.push_str(&format!("&NextToken={}", percent_encode(token)));
    }
    CloudRequest::post_form("/", form).signing("service", "ec2").signing("region", region)
}

fn describe_instances(region: &str, token: &str) -> CloudRequest {
    paged_ec2("DescribeInstances", region, token)
}

fn describe_instance_types(region: &str, token: &str) -> CloudRequest {
    paged_ec2("DescribeInstanceTypes", region, token)
}

fn service(
    native_id: String,
    kind: &str,
    name: &str,
    endpoint: String,
    region: Option<&str>,
    attributes: Vec<(&str, Option<&str>)>,
) -> DiscoveredService {
    DiscoveredService {
        native_id,
        service: ServiceRecord {
            kind: kind.to_owned(),
            name: name.to_owned(),
            endpoint,
            region: region.map(str::to_owned),
            attributes: attributes
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned())))
                .collect(),
        },
    }
}

fn required<'a>(fields: &'a Fields, path: &str, what: &str) -> Result<&'a str, String> {
    fields.get(path).filter(|v| !v.is_empty()).ok_or_else(|| format!("{what}: an entry without `{path}`"))
}

fn buckets(context: &Context<'_>, account: &str, body: &str) -> Result<Vec<DiscoveredService>, String> {
    let mut out = Vec::new();
    for bucket in xml::records(body, "Buckets/Bucket")? {
        let name = required(&bucket, "Name", "S3 ListBuckets")?;
        let region = bucket.get("BucketRegion").unwrap_or(context.region());
        out.push(service(
            format!("arn:aws:s3:::{name}"),
            "object-store",
            name,
            format!("{}/{name}", context.endpoint()),
            Some(region),
            vec![("account", Some(account)), ("created", bucket.get("CreationDate"))],
        ));
    }
    Ok(out)
}

fn regions(account: &str, body: &str) -> Result<Vec<DiscoveredService>, String> {
    let mut out = Vec::new();
    for region in xml::records(body, "regionInfo/item")? {
        let name = required(&region, "regionName", "EC2 DescribeRegions")?;
        let endpoint = region.get("regionEndpoint").unwrap_or_default();
        out.push(service(
            format!("ec2-region:{name}"),
            "compute",
            name,
            format!("https://{endpoint}"),
            Some(name),
            vec![("account", Some(account)), ("opt-in-status", region.get("optInStatus"))],
        ));
    }
    Ok(out)
}

/// The instances of a page, and the native ids of those terminated (EC2 lists them for a
/// while after; the cloud itself says they are gone).
fn instances(
    region: &str,
    account: &str,
    body: &str,
) -> Result<(Vec<DiscoveredService>, Vec<String>), String> {
    let mut out = Vec::new();
    let mut gone = Vec::new();
    for instance in xml::records(body, "reservationSet/item/instancesSet/item")? {
        let id = required(&instance, "instanceId", "EC2 DescribeInstances")?;
        let native_id = format!("arn:aws:ec2:{region}:{account}:instance/{id}");
        let state = instance.get("instanceState/name");
        if state == Some("terminated") {
            gone.push(native_id);
            continue;
        }
        let address = instance.get("privateIpAddress").or(instance.get("privateDnsName")).unwrap_or_default();
        out.push(service(
            native_id,
            "compute",
            id,
            address.to_owned(),
            Some(region),
            vec![
                ("account", Some(account)),
                ("instance-type", instance.get("instanceType")),
                ("state", state),
                ("availability-zone", instance.get("placement/availabilityZone")),
            ],
        ));
    }
    Ok((out, gone))
}

fn instance_types(region: &str, body: &str) -> Result<Vec<DiscoveredService>, String> {
    let mut out = Vec::new();
    for t in xml::records(body, "instanceTypeSet/item")? {
        let name = required(&t, "instanceType", "EC2 DescribeInstanceTypes")?;
        out.push(service(
            format!("ec2-instance-type:{region}:{name}"),
            "compute",
            name,
            String::new(),
            Some(region),
            vec![
                ("vcpus", t.get("vCpuInfo/defaultVCpus")),
                ("memory-mib", t.get("memoryInfo/sizeInMiB")),
                ("current-generation", t.get("currentGeneration")),
            ],
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AwsAdapter;
    use skybridge_plugin_sdk::testing;

    fn ok(body: &str) -> CloudResponse {
        CloudResponse { status: 200, headers: vec![], body: body.as_bytes().to_vec() }
    }

    fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
        query.split('&').find_map(|p| p.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
    }

    /// A fake AWS answering like moto does, with two bucket pages and two instance pages.
    fn cloud(r: &CloudRequest) -> CloudResponse {
        let service = r.signing.iter().find(|(k, _)| k == "service").map(|(_, v)| v.as_str());
        let form = String::from_utf8(r.body.clone()).unwrap();
        let action = param(&form, "Action");
        match (service, action) {
            (Some("sts"), Some("GetCallerIdentity")) => {
                ok("<GetCallerIdentityResponse><GetCallerIdentityResult><Account>123456789012</Account>\
                 </GetCallerIdentityResult></GetCallerIdentityResponse>")
            }
            (Some("s3"), None) if r.query.is_empty() => {
                ok("<ListAllMyBucketsResult><Buckets><Bucket><Name>alpha</Name></Bucket></Buckets>\
                 <ContinuationToken>a/b+c</ContinuationToken></ListAllMyBucketsResult>")
            }
            (Some("s3"), None) => {
                assert_eq!(r.query, "continuation-token=a%2Fb%2Bc");
                ok(
                    "<ListAllMyBucketsResult><Buckets><Bucket><Name>beta</Name></Bucket></Buckets></ListAllMyBucketsResult>",
                )
            }
            (Some("ec2"), Some("DescribeRegions")) => {
                ok("<DescribeRegionsResponse><regionInfo><item><regionName>eu-west-1</regionName>\
                 <regionEndpoint>ec2.eu-west-1.amazonaws.com</regionEndpoint></item></regionInfo></DescribeRegionsResponse>")
            }
            (Some("ec2"), Some("DescribeInstances")) => match param(&form, "NextToken") {
                None => ok("<DescribeInstancesResponse><reservationSet><item><instancesSet>\
                     <item><instanceId>i-1</instanceId><instanceState><name>running</name></instanceState>\
                     <privateIpAddress>10.0.0.1</privateIpAddress><groupSet><item><groupId>sg</groupId></item></groupSet></item>\
                     <item><instanceId>i-2</instanceId><instanceState><name>terminated</name></instanceState></item>\
                     </instancesSet></item></reservationSet><nextToken>p2</nextToken></DescribeInstancesResponse>"),
                Some("p2") => ok("<DescribeInstancesResponse><reservationSet><item><instancesSet>\
                     <item><instanceId>i-3</instanceId></item></instancesSet></item></reservationSet></DescribeInstancesResponse>"),
                other => panic!("unexpected token {other:?}"),
            },
            other => panic!("unexpected request {other:?}: {r:?}"),
        }
    }

    #[test]
    fn discovers_the_account_buckets_regions_and_instances_across_pages() {
        let discovery = testing::discover::<AwsAdapter>(
            &[("region", "us-east-1"), ("endpoint", "http://127.0.0.1:5000/")],
            20,
            cloud,
        )
        .unwrap();
        assert_eq!(discovery.gone, ["arn:aws:ec2:us-east-1:123456789012:instance/i-2"], "terminated: gone");
        let found = discovery.services;
        let ids: Vec<&str> = found.iter().map(|s| s.native_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "arn:aws:s3:::alpha",
                "arn:aws:s3:::beta",
                "ec2-region:eu-west-1",
                "arn:aws:ec2:us-east-1:123456789012:instance/i-1",
                "arn:aws:ec2:us-east-1:123456789012:instance/i-3",
            ]
        );
        let alpha = &found[0].service;
        assert_eq!((alpha.kind.as_str(), alpha.name.as_str()), ("object-store", "alpha"));
        assert_eq!(alpha.endpoint, "http://127.0.0.1:5000/alpha");
        assert!(alpha.attributes.contains(&("account".into(), "123456789012".into())));
        let i1 = &found[3].service;
        assert_eq!(i1.endpoint, "10.0.0.1");
        assert!(i1.attributes.contains(&("state".into(), "running".into())));
    }

    #[test]
    fn a_refusal_or_a_foreign_cursor_ends_discovery_with_a_reason() {
        let refused = CloudResponse {
            status: 403,
            headers: vec![],
            body: b"<Error>SignatureDoesNotMatch</Error>".to_vec(),
        };
        let e = next(&[], &start(&[]).unwrap().cursor, &refused).unwrap_err();
        assert!(
            e.contains("STS GetCallerIdentity") && e.contains("403") && e.contains("SignatureDoesNotMatch"),
            "{e}"
        );
        assert!(next(&[], "teleport\n\n0\n", &ok("")).unwrap_err().contains("cursor"));
        let e = next(&[], "buckets\n1\n0\n", &ok("<ListAllMyBucketsResult><Buckets><Bucket>")).unwrap_err();
        assert!(e.contains("malformed XML"), "{e}");
    }
}
