//! Splicing two byte streams — QUIC streams of adjacent hops, or a TCP connection and a QUIC
//! stream at the tunnel's ends — in both directions at once.
//!
//! - Backpressure is end to end: a direction reads only as fast as the next hop takes.
//! - Half-close travels: end of stream one way finishes (or shuts down) only that direction.
//! - Failure travels too: if either side fails, or the splice is cancelled (tunnel teardown),
//!   both sides are aborted — QUIC streams reset, TCP connections reset — so every party sees
//!   an error promptly instead of a clean end of stream or a hang.
//! - QUIC to QUIC moves a received chunk on as it is (`Bytes`, reference-counted) when it
//!   comes alone. Chunks that arrived together are joined into one, up to 64 KiB: quinn finds
//!   the bytes for each packet it sends by walking the stream's list of unacknowledged writes,
//!   so a relay that forwarded every received frame as its own write spent a fifth of its
//!   time in that walk.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

/// QUIC error code for a tunnel stream that was aborted (peer failure or teardown).
pub const ABORTED: u32 = 0x5b01;

/// Buffer size for TCP reads, and the most bytes joined into one QUIC write.
const TCP_BUF: usize = 64 * 1024;

/// A TCP read buffer grows up to this while reads keep filling it: a bulk transfer then makes
/// fewer system calls (each of which also sends a TCP window update to the client).
const TCP_BUF_MAX: usize = 256 * 1024;

/// A TCP read at least this large goes to QUIC as it is, buffer and all, instead of copied.
const HAND_OVER: usize = 16 * 1024;

/// One side of a splice.
pub enum Side {
    /// A QUIC stream to a neighbouring hop.
    Quic(quinn::SendStream, quinn::RecvStream),
    /// A TCP connection (a client at the ingress, a service at the egress).
    Tcp(TcpStream),
}

enum Reader {
    Quic(quinn::RecvStream),
    Tcp(OwnedReadHalf),
}

enum Writer {
    Quic(quinn::SendStream),
    Tcp(OwnedWriteHalf),
}

impl Side {
    fn split(self) -> (Reader, Writer) {
        match self {
            Side::Quic(send, recv) => (Reader::Quic(recv), Writer::Quic(send)),
            Side::Tcp(tcp) => {
                let (r, w) = tcp.into_split();
                (Reader::Tcp(r), Writer::Tcp(w))
            }
        }
    }
}

impl Reader {
    fn abort(&mut self) {
        if let Reader::Quic(recv) = self {
            let _ = recv.stop(ABORTED.into());
        }
    }
}

impl Writer {
    fn abort(self) {
        match self {
            Writer::Quic(mut send) => {
                let _ = send.reset(ABORTED.into());
            }
            // A zero linger makes the close a reset; `forget` keeps the write half from sending
            // a clean FIN first (the socket closes when the read half is dropped).
            Writer::Tcp(w) => {
                let _ = w.as_ref().set_zero_linger();
                w.forget();
            }
        }
    }
}

/// When bytes last moved (either way), in ms since it began watching.
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    /// Watching from now.
    pub(crate) fn new() -> Activity {
        Activity { start: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    /// Bytes moved just now.
    pub(crate) fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    pub(crate) async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// Poll `future` once, without waiting: its value if it is ready now. (Used only with
/// cancel-safe futures: dropping a pending one loses nothing.)
fn poll_once<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(value) => Some(value),
        std::task::Poll::Pending => None,
    }
}

/// Append to `batch` the chunks that have already arrived on `recv`, without waiting, until it
/// holds about `max` bytes. Returns whether the stream ended (a later read sees the end again);
/// a failed stream is an error. Used to send a client's first bytes with the tunnel's opening
/// frame, and to move whatever arrived together on in one write.
pub(crate) fn take_arrived(
    recv: &mut quinn::RecvStream,
    batch: &mut Vec<bytes::Bytes>,
    max: usize,
) -> Result<bool, quinn::ReadError> {
    let mut len: usize = batch.iter().map(|b| b.len()).sum();
    while len < max {
        match poll_once(recv.read_chunk(max - len, true)) {
            Some(Ok(Some(chunk))) => {
                len += chunk.bytes.len();
                batch.push(chunk.bytes);
            }
            Some(Ok(None)) => return Ok(true),
            Some(Err(e)) => return Err(e),
            None => break,
        }
    }
    Ok(false)
}

/// The chunks of `batch` as one: a lone chunk as it is, several copied together.
fn joined(mut batch: Vec<bytes::Bytes>) -> bytes::Bytes {
    if batch.len() == 1 {
        return batch.pop().unwrap_or_default();
    }
    let mut one = bytes::BytesMut::with_capacity(batch.iter().map(|b| b.len()).sum());
    for chunk in &batch {
        one.extend_from_slice(chunk);
    }
    one.freeze()
}

/// Write every chunk of `batch` (vectored to TCP), leaving it empty.
async fn write_batch(to: &mut Writer, batch: &mut Vec<bytes::Bytes>) -> io::Result<()> {
    match to {
        Writer::Quic(w) => {
            w.write_all_chunks(batch).await.map_err(io::Error::other)?;
            batch.clear();
        }
        Writer::Tcp(w) => {
            let mut done = 0; // chunks fully written
            while done < batch.len() {
                let slices: Vec<io::IoSlice<'_>> =
                    batch[done..].iter().map(|b| io::IoSlice::new(b)).collect();
                let mut n = w.write_vectored(&slices).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                while done < batch.len() && n >= batch[done].len() {
                    n -= batch[done].len();
                    done += 1;
                }
                if n > 0 {
                    bytes::Buf::advance(&mut batch[done], n);
                }
            }
            batch.clear();
        }
    }
    Ok(())
}

async fn write(to: &mut Writer, bytes: &[u8]) -> io::Result<()> {
    match to {
        Writer::Quic(w) => w.write_all(bytes).await.map_err(io::Error::other),
        Writer::Tcp(w) => w.write_all(bytes).await,
    }
}

/// Copy one direction until end of stream, then half-close the writer. Bytes moved are
/// counted in `moved` as they go, so a failed splice still knows them.
async fn pipe(from: &mut Reader, to: &mut Writer, activity: &Activity, moved: &AtomicU64) -> io::Result<()> {
    match (from, &mut *to) {
        (Reader::Quic(recv), Writer::Quic(send)) => {
            while let Some(chunk) = recv.read_chunk(usize::MAX, true).await.map_err(io::Error::other)? {
                let mut batch = vec![chunk.bytes];
                let ended = take_arrived(recv, &mut batch, TCP_BUF).map_err(io::Error::other)?;
                let bytes = joined(batch);
                moved.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                activity.touch();
                send.write_chunk(bytes).await.map_err(io::Error::other)?;
                if ended {
                    break;
                }
            }
        }
        // QUIC to TCP: the received chunks, no buffer of our own; whatever else has already
        // arrived (up to TCP_BUF) goes out in the same vectored write, one syscall.
        (Reader::Quic(recv), to) => {
            let mut batch: Vec<bytes::Bytes> = Vec::new();
            let mut ended = false;
            while !ended {
                let Some(first) = recv.read_chunk(usize::MAX, true).await.map_err(io::Error::other)? else {
                    break;
                };
                batch.push(first.bytes);
                ended = take_arrived(recv, &mut batch, TCP_BUF).map_err(io::Error::other)?;
                let len: usize = batch.iter().map(|b| b.len()).sum();
                moved.fetch_add(len as u64, Ordering::Relaxed);
                activity.touch();
                write_batch(to, &mut batch).await?;
            }
        }
        // TCP to anything: a read buffer only while bytes flow, so that an idle connection
        // (the common case with thousands open) holds none.
        (Reader::Tcp(tcp), to) => {
            let mut buf = bytes::BytesMut::new();
            let mut size = TCP_BUF;
            loop {
                if buf.capacity() == 0 {
                    tcp.readable().await?;
                    buf.reserve(size);
                }
                match tcp.try_read_buf(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        moved.fetch_add(n as u64, Ordering::Relaxed);
                        activity.touch();
                        if n >= size && size < TCP_BUF_MAX {
                            size *= 2;
                        }
                        match to {
                            // A large read is handed to QUIC whole, and the next read gets a
                            // new buffer; a small one is copied, so that a few bytes do not
                            // hold a large buffer until the peer acknowledges them.
                            Writer::Quic(w) if n >= HAND_OVER => {
                                w.write_chunk(buf.split().freeze()).await.map_err(io::Error::other)?;
                                if buf.capacity() < HAND_OVER {
                                    buf = bytes::BytesMut::new();
                                }
                            }
                            _ => {
                                write(to, &buf).await?;
                                buf.clear();
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => buf = bytes::BytesMut::new(),
                    Err(e) => return Err(e),
                }
            }
        }
    }
    match to {
        Writer::Quic(w) => w.finish().map_err(io::Error::other)?,
        Writer::Tcp(w) => w.shutdown().await?,
    }
    Ok(())
}

/// How a splice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Moved {
    /// Bytes from `a` to `b`.
    pub a_to_b: u64,
    /// Bytes from `b` to `a`.
    pub b_to_a: u64,
}

/// Splice `a` and `b` until both directions end. `cancel` turning true aborts both sides, and
/// so does `idle` passing with no bytes either way. On failure both sides are aborted. Returns
/// the bytes moved, and how it ended.
pub async fn splice(
    a: Side,
    b: Side,
    mut cancel: watch::Receiver<bool>,
    idle: Option<Duration>,
) -> (Moved, io::Result<()>) {
    let (mut ar, mut aw) = a.split();
    let (mut br, mut bw) = b.split();
    let activity = Activity::new();
    let (a_to_b, b_to_a) = (AtomicU64::new(0), AtomicU64::new(0));
    let result = {
        let both = async {
            tokio::try_join!(
                pipe(&mut ar, &mut bw, &activity, &a_to_b),
                pipe(&mut br, &mut aw, &activity, &b_to_a)
            )
        };
        let idle_out = async {
            match idle {
                Some(idle) => activity.idle_for(idle).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = both => r,
            _ = cancel.wait_for(|c| *c) => Err(io::Error::other("tunnel torn down")),
            _ = idle_out => Err(io::Error::new(io::ErrorKind::TimedOut, "idle for too long")),
        }
    };
    let moved = Moved { a_to_b: a_to_b.load(Ordering::Relaxed), b_to_a: b_to_a.load(Ordering::Relaxed) };
    match result {
        Ok(_) => {
            // Let the last bytes of QUIC streams be delivered before the streams are dropped.
            for w in [&mut aw, &mut bw] {
                if let Writer::Quic(send) = w {
                    let _ = tokio::time::timeout(Duration::from_secs(10), send.stopped()).await;
                }
            }
            (moved, Ok(()))
        }
        Err(e) => {
            ar.abort();
            br.abort();
            aw.abort();
            bw.abort();
            drop((ar, br));
            (moved, Err(e))
        }
    }
}
