//! The analysis of one run, start to end: read the events once (`data`), compute metrics,
//! evaluate criteria, decide the verdict, derive findings, compare with a baseline, run the SQL
//! tables, and assemble the `Report`. Each step lives in its own module; this one only orders them.

use std::path::PathBuf;

use super::error::AnalyzeError;
use super::evaluate::evaluate;
use super::load::{Run, load_run};
use super::report_data::{ComparisonRow, Report, RunInfo, SourceInfo};
use super::{baseline, compile, data, findings, metrics, sql, verdict};
use crate::criteria;

pub const DEFAULT_THRESHOLD: f64 = 0.75;
pub const DEFAULT_TOLERANCE: f64 = 0.10;

#[derive(Clone, Debug, Default)]
pub struct AnalyzeOptions {
    pub baseline: Option<PathBuf>,
    pub analysis_dirs: Vec<PathBuf>,
    pub tolerance: Option<f64>,
    /// Also compute Locust's CSV tables (`--format locust-csv`).
    pub locust: bool,
}

/// The whole analysis of one run.
pub fn analyze(run: &Run, opts: &AnalyzeOptions) -> Result<Report, AnalyzeError> {
    let m = &run.manifest;
    let mut timer = metrics::Timer::new();
    let queries = sql::queries(&opts.analysis_dirs, &run.plan.analysis.queries)?;
    // Read the events once, with every column the metrics, criteria and queries name.
    let schema: Vec<String> = run.events.clone().collect_schema()?.iter_names().map(|n| n.to_string()).collect();
    let mut wanted = sql::columns(&queries, &schema);
    for (_, c) in run.plan.criteria() {
        if let Ok(check) = criteria::parse(&c.check.value) {
            wanted.extend(compile::columns(&check));
        }
    }
    let frame = data::Frame::load(&run.events, &wanted)?;
    timer.lap("read");
    let metrics = metrics::compute(&frame, m)?;
    timer.lap("metrics");
    let criteria = evaluate(run, &frame)?;
    timer.lap("criteria");

    let stages = verdict::stage_results(m, &criteria);
    let threshold = run.plan.meta.pass_threshold.unwrap_or(DEFAULT_THRESHOLD);
    let mut verdict = verdict::decide(&m.status, &criteria, &stages, threshold);
    if run.plan.meta.confidence == crate::plan::ConfidenceRule::Phases {
        verdict::by_phases(&mut verdict);
    }

    let bench = super::bench::compute(&run.events)?;
    timer.lap("bench");
    let unpaced: Vec<String> = bench.iter().map(|b| b.stage.clone()).collect();
    let mut findings = findings::find(&metrics, &criteria, &unpaced);

    let baseline = match &opts.baseline {
        Some(b) => {
            let base = load_run(b)?;
            let bm = metrics::compute(&data::Frame::load(&base.events, &[])?, &base.manifest)?;
            let tol = opts.tolerance.or(run.plan.meta.regression_tolerance).unwrap_or(DEFAULT_TOLERANCE);
            Some(baseline::compare(&metrics, &bm, &b.display().to_string(), tol))
        }
        None => None,
    };
    if let Some(b) = &baseline {
        findings::regressions(b, &mut findings);
    }

    timer.lap("findings");
    let tables = sql::run_all(&frame.events(), &sql::stages_table(m)?, &queries);
    timer.lap("sql");
    let locust = if opts.locust { Some(super::locust::compute(&run.events)?) } else { None };
    let charts = super::charts::compute(&run.events)?;
    timer.lap("charts");

    Ok(Report {
        planrun_version: env!("CARGO_PKG_VERSION").into(),
        generated_at: crate::rundir::now_rfc3339(),
        run: run_info(run),
        source: SourceInfo {
            file: run.source.file.clone(),
            events: run.source.events,
            note: run.source.note.clone(),
            recording: recording(run),
        },
        verdict,
        criteria,
        stages,
        metrics,
        charts,
        bench,
        findings,
        baseline,
        tables,
        comparison: Vec::new(),
        locust,
    })
}

/// What each stage that did not record every request kept instead (from the resolved plan).
fn recording(run: &Run) -> Vec<String> {
    run.plan
        .stages()
        .filter_map(|(p, s)| {
            let record = s.driver.fields.get("record")?;
            let what = match record {
                serde_json::Value::String(m) if m == "summary" => {
                    "per-second summaries per task (`http_window` rows) instead of one row per request: figures over `http` rows have no data".to_string()
                }
                serde_json::Value::Object(o) => {
                    let share = o.get("sample")?.as_f64()?;
                    format!(
                        "one request in {:.0} as an `http` row (figures over them are a sample), and per-second summaries of all (`http_window` rows)",
                        (1.0 / share).round()
                    )
                }
                _ => return None,
            };
            Some(format!("{}/{} recorded {what}", p.name, s.name()))
        })
        .collect()
}

/// What the run was, from its manifest and plan.
fn run_info(run: &Run) -> RunInfo {
    let m = &run.manifest;
    let duration_s = m.ended_at.as_deref().and_then(|end| {
        let a = chrono::DateTime::parse_from_rfc3339(&m.started_at).ok()?;
        let b = chrono::DateTime::parse_from_rfc3339(end).ok()?;
        Some((b - a).num_milliseconds() as f64 / 1000.0)
    });
    RunInfo {
        dir: run.dir.display().to_string(),
        plan: m.plan.name.clone(),
        description: run.plan.meta.description.clone(),
        budget_usd: run.plan.meta.budget_usd,
        status: m.status,
        profile: m.profile.clone(),
        seed: m.seed,
        time_scale: m.time_scale,
        clock: m.clock.to_string(),
        build: m.build,
        started_at: m.started_at.clone(),
        ended_at: m.ended_at.clone(),
        duration_s,
        resumes: m.resumes,
        message: m.message.clone(),
        host: m.host.clone(),
        vars: m.vars.clone(),
        planrun_version: m.planrun_version.clone(),
    }
}

/// One comparison row per run for `--all`.
pub fn comparison_row(r: &Report) -> ComparisonRow {
    let p = &r.metrics.plan.stats;
    ComparisonRow {
        dir: r.run.dir.clone(),
        plan: r.run.plan.clone(),
        started_at: r.run.started_at.clone(),
        verdict: r.verdict.label,
        confidence: r.verdict.confidence,
        count: p.count,
        success_rate: p.success_rate,
        throughput: p.throughput,
        latency_p50: p.latency_p50,
        latency_p95: p.latency_p95,
        latency_p99: p.latency_p99,
        cost_usd: p.cost_usd,
    }
}
