//! Metrics in Prometheus's text format (version 0.0.4), which every Prometheus scrapes.
//!
//! Most figures are read from the state the gateway keeps anyway (links, nodes, bindings,
//! plugins, the catalog) when `/metrics` is scraped, like a Prometheus exporter's collectors;
//! only what no state remembers is counted as it happens ([`Counters`], [`Histogram`]).
//! [`Exposition`] writes a scrape: each family's `HELP` and `TYPE` once, then its samples.
//! Names follow Prometheus's conventions: a `skybridge_` prefix, base units (`_seconds`,
//! `_bytes`, `_ratio`), counters ending in `_total`.
//!
//! Which roles expose what: [`crate::controller::Controller::metrics`] on the admin listener,
//! `crate::node::metrics` on a relay's or site's optional `metrics_listen`. This module is a
//! leaf, sans-IO: it knows no role.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The content type of a scrape.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets when the process restarts).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted into buckets, with their sum and count.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One scrape being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty scrape.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Start family `name` (`HELP` and `TYPE` lines); add its samples to the returned family.
    /// Each family must be started once per scrape.
    pub fn family(&mut self, name: &'static str, kind: Kind, help: &str) -> Family<'_> {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {}", kind.as_str());
        Family { out: &mut self.out, name }
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// The samples of one family.
pub struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

/// A label value as the format wants it: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".to_owned() } else { "-Inf".to_owned() }
    } else {
        format!("{v}")
    }
}

impl Family<'_> {
    fn line(&mut self, suffix: &str, labels: &[(&str, &str)], extra: Option<(&str, &str)>, v: f64) {
        let _ = write!(self.out, "{}{suffix}", self.name);
        let all = labels.iter().copied().chain(extra);
        let mut first = true;
        for (k, val) in all {
            let _ = write!(self.out, "{}{k}=\"{}\"", if first { "{" } else { "," }, escape(val));
            first = false;
        }
        if !first {
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", value(v));
    }

    /// One sample of a counter or gauge.
    pub fn sample(&mut self, labels: &[(&str, &str)], v: f64) -> &mut Self {
        self.line("", labels, None, v);
        self
    }

    /// One histogram's buckets, sum and count.
    pub fn histogram(&mut self, labels: &[(&str, &str)], h: &HistogramSnapshot) -> &mut Self {
        let mut cumulative = 0;
        for (bound, count) in h.bounds.iter().zip(&h.counts) {
            cumulative += count;
            self.line("_bucket", labels, Some(("le", &value(*bound))), cumulative as f64);
        }
        self.line("_bucket", labels, Some(("le", "+Inf")), h.count as f64);
        self.line("_sum", labels, None, h.sum_seconds);
        self.line("_count", labels, None, h.count as f64);
        self
    }
}

/// Bucket bounds for things that take milliseconds to seconds (decisions, discovery).
pub const SECONDS_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Bucket bounds for things that take microseconds (plugin calls).
pub const MICROS_BUCKETS: &[f64] =
    &[0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.01, 0.05, 0.25, 1.0];

/// Observations of a duration, lock-free.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last counts what is above every bound.
    counts: Vec<AtomicU64>,
    sum_ns: AtomicU64,
}

/// A histogram as read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Upper bounds, seconds.
    pub bounds: &'static [f64],
    /// Observations per bucket (not cumulative), one per bound.
    pub counts: Vec<u64>,
    /// All observations.
    pub count: u64,
    /// Their sum, seconds.
    pub sum_seconds: f64,
}

impl Histogram {
    /// Empty, with `bounds` (seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Count one observation.
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = self.bounds.iter().position(|b| seconds <= *b).unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Read it.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let all: Vec<u64> = self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        HistogramSnapshot {
            bounds: self.bounds,
            counts: all[..self.bounds.len()].to_vec(),
            count: all.iter().sum(),
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// Counters by a small set of label values (an outcome, a status code, a platform), for what
/// no state remembers. The label sets come from the gateway's own vocabulary or its config,
/// never from a client, so the map stays small.
#[derive(Debug, Default)]
pub struct Counters {
    by: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl Counters {
    /// Add one for `labels`. Called per connection and per HTTP answer: a label set seen
    /// before (nearly always) is found without allocating.
    pub fn inc(&self, labels: &[&str]) {
        let mut by = self.by.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let seen = by.iter_mut().find(|(k, _)| k.iter().map(String::as_str).eq(labels.iter().copied()));
        match seen {
            Some((_, n)) => *n += 1,
            None => {
                by.insert(labels.iter().map(|s| (*s).to_owned()).collect(), 1);
            }
        }
    }

    /// Every label set and its count.
    pub fn snapshot(&self) -> Vec<(Vec<String>, u64)> {
        let by = self.by.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        by.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_histograms_are_written_as_prometheus_reads_them() {
        let h = Histogram::new(&[0.01, 0.1]);
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_secs(2));
        let mut e = Exposition::new();
        e.family("skybridge_link_rtt_seconds", Kind::Gauge, "RTT.\nSmoothed")
            .sample(&[("from", "r1"), ("to", "r\"2\\")], 0.0125)
            .sample(&[], f64::NAN);
        e.family("skybridge_decision_duration_seconds", Kind::Histogram, "Decisions.")
            .histogram(&[("outcome", "ok")], &h.snapshot());
        let text = e.finish();
        assert_eq!(
            text,
            "# HELP skybridge_link_rtt_seconds RTT.\\nSmoothed\n\
             # TYPE skybridge_link_rtt_seconds gauge\n\
             skybridge_link_rtt_seconds{from=\"r1\",to=\"r\\\"2\\\\\"} 0.0125\n\
             skybridge_link_rtt_seconds NaN\n\
             # HELP skybridge_decision_duration_seconds Decisions.\n\
             # TYPE skybridge_decision_duration_seconds histogram\n\
             skybridge_decision_duration_seconds_bucket{outcome=\"ok\",le=\"0.01\"} 1\n\
             skybridge_decision_duration_seconds_bucket{outcome=\"ok\",le=\"0.1\"} 3\n\
             skybridge_decision_duration_seconds_bucket{outcome=\"ok\",le=\"+Inf\"} 4\n\
             skybridge_decision_duration_seconds_sum{outcome=\"ok\"} 2.105\n\
             skybridge_decision_duration_seconds_count{outcome=\"ok\"} 4\n"
        );
    }

    #[test]
    fn counters_count_per_label_set() {
        let c = Counters::default();
        c.inc(&["200"]);
        c.inc(&["503"]);
        c.inc(&["200"]);
        assert_eq!(c.snapshot(), [(vec!["200".to_owned()], 2), (vec!["503".to_owned()], 1)]);
    }
}
