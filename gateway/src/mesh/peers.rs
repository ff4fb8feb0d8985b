//! A node's mesh connections by peer name: the registry that probes and tunnel hops share.
//!
//! A peer may have several connections at once (both sides dialled, or a reconnect before the
//! old connection timed out): the newest open one is used, and closing one leaves the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// One connection with a peer.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The connection.
    pub conn: quinn::Connection,
    /// Whether the peer is a relay (only relays take part in source routing).
    pub relay: bool,
}

/// The connections of one node, by peer name.
#[derive(Debug, Default)]
pub struct Peers {
    by_name: Mutex<HashMap<String, Vec<Peer>>>,
}

impl Peers {
    /// No connections yet.
    pub fn new() -> Arc<Peers> {
        Arc::new(Peers::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Peer>>> {
        // Poisoning only means another task panicked mid-update of a plain map; carry on.
        self.by_name.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Add a connection with `name`.
    pub fn add(&self, name: &str, conn: quinn::Connection, relay: bool) {
        self.lock().entry(name.to_owned()).or_default().push(Peer { conn, relay });
    }

    /// Remove connection `conn` with `name` (it closed); the peer's others stay.
    pub fn remove(&self, name: &str, conn: &quinn::Connection) {
        let mut peers = self.lock();
        if let Some(list) = peers.get_mut(name) {
            list.retain(|p| p.conn.stable_id() != conn.stable_id());
            if list.is_empty() {
                peers.remove(name);
            }
        }
    }

    /// The newest open connection with `name`.
    pub fn get(&self, name: &str) -> Option<Peer> {
        self.lock().get(name)?.iter().rev().find(|p| p.conn.close_reason().is_none()).cloned()
    }

    /// Open connections, over all peers.
    pub fn open(&self) -> usize {
        self.lock().values().flatten().filter(|p| p.conn.close_reason().is_none()).count()
    }

    /// The newest open connection with `name`, as a connection.
    pub fn connection(&self, name: &str) -> Option<quinn::Connection> {
        self.get(name).map(|p| p.conn)
    }
}
