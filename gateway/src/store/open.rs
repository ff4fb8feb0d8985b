//! Opening the store a controller's configuration names (`store`): one redb file, or — for a
//! group of controllers — etcd for the shared state plus a local redb file
//! ([`super::shared`]). The etcd client is not part of this library (it needs `protoc` to
//! build); the binary built with it supplies a [`Connect`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::Store;
use super::kv::seal::SealKey;
use super::kv::{Kv, KvError};
use super::shared::SharedStore;
use crate::config::{EtcdStoreConfig, StoreConfig};

/// Connects to etcd: what `[store] kind = "etcd"` needs.
#[async_trait::async_trait]
pub trait Connect: Send + Sync {
    /// A client of the members `config` names.
    async fn connect(&self, config: &EtcdStoreConfig) -> Result<Arc<dyn Kv>, KvError>;
}

/// What the controllers of a group share besides the store's records: the key-value store
/// itself (ids, the cluster's secret, leases), the seal key, and where their keys live.
#[derive(Clone)]
pub struct Group {
    /// The shared engine.
    pub kv: Arc<dyn Kv>,
    /// Seals secrets before they are stored.
    pub seal: Arc<SealKey>,
    /// Every key starts with it.
    pub prefix: String,
    /// The TTL of each controller's lease.
    pub lease_ttl: Duration,
}

impl Group {
    /// The shared key `rest` (under the group's prefix).
    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }
}

/// An opened store, and the group when the controller is in one.
pub struct Opened {
    /// The controller's store.
    pub store: Store,
    /// Set for `kind = "etcd"`.
    pub group: Option<Group>,
}

/// What this build says when a configuration asks for etcd and it has no client.
pub const NO_ETCD: &str = "this skybridge was built without etcd support: build it with \
     `cargo build --release -p skybridge --features etcd` (which needs protoc: Debian's \
     protobuf-compiler and libprotobuf-dev)";

/// Open the store `config` names; `etcd` connects to etcd when it is built in.
pub async fn open(config: &StoreConfig, etcd: Option<&dyn Connect>) -> anyhow::Result<Opened> {
    match config {
        StoreConfig::Redb { path } => {
            let store =
                Store::open_redb(path).with_context(|| format!("opening the store {}", path.display()))?;
            Ok(Opened { store, group: None })
        }
        StoreConfig::Etcd(etcd_config) => {
            let connect = etcd.ok_or_else(|| anyhow::anyhow!("`[store] kind = \"etcd\"`: {NO_ETCD}"))?;
            let seal = SealKey::from_file(&etcd_config.seal_key).context("store.seal_key")?;
            let seal = Arc::new(seal);
            let kv = connect
                .connect(etcd_config)
                .await
                .with_context(|| format!("connecting to etcd at {}", etcd_config.endpoints.join(", ")))?;
            let shared = SharedStore::open(
                Arc::clone(&kv),
                &etcd_config.prefix,
                Arc::clone(&seal),
                &etcd_config.local,
            )
            .await
            .context("opening the shared store")?;
            let group = Group {
                kv,
                seal,
                prefix: etcd_config.prefix.clone(),
                lease_ttl: Duration::from_secs(etcd_config.lease_ttl_s),
            };
            Ok(Opened { store: Store::new(Arc::new(shared)), group: Some(group) })
        }
    }
}
