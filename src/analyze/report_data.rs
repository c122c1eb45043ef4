//! The data every report template renders: one serializable tree, documented field by field in
//! docs/templates.md. Nothing here formats text; templates do.

use serde::Serialize;

use super::baseline::Baseline;
use super::findings::Finding;
use super::metrics::Metrics;
use super::sql::Table;
use crate::rundir::{Build, Host, RunStatus, StageStatus};

#[derive(Debug, Serialize)]
pub struct Report {
    pub planrun_version: String,
    pub generated_at: String,
    pub run: RunInfo,
    pub source: SourceInfo,
    pub verdict: Verdict,
    pub criteria: Vec<CriterionResult>,
    pub stages: Vec<StageResult>,
    pub metrics: Metrics,
    /// Series over time for the charts (report.html, the live dashboard).
    pub charts: super::charts::Charts,
    /// Each `bench` stage's statistics and speed-ups.
    pub bench: Vec<super::bench::BenchStage>,
    pub findings: Vec<Finding>,
    pub baseline: Option<Baseline>,
    pub tables: Vec<Table>,
    /// With `--all`: one row per run analyzed.
    pub comparison: Vec<ComparisonRow>,
    /// Locust's CSV tables, when `--format locust-csv` asked for them.
    pub locust: Option<super::locust::Locust>,
}

impl Report {
    /// What report.html's script draws and the live dashboard pushes — one shape for both, made
    /// here only: the charts (or `charts`, a live run's), criteria, stages, verdict, metrics per
    /// stage and per name, and the budget.
    pub fn page_data(&self, charts: Option<serde_json::Value>) -> serde_json::Value {
        let charts = charts.unwrap_or_else(|| serde_json::to_value(&self.charts).unwrap_or_default());
        serde_json::json!({
            "charts": charts,
            "criteria": &self.criteria,
            "stages": &self.stages,
            "verdict": &self.verdict,
            "names": &self.metrics.names,
            "metrics_stages": &self.metrics.stages,
            "budget_usd": self.run.budget_usd,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct RunInfo {
    pub dir: String,
    pub plan: String,
    pub description: Option<String>,
    /// The plan's spending limit (`budget_usd`), if it has one.
    pub budget_usd: Option<f64>,
    pub status: RunStatus,
    pub profile: Option<String>,
    pub seed: u64,
    pub time_scale: f64,
    pub clock: String,
    /// Which build of planrun ran it (`debug` or `release`).
    pub build: Build,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub duration_s: Option<f64>,
    pub resumes: u32,
    pub message: Option<String>,
    pub host: Host,
    pub vars: serde_json::Map<String, serde_json::Value>,
    pub planrun_version: String,
}

#[derive(Debug, Serialize)]
pub struct SourceInfo {
    /// `events.parquet` or `events.jsonl`.
    pub file: String,
    pub events: u64,
    pub note: Option<String>,
    /// Stages that recorded less than one event per unit of work, and what they kept instead
    /// (`http` stages with `record = "summary"` or a sample).
    pub recording: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Verdict {
    pub pass: bool,
    pub label: Label,
    /// Why it is not a pass, in a few words (null on a pass): e.g. `stage load/probe failed; 1
    /// criterion failed`. The verdict line shows it beside the label.
    pub cause: Option<String>,
    /// Why it is not a pass, one line each.
    pub reasons: Vec<String>,
    /// Weighted share of criteria passing (0–1); the share of stages that did what they were for
    /// when the plan has no criteria. Shown against `threshold`; it does not decide the verdict
    /// (a pass needs every criterion and every stage to pass).
    pub confidence: f64,
    pub threshold: f64,
    pub confidence_pass: bool,
    pub criteria_total: usize,
    pub criteria_passed: usize,
    pub criteria_failed: usize,
    pub criteria_no_data: usize,
    /// Optional criteria without data: neither pass nor fail.
    pub criteria_skipped: usize,
    /// `criteria` (the weighted share of all criteria) or `phases` (the mean of `components`).
    pub confidence_rule: crate::plan::ConfidenceRule,
    /// Each phase's confidence: the weighted share of its own and its stages' criteria passing
    /// (the share of its stages passing when it has no criteria).
    pub components: Vec<Component>,
}

/// One phase's confidence, for the per-component table.
#[derive(Clone, Debug, Serialize)]
pub struct Component {
    pub phase: String,
    pub confidence: f64,
    pub pass: bool,
    pub criteria_total: usize,
    pub criteria_passed: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct CriterionResult {
    pub check: String,
    /// `plan`, a phase name, or `phase/stage`.
    pub scope: String,
    pub level: Level,
    pub status: CriterionStatus,
    pub pass: bool,
    pub observed: Option<f64>,
    pub observed_text: String,
    pub op: String,
    pub threshold: Option<f64>,
    pub threshold_text: String,
    /// Rows the criterion looked at.
    pub support: f64,
    /// How far inside its limit a passing criterion is, relative to the limit.
    pub margin: Option<f64>,
    pub optional: bool,
    pub abort: bool,
    pub weight: f64,
    pub message: Option<String>,
}

/// A criterion's outcome, written as `pass`, `fail`, `no_data` or `skipped`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CriterionStatus {
    Pass,
    Fail,
    /// No matching events in scope: a failure, unless the criterion is optional.
    NoData,
    /// An optional criterion without data: neither passes nor fails, and weighs nothing.
    Skipped,
}

/// Where a criterion is declared: `plan`, `phase` or `stage`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Plan,
    Phase,
    Stage,
}

/// The run's verdict: `PASS`, `FAIL` or `INCOMPLETE` (the run did not finish).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Label {
    Pass,
    Fail,
    Incomplete,
}

impl Label {
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Pass => "PASS",
            Label::Fail => "FAIL",
            Label::Incomplete => "INCOMPLETE",
        }
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a stage counts, from its status: it did its job (`passed`: passed, budget_exceeded),
/// the system under test failed it (`failed`: failed, aborted), planrun could not carry it out
/// (`error`: error, timed_out, interrupted), or it never ran (`skipped`: skipped after an
/// earlier failure, or pending). JUnit writes these as no element, `<failure>`, `<error>` and
/// `<skipped/>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageOutcome {
    Passed,
    Failed,
    Error,
    Skipped,
}

#[derive(Debug, Serialize)]
pub struct StageResult {
    pub phase: String,
    pub stage: String,
    pub driver: String,
    pub status: StageStatus,
    /// The stage did what it was for (passed, or stopped at its budget).
    pub ok: bool,
    /// How the stage counts in JUnit and the verdict line.
    pub outcome: StageOutcome,
    pub message: Option<String>,
    pub duration_ms: Option<f64>,
    pub events: u64,
    /// Weighted share of this stage's criteria passing; null without criteria.
    pub confidence: Option<f64>,
}

/// One run in the comparison `analyze --all` writes: its verdict and plan-level figures.
#[derive(Clone, Debug, Serialize)]
pub struct ComparisonRow {
    pub dir: String,
    pub plan: String,
    pub started_at: String,
    pub verdict: Label,
    pub confidence: f64,
    pub count: u64,
    pub success_rate: Option<f64>,
    pub throughput: Option<f64>,
    pub latency_p50: Option<f64>,
    pub latency_p95: Option<f64>,
    pub latency_p99: Option<f64>,
    pub cost_usd: Option<f64>,
}
