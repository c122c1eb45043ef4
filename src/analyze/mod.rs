//! Analysis: read a run directory (Parquet by lazy scan, or the JSONL when the Parquet is missing
//! or stale) once into memory (`data`), compute metrics (`metrics`), evaluate the plan's criteria compiled to polars
//! (`criteria`, `compile`), derive findings and confidence (`findings`), compare with a baseline
//! (`baseline`), run the SQL tables (`sql`), and assemble the report data (`report_data`).
//! Rendering that data is `crate::report`'s job.

pub mod baseline;
pub mod compile;
pub mod data;
pub mod findings;
pub mod frame;
pub mod metrics;
pub mod report_data;
pub mod sql;

use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::criteria::{self, Check, Cmp, Rhs, threshold};
use crate::plan::{LoadOptions, Plan, Scope};
use crate::rundir::{Manifest, RunDir, RunStatus};
use frame::{get_f64, num};
use report_data::{CriterionResult, Report, RunInfo, SourceInfo, StageResult, Verdict};

pub const DEFAULT_THRESHOLD: f64 = 0.75;
pub const DEFAULT_TOLERANCE: f64 = 0.10;

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// No such run, unreadable events: the path and the reason.
    #[error("{0}")]
    Input(String),
    #[error("analysis failed: {0}")]
    Polars(#[from] PolarsError),
}

#[derive(Clone, Debug, Default)]
pub struct AnalyzeOptions {
    pub baseline: Option<PathBuf>,
    pub analysis_dirs: Vec<PathBuf>,
    pub tolerance: Option<f64>,
}

/// A run directory, loaded.
pub struct Run {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub plan: Plan,
    pub events: LazyFrame,
    pub source: SourceInfo,
}

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Load a run directory.
pub fn load_run(dir: &Path) -> Result<Run, AnalyzeError> {
    let input = |m: String| AnalyzeError::Input(m);
    if !dir.is_dir() {
        return Err(input(format!("{}: no such run directory", dir.display())));
    }
    let manifest = RunDir::at(dir).read_manifest().map_err(|e| input(e.to_string()))?;
    let (plan, _) = crate::plan::load_file(&dir.join("plan.resolved.toml"), &LoadOptions::default())
        .map_err(|d| input(format!("{}: {}", dir.join("plan.resolved.toml").display(), d)))?;
    let pq = dir.join("events.parquet");
    let jl = dir.join("events.jsonl");
    let fresh = pq.exists() && (!jl.exists() || mtime(&pq) >= mtime(&jl));
    let (events, source) = if fresh {
        let path = PlRefPath::new(pq.to_string_lossy().as_ref());
        let lf = LazyFrame::scan_parquet(path, ScanArgsParquet::default())
            .map_err(|e| input(format!("{}: unreadable: {e}", pq.display())))?;
        let n =
            lf.clone().select([len()]).collect().map_err(|e| input(format!("{}: unreadable: {e}", pq.display())))?;
        let events = frame::scalar(&n, "len").unwrap_or(0.0) as u64;
        (lf, SourceInfo { file: "events.parquet".into(), events, note: None })
    } else if jl.exists() {
        let why = if pq.exists() { "events.parquet is older than events.jsonl" } else { "events.parquet is missing" };
        let (df, report) = crate::events::parquet::jsonl_to_frame(&jl).map_err(|e| input(e.to_string()))?;
        let mut note = format!("{why} (an interrupted or crashed run?); read events.jsonl instead");
        if report.torn_tail_bytes > 0 {
            note.push_str(&format!("; skipped a torn last line of {} bytes", report.torn_tail_bytes));
        }
        (df.lazy(), SourceInfo { file: "events.jsonl".into(), events: report.events, note: Some(note) })
    } else {
        return Err(input(format!("{}: no events.parquet or events.jsonl", dir.display())));
    };
    Ok(Run { dir: dir.to_path_buf(), manifest, plan, events, source })
}

/// The run directories under `path`: itself if it is one, else its children that are, newest last.
pub fn find_runs(path: &Path) -> Result<Vec<PathBuf>, AnalyzeError> {
    if path.join("manifest.json").exists() {
        return Ok(vec![path.to_path_buf()]);
    }
    let rd = std::fs::read_dir(path).map_err(|e| AnalyzeError::Input(format!("{}: {e}", path.display())))?;
    let mut runs: Vec<(String, PathBuf)> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("manifest.json").exists())
        .filter_map(|p| Some((RunDir::at(&p).read_manifest().ok()?.started_at, p)))
        .collect();
    if runs.is_empty() {
        return Err(AnalyzeError::Input(format!(
            "{}: not a run directory and holds none (no manifest.json)",
            path.display()
        )));
    }
    runs.sort();
    Ok(runs.into_iter().map(|(_, p)| p).collect())
}

fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.3}").trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.4}").trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Evaluate every criterion of the run's plan in one polars pass over the events in memory.
pub fn evaluate(run: &Run, frame: &data::Frame) -> Result<Vec<CriterionResult>, AnalyzeError> {
    let all = run.plan.criteria();
    let mut parsed: Vec<(Scope, &crate::plan::Criterion, Result<Check, String>)> = Vec::new();
    let mut exprs = Vec::new();
    for (i, (scope, c)) in all.into_iter().enumerate() {
        match criteria::parse(&c.check.value) {
            Ok(check) => {
                let (value, support) = compile::compile(&check, frame.scope_mask(&scope));
                exprs.push(value.cast(DataType::Float64).alias(format!("v{i}")));
                exprs.push(support.cast(DataType::Float64).alias(format!("n{i}")));
                parsed.push((scope, c, Ok(check)));
            }
            Err(e) => parsed.push((scope, c, Err(e.message))),
        }
    }
    let df = if exprs.is_empty() { DataFrame::empty() } else { frame::stream(frame.df.clone().lazy().select(exprs))? };
    let mut out = Vec::new();
    for (i, (scope, c, check)) in parsed.into_iter().enumerate() {
        let level = match &scope {
            Scope::Plan => "plan",
            Scope::Phase(_) => "phase",
            Scope::Stage(..) => "stage",
        };
        let mut r = CriterionResult {
            check: c.check.value.clone(),
            scope: scope.to_string(),
            level: level.into(),
            status: "fail".into(),
            pass: false,
            observed: None,
            observed_text: "—".into(),
            op: String::new(),
            threshold: None,
            threshold_text: "—".into(),
            support: 0.0,
            margin: None,
            optional: c.optional,
            abort: c.abort,
            weight: c.weight,
            message: None,
        };
        let check = match check {
            Ok(ch) => ch,
            Err(e) => {
                r.message = Some(format!("does not parse: {e}"));
                out.push(r);
                continue;
            }
        };
        r.op = check.op.as_str().into();
        let threshold = threshold(&check, &run.plan);
        // Durations (written, or a duration var) compare in milliseconds.
        let unit_ms = match &check.rhs {
            Rhs::Ms(_) => true,
            Rhs::Var(v) => run.plan.var(v).is_some_and(|x| x.value.is_string()),
            Rhs::Num(_) => false,
        };
        r.threshold = threshold;
        r.threshold_text = match (threshold, unit_ms) {
            (Some(t), true) => format!("{} ms", fmt_num(t)),
            (Some(t), false) => fmt_num(t),
            (None, _) => "?".into(),
        };
        let observed = frame::scalar(&df, &format!("v{i}"));
        r.support = frame::scalar(&df, &format!("n{i}")).unwrap_or(0.0);
        r.observed = observed;
        // Support is the matched rows, or for counts and rates the scope's rows: a count of zero
        // in a scope that has events is data; an empty scope is not.
        let no_data = observed.is_none() || r.support == 0.0;
        match (no_data, threshold) {
            (_, None) => {
                r.message = Some("the var it compares with is missing".into());
            }
            (true, _) => {
                r.status = if c.optional { "skipped".into() } else { "no_data".into() };
                r.pass = c.optional;
                r.message = Some("no matching events in scope".into());
            }
            (false, Some(t)) => {
                let v = observed.unwrap_or(f64::NAN);
                r.observed_text = if unit_ms { format!("{} ms", fmt_num(v)) } else { fmt_num(v) };
                r.pass = check.op.holds(v, t);
                r.status = if r.pass { "pass".into() } else { "fail".into() };
                if r.pass && t != 0.0 && matches!(check.op, Cmp::Lt | Cmp::Le | Cmp::Gt | Cmp::Ge) {
                    r.margin = Some(((t - v) / t).abs());
                }
            }
        }
        out.push(r);
    }
    Ok(out)
}

fn confidence(criteria: &[&CriterionResult]) -> Option<f64> {
    let total: f64 = criteria.iter().filter(|c| c.status != "skipped").map(|c| c.weight).sum();
    (total > 0.0).then(|| criteria.iter().filter(|c| c.status == "pass").map(|c| c.weight).sum::<f64>() / total)
}

/// The SQL queries of a run: the shipped ones, then `--analysis` dirs and the plan's (a later
/// query of the same name replaces an earlier one). Each is (name, source, SQL).
fn queries(run: &Run, opts: &AnalyzeOptions) -> Result<Vec<(String, String, String)>, AnalyzeError> {
    let mut queries: Vec<(String, String, String)> = sql::SHIPPED
        .iter()
        .map(|(n, s)| (n.to_string(), format!("analysis/{n}.sql (built in)"), s.to_string()))
        .collect();
    let mut extra_files = Vec::new();
    for d in &opts.analysis_dirs {
        extra_files.extend(sql::from_dir(d).map_err(AnalyzeError::Input)?);
    }
    for q in &run.plan.analysis.queries {
        let p = PathBuf::from(q);
        let name = p.file_stem().and_then(|s| s.to_str()).unwrap_or("query").to_string();
        extra_files.push((name, p));
    }
    for (name, path) in extra_files {
        match std::fs::read_to_string(&path) {
            Ok(sql) => {
                queries.retain(|(n, _, _)| *n != name);
                queries.push((name, path.display().to_string(), sql));
            }
            Err(e) => queries.push((name, path.display().to_string(), format!("-- unreadable: {e}"))),
        }
    }
    Ok(queries)
}

/// The whole analysis of one run.
pub fn analyze(run: &Run, opts: &AnalyzeOptions) -> Result<Report, AnalyzeError> {
    let m = &run.manifest;
    let mut timer = metrics::Timer::new();
    let queries = queries(run, opts)?;
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

    let stages: Vec<StageResult> = m
        .stages
        .iter()
        .map(|r| {
            let scope = format!("{}/{}", r.phase, r.stage);
            let mine: Vec<&CriterionResult> = criteria.iter().filter(|c| c.scope == scope).collect();
            StageResult {
                phase: r.phase.clone(),
                stage: r.stage.clone(),
                driver: r.driver.clone(),
                status: r.status.as_str().into(),
                ok: r.status.is_success(),
                message: r.message.clone(),
                duration_ms: r.t_start_ms.zip(r.t_end_ms).map(|(a, b)| b - a),
                events: r.events,
                confidence: confidence(&mine),
            }
        })
        .collect();

    let all: Vec<&CriterionResult> = criteria.iter().collect();
    let stage_share =
        if stages.is_empty() { 1.0 } else { stages.iter().filter(|s| s.ok).count() as f64 / stages.len() as f64 };
    let conf = confidence(&all).unwrap_or(stage_share);
    let threshold = run.plan.meta.pass_threshold.unwrap_or(DEFAULT_THRESHOLD);
    let mut reasons = Vec::new();
    for c in criteria.iter().filter(|c| !c.pass) {
        let why = match c.status.as_str() {
            "no_data" => "no data".to_string(),
            _ => format!("observed {}", c.observed_text),
        };
        reasons.push(format!("criterion `{}` ({}) failed: {why}", c.check, c.scope));
    }
    for s in stages.iter().filter(|s| !s.ok) {
        reasons.push(format!(
            "stage {}/{} {}{}",
            s.phase,
            s.stage,
            s.status,
            s.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
        ));
    }
    let incomplete = matches!(m.status, RunStatus::Interrupted | RunStatus::Running);
    if incomplete {
        reasons.insert(0, format!("the run did not finish ({})", m.status.as_str()));
    }
    let pass = reasons.is_empty();
    let verdict = Verdict {
        pass,
        label: if pass {
            "PASS"
        } else if incomplete {
            "INCOMPLETE"
        } else {
            "FAIL"
        }
        .into(),
        reasons,
        confidence: conf,
        threshold,
        confidence_pass: conf >= threshold,
        criteria_total: criteria.len(),
        criteria_passed: criteria.iter().filter(|c| c.status == "pass").count(),
        criteria_failed: criteria.iter().filter(|c| c.status == "fail").count(),
        criteria_no_data: criteria.iter().filter(|c| c.status == "no_data").count(),
    };

    let findings = findings::find(&metrics, &criteria);

    let baseline = match &opts.baseline {
        Some(b) => {
            let base = load_run(b)?;
            let bm = metrics::compute(&data::Frame::load(&base.events, &[])?, &base.manifest)?;
            let tol = opts.tolerance.or(run.plan.meta.regression_tolerance).unwrap_or(DEFAULT_TOLERANCE);
            Some(baseline::compare(&metrics, &bm, &b.display().to_string(), tol))
        }
        None => None,
    };

    let stage_df = df!(
        "phase" => m.stages.iter().map(|s| s.phase.as_str()).collect::<Vec<_>>(),
        "stage" => m.stages.iter().map(|s| s.stage.as_str()).collect::<Vec<_>>(),
        "driver" => m.stages.iter().map(|s| s.driver.as_str()).collect::<Vec<_>>(),
        "status" => m.stages.iter().map(|s| s.status.as_str()).collect::<Vec<_>>(),
        "t_start_ms" => m.stages.iter().map(|s| s.t_start_ms).collect::<Vec<_>>(),
        "t_end_ms" => m.stages.iter().map(|s| s.t_end_ms).collect::<Vec<_>>(),
        "events" => m.stages.iter().map(|s| s.events).collect::<Vec<_>>(),
    )?;
    timer.lap("findings");
    let tables = sql::run_all(&frame.events(), &stage_df, &queries);
    timer.lap("sql");

    let duration_s = m.ended_at.as_deref().and_then(|end| {
        let a = chrono::DateTime::parse_from_rfc3339(&m.started_at).ok()?;
        let b = chrono::DateTime::parse_from_rfc3339(end).ok()?;
        Some((b - a).num_milliseconds() as f64 / 1000.0)
    });
    Ok(Report {
        planrun_version: env!("CARGO_PKG_VERSION").into(),
        generated_at: crate::rundir::now_rfc3339(),
        run: RunInfo {
            dir: run.dir.display().to_string(),
            plan: m.plan.name.clone(),
            description: run.plan.meta.description.clone(),
            status: m.status.as_str().into(),
            profile: m.profile.clone(),
            seed: m.seed,
            time_scale: m.time_scale,
            clock: m.clock.to_string(),
            started_at: m.started_at.clone(),
            ended_at: m.ended_at.clone(),
            duration_s,
            resumes: m.resumes,
            message: m.message.clone(),
            host: m.host.clone(),
            vars: m.vars.clone(),
            planrun_version: m.planrun_version.clone(),
        },
        source: SourceInfo { file: run.source.file.clone(), events: run.source.events, note: run.source.note.clone() },
        verdict,
        criteria,
        stages,
        metrics,
        findings,
        baseline,
        tables,
        comparison: Vec::new(),
    })
}

/// One comparison row per run for `--all`.
pub fn comparison_row(r: &Report) -> frame::Row {
    let mut row = frame::Row::new();
    row.insert("dir".into(), r.run.dir.clone().into());
    row.insert("plan".into(), r.run.plan.clone().into());
    row.insert("started_at".into(), r.run.started_at.clone().into());
    row.insert("verdict".into(), r.verdict.label.clone().into());
    row.insert("confidence".into(), num(r.verdict.confidence));
    for k in ["count", "success_rate", "throughput", "latency_p50", "latency_p95", "latency_p99", "cost_usd"] {
        row.insert(k.into(), get_f64(&r.metrics.plan, k).map_or(serde_json::Value::Null, num));
    }
    row
}
