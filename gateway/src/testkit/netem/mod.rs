//! # Link emulator
//!
//! Kernel traffic shaping is not available on our test machines, so WAN conditions are made in
//! user space: a [`UdpLink`] listens on loopback and forwards datagrams to a target, applying
//! one-way delay, jitter, loss and a rate limit in each direction, changeable at run time.
//! QUIC between two nodes runs through it unchanged.
//!
//! ```text
//!  node A ──udp──▶ [front socket] ─ forward Shaper ─▶ [upstream socket per client] ──▶ node B
//!         ◀────────────────────── backward Shaper ◀──────────────────────────────────
//! ```
//!
//! The decisions are made by the sans-IO [`Shaper`]; this module only moves datagrams. Each
//! direction has one delivery task fed in departure order (the shaper never reorders), which
//! sleeps until a packet's departure time and sends it.

mod shaper;

pub use shaper::{Fate, LinkParams, Shaper};

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Largest datagram forwarded.
const MAX_DATAGRAM: usize = 65_535;

/// Half of tokio's timer resolution (1 ms).
const TIMER_HALF_TICK: std::time::Duration = std::time::Duration::from_micros(500);

/// Counters of one emulated link.
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Datagrams delivered A→B.
    pub forwarded: AtomicU64,
    /// Datagrams delivered B→A.
    pub returned: AtomicU64,
    /// Datagrams dropped (either direction).
    pub dropped: AtomicU64,
}

/// Parameters for both directions of a link.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Conditions {
    /// Client → target.
    pub forward: LinkParams,
    /// Target → client.
    pub backward: LinkParams,
}

impl Conditions {
    /// The same parameters both ways (so a round trip sees twice the delay).
    pub fn symmetric(params: LinkParams) -> Self {
        Conditions { forward: params, backward: params }
    }
}

/// A running emulated link. Dropping it stops the link.
pub struct UdpLink {
    local: SocketAddr,
    control: watch::Sender<Conditions>,
    counters: Arc<LinkCounters>,
    task: JoinHandle<()>,
}

impl UdpLink {
    /// Listen on `127.0.0.1:0` and forward to `target` under `conditions`; `seed` fixes the
    /// random choices (loss, jitter).
    pub async fn start(target: SocketAddr, conditions: Conditions, seed: u64) -> io::Result<UdpLink> {
        for p in [conditions.forward, conditions.backward] {
            p.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        }
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let local = front.local_addr()?;
        let (control, params) = watch::channel(conditions);
        let counters = Arc::new(LinkCounters::default());
        let task = tokio::spawn(run(front, target, params, counters.clone(), seed));
        Ok(UdpLink { local, control, counters, task })
    }

    /// Where clients send: the link's front address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Change the conditions; they apply to packets arriving from now on.
    pub fn set(&self, conditions: Conditions) -> Result<(), String> {
        conditions.forward.validate()?;
        conditions.backward.validate()?;
        self.control.send_replace(conditions);
        Ok(())
    }

    /// The current conditions.
    pub fn conditions(&self) -> Conditions {
        *self.control.borrow()
    }

    /// Delivered and dropped counts.
    pub fn counters(&self) -> &LinkCounters {
        &self.counters
    }
}

impl Drop for UdpLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A datagram waiting for its departure time.
struct Pending {
    at: Instant,
    bytes: Vec<u8>,
    to: Option<SocketAddr>,
}

/// Sends datagrams in order at their departure times, on `socket` (to `to`, or connected).
fn spawn_delivery(
    socket: Arc<UdpSocket>,
    counter: Arc<LinkCounters>,
    forward: bool,
) -> mpsc::UnboundedSender<Pending> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Pending>();
    tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            // tokio's timer fires on the first 1 ms tick at or after the deadline, which would
            // add 0–1 ms to every packet. Aiming half a tick early centres the error on zero.
            let aim = p.at.checked_sub(TIMER_HALF_TICK).unwrap_or(p.at);
            tokio::time::sleep_until(aim.into()).await;
            let sent = match p.to {
                Some(to) => socket.send_to(&p.bytes, to).await,
                None => socket.send(&p.bytes).await,
            };
            // A send error (peer gone) is a lost packet, as on a real network.
            if sent.is_ok() {
                let c = if forward { &counter.forwarded } else { &counter.returned };
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    tx
}

async fn run(
    front: Arc<UdpSocket>,
    target: SocketAddr,
    mut params: watch::Receiver<Conditions>,
    counters: Arc<LinkCounters>,
    seed: u64,
) {
    let initial = *params.borrow_and_update();
    let forward_shaper = Arc::new(std::sync::Mutex::new(Shaper::new(initial.forward, seed)));
    let backward_shaper = Arc::new(std::sync::Mutex::new(Shaper::new(initial.backward, seed ^ 0x9e37_79b9)));
    let back_delivery = spawn_delivery(front.clone(), counters.clone(), false);
    // One upstream socket (and forward delivery queue) per client address.
    let mut clients: HashMap<SocketAddr, mpsc::UnboundedSender<Pending>> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, from) = tokio::select! {
            received = front.recv_from(&mut buf) => match received {
                Ok(r) => r,
                // ICMP-induced errors on loopback (e.g. a port briefly closed): keep going.
                Err(_) => continue,
            },
            changed = params.changed() => {
                if changed.is_err() {
                    return;
                }
                let c = *params.borrow_and_update();
                lock(&forward_shaper).set_params(c.forward);
                lock(&backward_shaper).set_params(c.backward);
                continue;
            }
        };
        let queue = match clients.get(&from) {
            Some(q) => q.clone(),
            None => match connect_upstream(target, from, &backward_shaper, &back_delivery, &counters).await {
                Ok(upstream) => {
                    let q = spawn_delivery(upstream, counters.clone(), true);
                    clients.insert(from, q.clone());
                    q
                }
                Err(_) => continue,
            },
        };
        match lock(&forward_shaper).admit(Instant::now(), len) {
            Fate::Drop => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Fate::DeliverAt(at) => {
                let _ = queue.send(Pending { at, bytes: buf[..len].to_vec(), to: None });
            }
        }
    }
}

/// A socket connected to `target` for one client, and the task that shapes its replies back.
async fn connect_upstream(
    target: SocketAddr,
    client: SocketAddr,
    backward: &Arc<std::sync::Mutex<Shaper>>,
    back_delivery: &mpsc::UnboundedSender<Pending>,
    counters: &Arc<LinkCounters>,
) -> io::Result<Arc<UdpSocket>> {
    let upstream = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    upstream.connect(target).await?;
    let (reader, shaper, delivery, counters) =
        (upstream.clone(), backward.clone(), back_delivery.clone(), counters.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let len = match reader.recv(&mut buf).await {
                Ok(len) => len,
                Err(_) => continue,
            };
            match lock(&shaper).admit(Instant::now(), len) {
                Fate::Drop => {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Fate::DeliverAt(at) => {
                    if delivery.send(Pending { at, bytes: buf[..len].to_vec(), to: Some(client) }).is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(upstream)
}

fn lock(m: &std::sync::Mutex<Shaper>) -> std::sync::MutexGuard<'_, Shaper> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A UDP echo server on loopback.
    async fn echo_server() -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(&buf[..n], from).await;
            }
        });
        addr
    }

    /// Send `count` numbered pings 5 ms apart, reading answers concurrently; return the RTTs
    /// of those answered.
    async fn ping(via: SocketAddr, count: u32) -> Vec<Duration> {
        let client = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        client.connect(via).await.unwrap();
        let start = Instant::now();
        let sent_at = move |i: u32| start + Duration::from_millis(5 * u64::from(i));
        let reader = {
            let client = client.clone();
            tokio::spawn(async move {
                let mut rtts = vec![];
                let mut buf = [0u8; 16];
                while let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(500), client.recv(&mut buf)).await
                {
                    if n == 4 {
                        let i = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                        rtts.push(sent_at(i).elapsed());
                    }
                }
                rtts
            })
        };
        for i in 0..count {
            tokio::time::sleep_until(sent_at(i).into()).await;
            client.send(&i.to_be_bytes()).await.unwrap();
        }
        reader.await.unwrap()
    }

    #[tokio::test]
    async fn delay_and_loss_apply_and_change_at_run_time() {
        let echo = echo_server().await;
        let link = UdpLink::start(echo, Conditions::symmetric(LinkParams::delay(15.0)), 1).await.unwrap();

        // 15 ms each way: RTT ≈ 30 ms. A delivery may be up to half a timer tick early per
        // direction (see spawn_delivery), and scheduling only adds; so the minimum is asserted
        // tightly and the median loosely (shared CI machines are noisy).
        let mut rtts = ping(link.local_addr(), 20).await;
        assert_eq!(rtts.len(), 20);
        rtts.sort();
        let (min, median) = (rtts[0].as_secs_f64() * 1000.0, rtts[10].as_secs_f64() * 1000.0);
        assert!((28.0..40.0).contains(&min), "min rtt {min} ms");
        assert!(median < 60.0, "median rtt {median} ms");

        link.set(Conditions::symmetric(LinkParams { loss: 0.5, ..LinkParams::delay(1.0) })).unwrap();
        let rtts = ping(link.local_addr(), 200).await;
        // Each direction drops half: about a quarter of the pings come back.
        assert!((20..=80).contains(&rtts.len()), "{} of 200 answered", rtts.len());
        assert!(link.counters().dropped.load(Ordering::Relaxed) > 100);
        assert!(link.set(Conditions::symmetric(LinkParams { loss: 2.0, ..LinkParams::default() })).is_err());
    }
}
