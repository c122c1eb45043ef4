//! What a parsed criterion is: the columns criteria may name (`fields`, from the event schema), the aggregates with
//! their options, named metrics, filters, comparisons and thresholds. Pure data and the few
//! facts about it both evaluators need (a comparison's truth, an aggregate's defaults); turning
//! text into these types is `parser`'s job, evaluating them is the analysis's (polars) and the
//! runner's (live abort checks).

use std::fmt;

use crate::events::COLUMNS;
use crate::events::schema::{Kind, column};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    Num,
    Str,
    Bool,
}

impl FieldKind {
    /// How criteria see a column of the event schema; the wall-clock `ts` is not one they name.
    fn of(kind: Kind) -> Option<FieldKind> {
        match kind {
            Kind::U64 | Kind::F64 | Kind::I64 => Some(FieldKind::Num),
            Kind::Str => Some(FieldKind::Str),
            Kind::Bool => Some(FieldKind::Bool),
            Kind::Time => None,
        }
    }
}

/// The columns criteria can name, with their kind (for type checks): the event schema's, in
/// its order.
pub fn fields() -> Vec<(&'static str, FieldKind)> {
    COLUMNS.iter().filter_map(|c| FieldKind::of(c.kind).map(|k| (c.name, k))).collect()
}

pub fn field_kind(name: &str) -> Option<FieldKind> {
    column(name).and_then(|c| FieldKind::of(c.kind))
}

/// The share of a series' time span that `growth` treats as warm-up unless told otherwise
/// (`docs/criteria.md`, "growth and warm-up").
pub const DEFAULT_WARMUP: f64 = 0.25;

#[derive(Clone, Debug, PartialEq)]
pub enum Agg {
    Count,
    Sum,
    Mean,
    Min,
    Max,
    Stddev,
    /// stddev / mean, or stddev / `floor` while the mean is below `floor` (0: no floor).
    Cov {
        floor: f64,
    },
    /// Quantile in 0..=1.
    Quantile(f64),
    /// A quantile (0..=1) divided by the mean: `tail(95, latency_ms) < 2` is "p95 under twice
    /// the average", the fleet suite's tail rule.
    Tail(f64),
    Rate,
    /// Change over the window of the line fitted after the first `warmup` share (0..1) of the
    /// series' time span: relative to the line's value at the start (`growth`), or in the
    /// field's own unit (`change`, e.g. bytes of memory).
    Growth {
        warmup: f64,
        relative: bool,
    },
    Slope,
}

impl Agg {
    /// `cov` without a noise floor.
    pub const COV: Agg = Agg::Cov { floor: 0.0 };
    /// `growth` with the default warm-up.
    pub const GROWTH: Agg = Agg::Growth { warmup: DEFAULT_WARMUP, relative: true };
    /// `change` with the default warm-up.
    pub const CHANGE: Agg = Agg::Growth { warmup: DEFAULT_WARMUP, relative: false };
}

/// Aggregate names, for help texts.
pub const AGGS: &[&str] = &[
    "count", "sum", "mean", "min", "max", "stddev", "cov", "p50", "p75", "p90", "p95", "p99", "p999", "p", "tail",
    "rate", "growth", "change", "slope", "ratio",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Named {
    SuccessRate,
    ErrorRate,
    TimeoutRate,
    Throughput,
    Crashes,
}

/// Named metric names, for help texts.
pub const NAMED: &[&str] = &["success_rate", "error_rate", "timeout_rate", "throughput", "crashes"];

impl Named {
    pub fn from_name(s: &str) -> Option<Named> {
        Some(match s {
            "success_rate" => Named::SuccessRate,
            "error_rate" => Named::ErrorRate,
            "timeout_rate" => Named::TimeoutRate,
            "throughput" => Named::Throughput,
            "crashes" => Named::Crashes,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Cmp {
    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
            Cmp::Eq => (a - b).abs() <= f64::EPSILON * a.abs().max(b.abs()).max(1.0),
            Cmp::Ne => a != b,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

impl fmt::Display for Lit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lit::Str(s) => write!(f, "{s:?}"),
            Lit::Num(n) => write!(f, "{n}"),
            Lit::Bool(b) => write!(f, "{b}"),
            Lit::Null => f.write_str("null"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Cmp {
        field: String,
        op: Cmp,
        lit: Lit,
    },
    In {
        field: String,
        list: Vec<Lit>,
    },
    /// A bare boolean column: `ok`.
    Truthy(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Lhs {
    Agg {
        agg: Agg,
        field: Option<String>,
        filter: Option<Filter>,
    },
    Named(Named),
    /// `ratio(A, B)`: the mean wall time of `bench` command A's successful runs over command
    /// B's (their `bench_run` rows): `ratio(baseline, candidate) > 40` is "the candidate is more
    /// than 40 times as fast as the baseline".
    Ratio {
        num: String,
        den: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Rhs {
    Num(f64),
    /// A duration, compared in milliseconds.
    Ms(f64),
    Var(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub lhs: Lhs,
    pub op: Cmp,
    pub rhs: Rhs,
}
