//! A node's live sessions with its controllers. A relay or site keeps one session with each
//! controller it is configured with ([`super::uplink::Uplink`], one each): a group's
//! controllers all set tunnels up through it and send it requests. The rest of the node sees
//! them here — every live one (a site reports its discoveries to each) or any one of them (for
//! a request of its own: a connection, a revocation).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// A live session: the controller's name and its connection.
#[derive(Clone, Debug)]
pub struct Live {
    /// The controller's name.
    pub controller: String,
    /// The connection.
    pub conn: quinn::Connection,
}

/// See the module docs. Clones share the set.
#[derive(Clone, Debug)]
pub struct Uplinks {
    live: Arc<watch::Sender<Vec<Live>>>,
}

impl Default for Uplinks {
    fn default() -> Self {
        Uplinks { live: Arc::new(watch::Sender::new(Vec::new())) }
    }
}

impl Uplinks {
    /// `controller`'s session is up on `conn` (replacing an earlier one).
    pub(super) fn up(&self, controller: &str, conn: quinn::Connection) {
        self.live.send_modify(|live| {
            live.retain(|l| l.controller != controller);
            live.push(Live { controller: controller.to_owned(), conn });
            live.sort_by(|a, b| a.controller.cmp(&b.controller));
        });
    }

    /// `controller`'s session is down.
    pub(super) fn down(&self, controller: &str) {
        self.live.send_if_modified(|live| {
            let before = live.len();
            live.retain(|l| l.controller != controller);
            live.len() != before
        });
    }

    /// Every live session, by controller name.
    pub fn all(&self) -> Vec<Live> {
        self.live.borrow().iter().filter(|l| l.conn.close_reason().is_none()).cloned().collect()
    }

    /// A live session's connection, if there is one (the first by controller name).
    pub fn any(&self) -> Option<quinn::Connection> {
        self.all().into_iter().next().map(|l| l.conn)
    }

    /// Follow the set's changes.
    pub fn subscribe(&self) -> watch::Receiver<Vec<Live>> {
        self.live.subscribe()
    }

    /// Wait until some session is up, at most `timeout`; its connection.
    pub async fn wait_any(&self, timeout: Duration) -> Option<quinn::Connection> {
        let mut rx = self.subscribe();
        let up = tokio::time::timeout(
            timeout,
            rx.wait_for(|live| live.iter().any(|l| l.conn.close_reason().is_none())),
        );
        match up.await {
            Ok(Ok(_)) => self.any(),
            _ => None,
        }
    }
}
