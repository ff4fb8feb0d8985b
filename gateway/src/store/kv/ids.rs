//! Ids unique across controllers (issue 17, item 3: bindings, tunnels and decisions may not
//! collide when several controllers make them). Each controller takes a block of ids from one
//! counter key with a compare-and-swap, then hands them out without asking the store until the
//! block is used up; a controller that stops leaves the rest of its block unused — gaps, never
//! duplicates. The counter holds the last id given out in any block, as decimal text.

use std::sync::Arc;

use tokio::sync::Mutex;

use super::{Commit, Condition, Kv, KvError, Op};

/// How often a claim may lose the race to other controllers before giving up.
const MAX_CLAIM_ATTEMPTS: usize = 100;

/// See the module docs.
pub struct IdBlocks {
    kv: Arc<dyn Kv>,
    key: String,
    block: u64,
    /// The next id to hand out, and the end of the block (exclusive).
    range: Mutex<(u64, u64)>,
}

impl IdBlocks {
    /// Ids from counter `key`, `block` (at least 1) at a time.
    pub fn new(kv: Arc<dyn Kv>, key: impl Into<String>, block: u64) -> IdBlocks {
        IdBlocks { kv, key: key.into(), block: block.max(1), range: Mutex::new((0, 0)) }
    }

    /// The next id (1 or more).
    pub async fn next(&self) -> Result<u64, KvError> {
        let mut range = self.range.lock().await;
        if range.0 == range.1 {
            *range = self.claim().await?;
        }
        let id = range.0;
        range.0 += 1;
        Ok(id)
    }

    /// Take the next block: ids `(start, end)`, end exclusive.
    async fn claim(&self) -> Result<(u64, u64), KvError> {
        for _ in 0..MAX_CLAIM_ATTEMPTS {
            let current = self.kv.get(&self.key).await?;
            let (last, revision) = match &current {
                None => (0, 0),
                Some(item) => {
                    let text = std::str::from_utf8(&item.value).unwrap_or_default();
                    let last = text.parse::<u64>().map_err(|_| {
                        KvError::Backend(format!(
                            "the id counter `{}` holds {text:?}, not a number",
                            self.key
                        ))
                    })?;
                    (last, item.mod_revision)
                }
            };
            let end = last
                .checked_add(self.block)
                .ok_or_else(|| KvError::Backend(format!("the id counter `{}` is exhausted", self.key)))?;
            let claim = [Op::put(&self.key, end.to_string())];
            let unchanged = [Condition::ModRevision(self.key.clone(), revision)];
            if let Commit::Applied(_) = self.kv.commit(&unchanged, &claim).await? {
                return Ok((last + 1, end + 1));
            }
        }
        Err(KvError::Unavailable(format!(
            "the id counter `{}` changed under {MAX_CLAIM_ATTEMPTS} claims in a row",
            self.key
        )))
    }
}
