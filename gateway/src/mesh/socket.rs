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
//!
//! Who reads the socket: at an end (a controller, a site) quinn does, on the async runtime,
//! and sorting happens as it reads. At a relay, whose work is forwarding, a thread of its own
//! waits for the socket in `poll` and forwards as soon as the kernel wakes it — the path a
//! socat relay takes, with no runtime wake-up or task switch between a packet's arrival and
//! its departure — and queues the little that is the relay's own QUIC (control, probes) for
//! quinn; quinn's sends there go straight to the socket.

mod forwarding;

use std::collections::VecDeque;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll, Waker};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

use self::forwarding::{ForwardingThread, Plain, PlainPoller};
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
    io: Io,
    sorter: Arc<Sorter>,
}

/// Who reads and writes the socket.
#[derive(Debug)]
enum Io {
    /// quinn's runtime socket, read when QUIC asks (an end: a controller or a site).
    Runtime(Arc<dyn AsyncUdpSocket>),
    /// A relay's: a thread of its own reads it and forwards; QUIC's sends go straight out.
    /// (Held, never read: dropping it stops the thread, which lets go of the socket.)
    Thread { socket: Arc<Plain>, _forwarding: ForwardingThread },
}

/// Sorting what arrives: the switch, and the datagrams waiting for this node's QUIC.
#[derive(Debug)]
struct Sorter {
    switch: Arc<LabelSwitch>,
    inbox: Inbox,
}

/// Datagrams for this node's QUIC not yet handed over (the rest of a mixed batch, or all the
/// mesh's own at a relay), and the task to wake when more come.
#[derive(Debug, Default)]
struct Inbox(Mutex<Waiting>);

#[derive(Debug, Default)]
struct Waiting {
    queue: VecDeque<(RecvMeta, Vec<u8>)>,
    bytes: usize,
    waker: Option<Waker>,
}

/// Most bytes waiting in an inbox: as much as the socket's own receive buffer holds. Beyond
/// it datagrams are dropped, as a full socket would.
const INBOX_BYTES: usize = super::transport::UDP_BUFFER_BYTES;

/// Most bytes of one send: a GSO batch must fit in one IP datagram's length field.
const MAX_SEND: usize = 65_000;

impl Inbox {
    /// Queue `data` (as `meta` describes it) and wake the reader; `false` when full.
    fn push(&self, meta: RecvMeta, data: Vec<u8>) -> bool {
        let mut waiting = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if waiting.bytes + data.len() > INBOX_BYTES {
            return false;
        }
        waiting.bytes += data.len();
        waiting.queue.push_back((meta, data));
        let waker = waiting.waker.take();
        drop(waiting);
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// Hand over queued datagrams, as many as fit; `None` when there are none, after which
    /// `cx`'s task (if given) is woken by the next push.
    fn hand_over(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
        counters: &Counters,
        cx: Option<&Context>,
    ) -> Option<usize> {
        let mut waiting = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let Some((m, data)) = waiting.queue.pop_front() else { break };
            waiting.bytes -= data.len();
            if data.len() > bufs[n].len() {
                // Cannot happen (a GRO batch is one IP datagram's bytes at most, and QUIC's
                // buffers hold two of the largest), but never overrun.
                counters.drop(Dropped::Junk, 1);
                continue;
            }
            bufs[n][..data.len()].copy_from_slice(&data);
            meta[n] = RecvMeta { len: data.len(), ..m };
            n += 1;
        }
        if n == 0
            && let Some(cx) = cx
        {
            waiting.waker = Some(cx.waker().clone());
        }
        (n > 0).then_some(n)
    }
}

impl SwitchedSocket {
    /// Wrap `inner`, sorting labelled packets with `switch` as QUIC reads them.
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, switch: Arc<LabelSwitch>) -> Arc<SwitchedSocket> {
        let sorter = Arc::new(Sorter { switch, inbox: Inbox::default() });
        Arc::new(SwitchedSocket { io: Io::Runtime(inner), sorter })
    }

    /// A relay's socket: a thread of its own reads `socket`, forwards labelled packets as
    /// soon as they arrive — woken by the kernel, with no async runtime between — and queues
    /// the mesh's own for QUIC. The thread stops when the socket is dropped.
    pub fn threaded(
        socket: std::net::UdpSocket,
        switch: Arc<LabelSwitch>,
    ) -> io::Result<Arc<SwitchedSocket>> {
        let plain = Arc::new(Plain::new(socket)?);
        let sorter = Arc::new(Sorter { switch, inbox: Inbox::default() });
        let thread = ForwardingThread::start(Arc::clone(&plain), Arc::clone(&sorter))?;
        Ok(Arc::new(SwitchedSocket { io: Io::Thread { socket: plain, _forwarding: thread }, sorter }))
    }

    /// Send `transmit` as is.
    fn send_raw(&self, transmit: &Transmit) -> io::Result<()> {
        match &self.io {
            Io::Runtime(inner) => inner.try_send(transmit),
            Io::Thread { socket: plain, .. } => plain.try_send(transmit),
        }
    }
}

impl Sorter {
    /// Sort one received buffer of datagrams (`meta.stride` apart): forward what goes on (out
    /// of `out`), strip and readdress what is delivered, drop the rest. One kind stays in
    /// `buf` (and `meta` describes it, `len` 0 when none does); the others go to the inbox.
    fn sort(&self, buf: &mut [u8], meta: &mut RecvMeta, out: &dyn Outlet) {
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
        let most = out.max_segments().max(1);
        let counters = &self.switch.counters;
        let mut i = 0;
        while i < fates.len() {
            let (start, _, fate) = fates[i];
            let mut j = i + 1;
            while j < fates.len() && fates[j].2 == fate && fates[j].1 - start <= MAX_SEND && j - i < most {
                j += 1;
            }
            if let Fate::Forward(to) = fate {
                forward(out, counters, &buf[start..fates[j - 1].1], stride, to, meta, (j - i) as u64);
            } else if let Fate::Drop(why) = fate {
                counters.drop(why, (j - i) as u64);
            }
            i = j;
        }
        // Deliver: the first kept kind stays in place, the others go to the inbox.
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
        for (from, skip) in &others {
            let mut data = Vec::new();
            let mut n = 0u64;
            for (at, end, _) in fates.iter().filter(|(_, _, f)| *f == Fate::Keep(*from, *skip)) {
                data.extend_from_slice(&buf[at + skip..*end]);
                n += 1;
            }
            let carried = RecvMeta { addr: *from, len: data.len(), stride: stride - skip, ..*meta };
            if !self.inbox.push(carried, data) {
                counters.drop(Dropped::SendFailed, n);
            } else if *skip > 0 {
                counters.delivered.fetch_add(n, Ordering::Relaxed);
            }
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
}

/// Send `datagrams` (`stride` apart, as received) on to `to`, unchanged.
fn forward(
    out: &dyn Outlet,
    counters: &Counters,
    datagrams: &[u8],
    stride: usize,
    to: SocketAddr,
    meta: &RecvMeta,
    n: u64,
) {
    let transmit = Transmit {
        destination: to,
        ecn: meta.ecn,
        contents: datagrams,
        segment_size: (datagrams.len() > stride).then_some(stride),
        src_ip: meta.dst_ip,
    };
    match out.send(&transmit) {
        Ok(()) => {
            counters.forwarded.fetch_add(n, Ordering::Relaxed);
            counters.forwarded_bytes.fetch_add(datagrams.len() as u64, Ordering::Relaxed);
        }
        // A full socket buffer drops, as a router would; QUIC end to end recovers.
        Err(_) => counters.drop(Dropped::SendFailed, n),
    }
}

/// Where forwarded datagrams leave: the socket, as its reader writes it.
trait Outlet {
    fn send(&self, transmit: &Transmit) -> io::Result<()>;
    fn max_segments(&self) -> usize;
}

impl Outlet for Arc<dyn AsyncUdpSocket> {
    fn send(&self, transmit: &Transmit) -> io::Result<()> {
        self.try_send(transmit)
    }

    fn max_segments(&self) -> usize {
        self.max_transmit_segments()
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
        match &self.io {
            Io::Runtime(inner) => Arc::clone(inner).create_io_poller(),
            Io::Thread { socket: plain, .. } => {
                Box::pin(PlainPoller { socket: Arc::clone(plain), retry: None })
            }
        }
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let switch = &self.sorter.switch;
        let route = match label::label_of(transmit.destination) {
            // The mesh's own: as is, unless a batch of large datagrams is more than one send.
            None if transmit.contents.len() <= MAX_SEND => return self.send_raw(transmit),
            None => None,
            Some(_) => match switch.read(|s| s.departing(transmit.destination)) {
                Some(route) => Some(route),
                None => {
                    // The tunnel is gone: its packets go nowhere, as on a link that went down.
                    switch.counters.drop(Dropped::UnknownLabel, 1);
                    return Ok(());
                }
            },
        };
        let size = transmit.segment_size.unwrap_or(transmit.contents.len()).max(1);
        let header = route.map(|(label, _)| label::header(label));
        let header_len = header.as_ref().map_or(0, |h| h.len());
        let per_send = (MAX_SEND / (size + header_len)).clamp(1, self.max_transmit_segments().max(1));
        let mut labelled = Vec::new();
        for (i, batch) in transmit.contents.chunks(size * per_send).enumerate() {
            let contents = match &header {
                None => batch,
                Some(header) => {
                    labelled.clear();
                    labelled.reserve(batch.len() + header.len() * batch.len().div_ceil(size));
                    for datagram in batch.chunks(size) {
                        labelled.extend_from_slice(header);
                        labelled.extend_from_slice(datagram);
                    }
                    &labelled[..]
                }
            };
            let segments = batch.len().div_ceil(size) as u64;
            let out = Transmit {
                destination: route.map_or(transmit.destination, |(_, neighbour)| neighbour),
                ecn: transmit.ecn,
                contents,
                segment_size: (segments > 1).then_some(size + header_len),
                src_ip: transmit.src_ip,
            };
            match self.send_raw(&out) {
                Ok(()) if route.is_some() => _ = switch.counters.sent.fetch_add(segments, Ordering::Relaxed),
                Ok(()) => {}
                // Nothing sent yet: QUIC waits until the socket is writable and sends again.
                Err(e) if i == 0 => return Err(e),
                // Part sent: the rest is lost, as in a full queue; QUIC end to end recovers.
                Err(_) => {
                    switch.counters.drop(Dropped::SendFailed, segments);
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
        let (inbox, counters) = (&self.sorter.inbox, &self.sorter.switch.counters);
        let inner = match &self.io {
            Io::Runtime(inner) => inner,
            // The thread has read, sorted and queued it.
            Io::Thread { .. } => {
                return inbox
                    .hand_over(bufs, meta, counters, Some(cx))
                    .map_or(Poll::Pending, |n| Poll::Ready(Ok(n)));
            }
        };
        if let Some(n) = inbox.hand_over(bufs, meta, counters, None) {
            return Poll::Ready(Ok(n));
        }
        let n = std::task::ready!(inner.poll_recv(cx, bufs, meta))?;
        for (buf, m) in bufs.iter_mut().zip(meta.iter_mut()).take(n) {
            self.sorter.sort(buf, m, inner);
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.io {
            Io::Runtime(inner) => inner.local_addr(),
            Io::Thread { socket: plain, .. } => plain.socket.local_addr(),
        }
    }

    fn max_transmit_segments(&self) -> usize {
        match &self.io {
            Io::Runtime(inner) => inner.max_transmit_segments(),
            Io::Thread { socket: plain, .. } => plain.state.max_gso_segments(),
        }
    }

    /// quinn sizes each receive buffer as this many of the largest datagram it accepts
    /// ([`super::transport::MAX_UDP_PAYLOAD`], 64 KiB); a GRO batch is one IP datagram's worth
    /// of bytes at most, so two of them hold any read with room to spare (quinn-udp's count,
    /// 64, would make it 4 MiB per buffer).
    fn max_receive_segments(&self) -> usize {
        2
    }

    fn may_fragment(&self) -> bool {
        match &self.io {
            Io::Runtime(inner) => inner.may_fragment(),
            Io::Thread { socket: plain, .. } => plain.state.may_fragment(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    fn udp() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// A relay's socket (its own thread reading it) with `label` forwarded `prev` → `next`.
    fn relay(label: u64, prev: &UdpSocket, next: &UdpSocket) -> (Arc<SwitchedSocket>, SocketAddr) {
        let socket = udp();
        let addr = socket.local_addr().unwrap();
        let switch = LabelSwitch::new(false);
        let (from, to) = (prev.local_addr().unwrap(), next.local_addr().unwrap());
        switch.update(|s| s.forward(label, from, to, u64::MAX));
        (SwitchedSocket::threaded(socket, switch).unwrap(), addr)
    }

    fn labelled(label: u64, payload: &[u8]) -> Vec<u8> {
        [&label::header(label)[..], payload].concat()
    }

    #[test]
    fn a_relays_thread_forwards_granted_labels_and_queues_the_mesh_own_for_quic() {
        let (prev, next, stranger) = (udp(), udp(), udp());
        let (relay, addr) = relay(7, &prev, &next);
        prev.send_to(&labelled(7, b"sealed"), addr).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = next.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&labelled(7, b"sealed")[..], addr), "on, unchanged");
        // Not granted: an unknown label, a stranger sending a granted one.
        prev.send_to(&labelled(8, b"x"), addr).unwrap();
        stranger.send_to(&labelled(7, b"x"), addr).unwrap();
        // The mesh's own (fixed bit set) waits for QUIC's next read.
        prev.send_to(&[0x40, 1, 2, 3], addr).unwrap();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut storage = vec![0u8; 1 << 16];
        let mut meta = [RecvMeta::default()];
        let deadline = Instant::now() + Duration::from_secs(5);
        let got = loop {
            let mut bufs = [IoSliceMut::new(&mut storage)];
            if let Poll::Ready(n) = relay.poll_recv(&mut cx, &mut bufs, &mut meta) {
                break n.unwrap();
            }
            assert!(Instant::now() < deadline, "the mesh packet never reached QUIC");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(
            (got, &storage[..meta[0].len], meta[0].addr),
            (1, &[0x40, 1, 2, 3][..], prev.local_addr().unwrap())
        );
        let counters = relay.sorter.switch.counters();
        assert_eq!(counters.forwarded.load(Ordering::Relaxed), 1);
        assert_eq!(counters.dropped(Dropped::UnknownLabel), 1);
        assert_eq!(counters.dropped(Dropped::WrongNeighbour), 1);
        // QUIC's own sends leave from the relay's address.
        let quic = [0x40, 9, 9];
        let to = next.local_addr().unwrap();
        relay
            .try_send(&Transmit {
                destination: to,
                ecn: None,
                contents: &quic,
                segment_size: None,
                src_ip: None,
            })
            .unwrap();
        let (n, from) = next.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&quic[..], addr));
    }

    #[test]
    fn dropping_a_relays_socket_stops_its_thread_and_frees_the_port_at_once() {
        let (prev, next) = (udp(), udp());
        let (relay, addr) = relay(7, &prev, &next);
        drop(relay);
        // The thread held the socket: had it not stopped, the port would still be taken.
        let again = UdpSocket::bind(addr).expect("the port is free as soon as the socket is dropped");
        // And nothing forwards any more.
        again.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        prev.send_to(&labelled(7, b"late"), addr).unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = again.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &labelled(7, b"late")[..], "the new socket got it, the old thread did not");
    }
}
