//! The mesh's UDP socket as QUIC sees it: one socket carries the node's own QUIC connections
//! and the tunnels' labelled packets ([`crate::mesh::label`]), sorted as they arrive.
//!
//! - A mesh packet goes to QUIC as it came.
//! - A labelled packet goes where the node's [`LabelSwitch`] says: on to a neighbour,
//!   unchanged, straight from the receive buffer (a relay — in the same batch of received
//!   datagrams, in one send per run of packets with one way on, so a relay's forwarding costs a
//!   `recvmmsg` and a GSO `sendmsg` per batch and never decrypts); to QUIC with its header
//!   stripped, as coming from the tunnel's virtual address (an endpoint); or nowhere (counted).
//! - What QUIC sends to a virtual address goes to the routed neighbour with the label in front.
//!
//! A batch that mixes kinds (the kernel coalesces datagrams of one sender, whatever their
//! labels) keeps one kind in place and carries the others over to the next call, copied.

use std::collections::VecDeque;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

use super::label::{self, HEADER, Kind};
use super::switch::{Dropped, Switch, Verdict};

/// A node's label switch, shared by its socket (which consults it for every labelled packet)
/// and its tunnel logic (which installs and removes entries), with the counters of what it did.
#[derive(Debug, Default)]
pub struct LabelSwitch {
    table: RwLock<Switch>,
    counters: Counters,
    /// Whether the socket is IPv6 (virtual addresses take its family).
    ipv6: bool,
}

/// What a node's label switch did, since it started.
#[derive(Debug, Default)]
pub struct Counters {
    /// Labelled packets forwarded on to a neighbour, and their bytes.
    pub forwarded: AtomicU64,
    /// Bytes of the packets forwarded.
    pub forwarded_bytes: AtomicU64,
    /// Labelled packets handed to this node's QUIC stack.
    pub delivered: AtomicU64,
    /// Packets this node's QUIC stack sent over a tunnel.
    pub sent: AtomicU64,
    /// Dropped packets, indexed by [`Dropped`] (declaration order, as in [`Dropped::ALL`]).
    pub dropped: [AtomicU64; Dropped::ALL.len()],
}

impl Counters {
    fn drop(&self, why: Dropped, n: u64) {
        self.dropped[why as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Packets dropped for `why`.
    pub fn dropped(&self, why: Dropped) -> u64 {
        self.dropped[why as usize].load(Ordering::Relaxed)
    }
}

impl LabelSwitch {
    /// A switch with no entries, for a socket of the given family.
    pub fn new(ipv6: bool) -> Arc<LabelSwitch> {
        Arc::new(LabelSwitch { ipv6, ..LabelSwitch::default() })
    }

    /// The virtual address standing for tunnel `label`'s far end on this socket
    /// ([`label::virtual_addr`]); `None` when the label does not fit one.
    pub fn virtual_addr(&self, label: u64) -> Option<SocketAddr> {
        label::virtual_addr(label, self.ipv6)
    }

    /// Change the table.
    pub fn update<T>(&self, f: impl FnOnce(&mut Switch) -> T) -> T {
        f(&mut self.table.write().unwrap_or_else(PoisonError::into_inner))
    }

    /// Read the table.
    pub fn read<T>(&self, f: impl FnOnce(&Switch) -> T) -> T {
        f(&self.table.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// What the switch did.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

/// A UDP socket that sorts labelled packets from the mesh's own (see the module docs).
#[derive(Debug)]
pub struct SwitchedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    switch: Arc<LabelSwitch>,
    /// Datagrams of a mixed batch not yet handed over, with their metadata.
    carried: Mutex<VecDeque<(RecvMeta, Vec<u8>)>>,
}

/// Most bytes of one send: a GSO batch must fit in one IP datagram's length field.
const MAX_SEND: usize = 65_000;

impl SwitchedSocket {
    /// Wrap `inner`, sorting labelled packets with `switch`.
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, switch: Arc<LabelSwitch>) -> Arc<SwitchedSocket> {
        Arc::new(SwitchedSocket { inner, switch, carried: Mutex::default() })
    }

    /// Hand over carried-over datagrams, as many as fit; `None` when there are none.
    fn hand_over_carried(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> Option<usize> {
        let mut carried = self.carried.lock().unwrap_or_else(PoisonError::into_inner);
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let Some((m, data)) = carried.pop_front() else { break };
            if data.len() > bufs[n].len() {
                // Cannot happen (it came from a buffer of this size), but never overrun.
                self.switch.counters.drop(Dropped::Junk, 1);
                continue;
            }
            bufs[n][..data.len()].copy_from_slice(&data);
            meta[n] = RecvMeta { len: data.len(), ..m };
            n += 1;
        }
        (n > 0).then_some(n)
    }

    /// Sort one received buffer of datagrams (`meta.stride` apart): forward what goes on,
    /// strip and readdress what is delivered, drop the rest. One kind stays in `buf` (and
    /// `meta` describes it, `len` 0 when none does); the others are carried over.
    fn sort(&self, buf: &mut [u8], meta: &mut RecvMeta) {
        let (len, stride) = (meta.len.min(buf.len()), meta.stride.max(1));
        // The common cases in one look: all the mesh's own, or nothing labelled.
        if (0..len).step_by(stride).all(|at| label::kind(&buf[at..(at + stride).min(len)]) == Kind::Mesh) {
            return;
        }
        let now = crate::time::now_unix_ms();
        let table = self.switch.table.read().unwrap_or_else(PoisonError::into_inner);
        // Each datagram's fate, in order.
        let fates: Vec<(usize, usize, Fate)> = (0..len)
            .step_by(stride)
            .map(|at| {
                let end = (at + stride).min(len);
                let fate = match label::kind(&buf[at..end]) {
                    Kind::Mesh => Fate::Keep(meta.addr, 0),
                    Kind::Junk => Fate::Drop(Dropped::Junk),
                    Kind::Labelled(label) => match table.arriving(label, meta.addr, now) {
                        Verdict::Deliver(virtual_addr) => Fate::Keep(virtual_addr, HEADER),
                        Verdict::Forward(to) => Fate::Forward(to),
                        Verdict::Drop(why) => Fate::Drop(why),
                    },
                };
                (at, end, fate)
            })
            .collect();
        drop(table);
        // Forward runs of datagrams with one way on, each run in one send (as many as the
        // socket can send at once: one where it has no GSO).
        let most = self.inner.max_transmit_segments().max(1);
        let mut i = 0;
        while i < fates.len() {
            let (start, _, fate) = fates[i];
            let mut j = i + 1;
            while j < fates.len() && fates[j].2 == fate && fates[j].1 - start <= MAX_SEND && j - i < most {
                j += 1;
            }
            if let Fate::Forward(to) = fate {
                self.forward(&buf[start..fates[j - 1].1], stride, to, meta, (j - i) as u64);
            } else if let Fate::Drop(why) = fate {
                self.switch.counters.drop(why, (j - i) as u64);
            }
            i = j;
        }
        // Deliver: the first kept kind stays in place, the others are carried over.
        let mut kept = fates.iter().filter_map(|(_, _, f)| match f {
            Fate::Keep(from, skip) => Some((*from, *skip)),
            _ => None,
        });
        let Some(first) = kept.next() else {
            meta.len = 0;
            return;
        };
        let mut others: Vec<(SocketAddr, usize)> = Vec::new();
        for k in kept {
            if k != first && !others.contains(&k) {
                others.push(k);
            }
        }
        let counters = &self.switch.counters;
        for (from, skip) in &others {
            let mut data = Vec::new();
            let mut n = 0u64;
            for (at, end, _) in fates.iter().filter(|(_, _, f)| *f == Fate::Keep(*from, *skip)) {
                data.extend_from_slice(&buf[at + skip..*end]);
                n += 1;
            }
            if *skip > 0 {
                counters.delivered.fetch_add(n, Ordering::Relaxed);
            }
            let carried = RecvMeta { addr: *from, len: data.len(), stride: stride - skip, ..*meta };
            self.carried.lock().unwrap_or_else(PoisonError::into_inner).push_back((carried, data));
        }
        let (from, skip) = first;
        let mut written = 0;
        let mut n = 0u64;
        for (at, end, _) in fates.iter().filter(|(_, _, f)| *f == Fate::Keep(from, skip)) {
            buf.copy_within(at + skip..*end, written);
            written += end - at - skip;
            n += 1;
        }
        if skip > 0 {
            counters.delivered.fetch_add(n, Ordering::Relaxed);
        }
        *meta = RecvMeta { addr: from, len: written, stride: stride - skip, ..*meta };
    }

    /// Send `datagrams` (`stride` apart, as received) on to `to`, unchanged.
    fn forward(&self, datagrams: &[u8], stride: usize, to: SocketAddr, meta: &RecvMeta, n: u64) {
        let transmit = Transmit {
            destination: to,
            ecn: meta.ecn,
            contents: datagrams,
            segment_size: (datagrams.len() > stride).then_some(stride),
            src_ip: meta.dst_ip,
        };
        let counters = &self.switch.counters;
        match self.inner.try_send(&transmit) {
            Ok(()) => {
                counters.forwarded.fetch_add(n, Ordering::Relaxed);
                counters.forwarded_bytes.fetch_add(datagrams.len() as u64, Ordering::Relaxed);
            }
            // A full socket buffer drops, as a router would; QUIC end to end recovers.
            Err(_) => counters.drop(Dropped::SendFailed, n),
        }
    }
}

/// One received datagram's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Hand to QUIC as from this address, without its first this many bytes.
    Keep(SocketAddr, usize),
    Forward(SocketAddr),
    Drop(Dropped),
}

impl AsyncUdpSocket for SwitchedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Arc::clone(&self.inner).create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let route = match label::label_of(transmit.destination) {
            None => return self.inner.try_send(transmit),
            Some(_) => self.switch.read(|s| s.departing(transmit.destination)),
        };
        let Some((label, neighbour)) = route else {
            // The tunnel is gone: its packets go nowhere, as on a link that went down.
            self.switch.counters.drop(Dropped::UnknownLabel, 1);
            return Ok(());
        };
        let size = transmit.segment_size.unwrap_or(transmit.contents.len()).max(1);
        let header = label::header(label);
        let per_send = (MAX_SEND / (size + HEADER)).clamp(1, self.inner.max_transmit_segments().max(1));
        for (i, batch) in transmit.contents.chunks(size * per_send).enumerate() {
            let mut labelled = Vec::with_capacity(batch.len() + HEADER * batch.len().div_ceil(size));
            for datagram in batch.chunks(size) {
                labelled.extend_from_slice(&header);
                labelled.extend_from_slice(datagram);
            }
            let segments = batch.len().div_ceil(size) as u64;
            let out = Transmit {
                destination: neighbour,
                ecn: transmit.ecn,
                contents: &labelled,
                segment_size: (segments > 1).then_some(size + HEADER),
                src_ip: transmit.src_ip,
            };
            match self.inner.try_send(&out) {
                Ok(()) => self.switch.counters.sent.fetch_add(segments, Ordering::Relaxed),
                // Nothing sent yet: QUIC waits until the socket is writable and sends again.
                Err(e) if i == 0 => return Err(e),
                // Part sent: the rest is lost, as in a full queue; QUIC end to end recovers.
                Err(_) => {
                    self.switch.counters.drop(Dropped::SendFailed, segments);
                    return Ok(());
                }
            };
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        if let Some(n) = self.hand_over_carried(bufs, meta) {
            return Poll::Ready(Ok(n));
        }
        let n = std::task::ready!(self.inner.poll_recv(cx, bufs, meta))?;
        for (buf, m) in bufs.iter_mut().zip(meta.iter_mut()).take(n) {
            self.sort(buf, m);
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}
