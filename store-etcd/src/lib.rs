//! # The etcd engine of Skybridge's key-value store
//!
//! [`EtcdKv`] implements [`Kv`] on etcd's v3 API (the `etcd-client` crate), for several
//! controllers sharing state: commits are etcd transactions, leases are etcd leases, watches
//! are etcd watches. What etcd's Rust client does not do by itself (`../shared/HA.md`), this
//! layer does:
//!
//! - calls that fail because a member is unreachable (`Unavailable`, `Unknown`, transport
//!   errors, timeouts) are retried with backoff for up to [`RETRY_FOR`]; a retried commit whose
//!   first attempt may have applied is safe when it carries conditions that the first attempt
//!   made false — the callers' commits do;
//! - a watch whose stream breaks is re-opened from the revision after the last one delivered;
//!   one whose revision was compacted says [`WatchEvent::Relist`];
//! - an expired or revoked lease is reported as [`KvError::LeaseLost`] (etcd says "lease not
//!   found" rather than a TTL of 0);
//! - HTTP/2 keep-alive pings every 10 s: etcd closes connections that ping more often than
//!   every 5 s, and with them the idle watch streams.
//!
//! Keys are UTF-8, as [`Kv`] says; values and bounds are the interface's.

use std::future::Future;
use std::time::Duration;

use std::path::{Path, PathBuf};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity, KeyValue,
    PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};
use skybridge_gateway::file;
use skybridge_gateway::store::kv::{
    Commit, Condition, Item, Kv, KvError, LeaseId, Listing, MAX_LIST, Op, Revision, Watch, WatchEvent,
    check_commit, check_key, ttl_seconds,
};
use tokio::sync::mpsc;
use tonic::Code as tonic_code;

/// How long a call is retried while etcd is unavailable.
pub const RETRY_FOR: Duration = Duration::from_secs(10);
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer taken from etcd (gRPC's default is 4 MiB; a listing shrinks its page
/// to fit, a watch answer carries at most one commit's changes: under etcd's request limit).
const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Events a watch may have waiting before its consumer takes them.
const WATCH_BUFFER: usize = 1024;

/// See the crate docs.
#[derive(Clone)]
pub struct EtcdKv {
    client: Client,
}

/// TLS to etcd: the CA that signed the members' certificates, and — for etcd's
/// `--client-cert-auth`, mutual TLS — the client's own certificate and key (PEM files).
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The client certificate and its key.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name the members' certificates are checked for (default: the endpoint's host).
    pub server_name: Option<String>,
}

impl EtcdTls {
    fn options(&self) -> Result<TlsOptions, KvError> {
        let read = |path: &Path, what: &'static str| {
            file::read_to_string(path, file::MAX_PEM_BYTES, what).map_err(|e| KvError::Backend(e.to_string()))
        };
        let mut tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca, "the etcd CA certificate")?));
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(
                read(cert, "the etcd client certificate")?,
                read(key, "the etcd client key")?,
            ));
        }
        if let Some(name) = &self.server_name {
            tls = tls.domain_name(name.clone());
        }
        Ok(tls)
    }
}

impl EtcdKv {
    /// Connect to the etcd members at `endpoints` (`http://host:port`, or `https://` with
    /// `tls`).
    pub async fn connect(endpoints: &[String], tls: Option<&EtcdTls>) -> Result<EtcdKv, KvError> {
        let mut options = ConnectOptions::new()
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(REQUEST_TIMEOUT);
        if let Some(tls) = tls {
            options = options.with_tls(tls.options()?);
        }
        let client = retry("connecting", || {
            let options = options.clone();
            async move { Client::connect(endpoints, Some(options)).await }
        })
        .await?;
        Ok(EtcdKv { client })
    }
}

/// Whether an etcd error is worth retrying: the member was unreachable or did not answer. A
/// TLS handshake that failed on a certificate (either side refusing the other's) is not: it
/// fails the same way every time, and is reported at once.
fn transient(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    let text = e.to_string();
    if ["fatal alert", "invalid peer certificate"].iter().any(|m| text.contains(m)) {
        return false;
    }
    match e {
        E::TransportError(_) | E::IoError(_) => true,
        E::GRpcStatus(s) => {
            matches!(
                s.code(),
                tonic_code::Unavailable
                    | tonic_code::Unknown
                    | tonic_code::DeadlineExceeded
                    | tonic_code::Cancelled
            ) && !s.message().contains("lease not found")
        }
        _ => false,
    }
}

/// Translate an etcd error.
fn error(doing: &str, e: etcd_client::Error) -> KvError {
    let text = e.to_string();
    if text.contains("lease not found") {
        // The caller knows which lease; see `lease_error`.
        return KvError::LeaseLost(0);
    }
    if text.contains("has been compacted") {
        return KvError::Compacted(0);
    }
    if transient(&e) {
        return KvError::Unavailable(format!("{doing}: {text}"));
    }
    KvError::Backend(format!("{doing}: {text}"))
}

/// Run `call` until it succeeds, fails for good, or [`RETRY_FOR`] has passed.
async fn retry<T, F, Fut>(doing: &str, mut call: F) -> Result<T, KvError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + RETRY_FOR;
    let mut pause = Duration::from_millis(50);
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if transient(&e) && tokio::time::Instant::now() + pause < deadline => {
                tracing::debug!("etcd {doing} failed, retrying in {pause:?}: {e}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(error(doing, e)),
        }
    }
}

fn revision(r: i64) -> Revision {
    u64::try_from(r).unwrap_or(0)
}

fn item(kv: &KeyValue) -> Result<Item, KvError> {
    Ok(Item {
        key: kv.key_str().map_err(|e| KvError::Backend(format!("a key that is not UTF-8: {e}")))?.to_owned(),
        value: kv.value().to_vec(),
        create_revision: revision(kv.create_revision()),
        mod_revision: revision(kv.mod_revision()),
        lease: (kv.lease() != 0).then_some(kv.lease()),
    })
}

/// The first key after every key starting with `prefix` (etcd's prefix range end); `\0` —
/// every key — for the empty prefix.
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[async_trait::async_trait]
impl Kv for EtcdKv {
    async fn get(&self, key: &str) -> Result<Option<Item>, KvError> {
        check_key(key)?;
        let response = retry("reading a key", || {
            let mut client = self.client.clone();
            async move { client.get(key, None).await }
        })
        .await?;
        response.kvs().first().map(item).transpose()
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Listing, KvError> {
        let limit = limit.clamp(1, MAX_LIST);
        let from: Vec<u8> = match start_after {
            Some(a) if a >= prefix => [a.as_bytes(), b"\0"].concat(),
            _ if prefix.is_empty() => vec![0],
            _ => prefix.as_bytes().to_vec(),
        };
        // A page is one gRPC message: its keys and values may pass any size limit, so the page
        // shrinks until it fits (found listing 100,000 catalog entries: 5 MB for 10,000 keys).
        let mut limit = limit;
        let response = loop {
            let options = GetOptions::new().with_range(range_end(prefix)).with_limit(limit as i64);
            let listed = retry("listing keys", || {
                let client = self.client.kv_client().max_decoding_message_size(MAX_MESSAGE_BYTES);
                let (mut client, from, options) = (client, from.clone(), options.clone());
                async move { client.get(from, Some(options)).await }
            })
            .await;
            match listed {
                Err(KvError::Backend(why)) if why.contains("message length too large") && limit > 1 => {
                    limit /= 2;
                }
                other => break other?,
            }
        };
        let items = response.kvs().iter().map(item).collect::<Result<Vec<_>, _>>()?;
        let revision = response.header().map_or(0, |h| revision(h.revision()));
        Ok(Listing { items, revision, more: response.more() })
    }

    async fn commit(&self, conditions: &[Condition], ops: &[Op]) -> Result<Commit, KvError> {
        check_commit(conditions, ops)?;
        let compares: Vec<Compare> = conditions
            .iter()
            .map(|c| match c {
                Condition::Absent(k) => Compare::version(k.as_str(), CompareOp::Equal, 0),
                Condition::Present(k) => Compare::version(k.as_str(), CompareOp::Greater, 0),
                Condition::ModRevision(k, r) => {
                    Compare::mod_revision(k.as_str(), CompareOp::Equal, i64::try_from(*r).unwrap_or(i64::MAX))
                }
                Condition::CreateRevision(k, r) => Compare::create_revision(
                    k.as_str(),
                    CompareOp::Equal,
                    i64::try_from(*r).unwrap_or(i64::MAX),
                ),
            })
            .collect();
        let txn_ops: Vec<TxnOp> = ops
            .iter()
            .map(|o| match o {
                Op::Put { key, value, lease } => {
                    TxnOp::put(key.as_str(), value.clone(), lease.map(|l| PutOptions::new().with_lease(l)))
                }
                Op::Delete(key) => TxnOp::delete(key.as_str(), None),
            })
            .collect();
        let leases: Vec<LeaseId> =
            ops.iter().filter_map(|o| if let Op::Put { lease, .. } = o { *lease } else { None }).collect();
        let response = retry("committing", || {
            let mut client = self.client.clone();
            let txn = Txn::new().when(compares.clone()).and_then(txn_ops.clone());
            async move { client.txn(txn).await }
        })
        .await
        .map_err(|e| match e {
            KvError::LeaseLost(_) => KvError::LeaseLost(leases.first().copied().unwrap_or(0)),
            other => other,
        })?;
        if !response.succeeded() {
            return Ok(Commit::ConditionFailed);
        }
        Ok(Commit::Applied(response.header().map_or(0, |h| revision(h.revision()))))
    }

    async fn grant(&self, ttl: Duration) -> Result<LeaseId, KvError> {
        let ttl = ttl_seconds(ttl);
        let response = retry("granting a lease", || {
            let mut client = self.client.clone();
            async move { client.lease_grant(ttl, None).await }
        })
        .await?;
        Ok(response.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), KvError> {
        let ttl = retry("renewing a lease", || {
            let mut client = self.client.clone();
            async move {
                let (mut keeper, mut answers) = client.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                Ok(answers.message().await?.map_or(0, |a| a.ttl()))
            }
        })
        .await
        .map_err(|e| match e {
            KvError::LeaseLost(_) => KvError::LeaseLost(lease),
            other => other,
        })?;
        if ttl <= 0 { Err(KvError::LeaseLost(lease)) } else { Ok(()) }
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), KvError> {
        match retry("revoking a lease", || {
            let mut client = self.client.clone();
            async move { client.lease_revoke(lease).await }
        })
        .await
        {
            Ok(_) | Err(KvError::LeaseLost(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, KvError> {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(follow(self.client.clone(), prefix.to_owned(), after, tx));
        Ok(rx)
    }

    async fn compact(&self, to: Revision) -> Result<(), KvError> {
        let to = i64::try_from(to).unwrap_or(i64::MAX);
        match retry("compacting", || {
            let mut client = self.client.clone();
            async move { client.compact(to, None).await }
        })
        .await
        {
            Ok(_) | Err(KvError::Compacted(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Deliver the changes under `prefix` after `after` to `tx` until it closes, re-opening the
/// etcd watch from the next revision whenever its stream breaks.
async fn follow(client: Client, prefix: String, mut after: Revision, tx: mpsc::Sender<WatchEvent>) {
    let mut pause = Duration::from_millis(50);
    while !tx.is_closed() {
        let options = WatchOptions::new()
            .with_range(range_end(&prefix))
            .with_start_revision(i64::try_from(after + 1).unwrap_or(i64::MAX));
        let key = if prefix.is_empty() { vec![0] } else { prefix.as_bytes().to_vec() };
        let mut watcher = client.watch_client().max_decoding_message_size(MAX_MESSAGE_BYTES);
        let mut stream = match watcher.watch(key, Some(options)).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!("etcd watch on `{prefix}` not opened, retrying in {pause:?}: {e}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        loop {
            let response = match stream.message().await {
                Ok(Some(r)) => r,
                Ok(None) | Err(_) => break,
            };
            pause = Duration::from_millis(50);
            if response.compact_revision() > 0 {
                let _ = tx.send(WatchEvent::Relist).await;
                return;
            }
            if response.canceled() {
                break;
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let change = match (event.event_type(), item(kv)) {
                    (EventType::Put, Ok(i)) => WatchEvent::Put(i),
                    (EventType::Delete, Ok(i)) => WatchEvent::Delete { key: i.key, revision: i.mod_revision },
                    (_, Err(e)) => {
                        tracing::warn!("etcd watch on `{prefix}`: {e}");
                        continue;
                    }
                };
                after = after.max(revision(kv.mod_revision()));
                if tx.send(change).await.is_err() {
                    return;
                }
            }
        }
        // The stream ended: re-open it, not in a tight loop if it keeps ending at once.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// Connects a controller to etcd as its configuration's `[store]` says: what the `skybridge`
/// binary built with its `etcd` feature hands the controller.
pub struct Connector;

#[async_trait::async_trait]
impl skybridge_gateway::store::open::Connect for Connector {
    async fn connect(
        &self,
        config: &skybridge_gateway::config::EtcdStoreConfig,
    ) -> Result<std::sync::Arc<dyn Kv>, KvError> {
        let tls = config.tls.as_ref().map(|t| EtcdTls {
            ca: t.ca.clone(),
            identity: t.cert.clone().zip(t.key.clone()),
            server_name: t.server_name.clone(),
        });
        Ok(std::sync::Arc::new(EtcdKv::connect(&config.endpoints, tls.as_ref()).await?))
    }
}
