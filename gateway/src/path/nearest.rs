//! Which relay is nearest a platform, with hysteresis so that small fluctuations in the measured
//! round-trip times do not flip the choice back and forth.
//!
//! The choice changes only when the current relay is gone (down, or no longer measured) or when
//! another relay is faster by more than `max(min_gain_ms, min_gain_ratio × current RTT)`.

use std::collections::BTreeMap;

use super::graph::NodeId;

/// How much better a relay must be to replace the current one.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hysteresis {
    /// Absolute gain needed, ms (default 2).
    pub min_gain_ms: f64,
    /// Gain needed relative to the current RTT (default 0.15 = 15 %).
    pub min_gain_ratio: f64,
}

impl Default for Hysteresis {
    fn default() -> Self {
        Hysteresis { min_gain_ms: 2.0, min_gain_ratio: 0.15 }
    }
}

/// The nearest-relay choice for one platform.
#[derive(Debug, Clone, Default)]
pub struct NearestRelay {
    current: Option<NodeId>,
    hysteresis: Hysteresis,
}

impl NearestRelay {
    /// No choice yet.
    pub fn new(hysteresis: Hysteresis) -> Self {
        NearestRelay { current: None, hysteresis }
    }

    /// The current choice.
    pub fn current(&self) -> Option<&NodeId> {
        self.current.as_ref()
    }

    /// Update from the latest RTTs to each reachable relay (ms). Returns the choice.
    pub fn update(&mut self, rtts: &BTreeMap<NodeId, f64>) -> Option<&NodeId> {
        // The fastest, ties to the first name (BTreeMap order) for determinism.
        let best = rtts
            .iter()
            .filter(|(_, rtt)| rtt.is_finite())
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(name, rtt)| (name.clone(), *rtt));
        let Some((best_name, best_rtt)) = best else {
            self.current = None;
            return None;
        };
        let keep = match self.current.as_ref().and_then(|c| rtts.get(c).filter(|r| r.is_finite())) {
            None => false,
            Some(&current_rtt) => {
                let needed = self.hysteresis.min_gain_ms.max(self.hysteresis.min_gain_ratio * current_rtt);
                current_rtt - best_rtt <= needed
            }
        };
        if !keep {
            self.current = Some(best_name);
        }
        self.current.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtts(pairs: &[(&str, f64)]) -> BTreeMap<NodeId, f64> {
        pairs.iter().map(|(n, r)| ((*n).to_owned(), *r)).collect()
    }

    #[test]
    fn picks_the_fastest_then_holds_against_small_fluctuations() {
        let mut n = NearestRelay::new(Hysteresis::default());
        assert_eq!(n.update(&rtts(&[("r1", 10.0), ("r2", 12.0)])).unwrap(), "r1");
        // r2 briefly a little faster (1.5 ms, < 2 ms and < 15 %): no flip.
        for (a, b) in [(10.5, 9.0), (11.0, 10.0), (9.8, 9.9), (10.9, 9.5)] {
            assert_eq!(n.update(&rtts(&[("r1", a), ("r2", b)])).unwrap(), "r1");
        }
        // r2 clearly faster: switch.
        assert_eq!(n.update(&rtts(&[("r1", 20.0), ("r2", 10.0)])).unwrap(), "r2");
    }

    #[test]
    fn the_relative_margin_applies_to_long_distances() {
        let mut n = NearestRelay::new(Hysteresis::default());
        n.update(&rtts(&[("far1", 200.0), ("far2", 210.0)]));
        // 20 ms better, but under 15 % of 200 ms: hold.
        assert_eq!(n.update(&rtts(&[("far1", 200.0), ("far2", 180.0)])).unwrap(), "far1");
        assert_eq!(n.update(&rtts(&[("far1", 200.0), ("far2", 160.0)])).unwrap(), "far2");
    }

    #[test]
    fn a_vanished_relay_is_replaced_at_once() {
        let mut n = NearestRelay::new(Hysteresis::default());
        n.update(&rtts(&[("r1", 10.0), ("r2", 11.0)]));
        assert_eq!(n.update(&rtts(&[("r2", 11.0)])).unwrap(), "r2");
        assert_eq!(n.update(&rtts(&[("r2", f64::INFINITY)])), None);
        assert_eq!(n.current(), None);
    }
}
