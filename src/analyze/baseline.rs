//! Baseline comparison: the same metrics from another run, per stage and per (kind, name), with
//! relative deltas. A change in the bad direction beyond the tolerance (default 10%) is a
//! regression. Which direction is bad depends on the metric: latency and error rates up,
//! success rate and throughput down.

use serde::Serialize;

use super::frame::{Row, get_f64, get_str};
use super::metrics::Metrics;

#[derive(Clone, Debug, Serialize)]
pub struct Delta {
    pub scope: String,
    pub metric: String,
    pub baseline: f64,
    pub current: f64,
    /// (current − baseline) / |baseline|.
    pub change: f64,
    pub regression: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Baseline {
    pub dir: String,
    pub tolerance: f64,
    pub deltas: Vec<Delta>,
    pub regressions: Vec<Delta>,
}

/// (metric, true when higher is worse)
const COMPARED: &[(&str, bool)] = &[
    ("success_rate", false),
    ("throughput", false),
    ("latency_mean", true),
    ("latency_p50", true),
    ("latency_p95", true),
    ("latency_p99", true),
    ("timeouts", true),
    ("failed", true),
    ("cost_usd", true),
];

fn key(r: &Row) -> String {
    let name = get_str(r, "name");
    let stage = format!("{}/{}", get_str(r, "phase"), get_str(r, "stage"));
    if r.contains_key("kind") { format!("{stage} {}:{name}", get_str(r, "kind")) } else { stage }
}

pub fn compare(current: &Metrics, base: &Metrics, dir: &str, tolerance: f64) -> Baseline {
    let mut deltas = Vec::new();
    for (cur, old) in [(&current.stages, &base.stages), (&current.names, &base.names)] {
        for c in cur {
            let k = key(c);
            let Some(b) = old.iter().find(|b| key(b) == k) else { continue };
            for (metric, higher_worse) in COMPARED {
                let (Some(bv), Some(cv)) = (get_f64(b, metric), get_f64(c, metric)) else { continue };
                let change = if bv == 0.0 {
                    if cv == 0.0 { 0.0 } else { f64::INFINITY.copysign(cv) }
                } else {
                    (cv - bv) / bv.abs()
                };
                let worse = if *higher_worse { change } else { -change };
                deltas.push(Delta {
                    scope: k.clone(),
                    metric: metric.to_string(),
                    baseline: bv,
                    current: cv,
                    change: if change.is_finite() { change } else { 1e9_f64.copysign(change) },
                    regression: worse > tolerance,
                });
            }
        }
    }
    let regressions = deltas.iter().filter(|d| d.regression).cloned().collect();
    Baseline { dir: dir.to_string(), tolerance, deltas, regressions }
}
