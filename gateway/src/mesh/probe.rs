//! Probing over QUIC datagrams: a responder that echoes probes, and a prober that sends a
//! series of them and summarises what came back ([`ProbeSeries`]).
//!
//! A probe is `b'P'`, a 64-bit series id and a 32-bit sequence number; the echo is the same
//! bytes with `b'R'`. Datagrams are unreliable, so a lost probe stays lost — exactly what a
//! loss measurement needs. Anything else arriving as a datagram is ignored.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use crate::path::{LinkStats, ProbeSeries};

const PROBE: u8 = b'P';
const REPLY: u8 = b'R';
const LEN: usize = 1 + 8 + 4;

fn packet(kind: u8, series: u64, seq: u32) -> Bytes {
    let mut b = BytesMut::with_capacity(LEN);
    b.put_u8(kind);
    b.put_u64(series);
    b.put_u32(seq);
    b.freeze()
}

fn parse(bytes: &[u8]) -> Option<(u8, u64, u32)> {
    if bytes.len() != LEN {
        return None;
    }
    let series = u64::from_be_bytes(bytes[1..9].try_into().ok()?);
    let seq = u32::from_be_bytes(bytes[9..13].try_into().ok()?);
    Some((bytes[0], series, seq))
}

/// Echo every probe arriving on `conn` until it closes.
pub async fn respond(conn: quinn::Connection) {
    while let Ok(datagram) = conn.read_datagram().await {
        if let Some((PROBE, series, seq)) = parse(&datagram) {
            // A full send buffer drops the echo: the prober counts it lost, as it should.
            let _ = conn.send_datagram(packet(REPLY, series, seq));
        }
    }
}

/// How a probe series is run.
#[derive(Debug, Clone, Copy)]
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

/// Send `plan.count` probes on `conn` (whose peer runs [`respond`]) and summarise the echoes.
/// `series` tells this series' echoes from any other's.
pub async fn probe(conn: &quinn::Connection, plan: ProbePlan, series: u64) -> LinkStats {
    let mut stats = ProbeSeries::new(plan.count as usize);
    let start = Instant::now();
    let deadline = start + plan.interval * plan.count + plan.grace;
    let mut next = 0u32;
    loop {
        let send_at = start + plan.interval * next;
        tokio::select! {
            _ = tokio::time::sleep_until(send_at.into()), if next < plan.count => {
                stats.on_sent(next as usize, Instant::now());
                // A datagram the connection cannot take now is simply lost.
                let _ = conn.send_datagram(packet(PROBE, series, next));
                next += 1;
            }
            echo = conn.read_datagram() => match echo {
                Ok(bytes) => {
                    if let Some((REPLY, s, seq)) = parse(&bytes)
                        && s == series
                    {
                        stats.on_answer(seq as usize, Instant::now());
                    }
                }
                Err(_) => break,
            },
            _ = tokio::time::sleep_until(deadline.into()) => break,
        }
    }
    stats.summary()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::identity::{NodeIdentity, Role, init_ca, issue};
    use crate::mesh::transport::MeshEndpoint;
    use crate::netem::{Conditions, LinkParams, UdpLink};
    use std::path::Path;

    fn identity(ca: &Path, dir: &Path, name: &str) -> NodeIdentity {
        let (cert, key) = issue(ca, name, Role::Relay, dir).unwrap();
        NodeIdentity::load(name, Role::Relay, &cert, &key, &ca.join("ca.pem")).unwrap()
    }

    #[test]
    fn packets_round_trip_and_junk_is_ignored() {
        assert_eq!(parse(&packet(PROBE, 7, 9)), Some((PROBE, 7, 9)));
        assert_eq!(parse(b"short"), None);
        assert_eq!(parse(&[0u8; 40]), None);
    }

    /// Two relays with an emulated WAN between them: what the probes measure matches what
    /// the emulator applies.
    #[tokio::test]
    async fn probes_measure_the_emulated_link() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca).unwrap();
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let r1 = MeshEndpoint::bind(any, identity(&ca, dir.path(), "r1"), &[Role::Relay]).unwrap();
        let r2 = MeshEndpoint::bind(any, identity(&ca, dir.path(), "r2"), &[Role::Relay]).unwrap();
        let link =
            UdpLink::start(r1.local_addr().unwrap(), Conditions::symmetric(LinkParams::delay(10.0)), 5)
                .await
                .unwrap();
        tokio::spawn(async move {
            while let Some((conn, _)) = r1.accept().await {
                tokio::spawn(respond(conn));
            }
        });
        let conn = r2.connect(link.local_addr(), "r1", &[Role::Relay]).await.unwrap();

        // 10 ms each way, no loss.
        let plan =
            ProbePlan { count: 100, interval: Duration::from_millis(5), grace: Duration::from_millis(300) };
        let s = probe(&conn, plan, 1).await;
        let rtt = s.rtt_ms.expect("answers");
        assert!((rtt - 20.0).abs() <= 0.2 * 20.0 + 2.0, "rtt {rtt} ms for an emulated 20 ms");
        assert!(s.loss <= 0.05, "loss {} on a clean link", s.loss);

        // 15 % loss each way: a round trip survives with probability 0.85² ≈ 72 %. Loss is a
        // binomial count: at 400 probes one standard deviation is 2.2 points, so 8 points of
        // tolerance (3.6 σ) checks accuracy without flaking.
        link.set(Conditions::symmetric(LinkParams { loss: 0.15, ..LinkParams::delay(10.0) })).unwrap();
        let s = probe(&conn, ProbePlan { count: 400, ..plan }, 2).await;
        let expected = 1.0 - 0.85f64 * 0.85;
        assert!((s.loss - expected).abs() <= 0.08, "loss {} vs emulated {expected}", s.loss);
        let rtt = s.rtt_ms.expect("answers");
        assert!((rtt - 20.0).abs() <= 0.2 * 20.0 + 2.0, "rtt {rtt} ms");
    }
}
