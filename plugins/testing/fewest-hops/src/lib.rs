//! `fewest-hops-scorer` (test only): a policy unlike the default — the path with the fewest
//! relay hops wins, whatever its latency or loss. Integration tests swap it in at run time to
//! show that the path policy really is the plugin's.

use skybridge_plugin_sdk::{PathMetrics, Score, Scorer, WeightInfo, Weights, export_scorer};

/// Fewest hops wins.
pub struct FewestHops;

impl Scorer for FewestHops {
    fn weights() -> &'static [WeightInfo] {
        &[]
    }

    /// The default policy's weights may still be configured; this policy ignores them.
    fn accepts_unknown_weights() -> bool {
        true
    }

    fn score(m: &PathMetrics, _: &Weights) -> Result<Score, String> {
        Ok(Score {
            value: -f64::from(m.hops),
            explanation: format!("{} hop{}", m.hops, if m.hops == 1 { "" } else { "s" }),
        })
    }
}

export_scorer!(FewestHops);

#[cfg(test)]
mod tests {
    use super::*;
    use skybridge_plugin_sdk::testing;

    #[test]
    fn fewer_hops_score_higher_whatever_the_latency() {
        let near = PathMetrics { rtt_ms: 200.0, loss: 0.2, jitter_ms: 5.0, hops: 1, extra: vec![] };
        let far = PathMetrics { rtt_ms: 2.0, loss: 0.0, jitter_ms: 0.0, hops: 3, extra: vec![] };
        let a = testing::score::<FewestHops>(&near, &[]).unwrap();
        let b = testing::score::<FewestHops>(&far, &[]).unwrap();
        assert!(a.value > b.value, "{a:?} vs {b:?}");
        assert_eq!((a.explanation.as_str(), b.explanation.as_str()), ("1 hop", "3 hops"));
    }
}
