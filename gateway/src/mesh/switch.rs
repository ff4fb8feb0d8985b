//! The label switch, sans-IO: where each labelled packet a node receives goes, and where the
//! packets its own QUIC stack sends to a virtual address go.
//!
//! - On a **relay**, a tunnel's hop grant installs a *forwarding entry*: the label, the granted
//!   previous and next hops' addresses, the grant's expiry. A packet with that label from one
//!   of the two goes to the other, unchanged — the relay never holds the tunnel's keys.
//! - On an **endpoint** (the ingress that set the tunnel up, the site it leads to), a *local
//!   route* ties a label and the neighbour it travels through to a virtual address
//!   ([`super::label::virtual_addr`]): arriving packets are handed to QUIC as coming from the
//!   virtual address, and what QUIC sends there goes to the neighbour with the label. The
//!   ingress keeps one virtual address for a binding's connection and moves it onto each new
//!   tunnel ([`Switch::route`] again), so that QUIC sees a re-route as a path migration.
//!
//! Anything else — an unknown label, a known one from a node that is not its granted
//! neighbour, an expired entry — is dropped, and the verdict says why, to be counted.

use std::collections::HashMap;
use std::net::SocketAddr;

/// Where an arriving labelled packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// To this node's QUIC stack, as coming from this virtual address.
    Deliver(SocketAddr),
    /// On to this neighbour, unchanged.
    Forward(SocketAddr),
    /// Nowhere.
    Drop(Dropped),
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Neither a mesh packet nor a well-formed labelled one.
    Junk,
    /// No tunnel with this label is set up here.
    UnknownLabel,
    /// The label's tunnel is set up here, but not with the sender as a neighbour.
    WrongNeighbour,
    /// The label's grant has expired.
    Expired,
    /// The way on could not take it (the socket's buffer was full, or the send failed).
    SendFailed,
}

impl Dropped {
    /// Every reason, for counters: in declaration order, so that `reason as usize` indexes it.
    pub const ALL: [Dropped; 5] = [
        Dropped::Junk,
        Dropped::UnknownLabel,
        Dropped::WrongNeighbour,
        Dropped::Expired,
        Dropped::SendFailed,
    ];

    /// The reason as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::Junk => "junk",
            Dropped::UnknownLabel => "unknown_label",
            Dropped::WrongNeighbour => "wrong_neighbour",
            Dropped::Expired => "expired",
            Dropped::SendFailed => "send_failed",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Forwarding {
    prev: SocketAddr,
    next: SocketAddr,
    expires_unix_ms: u64,
}

#[derive(Debug, Clone, Copy)]
struct Local {
    neighbour: SocketAddr,
    virtual_addr: SocketAddr,
    expires_unix_ms: u64,
}

/// A node's forwarding entries and local routes.
#[derive(Debug, Default)]
pub struct Switch {
    forwarding: HashMap<u64, Forwarding>,
    local: HashMap<u64, Local>,
    /// For each virtual address: the label and neighbour its packets go with now.
    outbound: HashMap<SocketAddr, (u64, SocketAddr)>,
}

impl Switch {
    /// Forward `label`'s packets between `prev` and `next` until `expires_unix_ms`.
    pub fn forward(&mut self, label: u64, prev: SocketAddr, next: SocketAddr, expires_unix_ms: u64) {
        self.forwarding.insert(label, Forwarding { prev, next, expires_unix_ms });
    }

    /// Route virtual address `virtual_addr` over tunnel `label` through `neighbour` until
    /// `expires_unix_ms`: packets sent to it go there from now on, and `label`'s packets from
    /// `neighbour` arrive from it. A virtual address routed before keeps its older labels'
    /// arrivals until they are removed (stragglers of the old path still count).
    pub fn route(
        &mut self,
        virtual_addr: SocketAddr,
        label: u64,
        neighbour: SocketAddr,
        expires_unix_ms: u64,
    ) {
        self.local.insert(label, Local { neighbour, virtual_addr, expires_unix_ms });
        self.outbound.insert(virtual_addr, (label, neighbour));
    }

    /// Forget everything of tunnel `label`; whether there was anything.
    pub fn remove(&mut self, label: u64) -> bool {
        let forwarded = self.forwarding.remove(&label).is_some();
        let local = self.local.remove(&label);
        if let Some(local) = local {
            // The virtual address goes with the label it is routed over now, not with an
            // older one it has left.
            if self.outbound.get(&local.virtual_addr).is_some_and(|(l, _)| *l == label) {
                self.outbound.remove(&local.virtual_addr);
            }
        }
        forwarded || local.is_some()
    }

    /// Forget virtual address `virtual_addr`: what is sent there and what arrives for it.
    pub fn unroute(&mut self, virtual_addr: SocketAddr) {
        self.outbound.remove(&virtual_addr);
        self.local.retain(|_, r| r.virtual_addr != virtual_addr);
    }

    /// Forget entries and routes expired by `now_unix_ms`.
    pub fn expire(&mut self, now_unix_ms: u64) {
        let gone: Vec<u64> = (self.forwarding.iter().map(|(l, f)| (*l, f.expires_unix_ms)))
            .chain(self.local.iter().map(|(l, r)| (*l, r.expires_unix_ms)))
            .filter(|(_, expires)| *expires <= now_unix_ms)
            .map(|(l, _)| l)
            .collect();
        for label in gone {
            self.remove(label);
        }
    }

    /// Where packet of tunnel `label` from `from` goes at `now_unix_ms`.
    pub fn arriving(&self, label: u64, from: SocketAddr, now_unix_ms: u64) -> Verdict {
        if let Some(f) = self.forwarding.get(&label) {
            if f.expires_unix_ms <= now_unix_ms {
                return Verdict::Drop(Dropped::Expired);
            }
            return match from {
                _ if from == f.prev => Verdict::Forward(f.next),
                _ if from == f.next => Verdict::Forward(f.prev),
                _ => Verdict::Drop(Dropped::WrongNeighbour),
            };
        }
        match self.local.get(&label) {
            Some(r) if r.expires_unix_ms <= now_unix_ms => Verdict::Drop(Dropped::Expired),
            Some(r) if r.neighbour == from => Verdict::Deliver(r.virtual_addr),
            Some(_) => Verdict::Drop(Dropped::WrongNeighbour),
            None => Verdict::Drop(Dropped::UnknownLabel),
        }
    }

    /// The label and neighbour for a packet QUIC sends to `to`: `None` for a real address
    /// (the mesh's own connections) or a virtual one no longer routed.
    pub fn departing(&self, to: SocketAddr) -> Option<(u64, SocketAddr)> {
        self.outbound.get(&to).copied()
    }

    /// The labels with a forwarding entry or local route here.
    pub fn labels(&self) -> Vec<u64> {
        let mut labels: Vec<u64> = self.forwarding.keys().chain(self.local.keys()).copied().collect();
        labels.sort_unstable();
        labels.dedup();
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn virtual_addr(label: u64) -> SocketAddr {
        crate::mesh::label::virtual_addr(label, false).unwrap()
    }

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 4000))
    }

    #[test]
    fn every_drop_reason_indexes_its_place_in_all() {
        for (i, why) in Dropped::ALL.iter().enumerate() {
            assert_eq!(*why as usize, i, "{why:?}");
        }
    }

    #[test]
    fn a_relay_forwards_between_the_granted_neighbours_only_until_expiry() {
        let mut s = Switch::default();
        s.forward(7, addr(1), addr(2), 100);
        assert_eq!(s.arriving(7, addr(1), 99), Verdict::Forward(addr(2)));
        assert_eq!(s.arriving(7, addr(2), 99), Verdict::Forward(addr(1)));
        assert_eq!(s.arriving(7, addr(3), 99), Verdict::Drop(Dropped::WrongNeighbour));
        // Another port on a granted host is another node.
        assert_eq!(
            s.arriving(7, SocketAddr::from(([127, 0, 0, 1], 4001)), 99),
            Verdict::Drop(Dropped::WrongNeighbour)
        );
        assert_eq!(s.arriving(8, addr(1), 99), Verdict::Drop(Dropped::UnknownLabel));
        assert_eq!(s.arriving(7, addr(1), 100), Verdict::Drop(Dropped::Expired));
        s.expire(99);
        assert_eq!(s.labels(), [7]);
        s.expire(100);
        assert!(s.labels().is_empty());
        assert_eq!(s.arriving(7, addr(1), 0), Verdict::Drop(Dropped::UnknownLabel));
        assert_eq!(s.departing(addr(2)), None, "a relay sends nothing of its own");
    }

    #[test]
    fn an_endpoint_delivers_from_the_virtual_address_and_sends_there_with_the_label() {
        let mut s = Switch::default();
        let v = virtual_addr(5);
        s.route(v, 5, addr(1), 100);
        assert_eq!(s.arriving(5, addr(1), 0), Verdict::Deliver(v));
        assert_eq!(s.arriving(5, addr(9), 0), Verdict::Drop(Dropped::WrongNeighbour));
        assert_eq!(s.departing(v), Some((5, addr(1))));
        assert_eq!(s.departing(addr(1)), None, "a real address is the mesh's");
        assert!(s.remove(5) && !s.remove(5));
        assert_eq!(s.departing(v), None);
    }

    #[test]
    fn a_rerouted_virtual_address_sends_on_the_new_tunnel_and_keeps_the_olds_stragglers() {
        let mut s = Switch::default();
        let v = virtual_addr(5);
        s.route(v, 5, addr(1), 100);
        s.route(v, 6, addr(2), 200);
        assert_eq!(s.departing(v), Some((6, addr(2))));
        assert_eq!(s.arriving(5, addr(1), 0), Verdict::Deliver(v), "the old path's stragglers");
        assert_eq!(s.arriving(6, addr(2), 0), Verdict::Deliver(v));
        // Removing the old tunnel leaves the address on the new one.
        s.remove(5);
        assert_eq!(s.departing(v), Some((6, addr(2))));
        assert_eq!(s.arriving(5, addr(1), 0), Verdict::Drop(Dropped::UnknownLabel));
        s.expire(200);
        assert_eq!(s.departing(v), None);
        // Unrouting forgets the address both ways, whatever labels it was on.
        s.route(v, 9, addr(3), 300);
        s.route(v, 10, addr(3), 300);
        s.unroute(v);
        assert_eq!(s.departing(v), None);
        assert!(s.labels().is_empty());
    }
}
