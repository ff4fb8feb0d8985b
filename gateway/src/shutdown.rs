//! One shutdown signal for a node, and a drain that waits until every task has gone.
//!
//! A [`Shutdown`] hands out [`Signal`]s. Every long-lived task — accept loops, binding
//! listeners, per-connection tasks, tickers — holds one for as long as it runs, and either
//! selects on [`Signal::recv`] itself or is started with [`Signal::spawn`], which drops it at
//! the signal. [`Shutdown::run`] raises the signal and returns once every `Signal` is dropped:
//! each holds a clone of one channel sender, and the receiver sees the channel close only when
//! the last clone is gone (the drain of mini-redis's `shutdown.rs`).

use std::future::Future;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The owner's side: raise the signal, wait for the drain.
#[derive(Debug)]
pub struct Shutdown {
    notify: watch::Sender<bool>,
    alive: mpsc::Sender<()>,
    drained: mpsc::Receiver<()>,
}

/// A task's side: learn of the shutdown; dropping it tells the owner the task is gone.
#[derive(Debug, Clone)]
pub struct Signal {
    notified: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A signal not yet raised.
    pub fn new() -> Shutdown {
        let (notify, _) = watch::channel(false);
        let (alive, drained) = mpsc::channel(1);
        Shutdown { notify, alive, drained }
    }

    /// A signal for a task to hold while it runs.
    pub fn signal(&self) -> Signal {
        Signal { notified: self.notify.subscribe(), _alive: self.alive.clone() }
    }

    /// A spawner for long-lived state (which must not itself hold the drain open): each task
    /// it spawns holds a [`Signal`]; after the shutdown began it spawns nothing.
    pub fn spawner(&self) -> Spawner {
        Spawner { notified: self.notify.subscribe(), alive: self.alive.downgrade() }
    }

    /// Raise the signal and wait until every [`Signal`] handed out has been dropped.
    pub async fn run(self) {
        let Shutdown { notify, alive, mut drained } = self;
        notify.send_replace(true);
        drop(alive);
        // Nothing is ever sent: `None` means every sender, so every task, is gone.
        while drained.recv().await.is_some() {}
    }
}

/// Spawns tasks that obey the shutdown, without holding the drain open itself.
#[derive(Debug, Clone)]
pub struct Spawner {
    notified: watch::Receiver<bool>,
    alive: mpsc::WeakSender<()>,
}

impl Spawner {
    /// A signal for a task, unless the shutdown began.
    pub fn signal(&self) -> Option<Signal> {
        let alive = self.alive.upgrade()?;
        (!*self.notified.borrow()).then(|| Signal { notified: self.notified.clone(), _alive: alive })
    }

    /// Spawn `task`, dropped at the signal; after the shutdown began, `task` is dropped unrun.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if let Some(signal) = self.signal() {
            signal.spawn(task);
        }
    }
}

/// The next connection on `listener`, or `None` once `stop` completes. A failed accept (out
/// of file descriptors, say) is logged and retried after a pause rather than spun on: a
/// listener never ends by itself.
pub async fn accept(
    listener: &tokio::net::TcpListener,
    stop: impl Future<Output = ()>,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => return Some(accepted),
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::select! {
                        () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                        () = &mut stop => return None,
                    }
                }
            },
            () = &mut stop => return None,
        }
    }
}

impl Signal {
    /// Whether the signal has been raised.
    pub fn is_raised(&self) -> bool {
        *self.notified.borrow()
    }

    /// Wait for the signal (at once if it was raised already).
    pub async fn recv(&mut self) {
        // An error means the owner is gone without raising it: that is a shutdown too.
        let _ = self.notified.wait_for(|raised| *raised).await;
    }

    /// Spawn `task`, dropped at the signal; the task counts as running until then.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut signal = self.clone();
        // Boxed: a future moved into an async block and then into `select!` can be laid out
        // twice in the block's state (a per-connection task here is a few KiB, and was).
        let task = Box::pin(task);
        tokio::spawn(async move {
            tokio::select! {
                () = task => {}
                () = signal.recv() => {}
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn run_returns_only_after_every_task_has_dropped_its_signal() {
        let shutdown = Shutdown::new();
        // A task that takes a while to wind down after the signal.
        let finished = Arc::new(AtomicBool::new(false));
        let mut slow = shutdown.signal();
        let done = Arc::clone(&finished);
        tokio::spawn(async move {
            slow.recv().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            done.store(true, Ordering::SeqCst);
            drop(slow);
        });
        // A task that would run forever: spawned to be dropped at the signal.
        let forever = shutdown.signal().spawn(std::future::pending());
        let observer = shutdown.signal();
        assert!(!observer.is_raised());
        drop(observer);
        shutdown.run().await;
        assert!(finished.load(Ordering::SeqCst), "run waited for the slow task");
        assert!(forever.await.is_ok(), "the endless task ended cleanly");
    }

    #[tokio::test]
    async fn a_spawner_does_not_hold_the_drain_and_spawns_nothing_after_it() {
        let shutdown = Shutdown::new();
        let spawner = shutdown.spawner();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sent = tx.clone();
        spawner.spawn(async move {
            let _ = sent.send("before");
            std::future::pending::<()>().await
        });
        assert_eq!(rx.recv().await, Some("before"));
        shutdown.run().await;
        spawner.spawn(async move {
            let _ = tx.send("after");
        });
        assert!(spawner.signal().is_none());
        assert_eq!(rx.recv().await, None, "nothing ran after the shutdown");
    }

    #[tokio::test]
    async fn accept_returns_connections_until_stopped() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let mut signal = shutdown.signal();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (_, from) = accept(&listener, signal.recv()).await.expect("a connection");
        assert!(from.ip().is_loopback());
        let mut waiting = shutdown.signal();
        let stopped = tokio::spawn(async move { accept(&listener, waiting.recv()).await.is_none() });
        drop(signal);
        shutdown.run().await;
        assert!(stopped.await.unwrap(), "stopped, not a connection");
    }

    #[tokio::test]
    async fn a_signal_taken_after_the_shutdown_began_sees_it_at_once() {
        let shutdown = Shutdown::new();
        let mut early = shutdown.signal();
        let waiter = tokio::spawn(async move { early.recv().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished(), "no signal yet");
        shutdown.run().await;
        waiter.await.unwrap();
    }
}
