//! The sans-IO core of the link emulator: given a packet's arrival time and size, decide whether
//! it is lost and when it leaves. Time comes in as `now`; randomness from a seeded generator, so
//! a test can replay exactly the same fate for the same packets.

use std::time::{Duration, Instant};

/// What a link does to the packets crossing it, in one direction.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkParams {
    /// One-way delay added to every packet, ms.
    pub delay_ms: f64,
    /// Each packet's delay varies uniformly within ±`jitter_ms` (never below zero). Packets
    /// keep their order, as on a single physical link.
    pub jitter_ms: f64,
    /// Probability that a packet is dropped, 0..1.
    pub loss: f64,
    /// Bandwidth in bits per second; `None` for unlimited.
    pub rate_bps: Option<u64>,
    /// Most bytes queued for the rate limit before new packets are dropped (tail drop).
    pub queue_bytes: usize,
}

impl Default for LinkParams {
    fn default() -> Self {
        LinkParams { delay_ms: 0.0, jitter_ms: 0.0, loss: 0.0, rate_bps: None, queue_bytes: 1 << 20 }
    }
}

impl LinkParams {
    /// A link with a one-way delay and nothing else.
    pub fn delay(ms: f64) -> Self {
        LinkParams { delay_ms: ms, ..Self::default() }
    }

    /// Check the values make sense.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.delay_ms.is_finite() && self.delay_ms >= 0.0) {
            return Err(format!("delay_ms must be ≥ 0, got {}", self.delay_ms));
        }
        if !(self.jitter_ms.is_finite() && self.jitter_ms >= 0.0) {
            return Err(format!("jitter_ms must be ≥ 0, got {}", self.jitter_ms));
        }
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(format!("loss must be between 0 and 1, got {}", self.loss));
        }
        if self.rate_bps == Some(0) {
            return Err("rate_bps must be positive (omit it for unlimited)".into());
        }
        Ok(())
    }
}

/// The fate of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Dropped (random loss or a full queue).
    Drop,
    /// Delivered at this instant.
    DeliverAt(Instant),
}

/// One direction of an emulated link.
#[derive(Debug, Clone)]
pub struct Shaper {
    params: LinkParams,
    rng: u64,
    /// When the last accepted packet leaves: later packets never leave before it.
    last_departure: Option<Instant>,
    /// When the rate-limited "wire" is free again.
    wire_free_at: Option<Instant>,
}

impl Shaper {
    /// A shaper with `params`; `seed` fixes its random choices.
    pub fn new(params: LinkParams, seed: u64) -> Self {
        Shaper { params, rng: seed | 1, last_departure: None, wire_free_at: None }
    }

    /// The current parameters.
    pub fn params(&self) -> LinkParams {
        self.params
    }

    /// Change the parameters; packets already scheduled keep their fate.
    pub fn set_params(&mut self, params: LinkParams) {
        self.params = params;
    }

    /// Decide the fate of a packet of `len` bytes arriving at `now`.
    pub fn admit(&mut self, now: Instant, len: usize) -> Fate {
        let p = self.params;
        if p.loss > 0.0 && self.uniform() < p.loss {
            return Fate::Drop;
        }
        // Rate limit: the packet waits for the wire, then takes len·8/rate to cross it.
        let mut ready = now;
        if let Some(rate) = p.rate_bps {
            let start = self.wire_free_at.map_or(now, |free| free.max(now));
            let backlog = start.saturating_duration_since(now);
            let queued_bytes = backlog.as_secs_f64() * rate as f64 / 8.0;
            if queued_bytes + len as f64 > p.queue_bytes as f64 {
                return Fate::Drop;
            }
            let transmit = Duration::from_secs_f64(len as f64 * 8.0 / rate as f64);
            self.wire_free_at = Some(start + transmit);
            ready = start + transmit;
        }
        let jitter = if p.jitter_ms > 0.0 { (self.uniform() * 2.0 - 1.0) * p.jitter_ms } else { 0.0 };
        let delay = Duration::from_secs_f64(((p.delay_ms + jitter).max(0.0)) / 1000.0);
        let mut at = ready + delay;
        // Keep order: a packet never overtakes the one before it.
        if let Some(last) = self.last_departure {
            at = at.max(last);
        }
        self.last_departure = Some(at);
        Fate::DeliverAt(at)
    }

    /// A uniform sample in [0, 1) from xorshift64*.
    fn uniform(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: f64) -> Duration {
        Duration::from_secs_f64(n / 1000.0)
    }

    #[test]
    fn fixed_delay_is_applied_exactly() {
        let t0 = Instant::now();
        let mut s = Shaper::new(LinkParams::delay(25.0), 7);
        for i in 0..10 {
            let now = t0 + ms(f64::from(i));
            assert_eq!(s.admit(now, 100), Fate::DeliverAt(now + ms(25.0)));
        }
    }

    #[test]
    fn loss_ratio_is_respected_and_reproducible() {
        let t0 = Instant::now();
        let params = LinkParams { loss: 0.2, ..LinkParams::delay(1.0) };
        let fates = |seed| {
            let mut s = Shaper::new(params, seed);
            (0..10_000).map(|i| s.admit(t0 + ms(f64::from(i)), 100) == Fate::Drop).collect::<Vec<_>>()
        };
        let a = fates(1);
        let lost = a.iter().filter(|d| **d).count();
        assert!((1800..=2200).contains(&lost), "{lost} of 10000 lost");
        assert_eq!(a, fates(1), "same seed, same fate");
        assert_ne!(a, fates(2));
    }

    #[test]
    fn loss_ratio_holds_with_jitter_drawing_from_the_same_generator() {
        let t0 = Instant::now();
        for seed in 1..=20u64 {
            let mut s =
                Shaper::new(LinkParams { loss: 0.1, jitter_ms: 5.0, ..LinkParams::delay(25.0) }, seed);
            let lost = (0..10_000).filter(|i| s.admit(t0 + ms(f64::from(*i)), 100) == Fate::Drop).count();
            assert!((850..=1150).contains(&lost), "seed {seed}: {lost} of 10000 lost");
        }
    }

    #[test]
    fn jitter_stays_in_bounds_and_keeps_order() {
        let t0 = Instant::now();
        let mut s = Shaper::new(LinkParams { jitter_ms: 5.0, ..LinkParams::delay(20.0) }, 3);
        let mut last = t0;
        let mut spread = (f64::MAX, f64::MIN);
        for i in 0..2000 {
            let now = t0 + ms(f64::from(i) * 10.0);
            let Fate::DeliverAt(at) = s.admit(now, 100) else { panic!("no loss configured") };
            assert!(at >= last, "in order");
            last = at;
            let d = (at - now).as_secs_f64() * 1000.0;
            spread = (spread.0.min(d), spread.1.max(d));
            assert!((15.0..=25.0 + 1e-6).contains(&d), "delay {d}");
        }
        assert!(spread.0 < 16.0 && spread.1 > 24.0, "jitter used its range: {spread:?}");
    }

    #[test]
    fn rate_limit_serialises_and_tail_drops() {
        let t0 = Instant::now();
        // 8 Mbit/s = 1 byte per µs; a 10,000-byte queue.
        let params = LinkParams { rate_bps: Some(8_000_000), queue_bytes: 10_000, ..LinkParams::default() };
        let mut s = Shaper::new(params, 1);
        // A burst of 1,000-byte packets at t0: each takes 1 ms on the wire.
        let mut delivered = vec![];
        for _ in 0..20 {
            if let Fate::DeliverAt(at) = s.admit(t0, 1000) {
                delivered.push(at - t0);
            }
        }
        assert_eq!(delivered.len(), 10, "the rest did not fit the queue");
        for (i, d) in delivered.iter().enumerate() {
            let expected = ms((i + 1) as f64);
            assert!(d.abs_diff(expected) < Duration::from_micros(1), "{i}: {d:?}");
        }
        // Once the queue drained, packets pass again.
        assert!(matches!(s.admit(t0 + ms(50.0), 1000), Fate::DeliverAt(_)));
    }

    #[test]
    fn parameters_are_validated_and_changeable() {
        assert!(LinkParams { loss: 1.5, ..LinkParams::default() }.validate().is_err());
        assert!(LinkParams { delay_ms: -1.0, ..LinkParams::default() }.validate().is_err());
        assert!(LinkParams { rate_bps: Some(0), ..LinkParams::default() }.validate().is_err());
        assert!(LinkParams::delay(10.0).validate().is_ok());
        let t0 = Instant::now();
        let mut s = Shaper::new(LinkParams::delay(10.0), 1);
        assert_eq!(s.admit(t0, 1), Fate::DeliverAt(t0 + ms(10.0)));
        s.set_params(LinkParams { loss: 1.0, ..LinkParams::default() });
        assert_eq!(s.admit(t0 + ms(20.0), 1), Fate::Drop);
    }
}
