//! The run's events in memory, read once for the whole analysis: the event columns that
//! metrics, criteria and SQL queries name, per-row flags, and integer group codes. Codes are
//! categorical ids (one mapping per key column) packed into one integer per level — phase,
//! stage, (kind, name) — because polars groups and compares integers far faster than strings.

use polars::prelude::*;

use super::compile::{data_mask, timeout_mask};
use super::frame::stream;
use crate::plan::Scope;

/// Event columns the metrics read.
pub const METRIC_COLUMNS: &[&str] = &[
    "phase",
    "stage",
    "kind",
    "name",
    "agent",
    "ok",
    "latency_ms",
    "value",
    "unit",
    "error",
    "cost_usd",
    "tokens_in",
    "tokens_out",
    "t_ms",
];

/// The run's events in memory, read once: every row (stage markers included) with the event
/// columns the analysis needs, per-row flags and integer group codes. Metrics, criteria and the
/// SQL tables all run on it instead of decoding the Parquet again.
pub struct Frame {
    /// Event columns (schema order), then the boolean flags `_data` (not a stage marker), `_ok`,
    /// `_failed` and `_timeout`, and the group codes `_pid` (phase), `_sid`
    /// (phase, stage), `_nid` (phase, stage, kind, name) and `_aid` (agent).
    pub df: DataFrame,
    /// The event columns it holds, in schema order: what SQL queries see as `events`.
    pub columns: Vec<String>,
    /// Code ↔ string for phase, stage, kind, name and agent.
    maps: [Arc<CategoricalMapping>; 5],
    /// Bits of the stage code inside `_sid`.
    stage_bits: u32,
    /// Bits of `_sid`.
    pub sid_bits: u32,
}

/// Bits needed for codes below `n`.
fn bits(n: usize) -> u32 {
    (usize::BITS - n.leading_zeros()).max(1)
}

impl Frame {
    /// Read `events` into memory with the metric columns and `extra` ones (those criteria and
    /// SQL queries name). The streaming engine decodes the Parquet on every core; the codes are
    /// categorical ids packed into one integer per level, which groups and compares far faster
    /// than strings.
    pub fn load(events: &LazyFrame, extra: &[String]) -> PolarsResult<Frame> {
        let schema = events.clone().collect_schema()?;
        let columns: Vec<String> = schema
            .iter_names()
            .filter(|n| METRIC_COLUMNS.contains(&n.as_str()) || extra.iter().any(|e| e == n.as_str()))
            .map(|n| n.to_string())
            .collect();
        let mut df = stream(
            events.clone().select(columns.iter().map(|c| col(c.as_str())).collect::<Vec<_>>()).with_columns(flags()),
        )?;
        // A null name codes apart from an empty one.
        let name = col("name").fill_null(lit("\u{0}"));
        let keys = [col("phase"), col("stage"), col("kind"), name.clone(), col("agent")];
        // One categorical mapping per key column; holding them keeps the ids valid.
        let mut cats = Vec::new();
        let mut exprs = Vec::new();
        for (i, k) in keys.into_iter().enumerate() {
            let c = Categories::random("planrun".into(), CategoricalPhysical::U32);
            cats.push(c.mapping());
            exprs.push(
                k.cast(DataType::from_categories(c)).to_physical().cast(DataType::UInt64).alias(format!("_c{i}")),
            );
        }
        let maps: [Arc<CategoricalMapping>; 5] = cats.try_into().map_err(|_| polars_err!(ComputeError: "codes"))?;
        df = df.lazy().with_columns(exprs).collect()?;
        let b: Vec<u32> = maps.iter().map(|m| bits(m.num_cats_upper_bound())).collect();
        let shl = |e: Expr, n: u32| e * lit(1u64 << n);
        let sid = shl(col("_c0"), b[1]) + col("_c1");
        let nid = if b[0] + b[1] + b[2] + b[3] <= 64 {
            shl(shl(sid.clone(), b[2]) + col("_c2"), b[3]) + col("_c3")
        } else {
            // Too many distinct values to pack: code the joined strings instead.
            let cats = Categories::random("planrun".into(), CategoricalPhysical::U32);
            let _keep = cats.mapping();
            let joined = concat_str([col("phase"), col("stage"), col("kind"), name], "\u{1f}", false);
            let code = joined.cast(DataType::from_categories(cats)).to_physical().cast(DataType::UInt64);
            df = df.lazy().with_column(code.alias("_nid")).collect()?;
            col("_nid")
        };
        df = df
            .lazy()
            .with_columns([
                col("_c0").cast(DataType::UInt32).alias("_pid"),
                sid.alias("_sid"),
                nid.alias("_nid"),
                col("_c4").cast(DataType::UInt32).alias("_aid"),
            ])
            .collect()?
            .drop_many(["_c0", "_c1", "_c2", "_c3", "_c4"]);
        Ok(Frame { df, columns, maps, stage_bits: b[1], sid_bits: b[0] + b[1] })
    }

    /// The measurement rows (stage markers dropped), lazily.
    pub fn data(&self) -> LazyFrame {
        self.df.clone().lazy().filter(col("_data"))
    }

    /// The event columns only, as SQL queries see them.
    pub fn events(&self) -> LazyFrame {
        self.df.clone().lazy().select(self.columns.iter().map(|c| col(c.as_str())).collect::<Vec<_>>())
    }

    /// The code of a phase (None: no event has it).
    pub fn phase_code(&self, phase: &str) -> Option<u32> {
        self.maps[0].get_cat(phase)
    }

    /// The code of a stage (None: no event has it).
    pub fn stage_code(&self, phase: &str, stage: &str) -> Option<u64> {
        let p = self.maps[0].get_cat(phase)? as u64;
        let s = self.maps[1].get_cat(stage)? as u64;
        Some((p << self.stage_bits) | s)
    }

    /// Rows of a scope, by code: what criteria use instead of comparing strings on every row.
    pub fn scope_mask(&self, scope: &Scope) -> Expr {
        match scope {
            Scope::Plan => lit(true),
            Scope::Phase(p) => self.phase_code(p).map_or(lit(false), |c| col("_pid").eq(lit(c))),
            Scope::Stage(p, s) => self.stage_code(p, s).map_or(lit(false), |c| col("_sid").eq(lit(c))),
        }
    }
}

/// Per-row flags computed once, so that every level sums plain integer columns (group sums of
/// derived boolean expressions are several times slower).
fn flags() -> Vec<Expr> {
    vec![
        data_mask().alias("_data"),
        col("ok").eq(lit(true)).fill_null(lit(false)).alias("_ok"),
        col("ok").eq(lit(false)).fill_null(lit(false)).alias("_failed"),
        timeout_mask().alias("_timeout"),
    ]
}
