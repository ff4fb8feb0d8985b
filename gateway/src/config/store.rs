//! `store`: where a controller keeps its state — a redb file, or etcd shared by a group of
//! controllers (`[store] kind = "etcd"`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Resolve, require};

/// Where a controller keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// One redb file: a controller on its own (`store = "state/controller.redb"`, or
    /// `[store]` with `kind = "redb"` and `path`). The default; needs nothing else.
    Redb {
        /// The file.
        path: PathBuf,
    },
    /// etcd, shared by a group of controllers (`[store]` with `kind = "etcd"`).
    Etcd(EtcdStoreConfig),
}

impl StoreConfig {
    /// The local redb file: all the state on redb; the controller's own part (decisions, the
    /// audit, inventories) on etcd.
    pub fn local_path(&self) -> &Path {
        match self {
            StoreConfig::Redb { path } => path,
            StoreConfig::Etcd(etcd) => &etcd.local,
        }
    }
}

/// `[store] kind = "etcd"`: the shared state of a group of controllers on an etcd cluster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdStoreConfig {
    /// The members' client URLs (`http://host:2379`, or `https://` with `[store.tls]`); every
    /// member, so that the client can fail over.
    pub endpoints: Vec<String>,
    /// This controller's own redb file: its decision records, its audit, the inventories its
    /// sites reported to it.
    pub local: PathBuf,
    /// The key that seals account secrets before they are stored: a file of 32 random bytes
    /// in base64 (`head -c 32 /dev/urandom | base64`), the same on every controller.
    pub seal_key: PathBuf,
    /// The prefix of every key (several groups may share one etcd).
    #[serde(default = "default_etcd_prefix")]
    pub prefix: String,
    /// The TTL of the controller's lease (s): how soon the others notice its death.
    #[serde(default = "default_lease_ttl_s")]
    pub lease_ttl_s: u64,
    /// TLS to etcd (mutual, with `cert` and `key`).
    #[serde(default)]
    pub tls: Option<EtcdTlsFiles>,
}

fn default_etcd_prefix() -> String {
    "skybridge/".into()
}

/// A dead controller's bindings are taken over once its lease expires: 3.3–5 s after the
/// death at this TTL (renewals every third of it), leaving time for the new tunnel within 10 s.
fn default_lease_ttl_s() -> u64 {
    5
}

/// `[store.tls]`: the CA that signed the etcd members' certificates and, for etcd's
/// `--client-cert-auth`, this controller's client certificate and key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTlsFiles {
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    /// The client certificate (PEM).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The client key (PEM).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The name the members' certificates are checked for (default: the endpoint's host).
    #[serde(default)]
    pub server_name: Option<String>,
}

/// `[store]` as a table: `kind` says which.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum StoreTable {
    Redb(RedbTable),
    Etcd(EtcdStoreConfig),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedbTable {
    path: PathBuf,
}

impl<'de> Deserialize<'de> for StoreConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StoreConfig, D::Error> {
        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = StoreConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a redb file's path, or a table with kind = \"redb\" or kind = \"etcd\"")
            }
            fn visit_str<E: serde::de::Error>(self, path: &str) -> Result<StoreConfig, E> {
                Ok(StoreConfig::Redb { path: path.into() })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<StoreConfig, A::Error> {
                let table = StoreTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(match table {
                    StoreTable::Redb(RedbTable { path }) => StoreConfig::Redb { path },
                    StoreTable::Etcd(etcd) => StoreConfig::Etcd(etcd),
                })
            }
        }
        d.deserialize_any(Either)
    }
}

impl Resolve for StoreConfig {
    fn resolve(&mut self, base: &Path) {
        match self {
            StoreConfig::Redb { path } => *path = base.join(&*path),
            StoreConfig::Etcd(etcd) => {
                etcd.local = base.join(&etcd.local);
                etcd.seal_key = base.join(&etcd.seal_key);
                if let Some(tls) = &mut etcd.tls {
                    tls.ca = base.join(&tls.ca);
                    for file in [&mut tls.cert, &mut tls.key].into_iter().flatten() {
                        *file = base.join(&*file);
                    }
                }
            }
        }
    }

    fn check(&self) -> Result<(), String> {
        let StoreConfig::Etcd(etcd) = self else { return Ok(()) };
        require(!etcd.endpoints.is_empty(), "store.endpoints", "must name at least one etcd member")?;
        for url in &etcd.endpoints {
            let tls = url.starts_with("https://");
            require(tls || url.starts_with("http://"), "store.endpoints", "are http:// or https:// URLs")?;
            require(
                !tls || etcd.tls.is_some(),
                "store.tls",
                "is needed for https:// endpoints (the CA that signed the members' certificates)",
            )?;
        }
        require(
            (2..=300).contains(&etcd.lease_ttl_s),
            "store.lease_ttl_s",
            "must be between 2 (etcd's shortest with its default timings) and 300",
        )?;
        require(!etcd.prefix.is_empty() && etcd.prefix.ends_with('/'), "store.prefix", "must end with `/`")?;
        if let Some(tls) = &etcd.tls {
            require(
                tls.cert.is_some() == tls.key.is_some(),
                "store.tls",
                "needs both cert and key, or neither",
            )?;
        }
        Ok(())
    }
}
