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

/// The key columns, in code order.
const KEYS: [&str; 5] = ["phase", "stage", "kind", "name", "agent"];

/// String columns held as categoricals.
const CATEGORICAL: [&str; 7] = ["phase", "stage", "kind", "name", "agent", "driver", "unit"];

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
        Frame::load_packing(events, extra, 64)
    }

    /// `load`, packing the (phase, stage, kind, name) code into `_nid` only within `pack_bits`
    /// bits (tests lower it to exercise the fallback).
    fn load_packing(events: &LazyFrame, extra: &[String], pack_bits: u32) -> PolarsResult<Frame> {
        let schema = events.clone().collect_schema()?;
        let columns: Vec<String> = schema
            .iter_names()
            .filter(|n| METRIC_COLUMNS.contains(&n.as_str()) || extra.iter().any(|e| e == n.as_str()))
            .map(|n| n.to_string())
            .collect();
        // The key columns (and other low-cardinality strings) become categorical — 4 bytes a row
        // instead of a 16-byte string view, cast while streaming so the strings are never all in
        // memory — each with its own mapping; holding the mappings keeps the ids valid.
        let cats: Vec<(String, Arc<Categories>)> = columns
            .iter()
            .filter(|c| CATEGORICAL.contains(&c.as_str()))
            .map(|c| (c.clone(), Categories::random("planrun".into(), CategoricalPhysical::U32)))
            .collect();
        let casts: Vec<Expr> =
            cats.iter().map(|(c, cat)| col(c.as_str()).cast(DataType::from_categories(cat.clone()))).collect();
        let _keep: Vec<Arc<CategoricalMapping>> = cats.iter().map(|(_, c)| c.mapping()).collect();
        let df = stream(
            events
                .clone()
                .select(columns.iter().map(|c| col(c.as_str())).collect::<Vec<_>>())
                .with_columns(flags())
                .with_columns(casts),
        )?;
        let map = |k: &str| cats.iter().find(|(c, _)| c == k).map(|(_, c)| c.mapping());
        let maps: [Arc<CategoricalMapping>; 5] = std::array::from_fn(|i| {
            map(KEYS[i]).unwrap_or_else(|| Categories::random("planrun".into(), CategoricalPhysical::U32).mapping())
        });
        // Codes as u64 (a null name is code 0, apart from an empty one).
        let code = |k: &str| col(k).to_physical().cast(DataType::UInt64);
        let c = [
            code("phase"),
            code("stage"),
            code("kind"),
            (code("name") + lit(1u64)).fill_null(lit(0u64)),
            code("agent"),
        ];
        let mut b: Vec<u32> = maps.iter().map(|m| bits(m.num_cats_upper_bound())).collect();
        b[3] = bits(maps[3].num_cats_upper_bound() + 1);
        let shl = |e: Expr, n: u32| e * lit(1u64 << n);
        let sid = shl(c[0].clone(), b[1]) + c[1].clone();
        let joined_cats = Categories::random("planrun".into(), CategoricalPhysical::U32);
        let _keep_joined = joined_cats.mapping();
        let nid = if b[0] + b[1] + b[2] + b[3] <= pack_bits {
            shl(shl(sid.clone(), b[2]) + c[2].clone(), b[3]) + c[3].clone()
        } else {
            // Too many distinct values to pack: code the joined strings instead.
            let name = col("name").cast(DataType::String).fill_null(lit("\u{0}"));
            let s = |k: &str| col(k).cast(DataType::String);
            let joined = concat_str([s("phase"), s("stage"), s("kind"), name], "\u{1f}", false);
            joined.cast(DataType::from_categories(joined_cats)).to_physical().cast(DataType::UInt64)
        };
        let df = df
            .lazy()
            .with_columns([
                c[0].clone().cast(DataType::UInt32).alias("_pid"),
                sid.alias("_sid"),
                nid.alias("_nid"),
                c[4].clone().cast(DataType::UInt32).alias("_aid"),
            ])
            .collect()?;
        Ok(Frame { df, columns, maps, stage_bits: b[1], sid_bits: b[0] + b[1] })
    }

    /// The measurement rows (stage markers dropped), lazily.
    pub fn data(&self) -> LazyFrame {
        self.df.clone().lazy().filter(col("_data"))
    }

    /// The event columns only, as SQL queries see them: with their documented types (the key
    /// columns back to strings, computed only for the columns a query reads).
    pub fn events(&self) -> LazyFrame {
        let cols: Vec<Expr> = self
            .columns
            .iter()
            .map(|c| {
                if CATEGORICAL.contains(&c.as_str()) { col(c.as_str()).cast(DataType::String) } else { col(c.as_str()) }
            })
            .collect();
        self.df.clone().lazy().select(cols)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_columns_named_here_are_schema_columns() {
        for name in METRIC_COLUMNS.iter().chain(&KEYS).chain(&CATEGORICAL) {
            assert!(crate::events::schema::column(name).is_some(), "`{name}` is not an event column");
        }
    }

    fn frame(pack_bits: u32) -> Frame {
        let df = df!(
            "phase" => ["p", "p", "p", "q", "p", "p"],
            "stage" => ["s", "s", "t", "s", "s", "s"],
            "kind" => ["call", "call", "call", "call", "stage", "call"],
            "name" => [Some("a"), Some("b"), Some("a"), Some("a"), None, Some("")],
            "agent" => [Some("x"), None, Some("x"), Some("y"), None, Some("x")],
            "ok" => [Some(true), Some(false), None, Some(true), None, Some(true)],
            "error" => [None, Some("timed out"), None, None, None, None],
            "t_ms" => [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        )
        .unwrap();
        Frame::load_packing(&df.lazy(), &[], pack_bits).unwrap()
    }

    fn codes(f: &Frame, c: &str) -> Vec<Option<u64>> {
        f.df.column(c).unwrap().cast(&DataType::UInt64).unwrap().u64().unwrap().iter().collect()
    }

    #[test]
    fn codes_group_like_the_strings_packed_or_not() {
        for bits in [64, 1] {
            let f = frame(bits);
            let n = codes(&f, "_nid");
            // (p,s,call,a) (p,s,call,b) (p,t,call,a) (q,s,call,a) (p,s,stage,null) (p,s,call,"")
            for i in 0..n.len() {
                for j in 0..i {
                    assert_ne!(n[i], n[j], "rows {i} and {j} differ in a key (pack bits {bits})");
                }
            }
            let s = codes(&f, "_sid");
            assert!(s[0] == s[1] && s[0] == s[4] && s[0] == s[5] && s[0] != s[2] && s[0] != s[3]);
            assert_eq!(Some(s[0].unwrap()), f.stage_code("p", "s"));
            assert_eq!(f.stage_code("p", "nope"), None);
            let a = codes(&f, "_aid");
            assert!(a[0] == a[2] && a[0] == a[5] && a[0] != a[3] && a[1].is_none());
            let flag = |c: &str| f.df.column(c).unwrap().bool().unwrap().iter().collect::<Vec<_>>();
            assert_eq!(flag("_timeout")[1], Some(true));
            assert_eq!(flag("_data")[4], Some(false));
            // SQL sees strings again.
            let ev = f.events().collect().unwrap();
            assert_eq!(ev.column("kind").unwrap().dtype(), &DataType::String);
        }
    }
}
