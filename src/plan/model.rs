//! The typed plan model every later pass works on: metadata, typed vars, phases of stages, each
//! stage's driver already parsed into its own config type. Two syntaxes load into these same
//! types; `Plan::canonical` is the syntax-free form used to compare them and to write
//! `plan.resolved.toml`. Loading and validation live in `load`; this file only defines shapes.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::duration::Dur;
use super::node::Node;
use super::spanned::Spanned;
use super::vars::Var;

/// Which clock a run uses: real time (optionally scaled), or tokio's paused clock, where
/// simulated stages run days of plan time in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClockKind {
    #[default]
    Real,
    Virtual,
}

impl ClockKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClockKind::Real => "real",
            ClockKind::Virtual => "virtual",
        }
    }
}

impl std::fmt::Display for ClockKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run's confidence is made (`[plan] confidence`): the weighted share of all its criteria
/// passing (`criteria`, the default), or the mean of each phase's confidence (`phases`: the
/// 1000-agent suite's "(fleet + redis + dashboard + commands) / 4", a phase per component).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfidenceRule {
    #[default]
    Criteria,
    Phases,
}

impl ConfidenceRule {
    fn is_default(&self) -> bool {
        *self == ConfidenceRule::Criteria
    }
}

/// The `[plan]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default)]
    pub clock: ClockKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub criteria: Vec<Criterion>,
    /// Confidence at or above which the run passes (0–1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_threshold: Option<f64>,
    /// How the run's confidence is made: from all criteria, or as the mean of the phases'.
    #[serde(default, skip_serializing_if = "ConfidenceRule::is_default")]
    pub confidence: ConfidenceRule,
    /// Relative change counted as a regression against a baseline run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regression_tolerance: Option<f64>,
    /// Spending limit for the whole run (drivers that cost money stop before passing it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
}

/// An acceptance criterion: a bare string, or a table with options.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Criterion {
    pub check: Spanned<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub abort: bool,
    #[serde(skip_serializing_if = "is_one")]
    pub weight: f64,
    /// The file it was written in, when that is an included plan (`include`), for diagnostics.
    #[serde(skip)]
    pub origin: Origin,
}

/// The plan file an included criterion comes from. Where a criterion was written does not
/// change what it is: any two are equal.
#[derive(Clone, Debug, Default)]
pub struct Origin(pub Option<crate::diag::Source>);

impl PartialEq for Origin {
    fn eq(&self, _: &Origin) -> bool {
        true
    }
}

fn is_one(w: &f64) -> bool {
    *w == 1.0
}

impl<'de> Deserialize<'de> for Criterion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            check: String,
            #[serde(default)]
            optional: bool,
            #[serde(default)]
            abort: bool,
            #[serde(default = "one")]
            weight: f64,
        }
        fn one() -> f64 {
            1.0
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Short(String),
            Full(Full),
        }
        // The span is taken around the whole criterion: `untagged` buffers its input and would
        // drop spans taken inside it.
        let form = Spanned::<Form>::deserialize(d)?;
        let span = form.span;
        Ok(match form.value {
            Form::Short(check) => Criterion {
                check: Spanned { span, value: check },
                optional: false,
                abort: false,
                weight: 1.0,
                origin: Origin::default(),
            },
            Form::Full(f) => Criterion {
                check: Spanned { span, value: f.check },
                optional: f.optional,
                abort: f.abort,
                weight: f.weight,
                origin: Origin::default(),
            },
        })
    }
}

/// Optional analysis settings: extra SQL queries to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AnalysisConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queries: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(bound(serialize = "D: StageDriver"))]
pub struct Phase<D: StageDriver = RawDriver> {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub criteria: Vec<Criterion>,
    #[serde(rename = "stage")]
    pub stages: Vec<Stage<D>>,
}

/// Fields every stage has, whatever its driver. Everything else in a stage table belongs to
/// the driver.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageCommon {
    pub name: String,
    pub driver: Spanned<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    #[serde(default = "one_u32", skip_serializing_if = "is_one_u32")]
    pub repeat: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continue_on_failure: bool,
    /// Go on repeating after a failed iteration (like `make -k`); the stage then fails only if
    /// every iteration failed, and criteria judge the failure rate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_going: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub criteria: Vec<Criterion>,
}

fn one_u32() -> u32 {
    1
}

fn is_one_u32(n: &u32) -> bool {
    *n == 1
}

/// A problem a driver found in its stage's fields. `key` is the path to the offending value
/// (`["agent", "2", "provider"]`: table keys and array indexes), so the loader's caret lands on
/// it; an empty path points at the whole stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub key: Vec<String>,
    pub message: String,
}

impl FieldError {
    pub fn new(message: impl Into<String>) -> FieldError {
        FieldError { key: Vec::new(), message: message.into() }
    }

    /// Point at the value under `path` in the stage's table.
    pub fn at<S: ToString>(mut self, path: &[S]) -> FieldError {
        self.key = path.iter().map(ToString::to_string).collect();
        self
    }
}

impl From<String> for FieldError {
    fn from(message: String) -> FieldError {
        FieldError::new(message)
    }
}

impl From<&str> for FieldError {
    fn from(message: &str) -> FieldError {
        FieldError::new(message)
    }
}

pub const STAGE_COMMON_KEYS: &[&str] = &[
    "name",
    "driver",
    "description",
    "duration",
    "timeout",
    "repeat",
    "pause",
    "parallel",
    "continue_on_failure",
    "keep_going",
    "criteria",
];

/// What the plan needs to know of a stage's driver, whatever it is. The drivers implement it
/// (`crate::drivers`); the plan never names one. A plan loaded without the driver registry
/// (the analysis reading `plan.resolved.toml`) keeps each stage's driver fields as `RawDriver`.
pub trait StageDriver: std::fmt::Debug + Send + Sync {
    /// The driver's own fields, as plain data (for `plan.resolved.toml` and model equality).
    fn config(&self) -> serde_json::Value;

    /// One line for `plan show` and `--dry-run`.
    fn describe(&self) -> String;

    /// True when the driver touches nothing real (no processes, files or network), so it may
    /// run under the virtual clock.
    fn simulated(&self) -> bool {
        false
    }

    /// Checks that need the stage's common fields (e.g. a required `duration`).
    fn check(&self, _stage: &StageCommon) -> Result<(), FieldError> {
        Ok(())
    }
}

impl<T: StageDriver + ?Sized> StageDriver for Arc<T> {
    fn config(&self) -> serde_json::Value {
        (**self).config()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn simulated(&self) -> bool {
        (**self).simulated()
    }
    fn check(&self, stage: &StageCommon) -> Result<(), FieldError> {
        (**self).check(stage)
    }
}

/// A stage's driver fields as written, not yet given to a driver.
#[derive(Clone, Debug, PartialEq)]
pub struct RawDriver {
    pub fields: serde_json::Value,
}

impl RawDriver {
    pub fn new(fields: &Node) -> RawDriver {
        RawDriver { fields: fields.to_json() }
    }
}

impl StageDriver for RawDriver {
    fn config(&self) -> serde_json::Value {
        self.fields.clone()
    }

    fn describe(&self) -> String {
        String::new()
    }
}

#[derive(Clone, Debug)]
pub struct Stage<D = RawDriver> {
    pub common: StageCommon,
    pub driver: D,
}

impl<D: StageDriver> Stage<D> {
    pub fn name(&self) -> &str {
        &self.common.name
    }

    pub fn driver_name(&self) -> &str {
        &self.common.driver.value
    }

    /// Common fields and driver fields in one flat table, as written in a plan.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.common).unwrap_or_default();
        if let (Some(obj), serde_json::Value::Object(cfg)) = (v.as_object_mut(), self.driver.config()) {
            obj.extend(cfg);
        }
        v
    }
}

impl<D: StageDriver> PartialEq for Stage<D> {
    fn eq(&self, other: &Self) -> bool {
        self.common == other.common && self.driver.config() == other.driver.config()
    }
}

impl<D: StageDriver> Serialize for Stage<D> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

#[derive(Clone, Debug)]
pub struct Plan<D: StageDriver = RawDriver> {
    pub meta: Meta,
    /// Vars after profile and `--set` overrides, in declaration order.
    pub vars: Vec<(String, Var)>,
    /// Profile names the plan declares (the chosen one is already applied to `vars`).
    pub profiles: Vec<String>,
    pub profile: Option<String>,
    pub phases: Vec<Phase<D>>,
    pub analysis: AnalysisConfig,
}

impl<D: StageDriver> PartialEq for Phase<D> {
    fn eq(&self, o: &Self) -> bool {
        (&self.name, &self.label, &self.description, &self.criteria, &self.stages)
            == (&o.name, &o.label, &o.description, &o.criteria, &o.stages)
    }
}

impl<D: StageDriver> PartialEq for Plan<D> {
    fn eq(&self, o: &Self) -> bool {
        (&self.meta, &self.vars, &self.profiles, &self.profile, &self.phases, &self.analysis)
            == (&o.meta, &o.vars, &o.profiles, &o.profile, &o.phases, &o.analysis)
    }
}

impl<D: StageDriver> Plan<D> {
    pub fn stages(&self) -> impl Iterator<Item = (&Phase<D>, &Stage<D>)> {
        self.phases.iter().flat_map(|p| p.stages.iter().map(move |s| (p, s)))
    }

    pub fn var(&self, name: &str) -> Option<&Var> {
        self.vars.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Syntax-free form: equal for a TOML plan and its KDL twin, and what `plan.resolved.toml`
    /// holds. Templates are resolved and the chosen profile is applied, so the resolved plan
    /// declares no profiles.
    pub fn canonical(&self) -> serde_json::Value {
        let vars: serde_json::Map<_, _> = self.vars.iter().map(|(n, v)| (n.clone(), v.to_json())).collect();
        let mut out = serde_json::json!({
            "plan": self.meta,
            "vars": vars,
            "phase": self.phases,
        });
        if !self.analysis.queries.is_empty() {
            out["analysis"] = serde_json::to_value(&self.analysis).unwrap_or_default();
        }
        out
    }

    /// All criteria with their scope, in plan order: plan, then each phase, then its stages.
    pub fn criteria(&self) -> Vec<(Scope, &Criterion)> {
        let mut out: Vec<(Scope, &Criterion)> = self.meta.criteria.iter().map(|c| (Scope::Plan, c)).collect();
        for p in &self.phases {
            out.extend(p.criteria.iter().map(|c| (Scope::Phase(p.name.clone()), c)));
            for s in &p.stages {
                let scope = Scope::Stage(p.name.clone(), s.name().to_string());
                out.extend(s.common.criteria.iter().map(|c| (scope.clone(), c)));
            }
        }
        out
    }

    /// Total plan time of stages with a known duration (unscaled), for ETAs and `plan show`.
    pub fn expected_duration(&self) -> std::time::Duration {
        let mut total = std::time::Duration::ZERO;
        for p in &self.phases {
            let mut groups: BTreeMap<&str, std::time::Duration> = BTreeMap::new();
            for s in &p.stages {
                let d = s.expected_duration();
                match &s.common.parallel {
                    Some(g) => {
                        let e = groups.entry(g.as_str()).or_default();
                        *e = (*e).max(d);
                    }
                    None => total = total.saturating_add(d),
                }
            }
            total = groups.values().fold(total, |t, d| t.saturating_add(*d));
        }
        total
    }
}

impl<D: StageDriver> Stage<D> {
    /// Plan time this stage is expected to take: its duration times its repeats, plus pauses.
    pub fn expected_duration(&self) -> std::time::Duration {
        let one = self.common.duration.map(|d| d.0).unwrap_or_default();
        let pause = self.common.pause.map(|d| d.0).unwrap_or_default();
        let n = self.common.repeat.max(1);
        // Saturating: the loader refuses a stage this long, but a plan built in code may not be checked.
        one.saturating_mul(n).saturating_add(pause.saturating_mul(n - 1))
    }
}

/// Where a criterion applies.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    Plan,
    Phase(String),
    Stage(String, String),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Plan => f.write_str("plan"),
            Scope::Phase(p) => write!(f, "{p}"),
            Scope::Stage(p, s) => write!(f, "{p}/{s}"),
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
