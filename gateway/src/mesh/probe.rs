//! Probing over QUIC datagrams, and source routing of path probes through relays.
//!
//! Every mesh connection a node keeps is attached to its [`Prober`], which reads the
//! connection's datagrams and dispatches them:
//!
//! - a **link probe** (`P`) is echoed as a reply (`R`) on the same connection;
//! - a **reply** is handed to whichever series or link watcher is waiting for it;
//! - a **routed probe** (`S` forward, `T` back) carries its route — the relays it must visit —
//!   and its position on it. A relay forwards it to the next relay on the route; the last one
//!   turns it round; back at the first relay it is an answer. So a controller can measure a
//!   whole candidate path end to end, through the very relays that would carry its traffic.
//!
//! ```text
//! link probe / reply   ┌ kind ┬ series: u64 ┬ seq: u32 ┐
//! routed probe         ┌ kind ┬ series: u64 ┬ seq: u32 ┬ pos: u8 ┬ n: u8 ┬ n × (len: u8, name) ┐
//! ```
//!
//! Each attached connection is also watched for silence ([`super::liveness`]): a peer that
//! sends nothing for `silent_after` has its connection closed, and is reported as silent in
//! the node's link reports for a while ([`Prober::link_reports`], [`Prober::changed`]).
//!
//! Datagrams are unreliable, so a lost probe stays lost — exactly what a loss measurement
//! needs. Anything that does not parse, names another node at its position, or asks to be
//! forwarded to a node this one has no connection with, is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{Notify, mpsc};

use super::messages::LinkReport;
use super::peers::Peers;
use crate::path::{LinkEstimator, LinkStats, ProbeSeries};

/// The longest route a routed probe may carry.
pub const MAX_ROUTE: usize = 16;

/// A relay that fell silent is reported as such for this long after its connection closed
/// (or until it connects again): long enough for the controller to see it, and for the
/// controller's membership to take over once the relay's heartbeats stop.
pub const SILENT_REPORTED_FOR: Duration = Duration::from_secs(30);

/// A probe datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// A link probe, to be echoed.
    Probe {
        /// Which series it belongs to.
        series: u64,
        /// Its number in the series.
        seq: u32,
    },
    /// The echo of a link probe.
    Reply {
        /// Which series it belongs to.
        series: u64,
        /// Its number in the series.
        seq: u32,
    },
    /// A probe travelling along `route`.
    Routed {
        /// On its way back to `route[0]`.
        back: bool,
        /// Which series it belongs to.
        series: u64,
        /// Its number in the series.
        seq: u32,
        /// The index in `route` of the node it is addressed to.
        pos: u8,
        /// The relays, from the one that probes to the far end.
        route: Vec<String>,
    },
}

/// What a node does with a routed probe addressed to it ([`Packet::next_hop`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hop {
    /// Send `packet` to the neighbour `to`.
    Forward {
        /// The neighbour.
        to: String,
        /// The packet, its position advanced.
        packet: Packet,
    },
    /// The probe is back home: an answer for `series`.
    Answer {
        /// Series.
        series: u64,
        /// Sequence number.
        seq: u32,
    },
    /// Not for this node, or not a routed probe.
    Drop,
}

impl Packet {
    /// The datagram bytes.
    pub fn encode(&self) -> Bytes {
        let (kind, series, seq) = match self {
            Packet::Probe { series, seq } => (b'P', *series, *seq),
            Packet::Reply { series, seq } => (b'R', *series, *seq),
            Packet::Routed { back, series, seq, .. } => (if *back { b'T' } else { b'S' }, *series, *seq),
        };
        let mut b = BytesMut::with_capacity(64);
        b.put_u8(kind);
        b.put_u64(series);
        b.put_u32(seq);
        if let Packet::Routed { pos, route, .. } = self {
            b.put_u8(*pos);
            b.put_u8(route.len() as u8);
            for name in route {
                b.put_u8(name.len() as u8);
                b.put_slice(name.as_bytes());
            }
        }
        b.freeze()
    }

    /// Parse a datagram; `None` for anything malformed.
    pub fn decode(bytes: &[u8]) -> Option<Packet> {
        let (&kind, rest) = bytes.split_first()?;
        let series = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
        let seq = u32::from_be_bytes(rest.get(8..12)?.try_into().ok()?);
        let rest = &rest[12..];
        match kind {
            b'P' if rest.is_empty() => Some(Packet::Probe { series, seq }),
            b'R' if rest.is_empty() => Some(Packet::Reply { series, seq }),
            b'S' | b'T' => {
                let (&pos, rest) = rest.split_first()?;
                let (&n, mut rest) = rest.split_first()?;
                if n == 0 || usize::from(n) > MAX_ROUTE || pos >= n {
                    return None;
                }
                let mut route = Vec::with_capacity(usize::from(n));
                for _ in 0..n {
                    let (&len, tail) = rest.split_first()?;
                    let name = std::str::from_utf8(tail.get(..usize::from(len))?).ok()?;
                    route.push(name.to_owned());
                    rest = &tail[usize::from(len)..];
                }
                rest.is_empty().then_some(Packet::Routed { back: kind == b'T', series, seq, pos, route })
            }
            _ => None,
        }
    }

    /// Where a routed probe goes next when node `me` receives it (sans-IO).
    pub fn next_hop(self, me: &str) -> Hop {
        let Packet::Routed { back, series, seq, pos, route } = self else { return Hop::Drop };
        let at = usize::from(pos);
        if route.get(at).map(String::as_str) != Some(me) {
            return Hop::Drop;
        }
        let last = route.len() - 1;
        let (back, next) = match (back, at) {
            (true, 0) => return Hop::Answer { series, seq },
            (true, at) => (true, at - 1),
            (false, at) if at == last => (true, at.saturating_sub(1)),
            (false, at) => (false, at + 1),
        };
        if next == at {
            // A one-relay route: nothing to travel.
            return Hop::Answer { series, seq };
        }
        let to = route[next].clone();
        Hop::Forward { to, packet: Packet::Routed { back, series, seq, pos: next as u8, route } }
    }
}

/// How a probe series is run.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProbePlan {
    /// Probes to send.
    pub count: u32,
    /// Time between two probes.
    pub interval: Duration,
    /// How long to wait for echoes after the last probe.
    pub grace: Duration,
}

impl Default for ProbePlan {
    fn default() -> Self {
        ProbePlan { count: 20, interval: Duration::from_millis(10), grace: Duration::from_millis(500) }
    }
}

/// Why a probe series could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// No connection with that node.
    #[error("not connected to {0}")]
    NotConnected(String),
    /// A route must start at the probing node and name at most [`MAX_ROUTE`] relays.
    #[error("bad route {route:?}: {reason}")]
    BadRoute {
        /// The route.
        route: Vec<String>,
        /// What is wrong with it.
        reason: String,
    },
}

/// A node's probe hub: its mesh connections ([`Peers`]), and who waits for which answers.
pub struct Prober {
    me: String,
    /// Whether this node forwards routed probes (relays do).
    routes: bool,
    peers: Arc<Peers>,
    waiting: Mutex<HashMap<u64, mpsc::UnboundedSender<(u32, Instant)>>>,
    links: Mutex<HashMap<String, LinkStats>>,
    /// Relays whose connection was closed for silence, and when.
    silent: Mutex<HashMap<String, Instant>>,
    silent_after: Duration,
    silences: AtomicU64,
    changed: Notify,
    next_series: AtomicU64,
}

/// Removes a series' waiter when the series ends, however it ends.
struct Waiter<'a> {
    prober: &'a Prober,
    series: u64,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        lock(&self.prober.waiting).remove(&self.series);
    }
}

/// Poisoning only means another task panicked mid-update of a plain map; carry on.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Prober {
    /// A hub for node `me`; `routes` makes it forward routed probes between relays; a peer
    /// silent for `silent_after` has its connection closed.
    pub fn new(me: &str, routes: bool, silent_after: Duration) -> Arc<Prober> {
        Arc::new(Prober {
            me: me.to_owned(),
            routes,
            peers: Peers::new(),
            waiting: Mutex::new(HashMap::new()),
            links: Mutex::new(HashMap::new()),
            silent: Mutex::new(HashMap::new()),
            silent_after,
            silences: AtomicU64::new(0),
            changed: Notify::new(),
            next_series: AtomicU64::new(1),
        })
    }

    /// Attach a connection with `peer` and serve its datagrams until it closes. `relay` says
    /// whether the peer is a relay (only relays route). A peer may have several connections at
    /// once (both sides dialled, or a reconnect before the old one timed out): the newest open
    /// one is used, and closing one leaves the others in place. A peer that connects again is
    /// no longer reported silent; one that falls silent has the connection closed.
    pub fn attach(
        self: &Arc<Self>,
        peer: &str,
        conn: quinn::Connection,
        relay: bool,
    ) -> tokio::task::JoinHandle<()> {
        self.peers.add(peer, conn.clone(), relay);
        lock(&self.silent).remove(peer);
        let this = Arc::clone(self);
        let peer = peer.to_owned();
        tokio::spawn(async move {
            let serve = async {
                while let Ok(datagram) = conn.read_datagram().await {
                    this.dispatch(&conn, relay, &datagram);
                }
            };
            tokio::select! {
                () = serve => {}
                silent = super::liveness::watch(&conn, this.silent_after) => if let Some(silent) = silent {
                    this.silences.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        node = %this.me, %peer, silent_ms = silent.as_millis() as u64,
                        "peer fell silent: connection closed, its streams ended"
                    );
                    if relay {
                        lock(&this.silent).insert(peer.clone(), Instant::now());
                        this.changed.notify_one();
                    }
                }
            }
            this.peers.remove(&peer, &conn);
        })
    }

    /// Connections closed because their peer fell silent, since start.
    pub fn silences(&self) -> u64 {
        self.silences.load(Ordering::Relaxed)
    }

    /// Resolves when a relay fell silent since the last call: time for a link report.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The node's connections, which tunnel hops use too.
    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    /// The newest open connection with `peer`.
    pub fn connection(&self, peer: &str) -> Option<quinn::Connection> {
        self.peers.connection(peer)
    }

    fn dispatch(&self, from: &quinn::Connection, from_relay: bool, datagram: &[u8]) {
        match Packet::decode(datagram) {
            // A full send buffer drops the echo: the prober counts it lost, as it should.
            Some(Packet::Probe { series, seq }) => {
                let _ = from.send_datagram(Packet::Reply { series, seq }.encode());
            }
            Some(Packet::Reply { series, seq }) => self.answer(series, seq),
            Some(routed @ Packet::Routed { .. }) if self.routes && from_relay => self.route(routed),
            _ => {}
        }
    }

    fn route(&self, packet: Packet) {
        match packet.next_hop(&self.me) {
            Hop::Forward { to, packet } => {
                if let Some(next) = self.peers.get(&to).filter(|p| p.relay) {
                    let _ = next.conn.send_datagram(packet.encode());
                }
            }
            Hop::Answer { series, seq } => self.answer(series, seq),
            Hop::Drop => {}
        }
    }

    fn answer(&self, series: u64, seq: u32) {
        if let Some(tx) = lock(&self.waiting).get(&series) {
            let _ = tx.send((seq, Instant::now()));
        }
    }

    fn subscribe(&self) -> (Waiter<'_>, mpsc::UnboundedReceiver<(u32, Instant)>) {
        let series = self.next_series.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.waiting).insert(series, tx);
        (Waiter { prober: self, series }, rx)
    }

    /// Probe the link to neighbour `peer` with one series of `plan.count` probes.
    pub async fn probe_link(&self, peer: &str, plan: ProbePlan) -> Result<LinkStats, ProbeError> {
        let conn = self.connection(peer).ok_or_else(|| ProbeError::NotConnected(peer.to_owned()))?;
        Ok(self
            .series(plan, |series, seq| {
                let _ = conn.send_datagram(Packet::Probe { series, seq }.encode());
            })
            .await)
    }

    /// Probe `route` end to end: it starts at this node and names the relays to pass through.
    pub async fn probe_route(&self, route: &[String], plan: ProbePlan) -> Result<LinkStats, ProbeError> {
        let bad = |reason: &str| ProbeError::BadRoute { route: route.to_vec(), reason: reason.to_owned() };
        if route.first() != Some(&self.me) {
            return Err(bad("it must start at the probing node"));
        }
        if route.len() > MAX_ROUTE || route.iter().any(|n| n.len() > usize::from(u8::MAX)) {
            return Err(bad("too long"));
        }
        if route.len() == 1 {
            // Source and destination are the same relay: nothing to cross.
            return Ok(LinkStats { rtt_ms: Some(0.0), jitter_ms: 0.0, loss: 0.0, samples: plan.count });
        }
        let next = self.connection(&route[1]).ok_or_else(|| ProbeError::NotConnected(route[1].clone()))?;
        let route = route.to_vec();
        Ok(self
            .series(plan, |series, seq| {
                let first = Packet::Routed { back: false, series, seq, pos: 1, route: route.clone() };
                let _ = next.send_datagram(first.encode());
            })
            .await)
    }

    async fn series(&self, plan: ProbePlan, mut send: impl FnMut(u64, u32)) -> LinkStats {
        let (waiter, mut answers) = self.subscribe();
        let mut stats = ProbeSeries::new(plan.count as usize);
        let start = Instant::now();
        let deadline = start + plan.interval * plan.count + plan.grace;
        let (mut next, mut answered) = (0u32, 0u32);
        // Done when every probe is answered, or at the deadline (the rest are lost).
        while answered < plan.count {
            let send_at = start + plan.interval * next;
            tokio::select! {
                _ = tokio::time::sleep_until(send_at.into()), if next < plan.count => {
                    stats.on_sent(next as usize, Instant::now());
                    send(waiter.series, next);
                    next += 1;
                }
                Some((seq, at)) = answers.recv() => {
                    if stats.on_answer(seq as usize, at) {
                        answered += 1;
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => break,
            }
        }
        stats.summary()
    }

    /// Probe neighbour `peer` every `every`, forever, keeping a [`LinkEstimator`] whose latest
    /// statistics [`Prober::link_reports`] returns. While the peer is not connected the link
    /// reports as dead (no RTT, 100 % loss) rather than with stale numbers, and a new
    /// connection starts from a fresh estimator.
    pub async fn watch_link(&self, peer: &str, every: Duration, estimator: LinkEstimator) {
        let (waiter, mut answers) = self.subscribe();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0u32;
        let mut current: Option<(usize, LinkEstimator)> = None; // (connection id, estimator)
        loop {
            tokio::select! {
                _ = tick.tick() => match self.connection(peer) {
                    Some(conn) => {
                        let id = conn.stable_id();
                        if current.as_ref().is_none_or(|(c, _)| *c != id) {
                            current = Some((id, estimator.clone()));
                        }
                        if let Some((_, e)) = current.as_mut() {
                            e.on_sent(u64::from(seq), Instant::now());
                        }
                        let _ = conn.send_datagram(Packet::Probe { series: waiter.series, seq }.encode());
                        seq = seq.wrapping_add(1);
                    }
                    None => current = None,
                },
                Some((answered, at)) = answers.recv() => {
                    if let Some((_, e)) = current.as_mut() {
                        e.on_answer(u64::from(answered), at);
                    }
                }
            }
            let stats = match current.as_mut() {
                Some((_, e)) => e.stats(Instant::now()),
                None => LinkStats { rtt_ms: None, jitter_ms: 0.0, loss: 1.0, samples: 0 },
            };
            lock(&self.links).insert(peer.to_owned(), stats);
        }
    }

    /// What to report to the controller: the latest statistics of every watched link, and
    /// every relay that fell silent in the last [`SILENT_REPORTED_FOR`] (watched or not: the
    /// end that accepted a connection watches it for silence too), by peer.
    pub fn link_reports(&self) -> Vec<LinkReport> {
        let now = Instant::now();
        let mut silent = lock(&self.silent);
        silent.retain(|_, at| now.saturating_duration_since(*at) < SILENT_REPORTED_FOR);
        let mut reports: std::collections::BTreeMap<String, LinkReport> = lock(&self.links)
            .iter()
            .map(|(peer, stats)| {
                let report =
                    LinkReport { neighbour: peer.clone(), stats: *stats, silent: silent.contains_key(peer) };
                (peer.clone(), report)
            })
            .collect();
        for peer in silent.keys() {
            reports.entry(peer.clone()).or_insert_with(|| LinkReport {
                neighbour: peer.clone(),
                stats: LinkStats { rtt_ms: None, jitter_ms: 0.0, loss: 1.0, samples: 0 },
                silent: true,
            });
        }
        reports.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::identity::{NodeIdentity, Role, init_ca, issue};
    use crate::mesh::transport::MeshEndpoint;
    use crate::testkit::netem::{Conditions, LinkParams, UdpLink};
    use std::path::Path;

    fn identity(ca: &Path, dir: &Path, name: &str) -> NodeIdentity {
        let (cert, key) = issue(ca, name, Role::Relay, dir).unwrap();
        NodeIdentity::load(name, Role::Relay, &cert, &key, &ca.join("ca.pem")).unwrap()
    }

    fn route(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn packets_round_trip_and_junk_is_ignored() {
        let packets = [
            Packet::Probe { series: 7, seq: 9 },
            Packet::Reply { series: u64::MAX, seq: 0 },
            Packet::Routed { back: true, series: 1, seq: 2, pos: 1, route: route(&["r1", "r2", "r3"]) },
        ];
        for p in packets {
            assert_eq!(Packet::decode(&p.encode()), Some(p));
        }
        assert_eq!(Packet::decode(b"short"), None);
        assert_eq!(Packet::decode(&[0u8; 40]), None);
        let routed =
            Packet::Routed { back: false, series: 1, seq: 2, pos: 0, route: route(&["a", "b"]) }.encode();
        for cut in 0..routed.len() {
            assert_eq!(Packet::decode(&routed[..cut]), None, "cut at {cut}");
        }
        let mut trailing = routed.to_vec();
        trailing.push(0);
        assert_eq!(Packet::decode(&trailing), None);
        let mut bad_pos = routed.to_vec();
        bad_pos[13] = 2; // pos beyond the route
        assert_eq!(Packet::decode(&bad_pos), None);
    }

    #[test]
    fn a_routed_probe_walks_out_and_back() {
        let r = route(&["r1", "r2", "r3"]);
        let mut at = "r2".to_string();
        let mut packet = Packet::Routed { back: false, series: 5, seq: 1, pos: 1, route: r.clone() };
        let mut visited = vec!["r1".to_string()];
        loop {
            visited.push(at.clone());
            match packet.clone().next_hop(&at) {
                Hop::Forward { to, packet: p } => {
                    at = to;
                    packet = p;
                }
                Hop::Answer { series, seq } => {
                    assert_eq!((series, seq), (5, 1));
                    break;
                }
                Hop::Drop => panic!("dropped at {at}"),
            }
        }
        assert_eq!(visited, ["r1", "r2", "r3", "r2", "r1"]);
        // A packet addressed to someone else is dropped, and so is a plain probe.
        let stray = Packet::Routed { back: false, series: 5, seq: 1, pos: 1, route: r };
        assert_eq!(stray.next_hop("r3"), Hop::Drop);
        assert_eq!(Packet::Probe { series: 1, seq: 1 }.next_hop("r1"), Hop::Drop);
    }

    /// A relay endpoint whose prober serves every connection it accepts.
    async fn relay(ca: &Path, dir: &Path, name: &str) -> (Arc<MeshEndpoint>, Arc<Prober>) {
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let ep = Arc::new(MeshEndpoint::bind(any, identity(ca, dir, name), &[Role::Relay]).unwrap());
        let prober = Prober::new(name, true, Duration::from_millis(500));
        let (e, p) = (Arc::clone(&ep), Arc::clone(&prober));
        tokio::spawn(async move {
            while let Some((conn, _)) = e.accept().await {
                let peer = crate::mesh::transport::peer_name(&conn).unwrap();
                p.attach(&peer, conn, true);
            }
        });
        (ep, prober)
    }

    /// Two relays with an emulated WAN between them: what the probes measure matches what
    /// the emulator applies.
    #[tokio::test]
    async fn probes_measure_the_emulated_link() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca).unwrap();
        let (r1, _) = relay(&ca, dir.path(), "r1").await;
        let (r2, p2) = relay(&ca, dir.path(), "r2").await;
        let link =
            UdpLink::start(r1.local_addr().unwrap(), Conditions::symmetric(LinkParams::delay(10.0)), 5)
                .await
                .unwrap();
        let conn = r2.connect(link.local_addr(), "r1", &[Role::Relay]).await.unwrap();
        p2.attach("r1", conn, true);

        // 10 ms each way, no loss.
        let plan =
            ProbePlan { count: 100, interval: Duration::from_millis(5), grace: Duration::from_millis(300) };
        let s = p2.probe_link("r1", plan).await.unwrap();
        let rtt = s.rtt_ms.expect("answers");
        assert_measures(rtt, 20.0);
        assert!(s.loss <= 0.05, "loss {} on a clean link", s.loss);

        // 15 % loss each way: a round trip survives with probability 0.85² ≈ 72 %. Loss is a
        // binomial count: at 400 probes one standard deviation is 2.2 points, so 8 points of
        // tolerance (3.6 σ) checks accuracy without flaking.
        link.set(Conditions::symmetric(LinkParams { loss: 0.15, ..LinkParams::delay(10.0) })).unwrap();
        let s = p2.probe_link("r1", ProbePlan { count: 400, ..plan }).await.unwrap();
        let expected = 1.0 - 0.85f64 * 0.85;
        assert!((s.loss - expected).abs() <= 0.08, "loss {} vs emulated {expected}", s.loss);
        let rtt = s.rtt_ms.expect("answers");
        assert_measures(rtt, 20.0);
        assert_eq!(p2.probe_link("r9", plan).await, Err(ProbeError::NotConnected("r9".into())));
    }

    /// A probe's round trip measures the emulated one: not less (so every link was crossed),
    /// and less than twice it (none crossed twice). A busy machine only adds time, so how close
    /// it comes is for `benches/probe_accuracy.rs`, not for a test.
    fn assert_measures(rtt: f64, emulated: f64) {
        assert!(rtt >= 0.9 * emulated && rtt < 2.0 * emulated, "rtt {rtt} ms for an emulated {emulated} ms");
    }

    /// r1 — 5 ms — r2 — 15 ms — r3 (one way): a routed probe from r1 through r2 to r3 and back
    /// measures the sum, 40 ms.
    #[tokio::test]
    async fn routed_probes_cross_every_relay_on_the_route() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca).unwrap();
        let (r1, p1) = relay(&ca, dir.path(), "r1").await;
        let (r2, p2) = relay(&ca, dir.path(), "r2").await;
        let (r3, _) = relay(&ca, dir.path(), "r3").await;
        let l12 = UdpLink::start(r2.local_addr().unwrap(), Conditions::symmetric(LinkParams::delay(5.0)), 1)
            .await
            .unwrap();
        let l23 = UdpLink::start(r3.local_addr().unwrap(), Conditions::symmetric(LinkParams::delay(15.0)), 2)
            .await
            .unwrap();
        p1.attach("r2", r1.connect(l12.local_addr(), "r2", &[Role::Relay]).await.unwrap(), true);
        p2.attach("r3", r2.connect(l23.local_addr(), "r3", &[Role::Relay]).await.unwrap(), true);
        tokio::time::sleep(Duration::from_millis(50)).await; // the far ends attach on accept

        let plan =
            ProbePlan { count: 50, interval: Duration::from_millis(5), grace: Duration::from_millis(300) };
        let s = p1.probe_route(&route(&["r1", "r2", "r3"]), plan).await.unwrap();
        let rtt = s.rtt_ms.expect("answers");
        assert_measures(rtt, 40.0);
        assert!(s.loss <= 0.05, "loss {}", s.loss);

        let s = p1.probe_route(&route(&["r1"]), plan).await.unwrap();
        assert_eq!(s.rtt_ms, Some(0.0));
        assert!(matches!(
            p1.probe_route(&route(&["r2", "r3"]), plan).await,
            Err(ProbeError::BadRoute { .. })
        ));
        // A route through a relay r2 has no connection with: every probe is lost, none hangs.
        let s = p1.probe_route(&route(&["r1", "r2", "r9"]), ProbePlan { count: 5, ..plan }).await.unwrap();
        assert_eq!((s.rtt_ms, s.loss), (None, 1.0));
    }
}
