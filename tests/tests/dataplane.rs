//! The forwarding data plane on real sockets: an end-to-end QUIC connection from an ingress to a
//! site, through relays that forward its labelled packets without being able to read them;
//! what a relay refuses to forward; and a connection that moves onto a new path mid-transfer.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use skybridge_gateway::mesh::identity::Role;
use skybridge_gateway::mesh::label;
use skybridge_gateway::mesh::socket::LabelSwitch;
use skybridge_gateway::mesh::switch::Dropped;
use skybridge_gateway::mesh::transport::MeshEndpoint;
use skybridge_tests::mesh::Pki;
use tokio::net::UdpSocket;

const FOREVER: u64 = u64::MAX;

fn endpoint(pki: &Pki, name: &str, role: Role, accept: &[Role]) -> Arc<MeshEndpoint> {
    let identity = pki.tls(name, role).expect("certificate").load(name, role).expect("identity");
    let endpoint = MeshEndpoint::bind("127.0.0.1:0".parse().expect("address"), identity, accept);
    Arc::new(endpoint.expect("endpoint"))
}

/// The virtual address of tunnel `label` on loopback's IPv4 sockets.
fn virtual_addr(label: u64) -> SocketAddr {
    skybridge_gateway::mesh::label::virtual_addr(label, false).expect("a small label")
}

fn addr(e: &MeshEndpoint) -> SocketAddr {
    e.local_addr().expect("bound")
}

fn switch(e: &MeshEndpoint) -> &LabelSwitch {
    e.switch()
}

fn count(e: &MeshEndpoint, what: fn(&skybridge_gateway::mesh::socket::Counters) -> u64) -> u64 {
    what(e.switch().counters())
}

/// A wire tap between two nodes: what one sends to the tap goes to the other, and every byte
/// that passes is kept.
struct Tap {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<u8>>>,
    largest: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Tap {
    async fn between(a: SocketAddr, b: SocketAddr) -> Tap {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("tap socket");
        let addr = socket.local_addr().expect("tap address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let largest = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (kept, size) = (Arc::clone(&seen), Arc::clone(&largest));
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let to = if from == a { b } else { a };
                kept.lock().expect("tap").extend_from_slice(&buf[..n]);
                size.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
                let _ = socket.send_to(&buf[..n], to).await;
            }
        });
        Tap { addr, seen, largest, task }
    }

    fn bytes(&self) -> Vec<u8> {
        self.seen.lock().expect("tap").clone()
    }

    /// The largest datagram that passed.
    fn largest(&self) -> usize {
        self.largest.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accept the ingress's connection at `site` and, for its first stream, answer the SHA-256
/// of everything it carried; returns the connection's remote address and peer name after.
fn serve_hash(site: Arc<MeshEndpoint>) -> tokio::task::JoinHandle<(SocketAddr, String, [u8; 32], u64)> {
    tokio::spawn(async move {
        let (conn, role) = site.accept().await.expect("a connection");
        assert_eq!(role, Role::Controller);
        let peer = skybridge_gateway::mesh::transport::peer_name(&conn).expect("a named peer");
        let (mut send, mut recv) = conn.accept_bi().await.expect("a stream");
        let (mut hash, mut total) = (Sha256::new(), 0u64);
        let mut buf = vec![0u8; 64 * 1024];
        while let Some(n) = recv.read(&mut buf).await.expect("read") {
            hash.update(&buf[..n]);
            total += n as u64;
        }
        let digest: [u8; 32] = hash.finalize().into();
        send.write_all(&digest).await.expect("answer");
        send.finish().expect("finish");
        let _ = send.stopped().await;
        (conn.remote_address(), peer, digest, total)
    })
}

/// `len` bytes of a pattern no encrypted packet shows by chance.
fn pattern(len: usize) -> Vec<u8> {
    b"SKYBRIDGE-PLAINTEXT-PATTERN!".iter().copied().cycle().take(len).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_crosses_two_relays_end_to_end_encrypted_and_arrives_intact() {
    let pki = Pki::new().expect("pki");
    let ingress = endpoint(&pki, "controller", Role::Controller, &[]);
    let (r1, r2) = (endpoint(&pki, "r1", Role::Relay, &[]), endpoint(&pki, "r2", Role::Relay, &[]));
    let site = endpoint(&pki, "site-b", Role::Site, &[Role::Controller]);
    // What r1 forwards to r2 and r2 back to r1 passes a tap.
    let tap = Tap::between(addr(&r1), addr(&r2)).await;
    switch(&r1).update(|s| s.forward(7, addr(&ingress), tap.addr, FOREVER));
    switch(&r2).update(|s| s.forward(7, tap.addr, addr(&site), FOREVER));
    switch(&site).update(|s| s.route(virtual_addr(7), 7, addr(&r2), FOREVER));
    switch(&ingress).update(|s| s.route(virtual_addr(7), 7, addr(&r1), FOREVER));

    let served = serve_hash(Arc::clone(&site));
    let conn = ingress.connect(virtual_addr(7), "site-b", &[Role::Site]).await.expect("end-to-end QUIC");
    let data = pattern(8 << 20);
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    send.write_all(&data).await.expect("sent");
    send.finish().expect("finish");
    let answer = recv.read_to_end(64).await.expect("answer");
    let (remote, peer, digest, total) = served.await.expect("site");
    assert_eq!(total, data.len() as u64);
    assert_eq!(answer, digest, "the site's hash of what arrived");
    assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(&data)), "every byte intact");
    assert_eq!((remote, peer.as_str()), (virtual_addr(7), "controller"), "the site sees the ingress");

    // Both relays carried it, neither could read it: the wire between them carried more than
    // the data, and no piece of the pattern.
    let wire = tap.bytes();
    assert!(wire.len() > data.len(), "the tap saw {} bytes", wire.len());
    let piece = &data[..20];
    assert!(!wire.windows(piece.len()).any(|w| w == piece), "plaintext crossed the relays");
    for relay in [&r1, &r2] {
        let forwarded = count(relay, |c| c.forwarded_bytes.load(std::sync::atomic::Ordering::Relaxed));
        assert!(forwarded > data.len() as u64, "a relay forwarded {forwarded} bytes");
        assert_eq!(count(relay, |c| c.delivered.load(std::sync::atomic::Ordering::Relaxed)), 0);
    }
    assert!(count(&site, |c| c.delivered.load(std::sync::atomic::Ordering::Relaxed)) > 100);
    assert!(count(&ingress, |c| c.sent.load(std::sync::atomic::Ordering::Relaxed)) > 100);

    // Path MTU discovery works through the relays and goes past Ethernet's 1,500 bytes where
    // the path allows (loopback: 64 KiB): the labelled probes cross both relays.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while conn.stats().path.current_mtu <= 1500 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mtu = conn.stats().path.current_mtu;
    assert!(mtu > 1500, "path MTU {mtu} through the relays");
    assert!(tap.largest() > 1500, "the largest datagram between the relays: {}", tap.largest());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_forwards_only_its_granted_labels_between_the_granted_neighbours() {
    let pki = Pki::new().expect("pki");
    let relay = endpoint(&pki, "r1", Role::Relay, &[]);
    let prev = UdpSocket::bind("127.0.0.1:0").await.expect("prev");
    let next = UdpSocket::bind("127.0.0.1:0").await.expect("next");
    let stranger = UdpSocket::bind("127.0.0.1:0").await.expect("stranger");
    let (p, n) = (prev.local_addr().expect("p"), next.local_addr().expect("n"));
    let now = skybridge_gateway::time::now_unix_ms();
    switch(&relay).update(|s| {
        s.forward(7, p, n, FOREVER);
        s.forward(8, p, n, now.saturating_sub(1)); // expired
    });
    let labelled = |l: u64| [&label::header(l)[..], b"payload"].concat();
    let to = addr(&relay);
    stranger.send_to(&labelled(7), to).await.expect("sent"); // not a granted neighbour
    prev.send_to(&labelled(9), to).await.expect("sent"); // no such tunnel here
    prev.send_to(&labelled(8), to).await.expect("sent"); // expired
    prev.send_to(&[0u8; 20], to).await.expect("sent"); // junk
    prev.send_to(&labelled(7), to).await.expect("sent"); // the one that goes on
    let mut buf = [0u8; 64];
    let (len, from) = tokio::time::timeout(Duration::from_secs(5), next.recv_from(&mut buf))
        .await
        .expect("forwarded")
        .expect("recv");
    assert_eq!((&buf[..len], from), (&labelled(7)[..], to), "forwarded unchanged");
    // And back the other way.
    next.send_to(&labelled(7), to).await.expect("sent");
    let (len, _) = tokio::time::timeout(Duration::from_secs(5), prev.recv_from(&mut buf))
        .await
        .expect("returned")
        .expect("recv");
    assert_eq!(&buf[..len], &labelled(7)[..]);
    // Nothing else came out anywhere, and each refusal was counted for its reason.
    for socket in [&next, &prev, &stranger] {
        let nothing = tokio::time::timeout(Duration::from_millis(300), socket.recv_from(&mut buf)).await;
        assert!(nothing.is_err(), "a refused packet came out");
    }
    let counters = relay.switch().counters();
    for why in [Dropped::WrongNeighbour, Dropped::UnknownLabel, Dropped::Expired, Dropped::Junk] {
        assert_eq!(counters.dropped(why), 1, "{why:?}");
    }
    assert_eq!(counters.forwarded.load(std::sync::atomic::Ordering::Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_moves_onto_a_new_path_mid_transfer_and_loses_nothing() {
    let pki = Pki::new().expect("pki");
    let ingress = endpoint(&pki, "controller", Role::Controller, &[]);
    let (r1, r2) = (endpoint(&pki, "r1", Role::Relay, &[]), endpoint(&pki, "r2", Role::Relay, &[]));
    let site = endpoint(&pki, "site-b", Role::Site, &[Role::Controller]);
    // Tunnel 7 through r1, and the ingress's connection on it.
    let v = virtual_addr(7);
    switch(&r1).update(|s| s.forward(7, addr(&ingress), addr(&site), FOREVER));
    switch(&site).update(|s| s.route(virtual_addr(7), 7, addr(&r1), FOREVER));
    switch(&ingress).update(|s| s.route(v, 7, addr(&r1), FOREVER));
    let served = serve_hash(Arc::clone(&site));
    let conn = ingress.connect(v, "site-b", &[Role::Site]).await.expect("end-to-end QUIC");
    let data = pattern(32 << 20);
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let writer = {
        let data = data.clone();
        tokio::spawn(async move {
            for chunk in data.chunks(64 * 1024) {
                send.write_all(chunk).await.expect("sent");
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            send.finish().expect("finish");
        })
    };
    // Mid-transfer, r1 dies (stops forwarding anything) and tunnel 8 through r2 replaces 7.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!writer.is_finished(), "the transfer is still under way");
    let through_r1 = count(&r1, |c| c.forwarded.load(std::sync::atomic::Ordering::Relaxed));
    assert!(through_r1 > 100, "the first part went through r1 ({through_r1} packets)");
    r1.close();
    switch(&r1).update(|s| s.remove(7));
    switch(&r2).update(|s| s.forward(8, addr(&ingress), addr(&site), FOREVER));
    switch(&site).update(|s| s.route(virtual_addr(8), 8, addr(&r2), FOREVER));
    switch(&ingress).update(|s| s.route(v, 8, addr(&r2), FOREVER));
    writer.await.expect("writer");
    let answer = recv.read_to_end(64).await.expect("answer");
    let (remote, _, digest, total) = served.await.expect("site");
    assert_eq!(total, data.len() as u64);
    assert_eq!(answer, digest);
    assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(&data)), "every byte intact");
    assert_eq!(remote, virtual_addr(8), "the site follows the connection onto the new path");
    assert!(count(&r2, |c| c.forwarded.load(std::sync::atomic::Ordering::Relaxed)) > 100);
}
