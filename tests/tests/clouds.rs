//! Session translation against real cloud APIs: unmodified cloud SDKs talk to an `http`
//! binding with their Skybridge account; the target's adapter plugin re-signs each request
//! with the account's credentials there, and the cloud's own authentication checks the result.
//!
//! The peers (moto, boto3) are installed by `cargo xtask test` into a virtualenv it names in
//! `SKYBRIDGE_PEERS_PYTHON`; the helper scripts are in `tests/peers/`.

use serde_json::{Value, json};
use skybridge_gateway::testkit::netem::LinkParams;
use skybridge_tests::mesh::{TestMesh, Topology, policy};
use skybridge_tests::peers::{Azurite, keystone, moto, python_json};
use skybridge_tests::{peer_script, peers_python, plugin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Run `tests/peers/aws_client.py` (boto3) against `endpoint` as `account`.
async fn boto3(endpoint: &str, account: &str, secret: &str, what: &str) -> Value {
    python_json("aws_client.py", &[endpoint, account, secret, what]).await
}

/// corp — r1 — r2 — `cloud`, where `cloud` publishes the peer on `port` as `api` and
/// `adapter` translates sessions for it.
fn cloud_topology(cloud: &str, port: u64, adapter: &str) -> Topology {
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], u16::try_from(port).expect("a port")));
    Topology::new(policy(&[], 4, 20))
        .relays(&["r1", "r2"])
        .link("r1", "r2", LinkParams::delay(1.0))
        .site("corp", &[("r1", LinkParams::default())])
        .site(cloud, &[("r2", LinkParams::default())])
        .endpoint(cloud, "api", peer)
        .adapter(cloud, plugin(adapter))
}

fn aws_topology(moto_port: u64) -> Topology {
    cloud_topology("aws-east", moto_port, "aws-adapter")
}

async fn create_account(mesh: &TestMesh, id: &str, secret: &str) {
    let (status, body) =
        mesh.api("POST", "/v1/accounts", Some(&json!({ "id": id, "secret": secret }).to_string())).await;
    assert_eq!(status, 201, "{body}");
}

async fn map_account(mesh: &TestMesh, id: &str, platform: &str, principal: &str, secret: &str) {
    let mapping = json!({ "principal": principal, "secret": secret }).to_string();
    let path = format!("/v1/accounts/{id}/credentials/{platform}");
    let (status, body) = mesh.api("PUT", &path, Some(&mapping)).await;
    assert_eq!(status, 200, "{body}");
}

async fn http_binding(mesh: &TestMesh, account: Option<&str>) -> String {
    http_binding_to(mesh, "aws-east", account).await
}

async fn http_binding_to(mesh: &TestMesh, to: &str, account: Option<&str>) -> String {
    let mut request = json!({ "from": "corp", "to": to, "endpoint": "api", "mode": "http" });
    if let Some(account) = account {
        request["account"] = json!(account);
    }
    let (status, binding) = mesh.api("POST", "/v1/bindings", Some(&request.to_string())).await;
    assert_eq!(status, 201, "{binding}");
    format!("http://{}", binding["listen"].as_str().expect("listen address"))
}

/// moto, and a mesh fronting it where the account `acme-ops` maps to moto's key.
async fn moto_fronted_for_acme() -> (skybridge_tests::peers::Peer, TestMesh) {
    let moto = moto();
    let (key, secret) =
        (moto.ready["access_key"].as_str().expect("key"), moto.ready["secret_key"].as_str().expect("secret"));
    let mesh = TestMesh::start(aws_topology(moto.ready["port"].as_u64().expect("port"))).await;
    create_account(&mesh, "acme-ops", "acme-ops-secret-0123456789").await;
    map_account(&mesh, "acme-ops", "aws-east", key, secret).await;
    (moto, mesh)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_reaches_moto_through_an_http_binding_resigned_with_the_mapped_aws_key() {
    let (moto, mesh) = moto_fronted_for_acme().await;
    let (key, secret) =
        (moto.ready["access_key"].as_str().expect("key"), moto.ready["secret_key"].as_str().expect("secret"));
    let endpoint = http_binding(&mesh, Some("acme-ops")).await;

    // The application signs with its Skybridge account; moto accepts only the mapped key.
    let got = boto3(&endpoint, "acme-ops", "acme-ops-secret-0123456789", "full").await;
    assert_eq!(got["put_get_equal"], json!(true), "{got}");
    assert_eq!(got["listed"], json!(["dir/greeting.txt"]), "{got}");
    assert_eq!(got["buckets"], json!(["skybridge-test"]), "{got}");
    let launched = got["launched"].as_str().expect("an instance id");
    assert!(launched.starts_with("i-"), "{got}");
    assert!(got["described"].as_array().expect("described").contains(&json!(launched)), "{got}");

    // Each request is recorded as its three sessions, with the identity at the target.
    let (status, sessions) = mesh.api("GET", "/v1/sessions", None).await;
    assert_eq!(status, 200);
    let sessions = sessions.as_array().expect("sessions");
    assert!(sessions.len() >= 8, "one session per request: {sessions:?}");
    for s in sessions {
        assert_eq!(s["account"], json!("acme-ops"), "{s}");
        assert_eq!(s["third"]["platform"], json!("aws-east"), "{s}");
        assert_eq!(s["third"]["principal"], json!(key), "{s}");
        assert_eq!(s["second"]["hops"], json!(["r1", "r2", "aws-east"]), "{s}");
        assert_eq!(s["outcome"], json!("HTTP 200"), "{s}");
        assert!(s["ended_unix_ms"].is_u64(), "{s}");
    }
    let count = |dir: &str, at_least: u64| sessions.iter().any(|s| s[dir].as_u64().unwrap_or(0) >= at_least);
    assert!(
        count("bytes_up", 24_000) && count("bytes_down", 24_000),
        "the object's bytes were counted both ways"
    );
    let text = serde_json::to_string(&sessions).expect("json");
    assert!(!text.contains(secret) && !text.contains("acme-ops-secret"), "a secret leaked into the sessions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_mappings_get_moto_s_403_and_wrong_accounts_are_refused_at_the_ingress() {
    let moto = moto();
    let key = moto.ready["access_key"].as_str().expect("key");
    let mesh = TestMesh::start(aws_topology(moto.ready["port"].as_u64().expect("port"))).await;
    create_account(&mesh, "acme-ops", "acme-ops-secret-0123456789").await;
    map_account(&mesh, "acme-ops", "aws-east", key, "not-the-secret-moto-issued").await;
    create_account(&mesh, "beta", "beta-secret-0123456789").await;
    let open = http_binding(&mesh, None).await;
    let acme_only = http_binding(&mesh, Some("acme-ops")).await;

    // A wrong mapping: Skybridge signs with the wrong AWS secret, and moto's own 403 reaches
    // the client unchanged.
    let got = boto3(&open, "acme-ops", "acme-ops-secret-0123456789", "one").await;
    assert_eq!(got["skybridge_error"], Value::Null, "the 403 is moto's: {got}");
    assert_eq!(
        (got["status"].clone(), got["code"].clone()),
        (json!(403), json!("SignatureDoesNotMatch")),
        "{got}"
    );

    // Refused at the ingress, before anything reaches moto. An unknown account is told what a
    // wrong secret is: nothing says which account ids exist.
    let refusals = [
        (&open, "acme-ops", "wrong-secret-0123456789", "does not match"),
        (&open, "nobody", "nobody-secret-0123456789", "does not match"),
        (&open, "beta", "beta-secret-0123456789", "has no credentials at platform aws-east"),
        (&acme_only, "beta", "beta-secret-0123456789", "reserved for another account"),
    ];
    for (endpoint, account, secret, reason) in refusals {
        let got = boto3(endpoint, account, secret, "one").await;
        assert_eq!(got["status"], json!(403), "{account}: {got}");
        let said = got["skybridge_error"].as_str().unwrap_or_default();
        assert!(said.contains(reason), "{account}: {got}");
    }

    // Without any authentication: 401 with a Basic challenge.
    let listen = open.trim_start_matches("http://");
    let mut client = tokio::net::TcpStream::connect(listen).await.expect("connect");
    let request = format!("GET / HTTP/1.1\r\nHost: {listen}\r\nConnection: close\r\n\r\n");
    client.write_all(request.as_bytes()).await.expect("send");
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.expect("answer");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("www-authenticate: basic realm=\"skybridge\""), "{answer}");
}

/// SigV4 as strict as AWS (issue 14, finding 7): a captured request replayed from another
/// address — to the same binding or another — a header added after signing, and a body
/// swapped after signing are each refused at the ingress, before anything is re-signed with
/// the real AWS key. The client itself may repeat a request (an SDK signing the same request
/// twice within a second signs it identically).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_and_altered_sigv4_requests_are_refused_before_they_are_resigned() {
    let (_moto, mesh) = moto_fronted_for_acme().await;
    let (one, other) = (http_binding(&mesh, None).await, http_binding(&mesh, None).await);
    let got = python_json("aws_tamper.py", &[&one, &other, "acme-ops", "acme-ops-secret-0123456789"]).await;
    assert_eq!(
        (got["first"]["status"].clone(), got["repeated"]["status"].clone()),
        (json!(200), json!(200)),
        "{got:#}"
    );
    for (case, reason) in [
        ("replayed", "used before from another address"),
        ("elsewhere", "used before from another address"),
        ("unsigned_acl", "`x-amz-acl` is not signed"),
        ("swapped_body", "not the x-amz-content-sha256"),
    ] {
        assert_eq!(got[case]["status"], json!(403), "{case}: {got:#}");
        let said = got[case]["error"].as_str().unwrap_or_default();
        assert!(said.contains(reason), "{case}: {got:#}");
    }
    // No tampered bucket reached moto.
    let listed = boto3(&one, "acme-ops", "acme-ops-secret-0123456789", "one").await;
    assert_eq!(listed["ok"], json!(true), "{listed}");
}

/// Run `tests/peers/azure_client.py` (azure-storage-blob) against `endpoint` as `account`.
async fn azure_sdk(endpoint: &str, account: &str, secret: &str, storage: &str, what: &str) -> Value {
    let mut command = peers_python();
    command.arg(peer_script("azure_client.py")).args([endpoint, account, secret, storage, what]);
    let out =
        tokio::task::spawn_blocking(move || command.output()).await.expect("task").expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "azure-storage-blob failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("azure-storage-blob printed {stdout:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_storage_blob_reaches_azurite_resigned_with_the_mapped_shared_key() {
    // A storage account whose key only Azurite and the mapping know.
    let key = skybridge_plugin_sdk::crypto::base64(&rand_bytes());
    let azurite = Azurite::start("westdata", &key);
    let mesh = TestMesh::start(cloud_topology("azure-west", azurite.port, "azure-adapter")).await;
    create_account(&mesh, "acme-ops", "acme-ops-secret-0123456789").await;
    map_account(&mesh, "acme-ops", "azure-west", "westdata", &key).await;
    create_account(&mesh, "beta", "beta-secret-0123456789").await;
    map_account(&mesh, "beta", "azure-west", "westdata", "d3Jvbmcta2V5LXdyb25nLWtleQ==").await;
    let endpoint = http_binding_to(&mesh, "azure-west", None).await;

    let got = azure_sdk(&endpoint, "acme-ops", "acme-ops-secret-0123456789", "westdata", "full").await;
    assert_eq!(got["put_get_equal"], json!(true), "{got}");
    assert_eq!(got["listed"], json!(["2026/q4.txt"]), "{got}");
    assert_eq!(got["containers"], json!(["reports"]), "{got}");

    let (_, sessions) = mesh.api("GET", "/v1/sessions", None).await;
    let sessions = sessions.as_array().expect("sessions");
    assert!(sessions.len() >= 5, "{sessions:?}");
    assert!(
        sessions
            .iter()
            .all(|s| s["third"]["principal"] == json!("westdata") && s["account"] == json!("acme-ops"))
    );

    // A wrong mapped key: Azurite's own 403 reaches the client unchanged.
    let got = azure_sdk(&endpoint, "beta", "beta-secret-0123456789", "westdata", "one").await;
    assert_eq!((got["status"].clone(), got["skybridge_error"].clone()), (json!(403), Value::Null), "{got}");
    assert_eq!(got["code"], json!("AuthorizationFailure"), "{got}");
    // A wrong Skybridge secret: refused at the ingress.
    let got = azure_sdk(&endpoint, "acme-ops", "not-the-secret-0123", "westdata", "one").await;
    assert_eq!(got["status"], json!(403), "{got}");
    assert!(got["skybridge_error"].as_str().unwrap_or_default().contains("does not match"), "{got}");
}

/// 32 random bytes (a storage account key).
fn rand_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
    let mut x = (seed as u64) | 1;
    for b in &mut bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    bytes
}

/// `GET path` through an `http` binding at `listen` with HTTP Basic `user`: (status, body).
async fn basic_get(listen: &str, path: &str, user: &str) -> (u16, String) {
    let auth = skybridge_plugin_sdk::crypto::base64(user.as_bytes());
    let mut client = tokio::net::TcpStream::connect(listen).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {listen}\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n"
    );
    client.write_all(request.as_bytes()).await.expect("send");
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.expect("answer");
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystone_calls_carry_an_injected_token_that_is_refreshed_when_expired_or_revoked() {
    let mut keystone = keystone(8);
    let (user, password) = (
        keystone.ready["user"].as_str().expect("user").to_owned(),
        keystone.ready["password"].as_str().expect("password").to_owned(),
    );
    let mesh = TestMesh::start(cloud_topology(
        "openstack-lab",
        keystone.ready["port"].as_u64().expect("port"),
        "openstack-adapter",
    ))
    .await;
    create_account(&mesh, "acme-ops", "acme-ops-secret-0123456789").await;
    let mapping =
        json!({ "principal": user, "secret": password, "attributes": { "project": "lab" } }).to_string();
    let (status, body) =
        mesh.api("PUT", "/v1/accounts/acme-ops/credentials/openstack-lab", Some(&mapping)).await;
    assert_eq!(status, 200, "{body}");
    let endpoint = http_binding_to(&mesh, "openstack-lab", None).await;
    let listen = endpoint.trim_start_matches("http://").to_owned();
    let account = "acme-ops:acme-ops-secret-0123456789";

    // The client has no Keystone credentials at all; the token Skybridge injects works.
    let (status, answer) = basic_get(&listen, "/v3/auth/projects", account).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"name\": \"lab\""), "the mapped user's projects: {answer}");
    let (status, _) = basic_get(&listen, "/v3/auth/projects", account).await;
    assert_eq!(status, 200);

    let token_expiries = |sessions: &Value| -> Vec<(u64, String)> {
        let mut all: Vec<(u64, u64, String)> = sessions
            .as_array()
            .expect("sessions")
            .iter()
            .map(|s| {
                (
                    s["id"].as_u64().unwrap_or(0),
                    s["third"]["token_expires_unix_s"].as_u64().unwrap_or(0),
                    s["outcome"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        all.sort();
        all.into_iter().map(|(_, e, o)| (e, o)).collect()
    };
    let (_, sessions) = mesh.api("GET", "/v1/sessions", None).await;
    let seen = token_expiries(&sessions);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].0 > 0 && seen[0] == seen[1], "the second call reused the cached token: {seen:?}");

    // Revoked behind Skybridge's back: Keystone says 401 to the cached token; Skybridge fetches
    // a new one and retries, and the client sees only the success.
    assert_eq!(keystone.command("revoke"), "revoked");
    let (status, answer) = basic_get(&listen, "/v3/auth/projects", account).await;
    assert_eq!(status, 200, "{answer}");
    let (_, sessions) = mesh.api("GET", "/v1/sessions", None).await;
    let seen = token_expiries(&sessions);
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(seen[2].1, "HTTP 401", "the revoked token's attempt: {seen:?}");
    assert_eq!(seen[3].1, "HTTP 200", "{seen:?}");
    assert!(seen[3].0 >= seen[2].0, "a new token: {seen:?}");

    // Expired: past the new token's expiry the next call gets another one, unprompted.
    let expires = seen[3].0;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    tokio::time::sleep(std::time::Duration::from_secs(expires.saturating_sub(now) + 1)).await;
    let (status, answer) = basic_get(&listen, "/v3/auth/projects", account).await;
    assert_eq!(status, 200, "{answer}");
    let (_, sessions) = mesh.api("GET", "/v1/sessions", None).await;
    let seen = token_expiries(&sessions);
    assert_eq!(seen.len(), 5, "no failed attempt: the expired token was never sent: {seen:?}");
    assert!(seen[4].0 > expires && seen[4].1 == "HTTP 200", "{seen:?}");

    // A wrong password in the mapping (changing it drops the cached token at once): Keystone's
    // refusal, as a clear 502.
    let wrong = json!({ "principal": user, "secret": "wrong-password", "attributes": { "project": "lab" } })
        .to_string();
    mesh.api("PUT", "/v1/accounts/acme-ops/credentials/openstack-lab", Some(&wrong)).await;
    let (status, answer) = basic_get(&listen, "/v3/auth/projects", account).await;
    assert_eq!(status, 502, "{answer}");
    assert!(answer.contains("Keystone refused the mapped credentials (401)"), "{answer}");
}
