//! History: every run of one plan under a results directory, oldest first, as series — each
//! metric the baseline comparison uses (per plan, stage and event name) and each criterion's
//! observed value and outcome — with each run flagged where it regressed beyond the tolerance
//! against the run before it and against the best earlier run. "Best" is the best of several
//! noisy runs, an optimistic yardstick, so a run counts as regressed against it only when it is
//! also beyond the tolerance from the median of the earlier runs: one lucky run does not make
//! every later one a regression. Rendering is `crate::report`'s.

use serde::Serialize;

use super::baseline::{COMPARED, Compared, Scope, relative};
use super::metric_rows::{LevelKey, LevelRow};
use super::report_data::{Label, Report};
use crate::rundir::RunStatus;

#[derive(Debug, Serialize)]
pub struct History {
    pub plan: String,
    pub tolerance: f64,
    /// The runs, oldest first.
    pub runs: Vec<HistRun>,
    pub metrics: Vec<MetricSeries>,
    pub criteria: Vec<CriterionSeries>,
    /// Directories under the results directory that are not runs of this plan, or could not
    /// be read, and why.
    pub skipped: Vec<Skipped>,
    /// The newest run's regressions, one line each (empty: none): metrics beyond the tolerance
    /// against the best earlier run (and the earlier runs' median), criteria failing now that
    /// passed in the run before. These make `planrun history` exit 1.
    pub newest_regressions: Vec<String>,
    /// Metrics of the newest run beyond the tolerance against the run before only (that run may
    /// have been a lucky one): reported, not counted.
    pub newest_vs_previous: Vec<String>,
    /// Other plans with runs in the same directory.
    pub other_plans: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct HistRun {
    pub dir: String,
    pub started_at: String,
    pub verdict: Label,
    pub confidence: f64,
}

#[derive(Debug, Serialize, Clone)]
pub struct Skipped {
    pub dir: String,
    pub reason: String,
}

/// One metric of one scope across the runs.
#[derive(Debug, Serialize)]
pub struct MetricSeries {
    /// `plan`, `phase/stage` or `phase/stage kind:name`.
    pub scope: String,
    pub metric: String,
    pub higher_worse: bool,
    /// One value per run (null where the run has no such row).
    pub values: Vec<Option<f64>>,
    /// Relative change from the previous run that has a value, per run.
    pub vs_previous: Vec<Option<f64>>,
    /// Relative change from the best earlier value, per run.
    pub vs_best: Vec<Option<f64>>,
    /// Per run: `previous`, `best`, `previous+best` where it regressed, else null.
    pub regressed: Vec<Option<&'static str>>,
}

/// One criterion across the runs.
#[derive(Debug, Serialize)]
pub struct CriterionSeries {
    pub scope: String,
    pub check: String,
    pub observed: Vec<Option<f64>>,
    /// Per run: passed, failed (also for no data), or null when the run did not have it.
    pub pass: Vec<Option<bool>>,
    /// Per run: it fails now and passed in the run before.
    pub newly_failing: Vec<bool>,
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 }
}

impl MetricSeries {
    fn new(scope: String, m: &Compared, values: Vec<Option<f64>>, tolerance: f64) -> MetricSeries {
        let bad = |change: f64| if m.higher_worse { change } else { -change };
        let n = values.len();
        let (mut vs_previous, mut vs_best, mut regressed) = (vec![None; n], vec![None; n], vec![None; n]);
        for i in 0..n {
            let Some(v) = values[i] else { continue };
            let earlier: Vec<f64> = values[..i].iter().flatten().copied().collect();
            let Some(&prev) = earlier.last() else { continue };
            let best = earlier.iter().copied().reduce(|a, b| if bad(b - a) < 0.0 { b } else { a }).unwrap_or(prev);
            let (cp, cb) = (relative(prev, v), relative(best, v));
            let cm = relative(median(&mut earlier.clone()), v);
            vs_previous[i] = Some(cp).filter(|c| c.is_finite());
            vs_best[i] = Some(cb).filter(|c| c.is_finite());
            let (p, b) = (bad(cp) > tolerance, bad(cb) > tolerance && bad(cm) > tolerance);
            regressed[i] = match (p, b) {
                (true, true) => Some("previous+best"),
                (true, false) => Some("previous"),
                (false, true) => Some("best"),
                (false, false) => None,
            };
        }
        MetricSeries {
            scope,
            metric: m.metric.to_string(),
            higher_worse: m.higher_worse,
            values,
            vs_previous,
            vs_best,
            regressed,
        }
    }
}

/// A percentile of too few samples is their extreme, not a tail: p95 needs 20 and p99 100
/// (as the findings' tail rule), else the run has no value for it.
fn value(m: &Compared, s: &super::metric_rows::Stats) -> Option<f64> {
    let needs = match m.metric {
        "latency_p95" => 20,
        "latency_p99" => 100,
        _ => 0,
    };
    if s.count < needs { None } else { (m.value)(s) }
}

/// The series of rows `rows` picks from each report, matched by scope.
fn level<K: LevelKey + Scope>(
    reports: &[&Report],
    rows: impl Fn(&Report) -> &[LevelRow<K>],
    tolerance: f64,
    out: &mut Vec<MetricSeries>,
) {
    let mut scopes: Vec<String> = Vec::new();
    for r in reports {
        for row in rows(r) {
            let s = row.key.scope();
            if !scopes.contains(&s) {
                scopes.push(s);
            }
        }
    }
    for scope in scopes {
        for m in COMPARED {
            let values: Vec<Option<f64>> = reports
                .iter()
                .map(|r| rows(r).iter().find(|row| row.key.scope() == scope).and_then(|row| value(m, &row.stats)))
                .collect();
            if values.iter().flatten().count() > 0 {
                out.push(MetricSeries::new(scope.clone(), m, values, tolerance));
            }
        }
    }
}

/// The history of `runs` (directory and report, oldest first) of plan `plan`.
pub fn build(
    plan: &str,
    runs: &[(String, Report)],
    tolerance: f64,
    skipped: Vec<Skipped>,
    other_plans: Vec<String>,
) -> History {
    let reports: Vec<&Report> = runs.iter().map(|(_, r)| r).collect();
    let mut metrics = Vec::new();
    for m in COMPARED {
        let values: Vec<Option<f64>> = reports.iter().map(|r| value(m, &r.metrics.plan.stats)).collect();
        if values.iter().flatten().count() > 0 {
            metrics.push(MetricSeries::new("plan".into(), m, values, tolerance));
        }
    }
    // A bench stage's own rows mix its commands, warm-ups and hooks (their rate depends on
    // `min_time`): its per-command rows (below) are what compare.
    level(&reports, |r| &r.metrics.stages, tolerance, &mut metrics);
    let bench: Vec<String> = reports.iter().flat_map(|r| r.bench.iter().map(|b| b.stage.clone())).collect();
    metrics.retain(|m| !bench.contains(&m.scope));
    level(&reports, |r| &r.metrics.names, tolerance, &mut metrics);

    let mut keys: Vec<(String, String)> = Vec::new();
    for r in &reports {
        for c in &r.criteria {
            let k = (c.scope.clone(), c.check.clone());
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    let criteria = keys
        .into_iter()
        .map(|(scope, check)| {
            let of = |r: &Report| r.criteria.iter().find(|c| c.scope == scope && c.check == check).cloned();
            let found: Vec<_> = reports.iter().map(|r| of(r)).collect();
            let pass: Vec<Option<bool>> = found.iter().map(|c| c.as_ref().map(|c| c.pass)).collect();
            let newly_failing =
                (0..pass.len()).map(|i| i > 0 && pass[i] == Some(false) && pass[i - 1] == Some(true)).collect();
            CriterionSeries {
                observed: found.iter().map(|c| c.as_ref().and_then(|c| c.observed)).collect(),
                pass,
                newly_failing,
                scope,
                check,
            }
        })
        .collect::<Vec<_>>();

    let last = runs.len().saturating_sub(1);
    let (mut newest_regressions, mut newest_vs_previous) = (Vec::new(), Vec::new());
    if runs.len() > 1 {
        for m in &metrics {
            if let (Some(how), Some(v)) = (m.regressed[last], m.values[last]) {
                let change = if how.starts_with("previous") { m.vs_previous[last] } else { m.vs_best[last] };
                // Against the run before alone it may be that run's luck: noted, not counted.
                let list = if how.contains("best") { &mut newest_regressions } else { &mut newest_vs_previous };
                list.push(format!(
                    "{} {}: {v:.3} ({} against the {})",
                    m.scope,
                    m.metric,
                    change.map_or_else(|| "new".to_string(), |c| format!("{:+.1}%", c * 100.0)),
                    how.replace('+', " and the ")
                ));
            }
        }
        for c in &criteria {
            if c.newly_failing[last] {
                newest_regressions
                    .push(format!("criterion `{}` ({}) fails now; it passed in the run before", c.check, c.scope));
            }
        }
    }
    History {
        plan: plan.to_string(),
        tolerance,
        runs: runs
            .iter()
            .map(|(dir, r)| HistRun {
                dir: dir.clone(),
                started_at: r.run.started_at.clone(),
                verdict: r.verdict.label,
                confidence: r.verdict.confidence,
            })
            .collect(),
        metrics,
        criteria,
        skipped,
        newest_regressions,
        newest_vs_previous,
        other_plans,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: &[f64], higher_worse: bool) -> MetricSeries {
        let m = COMPARED.iter().find(|m| m.higher_worse == higher_worse).unwrap();
        MetricSeries::new("s".into(), m, values.iter().map(|v| Some(*v)).collect(), 0.10)
    }

    #[test]
    fn a_run_regresses_against_the_previous_and_the_best_but_not_against_one_lucky_run() {
        // Latency (higher is worse): steady, then 30% up.
        let s = series(&[100.0, 102.0, 99.0, 130.0], true);
        assert_eq!(s.regressed, vec![None, None, None, Some("previous+best")]);
        assert!((s.vs_previous[3].unwrap() - (130.0 - 99.0) / 99.0).abs() < 1e-12);
        // One lucky run (60) is the best; the runs after it at the usual 100 are no regression
        // against it, since they are within the tolerance of the earlier runs' median.
        let s = series(&[100.0, 60.0, 101.0, 100.0, 99.0], true);
        assert_eq!(s.regressed[3], None);
        assert_eq!(s.regressed[4], None);
        assert_eq!(
            s.regressed[2],
            Some("previous+best"),
            "60 → 101: above the run before and the median of 100 and 60"
        );
        // Throughput (lower is worse) falling 20%.
        let s = series(&[1000.0, 1010.0, 800.0], false);
        assert_eq!(s.regressed[2], Some("previous+best"));
    }
}

/// What `planrun history DIR` could not do, said for a person.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot read {0}: {1}")]
    ReadDir(std::path::PathBuf, std::io::Error),
    #[error("no runs under {0}{1}")]
    NoRuns(std::path::PathBuf, String),
    #[error("no runs of plan `{want}` under {dir}; plans with runs there: {plans}")]
    NoSuchPlan { want: String, dir: std::path::PathBuf, plans: String },
}

/// Every run directory right under `dir`, analyzed, and the history of one plan's: `plan`, or
/// the newest run's (the others are named in `other_plans`). A directory that has a manifest
/// but cannot be read or analyzed is skipped with the reason; other directories are not runs.
pub fn collect(dir: &std::path::Path, plan: Option<&str>, tolerance: Option<f64>) -> Result<History, HistoryError> {
    use crate::rundir::RunDir;
    let rd = std::fs::read_dir(dir).map_err(|e| HistoryError::ReadDir(dir.to_path_buf(), e))?;
    let mut dirs: Vec<std::path::PathBuf> = rd.flatten().map(|e| e.path()).filter(|p| RunDir::is_run(p)).collect();
    dirs.sort();
    let mut skipped = Vec::new();
    let mut runs: Vec<(String, String, Report)> = Vec::new();
    let mut tolerances: Vec<(String, Option<f64>)> = Vec::new();
    for d in dirs {
        let shown = d.display().to_string();
        let analyzed = super::load_run(&d).and_then(|run| {
            let report = super::analyze(&run, &super::AnalyzeOptions::default())?;
            Ok((run.plan.meta.name.clone(), run.plan.meta.regression_tolerance, report))
        });
        match analyzed {
            Ok((_, _, report)) if matches!(report.run.status, RunStatus::Running | RunStatus::Interrupted) => {
                skipped.push(Skipped {
                    dir: shown,
                    reason: format!("the run did not finish ({})", report.run.status.as_str()),
                });
            }
            Ok((name, tol, report)) => {
                tolerances.push((shown.clone(), tol));
                // Runs of one plan with another profile are other runs: compared apart.
                let name = match &report.run.profile {
                    Some(p) => format!("{name} --profile {p}"),
                    None => name,
                };
                runs.push((name, shown, report));
            }
            Err(e) => skipped.push(Skipped { dir: shown, reason: e.to_string() }),
        }
    }
    if runs.is_empty() {
        let why = match skipped.len() {
            0 => " (a run directory holds manifest.json; `planrun run` writes them under results/)".to_string(),
            n => format!(": {n} run directories could not be read ({})", skipped[0].reason),
        };
        return Err(HistoryError::NoRuns(dir.to_path_buf(), why));
    }
    runs.sort_by(|a, b| a.2.run.started_at.cmp(&b.2.run.started_at));
    let mut plans: Vec<String> = Vec::new();
    for (name, _, _) in &runs {
        if !plans.contains(name) {
            plans.push(name.clone());
        }
    }
    let chosen = match plan {
        Some(p) if plans.iter().any(|n| n == p) => p.to_string(),
        // The plan's name without a profile: its newest run's profile.
        Some(p) if let Some(r) = runs.iter().rev().find(|r| r.0.split(" --profile ").next() == Some(p)) => r.0.clone(),
        Some(p) => {
            return Err(HistoryError::NoSuchPlan {
                want: p.to_string(),
                dir: dir.to_path_buf(),
                plans: plans.join(", "),
            });
        }
        None => runs.last().map(|r| r.0.clone()).unwrap_or_default(),
    };
    let mine: Vec<(String, Report)> = runs.into_iter().filter(|r| r.0 == chosen).map(|(_, d, r)| (d, r)).collect();
    let tolerance = tolerance
        .or_else(|| mine.last().and_then(|(d, _)| tolerances.iter().find(|(t, _)| t == d).and_then(|(_, t)| *t)))
        .unwrap_or(super::DEFAULT_TOLERANCE);
    let others = plans.into_iter().filter(|p| *p != chosen).collect();
    Ok(build(&chosen, &mine, tolerance, skipped, others))
}
