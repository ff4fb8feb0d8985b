//! End-to-end carriers (the forwarding data plane): for each binding, one QUIC connection from
//! this controller to the binding's target site, whose packets travel the binding's tunnel
//! labelled, forwarded unread by its relays ([`crate::mesh::socket`]). Every client connection
//! of the binding is one stream on it.
//!
//! The carrier talks to a virtual address that stands for the site; the controller's label
//! switch routes it over the binding's current tunnel. A re-route moves that route onto the new
//! tunnel: QUIC at the site sees its peer arrive on a new path, validates it and follows, and
//! the streams under way carry on.
//!
//! After `renew_after_streams` streams a carrier is renewed: a fresh connection is made in the
//! background over the same virtual address (so re-routes move both), new streams go to it
//! once it is up, and the old one is closed after its last stream ends. QUIC keeps a receive
//! state for every stream a peer may open and pools ended ones with their buffers; renewing
//! returns that memory at the site instead of letting a busy binding hold its high-water mark.
//! A renewal starts at the path MTU its predecessor found (the site at what the predecessor,
//! still open, has found) instead of searching again: discovery's probes, each padded to its
//! full size, came to ~700 KB each way per renewal on loopback, half of renewal's CPU cost.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::tunnels::TunnelRecord;
use super::{Controller, lock};
use crate::mesh::identity::Role;
use crate::mesh::transport::MeshEndpoint;
use crate::metrics::Counters;
use crate::tunnel::hop::CONNECT_TIMEOUT;

/// A binding's end-to-end connection, and the client connections it carries.
struct Carrier {
    virtual_addr: SocketAddr,
    site: String,
    conn: quinn::Connection,
    /// Streams on it whose client connection has not ended.
    active: AtomicUsize,
    /// A newer carrier took over: this one closes once `active` is back to zero.
    retired: AtomicBool,
}

impl Carrier {
    fn new(virtual_addr: SocketAddr, site: String, conn: quinn::Connection) -> Arc<Carrier> {
        Arc::new(Carrier {
            virtual_addr,
            site,
            conn,
            active: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
        })
    }

    fn live(&self) -> bool {
        self.conn.close_reason().is_none()
    }

    /// Take no new streams; close once the ones under way have ended.
    fn retire(&self) {
        crate::mesh::transport::log_connection_stats(&self.conn, "end-to-end connection retired");
        self.retired.store(true, Ordering::SeqCst);
        if self.active.load(Ordering::SeqCst) == 0 {
            self.conn.close(0u32.into(), b"renewed");
        }
    }
}

/// A client connection's hold on the carrier its stream is on: while any is held, a retired
/// carrier stays open.
pub struct CarrierLease(Arc<Carrier>);

impl CarrierLease {
    fn take(carrier: &Arc<Carrier>) -> CarrierLease {
        carrier.active.fetch_add(1, Ordering::SeqCst);
        CarrierLease(Arc::clone(carrier))
    }

    /// The connection to open the stream on.
    pub fn connection(&self) -> &quinn::Connection {
        &self.0.conn
    }
}

impl Drop for CarrierLease {
    fn drop(&mut self) {
        // The splice has waited for its last bytes to be acknowledged: closing loses nothing.
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 && self.0.retired.load(Ordering::SeqCst) {
            self.0.conn.close(0u32.into(), b"renewed");
        }
    }
}

/// A binding's carriers.
#[derive(Default)]
struct Slot {
    /// Held while a connection is made, so that concurrent first clients share one handshake.
    dialling: tokio::sync::Mutex<()>,
    state: Mutex<SlotState>,
}

/// Its carriers all share one virtual address, so that one route moves them all.
#[derive(Default)]
struct SlotState {
    /// Where new streams go.
    current: Option<Arc<Carrier>>,
    /// Streams opened on `current`.
    opened: u64,
    /// A renewal is being made.
    renewing: bool,
    /// Retired carriers whose last streams are still under way.
    draining: Vec<Arc<Carrier>>,
}

impl SlotState {
    fn close_all(&mut self, reason: &'static [u8]) -> Vec<SocketAddr> {
        let mut addrs = Vec::new();
        for c in self.current.take().into_iter().chain(self.draining.drain(..)) {
            c.conn.close(0u32.into(), reason);
            if !addrs.contains(&c.virtual_addr) {
                addrs.push(c.virtual_addr);
            }
        }
        addrs
    }
}

/// The carriers of this controller's bindings.
pub(crate) struct Carriers {
    /// The controller's mesh endpoint — not kept alive by this: its socket is let go at
    /// shutdown, so that a controller can start again on the same address.
    endpoint: Weak<MeshEndpoint>,
    by_binding: Mutex<HashMap<u64, Arc<Slot>>>,
    /// `ingress.renew_after_streams`.
    renew_after: u64,
    /// Connections made, by cause (`first`, `renewal`, `replacement`).
    made: Arc<Counters>,
}

impl Carriers {
    pub(super) fn new(endpoint: &Arc<MeshEndpoint>, renew_after: u64) -> Carriers {
        Carriers {
            endpoint: Arc::downgrade(endpoint),
            by_binding: Mutex::default(),
            renew_after,
            made: Arc::default(),
        }
    }

    fn endpoint(&self) -> anyhow::Result<Arc<MeshEndpoint>> {
        self.endpoint.upgrade().ok_or_else(|| anyhow::anyhow!("the controller is shutting down"))
    }

    /// Close every carrier (at shutdown: their connections hold the endpoint's socket).
    pub(super) fn close_all(&self) {
        let slots: Vec<_> = lock(&self.by_binding).drain().map(|(_, slot)| slot).collect();
        for slot in slots {
            lock(&slot.state).close_all(b"shutdown");
        }
    }

    fn slot(&self, binding: u64) -> Arc<Slot> {
        Arc::clone(lock(&self.by_binding).entry(binding).or_default())
    }

    /// Connections made so far, by cause.
    pub(super) fn made(&self) -> Vec<(Vec<String>, u64)> {
        self.made.snapshot()
    }

    /// End-to-end connections open now, draining ones included.
    pub(super) fn open(&self) -> usize {
        let slots: Vec<_> = lock(&self.by_binding).values().cloned().collect();
        slots
            .iter()
            .map(|slot| {
                let s = lock(&slot.state);
                s.current.iter().chain(&s.draining).filter(|c| c.live()).count()
            })
            .sum()
    }
}

impl Controller {
    /// A lease on binding `binding`'s end-to-end connection, routed over `tunnel` (made on
    /// first use, or again when the last one closed or the binding's site changed).
    pub(super) async fn carrier(&self, binding: u64, tunnel: &TunnelRecord) -> anyhow::Result<CarrierLease> {
        let site = tunnel.hops.last().ok_or_else(|| anyhow::anyhow!("tunnel {} has no hops", tunnel.id))?;
        let slot = self.carriers.slot(binding);
        if let Some(lease) = self.lease_current(binding, &slot, site, tunnel)? {
            return Ok(lease);
        }
        let _dialling = slot.dialling.lock().await;
        // Another client may have made it while this one waited.
        if let Some(lease) = self.lease_current(binding, &slot, site, tunnel)? {
            return Ok(lease);
        }
        let endpoint = self.carriers.endpoint()?;
        let (replaced, kept, gone) = {
            let mut s = lock(&slot.state);
            let replaced = s.current.is_some() || !s.draining.is_empty();
            // The current one is dead or goes to a site the binding no longer goes to. Renewed
            // ones still finishing their clients at this site carry on, and the new one shares
            // their virtual address (one route for all); the others go.
            let previous = s.current.take();
            s.draining.extend(previous);
            let kept = s.draining.iter().find(|c| c.live() && &c.site == site).map(|c| c.virtual_addr);
            let gone: Vec<SocketAddr> = s
                .draining
                .extract_if(.., |c| !c.live() || &c.site != site)
                .map(|c| {
                    c.conn.close(0u32.into(), b"replaced");
                    c.virtual_addr
                })
                .collect();
            (replaced, kept, gone)
        };
        let virtual_addr = match kept {
            Some(addr) => addr,
            None => endpoint
                .virtual_addr(tunnel.id)
                .ok_or_else(|| anyhow::anyhow!("tunnel id {} does not fit a virtual address", tunnel.id))?,
        };
        for addr in gone.into_iter().filter(|a| *a != virtual_addr) {
            endpoint.switch().update(|sw| sw.unroute(addr));
        }
        self.route_carrier(virtual_addr, tunnel)?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect(virtual_addr, site, &[Role::Site]))
            .await
            .map_err(|_| {
                anyhow::anyhow!("no end-to-end connection with {site} within {CONNECT_TIMEOUT:?}")
            })??;
        self.carriers.made.inc(&[if replaced { "replacement" } else { "first" }]);
        let carrier = Carrier::new(virtual_addr, site.clone(), conn);
        let lease = CarrierLease::take(&carrier);
        let mut s = lock(&slot.state);
        s.current = Some(carrier);
        s.opened = 1;
        Ok(lease)
    }

    /// A lease on the slot's current carrier if it is open and goes to `site` (routed over
    /// `tunnel`); starts its renewal when it has carried enough streams.
    fn lease_current(
        &self,
        binding: u64,
        slot: &Arc<Slot>,
        site: &str,
        tunnel: &TunnelRecord,
    ) -> anyhow::Result<Option<CarrierLease>> {
        let mut s = lock(&slot.state);
        let Some(c) = s.current.as_ref().filter(|c| c.live() && c.site == site) else { return Ok(None) };
        self.route_carrier(c.virtual_addr, tunnel)?;
        let lease = CarrierLease::take(c);
        s.opened += 1;
        if s.opened > self.carriers.renew_after && !s.renewing {
            s.renewing = true;
            self.renew(binding, slot, &lease.0);
        }
        s.draining.retain(|c| c.live());
        Ok(Some(lease))
    }

    /// Make binding `binding`'s next carrier, to the same site over the same virtual address
    /// as `old`, in the background (new clients meanwhile use `old`), then put it in `old`'s
    /// place.
    fn renew(&self, binding: u64, slot: &Arc<Slot>, old: &Arc<Carrier>) {
        let (slot, old, made) = (Arc::clone(slot), Arc::clone(old), Arc::clone(&self.carriers.made));
        let Ok(endpoint) = self.carriers.endpoint() else { return };
        self.spawner.spawn(async move {
            let (addr, site) = (old.virtual_addr, old.site.as_str());
            // Over the path `old` runs on: start at the MTU it found.
            let mtu = Some(old.conn.stats().path.current_mtu);
            let made_one = tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect_at_mtu(addr, site, &[Role::Site], mtu))
                .await
                .map_err(|_| anyhow::anyhow!("none within {CONNECT_TIMEOUT:?}"))
                .and_then(|made| made.map_err(anyhow::Error::from));
            let mut s = lock(&slot.state);
            s.renewing = false;
            let conn = match made_one {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(binding, %site, "cannot renew the end-to-end connection, the current one carries on: {e:#}");
                    // Try again after as many streams again.
                    s.opened = 0;
                    return;
                }
            };
            // The binding closed, moved to another site or lost its carrier meanwhile: the
            // next client makes a new one.
            if !s.current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &old) && c.live()) {
                conn.close(0u32.into(), b"not needed");
                return;
            }
            made.inc(&["renewal"]);
            tracing::debug!(binding, %site, streams = s.opened, "end-to-end connection renewed");
            s.current = Some(Carrier::new(addr, old.site.clone(), conn));
            s.opened = 0;
            old.retire();
            s.draining.push(old);
        });
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

    /// Binding `binding` was re-routed onto `tunnel`: move its carriers there now, so that the
    /// streams under way continue on the new path. (A renewed carrier shares its predecessor's
    /// virtual address: one route moves both.)
    pub(super) fn move_carrier(&self, binding: u64, tunnel: &TunnelRecord) {
        let slot = self.carriers.slot(binding);
        let s = lock(&slot.state);
        if let Some(c) = s.current.as_ref().or(s.draining.first())
            && let Err(e) = self.route_carrier(c.virtual_addr, tunnel)
        {
            tracing::warn!(binding, tunnel = tunnel.id, "cannot move the end-to-end connection: {e:#}");
        }
    }

    /// Binding `binding` closed: close its carriers (their streams end).
    pub(super) fn drop_carrier(&self, binding: u64) {
        let Some(slot) = lock(&self.carriers.by_binding).remove(&binding) else { return };
        let addrs = lock(&slot.state).close_all(b"binding closed");
        if let Ok(endpoint) = self.carriers.endpoint() {
            for addr in addrs {
                endpoint.switch().update(|s| s.unroute(addr));
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
