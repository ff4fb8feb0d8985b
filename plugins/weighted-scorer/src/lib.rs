//! `weighted-scorer` — Skybridge's default path-scoring policy.
//!
//! The preference value of a path is a weighted penalty, negated so that higher is better:
//!
//! ```text
//! preference = −( w_latency · rtt_ms
//!               + w_loss    · loss · 1000
//!               + w_jitter  · jitter_ms
//!               + w_hops    · hops )
//! ```
//!
//! `loss` is a ratio (0..1), so `loss · 1000` is per-mille loss: with the default weights one
//! percent of loss (10‰) costs as much as 10 ms of latency. Weights come from the call (the
//! operator's policy); those not given take the defaults below. An unknown weight name is an
//! error, so a misspelt weight cannot be silently ignored.
//!
//! | weight | default | unit |
//! | --- | --- | --- |
//! | `latency` | 1.0 | per ms of round-trip time |
//! | `loss` | 1.0 | per ‰ of packet loss |
//! | `jitter` | 0.5 | per ms of jitter |
//! | `hops` | 1.0 | per relay hop |

use skybridge_plugin_sdk::{Fixed2, PathMetrics, Score, Scorer, WeightInfo, Weights, export_scorer};

/// The default weighted policy.
pub struct WeightedScorer;

const WEIGHTS: &[WeightInfo] = &[
    WeightInfo::new("latency", 1.0, "penalty per ms of round-trip time"),
    WeightInfo::new("loss", 1.0, "penalty per per-mille of packet loss"),
    WeightInfo::new("jitter", 0.5, "penalty per ms of jitter"),
    WeightInfo::new("hops", 1.0, "penalty per relay hop"),
];

impl Scorer for WeightedScorer {
    fn weights() -> &'static [WeightInfo] {
        WEIGHTS
    }

    fn score(m: &PathMetrics, w: &Weights) -> Result<Score, String> {
        if !(0.0..=1.0).contains(&m.loss) {
            return Err(format!("loss must be a ratio between 0 and 1, got {}", m.loss));
        }
        let latency = w.get("latency") * m.rtt_ms;
        let loss = w.get("loss") * m.loss * 1000.0;
        let jitter = w.get("jitter") * m.jitter_ms;
        let hops = w.get("hops") * f64::from(m.hops);
        let value = -(latency + loss + jitter + hops);
        // "latency 30.00 + loss 10.00 + jitter 1.00 + hops 3.00 = 44.00", built on every call,
        // so without `format!` (Fixed2 appends digits directly; see its docs).
        let mut explanation = String::with_capacity(96);
        for (label, part) in
            [("latency ", latency), (" + loss ", loss), (" + jitter ", jitter), (" + hops ", hops)]
        {
            explanation.push_str(label);
            Fixed2(part).push_to(&mut explanation);
        }
        explanation.push_str(" = ");
        Fixed2(-value).push_to(&mut explanation);
        Ok(Score::new(value, explanation))
    }
}

export_scorer!(WeightedScorer);

#[cfg(test)]
mod tests {
    use super::*;
    use skybridge_plugin_sdk::testing;

    fn metrics(rtt_ms: f64, loss: f64, jitter_ms: f64, hops: u32) -> PathMetrics {
        PathMetrics { rtt_ms, loss, jitter_ms, hops, ..Default::default() }
    }

    #[test]
    fn default_weights_follow_the_formula() {
        let s = testing::score::<WeightedScorer>(&metrics(30.0, 0.01, 2.0, 3), &[]).unwrap();
        // 30 + 10 + 1 + 3
        assert_eq!(s.value, -44.0);
        assert!(s.explanation.contains("= 44.00"), "{}", s.explanation);
    }

    #[test]
    fn operator_weights_override_defaults() {
        let w = [("latency", 0.0), ("loss", 10.0)];
        let s = testing::score::<WeightedScorer>(&metrics(30.0, 0.02, 4.0, 2), &w).unwrap();
        // 0 + 200 + 2 + 2
        assert_eq!(s.value, -204.0);
    }

    #[test]
    fn lower_latency_is_preferred() {
        let fast = testing::score::<WeightedScorer>(&metrics(10.0, 0.0, 0.0, 2), &[]).unwrap();
        let slow = testing::score::<WeightedScorer>(&metrics(50.0, 0.0, 0.0, 2), &[]).unwrap();
        assert!(fast.value > slow.value);
    }

    #[test]
    fn unknown_weight_and_bad_loss_are_errors() {
        let e = testing::score::<WeightedScorer>(&metrics(1.0, 0.0, 0.0, 1), &[("latncy", 1.0)]);
        assert!(e.unwrap_err().contains("unknown weight `latncy`"));
        let e = testing::score::<WeightedScorer>(&metrics(1.0, 1.5, 0.0, 1), &[]);
        assert!(e.unwrap_err().contains("loss must be a ratio"));
    }
}
