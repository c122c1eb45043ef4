//! Metrics at every level — plan, phase, stage, and each (kind, name) within a stage — plus the
//! error breakdown, per-agent latency, and time series in fixed windows that scale with the
//! stage length. All of it is polars group-bys over the data rows; throughput divides by the
//! scope's active window (from the manifest's stage times), not by the first-to-last event.
//!
//! Percentiles use linear interpolation between closest ranks (numpy's default; documented in
//! docs/criteria.md).

use polars::prelude::*;

use super::compile::{data_mask, timeout_mask};
use super::frame::{Row, get_f64, get_str, num, rows};
use crate::run::manifest::Manifest;

#[derive(Debug, Default, serde::Serialize)]
pub struct Metrics {
    pub plan: Row,
    pub phases: Vec<Row>,
    pub stages: Vec<Row>,
    pub names: Vec<Row>,
    pub errors: Vec<Row>,
    pub agents: Vec<Row>,
    pub series: Vec<Series>,
}

#[derive(Debug, serde::Serialize)]
pub struct Series {
    pub phase: String,
    pub stage: String,
    pub window_ms: f64,
    pub points: Vec<Row>,
}

/// Percentiles every level reports, with their column names.
const PERCENTILES: &[(f64, &str)] = &[
    (0.50, "latency_p50"),
    (0.90, "latency_p90"),
    (0.95, "latency_p95"),
    (0.99, "latency_p99"),
    (0.999, "latency_p999"),
];

/// Per-row flags computed once, so that every level sums plain integer columns (group sums of
/// derived boolean expressions are several times slower).
fn flags() -> Vec<Expr> {
    vec![
        col("ok").eq(lit(true)).fill_null(lit(false)).cast(DataType::UInt32).alias("_ok"),
        col("ok").eq(lit(false)).fill_null(lit(false)).cast(DataType::UInt32).alias("_failed"),
        timeout_mask().cast(DataType::UInt32).alias("_timeout"),
        col("ok").cast(DataType::Float64).alias("_okf"),
    ]
}

/// Aggregates of one level. Percentiles are not here: each group's latencies are sorted once
/// (`_sorted`) and all percentiles read off by index (`with_percentiles`), instead of one
/// selection pass per percentile per group.
fn aggs(grouped: bool) -> Vec<Expr> {
    let lat = || col("latency_ms");
    // Under group_by a non-scalar result is already one list per group; in a select, implode it.
    let sorted = lat().drop_nulls().sort(SortOptions::default().with_multithreaded(true));
    let sorted = if grouped { sorted } else { sorted.implode(true) };
    vec![
        len().cast(DataType::UInt64).alias("count"),
        col("_ok").sum().cast(DataType::UInt64).alias("ok"),
        col("_failed").sum().cast(DataType::UInt64).alias("failed"),
        col("_timeout").sum().cast(DataType::UInt64).alias("timeouts"),
        col("_okf").mean().alias("success_rate"),
        lat().min().alias("latency_min"),
        lat().mean().alias("latency_mean"),
        lat().max().alias("latency_max"),
        lat().std(1).alias("latency_stddev"),
        col("cost_usd").sum().alias("cost_usd"),
        col("tokens_in").sum().alias("tokens_in"),
        col("tokens_out").sum().alias("tokens_out"),
        col("t_ms").min().alias("t_first_ms"),
        col("t_ms").max().alias("t_last_ms"),
        sorted.alias("_sorted"),
    ]
}

/// Linear-interpolation percentile of ascending `v` (numpy's default; docs/criteria.md).
pub fn percentile_sorted(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let h = (v.len() - 1) as f64 * q;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    Some(v[lo] + (v[hi] - v[lo]) * (h - lo as f64))
}

/// Replace the `_sorted` list column by the percentile columns.
fn with_percentiles(df: DataFrame, which: &[(f64, &str)]) -> PolarsResult<DataFrame> {
    let lists = df.column("_sorted")?.list()?.clone();
    let mut cols: Vec<Vec<Option<f64>>> = vec![Vec::with_capacity(df.height()); which.len()];
    for group in lists.amortized_iter() {
        let values = match &group {
            Some(s) => s
                .as_ref()
                .f64()?
                .cont_slice()
                .map(<[f64]>::to_vec)
                .unwrap_or_else(|_| s.as_ref().f64().map(|c| c.into_no_null_iter().collect()).unwrap_or_default()),
            None => Vec::new(),
        };
        for (i, (q, _)) in which.iter().enumerate() {
            cols[i].push(percentile_sorted(&values, *q));
        }
    }
    let mut df = df.drop("_sorted")?;
    for ((_, name), values) in which.iter().zip(cols) {
        df.with_column(Column::new((*name).into(), values))?;
    }
    Ok(df)
}

/// A scope's active window in seconds, from the manifest's stage records.
fn window(m: &Manifest, phase: Option<&str>, stage: Option<&str>) -> Option<f64> {
    let recs = m.stages.iter().filter(|r| phase.is_none_or(|p| r.phase == p) && stage.is_none_or(|s| r.stage == s));
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for r in recs {
        if let (Some(a), Some(b)) = (r.t_start_ms, r.t_end_ms) {
            lo = lo.min(a);
            hi = hi.max(b);
        }
    }
    (hi > lo).then(|| (hi - lo) / 1000.0)
}

fn finish(mut row: Row, win: Option<f64>) -> Row {
    let count = get_f64(&row, "count").unwrap_or(0.0);
    // Without stage records (a crashed run), fall back to the events' own span.
    let win = win.or_else(|| {
        let (a, b) = (get_f64(&row, "t_first_ms")?, get_f64(&row, "t_last_ms")?);
        (b > a).then(|| (b - a) / 1000.0)
    });
    row.insert("window_s".into(), win.map_or(serde_json::Value::Null, num));
    row.insert("throughput".into(), win.map_or(serde_json::Value::Null, |w| num(count / w)));
    if get_f64(&row, "cost_usd") == Some(0.0) && get_f64(&row, "tokens_in").is_none() {
        row.insert("cost_usd".into(), serde_json::Value::Null);
    }
    row
}

/// A window length that reads well: 1, 2 or 5 × 10^k ms, about `span / 60`, at least 10 ms.
pub fn nice_window(span_ms: f64) -> f64 {
    let target = (span_ms / 60.0).max(10.0);
    let mag = 10f64.powf(target.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|w| *w >= target).unwrap_or(10.0 * mag)
}

/// With `PLANRUN_TIMINGS` set, print how long each part of the analysis took.
pub struct Timer {
    on: bool,
    start: std::time::Instant,
}

impl Timer {
    pub fn new() -> Timer {
        Timer { on: std::env::var_os("PLANRUN_TIMINGS").is_some(), start: std::time::Instant::now() }
    }

    pub fn lap(&mut self, what: &str) {
        if self.on {
            eprintln!("timing: {what:<14} {:>6.2} s", self.start.elapsed().as_secs_f64());
        }
        self.start = std::time::Instant::now();
    }
}

impl Default for Timer {
    fn default() -> Self {
        Timer::new()
    }
}

pub fn compute(events: &LazyFrame, m: &Manifest) -> PolarsResult<Metrics> {
    let mut timer = Timer::new();
    // Read the columns metrics use once, with the per-row flags, into memory: every level below
    // reuses this frame instead of scanning and decompressing the file again.
    let used = [
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
    let data = events.clone().filter(data_mask()).select(used.map(col)).with_columns(flags()).collect()?.lazy();
    timer.lap("read+flags");
    let plan = with_percentiles(data.clone().select(aggs(false)).collect()?, PERCENTILES)?;
    let plan_row = rows(&plan).into_iter().next().unwrap_or_default();
    timer.lap("plan");
    let win_all = window(m, None, None);

    let phases =
        with_percentiles(data.clone().group_by_stable([col("phase")]).agg(aggs(true)).collect()?, PERCENTILES)?;
    timer.lap("phases");
    let stages = with_percentiles(
        data.clone().group_by_stable([col("phase"), col("stage")]).agg(aggs(true)).collect()?,
        PERCENTILES,
    )?;
    timer.lap("stages");
    // One string key groups ~3× faster than four string columns, some of them null.
    let key = concat_str([col("phase"), col("stage"), col("kind"), col("name").fill_null(lit(""))], "\u{1f}", false);
    let mut name_aggs = vec![col("phase").first(), col("stage").first(), col("kind").first(), col("name").first()];
    name_aggs.extend(aggs(true));
    let names = data.clone().group_by_stable([key.alias("_key")]).agg(name_aggs).collect()?.drop("_key")?;
    let names = with_percentiles(names, PERCENTILES)?;
    timer.lap("names");

    let errors = data
        .clone()
        .filter(col("error").is_not_null())
        .group_by_stable([col("phase"), col("stage"), col("error")])
        .agg([len().cast(DataType::UInt64).alias("count")])
        .sort(["count"], SortMultipleOptions::default().with_order_descending(true).with_maintain_order(true))
        .limit(100)
        .collect()?;

    timer.lap("errors");
    let agent_key = concat_str([col("phase"), col("stage"), col("agent")], "\u{1f}", false);
    let sorted = col("latency_ms").drop_nulls().sort(SortOptions::default().with_multithreaded(true));
    let agents = data
        .clone()
        .filter(col("agent").is_not_null().and(col("latency_ms").is_not_null()))
        .group_by_stable([agent_key.alias("_key")])
        .agg([
            col("phase").first(),
            col("stage").first(),
            col("agent").first(),
            len().cast(DataType::UInt64).alias("count"),
            col("latency_ms").mean().alias("latency_mean"),
            col("_failed").sum().cast(DataType::UInt64).alias("failed"),
            sorted.clone().alias("_sorted"),
        ])
        .collect()?
        .drop("_key")?;
    let agents = with_percentiles(agents, &[(0.95, "latency_p95")])?;
    timer.lap("agents");
    let mut out = Metrics {
        plan: finish(plan_row, win_all),
        phases: rows(&phases)
            .into_iter()
            .map(|r| {
                let w = window(m, Some(get_str(&r, "phase")), None);
                finish(r, w)
            })
            .collect(),
        stages: rows(&stages)
            .into_iter()
            .map(|r| {
                let w = window(m, Some(get_str(&r, "phase")), Some(get_str(&r, "stage")));
                finish(r, w)
            })
            .collect(),
        names: rows(&names)
            .into_iter()
            .map(|r| {
                let w = window(m, Some(get_str(&r, "phase")), Some(get_str(&r, "stage")));
                finish(r, w)
            })
            .collect(),
        errors: rows(&errors),
        agents: rows(&agents),
        series: Vec::new(),
    };
    out.series = series(&data, m)?;
    timer.lap("series");
    Ok(out)
}

/// Per-stage time series over the data rows: counts, failures and latency percentiles per
/// window, plus the mean of byte-valued samples (memory) for trend findings.
fn series(data: &LazyFrame, m: &Manifest) -> PolarsResult<Vec<Series>> {
    let recs: Vec<_> = m.stages.iter().filter_map(|r| Some((r, r.t_start_ms?, r.t_end_ms?))).collect();
    if recs.is_empty() {
        return Ok(Vec::new());
    }
    // Each stage's start and window as expressions: a when/then per stage beats a join.
    let mut t0 = lit(NULL).cast(DataType::Float64);
    let mut w = lit(NULL).cast(DataType::Float64);
    for (r, a, b) in recs.iter().rev() {
        let here = col("phase").eq(lit(r.phase.as_str())).and(col("stage").eq(lit(r.stage.as_str())));
        t0 = when(here.clone()).then(lit(*a)).otherwise(t0);
        w = when(here).then(lit(nice_window(b - a))).otherwise(w);
    }
    let df = data
        .clone()
        .with_columns([t0.alias("t0"), w.alias("w")])
        .filter(col("w").is_not_null())
        .with_column(((col("t_ms") - col("t0")) / col("w")).floor().cast(DataType::Int64).alias("bucket"))
        .group_by([col("phase"), col("stage"), col("bucket")])
        .agg([
            col("w").first().alias("w"),
            col("t0").first().alias("t0"),
            len().cast(DataType::UInt64).alias("count"),
            col("_failed").sum().cast(DataType::UInt64).alias("failed"),
            col("latency_ms").drop_nulls().sort(SortOptions::default()).alias("_sorted"),
            col("value").filter(col("unit").eq(lit("bytes"))).mean().alias("bytes_mean"),
        ])
        .sort(["phase", "stage", "bucket"], SortMultipleOptions::default())
        .collect()?;
    let df = with_percentiles(df, &[(0.50, "latency_p50"), (0.95, "latency_p95")])?;
    let mut out: Vec<Series> = Vec::new();
    for row in rows(&df) {
        let (phase, stage) = (get_str(&row, "phase").to_string(), get_str(&row, "stage").to_string());
        let w = get_f64(&row, "w").unwrap_or(1.0);
        let bucket = get_f64(&row, "bucket").unwrap_or(0.0);
        let mut point = Row::new();
        point.insert("t_ms".into(), num(get_f64(&row, "t0").unwrap_or(0.0) + bucket * w));
        for k in ["count", "failed", "latency_p50", "latency_p95", "bytes_mean"] {
            point.insert(k.into(), row.get(k).cloned().unwrap_or_default());
        }
        point.insert("rate".into(), num(get_f64(&row, "count").unwrap_or(0.0) / (w / 1000.0)));
        match out.last_mut() {
            Some(s) if s.phase == phase && s.stage == stage => s.points.push(point),
            _ => out.push(Series { phase, stage, window_ms: w, points: vec![point] }),
        }
    }
    // Present stages in plan order.
    out.sort_by_key(|s| m.stages.iter().position(|r| r.phase == s.phase && r.stage == s.stage));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_round_numbers() {
        assert_eq!(nice_window(60_000.0), 1000.0);
        assert_eq!(nice_window(8.0 * 3_600_000.0), 500_000.0);
        assert_eq!(nice_window(100.0), 10.0);
    }
}

#[cfg(test)]
mod percentile_tests {
    use super::percentile_sorted;

    #[test]
    fn linear_interpolation_between_ranks() {
        let v: Vec<f64> = (1..=20).map(|i| i as f64 * 10.0).collect();
        assert_eq!(percentile_sorted(&v, 0.5), Some(105.0));
        assert!((percentile_sorted(&v, 0.95).unwrap() - 190.5).abs() < 1e-9);
        assert_eq!(percentile_sorted(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile_sorted(&[], 0.5), None);
    }
}
