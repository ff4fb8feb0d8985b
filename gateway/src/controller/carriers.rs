//! End-to-end carriers (the forwarding data plane): for each binding, one QUIC connection from
//! this controller to the binding's target site, whose packets travel the binding's tunnel
//! labelled, forwarded unread by its relays ([`crate::mesh::socket`]). Every client connection
//! of the binding is one stream on it.
//!
//! The carrier talks to a virtual address that stands for the site; the controller's label
//! switch routes it over the binding's current tunnel. A re-route moves that route onto the new
//! tunnel: QUIC at the site sees its peer arrive on a new path, validates it and follows, and
//! the streams under way carry on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};

use super::tunnels::TunnelRecord;
use super::{Controller, lock};
use crate::mesh::identity::Role;
use crate::mesh::transport::MeshEndpoint;
use crate::tunnel::hop::CONNECT_TIMEOUT;

/// A binding's end-to-end connection.
struct Carrier {
    virtual_addr: SocketAddr,
    site: String,
    conn: quinn::Connection,
}

/// The carriers of this controller's bindings.
pub(crate) struct Carriers {
    /// The controller's mesh endpoint — not kept alive by this: its socket is let go at
    /// shutdown, so that a controller can start again on the same address.
    endpoint: Weak<MeshEndpoint>,
    /// One slot per binding; its lock is held while the connection is made, so concurrent
    /// first clients share one handshake.
    by_binding: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<Option<Carrier>>>>>,
}

impl Carriers {
    pub(super) fn new(endpoint: &Arc<MeshEndpoint>) -> Carriers {
        Carriers { endpoint: Arc::downgrade(endpoint), by_binding: Mutex::default() }
    }

    fn endpoint(&self) -> anyhow::Result<Arc<MeshEndpoint>> {
        self.endpoint.upgrade().ok_or_else(|| anyhow::anyhow!("the controller is shutting down"))
    }

    /// Close every carrier (at shutdown: their connections hold the endpoint's socket).
    pub(super) fn close_all(&self) {
        let slots: Vec<_> = lock(&self.by_binding).drain().map(|(_, slot)| slot).collect();
        for slot in slots {
            if let Ok(mut slot) = slot.try_lock()
                && let Some(c) = slot.take()
            {
                c.conn.close(0u32.into(), b"shutdown");
            }
        }
    }

    fn slot(&self, binding: u64) -> Arc<tokio::sync::Mutex<Option<Carrier>>> {
        Arc::clone(lock(&self.by_binding).entry(binding).or_default())
    }
}

impl Controller {
    /// Binding `binding`'s end-to-end connection, routed over `tunnel` (made on first use, or
    /// again when the last one closed or the binding's site changed).
    pub(super) async fn carrier(
        &self,
        binding: u64,
        tunnel: &TunnelRecord,
    ) -> anyhow::Result<quinn::Connection> {
        let site = tunnel.hops.last().ok_or_else(|| anyhow::anyhow!("tunnel {} has no hops", tunnel.id))?;
        let slot = self.carriers.slot(binding);
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.conn.close_reason().is_none() && &c.site == site) {
            self.route_carrier(c.virtual_addr, tunnel)?;
            return Ok(c.conn.clone());
        }
        let endpoint = self.carriers.endpoint()?;
        if let Some(old) = slot.take() {
            endpoint.switch().update(|s| s.unroute(old.virtual_addr));
        }
        let virtual_addr = endpoint
            .virtual_addr(tunnel.id)
            .ok_or_else(|| anyhow::anyhow!("tunnel id {} does not fit a virtual address", tunnel.id))?;
        self.route_carrier(virtual_addr, tunnel)?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect(virtual_addr, site, &[Role::Site]))
            .await
            .map_err(|_| {
                anyhow::anyhow!("no end-to-end connection with {site} within {CONNECT_TIMEOUT:?}")
            })??;
        *slot = Some(Carrier { virtual_addr, site: site.clone(), conn: conn.clone() });
        Ok(conn)
    }

    /// Route `virtual_addr` over `tunnel`: through its first hop, with its label.
    fn route_carrier(&self, virtual_addr: SocketAddr, tunnel: &TunnelRecord) -> anyhow::Result<()> {
        let first = tunnel.hops.first().ok_or_else(|| anyhow::anyhow!("tunnel {} has no hops", tunnel.id))?;
        let first_addr = self
            .nodes
            .connection(first)
            .ok_or_else(|| {
                anyhow::anyhow!("tunnel {}: {first} is not connected to the controller", tunnel.id)
            })?
            .remote_address();
        let switch = Arc::clone(self.carriers.endpoint()?.switch());
        // Every client connection passes here: the socket's readers need not wait for a write
        // that changes nothing.
        if switch.read(|s| s.departing(virtual_addr)) == Some((tunnel.id, first_addr)) {
            return Ok(());
        }
        let expires = tunnel.expires_unix_ms;
        switch.update(|s| s.route(virtual_addr, tunnel.id, first_addr, expires));
        Ok(())
    }

    /// Binding `binding` was re-routed onto `tunnel`: move its carrier there now, so that the
    /// streams under way continue on the new path.
    pub(super) async fn move_carrier(&self, binding: u64, tunnel: &TunnelRecord) {
        let slot = self.carriers.slot(binding);
        let slot = slot.lock().await;
        if let Some(c) = slot.as_ref()
            && let Err(e) = self.route_carrier(c.virtual_addr, tunnel)
        {
            tracing::warn!(binding, tunnel = tunnel.id, "cannot move the end-to-end connection: {e:#}");
        }
    }

    /// Binding `binding` closed: close its carrier (its streams end).
    pub(super) async fn drop_carrier(&self, binding: u64) {
        let Some(slot) = lock(&self.carriers.by_binding).remove(&binding) else { return };
        if let Some(c) = slot.lock().await.take() {
            c.conn.close(0u32.into(), b"binding closed");
            if let Ok(endpoint) = self.carriers.endpoint() {
                endpoint.switch().update(|s| s.unroute(c.virtual_addr));
            }
        }
    }

    /// A tunnel of this controller is gone: its label goes from the switch.
    pub(super) fn forget_label(&self, tunnel: u64) {
        if let Ok(endpoint) = self.carriers.endpoint() {
            endpoint.switch().update(|s| s.remove(tunnel));
        }
    }
}
