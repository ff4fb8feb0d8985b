//! Round-trip, jitter and loss estimation from probes. Sans-IO: the caller sends and receives
//! probes, and tells the estimator what happened and when (`now` is always passed in).
//!
//! - [`LinkEstimator`] runs continuously per link: smoothed RTT and RTT variation as in TCP
//!   (RFC 6298, α = 1/8, β = 1/4), jitter as in RTP (RFC 3550: the mean of |ΔRTT| between
//!   consecutive samples, gain 1/16), and loss over a sliding window of the last N probes.
//! - [`ProbeSeries`] measures one end-to-end path test: N probes, then plain statistics over
//!   exactly those (mean RTT, mean |ΔRTT| as jitter, lost/sent as loss).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One probe's fate.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    Pending(Instant),
    Answered(Duration),
    Lost,
}

/// Statistics of a link or path at one moment.
#[derive(
    Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct LinkStats {
    /// Smoothed (or mean) round-trip time, ms. `None` before the first answer.
    pub rtt_ms: Option<f64>,
    /// Jitter, ms.
    pub jitter_ms: f64,
    /// Lost / decided probes in the window, 0..1.
    pub loss: f64,
    /// Probes decided (answered or lost) in the window.
    pub samples: u32,
}

/// Continuous estimator for one link.
#[derive(Debug, Clone)]
pub struct LinkEstimator {
    window: usize,
    timeout: Duration,
    /// (sequence number, fate), oldest first; at most `window` entries.
    probes: VecDeque<(u64, Fate)>,
    srtt: Option<f64>,
    rttvar: f64,
    jitter: f64,
    last_rtt: Option<f64>,
}

impl LinkEstimator {
    /// Loss is measured over the last `window` probes; a probe unanswered after `timeout`
    /// counts as lost (a late answer is then ignored).
    pub fn new(window: usize, timeout: Duration) -> Self {
        LinkEstimator {
            window: window.max(1),
            timeout,
            probes: VecDeque::new(),
            srtt: None,
            rttvar: 0.0,
            jitter: 0.0,
            last_rtt: None,
        }
    }

    /// A probe with sequence number `seq` was sent at `now`.
    pub fn on_sent(&mut self, seq: u64, now: Instant) {
        self.probes.push_back((seq, Fate::Pending(now)));
        while self.probes.len() > self.window {
            self.probes.pop_front();
        }
    }

    /// The answer to probe `seq` arrived at `now`. Returns the RTT sample, or `None` for an
    /// unknown, duplicate or too-late answer (which changes nothing).
    pub fn on_answer(&mut self, seq: u64, now: Instant) -> Option<Duration> {
        self.expire(now);
        let slot = self.probes.iter_mut().find(|(s, _)| *s == seq)?;
        let Fate::Pending(sent) = slot.1 else { return None };
        let rtt = now.saturating_duration_since(sent);
        slot.1 = Fate::Answered(rtt);
        self.sample(rtt.as_secs_f64() * 1000.0);
        Some(rtt)
    }

    /// Mark probes older than the timeout as lost.
    pub fn expire(&mut self, now: Instant) {
        for (_, fate) in self.probes.iter_mut() {
            if let Fate::Pending(sent) = *fate
                && now.saturating_duration_since(sent) > self.timeout
            {
                *fate = Fate::Lost;
            }
        }
    }

    /// The current statistics (probes still pending do not count either way).
    pub fn stats(&mut self, now: Instant) -> LinkStats {
        self.expire(now);
        let (mut decided, mut lost) = (0u32, 0u32);
        for (_, fate) in &self.probes {
            match fate {
                Fate::Answered(_) => decided += 1,
                Fate::Lost => {
                    decided += 1;
                    lost += 1
                }
                Fate::Pending(_) => {}
            }
        }
        LinkStats {
            rtt_ms: self.srtt,
            jitter_ms: self.jitter,
            loss: if decided == 0 { 0.0 } else { f64::from(lost) / f64::from(decided) },
            samples: decided,
        }
    }

    /// RTT variation (RFC 6298 RTTVAR), ms.
    pub fn rttvar_ms(&self) -> f64 {
        self.rttvar
    }

    fn sample(&mut self, rtt: f64) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2.0;
            }
            Some(srtt) => {
                self.rttvar = 0.75 * self.rttvar + 0.25 * (srtt - rtt).abs();
                self.srtt = Some(0.875 * srtt + 0.125 * rtt);
            }
        }
        if let Some(last) = self.last_rtt {
            self.jitter += ((rtt - last).abs() - self.jitter) / 16.0;
        }
        self.last_rtt = Some(rtt);
    }
}

/// One end-to-end path test: a fixed series of probes, summarised plainly.
#[derive(Debug, Clone)]
pub struct ProbeSeries {
    sent: Vec<Option<Instant>>,
    rtts: Vec<Option<f64>>,
}

impl ProbeSeries {
    /// A series of `count` probes, numbered `0..count`.
    pub fn new(count: usize) -> Self {
        ProbeSeries { sent: vec![None; count], rtts: vec![None; count] }
    }

    /// Probe `seq` was sent at `now`.
    pub fn on_sent(&mut self, seq: usize, now: Instant) {
        if let Some(slot) = self.sent.get_mut(seq) {
            *slot = Some(now);
        }
    }

    /// Probe `seq` was answered at `now`. Unknown, unsent or duplicate answers are ignored.
    /// Returns whether this was a first answer to a sent probe (duplicates and strays are not).
    pub fn on_answer(&mut self, seq: usize, now: Instant) -> bool {
        if let (Some(Some(sent)), Some(rtt @ None)) = (self.sent.get(seq), self.rtts.get_mut(seq)) {
            *rtt = Some(now.saturating_duration_since(*sent).as_secs_f64() * 1000.0);
            return true;
        }
        false
    }

    /// Statistics over the series: unanswered probes count as lost. Jitter is the mean
    /// |ΔRTT| between consecutive answered probes.
    pub fn summary(&self) -> LinkStats {
        let sent = self.sent.iter().filter(|s| s.is_some()).count();
        let answered: Vec<f64> = self.rtts.iter().flatten().copied().collect();
        let rtt_ms = (!answered.is_empty()).then(|| answered.iter().sum::<f64>() / answered.len() as f64);
        let jitter_ms = if answered.len() < 2 {
            0.0
        } else {
            answered.windows(2).map(|w| (w[1] - w[0]).abs()).sum::<f64>() / (answered.len() - 1) as f64
        };
        let loss = if sent == 0 { 0.0 } else { (sent - answered.len()) as f64 / sent as f64 };
        LinkStats { rtt_ms, jitter_ms, loss, samples: u32::try_from(sent).unwrap_or(u32::MAX) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn steady_rtt_converges_with_no_jitter_or_loss() {
        let t0 = Instant::now();
        let mut e = LinkEstimator::new(50, ms(1000));
        for seq in 0..100u64 {
            let sent = t0 + ms(seq * 100);
            e.on_sent(seq, sent);
            assert_eq!(e.on_answer(seq, sent + ms(20)), Some(ms(20)));
        }
        let s = e.stats(t0 + ms(100 * 100));
        assert!((s.rtt_ms.unwrap() - 20.0).abs() < 1e-9);
        assert_eq!((s.jitter_ms, s.loss, s.samples), (0.0, 0.0, 50));
    }

    #[test]
    fn smoothed_rtt_follows_a_step_change() {
        let t0 = Instant::now();
        let mut e = LinkEstimator::new(10, ms(1000));
        let mut seq = 0;
        for rtt in [10u64; 20].iter().chain([50u64; 40].iter()) {
            let sent = t0 + ms(seq * 200);
            e.on_sent(seq, sent);
            e.on_answer(seq, sent + ms(*rtt));
            seq += 1;
        }
        let s = e.stats(t0 + ms(seq * 200));
        // EWMA with gain 1/8: after n samples of the new value, the gap is 40 · (7/8)^n.
        let expected = 50.0 - 40.0 * 0.875f64.powi(40);
        assert!((s.rtt_ms.unwrap() - expected).abs() < 1e-9, "{s:?} vs {expected}");
    }

    #[test]
    fn alternating_rtt_gives_jitter_near_the_step() {
        let t0 = Instant::now();
        let mut e = LinkEstimator::new(100, ms(1000));
        for seq in 0..400u64 {
            let sent = t0 + ms(seq * 100);
            e.on_sent(seq, sent);
            e.on_answer(seq, sent + ms(if seq % 2 == 0 { 10 } else { 14 }));
        }
        let s = e.stats(t0 + ms(400 * 100));
        assert!((s.jitter_ms - 4.0).abs() < 0.01, "{s:?}");
        assert!((s.rtt_ms.unwrap() - 12.0).abs() < 1.0, "{s:?}");
    }

    #[test]
    fn loss_is_measured_over_the_sliding_window() {
        let t0 = Instant::now();
        let mut e = LinkEstimator::new(20, ms(500));
        // 1 in 4 lost for 40 probes, then none lost for 20: the window sees only the latter.
        for seq in 0..40u64 {
            let sent = t0 + ms(seq * 100);
            e.on_sent(seq, sent);
            if seq % 4 != 0 {
                e.on_answer(seq, sent + ms(5));
            }
        }
        let s = e.stats(t0 + ms(40 * 100 + 600));
        assert_eq!((s.loss, s.samples), (0.25, 20));
        for seq in 40..60u64 {
            let sent = t0 + ms(seq * 100 + 600);
            e.on_sent(seq, sent);
            e.on_answer(seq, sent + ms(5));
        }
        assert_eq!(e.stats(t0 + ms(60 * 100 + 1200)).loss, 0.0);
    }

    #[test]
    fn late_duplicate_and_unknown_answers_change_nothing() {
        let t0 = Instant::now();
        let mut e = LinkEstimator::new(10, ms(100));
        e.on_sent(1, t0);
        e.on_sent(2, t0);
        assert_eq!(e.on_answer(1, t0 + ms(10)), Some(ms(10)));
        assert_eq!(e.on_answer(1, t0 + ms(11)), None, "duplicate");
        assert_eq!(e.on_answer(99, t0 + ms(11)), None, "unknown");
        assert_eq!(e.on_answer(2, t0 + ms(150)), None, "too late: already counted lost");
        let s = e.stats(t0 + ms(150));
        assert_eq!((s.samples, s.loss), (2, 0.5));
        assert_eq!(s.rtt_ms, Some(10.0));
    }

    #[test]
    fn pending_probes_count_neither_way() {
        let t0 = Instant::now();
        let mut e = LinkEstimator::new(10, ms(100));
        e.on_sent(1, t0);
        let s = e.stats(t0 + ms(50));
        assert_eq!((s.samples, s.loss, s.rtt_ms), (0, 0.0, None));
    }

    #[test]
    fn probe_series_summarises_exactly_its_probes() {
        let t0 = Instant::now();
        let mut p = ProbeSeries::new(10);
        let rtts = [10, 12, 10, 12, 10, 12, 10, 12];
        for seq in 0..10 {
            p.on_sent(seq, t0 + ms(seq as u64 * 10));
        }
        for (seq, rtt) in rtts.iter().enumerate() {
            p.on_answer(seq, t0 + ms(seq as u64 * 10 + rtt));
        }
        p.on_answer(3, t0 + ms(999)); // duplicate: ignored
        p.on_answer(42, t0); // unknown: ignored
        let s = p.summary();
        assert_eq!(s.rtt_ms, Some(11.0));
        assert_eq!(s.jitter_ms, 2.0);
        assert_eq!((s.loss, s.samples), (0.2, 10));
        assert_eq!(ProbeSeries::new(5).summary(), LinkStats::default());
    }
}
