//! Bounded pools for blocking work: plugin calls (each may run up to its CPU deadline) and
//! store access (disk I/O). Neither may run on an async worker — with `--threads 1` one slow
//! call would stall every connection of the node — so each runs on tokio's blocking threads,
//! at most `limit` at a time per pool; further calls wait their turn asynchronously.

use std::sync::Arc;

use tokio::sync::Semaphore;

/// Why blocking work did not return a value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The pool was closed (the node is shutting down).
    #[error("the {0} pool is closed (shutting down)")]
    Closed(&'static str),
    /// The work panicked; the panic is in the log.
    #[error("a {0} task panicked")]
    Panicked(&'static str),
}

/// A named pool of at most `limit` concurrent blocking calls.
#[derive(Debug, Clone)]
pub struct Pool {
    name: &'static str,
    limit: u32,
    permits: Arc<Semaphore>,
}

impl Pool {
    /// A pool called `name` (for errors and logs) running at most `limit` calls at once.
    pub fn new(name: &'static str, limit: usize) -> Pool {
        let limit = limit.clamp(1, 1024);
        Pool { name, limit: limit as u32, permits: Arc::new(Semaphore::new(limit)) }
    }

    /// Run `work` on a blocking thread once a slot is free, and wait for its result.
    pub async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, PoolError> {
        let permit =
            Arc::clone(&self.permits).acquire_owned().await.map_err(|_| PoolError::Closed(self.name))?;
        // The work's logs and spans stay under the caller's span (a request, a binding).
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            span.in_scope(work)
        })
        .await
        .map_err(|_| PoolError::Panicked(self.name))
    }

    /// Refuse new work, and wait until the calls already running have finished.
    pub async fn close(&self) {
        // Holding every permit means nothing runs; closing then refuses whoever waits.
        let all = self.permits.acquire_many(self.limit).await;
        self.permits.close();
        drop(all);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "current_thread")]
    async fn runs_off_the_async_thread_at_most_limit_at_once() {
        let pool = Pool::new("test", 2);
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let caller = std::thread::current().id();
        let calls = (0..6).map(|_| {
            let (pool, running, peak) = (pool.clone(), Arc::clone(&running), Arc::clone(&peak));
            tokio::spawn(async move {
                pool.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                    std::thread::current().id()
                })
                .await
            })
        });
        for call in calls.collect::<Vec<_>>() {
            let thread = call.await.unwrap().unwrap();
            assert_ne!(thread, caller, "blocking work ran on the async thread");
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2, "never more than the limit, and the limit is used");
    }

    #[tokio::test]
    async fn a_panic_and_a_closed_pool_are_errors_not_crashes() {
        let pool = Pool::new("store", 1);
        assert_eq!(pool.run(|| panic!("boom")).await, Err::<(), _>(PoolError::Panicked("store")));
        assert_eq!(pool.run(|| 7).await, Ok(7), "the pool survives a panic");
        pool.close().await;
        assert_eq!(pool.run(|| 7).await, Err(PoolError::Closed("store")));
    }
}
