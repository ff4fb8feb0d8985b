//! The key-value conformance suite on a real etcd (Debian's `etcd-server`, which
//! `cargo xtask test` installs), as separate processes: one member, then a three-member
//! cluster with one member killed.

use std::process::Command;
use std::time::{Duration, Instant};

use skybridge_gateway::store::kv::{Kv, KvError};
use skybridge_gateway::testkit::etcd::{Member, MemberTls};
use skybridge_store_etcd::{EtcdKv, EtcdTls};

/// Start a cluster of `n` members on loopback.
fn cluster(n: usize) -> Vec<Member> {
    cluster_with(n, None)
}

/// A CA and certificates made for the test: the members', a client's, and a client's from
/// another CA.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).expect("write");
        let ca = |name: &str| {
            let params = || {
                let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
                p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                p
            };
            let key = KeyPair::generate().expect("key");
            write(&format!("{name}.pem"), params().self_signed(&key).expect("CA").pem());
            Issuer::new(params(), key)
        };
        let (ours, theirs) = (ca("ca"), ca("other-ca"));
        let leaf = |name: &str, issuer: &Issuer<'_, KeyPair>, names: &[&str]| {
            let key = KeyPair::generate().expect("key");
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            let cert = CertificateParams::new(names).expect("params").signed_by(&key, issuer).expect("sign");
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        };
        leaf("member", &ours, &["localhost", "127.0.0.1"]);
        leaf("controller", &ours, &["controller-1"]);
        leaf("stranger", &theirs, &["controller-1"]);
        Pki { dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// TLS as `who` (`None`: no client certificate).
    fn client(&self, who: Option<&str>) -> EtcdTls {
        EtcdTls {
            ca: self.path("ca.pem"),
            identity: who.map(|w| (self.path(&format!("{w}.pem")), self.path(&format!("{w}.key")))),
            server_name: Some("localhost".into()),
        }
    }
}

/// Start a cluster of `n` members on loopback; with `pki`, clients must present a certificate
/// from its CA (etcd's `--client-cert-auth`).
fn cluster_with(n: usize, pki: Option<&Pki>) -> Vec<Member> {
    let tls = pki.map(|p| MemberTls {
        cert: p.path("member.pem"),
        key: p.path("member.key"),
        ca: p.path("ca.pem"),
    });
    skybridge_gateway::testkit::etcd::cluster(n, tls.as_ref())
}

/// A client of `members`, once the cluster answers.
async fn connect(members: &[Member]) -> EtcdKv {
    connect_with(members, None).await
}

async fn connect_with(members: &[Member], tls: Option<&EtcdTls>) -> EtcdKv {
    let endpoints: Vec<String> = members.iter().map(|m| m.client_url.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(kv) = EtcdKv::connect(&endpoints, tls).await
            && kv.get("ready").await.is_ok()
        {
            return kv;
        }
        assert!(Instant::now() < deadline, "etcd at {endpoints:?} did not answer within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_passes_the_conformance_suite() {
    let members = cluster(1);
    let kv = connect(&members).await;
    skybridge_gateway::testkit::kv::conformance(&kv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_passes_the_conformance_suite_with_one_of_three_members_killed() {
    let mut members = cluster(3);
    let kv = connect(&members).await;
    // The client keeps all three endpoints; one of them is now dead.
    let killed = members.remove(0);
    drop(killed);
    skybridge_gateway::testkit::kv::conformance(&kv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_held_on_etcd_stays_while_renewed_and_its_keys_go_when_it_is_let_go() {
    use skybridge_gateway::store::kv::{Commit, Op, lease};
    let members = cluster(1);
    let kv: std::sync::Arc<dyn Kv> = std::sync::Arc::new(connect(&members).await);
    let ttl = Duration::from_secs(2);
    let held = lease::hold(std::sync::Arc::clone(&kv), ttl).await.expect("hold");
    let owned = Op::Put { key: "owner/bindings/7".into(), value: b"c1".to_vec(), lease: Some(held.id) };
    assert!(matches!(kv.commit(&[], &[owned]).await, Ok(Commit::Applied(_))));
    tokio::time::sleep(ttl * 3).await;
    assert!(held.held(), "renewed on etcd for three TTLs");
    assert!(kv.get("owner/bindings/7").await.expect("get").is_some());
    drop(held);
    let deadline = Instant::now() + ttl * 4;
    while kv.get("owner/bindings/7").await.expect("get").is_some() {
        assert!(Instant::now() < deadline, "the key outlived its lease by 4 TTLs");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_with_mutual_tls_passes_the_suite_and_refuses_clients_without_its_cas_certificate() {
    let pki = Pki::new();
    let members = cluster_with(1, Some(&pki));
    let kv = connect_with(&members, Some(&pki.client(Some("controller")))).await;
    skybridge_gateway::testkit::kv::conformance(&kv).await;

    let endpoints = vec![members[0].client_url.clone()];
    // Refused for good (not "unavailable", which would be retried): the certificate is wrong.
    let refused = |answer: Result<Option<skybridge_gateway::store::kv::Item>, KvError>| matches!(answer, Err(KvError::Backend(ref e)) if e.contains("certificate") || e.contains("Certificate"));
    // A certificate from another CA: the member refuses the handshake.
    let stranger = EtcdKv::connect(&endpoints, Some(&pki.client(Some("stranger")))).await;
    assert!(
        match &stranger {
            Err(_) => true,
            Ok(kv) => refused(kv.get("anything").await),
        },
        "a client certificate from another CA was accepted"
    );
    // TLS, but no client certificate.
    let anonymous = EtcdKv::connect(&endpoints, Some(&pki.client(None))).await;
    assert!(
        match &anonymous {
            Err(_) => true,
            Ok(kv) => refused(kv.get("anything").await),
        },
        "a client without a certificate was served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_from_etcd_are_unique_across_allocators() {
    let members = cluster(1);
    let kv = connect(&members).await;
    skybridge_gateway::testkit::kv::ids_are_unique_across_allocators(std::sync::Arc::new(kv)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_secret_reads_as_sealed_bytes_through_etcdctl_and_opens_with_the_cluster_key() {
    use skybridge_gateway::store::kv::Op;
    use skybridge_gateway::store::kv::seal::SealKey;
    let members = cluster(1);
    let kv = connect(&members).await;
    let seal = SealKey::new(&[42; 32]);
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let key = "accounts/acme-ops/credentials/site-b";
    kv.commit(&[], &[Op::put(key, seal.seal(key, secret.as_bytes()).expect("seal"))]).await.expect("commit");

    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &members[0].client_url, "get", key, "--print-value-only"])
        .output()
        .expect("etcdctl runs (cargo xtask test installs Debian's etcd-client)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.starts_with(b"sb1"), "etcdctl shows the sealed format");
    assert!(
        !out.stdout.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the secret is in etcd in clear"
    );
    let stored = kv.get(key).await.expect("get").expect("the key");
    assert_eq!(seal.open(key, &stored.value).expect("opens"), secret.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_follows_etcd() {
    let members = cluster(1);
    let kv = connect(&members).await;
    skybridge_gateway::testkit::kv::a_mirror_follows_the_store(std::sync::Arc::new(kv)).await;
}

/// The controller's store on etcd: what a controller of a group runs on.
async fn shared_store(
    kv: EtcdKv,
    local: &std::path::Path,
) -> std::sync::Arc<skybridge_gateway::store::shared::SharedStore> {
    use skybridge_gateway::store::kv::seal::SealKey;
    use skybridge_gateway::store::shared::SharedStore;
    let kv: std::sync::Arc<dyn Kv> = std::sync::Arc::new(kv);
    let store = SharedStore::open(kv, "skybridge/", std::sync::Arc::new(SealKey::new(&[9; 32])), local)
        .await
        .expect("open");
    std::sync::Arc::new(store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_store_on_etcd_passes_the_store_suite_and_account_secrets_are_sealed_in_etcd() {
    use skybridge_gateway::session::accounts::{Account, Credentials};
    use skybridge_gateway::store::Backend;
    let members = cluster(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = shared_store(connect(&members).await, &dir.path().join("local.redb")).await;
    let s = std::sync::Arc::clone(&store);
    tokio::task::spawn_blocking(move || skybridge_gateway::testkit::store::conformance(s.as_ref()))
        .await
        .expect("the store suite passes on etcd");

    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let mut account = Account {
        id: "acme-ops".into(),
        secret: "account-secret-0123456789".into(),
        created_unix_ms: 1,
        credentials: Default::default(),
    };
    let aws = Credentials {
        principal: "AKIDEXAMPLE".into(),
        secret: secret.into(),
        attributes: Default::default(),
    };
    account.credentials.insert("site-b".into(), aws);
    let s = std::sync::Arc::clone(&store);
    tokio::task::spawn_blocking(move || s.insert_account(&account)).await.expect("join").expect("stored");

    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &members[0].client_url, "get", "skybridge/accounts/", "--prefix"])
        .output()
        .expect("etcdctl runs (cargo xtask test installs Debian's etcd-client)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("skybridge/accounts/acme-ops"), "etcdctl lists the account: {shown}");
    for clear in [secret, "account-secret-0123456789", "AKIDEXAMPLE"] {
        assert!(!shown.contains(clear), "`{clear}` is in etcd in clear: {shown}");
    }
    let s = std::sync::Arc::clone(&store);
    let read = tokio::task::spawn_blocking(move || s.account("acme-ops")).await.expect("join").expect("read");
    assert_eq!(read.expect("the account").credentials["site-b"].secret, secret, "it opens with the seal key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_granting_one_capability_at_once_on_etcd_make_one_entry() {
    let members = cluster(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = connect(&members).await;
    skybridge_gateway::testkit::store::concurrent_grants(std::sync::Arc::new(kv), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_larger_than_grpcs_default_message_comes_back_whole() {
    use skybridge_gateway::store::kv::Op;
    let members = cluster(1);
    let kv = connect(&members).await;
    // Ten values of 600 KiB: 6 MB in one page, past gRPC's default 4 MiB answer.
    let value = vec![b'x'; 600 << 10];
    for i in 0..10 {
        kv.commit(&[], &[Op::put(format!("big/{i:02}"), value.clone())]).await.expect("commit");
    }
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = kv.list("big/", after.as_deref(), 10).await.expect("listed");
        after = page.items.last().map(|i| i.key.clone());
        items.extend(page.items);
        if !page.more {
            break;
        }
    }
    assert_eq!(items.len(), 10);
    assert!(items.iter().all(|i| i.value.len() == 600 << 10));
}
