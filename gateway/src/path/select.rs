//! Scoring and selection: candidate paths with their measured metrics in, a decision out.
//!
//! Every candidate is scored by the configured scorer; the highest preference wins. Ties are
//! broken deterministically: fewer hops, then lower measured RTT, then node names. The decision
//! records every candidate — hops, measured metrics, score and explanation, or why it could not
//! be scored — so that an operator can see why a path was chosen.

use std::cmp::Ordering;

use super::decision::{Candidate, Decision};
use super::estimator::LinkStats;
use super::graph::Path;

/// What a scorer is told about one candidate: its end-to-end measurements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathMetrics {
    /// Mean round-trip time, ms.
    pub rtt_ms: f64,
    /// Ratio of probes lost, 0..=1.
    pub loss: f64,
    /// Mean RTT variation, ms.
    pub jitter_ms: f64,
    /// Relay-to-relay hops.
    pub hops: u32,
}

/// A scorer's answer for one candidate: higher is better.
#[derive(Debug, Clone, PartialEq)]
pub struct Preference {
    /// The preference value.
    pub value: f64,
    /// Why, in a line, for the decision record.
    pub explanation: String,
}

/// Something that scores a path: the scorer plugin in production (the controller's policy
/// adapts it), anything in tests. The path engine knows nothing of plugins.
pub trait PathScorer {
    /// A name for the decision record.
    fn name(&self) -> String;
    /// Score one path with the operator's weights, or say why it cannot be scored.
    fn score(&self, metrics: &PathMetrics, weights: &[(String, f64)]) -> Result<Preference, String>;
}

/// Why no path could be selected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectError {
    /// There was nothing to choose from.
    #[error("no candidate paths")]
    NoCandidates,
    /// Every candidate failed to be scored; the reasons are listed.
    #[error("no candidate could be scored: {}", .0.join("; "))]
    NoneScored(Vec<String>),
}

/// Score `candidates` (each a path and its measured metrics) and pick the best.
pub fn select(
    candidates: &[(Path, LinkStats)],
    scorer: &dyn PathScorer,
    weights: &[(String, f64)],
) -> Result<Decision, SelectError> {
    if candidates.is_empty() {
        return Err(SelectError::NoCandidates);
    }
    let records: Vec<Candidate> = candidates
        .iter()
        .map(|(path, measured)| {
            let (score, explanation) = match measured.rtt_ms {
                None => (None, "not scored: no probe was answered (100 % loss)".to_owned()),
                Some(rtt_ms) => {
                    let metrics = PathMetrics {
                        rtt_ms,
                        loss: measured.loss,
                        jitter_ms: measured.jitter_ms,
                        hops: path.hops(),
                    };
                    match scorer.score(&metrics, weights) {
                        Ok(p) => (Some(p.value), p.explanation),
                        Err(why) => (None, format!("not scored: {why}")),
                    }
                }
            };
            Candidate {
                path: path.nodes.clone(),
                hops: path.hops(),
                graph_cost_ms: path.cost_ms,
                measured: *measured,
                score,
                explanation,
            }
        })
        .collect();
    let winner = (0..records.len())
        .filter(|&i| records[i].score.is_some())
        .max_by(|&a, &b| better(&records[a], &records[b]))
        .ok_or_else(|| {
            SelectError::NoneScored(
                records.iter().map(|c| format!("{}: {}", c.path.join("→"), c.explanation)).collect(),
            )
        })?;
    Ok(Decision { scorer: scorer.name(), weights: weights.to_vec(), candidates: records, winner })
}

/// `Greater` when `a` is the better candidate. Both are scored.
fn better(a: &Candidate, b: &Candidate) -> Ordering {
    let (sa, sb) = (a.score.unwrap_or(f64::NEG_INFINITY), b.score.unwrap_or(f64::NEG_INFINITY));
    sa.total_cmp(&sb)
        .then_with(|| b.hops.cmp(&a.hops))
        .then_with(|| {
            let (ra, rb) =
                (a.measured.rtt_ms.unwrap_or(f64::INFINITY), b.measured.rtt_ms.unwrap_or(f64::INFINITY));
            rb.total_cmp(&ra)
        })
        .then_with(|| b.path.cmp(&a.path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scores −rtt, refuses paths through a relay named "bad".
    struct ByRtt;

    impl PathScorer for ByRtt {
        fn name(&self) -> String {
            "by-rtt".into()
        }
        fn score(&self, m: &PathMetrics, _w: &[(String, f64)]) -> Result<Preference, String> {
            if m.hops == 9 {
                return Err("the scorer refused: nine".into());
            }
            Ok(Preference { value: -m.rtt_ms.round(), explanation: format!("rtt {}", m.rtt_ms) })
        }
    }

    fn path(nodes: &[&str]) -> Path {
        Path { nodes: nodes.iter().map(|s| (*s).to_owned()).collect(), cost_ms: 1.0 }
    }

    fn stats(rtt: Option<f64>) -> LinkStats {
        LinkStats { rtt_ms: rtt, jitter_ms: 0.0, loss: 0.0, samples: 10 }
    }

    #[test]
    fn highest_preference_wins_and_every_candidate_is_recorded() {
        let c = [(path(&["A", "B", "D"]), stats(Some(30.0))), (path(&["A", "C", "D"]), stats(Some(10.0)))];
        let d = select(&c, &ByRtt, &[("latency".into(), 1.0)]).unwrap();
        assert_eq!(d.chosen().path, ["A", "C", "D"]);
        assert_eq!(d.candidates.len(), 2);
        assert_eq!(d.candidates[0].score, Some(-30.0));
        assert_eq!(d.candidates[0].explanation, "rtt 30");
        assert_eq!(d.scorer, "by-rtt");
    }

    #[test]
    fn ties_go_to_fewer_hops_then_lower_rtt_then_names() {
        // Equal scores (rounded RTT): fewer hops wins.
        let c =
            [(path(&["A", "X", "Y", "D"]), stats(Some(10.2))), (path(&["A", "Z", "D"]), stats(Some(10.4)))];
        assert_eq!(select(&c, &ByRtt, &[]).unwrap().chosen().path, ["A", "Z", "D"]);
        // Equal scores and hops: lower measured RTT wins.
        let c = [(path(&["A", "X", "D"]), stats(Some(10.4))), (path(&["A", "Z", "D"]), stats(Some(10.2)))];
        assert_eq!(select(&c, &ByRtt, &[]).unwrap().chosen().path, ["A", "Z", "D"]);
        // Everything equal: the first by name, whatever the input order.
        let c = [(path(&["A", "Z", "D"]), stats(Some(10.0))), (path(&["A", "X", "D"]), stats(Some(10.0)))];
        assert_eq!(select(&c, &ByRtt, &[]).unwrap().chosen().path, ["A", "X", "D"]);
    }

    #[test]
    fn unscorable_candidates_are_recorded_with_the_reason() {
        let nine: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
        let nine: Vec<&str> = nine.iter().map(String::as_str).collect();
        let c = [
            (path(&["A", "B"]), stats(None)),
            (path(&nine), stats(Some(5.0))),
            (path(&["A", "C", "B"]), stats(Some(50.0))),
        ];
        let d = select(&c, &ByRtt, &[]).unwrap();
        assert_eq!(d.winner, 2);
        assert!(d.candidates[0].explanation.contains("100 % loss"));
        assert!(d.candidates[1].explanation.contains("nine"));
        assert_eq!(d.candidates[1].score, None);

        let e = select(&c[..2], &ByRtt, &[]).unwrap_err();
        assert!(matches!(&e, SelectError::NoneScored(r) if r.len() == 2), "{e}");
        assert_eq!(select(&[], &ByRtt, &[]).unwrap_err(), SelectError::NoCandidates);
    }
}
