//! Baseline comparison: the same metrics from another run, per stage and per (kind, name), with
//! relative deltas. A change in the bad direction beyond the tolerance (default 10%) is a
//! regression. Which direction is bad depends on the metric: latency and error rates up,
//! success rate and throughput down.

use serde::Serialize;

use super::metric_rows::{LevelKey, LevelRow, NameKey, StageKey, Stats};
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

/// A compared metric: its name in the report, its value in a row, and whether higher is worse.
/// Also what `history` follows across runs.
pub(super) struct Compared {
    pub metric: &'static str,
    pub value: fn(&Stats) -> Option<f64>,
    pub higher_worse: bool,
}

pub(super) const COMPARED: &[Compared] = &[
    Compared { metric: "success_rate", value: |s| s.success_rate, higher_worse: false },
    Compared { metric: "throughput", value: |s| s.throughput, higher_worse: false },
    Compared { metric: "latency_mean", value: |s| s.latency_mean, higher_worse: true },
    Compared { metric: "latency_p50", value: |s| s.latency_p50, higher_worse: true },
    Compared { metric: "latency_p95", value: |s| s.latency_p95, higher_worse: true },
    Compared { metric: "latency_p99", value: |s| s.latency_p99, higher_worse: true },
    Compared { metric: "timeouts", value: |s| Some(s.timeouts as f64), higher_worse: true },
    Compared { metric: "failed", value: |s| Some(s.failed as f64), higher_worse: true },
    Compared { metric: "cost_usd", value: |s| s.cost_usd, higher_worse: true },
];

/// How a row is matched with the baseline's and named in the deltas.
pub(super) trait Scope {
    fn scope(&self) -> String;
}

impl Scope for StageKey {
    fn scope(&self) -> String {
        format!("{}/{}", self.phase(), self.stage())
    }
}

impl Scope for NameKey {
    fn scope(&self) -> String {
        format!("{}/{} {}:{}", self.phase(), self.stage(), self.kind(), self.name())
    }
}

/// The deltas of the rows of `current` that the baseline also has.
fn deltas<K: LevelKey + Scope>(current: &[LevelRow<K>], base: &[LevelRow<K>], tolerance: f64, out: &mut Vec<Delta>) {
    for c in current {
        let k = c.key.scope();
        let Some(b) = base.iter().find(|b| b.key.scope() == k) else { continue };
        for m in COMPARED {
            let (Some(bv), Some(cv)) = ((m.value)(&b.stats), (m.value)(&c.stats)) else { continue };
            let change = relative(bv, cv);
            let worse = if m.higher_worse { change } else { -change };
            out.push(Delta {
                scope: k.clone(),
                metric: m.metric.to_string(),
                baseline: bv,
                current: cv,
                change: if change.is_finite() { change } else { 1e9_f64.copysign(change) },
                regression: worse > tolerance,
            });
        }
    }
}

/// (current − base) / |base|; ±∞ from a base of 0.
pub(super) fn relative(base: f64, current: f64) -> f64 {
    if base == 0.0 {
        if current == 0.0 { 0.0 } else { f64::INFINITY.copysign(current) }
    } else {
        (current - base) / base.abs()
    }
}

pub fn compare(current: &Metrics, base: &Metrics, dir: &str, tolerance: f64) -> Baseline {
    let mut all = Vec::new();
    deltas(&current.stages, &base.stages, tolerance, &mut all);
    deltas(&current.names, &base.names, tolerance, &mut all);
    let regressions = all.iter().filter(|d| d.regression).cloned().collect();
    Baseline { dir: dir.to_string(), tolerance, deltas: all, regressions }
}
