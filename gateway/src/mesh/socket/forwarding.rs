//! A relay's forwarding thread: it alone reads the relay's mesh socket, waiting in `poll`,
//! forwards labelled packets as soon as the kernel wakes it, and queues the relay's own QUIC
//! packets in the socket's inbox; quinn's sends go straight to the socket ([`Plain`]).

use std::future::Future;
use std::io::{self, IoSliceMut};
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::UdpPoller;
use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use rustix::event::{EventfdFlags, PollFd, PollFlags, eventfd, poll};

use super::{Dropped, Outlet, Sorter};

/// Receive buffers a relay's thread reads into at once.
const THREAD_BATCH: usize = 8;

/// How long QUIC's sends wait after a relay's socket was full, before they try again.
const SEND_RETRY: Duration = Duration::from_millis(1);

/// How long a relay's thread pauses after an unexpected receive error (never spinning on one).
const ERROR_PAUSE: Duration = Duration::from_millis(1);

/// A relay's socket, used without the async runtime: non-blocking, written by whoever sends,
/// read only by the forwarding thread (which waits for it in `poll`).
#[derive(Debug)]
pub(super) struct Plain {
    pub(super) socket: std::net::UdpSocket,
    pub(super) state: UdpSocketState,
    /// A send of QUIC's found the socket full: its next sends wait [`SEND_RETRY`].
    full: AtomicBool,
}

impl Plain {
    pub(super) fn new(socket: std::net::UdpSocket) -> io::Result<Plain> {
        socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&socket).into())?;
        Ok(Plain { socket, state, full: AtomicBool::new(false) })
    }

    /// QUIC's send: as quinn's own socket does it (errors other than a full socket are
    /// logged by quinn-udp and taken as a lost packet).
    pub(super) fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let sent = self.state.send((&self.socket).into(), transmit);
        if matches!(&sent, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            self.full.store(true, Ordering::Relaxed);
        }
        sent
    }
}

impl Outlet for Plain {
    fn send(&self, transmit: &Transmit) -> io::Result<()> {
        self.state.send((&self.socket).into(), transmit)
    }

    fn max_segments(&self) -> usize {
        self.state.max_gso_segments()
    }
}

/// When QUIC may send on a relay's socket: at once, unless it was just found full; then after
/// [`SEND_RETRY`] (a relay's own QUIC traffic — control and probes — is light, and no runtime
/// watches the socket to say when it drains).
#[derive(Debug)]
pub(super) struct PlainPoller {
    pub(super) socket: Arc<Plain>,
    pub(super) retry: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl UdpPoller for PlainPoller {
    fn poll_writable(mut self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.socket.full.load(Ordering::Relaxed) {
            let retry = this.retry.get_or_insert_with(|| Box::pin(tokio::time::sleep(SEND_RETRY)));
            std::task::ready!(retry.as_mut().poll(cx));
            this.socket.full.store(false, Ordering::Relaxed);
        }
        this.retry = None;
        Poll::Ready(Ok(()))
    }
}

/// A relay's forwarding thread; dropping it stops the thread and waits for it.
#[derive(Debug)]
pub(super) struct ForwardingThread {
    /// Written to stop the thread.
    stop: OwnedFd,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ForwardingThread {
    pub(super) fn start(socket: Arc<Plain>, sorter: Arc<Sorter>) -> io::Result<ForwardingThread> {
        let stop = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        let stopped = stop.try_clone()?;
        let thread = std::thread::Builder::new()
            .name("mesh-forward".into())
            .spawn(move || forward_until_stopped(&socket, &sorter, &stopped))?;
        Ok(ForwardingThread { stop, thread: Some(thread) })
    }
}

impl Drop for ForwardingThread {
    fn drop(&mut self) {
        if rustix::io::write(&self.stop, &1u64.to_ne_bytes()).is_ok()
            && let Some(thread) = self.thread.take()
        {
            let _ = thread.join();
        }
    }
}

/// The forwarding thread: wait for datagrams (or `stop`), read them in batches, sort them —
/// forwarding at once — and queue what is QUIC's.
fn forward_until_stopped(socket: &Plain, sorter: &Sorter, stop: &OwnedFd) {
    // As quinn sizes its own: a buffer holds the largest datagram times the GRO segments.
    let size = (u16::MAX as usize + 1) * socket.state.gro_segments().max(1);
    let Some(mut storage) = RecvBuffer::new(size * THREAD_BATCH) else {
        tracing::error!("mesh forwarding stopped: no memory for its receive buffers");
        return;
    };
    let storage = storage.as_mut_slice();
    let mut meta = [RecvMeta::default(); THREAD_BATCH];
    let counters = &sorter.switch.counters;
    loop {
        let mut fds = [PollFd::new(&socket.socket, PollFlags::IN), PollFd::new(stop, PollFlags::IN)];
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                tracing::error!("mesh forwarding stopped: poll failed: {e}");
                return;
            }
        }
        if !fds[1].revents().is_empty() {
            return;
        }
        loop {
            let mut chunks = storage.chunks_mut(size);
            let mut bufs: [IoSliceMut; THREAD_BATCH] =
                std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
            let n = match socket.state.recv((&socket.socket).into(), &mut bufs, &mut meta) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // An ICMP error queued on the socket, say: read once; never spin on it.
                    tracing::debug!("mesh socket: {e}");
                    std::thread::sleep(ERROR_PAUSE);
                    break;
                }
            };
            for (buf, m) in bufs.iter_mut().zip(meta.iter_mut()).take(n) {
                sorter.sort(buf, m, socket);
                if m.len > 0 && !sorter.inbox.push(*m, buf[..m.len].to_vec()) {
                    counters.drop(Dropped::SendFailed, m.len.div_ceil(m.stride.max(1)) as u64);
                }
            }
            // Fewer than asked for: the socket is drained (poll says when there is more).
            if n < THREAD_BATCH {
                break;
            }
        }
    }
}

/// A relay thread's receive buffers: zeroed memory mapped from the OS by the system allocator,
/// so that only the pages datagrams are written to become resident. (A batch of buffers sized
/// for the largest GRO batch is megabytes, of which a relay touches the first few KiB of each;
/// from the process's allocator, when it backed its arenas with huge pages, each touch cost a
/// 2 MiB page: +18 MiB per relay, measured. The system allocator maps so large a block on its
/// own, whatever the process's allocator does.)
struct RecvBuffer {
    ptr: std::ptr::NonNull<u8>,
    layout: std::alloc::Layout,
}

#[allow(unsafe_code)]
impl RecvBuffer {
    fn new(len: usize) -> Option<RecvBuffer> {
        use std::alloc::GlobalAlloc;
        let layout = std::alloc::Layout::array::<u8>(len.max(1)).ok()?;
        // SAFETY: the layout's size is not zero.
        let ptr = unsafe { std::alloc::System.alloc_zeroed(layout) };
        std::ptr::NonNull::new(ptr).map(|ptr| RecvBuffer { ptr, layout })
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points to `layout.size()` zeroed (so initialised) bytes this value owns
        // until it drops, borrowed mutably here for no longer than `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

#[allow(unsafe_code)]
impl Drop for RecvBuffer {
    fn drop(&mut self) {
        use std::alloc::GlobalAlloc;
        // SAFETY: allocated by the system allocator with this layout, freed once.
        unsafe { std::alloc::System.dealloc(self.ptr.as_ptr(), self.layout) }
    }
}
