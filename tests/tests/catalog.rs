//! Discovery and each platform's inventory against real clouds: sites run their adapter
//! plugin against the cloud's own API with the site's own credentials, report what they find,
//! and the controller keeps each platform's inventory by the cloud's native ids.
//!
//! The peers (moto, boto3) are installed by `cargo xtask test`.

use std::time::{Duration, Instant};

use skybridge_gateway::admin::AdminClient;
use skybridge_gateway::admin::api::{Authorization, InventoryRecord, RefreshRecord};
use skybridge_gateway::catalog::{
    AuthorizationState, CapabilityInfo, Outcome, Presence, ServiceInfo, Trigger,
};
use skybridge_gateway::config::{CloudConfig, CloudEndpoint, PluginFile};
use skybridge_gateway::mesh::messages::Control;
use skybridge_gateway::mesh::stream::Framed;
use skybridge_gateway::testkit::netem::LinkParams;
use skybridge_tests::mesh::{TestMesh, Topology, policy};
use skybridge_tests::peers::{Azurite, gcs, keystone, moto, python_json};
use skybridge_tests::plugin;

/// A site's `[cloud]`: `adapter` (a plugin under `target/plugins`) for the API at `url`, as
/// `principal` with the secret in `secret_file`, with `attributes`.
fn cloud(
    adapter: std::path::PathBuf,
    url: String,
    principal: &str,
    secret_file: Option<std::path::PathBuf>,
    attributes: &[(&str, &str)],
) -> CloudConfig {
    CloudConfig {
        endpoints: vec![CloudEndpoint { name: "api".into(), url }],
        ca_file: None,
        principal: principal.into(),
        secret_file,
        attributes: attributes.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        adapter: PluginFile { path: adapter, config: Default::default(), limits: Default::default() },
        report_every_s: 3600,
        discovery: Default::default(),
    }
}

/// A site's `[cloud]` for moto on `port`, as `principal` with the secret in `secret_file`.
fn aws_cloud(port: u64, principal: &str, secret_file: &std::path::Path) -> CloudConfig {
    let url = format!("http://127.0.0.1:{port}");
    cloud(plugin("aws-adapter"), url, principal, Some(secret_file.to_owned()), &[("region", "us-east-1")])
}

/// moto, its account's key, and that key's secret in a file, as a site reads it.
struct MotoAccount {
    _moto: skybridge_tests::peers::Peer,
    port: u64,
    key: String,
    secret: String,
    endpoint: String,
    file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl MotoAccount {
    fn start() -> MotoAccount {
        let moto = moto();
        let port = moto.ready["port"].as_u64().expect("port");
        let field = |k: &str| moto.ready[k].as_str().expect("moto's key").to_owned();
        let (key, secret) = (field("access_key"), field("secret_key"));
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("secret");
        std::fs::write(&file, format!("{secret}\n")).expect("secret file");
        MotoAccount {
            _moto: moto,
            port,
            key,
            secret,
            endpoint: format!("http://127.0.0.1:{port}"),
            file,
            _dir: dir,
        }
    }

    /// Change what the account has (`tests/peers/aws_admin.py COMMAND ARG…`).
    async fn admin(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec![self.endpoint.as_str(), self.key.as_str(), self.secret.as_str()];
        all.extend_from_slice(args);
        python_json("aws_admin.py", &all).await
    }
}

/// Wait until `platform` has at least `n` refresh records; return them, newest first.
async fn refreshes(client: &AdminClient, platform: &str, n: usize) -> Vec<RefreshRecord> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = client.refreshes(platform).await.expect("refreshes");
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{platform}: {} refreshes after 60 s, wanted {n}: {got:?}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn record<'a>(inventory: &'a [InventoryRecord], native_id: &str) -> &'a InventoryRecord {
    inventory
        .iter()
        .find(|r| r.service.native_id == native_id)
        .unwrap_or_else(|| panic!("no {native_id} in the inventory"))
}

/// Ask for a refresh and wait for its record.
async fn refresh(client: &AdminClient, platform: &str, before: usize) -> RefreshRecord {
    let started = client.refresh(platform).await.expect("refresh accepted");
    assert_eq!(started.platform, platform);
    let mut got = refreshes(client, platform, before + 1).await;
    got.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_discovers_what_moto_has_and_a_deleted_bucket_goes_missing_then_withdrawn() {
    let moto = moto();
    let port = moto.ready["port"].as_u64().expect("port");
    let (key, secret) =
        (moto.ready["access_key"].as_str().expect("key"), moto.ready["secret_key"].as_str().expect("secret"));
    let endpoint = format!("http://127.0.0.1:{port}");
    python_json("aws_admin.py", &[&endpoint, key, secret, "create-buckets", "catalog", "3"]).await;
    let launched = python_json("aws_admin.py", &[&endpoint, key, secret, "run-instances", "2"]).await;

    let secrets = tempfile::tempdir().expect("tempdir");
    let (good, bad) = (secrets.path().join("good"), secrets.path().join("bad"));
    std::fs::write(&good, format!("{secret}\n")).expect("secret file");
    std::fs::write(&bad, "not-the-secret-moto-issued\n").expect("secret file");
    let topology = Topology::new(policy(&[], 4, 20))
        .relays(&["r1"])
        .site("aws-east", &[("r1", LinkParams::default())])
        .site("aws-wrong-key", &[("r1", LinkParams::default())])
        .cloud("aws-east", aws_cloud(port, key, &good))
        .cloud("aws-wrong-key", aws_cloud(port, key, &bad));
    let mesh = TestMesh::start(topology).await;
    let client = mesh.client();

    // On connecting, the site reported what moto really has.
    let first = refreshes(&client, "aws-east", 1).await.remove(0);
    assert_eq!(first.trigger, Some(Trigger::Connect));
    let Outcome::Integrated { summary } = &first.outcome else { panic!("{first:?}") };
    assert!(first.requests >= 4, "STS, S3, EC2 regions and instances: {first:?}");
    let inventory = client.inventory_all("aws-east").await.expect("inventory");
    assert_eq!(summary.added, inventory.len(), "{first:?}");
    for i in 0..3 {
        let bucket = record(&inventory, &format!("arn:aws:s3:::catalog-{i}"));
        assert_eq!((bucket.service.kind.as_str(), bucket.presence), ("object-store", Presence::Present));
        assert_eq!(bucket.service.region.as_deref(), Some("us-east-1"));
        assert_eq!(bucket.service.attributes.get("account").map(String::as_str), Some("123456789012"));
        assert_eq!(bucket.service.endpoint, format!("{endpoint}/catalog-{i}"));
    }
    for id in launched["instances"].as_array().expect("instances") {
        let arn = format!("arn:aws:ec2:us-east-1:123456789012:instance/{}", id.as_str().expect("id"));
        let instance = record(&inventory, &arn);
        assert_eq!(instance.service.kind, "compute");
        assert_eq!(instance.service.attributes.get("state").map(String::as_str), Some("running"));
    }
    let regions = inventory.iter().filter(|r| r.service.native_id.starts_with("ec2-region:")).count();
    assert!(regions >= 20, "moto lists its EC2 regions: {regions}");
    // Paging through the API returns the same records as one long read.
    let page = client.inventory("aws-east", 7, None).await.expect("a page");
    assert_eq!(page.items.len(), 7);
    let next = client.inventory("aws-east", 7, page.next_page.as_deref()).await.expect("next page");
    assert_eq!(next.items[0].service.native_id, inventory[7].service.native_id);

    // The site with the wrong key: moto's refusal is on record, and nothing was written.
    let failed = refreshes(&client, "aws-wrong-key", 1).await.remove(0);
    let Outcome::DiscoveryFailed { reason } = &failed.outcome else { panic!("{failed:?}") };
    assert!(reason.contains("STS GetCallerIdentity") && reason.contains("403"), "{reason}");
    assert!(client.inventory_all("aws-wrong-key").await.expect("inventory").is_empty());

    // Nothing changed: an on-demand refresh writes nothing.
    let again = refresh(&client, "aws-east", 1).await;
    assert_eq!(again.trigger, Some(Trigger::OnDemand));
    let Outcome::Integrated { summary } = &again.outcome else { panic!("{again:?}") };
    assert_eq!((summary.unchanged, summary.added, summary.changed), (inventory.len(), 0, 0), "{again:?}");

    // A deleted bucket goes missing, stays missing for one further report, then is withdrawn.
    python_json("aws_admin.py", &[&endpoint, key, secret, "delete-bucket", "catalog-1"]).await;
    let gone = "arn:aws:s3:::catalog-1";
    let missing = refresh(&client, "aws-east", 2).await;
    let Outcome::Integrated { summary } = &missing.outcome else { panic!("{missing:?}") };
    assert_eq!((summary.missing, summary.held), (1, false), "{missing:?}");
    let presence = |inv: &[InventoryRecord]| record(inv, gone).presence;
    assert_eq!(presence(&client.inventory_all("aws-east").await.expect("inventory")), Presence::Missing);
    refresh(&client, "aws-east", 3).await;
    assert_eq!(presence(&client.inventory_all("aws-east").await.expect("inventory")), Presence::Missing);
    let withdrawn = refresh(&client, "aws-east", 4).await;
    let Outcome::Integrated { summary } = &withdrawn.outcome else { panic!("{withdrawn:?}") };
    assert_eq!(summary.withdrawn, 1, "{withdrawn:?}");
    let inventory = client.inventory_all("aws-east").await.expect("inventory");
    assert_eq!(presence(&inventory), Presence::Withdrawn);
    assert_eq!(record(&inventory, "arn:aws:s3:::catalog-0").presence, Presence::Present);

    // A terminated instance: EC2 still lists it, as terminated, so the cloud itself says it is
    // gone — withdrawn by the next report, with no grace.
    let ids: Vec<&str> =
        launched["instances"].as_array().expect("instances").iter().flat_map(|i| i.as_str()).collect();
    python_json("aws_admin.py", &[&endpoint, key, secret, "terminate-instance", ids[0]]).await;
    let terminated = refresh(&client, "aws-east", 5).await;
    let Outcome::Integrated { summary } = &terminated.outcome else { panic!("{terminated:?}") };
    assert_eq!((summary.withdrawn, summary.missing), (1, 0), "{terminated:?}");
    let inventory = client.inventory_all("aws-east").await.expect("inventory");
    let arn = |id: &str| format!("arn:aws:ec2:us-east-1:123456789012:instance/{id}");
    assert_eq!(record(&inventory, &arn(ids[0])).presence, Presence::Withdrawn);
    assert_eq!(record(&inventory, &arn(ids[1])).presence, Presence::Present);
}

/// The allowlist authorizer granting object stores to anyone and nothing else.
fn object_stores_only() -> PluginFile {
    PluginFile {
        path: plugin("allowlist-authorizer"),
        config: [("allow.objects".to_owned(), "* * object-store/*".to_owned())].into(),
        limits: Default::default(),
    }
}

/// Wait until every one of `platforms` has reported and none of their authorizations is
/// pending; return them all.
async fn decided(client: &AdminClient, platforms: &[&str]) -> Vec<Authorization> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = client.authorizations().await.expect("authorizations");
        let ours: Vec<Authorization> =
            all.into_iter().filter(|a| platforms.contains(&a.platform.as_str())).collect();
        let pending = ours.iter().filter(|a| a.state == AuthorizationState::Pending).count();
        // Every platform must have reported: one that has not yet has nothing pending either.
        let all_reported = platforms.iter().all(|p| ours.iter().any(|a| a.platform == *p));
        if all_reported && pending == 0 {
            return ours;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} of {} authorizations still pending after 60 s",
            ours.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_platforms_grant_enters_the_catalog_once_and_what_they_refuse_only_the_audit() {
    let aws = MotoAccount::start();
    let (port, key, file) = (aws.port, aws.key.as_str(), aws.file.clone());
    aws.admin(&["create-buckets", "shared", "2"]).await;
    aws.admin(&["run-instances", "1"]).await;

    // Two platforms see the same account (the same buckets); both grant object stores, at once.
    let topology = Topology::new(policy(&[], 4, 20))
        .relays(&["r1"])
        .site("aws-east", &[("r1", LinkParams::default())])
        .site("aws-west", &[("r1", LinkParams::default())])
        .cloud("aws-east", aws_cloud(port, key, &file))
        .cloud("aws-west", aws_cloud(port, key, &file))
        .authorizer("aws-east", object_stores_only())
        .authorizer("aws-west", object_stores_only());
    let mesh = TestMesh::start(topology).await;
    let client = mesh.client();
    let all = decided(&client, &["aws-east", "aws-west"]).await;

    // Granted: each bucket is one entry with two associations.
    let buckets = client.catalog_all("kind=s3").await.expect("catalog by kind (an alias)");
    let names: Vec<&str> = buckets.iter().map(|e| e.entry.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    for entry in &buckets {
        assert!(entry.entry.name.starts_with("shared-"), "{entry:?}");
        assert_eq!(entry.entry.match_key, format!("object-store/{}", entry.entry.name));
        let mut platforms: Vec<&str> = entry.offered_by.iter().map(|o| o.platform.as_str()).collect();
        platforms.sort();
        assert_eq!(platforms, ["aws-east", "aws-west"], "one entry, two associations: {entry:?}");
        for offer in &entry.offered_by {
            assert_eq!(offer.presence, "present");
            assert_eq!(offer.native_id, format!("arn:aws:s3:::{}", entry.entry.name));
            assert!(offer.service.as_ref().is_some_and(|s| s.endpoint.ends_with(&entry.entry.name)));
        }
        let one = client.catalog_entry(&entry.entry.id).await.expect("by id");
        assert_eq!(one.entry, entry.entry);
    }
    // Refused: instances and regions are not in the catalog; their refusals are audited with
    // the authorizer's reason.
    let everything = client.catalog_all("").await.expect("catalog");
    assert_eq!(everything.len(), 2, "only the granted buckets: {everything:?}");
    let refused: Vec<&Authorization> =
        all.iter().filter(|a| a.state == AuthorizationState::Refused).collect();
    assert!(refused.iter().any(|a| a.capability.kind == "compute"), "{all:?}");
    assert!(refused.iter().all(|a| a.capability.kind != "object-store"));
    let audit = client.authorization_audit().await.expect("audit");
    let refusal = audit
        .iter()
        .find(|l| l.state == AuthorizationState::Refused && l.platform == "aws-east")
        .expect("a refusal in the audit");
    assert_eq!(refusal.by, "platform:aws-east");
    assert!(!refusal.reason.is_empty() && refusal.entry.is_none(), "{refusal:?}");
    let grant = audit.iter().find(|l| l.state == AuthorizationState::Granted).expect("a grant in the audit");
    assert!(grant.reason.contains("allow.objects"), "the rule that matched: {grant:?}");
    assert!(buckets.iter().any(|e| Some(&e.entry.id) == grant.entry.as_ref()));
    // The platforms' own audits have the same decisions, under the same request ids.
    let site_audit =
        std::fs::read_to_string(mesh.state.path().join("aws-east-audit.jsonl")).expect("site audit");
    assert!(site_audit.contains(&refusal.request_id), "the site audited the refusal too");
    // The controller's metrics count them by state, as the listing does.
    let metrics = mesh.ctl().metrics().await;
    let now = client.authorizations().await.expect("authorizations");
    for state in AuthorizationState::ALL {
        let n = now.iter().filter(|a| a.state == state).count();
        let line = format!("skybridge_authorizations{{state=\"{}\"}} {n}\n", state.as_str());
        assert!(metrics.contains(&line), "no `{}` in:\n{metrics}", line.trim());
    }
    assert!(now.iter().any(|a| a.state == AuthorizationState::Granted) && !refused.is_empty());
    // The listing pages: one at a time, each authorization once, and the last page says so.
    let mut paged = Vec::new();
    let mut path = "/v1/authorizations?limit=1".to_owned();
    loop {
        let (status, page) = mesh.api("GET", &path, None).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().expect("items");
        assert_eq!(items.len(), 1, "{page}");
        let field = |name: &str| items[0][name].as_str().expect("a string").to_owned();
        paged.push((field("platform"), field("match_key")));
        match page["next_page"].as_str() {
            Some(next) => path = format!("/v1/authorizations?limit=1&page={next}"),
            None => break,
        }
    }
    let mut listed: Vec<_> = now.iter().map(|a| (a.platform.clone(), a.match_key.clone())).collect();
    paged.sort();
    listed.sort();
    assert_eq!(paged, listed);
    assert_eq!(mesh.api("GET", "/v1/authorizations?page=zz", None).await.0, 400, "a token not given out");
    assert_eq!(mesh.api("GET", "/v1/authorizations?limit=0", None).await.0, 400);
}

/// Keystone's services and endpoints as the keystone peer registered them.
fn registered(answer: &str) -> serde_json::Value {
    serde_json::from_str(answer).expect("a registration")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_sites_fronting_moto_azurite_keystone_and_fake_gcs_server_fill_one_catalog() {
    let secrets = tempfile::tempdir().expect("tempdir");
    let secret_file = |name: &str, secret: &str| {
        let file = secrets.path().join(name);
        std::fs::write(&file, format!("{secret}\n")).expect("secret file");
        file
    };

    // moto: a bucket.
    let aws = MotoAccount::start();
    aws.admin(&["create-buckets", "four", "1"]).await;
    // Azurite: a storage account whose key only Azurite and the site know, with more
    // containers than one page of 100.
    let azure_key = skybridge_plugin_sdk::crypto::base64(&std::array::from_fn::<u8, 32, _>(|i| {
        (i as u8).wrapping_mul(37) ^ 0x5a
    }));
    let azurite = Azurite::start("westdata", &azure_key);
    let azure = format!("http://127.0.0.1:{}", azurite.port);
    python_json("azure_admin.py", &[&azure, "westdata", &azure_key, "create-containers", "logs", "130"])
        .await;
    // Keystone: an object store, and a service type outside the taxonomy.
    let mut keystone = keystone(600);
    let field = |k: &str| keystone.ready[k].as_str().expect(k).to_owned();
    let (user, password) = (field("user"), field("password"));
    let keystone_url = format!("http://127.0.0.1:{}", keystone.ready["port"].as_u64().expect("port"));
    let swift = registered(&keystone.command("add-service object-store swift http://swift.lab:8080/v1"));
    let aodh = registered(&keystone.command("add-service alarming aodh http://aodh.lab:8042"));
    // fake-gcs-server: three buckets. It checks no token; the site sends its own all the same.
    let mut gcs = gcs();
    let gcs_port = gcs.ready["port"].as_u64().expect("port");
    gcs.command("create-buckets media 3");

    let clouds = [
        ("aws-east", aws_cloud(aws.port, &aws.key, &aws.file)),
        (
            "azure-west",
            cloud(
                plugin("azure-adapter"),
                azure.clone(),
                "westdata",
                Some(secret_file("azure", &azure_key)),
                &[("region", "westeurope")],
            ),
        ),
        (
            "openstack-lab",
            cloud(
                plugin("openstack-adapter"),
                keystone_url,
                &user,
                Some(secret_file("keystone", &password)),
                &[("project", "lab")],
            ),
        ),
        (
            "gcp-lab",
            cloud(
                plugin("gcs-adapter"),
                format!("http://127.0.0.1:{gcs_port}"),
                "discovery@lab.iam.gserviceaccount.com",
                Some(secret_file("gcs", "ya29.site-access-token")),
                &[("project", "lab")],
            ),
        ),
    ];
    let mut topology = Topology::new(policy(&[], 4, 20)).relays(&["r1"]);
    for (platform, config) in clouds {
        topology = topology
            .site(platform, &[("r1", LinkParams::default())])
            .cloud(platform, config)
            .authorizer(platform, object_stores_only());
    }
    let mesh = TestMesh::start(topology).await;
    let client = mesh.client();
    let platforms = ["aws-east", "azure-west", "openstack-lab", "gcp-lab"];
    for platform in platforms {
        let first = refreshes(&client, platform, 1).await.remove(0);
        assert!(matches!(first.outcome, Outcome::Integrated { .. }), "{platform}: {first:?}");
        if platform == "azure-west" {
            assert_eq!(first.requests, 2, "two pages of List Containers: {first:?}");
        }
    }

    // What each cloud really has.
    let bucket =
        record(&client.inventory_all("aws-east").await.expect("inventory"), "arn:aws:s3:::four-0").clone();
    assert_eq!((bucket.service.kind.as_str(), bucket.presence), ("object-store", Presence::Present));

    let containers = client.inventory_all("azure-west").await.expect("inventory");
    assert_eq!(containers.len(), 130);
    let logs_7 = record(&containers, &format!("{azure}/westdata/logs-7"));
    assert_eq!((logs_7.service.kind.as_str(), logs_7.service.name.as_str()), ("object-store", "logs-7"));
    assert_eq!(logs_7.service.region.as_deref(), Some("westeurope"));

    let services = client.inventory_all("openstack-lab").await.expect("inventory");
    let object_store = record(&services, swift["endpoint"].as_str().expect("endpoint id"));
    assert_eq!(
        (object_store.service.kind.as_str(), object_store.service.name.as_str()),
        ("object-store", "swift")
    );
    assert_eq!(object_store.service.endpoint, "http://swift.lab:8080/v1");
    assert_eq!(object_store.service.region.as_deref(), Some("RegionOne"));
    assert!(services.iter().any(|r| r.service.kind == "identity"), "Keystone lists itself: {services:?}");
    assert!(
        services.iter().all(|r| r.service.native_id != aodh["endpoint"].as_str().expect("id")),
        "a service type outside the taxonomy is left out"
    );

    let buckets = client.inventory_all("gcp-lab").await.expect("inventory");
    let ids: Vec<&str> = buckets.iter().map(|r| r.service.native_id.as_str()).collect();
    assert_eq!(
        ids,
        ["projects/_/buckets/media-0", "projects/_/buckets/media-1", "projects/_/buckets/media-2"]
    );
    let media_1 = record(&buckets, "projects/_/buckets/media-1");
    assert_eq!(media_1.service.endpoint, format!("http://127.0.0.1:{gcs_port}/storage/v1/b/media-1"));
    // fake-gcs-server puts every bucket in its default location; GCS spells locations in capitals.
    assert!(
        media_1.service.region.as_deref().is_some_and(|r| !r.is_empty() && r == r.to_lowercase()),
        "{media_1:?}"
    );

    // Each platform's authorizer grants its object stores: one catalog of all four clouds.
    decided(&client, &platforms).await;
    for (platform, offers) in [("aws-east", 1), ("azure-west", 130), ("openstack-lab", 1), ("gcp-lab", 3)] {
        let listed = client.catalog_all(&format!("platform={platform}")).await.expect("catalog");
        assert_eq!(listed.len(), offers, "{platform}");
        assert!(listed.iter().all(|e| e.entry.kind == "object-store"), "{platform}: {listed:?}");
    }
    assert_eq!(client.catalog_all("kind=object-store").await.expect("catalog").len(), 135);
    assert_eq!(client.catalog_all("region=westeurope&state=offered").await.expect("catalog").len(), 130);
    assert!(client.catalog_all("region=eastus").await.expect("catalog").is_empty());
    assert!(client.catalog_all("state=orphaned").await.expect("catalog").is_empty());

    // A service deleted at each cloud goes missing at its platform, and nowhere else.
    aws.admin(&["delete-bucket", "four-0"]).await;
    python_json("azure_admin.py", &[&azure, "westdata", &azure_key, "delete-container", "logs-7"]).await;
    let disabled = keystone.command(&format!("disable-service {}", swift["service"].as_str().expect("id")));
    assert_eq!(disabled, "disabled");
    gcs.command("delete-bucket media-2");
    for platform in platforms {
        let missing = refresh(&client, platform, 1).await;
        let Outcome::Integrated { summary } = &missing.outcome else { panic!("{platform}: {missing:?}") };
        assert_eq!(
            (summary.missing, summary.withdrawn, summary.held),
            (1, 0, false),
            "{platform}: {missing:?}"
        );
    }
    let entry = client
        .catalog_all("platform=azure-west")
        .await
        .expect("catalog")
        .into_iter()
        .find(|e| e.entry.name == "logs-7")
        .expect("the entry stays while missing");
    assert_eq!(entry.offered_by[0].presence, "missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_by_capability_goes_to_the_nearest_offer_and_carries_boto3_to_moto() {
    let aws = MotoAccount::start();
    let (port, key, secret, file) = (aws.port, aws.key.as_str(), aws.secret.as_str(), aws.file.clone());
    aws.admin(&["create-buckets", "reports", "1"]).await;
    let api = std::net::SocketAddr::from(([127, 0, 0, 1], u16::try_from(port).expect("port")));

    // corp's ingress; aws-east is one relay away, aws-west two (over a slow link). Both offer
    // the same bucket, through the endpoint they publish.
    let topology = Topology::new(policy(&[("latency", 1.0)], 4, 10))
        .relays(&["r1", "r2"])
        .link("r1", "r2", LinkParams::delay(15.0))
        .site("corp", &[("r1", LinkParams::default())])
        .site("aws-east", &[("r1", LinkParams::default())])
        .site("aws-west", &[("r2", LinkParams::default())])
        .ingress_platform("corp")
        .endpoint("aws-east", "api", api)
        .endpoint("aws-west", "api", api)
        .cloud("aws-east", aws_cloud(port, key, &file))
        .cloud("aws-west", aws_cloud(port, key, &file))
        .authorizer("aws-east", object_stores_only())
        .authorizer("aws-west", object_stores_only())
        .adapter("aws-east", plugin("aws-adapter"))
        .adapter("aws-west", plugin("aws-adapter"));
    let mesh = TestMesh::start(topology).await;
    let client = mesh.client();
    decided(&client, &["aws-east", "aws-west"]).await;

    // The entry shows each offer's path from the ingress's platform.
    let entry = client
        .catalog_all("kind=object-store")
        .await
        .expect("catalog")
        .into_iter()
        .find(|e| e.entry.name == "reports-0")
        .expect("the bucket is in the catalog");
    let offer = |p: &str| entry.offered_by.iter().find(|o| o.platform == p).expect("an offer");
    let (east, west) = (offer("aws-east"), offer("aws-west"));
    assert_eq!(
        (east.published_endpoint.as_deref(), west.published_endpoint.as_deref()),
        (Some("api"), Some("api"))
    );
    let (east_path, west_path) = (east.path.as_ref().expect("a path"), west.path.as_ref().expect("a path"));
    assert!(east_path.rtt_ms + 10.0 < west_path.rtt_ms, "{east_path:?} vs {west_path:?}");
    assert_eq!((east_path.hops, west_path.hops), (0, 1));

    // By capability: the nearer platform wins; a named one is honoured.
    create_account(&mesh, "acme-ops", "acme-ops-secret-0123456789").await;
    for platform in ["aws-east", "aws-west"] {
        let mapping = serde_json::json!({ "principal": key, "secret": secret }).to_string();
        let (status, body) =
            mesh.api("PUT", &format!("/v1/accounts/acme-ops/credentials/{platform}"), Some(&mapping)).await;
        assert_eq!(status, 200, "{body}");
    }
    let by_capability =
        serde_json::json!({ "capability": "s3/reports-0", "mode": "http", "account": "acme-ops" });
    let (status, binding) = mesh.api("POST", "/v1/bindings", Some(&by_capability.to_string())).await;
    assert_eq!(status, 201, "{binding}");
    assert_eq!((binding["to"].as_str(), binding["endpoint"].as_str()), (Some("aws-east"), Some("api")));
    let listen = format!("http://{}", binding["listen"].as_str().expect("listen"));
    let got =
        python_json("aws_client.py", &[&listen, "acme-ops", "acme-ops-secret-0123456789", "full"]).await;
    assert_eq!(got["put_get_equal"], serde_json::json!(true), "boto3 through the capability binding: {got}");

    let named = serde_json::json!({ "capability": entry.entry.id, "to": "aws-west", "mode": "http" });
    let (status, binding) = mesh.api("POST", "/v1/bindings", Some(&named.to_string())).await;
    assert_eq!((status, binding["to"].as_str()), (201, Some("aws-west")), "{binding}");
    let unknown = serde_json::json!({ "capability": "s3/nothing-here", "mode": "http" });
    let (status, body) = mesh.api("POST", "/v1/bindings", Some(&unknown.to_string())).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("no capability `object-store/nothing-here`")),
        "{body}"
    );
}

async fn create_account(mesh: &TestMesh, id: &str, secret: &str) {
    let (status, body) = mesh
        .api("POST", "/v1/accounts", Some(&serde_json::json!({ "id": id, "secret": secret }).to_string()))
        .await;
    assert_eq!(status, 201, "{body}");
}

/// Answer one HTTP request on `s`: the spec for `GET /spec`, `{}` for anything else.
async fn answer_spec<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S, spec: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 8192];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let body = if got.starts_with(b"GET /spec") { spec } else { "{}".to_owned() };
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(answer.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// The synthetic adapter's cloud: `GET /spec` answers the JSON set with [`SpecCloud::set`];
/// any other GET answers 200 (the adapter ignores page bodies).
struct SpecCloud {
    addr: std::net::SocketAddr,
    spec: std::sync::Arc<std::sync::Mutex<String>>,
}

impl SpecCloud {
    async fn start(spec: serde_json::Value) -> SpecCloud {
        SpecCloud::serve(spec, None).await
    }

    /// The same over TLS, with `acceptor`'s certificate.
    async fn start_tls(spec: serde_json::Value, acceptor: tokio_rustls::TlsAcceptor) -> SpecCloud {
        SpecCloud::serve(spec, Some(acceptor)).await
    }

    async fn serve(spec: serde_json::Value, tls: Option<tokio_rustls::TlsAcceptor>) -> SpecCloud {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = std::sync::Arc::new(std::sync::Mutex::new(spec.to_string()));
        let served = std::sync::Arc::clone(&shared);
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let spec = served.lock().expect("spec").clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => answer_spec(s, spec).await,
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(s).await {
                                answer_spec(s, spec).await;
                            }
                        }
                    }
                });
            }
        });
        SpecCloud { addr, spec: shared }
    }

    fn set(&self, spec: serde_json::Value) {
        *self.spec.lock().expect("spec") = spec.to_string();
    }

    fn config(&self) -> CloudConfig {
        let adapter = skybridge_tests::test_plugin("synthetic-adapter");
        let mut config = cloud(adapter, format!("http://{}", self.addr), "synthetic", None, &[]);
        config.discovery.max_requests = 50;
        config
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_adapters_and_clouds_are_refused_with_a_reason_and_change_nothing() {
    let bad = SpecCloud::start(serde_json::json!({ "count": 5 })).await;
    let good = SpecCloud::start(serde_json::json!({ "count": 3 })).await;
    let topology = Topology::new(policy(&[], 4, 20))
        .relays(&["r1"])
        .site("bad", &[("r1", LinkParams::default())])
        .site("good", &[("r1", LinkParams::default())])
        .cloud("bad", bad.config())
        .cloud("good", good.config());
    let mesh = TestMesh::start(topology).await;
    let client = mesh.client();
    refreshes(&client, "bad", 1).await;
    refreshes(&client, "good", 1).await;
    let before = client.inventory_all("bad").await.expect("inventory");
    assert_eq!(before.len(), 5);

    let cases: &[(&str, &str)] = &[
        ("trap", "trap"),
        ("loop", "deadline"),
        ("hog", "memory"),
        ("endless", "more than 50 requests"),
        ("huge", "attribute `blob` is 10240 bytes"),
        ("duplicate", "appears twice"),
        ("cursor-bomb", "cursor is"),
    ];
    let mut seen = 1;
    for (mode, expected) in cases {
        bad.set(serde_json::json!({ "count": 5, "per_page": 2, "mode": mode }));
        let record = refresh(&client, "bad", seen).await;
        seen += 1;
        let Outcome::DiscoveryFailed { reason } = &record.outcome else { panic!("{mode}: {record:?}") };
        assert!(reason.contains(expected), "{mode}: {reason}");
        assert_eq!(client.inventory_all("bad").await.expect("inventory"), before, "{mode}: nothing written");
    }
    // Kinds outside the taxonomy are left out at the site, loudly, not refused: an empty
    // report, which is a shrink of more than half, held for confirmation.
    bad.set(serde_json::json!({ "count": 5, "mode": "bad-kind" }));
    let record = refresh(&client, "bad", seen).await;
    let Outcome::Integrated { summary } = &record.outcome else { panic!("{record:?}") };
    assert_eq!((summary.reported, summary.held), (0, true), "{record:?}");
    // The adapter behaves again, and so does the platform; the other platform never noticed.
    bad.set(serde_json::json!({ "count": 5 }));
    let record = refresh(&client, "bad", seen + 1).await;
    let Outcome::Integrated { summary } = &record.outcome else { panic!("{record:?}") };
    assert_eq!(summary.returned, 5, "{record:?}");
    assert_eq!(client.refreshes("good").await.expect("refreshes").len(), 1);
    assert_eq!(client.inventory_all("good").await.expect("inventory").len(), 3);
}

/// A site of the mesh's CA, registered by hand: what a compromised or buggy site can send.
async fn rogue_site(mesh: &TestMesh, name: &str) -> (quinn::Connection, Framed) {
    use skybridge_gateway::mesh::identity::Role;
    use skybridge_gateway::mesh::transport::MeshEndpoint;
    let identity =
        mesh.pki.tls(name, Role::Site).expect("certificate").load(name, Role::Site).expect("identity");
    let endpoint = MeshEndpoint::bind("127.0.0.1:0".parse().expect("addr"), identity, &[]).expect("endpoint");
    let conn = endpoint
        .connect(mesh.controller.mesh_addr(), "controller", &[Role::Controller])
        .await
        .expect("connected");
    let mut control = Framed::new(conn.open_bi().await.expect("stream"));
    control
        .send(&Control::Register { name: name.into(), role: Role::Site, listen: None })
        .await
        .expect("sent");
    assert!(matches!(control.recv().await, Ok(Some(Control::Registered { .. }))));
    // The endpoint must outlive the test's use of the connection.
    std::mem::forget(endpoint);
    (conn, control)
}

fn page(platform: &str, page: u32, last: bool, services: Vec<ServiceInfo>) -> Control {
    Control::ReportPage {
        platform: platform.into(),
        trigger: Trigger::Periodic,
        page,
        last,
        services,
        gone: Vec::new(),
        requests: 1,
        discovery_ms: 1,
    }
}

fn service(id: &str) -> ServiceInfo {
    ServiceInfo {
        native_id: id.into(),
        kind: "object-store".into(),
        name: id.into(),
        endpoint: "http://x".into(),
        region: None,
        attributes: Default::default(),
        capabilities: vec![CapabilityInfo {
            kind: "object-store".into(),
            name: id.into(),
            attributes: Default::default(),
        }],
    }
}

/// Read an authorization request from `stream`: its id and capability.
async fn asked(stream: &mut Framed) -> (String, CapabilityInfo) {
    match stream.recv().await.expect("a request").expect("a message") {
        Control::Authorize { request_id, capability, .. } => (request_id, capability),
        other => panic!("expected an authorization request, got {other:?}"),
    }
}

/// Send `pages` on a new stream; the controller's answer.
async fn report(conn: &quinn::Connection, pages: &[Control]) -> Control {
    let mut stream = Framed::new(conn.open_bi().await.expect("stream"));
    for p in pages {
        stream.send(p).await.expect("sent");
    }
    stream.recv().await.expect("an answer").expect("a message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_may_report_only_for_itself_and_only_well_formed_reports() {
    let good = SpecCloud::start(serde_json::json!({ "count": 3 })).await;
    let topology = Topology::new(policy(&[], 4, 20))
        .relays(&["r1"])
        .site("good", &[("r1", LinkParams::default())])
        .cloud("good", good.config());
    let mesh = TestMesh::start(topology).await;
    let client = mesh.client();
    refreshes(&client, "good", 1).await;
    let (conn, _control) = rogue_site(&mesh, "rogue").await;

    let refused = |answer: &Control, needle: &str| match answer {
        Control::Refused { reason, .. } => assert!(reason.contains(needle), "{reason}"),
        other => panic!("expected a refusal about {needle}, got {other:?}"),
    };
    // Another platform's report.
    refused(
        &report(&conn, &[page("good", 0, true, vec![service("fake")])]).await,
        "may not report for platform `good`",
    );
    // Pages out of order.
    refused(&report(&conn, &[page("rogue", 1, true, vec![])]).await, "page 1 arrived where page 0 was due");
    // Oversized, control characters, an unknown kind, a duplicate: refused whole.
    let long = ServiceInfo { native_id: "n".repeat(600), ..service("x") };
    let nul = ServiceInfo { name: "a\u{0}b".into(), ..service("y") };
    let kind = ServiceInfo { kind: "warp-drive".into(), ..service("z") };
    for (bad, needle) in
        [(long, "600 bytes long"), (nul, "control characters"), (kind, "not a capability kind")]
    {
        refused(&report(&conn, &[page("rogue", 0, true, vec![service("ok"), bad])]).await, needle);
    }
    refused(
        &report(
            &conn,
            &[page("rogue", 0, false, vec![service("d")]), page("rogue", 1, true, vec![service("d")])],
        )
        .await,
        "appears twice",
    );
    // A service reported present and gone at once.
    let mut contradictory = page("rogue", 0, true, vec![service("e")]);
    if let Control::ReportPage { gone, .. } = &mut contradictory {
        gone.push("e".into());
    }
    refused(&report(&conn, &[contradictory]).await, "both present and gone");
    assert!(client.inventory_all("rogue").await.expect("inventory").is_empty(), "nothing written");
    let records = client.refreshes("rogue").await.expect("refreshes");
    assert!(records.iter().all(|r| matches!(r.outcome, Outcome::Refused { .. })), "{records:?}");
    assert!(
        client.inventory_all("good").await.expect("inventory").len() == 3,
        "the other platform is untouched"
    );

    // Frames that are not a report at all: a field of the wrong type, bytes that are not
    // UTF-8. Refused, and the site's connection carries on.
    use skybridge_gateway::mesh::frame::{DEFAULT_MAX_FRAME, encode};
    let wrong_type = serde_json::json!({ "type": "report-page", "platform": "rogue", "trigger": "periodic",
        "page": "first", "last": true, "services": [], "requests": 0, "discovery_ms": 0 });
    let mut not_utf8 =
        encode(&serde_json::json!({ "type": "report-page", "platform": "rogue" }), DEFAULT_MAX_FRAME)
            .expect("frame");
    let at = not_utf8.len() - 4;
    not_utf8[at] = 0xff;
    for (frame, needle) in
        [(encode(&wrong_type, DEFAULT_MAX_FRAME).expect("frame"), "invalid type"), (not_utf8, "")]
    {
        let (mut send, mut recv) = conn.open_bi().await.expect("stream");
        send.write_all(&frame).await.expect("sent");
        let answer = skybridge_gateway::mesh::stream::read_frame(&mut recv, Duration::from_secs(10))
            .await
            .expect("an answer");
        refused(&answer, needle);
    }

    // A well-formed report in two pages is integrated.
    let answer = report(
        &conn,
        &[page("rogue", 0, false, vec![service("a")]), page("rogue", 1, true, vec![service("b")])],
    )
    .await;
    assert!(matches!(answer, Control::ReportIntegrated { summary } if summary.added == 2), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capability_the_platform_revokes_cuts_its_live_bindings_and_refuses_new_ones() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let aws = MotoAccount::start();
    let (port, key, file) = (aws.port, aws.key.as_str(), aws.file.clone());
    aws.admin(&["create-buckets", "vault", "1"]).await;
    // The platform grants object stores for the next 12 s only, from when this test's mesh
    // starts (time enough to grant on a slow machine); its site decides grants again every
    // second (the test kit's setting).
    let mut until = 0;
    let mesh = TestMesh::start_built(|| {
        until =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 12;
        let authorizer = PluginFile {
            path: plugin("allowlist-authorizer"),
            config: [("allow.objects".to_owned(), format!("* * object-store/* until={until}"))].into(),
            limits: Default::default(),
        };
        let api = std::net::SocketAddr::from(([127, 0, 0, 1], u16::try_from(port).expect("port")));
        Topology::new(policy(&[], 4, 10))
            .relays(&["r1"])
            .site("corp", &[("r1", LinkParams::default())])
            .site("aws-east", &[("r1", LinkParams::default())])
            .ingress_platform("corp")
            .endpoint("aws-east", "api", api)
            .cloud("aws-east", aws_cloud(port, key, &file))
            .authorizer("aws-east", authorizer)
    })
    .await;
    let client = mesh.client();
    decided(&client, &["aws-east"]).await;

    let request = serde_json::json!({ "capability": "object-store/vault-0", "mode": "tcp" });
    let (status, binding) = mesh.api("POST", "/v1/bindings", Some(&request.to_string())).await;
    assert_eq!(status, 201, "{binding}");
    let id = binding["id"].as_u64().expect("id");
    // The binding carries traffic to moto ...
    let listen = binding["listen"].as_str().expect("listen").to_owned();
    let mut first = tokio::net::TcpStream::connect(&listen).await.expect("connect");
    first.write_all(b"GET /vault-0 HTTP/1.1\r\nHost: moto\r\nConnection: close\r\n\r\n").await.expect("sent");
    let mut buf = vec![0u8; 4096];
    let n = first.read(&mut buf).await.expect("an answer");
    assert!(buf[..n].starts_with(b"HTTP/1.1 "), "{}", String::from_utf8_lossy(&buf[..n]));
    // ... and a live session: a request moto is still waiting to hear the end of.
    let mut live = tokio::net::TcpStream::connect(&listen).await.expect("connect");
    live.write_all(b"GET /vault-0 HTTP/1.1\r\nHost: moto\r\n").await.expect("sent");

    // The rule expires: the site revokes, the controller cuts the session and the binding.
    let cut = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match live.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(cut.is_ok(), "the live session was not cut within 30 s");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    assert!(now >= until, "cut at {now}, before the grant expired at {until}");
    let (status, _) = mesh.api("GET", &format!("/v1/bindings/{id}"), None).await;
    assert_eq!(status, 404, "the binding is closed");
    let revoked = client
        .authorizations()
        .await
        .expect("authorizations")
        .into_iter()
        .find(|a| a.match_key == "object-store/vault-0")
        .expect("the authorization");
    assert_eq!(revoked.state, AuthorizationState::Revoked);
    assert!(revoked.reason.contains("revoked: no allowlist rule"), "{revoked:?}");
    let audit = client.authorization_audit().await.expect("audit");
    assert!(audit.iter().any(|l| l.state == AuthorizationState::Revoked && l.by == "platform:aws-east"));
    // The entry stays, orphaned; a new binding to it is refused.
    let entry = client
        .catalog_all("kind=object-store")
        .await
        .expect("catalog")
        .into_iter()
        .find(|e| e.entry.name == "vault-0");
    assert_eq!(entry.map(|e| e.state).as_deref(), Some("orphaned"));
    let orphaned = client.catalog_all("state=orphaned").await.expect("catalog");
    assert_eq!(orphaned.iter().map(|e| e.entry.name.as_str()).collect::<Vec<_>>(), ["vault-0"]);
    let (status, body) = mesh.api("GET", "/v1/catalog?state=gone", None).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = mesh.api("POST", "/v1/bindings", Some(&request.to_string())).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("offered by nobody")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_decision_is_asked_again_with_the_same_request_id_until_granted() {
    let aws = MotoAccount::start();
    let (port, key, file) = (aws.port, aws.key.as_str(), aws.file.clone());
    aws.admin(&["create-buckets", "ledger", "1"]).await;
    // Object stores need a person for the first 8 s of this test's mesh (then the allow rule
    // applies): the authorizer answers "not decided yet, ask again in 1 s".
    let mesh = TestMesh::start_built(|| {
        let until =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 8;
        let authorizer = PluginFile {
            path: plugin("allowlist-authorizer"),
            config: [
                ("pending.review".to_owned(), format!("* * object-store/* until={until}")),
                ("pending-retry-s".to_owned(), "1".to_owned()),
                ("allow.objects".to_owned(), "* * object-store/*".to_owned()),
            ]
            .into(),
            limits: Default::default(),
        };
        Topology::new(policy(&[], 4, 20))
            .relays(&["r1"])
            .site("aws-east", &[("r1", LinkParams::default())])
            .cloud("aws-east", aws_cloud(port, key, &file))
            .authorizer("aws-east", authorizer)
    })
    .await;
    let client = mesh.client();
    let find = |all: Vec<Authorization>| all.into_iter().find(|a| a.match_key == "object-store/ledger-0");
    let deadline = Instant::now() + Duration::from_secs(20);
    let pending = loop {
        match find(client.authorizations().await.expect("authorizations")) {
            Some(a) if a.attempts > 0 => break a,
            _ => assert!(Instant::now() < deadline, "never asked"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(pending.state, AuthorizationState::Pending, "{pending:?}");
    assert!(pending.reason.contains("a person must decide"), "{pending:?}");
    let granted = loop {
        let a = find(client.authorizations().await.expect("authorizations")).expect("the authorization");
        if a.state != AuthorizationState::Pending {
            break a;
        }
        assert!(Instant::now() < deadline, "still pending after 20 s: {a:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(granted.state, AuthorizationState::Granted, "{granted:?}");
    assert_eq!(granted.request_id, pending.request_id, "asked again under the same id");
    assert!(granted.attempts >= 2, "a pending answer, then the grant: {granted:?}");
    let lines: Vec<AuthorizationState> = client
        .authorization_audit()
        .await
        .expect("audit")
        .into_iter()
        .rev()
        .filter(|l| l.request_id == granted.request_id)
        .map(|l| l.state)
        .collect();
    assert_eq!(lines.first(), Some(&AuthorizationState::Pending), "{lines:?}");
    assert_eq!(lines.last(), Some(&AuthorizationState::Granted), "{lines:?}");
    assert_eq!(client.catalog_all("kind=object-store").await.expect("catalog").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_has_etags_and_a_watch_that_wakes_on_change() {
    let cloud = SpecCloud::start(serde_json::json!({ "count": 3 })).await;
    let topology = Topology::new(policy(&[], 4, 20))
        .relays(&["r1"])
        .site("lab", &[("r1", LinkParams::default())])
        .cloud("lab", cloud.config())
        .authorizer("lab", object_stores_only());
    let mesh = TestMesh::start(topology).await;
    let client = mesh.client();
    decided(&client, &["lab"]).await;
    let page = client.catalog("", None).await.expect("catalog");
    let revision = page.revision.expect("a revision");
    assert_eq!(page.items.len(), 3);

    // An ETag; asked again with it, 304 and no body.
    let get = |headers: Vec<(&'static str, String)>| {
        let client = client.clone();
        async move {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            client
                .exchange_with(http::Method::GET, "/v1/catalog", None, true, &headers)
                .await
                .expect("answer")
        }
    };
    let first = get(vec![]).await;
    let tag = first.headers.get("etag").expect("an ETag").to_str().expect("text").to_owned();
    let again = get(vec![("if-none-match", tag.clone())]).await;
    assert_eq!((again.status, again.body.len()), (304, 0));

    // A watch with nothing new returns after its wait, at the same revision.
    let started = Instant::now();
    let idle = client.watch_catalog("", revision, 1).await.expect("watch");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(idle.revision, Some(revision));
    // A watch wakes when the catalog changes: a fourth service is granted.
    let watcher = {
        let client = client.clone();
        tokio::spawn(async move { client.watch_catalog("", revision, 60).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!watcher.is_finished(), "the watch waits");
    cloud.set(serde_json::json!({ "count": 4 }));
    client.refresh("lab").await.expect("refresh");
    let woke = tokio::time::timeout(Duration::from_secs(30), watcher)
        .await
        .expect("woke in time")
        .expect("task")
        .expect("watch");
    assert!(woke.revision.expect("a revision") > revision, "{:?}", woke.revision);
    let changed = get(vec![("if-none-match", tag)]).await;
    assert_eq!(changed.status, 200, "a changed catalog is sent again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_authorization_is_asked_again_with_the_same_id_and_then_granted() {
    use skybridge_gateway::catalog::{Consent, Handshake};
    use skybridge_gateway::config::CatalogConfig;
    let handshake =
        Handshake { timeout_ms: 300, backoff_ms: 200, max_backoff_ms: 1_000, max_pending_ms: 60_000 };
    let topology = Topology::new(policy(&[], 4, 20))
        .relays(&["r1"])
        .catalog(CatalogConfig { handshake, ..Default::default() });
    let mesh = TestMesh::start(topology).await;
    let client = mesh.client();
    // A site that reports one bucket, then leaves the first authorization request unanswered.
    let (conn, _control) = rogue_site(&mesh, "slow").await;
    let answer = report(&conn, &[page("slow", 0, true, vec![service("slow-bucket")])]).await;
    assert!(matches!(answer, Control::ReportIntegrated { .. }), "{answer:?}");
    let mut first = Framed::new(conn.accept_bi().await.expect("the controller asks"));
    let (first_id, capability) = asked(&mut first).await;
    assert_eq!(capability.match_key(), "object-store/slow-bucket");
    // ... no answer: the controller gives up on this attempt after 300 ms and asks again.
    let mut second = Framed::new(conn.accept_bi().await.expect("the controller asks again"));
    let (second_id, _) = asked(&mut second).await;
    assert_eq!(second_id, first_id, "the same request id: the idempotency key");
    second
        .send(&Control::AuthorizationDecided {
            request_id: second_id.clone(),
            consent: Consent::Grant { reason: "approved on the second ask".into() },
        })
        .await
        .expect("answered");
    second.finish();
    drop(first);

    let deadline = Instant::now() + Duration::from_secs(20);
    let granted = loop {
        let a =
            client.authorizations().await.expect("authorizations").into_iter().find(|a| a.platform == "slow");
        if let Some(a) = a.filter(|a| a.state == AuthorizationState::Granted) {
            break a;
        }
        assert!(Instant::now() < deadline, "never granted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((granted.request_id.as_str(), granted.attempts), (first_id.as_str(), 2), "{granted:?}");
    let audit: Vec<_> = client
        .authorization_audit()
        .await
        .expect("audit")
        .into_iter()
        .filter(|l| l.request_id == first_id)
        .collect();
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert!(audit[1].by == "controller" && audit[1].reason.contains("no answer within 300 ms"), "{audit:?}");
    assert_eq!((audit[0].state, audit[0].by.as_str()), (AuthorizationState::Granted, "platform:slow"));
    assert_eq!(client.catalog_all("platform=slow").await.expect("catalog").len(), 1);
}

/// A CA, and a TLS acceptor with a certificate it signed for `localhost`; the CA's PEM.
fn private_tls() -> (tokio_rustls::TlsAcceptor, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.clone().self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("signed");
    let key = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key)
    .expect("server config");
    (tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)), ca.pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_speaks_tls_to_a_cloud_whose_ca_the_site_trusts_and_only_then() {
    let (acceptor, ca_pem) = private_tls();
    let server = SpecCloud::start_tls(serde_json::json!({ "count": 3 }), acceptor).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("private-ca.pem");
    std::fs::write(&ca_file, ca_pem).expect("CA file");
    let url = format!("https://localhost:{}", server.addr.port());
    let adapter = skybridge_tests::test_plugin("synthetic-adapter");
    let mut trusting = cloud(adapter.clone(), url.clone(), "synthetic", None, &[]);
    trusting.ca_file = Some(ca_file);
    let untrusting = cloud(adapter, url, "synthetic", None, &[]);
    let topology = Topology::new(policy(&[], 4, 20))
        .relays(&["r1"])
        .site("private", &[("r1", LinkParams::default())])
        .site("stranger", &[("r1", LinkParams::default())])
        .cloud("private", trusting)
        .cloud("stranger", untrusting);
    let mesh = TestMesh::start(topology).await;
    let client = mesh.client();
    let ok = refreshes(&client, "private", 1).await.remove(0);
    assert!(matches!(&ok.outcome, Outcome::Integrated { summary } if summary.added == 3), "{ok:?}");
    let refused = refreshes(&client, "stranger", 1).await.remove(0);
    let Outcome::DiscoveryFailed { reason } = &refused.outcome else { panic!("{refused:?}") };
    assert!(reason.contains("TLS") && reason.contains("certificate"), "{reason}");
}
