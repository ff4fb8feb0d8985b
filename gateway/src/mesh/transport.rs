//! QUIC endpoints between nodes (quinn), with the mesh's mutual TLS.
//!
//! One [`MeshEndpoint`] per node both listens (accepting peers of the roles it is given) and
//! dials (expecting a named peer of given roles). A failed handshake — unknown CA, wrong
//! role, wrong name — is logged with the peer's address and the reason (the first of each
//! [`REFUSAL_LOG_WINDOW`] at warn, the rest counted into the next), and never reaches the
//! node's logic. Handshakes complete concurrently, at most [`MAX_HANDSHAKES`] at once, so a
//! peer that starts one and goes silent holds up nobody else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls_pki_types::CertificateDer;

use super::identity::{NodeIdentity, Role};
use super::socket::{LabelSwitch, SwitchedSocket};
use super::tls::{self, TlsError};

/// Why a mesh connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// TLS could not be configured (bad certificate or key, CA).
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The connection could not be started (bad name, endpoint closed).
    #[error("cannot connect to {peer} at {addr}: {reason}")]
    Connect {
        /// The peer's node name.
        peer: String,
        /// Its address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The handshake or connection failed (refused certificate, timeout, reset).
    #[error("connection with {peer} failed: {source}")]
    Connection {
        /// Who: a node name, or the remote address for an incoming connection.
        peer: String,
        /// Why.
        source: quinn::ConnectionError,
    },
}

/// A node's QUIC endpoint in the mesh.
pub struct MeshEndpoint {
    endpoint: quinn::Endpoint,
    switch: Arc<LabelSwitch>,
    identity: Arc<NodeIdentity>,
    accept_roles: Vec<Role>,
    /// Incoming handshakes under way.
    handshakes: tokio::sync::Mutex<tokio::task::JoinSet<Handshake>>,
    refusals: std::sync::Mutex<RefusalLog>,
    /// How incoming connections are served.
    server: quinn::ServerConfig,
    /// Path MTUs found by connections through tunnels, open or ended.
    path_mtus: std::sync::Mutex<PathMtus>,
}

/// Path MTUs found over tunnels, by the tunnel's virtual address (one per tunnel, so one per
/// path): the next connection through the same tunnel — a binding's renewed end-to-end
/// connection — starts there instead of discovering it again.
#[derive(Default)]
struct PathMtus {
    /// The tunnel connections open now, by quinn's stable id, each from its accept to its end
    /// (as long as the task serving it): a renewal arrives while its predecessor is open, and
    /// starts at what that one has found so far. Looked up by each one's address now, which
    /// follows it when it migrates to another tunnel.
    open: std::collections::HashMap<usize, quinn::Connection>,
    /// What each tunnel's last connection had found when it ended. Bounded: when full, an
    /// entry is forgotten (that tunnel's next connection discovers its MTU again).
    found: std::collections::HashMap<SocketAddr, u16>,
}

/// Tunnels whose ended connection's path MTU is remembered at once.
const PATH_MTUS: usize = 4096;

/// Where every QUIC connection starts without a known path MTU: nothing to remember below it.
const QUIC_MIN_MTU: u16 = 1200;

impl PathMtus {
    fn opened(&mut self, conn: &quinn::Connection) {
        self.open.insert(conn.stable_id(), conn.clone());
    }

    /// `conn` has ended: let it go, and keep what it found for its tunnel (the last it used).
    fn ended(&mut self, conn: &quinn::Connection) {
        self.open.remove(&conn.stable_id());
        self.remember(conn.remote_address(), conn.stats().path.current_mtu);
    }

    fn remember(&mut self, tunnel: SocketAddr, mtu: u16) {
        if self.found.len() >= PATH_MTUS
            && !self.found.contains_key(&tunnel)
            && let Some(any) = self.found.keys().next().copied()
        {
            self.found.remove(&any);
        }
        self.found.insert(tunnel, mtu);
    }

    fn get(&self, tunnel: SocketAddr) -> Option<u16> {
        let open = self.open.values().find(|conn| conn.remote_address() == tunnel);
        let mtu = match open {
            Some(conn) => conn.stats().path.current_mtu,
            None => *self.found.get(&tunnel)?,
        };
        (mtu > QUIC_MIN_MTU).then_some(mtu)
    }
}

/// An incoming handshake's peer address and outcome.
type Handshake = (SocketAddr, Result<quinn::Connection, quinn::ConnectionError>);

/// Incoming handshakes under way at once; more are refused until some finish.
pub const MAX_HANDSHAKES: usize = 256;

/// At most one refused handshake per this long is logged at warn.
pub const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(10);

/// When a refused handshake is worth a warning: the first of each window, carrying how many
/// were refused since the last warning. Sans-IO: the time is passed in.
#[derive(Debug, Default)]
pub struct RefusalLog {
    warned_at: Option<std::time::Instant>,
    since: u64,
}

impl RefusalLog {
    /// Count a refusal at `now`; `Some(n)`: warn now, with the `n` refusals counted since the
    /// last warning.
    pub fn refused(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.warned_at {
            Some(at) if now.duration_since(at) < REFUSAL_LOG_WINDOW => {
                self.since += 1;
                None
            }
            _ => {
                self.warned_at = Some(now);
                Some(std::mem::take(&mut self.since))
            }
        }
    }
}

/// Concurrent streams a peer may open on a mesh connection between nodes: control requests
/// and probes. (QUIC sets state aside for every stream a peer may open, so this stays small.)
pub const MESH_STREAMS: u32 = 1024;

/// Concurrent streams the ingress may open on a binding's end-to-end connection to a site:
/// one per client connection — as many as the ingress holds at once by default
/// (`max_client_connections`, 16,384; a binding beyond it waits for a stream to end). QUIC
/// sets a slot aside for each at the site, and once streams have come and gone each slot
/// keeps a receive state for reuse: a busy binding's memory at the site grows to a bound set
/// by this number.
pub const CARRIER_STREAMS: u32 = 1 << 14;

/// Streams a peer may open at once on a connection accepted by an endpoint that accepts
/// `accept`: a site accepts only controllers' end-to-end connections, whose every stream is a
/// client connection; everyone else accepts only mesh peers.
fn incoming_streams(accept: &[Role]) -> u32 {
    if accept.contains(&Role::Controller) { CARRIER_STREAMS } else { MESH_STREAMS }
}

/// QUIC transport settings, with `incoming` streams the peer may open at once, starting at
/// path MTU `start` when another connection over the same path found it (else at QUIC's 1,200
/// bytes).
fn transport_config(incoming: u32, start: Option<u16>) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    // Keep-alives keep healthy idle links open, and make sure each end hears from the other
    // often enough that silence means the peer is gone (see `liveness`, which acts on it in
    // well under a second; the idle timeout is the backstop).
    t.keep_alive_interval(Some(super::liveness::KEEP_ALIVE));
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(5_000)))); // ms
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(incoming));
    // Let path MTU discovery go as high as the path allows (quinn stops at 1452 by default):
    // fewer, larger packets where the path has a large MTU (jumbo frames, loopback), and safe
    // where it has not — a probe too large for a link is lost (or refused by the kernel) and
    // discovery settles below it.
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_QUIC_DATAGRAM);
    t.mtu_discovery_config(Some(mtu));
    // Discovery searches up from where a connection starts, each probe padded to its full
    // size — on loopback a dozen probes, 700 KB, that the peer parses one padding byte at a
    // time. A path's MTU already found spares a new connection over it that search; should
    // the path have changed, losses bring the MTU down (quinn's black hole detection).
    if let Some(start) = start {
        let start = start.min(MAX_QUIC_DATAGRAM);
        t.initial_mtu(start);
        // quinn's initial congestion window is fixed at 14,720 bytes, less than one packet of
        // a large MTU — nothing could be sent. RFC 9002's window for the datagram size instead.
        let start = u64::from(start);
        let mut cubic = quinn::congestion::CubicConfig::default();
        cubic.initial_window((10 * start).min(14_720.max(2 * start)));
        t.congestion_controller_factory(Arc::new(cubic));
    }
    Arc::new(t)
}

/// Largest UDP payload a mesh endpoint accepts: as large as a UDP datagram can be (IPv6; IPv4's
/// limit is 20 bytes less). quinn's default (1,472) would cap every path at Ethernet's MTU.
pub(crate) const MAX_UDP_PAYLOAD: u16 = 65_527;

/// Largest QUIC datagram path MTU discovery tries: what fits in an IPv4 UDP datagram (65,507
/// bytes) with a tunnel label in front.
const MAX_QUIC_DATAGRAM: u16 = 65_507 - crate::mesh::label::HEADER as u16;

/// Requested size of the mesh socket's kernel buffers, each way. Linux's default (208 KiB)
/// holds only three of the 64 KiB packets a loopback or jumbo-frame path carries: a burst
/// overflowed it about 200 times a second in the tunnel benchmark, and QUIC took each drop for
/// congestion. The kernel caps the request at `net.core.rmem_max` / `wmem_max`.
pub(crate) const UDP_BUFFER_BYTES: usize = 4 << 20;

/// The mesh's UDP socket, bound to `addr`, with large buffers (best effort: a kernel that
/// refuses them still gets a working socket).
fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(UDP_BUFFER_BYTES) {
        tracing::debug!(%addr, "could not enlarge the UDP receive buffer: {e}");
    }
    if let Err(e) = socket.set_send_buffer_size(UDP_BUFFER_BYTES) {
        tracing::debug!(%addr, "could not enlarge the UDP send buffer: {e}");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

impl MeshEndpoint {
    /// Bind `addr` as `identity`, accepting peers whose certificates grant one of `accept`.
    pub fn bind(addr: SocketAddr, identity: NodeIdentity, accept: &[Role]) -> Result<Self, TransportError> {
        Self::bind_with(addr, identity, accept, false)
    }

    /// Bind as [`MeshEndpoint::bind`] does, for a relay: a thread of its own reads the socket
    /// and forwards tunnels' packets ([`SwitchedSocket::threaded`]).
    pub fn bind_relay(
        addr: SocketAddr,
        identity: NodeIdentity,
        accept: &[Role],
    ) -> Result<Self, TransportError> {
        Self::bind_with(addr, identity, accept, true)
    }

    fn bind_with(
        addr: SocketAddr,
        identity: NodeIdentity,
        accept: &[Role],
        forwarding_thread: bool,
    ) -> Result<Self, TransportError> {
        tls::check_own_identity(&identity)?;
        let crypto = QuicServerConfig::try_from(tls::server_config(&identity, accept)?)
            .map_err(|e| TlsError(format!("QUIC server crypto: {e}")))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(transport_config(incoming_streams(accept), None));
        let served = server.clone();
        // Labelled packets are told from QUIC's by the fixed bit, which QUIC must then always
        // set: no greasing it (RFC 9287) on the mesh.
        let mut config = quinn::EndpointConfig::default();
        config.grease_quic_bit(false);
        config
            .max_udp_payload_size(MAX_UDP_PAYLOAD)
            .map_err(|e| TransportError::Bind { addr, source: std::io::Error::other(e.to_string()) })?;
        let switch = LabelSwitch::new(addr.is_ipv6());
        let endpoint = bind_udp(addr)
            .and_then(|socket| {
                use quinn::Runtime;
                let runtime = Arc::new(quinn::TokioRuntime);
                let switch = Arc::clone(&switch);
                let socket = if forwarding_thread {
                    SwitchedSocket::threaded(socket, switch)?
                } else {
                    SwitchedSocket::new(runtime.wrap_udp_socket(socket)?, switch)
                };
                quinn::Endpoint::new_with_abstract_socket(config, Some(server), socket, runtime)
            })
            .map_err(|source| TransportError::Bind { addr, source })?;
        Ok(MeshEndpoint {
            endpoint,
            switch,
            identity: Arc::new(identity),
            accept_roles: accept.to_vec(),
            handshakes: tokio::sync::Mutex::default(),
            refusals: std::sync::Mutex::default(),
            server: served,
            path_mtus: std::sync::Mutex::default(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The label switch of this endpoint's socket: where tunnels' labelled packets go.
    pub fn switch(&self) -> &Arc<LabelSwitch> {
        &self.switch
    }

    /// The virtual address standing for tunnel `label`'s far end on this endpoint's socket
    /// ([`crate::mesh::label::virtual_addr`]); `None` when the label does not fit one.
    pub fn virtual_addr(&self, label: u64) -> Option<SocketAddr> {
        self.switch.virtual_addr(label)
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.identity.name
    }

    /// Dial node `peer` at `addr`; its certificate must name it and grant one of `expect`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        peer: &str,
        expect: &[Role],
    ) -> Result<quinn::Connection, TransportError> {
        self.connect_at_mtu(addr, peer, expect, None).await
    }

    /// Connect as [`MeshEndpoint::connect`] does, starting at path MTU `mtu` — what a
    /// connection over the same path found — instead of discovering it again.
    pub async fn connect_at_mtu(
        &self,
        addr: SocketAddr,
        peer: &str,
        expect: &[Role],
        mtu: Option<u16>,
    ) -> Result<quinn::Connection, TransportError> {
        let crypto = QuicClientConfig::try_from(tls::client_config(&self.identity, expect)?)
            .map_err(|e| TlsError(format!("QUIC client crypto: {e}")))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        // A site opens no streams on the end-to-end connection a controller makes to it.
        let incoming = if expect == [Role::Site] { 0 } else { MESH_STREAMS };
        client.transport_config(transport_config(incoming, mtu));
        let connecting = self
            .endpoint
            .connect_with(client, addr, peer)
            .map_err(|e| TransportError::Connect { peer: peer.to_owned(), addr, reason: e.to_string() })?;
        connecting.await.map_err(|source| {
            tracing::warn!(peer, %addr, error = %source, "mesh connection refused");
            TransportError::Connection { peer: peer.to_owned(), source }
        })
    }

    /// Follow the path MTU that `conn`, an accepted connection that came through a tunnel,
    /// finds: the tunnel's next connection — which may come while this one is still open —
    /// starts at what it has found by then. (Only for a tunnel's address, which stands for one
    /// path; a real address may be reached otherwise next time.) Must be followed by
    /// [`MeshEndpoint::remember_path_mtu`] when it ends, which lets it go.
    pub fn follow_path_mtu(&self, conn: &quinn::Connection) {
        self.path_mtus().opened(conn);
    }

    /// `conn`, followed with [`MeshEndpoint::follow_path_mtu`], has ended: keep what it found,
    /// without holding the connection.
    pub fn remember_path_mtu(&self, conn: &quinn::Connection) {
        self.path_mtus().ended(conn);
    }

    fn path_mtus(&self) -> std::sync::MutexGuard<'_, PathMtus> {
        self.path_mtus.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn path_mtu(&self, remote: SocketAddr) -> Option<u16> {
        self.path_mtus().get(remote)
    }

    /// Begin `incoming`'s handshake — at the path MTU its tunnel's open or last connection has
    /// found, if any — or, to validate its address first, ask its peer to retry (`None`).
    fn start_handshake(
        &self,
        incoming: quinn::Incoming,
    ) -> Option<Result<quinn::Connecting, quinn::ConnectionError>> {
        let Some(mtu) = self.path_mtu(incoming.remote_address()) else { return Some(incoming.accept()) };
        if incoming.remote_address_validated() {
            let mut server = self.server.clone();
            server.transport_config(transport_config(incoming_streams(&self.accept_roles), Some(mtu)));
            return Some(incoming.accept_with(Arc::new(server)));
        }
        // Until a peer's address is validated QUIC lets a server send three times what it
        // received, less than one packet of a large MTU: a retry (a round trip more)
        // validates it.
        if !incoming.may_retry() {
            return Some(incoming.accept());
        }
        match incoming.retry() {
            Ok(()) => None,
            Err(e) => Some(e.into_incoming().accept()),
        }
    }

    /// The next incoming connection that completed the handshake, with the role its
    /// certificate grants. Refused handshakes are logged and skipped. `None` once closed.
    /// Cancel-safe: handshakes under way carry on for the next call.
    pub async fn accept(&self) -> Option<(quinn::Connection, Role)> {
        let mut handshakes = self.handshakes.lock().await;
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    let incoming = incoming?;
                    let remote = incoming.remote_address();
                    if handshakes.len() >= MAX_HANDSHAKES {
                        incoming.refuse();
                        self.refused(remote, &format!("{MAX_HANDSHAKES} handshakes already under way"));
                        continue;
                    }
                    let Some(connecting) = self.start_handshake(incoming) else { continue };
                    handshakes.spawn(async move {
                        match connecting {
                            Ok(connecting) => (remote, connecting.await),
                            Err(e) => (remote, Err(e)),
                        }
                    });
                }
                Some(done) = handshakes.join_next(), if !handshakes.is_empty() => {
                    let Ok((remote, outcome)) = done else { continue };
                    match outcome {
                        Ok(conn) => match peer_role(&conn, &self.accept_roles) {
                            Some(role) => return Some((conn, role)),
                            None => conn.close(1u32.into(), b"no acceptable role"),
                        },
                        Err(error) => self.refused(remote, &error.to_string()),
                    }
                }
            }
        }
    }

    /// Log a refused handshake: at warn for the first of a window, else at debug.
    fn refused(&self, remote: SocketAddr, error: &str) {
        let warn = self
            .refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .refused(std::time::Instant::now());
        match warn {
            Some(0) => tracing::warn!(%remote, %error, "mesh handshake refused"),
            Some(more) => {
                tracing::warn!(%remote, %error, refused_since_last_warning = more, "mesh handshake refused")
            }
            None => tracing::debug!(%remote, %error, "mesh handshake refused"),
        }
    }

    /// Close the endpoint and all its connections.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"shutdown");
    }

    /// Close, and wait (at most `limit`) until every connection has told its peer.
    pub async fn close_and_wait(&self, limit: std::time::Duration) {
        self.close();
        let _ = tokio::time::timeout(limit, self.endpoint.wait_idle()).await;
    }
}

/// The role a connected peer's certificate grants, among `roles`.
pub fn peer_role(conn: &quinn::Connection, roles: &[Role]) -> Option<Role> {
    let certs = conn.peer_identity()?.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    tls::granted_role(certs.first()?, roles).ok()
}

/// The node name a connected peer's certificate carries.
pub fn peer_name(conn: &quinn::Connection) -> Option<String> {
    let certs = conn.peer_identity()?.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    tls::node_name(certs.first()?)
}

/// Whether a connected peer's certificate names node `name`.
pub fn peer_is(conn: &quinn::Connection, name: &str) -> bool {
    conn.peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|certs| certs.first().map(|c| tls::names_node(c, name)))
        .unwrap_or(false)
}

/// Log at debug what a connection carried in its life — packets, losses, what path MTU
/// discovery found and what it cost — to tell a busy connection's cost from a young one's.
pub fn log_connection_stats(conn: &quinn::Connection, what: &str) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let s = conn.stats();
    tracing::debug!(
        what,
        remote = %conn.remote_address(),
        datagrams_tx = s.udp_tx.datagrams,
        bytes_tx = s.udp_tx.bytes,
        datagrams_rx = s.udp_rx.datagrams,
        bytes_rx = s.udp_rx.bytes,
        packets_sent = s.path.sent_packets,
        packets_lost = s.path.lost_packets,
        congestion_events = s.path.congestion_events,
        mtu = s.path.current_mtu,
        mtu_probes = s.path.sent_plpmtud_probes,
        mtu_probes_lost = s.path.lost_plpmtud_probes,
        black_holes = s.path.black_holes_detected,
        stream_frames_rx = s.frame_rx.stream,
        stream_frames_tx = s.frame_tx.stream,
        acks_rx = s.frame_rx.acks,
        acks_tx = s.frame_tx.acks,
        "connection stats"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::frame::{DEFAULT_MAX_FRAME, FrameDecoder, encode};
    use crate::mesh::identity::{init_ca, issue};
    use std::path::Path;

    #[test]
    fn refused_handshakes_warn_once_a_window_with_the_count_since() {
        let mut log = RefusalLog::default();
        let t0 = std::time::Instant::now();
        assert_eq!(log.refused(t0), Some(0), "the first warns");
        for i in 1..=1_000u64 {
            assert_eq!(log.refused(t0 + Duration::from_millis(i)), None, "then counted");
        }
        assert_eq!(log.refused(t0 + REFUSAL_LOG_WINDOW), Some(1_000), "the next window warns with the count");
        assert_eq!(log.refused(t0 + REFUSAL_LOG_WINDOW * 3), Some(0));
    }

    fn identity(ca: &Path, dir: &Path, name: &str, role: Role) -> NodeIdentity {
        let (cert, key) = issue(ca, name, role, dir).unwrap();
        NodeIdentity::load(name, role, &cert, &key, &ca.join("ca.pem")).unwrap()
    }

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    /// Two relays' endpoints on loopback, with their certificates' folder (kept while they run).
    fn two_relays() -> (tempfile::TempDir, MeshEndpoint, MeshEndpoint) {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca).unwrap();
        let bind = |name| {
            MeshEndpoint::bind(loopback(), identity(&ca, dir.path(), name, Role::Relay), &[Role::Relay])
                .unwrap()
        };
        let (r1, r2) = (bind("r1"), bind("r2"));
        (dir, r1, r2)
    }

    #[test]
    fn mesh_socket_gets_large_buffers_within_the_kernel_cap() {
        let socket = bind_udp(loopback()).unwrap();
        let sock = socket2::SockRef::from(&socket);
        for (cap, got) in [
            ("/proc/sys/net/core/rmem_max", sock.recv_buffer_size().unwrap()),
            ("/proc/sys/net/core/wmem_max", sock.send_buffer_size().unwrap()),
        ] {
            let cap: usize = std::fs::read_to_string(cap).unwrap().trim().parse().unwrap();
            // Linux grants up to its cap and reports twice what it granted (bookkeeping room).
            assert!(got >= 2 * UDP_BUFFER_BYTES.min(cap), "buffer {got} with cap {cap}");
        }
    }

    #[test]
    fn path_mtus_are_bounded() {
        let mut mtus = PathMtus::default();
        let addr = |i: u16| SocketAddr::from(([240, 0, 0, 0], i));
        for i in 0..PATH_MTUS as u16 + 10 {
            mtus.remember(addr(i), 9_000);
        }
        assert_eq!(mtus.found.len(), PATH_MTUS);
        assert_eq!(mtus.get(addr(PATH_MTUS as u16 + 9)), Some(9_000), "the newest is kept");
        mtus.remember(addr(PATH_MTUS as u16 + 9), 1_500);
        assert_eq!((mtus.found.len(), mtus.get(addr(PATH_MTUS as u16 + 9))), (PATH_MTUS, Some(1_500)));
    }

    /// Wait until `conn`'s path MTU discovery can go no higher on loopback (within the minimum
    /// step quinn's search stops at, 20 bytes).
    async fn discovered(conn: &quinn::Connection) -> u16 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mtu = conn.stats().path.current_mtu;
            if mtu >= MAX_QUIC_DATAGRAM - 20 {
                return mtu;
            }
            assert!(tokio::time::Instant::now() < deadline, "discovery stalled at {mtu}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A connection over a path whose MTU another found starts there, on both sides: it makes
    /// no probe, and it carries a stream at once (its first congestion window holds a packet
    /// of that size — quinn's default would hold none). Whether the other has ended...
    #[tokio::test]
    async fn a_connection_over_a_known_path_starts_at_its_mtu_without_probing() {
        next_connection_starts_at_found_mtu(false).await;
    }

    /// ... or is still open, as a renewed connection's predecessor is when it arrives.
    #[tokio::test]
    async fn a_connection_beside_an_open_one_starts_at_the_mtu_that_one_found() {
        next_connection_starts_at_found_mtu(true).await;
    }

    async fn next_connection_starts_at_found_mtu(first_still_open: bool) {
        let (_dir, r1, r2) = two_relays();
        let addr = r1.local_addr().unwrap();

        let (first, accepted) = tokio::join!(r2.connect(addr, "r1", &[Role::Relay]), r1.accept());
        let (first, (accepted, _)) = (first.unwrap(), accepted.unwrap());
        r1.follow_path_mtu(&accepted);
        let (mtu, accepted_mtu) = (discovered(&first).await, discovered(&accepted).await);
        assert!(first.stats().path.sent_plpmtud_probes > 0, "the first one searched");
        if !first_still_open {
            first.close(0u32.into(), b"done");
            accepted.closed().await;
            r1.remember_path_mtu(&accepted);
            drop(accepted);
            assert!(r1.path_mtus().open.is_empty(), "an ended connection is let go");
        }

        let again =
            async { tokio::join!(r2.connect_at_mtu(addr, "r1", &[Role::Relay], Some(mtu)), r1.accept()) };
        let (again, accepted_again) =
            tokio::time::timeout(Duration::from_secs(10), again).await.expect("handshake within 10 s");
        let (again, (accepted_again, _)) = (again.unwrap(), accepted_again.unwrap());
        let echo = tokio::spawn(async move {
            let (mut send, mut recv) = accepted_again.accept_bi().await.unwrap();
            let bytes = recv.read_to_end(1 << 20).await.unwrap();
            send.write_all(&bytes).await.unwrap();
            send.finish().unwrap();
            let _ = send.stopped().await;
            accepted_again
        });
        let sent: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let (mut send, mut recv) = again.open_bi().await.unwrap();
        send.write_all(&sent).await.unwrap();
        send.finish().unwrap();
        let back = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(1 << 20)).await;
        assert!(back.expect("echoed within 10 s").unwrap() == sent, "echoed intact");
        let accepted_again = echo.await.unwrap();
        for (side, conn, start) in [("client", &again, mtu), ("server", &accepted_again, accepted_mtu)] {
            let path = conn.stats().path;
            assert_eq!((path.current_mtu, path.sent_plpmtud_probes), (start, 0), "{side}: {path:?}");
        }
    }

    #[tokio::test]
    async fn relays_connect_and_exchange_frames() {
        let (_dir, r1, r2) = two_relays();
        let addr = r1.local_addr().unwrap();

        let server = tokio::spawn(async move {
            let (conn, role) = r1.accept().await.unwrap();
            assert_eq!(role, Role::Relay);
            assert!(peer_is(&conn, "r2") && !peer_is(&conn, "r1"));
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let bytes = recv.read_to_end(1 << 16).await.unwrap();
            let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
            d.push(&bytes);
            let got: String = d.decode().unwrap().unwrap();
            send.write_all(&encode(&format!("hello {got}"), DEFAULT_MAX_FRAME).unwrap()).await.unwrap();
            send.finish().unwrap();
            conn.closed().await;
        });

        let conn = r2.connect(addr, "r1", &[Role::Relay]).await.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&encode(&"r2".to_owned(), DEFAULT_MAX_FRAME).unwrap()).await.unwrap();
        send.finish().unwrap();
        let bytes = recv.read_to_end(1 << 16).await.unwrap();
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        d.push(&bytes);
        assert_eq!(d.decode::<String>().unwrap().unwrap(), "hello r2");
        conn.close(0u32.into(), b"done");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_certificate_from_another_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, rogue_ca) = (dir.path().join("ca"), dir.path().join("rogue"));
        init_ca(&ca).unwrap();
        init_ca(&rogue_ca).unwrap();
        let r1 = MeshEndpoint::bind(loopback(), identity(&ca, dir.path(), "r1", Role::Relay), &[Role::Relay])
            .unwrap();
        let addr = r1.local_addr().unwrap();
        tokio::spawn(async move { while r1.accept().await.is_some() {} });

        // A rogue node: its own CA, trusting it (so it believes in its own certificate).
        let rogue_dir = dir.path().join("rogue-node");
        let rogue = MeshEndpoint::bind(
            loopback(),
            identity(&rogue_ca, &rogue_dir, "r9", Role::Relay),
            &[Role::Relay],
        )
        .unwrap();
        let e = rogue.connect(addr, "r1", &[Role::Relay]).await.unwrap_err();
        assert!(matches!(e, TransportError::Connection { .. }), "{e}");
    }

    #[test]
    fn a_node_whose_own_certificate_is_not_from_its_ca_fails_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, other) = (dir.path().join("ca"), dir.path().join("other"));
        init_ca(&ca).unwrap();
        init_ca(&other).unwrap();
        // Issued by `other`, configured with `ca`: every peer would refuse it.
        let (cert, key) = issue(&other, "r1", Role::Relay, dir.path()).unwrap();
        let identity = NodeIdentity::load("r1", Role::Relay, &cert, &key, &ca.join("ca.pem")).unwrap();
        let e = MeshEndpoint::bind(loopback(), identity, &[Role::Relay]).map(|_| ()).unwrap_err();
        assert!(e.to_string().contains("does not verify against the configured CA"), "{e}");
    }

    #[tokio::test]
    async fn a_site_presenting_as_a_relay_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca).unwrap();
        // r1 accepts relays only (its relay-to-relay listener).
        let r1 = MeshEndpoint::bind(loopback(), identity(&ca, dir.path(), "r1", Role::Relay), &[Role::Relay])
            .unwrap();
        let addr = r1.local_addr().unwrap();
        let accepted = tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(2), r1.accept()).await.ok().flatten().is_some()
        });
        let site = MeshEndpoint::bind(
            loopback(),
            identity(&ca, dir.path(), "site-a", Role::Site),
            &[Role::Controller],
        )
        .unwrap();
        // In TLS 1.3 the server checks the client's certificate after the client has finished
        // its side of the handshake, so the site may briefly believe it is connected: r1 then
        // closes the connection at once, and never hands it to its logic.
        if let Ok(conn) = site.connect(addr, "r1", &[Role::Relay]).await {
            let reason = tokio::time::timeout(Duration::from_secs(2), conn.closed())
                .await
                .expect("r1 closes a refused connection promptly");
            assert!(
                matches!(
                    reason,
                    quinn::ConnectionError::TransportError(_) | quinn::ConnectionError::ConnectionClosed(_)
                ),
                "{reason}"
            );
            tracing::debug!(%reason, "refused as expected");
        }
        assert!(!accepted.await.unwrap(), "r1 accepted a site as a relay");

        // The other way: a client expecting a relay refuses a server whose certificate is a site's.
        let site_server =
            MeshEndpoint::bind(loopback(), identity(&ca, dir.path(), "site-b", Role::Site), &[Role::Relay])
                .unwrap();
        let site_addr = site_server.local_addr().unwrap();
        tokio::spawn(async move { while site_server.accept().await.is_some() {} });
        let r2 = MeshEndpoint::bind(loopback(), identity(&ca, dir.path(), "r2", Role::Relay), &[Role::Relay])
            .unwrap();
        assert!(r2.connect(site_addr, "site-b", &[Role::Relay]).await.is_err());
        // …and a client refuses a server that is not the node it dialled.
        assert!(r2.connect(site_addr, "site-x", &[Role::Site]).await.is_err());
    }

    #[tokio::test]
    async fn a_node_configured_with_someone_elses_role_fails_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca).unwrap();
        let (cert, key) = issue(&ca, "site-a", Role::Site, dir.path()).unwrap();
        let claims_relay =
            NodeIdentity::load("site-a", Role::Relay, &cert, &key, &ca.join("ca.pem")).unwrap();
        let e = MeshEndpoint::bind(loopback(), claims_relay, &[Role::Relay]).err().unwrap();
        assert!(e.to_string().contains("does not grant role `relay`"), "{e}");
        let wrong_name = NodeIdentity::load("site-z", Role::Site, &cert, &key, &ca.join("ca.pem")).unwrap();
        let e = MeshEndpoint::bind(loopback(), wrong_name, &[Role::Relay]).err().unwrap();
        assert!(e.to_string().contains("does not name node `site-z`"), "{e}");
    }
}
