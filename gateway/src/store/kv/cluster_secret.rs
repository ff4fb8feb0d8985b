//! One secret for a whole cluster of controllers (issue 17, item 3: the key that signs hop
//! grants; today each controller makes its own at start, so a relay registered with one refuses
//! grants signed by another). The first controller to start writes a random one, sealed; every
//! other reads that one — a create guarded by the key's absence, so two starting at once still
//! agree.

use ring::rand::{SecureRandom, SystemRandom};

use super::seal::SealKey;
use super::{Commit, Condition, Kv, KvError, Op};

/// The cluster's secret under `key`: the stored one, or a new random one stored now.
pub async fn cluster_secret(kv: &dyn Kv, key: &str, seal: &SealKey) -> Result<[u8; 32], KvError> {
    let unseal = |value: &[u8]| -> Result<[u8; 32], KvError> {
        let plain = seal.open(key, value).map_err(|e| KvError::Backend(e.to_string()))?;
        plain
            .as_slice()
            .try_into()
            .map_err(|_| KvError::Backend(format!("the secret under `{key}` is not 32 bytes")))
    };
    if let Some(item) = kv.get(key).await? {
        return unseal(&item.value);
    }
    let mut fresh = [0u8; 32];
    SystemRandom::new()
        .fill(&mut fresh)
        .map_err(|_| KvError::Backend("no randomness for a secret".into()))?;
    let sealed = seal.seal(key, &fresh).map_err(|e| KvError::Backend(e.to_string()))?;
    match kv.commit(&[Condition::Absent(key.to_owned())], &[Op::put(key, sealed)]).await? {
        Commit::Applied(_) => Ok(fresh),
        // Another controller wrote it first: use theirs.
        Commit::ConditionFailed => match kv.get(key).await? {
            Some(item) => unseal(&item.value),
            None => Err(KvError::Backend(format!("the secret under `{key}` was written, then removed"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::kv::redb::RedbKv;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn controllers_starting_at_once_agree_on_one_sealed_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv: Arc<dyn Kv> = Arc::new(RedbKv::open(&dir.path().join("kv.redb")).expect("open"));
        let seal = Arc::new(SealKey::new(&[3; 32]));
        let starts: Vec<_> = (0..8)
            .map(|_| {
                let (kv, seal) = (Arc::clone(&kv), Arc::clone(&seal));
                tokio::spawn(async move { cluster_secret(kv.as_ref(), "cluster/hop-key", &seal).await })
            })
            .collect();
        let mut secrets = Vec::new();
        for start in starts {
            secrets.push(start.await.expect("task").expect("a secret"));
        }
        assert!(secrets.windows(2).all(|w| w[0] == w[1]), "every controller got the same secret");
        let stored = kv.get("cluster/hop-key").await.expect("get").expect("stored");
        assert!(!stored.value.windows(32).any(|w| w == secrets[0]), "stored sealed, not in clear");
        // A controller with another sealing key cannot read it: a clear error, not another secret.
        let other = SealKey::new(&[4; 32]);
        let refused = cluster_secret(kv.as_ref(), "cluster/hop-key", &other).await;
        assert!(
            matches!(refused, Err(KvError::Backend(ref e)) if e.contains("does not open")),
            "{refused:?}"
        );
    }
}
