//! `misbehaving-scorer` — test-only, never shipped. A scorer that misbehaves on request, so the
//! host's sandbox can be tested against real wasm. The behaviour is chosen per call by the extra
//! metric `misbehave` (so one loaded plugin can fail and then recover), or else by the `mode`
//! configuration value:
//!
//! | `misbehave` | `mode` | behaviour |
//! | --- | --- | --- |
//! | 1 | `loop` | spins forever (must hit the CPU deadline) |
//! | 2 | `hog` | allocates until stopped (must hit the memory limit) |
//! | 3 | `trap` | panics, which aborts into a wasm trap |
//! | 4 | `flood` | logs 10,000 messages, then scores (must be rate-limited) |
//! | 5 | `verbose` | scores with a 1 MiB explanation (must be refused as too long) |
//! | other | other | behaves: scores `-rtt_ms` |

use skybridge_plugin_sdk::{PathMetrics, Score, Scorer, Weights, config, export_scorer, info};

/// The misbehaving scorer.
pub struct Misbehaving;

impl Scorer for Misbehaving {
    fn accepts_unknown_weights() -> bool {
        true
    }

    fn score(m: &PathMetrics, _w: &Weights) -> Result<Score, String> {
        let mode = match m.extra("misbehave") {
            Some(1.0) => Some("loop".to_owned()),
            Some(2.0) => Some("hog".to_owned()),
            Some(3.0) => Some("trap".to_owned()),
            Some(4.0) => Some("flood".to_owned()),
            Some(5.0) => Some("verbose".to_owned()),
            _ => config::get("mode"),
        };
        match mode.as_deref() {
            Some("loop") => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Some("hog") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Touch every page so the memory is really used.
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Some("trap") => panic!("misbehaving-scorer was told to trap"),
            Some("flood") => {
                for i in 0..10_000 {
                    info(&format!("flood message {i}"));
                }
                Ok(Score::new(-m.rtt_ms, "flooded the log, then scored"))
            }
            Some("verbose") => Ok(Score::new(-m.rtt_ms, "x".repeat(1 << 20))),
            _ => Ok(Score::new(-m.rtt_ms, "behaved")),
        }
    }
}

export_scorer!(Misbehaving);
