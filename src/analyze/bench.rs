//! The benchmark table: for each `bench` stage, each command's statistics over its timed runs
//! (`bench_run` rows that succeeded) — mean, sample standard deviation, median, min, max, mean
//! user and system CPU time, peak RSS, ops/s from `bench_ops` rows, outliers by Tukey's fences
//! — and the speed-up of the baseline over each other command with a 95% bootstrap confidence
//! interval. Everything is computed from the events, so it can be checked against them.

use std::collections::BTreeMap;

use polars::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::frame::Cells;
use crate::events::BENCH_RUN;

/// One bench stage.
#[derive(Clone, Debug, Serialize)]
pub struct BenchStage {
    /// `phase/stage`.
    pub stage: String,
    pub commands: Vec<CommandStats>,
    pub baseline: Option<String>,
    /// The baseline against each other command.
    pub speedups: Vec<Speedup>,
}

/// One command's timed runs.
#[derive(Clone, Debug, Serialize)]
pub struct CommandStats {
    pub name: String,
    /// `baseline` or `candidate`.
    pub role: String,
    /// Timed runs that succeeded (the statistics are over these), and those that failed.
    pub runs: u64,
    pub failed: u64,
    pub mean_ms: Option<f64>,
    /// Sample standard deviation (n − 1), as hyperfine's.
    pub stddev_ms: Option<f64>,
    pub median_ms: Option<f64>,
    pub min_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub user_ms: Option<f64>,
    pub sys_ms: Option<f64>,
    pub peak_rss_max: Option<f64>,
    pub peak_rss_mean: Option<f64>,
    /// Mean of the `bench_ops` rows (runs that printed an op count).
    pub ops_per_s: Option<f64>,
    /// Runs outside Q1 − 1.5·IQR … Q3 + 1.5·IQR, and of those, outside 3·IQR.
    pub outliers: u64,
    pub outliers_severe: u64,
}

/// How many times as long the baseline takes as the candidate (mean over mean).
#[derive(Clone, Debug, Serialize)]
pub struct Speedup {
    pub baseline: String,
    pub candidate: String,
    pub ratio: f64,
    /// 95% percentile-bootstrap interval of the ratio of means (null with fewer than two
    /// timed runs of either command).
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub resamples: u32,
}

/// Linear-interpolation quantile (type 7), as the criteria's percentiles; `sorted` is sorted.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

fn stddev(xs: &[f64]) -> Option<f64> {
    let m = mean(xs)?;
    (xs.len() > 1).then(|| (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64).sqrt())
}

#[derive(Default)]
struct Acc {
    role: String,
    wall: Vec<f64>,
    /// Wall times by timed run: the copies of one run ran together, so the bootstrap resamples
    /// runs, not copies.
    by_run: BTreeMap<u64, Vec<f64>>,
    failed: u64,
    user: Vec<f64>,
    sys: Vec<f64>,
    rss: Vec<f64>,
    ops: Vec<f64>,
}

impl Acc {
    fn stats(mut self, name: String) -> (CommandStats, Vec<Vec<f64>>) {
        let wall: Vec<Vec<f64>> = std::mem::take(&mut self.by_run).into_values().collect();
        self.wall.sort_by(f64::total_cmp);
        let s = &self.wall;
        let (mut outliers, mut severe) = (0, 0);
        if s.len() >= 4 {
            let (q1, q3) = (quantile(s, 0.25), quantile(s, 0.75));
            let iqr = q3 - q1;
            for &x in s {
                let off = if x < q1 { q1 - x } else { x - q3 };
                if off > 1.5 * iqr {
                    outliers += 1;
                }
                if off > 3.0 * iqr {
                    severe += 1;
                }
            }
        }
        let stats = CommandStats {
            name,
            role: self.role,
            runs: s.len() as u64,
            failed: self.failed,
            mean_ms: mean(s),
            stddev_ms: stddev(s),
            median_ms: (!s.is_empty()).then(|| quantile(s, 0.5)),
            min_ms: s.first().copied(),
            max_ms: s.last().copied(),
            user_ms: mean(&self.user),
            sys_ms: mean(&self.sys),
            peak_rss_max: self.rss.iter().copied().reduce(f64::max),
            peak_rss_mean: mean(&self.rss),
            ops_per_s: mean(&self.ops),
            outliers,
            outliers_severe: severe,
        };
        (stats, wall)
    }
}

/// Draws the bootstrap makes at most (resamples × runs), so a large benchmark stays quick.
const BOOTSTRAP_DRAWS: usize = 20_000_000;
const BOOTSTRAP_SEED: u64 = 0x5eed_be9c;

/// A ratio of means, its interval (low, high) if any, and the resamples behind it.
pub type Ratio = (f64, Option<(f64, f64)>, u32);

/// The ratio of means of `base` to `cand` — each given as its timed runs, a run being the
/// wall times of the copies that ran together — with its 95% percentile-bootstrap interval:
/// both sides' runs resampled with replacement, the ratio of the resampled means taken each
/// time. The interval is None with fewer than two runs on a side (one run says nothing of the
/// spread); the ratio is None without runs.
pub fn speedup(base: &[Vec<f64>], cand: &[Vec<f64>]) -> Option<Ratio> {
    let flat = |g: &[Vec<f64>]| g.iter().flatten().copied().collect::<Vec<f64>>();
    let (mb, mc) = (mean(&flat(base))?, mean(&flat(cand))?);
    if mc <= 0.0 {
        return None;
    }
    if base.len() < 2 || cand.len() < 2 {
        return Some((mb / mc, None, 0));
    }
    let n = flat(base).len() + flat(cand).len();
    let resamples = (BOOTSTRAP_DRAWS / n).clamp(1000, 10_000);
    let mut rng = StdRng::seed_from_u64(BOOTSTRAP_SEED);
    let draw = |runs: &[Vec<f64>], rng: &mut StdRng| -> f64 {
        let (mut sum, mut count) = (0.0, 0usize);
        for _ in 0..runs.len() {
            let r = &runs[rng.random_range(0..runs.len())];
            sum += r.iter().sum::<f64>();
            count += r.len();
        }
        sum / count.max(1) as f64
    };
    let mut ratios: Vec<f64> = (0..resamples)
        .map(|_| {
            let b = draw(base, &mut rng);
            let c = draw(cand, &mut rng);
            b / c
        })
        .filter(|r| r.is_finite())
        .collect();
    if ratios.is_empty() {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    Some((mb / mc, Some((quantile(&ratios, 0.025), quantile(&ratios, 0.975))), resamples as u32))
}

fn attr(attrs: Option<&str>, key: &str) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_str(attrs?).ok()?;
    v.get(key)?.as_f64()
}

/// The benchmark table of a run's events (empty when it has no bench stage).
pub fn compute(events: &LazyFrame) -> PolarsResult<Vec<BenchStage>> {
    let schema = events.clone().collect_schema()?;
    let need = ["phase", "stage", "kind", "name", "ok", "latency_ms", "value", "attrs"];
    if !need.iter().all(|c| schema.get(c).is_some()) {
        return Ok(Vec::new());
    }
    let df = events
        .clone()
        .filter(col("kind").eq(lit(BENCH_RUN)).or(col("kind").eq(lit("bench_ops"))))
        .select(need.map(col))
        .collect()?;
    let c = Cells::new(&df);
    // Stage key → command name → runs, in the order the commands first appear.
    let mut stages: BTreeMap<String, Vec<(String, Acc)>> = BTreeMap::new();
    for i in 0..df.height() {
        let key = format!("{}/{}", c.str("phase", i).unwrap_or_default(), c.str("stage", i).unwrap_or_default());
        let name = c.str("name", i).unwrap_or_default().to_string();
        let cmds = stages.entry(key).or_default();
        let at = match cmds.iter().position(|(n, _)| *n == name) {
            Some(at) => at,
            None => {
                cmds.push((name, Acc::default()));
                cmds.len() - 1
            }
        };
        let acc = &mut cmds[at].1;
        let attrs = c.str("attrs", i);
        let attrs = attrs.as_deref();
        if c.str("kind", i).as_deref() == Some("bench_ops") {
            if let Some(v) = c.f64("value", i) {
                acc.ops.push(v);
            }
            continue;
        }
        if let Some(role) = attrs
            .and_then(|a| serde_json::from_str::<serde_json::Value>(a).ok())
            .and_then(|v| v.get("role")?.as_str().map(str::to_string))
        {
            acc.role = role;
        }
        match (c.bool("ok", i), c.f64("latency_ms", i)) {
            (Some(true), Some(ms)) => {
                acc.wall.push(ms);
                let run = attr(attrs, "run").map_or(acc.wall.len() as u64, |r| r as u64);
                acc.by_run.entry(run).or_default().push(ms);
                acc.user.extend(attr(attrs, "user_ms"));
                acc.sys.extend(attr(attrs, "sys_ms"));
                acc.rss.extend(c.f64("value", i));
            }
            _ => acc.failed += 1,
        }
    }
    let mut out = Vec::new();
    for (stage, cmds) in stages {
        let mut commands = Vec::new();
        let mut walls = Vec::new();
        for (name, acc) in cmds {
            let (s, wall) = acc.stats(name);
            commands.push(s);
            walls.push(wall);
        }
        let baseline = commands.iter().find(|s| s.role == "baseline").map(|s| s.name.clone());
        let mut speedups = Vec::new();
        if let Some(b) = &baseline {
            let bi = commands.iter().position(|s| &s.name == b).unwrap_or(0);
            for (ci, cmd) in commands.iter().enumerate() {
                if ci == bi {
                    continue;
                }
                if let Some((ratio, ci, resamples)) = speedup(&walls[bi], &walls[ci]) {
                    speedups.push(Speedup {
                        baseline: b.clone(),
                        candidate: cmd.name.clone(),
                        ratio,
                        ci_low: ci.map(|c| c.0),
                        ci_high: ci.map(|c| c.1),
                        resamples,
                    });
                }
            }
        }
        out.push(BenchStage { stage, commands, baseline, speedups });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_follow_their_definitions() {
        let mut acc = Acc { role: "candidate".into(), ..Default::default() };
        acc.wall = vec![10.0, 12.0, 11.0, 13.0, 100.0];
        let (s, _) = acc.stats("c".into());
        assert_eq!(s.mean_ms, Some(29.2));
        assert_eq!(s.median_ms, Some(12.0));
        assert_eq!((s.min_ms, s.max_ms), (Some(10.0), Some(100.0)));
        let sd = s.stddev_ms.unwrap();
        assert!((sd - 39.5942).abs() < 1e-3, "{sd}");
        assert_eq!((s.outliers, s.outliers_severe), (1, 1), "100 is far outside Q1 11, Q3 13");
    }

    #[test]
    fn the_interval_brackets_the_ratio_and_narrows_with_more_runs() {
        let runs = |xs: Vec<f64>| xs.into_iter().map(|x| vec![x]).collect::<Vec<_>>();
        let base = runs((0..20).map(|i| 100.0 + f64::from(i % 5)).collect());
        let cand = runs((0..20).map(|i| 2.0 + f64::from(i % 3) * 0.1).collect());
        let (r, ci, _) = speedup(&base, &cand).unwrap();
        let (lo, hi) = ci.unwrap();
        assert!(lo <= r && r <= hi, "{lo} {r} {hi}");
        let ten = |g: &[Vec<f64>]| (0..10).flat_map(|_| g.iter().cloned()).collect::<Vec<_>>();
        let (_, ci2, _) = speedup(&ten(&base), &ten(&cand)).unwrap();
        let (lo2, hi2) = ci2.unwrap();
        assert!(hi2 - lo2 < hi - lo, "more runs give a narrower interval");
        assert_eq!(speedup(&base, &[]), None);
        // One run of each: a ratio, but no interval (one sample says nothing of the spread).
        let (r1, ci1, _) = speedup(&base[..1], &cand[..1]).unwrap();
        assert!((r1 - 50.0).abs() < 1e-12 && ci1.is_none());
        // Copies of one run are resampled together: ten copies of one run are still one run.
        assert!(speedup(&[vec![100.0; 10]], &cand).unwrap().1.is_none());
    }
}
