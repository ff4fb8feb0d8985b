//! Silent peers: a mesh connection whose peer has sent nothing for `silent_after` is closed.
//!
//! A SIGKILLed node or a blackholed link sends no `CONNECTION_CLOSE`: left to QUIC, its
//! connections would live on until the idle timeout (5 s), every stream through it hanging
//! and new tunnels still sent its way. But a healthy connection is never quiet for long:
//! both ends send keep-alives every [`KEEP_ALIVE`], and links are probed every 100 ms. So
//! [`watch`] closes a connection on which nothing at all arrived for `silent_after` (default
//! [`DEFAULT_SILENT_AFTER_MS`]): its streams end with an error at once, a node tells the
//! controller in its next link report (sent at once), and the controller marks a node down
//! whose control connection fell silent.
//!
//! Not declaring healthy peers dead on a loaded machine: anything received counts (data,
//! acknowledgements, keep-alives, probes — a busy link is never silent), and a checker that was
//! itself starved — its tick came late — cannot tell whether the peer was quiet, so it starts
//! its window again instead of blaming the peer ([`Silence`], sans-IO).

use std::time::{Duration, Instant};

/// How often each end of a mesh connection makes sure the other hears something.
pub const KEEP_ALIVE: Duration = Duration::from_millis(150);

/// Default silence after which a peer is taken for gone, ms: over three keep-alive intervals
/// and five link probes.
pub const DEFAULT_SILENT_AFTER_MS: u64 = 500;

/// The shortest `silent_after` a config may ask for: three keep-alive intervals.
pub const MIN_SILENT_AFTER_MS: u64 = 3 * KEEP_ALIVE.as_millis() as u64;

/// QUIC application close code of a connection closed because its peer fell silent.
pub const PEER_SILENT: u32 = 0x5b02;

/// Silence on one connection, sans-IO: fed the connection's count of received datagrams at
/// each tick, it says when the peer has been silent for `after`.
#[derive(Debug, Clone)]
pub struct Silence {
    after: Duration,
    received: u64,
    heard_at: Instant,
    ticked_at: Instant,
}

impl Silence {
    /// Watching from `now`, when `received` datagrams had arrived.
    pub fn new(after: Duration, now: Instant, received: u64) -> Silence {
        Silence { after, received, heard_at: now, ticked_at: now }
    }

    /// How often to tick: a fifth of the window, so that silence is noticed within 20 % of it.
    pub fn tick_every(&self) -> Duration {
        self.after / 5
    }

    /// A tick at `now`, when `received` datagrams have arrived in all: how long the peer has
    /// been silent, once that is `after` or more.
    pub fn tick(&mut self, now: Instant, received: u64) -> Option<Duration> {
        // A tick later than half the window means this side was starved: whatever the peer
        // sent may still sit unread in the socket. Start again rather than blame the peer.
        let starved = now.saturating_duration_since(self.ticked_at) > self.after / 2;
        self.ticked_at = now;
        if received != self.received || starved {
            self.received = received;
            self.heard_at = now;
            return None;
        }
        let silent = now.saturating_duration_since(self.heard_at);
        (silent >= self.after).then_some(silent)
    }
}

/// Watch `conn` until it closes; close it with [`PEER_SILENT`] once its peer has been silent
/// for `after`, and return how long it was silent (`None`: it closed otherwise).
pub async fn watch(conn: &quinn::Connection, after: Duration) -> Option<Duration> {
    let mut silence = Silence::new(after, Instant::now(), conn.stats().udp_rx.datagrams);
    let every = silence.tick_every();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = conn.closed() => return None,
        }
        if let Some(silent) = silence.tick(Instant::now(), conn.stats().udp_rx.datagrams) {
            let reason = format!("peer silent for {} ms", silent.as_millis());
            conn.close(PEER_SILENT.into(), reason.as_bytes());
            return Some(silent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_peer_that_sends_nothing_is_silent_after_the_window_and_not_before() {
        let t0 = Instant::now();
        let mut s = Silence::new(ms(500), t0, 7);
        assert_eq!(s.tick_every(), ms(100));
        for n in 1..=4 {
            assert_eq!(s.tick(t0 + ms(100 * n), 7), None, "{n}00 ms");
        }
        assert_eq!(s.tick(t0 + ms(500), 7), Some(ms(500)));
        assert_eq!(s.tick(t0 + ms(600), 7), Some(ms(600)), "still silent");
    }

    #[test]
    fn anything_received_restarts_the_window() {
        let t0 = Instant::now();
        let mut s = Silence::new(ms(500), t0, 0);
        // One datagram every 400 ms, the last at 4,800 ms: never 500 ms of silence.
        let mut received = 0;
        for n in 1..=48u64 {
            if n % 4 == 0 {
                received += 1;
            }
            assert_eq!(s.tick(t0 + ms(100 * n), received), None, "{n}00 ms");
        }
        // Then nothing: silent 500 ms after the last one was seen.
        for n in 49..=52 {
            assert_eq!(s.tick(t0 + ms(100 * n), received), None, "{n}00 ms");
        }
        assert_eq!(s.tick(t0 + ms(5_300), received), Some(ms(500)));
    }

    #[test]
    fn a_starved_checker_does_not_blame_the_peer() {
        let t0 = Instant::now();
        let mut s = Silence::new(ms(500), t0, 3);
        assert_eq!(s.tick(t0 + ms(100), 3), None);
        // This side was not scheduled for 2 s: the peer's datagrams may be unread. No verdict;
        // the window starts again from the late tick.
        assert_eq!(s.tick(t0 + ms(2_100), 3), None);
        for n in 1..=4 {
            assert_eq!(s.tick(t0 + ms(2_100 + 100 * n), 3), None);
        }
        assert_eq!(s.tick(t0 + ms(2_600), 3), Some(ms(500)), "silent for a whole window after it");
        // Ticks that are a little late (under half the window) still count.
        let mut s = Silence::new(ms(500), t0, 0);
        assert_eq!(s.tick(t0 + ms(240), 0), None);
        assert_eq!(s.tick(t0 + ms(480), 0), None);
        assert_eq!(s.tick(t0 + ms(720), 0), Some(ms(720)));
    }
}
