//! Metrics at every level — plan, phase, stage, and each (kind, name) within a stage — plus the
//! error breakdown, per-agent latency, and time series in fixed windows that scale with the
//! stage length. Throughput divides by the scope's active window (from the manifest's stage
//! times), not by the first-to-last event.
//!
//! How, on the in-memory `Frame`: one streaming group-by over the events gives the finest level,
//! and `combine` derives stage, phase and plan from its rows exactly (sums, extremes, weighted
//! means, merged variances). Percentiles come from one sort of all measured latencies
//! (`Percentiles`): a stable group-by keeps each group's values sorted, so every percentile of
//! every level is read off by index. Percentiles use linear interpolation between closest ranks
//! (numpy's default; documented in docs/criteria.md).

use polars::prelude::*;

use super::data::Frame;
use super::frame::{Cells, stream};
use super::metric_rows::{
    AgentRow, ErrorRow, LevelKey, LevelRow, MemorySeries, NameRow, PhaseRow, PlanRow, Point, Series, StageRow,
};
use crate::rundir::Manifest;

/// Every level's rows, typed (`metric_rows`).
#[derive(Debug, Default, serde::Serialize)]
pub struct Metrics {
    pub plan: PlanRow,
    pub phases: Vec<PhaseRow>,
    pub stages: Vec<StageRow>,
    pub names: Vec<NameRow>,
    pub errors: Vec<ErrorRow>,
    pub agents: Vec<AgentRow>,
    pub series: Vec<Series>,
    /// Memory series with their growth after warm-up (the memory-growth finding reads these).
    pub memory: Vec<MemorySeries>,
}

/// Percentiles every level reports, with their column names.
const PERCENTILES: &[(f64, &str)] = &[
    (0.50, "latency_p50"),
    (0.90, "latency_p90"),
    (0.95, "latency_p95"),
    (0.99, "latency_p99"),
    (0.999, "latency_p999"),
];

/// Aggregates of the finest level, (phase, stage, kind, name), percentiles aside. Besides the
/// reported values they keep the partial sums (`_n_lat`, `_lat_sum`, `_lat_m2`) from which `combine` derives the stage, phase and plan levels exactly, without
/// another pass over the events.
fn name_aggs() -> Vec<Expr> {
    let lat = || col("latency_ms");
    vec![
        col("_pid").first(),
        col("_sid").first(),
        len().cast(DataType::UInt64).alias("count"),
        col("_ok").sum().cast(DataType::UInt64).alias("ok"),
        col("_failed").sum().cast(DataType::UInt64).alias("failed"),
        col("_timeout").sum().cast(DataType::UInt64).alias("timeouts"),
        lat().min().alias("latency_min"),
        lat().mean().alias("latency_mean"),
        lat().max().alias("latency_max"),
        lat().std(1).alias("latency_stddev"),
        lat().count().cast(DataType::UInt64).alias("_n_lat"),
        lat().sum().alias("_lat_sum"),
        (lat().var(1) * (lat().count().cast(DataType::Float64) - lit(1.0))).fill_null(lit(0.0)).alias("_lat_m2"),
        col("cost_usd").sum().alias("cost_usd"),
        col("tokens_in").sum().alias("tokens_in"),
        col("tokens_out").sum().alias("tokens_out"),
        col("t_ms").min().alias("t_first_ms"),
        col("t_ms").max().alias("t_last_ms"),
    ]
}

/// The share of measured events (`ok` set) that succeeded; null when none was measured.
fn success_rate(ok: Expr, failed: Expr) -> Expr {
    let measured = (ok.clone() + failed).cast(DataType::Float64);
    when(measured.clone().gt(lit(0.0)))
        .then(ok.cast(DataType::Float64) / measured)
        .otherwise(lit(NULL))
        .alias("success_rate")
}

/// A coarser level's aggregates from the finest level's rows: sums add up, extremes take the
/// extreme, means weigh by count, and the variance merges per-group sums of squared deviations
/// (Chan et al.). `keys` empty: one row for the whole run.
fn combine(names: &DataFrame, keys: &[&str], show: &[&str]) -> PolarsResult<DataFrame> {
    let sum = |c: &str| col(c).sum();
    let mean = (sum("_lat_sum") / sum("_n_lat").cast(DataType::Float64)).alias("latency_mean");
    let n = sum("_n_lat").cast(DataType::Float64);
    let m2 = sum("_lat_m2")
        + (col("_n_lat").cast(DataType::Float64) * (col("latency_mean") - col("_mean_all")).pow(2)).sum();
    let aggs = vec![
        sum("count").alias("count"),
        sum("ok").alias("ok"),
        sum("failed").alias("failed"),
        sum("timeouts").alias("timeouts"),
        success_rate(sum("ok"), sum("failed")),
        col("latency_min").min(),
        mean,
        col("latency_max").max(),
        when(n.clone().gt(lit(1.0))).then((m2 / (n - lit(1.0))).sqrt()).otherwise(lit(NULL)).alias("latency_stddev"),
        sum("cost_usd").alias("cost_usd"),
        sum("tokens_in").alias("tokens_in"),
        sum("tokens_out").alias("tokens_out"),
        col("t_first_ms").min(),
        col("t_last_ms").max(),
    ];
    let mean_all = sum("_lat_sum") / sum("_n_lat").cast(DataType::Float64);
    let lf = names.clone().lazy();
    if keys.is_empty() {
        return lf.with_column(mean_all.alias("_mean_all")).select(aggs).collect();
    }
    let by: Vec<Expr> = keys.iter().map(|k| col(*k)).collect();
    let mut all: Vec<Expr> = show.iter().map(|c| col(*c).first()).collect();
    all.extend(aggs);
    lf.with_column(mean_all.over(by.clone())?.alias("_mean_all")).group_by(by).agg(all).collect()
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

/// Latency percentiles for every level from one sort: the measured latencies with their group
/// codes, sorted by latency. A stable group-by keeps each group's values in that order, so every
/// percentile of every group is read off by index — no per-group sort or selection.
struct Percentiles {
    sorted: DataFrame,
}

impl Percentiles {
    fn new(rows: LazyFrame) -> PolarsResult<Percentiles> {
        let sorted = rows
            .filter(col("latency_ms").is_not_null())
            .sort(["latency_ms"], SortMultipleOptions::default().with_multithreaded(true))
            .collect()?;
        Ok(Percentiles { sorted })
    }

    /// One row per group of `keys`, with a column per percentile in `which`.
    fn by(&self, key: &Key, which: &[(f64, &str)]) -> PolarsResult<DataFrame> {
        let lists = self
            .sorted
            .clone()
            .lazy()
            .group_by_stable(key.exprs.clone())
            .agg([col("latency_ms").alias("_sorted")])
            .collect()?;
        let mut cols: Vec<Vec<Option<f64>>> = vec![Vec::with_capacity(lists.height()); which.len()];
        for group in lists.column("_sorted")?.list()?.amortized_iter() {
            let s = group.as_ref().map(|s| s.as_ref().f64().cloned()).transpose()?;
            let s = s.map(|c| c.rechunk().into_owned());
            let v = s.as_ref().and_then(|c| c.cont_slice().ok()).unwrap_or(&[]);
            for (i, (q, _)) in which.iter().enumerate() {
                cols[i].push(percentile_sorted(v, *q));
            }
        }
        let mut df = lists.drop("_sorted")?;
        for ((_, name), values) in which.iter().zip(cols) {
            df.with_column(Column::new((*name).into(), values))?;
        }
        Ok(df)
    }

    /// Percentiles over all rows.
    fn all(&self, which: &[(f64, &str)]) -> PolarsResult<DataFrame> {
        let c = self.sorted.column("latency_ms")?.as_materialized_series().rechunk();
        let v = c.f64()?.cont_slice()?;
        let cols: Vec<Column> =
            which.iter().map(|(q, name)| Column::new((*name).into(), [percentile_sorted(v, *q)])).collect();
        DataFrame::new(1, cols)
    }
}

/// A group key: one column, or an expression packing two codes into one u64 (grouping on
/// one integer is several times faster than on two).
struct Key {
    exprs: Vec<Expr>,
    names: Vec<String>,
    /// Packed: the two codes, kept as columns of the result.
    parts: Vec<String>,
}

impl Key {
    fn col(name: &str) -> Key {
        Key { exprs: vec![col(name)], names: vec![name.into()], parts: vec![] }
    }

    /// `hi` and `lo` as one key: packed when `hi` fits in 32 bits and `lo` is a u32 code.
    fn pair(hi: &str, lo: &str, packable: bool) -> Key {
        if packable {
            let e = col(hi).cast(DataType::UInt64) * lit(1u64 << 32) + col(lo).cast(DataType::UInt64);
            Key { exprs: vec![e.alias("_key")], names: vec!["_key".into()], parts: vec![hi.into(), lo.into()] }
        } else {
            Key { exprs: vec![col(hi), col(lo)], names: vec![hi.into(), lo.into()], parts: vec![] }
        }
    }

    fn cols(&self) -> Vec<Expr> {
        self.names.iter().map(|n| col(n.as_str())).collect()
    }
}

/// Aggregates of the groups of `key` with the display columns `show`, joined with the
/// percentiles of the same groups.
fn level(
    data: &LazyFrame,
    pct: &Percentiles,
    key: &Key,
    show: &[&str],
    aggs: Vec<Expr>,
    which: &[(f64, &str)],
) -> PolarsResult<DataFrame> {
    let mut all: Vec<Expr> =
        show.iter().copied().chain(key.parts.iter().map(String::as_str)).map(|c| col(c).first()).collect();
    all.extend(aggs);
    let agg = stream(data.clone().group_by(key.exprs.clone()).agg(all))?;
    let p = pct.by(key, which)?;
    agg.lazy().join(p.lazy(), key.cols(), key.cols(), JoinArgs::new(JoinType::Left)).collect()
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
            // Resident and peak memory so far, from /proc (Linux).
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let kb = |key: &str| {
                status.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse::<f64>().ok())
            };
            let gib = |v: Option<f64>| v.map_or("?".to_string(), |k| format!("{:.2}", k / 1048576.0));
            eprintln!(
                "timing: {what:<14} {:>6.2} s   rss {} GiB, peak {} GiB",
                self.start.elapsed().as_secs_f64(),
                gib(kb("VmRSS:")),
                gib(kb("VmHWM:"))
            );
        }
        self.start = std::time::Instant::now();
    }
}

impl Default for Timer {
    fn default() -> Self {
        Timer::new()
    }
}

/// Position of a stage in the plan (manifest order); unknown stages after, by name.
fn stage_rank(m: &Manifest, phase: &str, stage: &str) -> (usize, usize) {
    let p = m.stages.iter().position(|r| r.phase == phase).unwrap_or(usize::MAX);
    let s = m.stages.iter().position(|r| r.phase == phase && r.stage == stage).unwrap_or(usize::MAX);
    (p, s)
}

/// Sort rows into plan order (phase, then stage, by manifest position; unknown ones after, by
/// name), ties broken by `tail`.
fn sort_by_plan<T, K: Ord>(rows: &mut [T], m: &Manifest, key: impl Fn(&T) -> (&str, &str, K)) {
    rows.sort_by_cached_key(|r| {
        let (phase, stage, tail) = key(r);
        let (p, s) = stage_rank(m, phase, stage);
        (p, phase.to_string(), s, stage.to_string(), tail)
    });
}

/// A level's rows, finished with their scope's window (the stage's when `by_stage`, else the
/// phase's), in plan order with ties broken by first event, then kind and name.
fn level_rows<K: LevelKey>(df: &DataFrame, m: &Manifest, by_stage: bool) -> Vec<LevelRow<K>> {
    let mut out = LevelRow::<K>::read_all(df);
    for r in &mut out {
        let stage = by_stage.then(|| r.key.stage());
        let w = window(m, Some(r.key.phase()), stage);
        r.stats.finish(w);
    }
    sort_by_plan(&mut out, m, |r| {
        let [kind, name] = r.key.tie();
        let t = r.stats.t_first_ms.unwrap_or(f64::INFINITY);
        (r.key.phase(), r.key.stage(), (ordered(t), kind.to_string(), name.to_string()))
    });
    out
}

/// An f64 that sorts (total order), for sort keys.
fn ordered(f: f64) -> i64 {
    let b = f.to_bits() as i64;
    b ^ (((b >> 63) as u64) >> 1) as i64
}

pub fn compute(frame: &Frame, m: &Manifest) -> PolarsResult<Metrics> {
    let mut timer = Timer::new();
    let data = frame.data();
    let windows = Windows::new(frame, m);
    // One sort of the measured latencies, with every level's group codes (and the series bucket).
    let [_, _, bucket] = windows.columns();
    let pct = Percentiles::new(data.clone().select([
        col("latency_ms"),
        col("_pid"),
        col("_sid"),
        col("_nid"),
        col("_aid"),
        bucket,
    ]))?;
    timer.lap("sort");
    // One pass over the events for the finest level; stage, phase and plan combine its rows.
    let names = level(&data, &pct, &Key::col("_nid"), &["phase", "stage", "kind", "name"], name_aggs(), PERCENTILES)?
        .lazy()
        .with_column(success_rate(col("ok"), col("failed")))
        .collect()?;
    let pct_join = |df: DataFrame, key: &str| -> PolarsResult<DataFrame> {
        let p = pct.by(&Key::col(key), PERCENTILES)?;
        df.lazy().join(p.lazy(), [col(key)], [col(key)], JoinArgs::new(JoinType::Left)).collect()
    };
    let stages = pct_join(combine(&names, &["_sid"], &["phase", "stage"])?, "_sid")?;
    let phases = pct_join(combine(&names, &["_pid"], &["phase"])?, "_pid")?;
    let plan = combine(&names, &[], &[])?.hstack(pct.all(PERCENTILES)?.columns())?;
    let mut plan_row = PlanRow::read_all(&plan).into_iter().next().unwrap_or_default();
    plan_row.stats.finish(window(m, None, None));
    timer.lap("levels");

    let errors = stream(
        data.clone()
            .filter(col("error").is_not_null())
            .group_by([col("phase").cast(DataType::String), col("stage").cast(DataType::String), col("error")])
            .agg([len().cast(DataType::UInt64).alias("count")])
            .sort(
                ["count", "phase", "stage", "error"],
                SortMultipleOptions::default().with_order_descending_multi([true, false, false, false]),
            )
            .limit(100),
    )?;

    let agents = level(
        &data.clone().filter(col("_aid").is_not_null().and(col("latency_ms").is_not_null())),
        &pct,
        &Key::pair("_sid", "_aid", frame.sid_bits <= 32),
        &["phase", "stage", "agent"],
        vec![
            len().cast(DataType::UInt64).alias("count"),
            col("latency_ms").mean().alias("latency_mean"),
            col("_failed").sum().cast(DataType::UInt64).alias("failed"),
            col("t_ms").min().alias("t_first_ms"),
        ],
        &[(0.95, "latency_p95")],
    )?;
    timer.lap("agents");
    let phases = level_rows(&phases, m, false);
    let stages = level_rows(&stages, m, true);
    let names = level_rows(&names, m, true);
    let mut agents = AgentRow::read_all(&agents);
    sort_by_plan(&mut agents, m, |a| (a.phase(), a.stage(), a.agent().to_string()));
    let series = series(&data, &pct, &windows, frame.sid_bits, m)?;
    let memory = memory(&data)?;
    timer.lap("series");
    Ok(Metrics { plan: plan_row, phases, stages, names, errors: ErrorRow::read_all(&errors), agents, series, memory })
}

/// Each memory series of each stage with its growth after warm-up.
fn memory(data: &LazyFrame) -> PolarsResult<Vec<MemorySeries>> {
    let s = |c: &str| col(c).cast(DataType::String);
    let bytes = col("unit").cast(DataType::String).eq(lit("bytes"));
    let df = stream(
        data.clone()
            .filter(bytes.and(col("value").is_not_null()).and(s("name").neq(lit("system_memory_used"))))
            .group_by([s("phase"), s("stage"), s("name"), s("agent")])
            .agg([len().cast(DataType::UInt64).alias("samples"), {
                let mask = col("value").is_not_null();
                let steady = super::compile::steady_mask(&mask, crate::criteria::DEFAULT_WARMUP);
                super::compile::growth(col("value"), &mask, &steady, true).alias("growth")
            }])
            .sort(["phase", "stage", "name", "agent"], SortMultipleOptions::default()),
    )?;
    let c = Cells::new(&df);
    Ok((0..df.height())
        .map(|i| MemorySeries {
            phase: c.str("phase", i).unwrap_or_default(),
            stage: c.str("stage", i).unwrap_or_default(),
            name: c.str("name", i).unwrap_or_default(),
            agent: c.str("agent", i),
            samples: c.u64("samples", i).unwrap_or(0),
            growth: c.f64("growth", i).filter(|g| g.is_finite()),
        })
        .collect())
}

/// Each recorded stage's code with its start and series window (from the manifest).
struct Windows(Vec<(u64, f64, f64)>);

impl Windows {
    fn new(frame: &Frame, m: &Manifest) -> Windows {
        Windows(
            m.stages
                .iter()
                .filter_map(|r| {
                    Some((
                        frame.stage_code(&r.phase, &r.stage)?,
                        r.t_start_ms?,
                        nice_window(r.t_end_ms? - r.t_start_ms?),
                    ))
                })
                .collect(),
        )
    }

    /// `_t0`, `_w` and `_bucket` (the window a row falls in; null outside recorded stages). A
    /// when/then per stage on the integer code beats a join.
    fn columns(&self) -> [Expr; 3] {
        let mut t0 = lit(NULL).cast(DataType::Float64);
        let mut w = lit(NULL).cast(DataType::Float64);
        for (code, a, win) in self.0.iter().rev() {
            let here = col("_sid").eq(lit(*code));
            t0 = when(here.clone()).then(lit(*a)).otherwise(t0);
            w = when(here).then(lit(*win)).otherwise(w);
        }
        // Outside 0..2^32 (an event before its stage's start): no bucket.
        let bucket = ((col("t_ms") - t0.clone()) / w.clone()).floor().cast(DataType::Int64).cast(DataType::UInt32);
        [t0.alias("_t0"), w.alias("_w"), bucket.alias("_bucket")]
    }
}

/// Per-stage time series over the data rows: counts, failures and latency percentiles per
/// window, plus the mean of byte-valued samples (memory) for trend findings.
fn series(
    data: &LazyFrame,
    pct: &Percentiles,
    windows: &Windows,
    sid_bits: u32,
    m: &Manifest,
) -> PolarsResult<Vec<Series>> {
    if windows.0.is_empty() {
        return Ok(Vec::new());
    }
    let df = level(
        &data.clone().with_columns(windows.columns()).filter(col("_bucket").is_not_null()),
        pct,
        &Key::pair("_sid", "_bucket", sid_bits <= 32),
        &["phase", "stage", "_w", "_t0"],
        vec![
            len().cast(DataType::UInt64).alias("count"),
            col("_failed").sum().cast(DataType::UInt64).alias("failed"),
            col("value").filter(col("unit").eq(lit("bytes"))).mean().alias("bytes_mean"),
        ],
        &[(0.50, "latency_p50"), (0.95, "latency_p95")],
    )?
    .sort(["_sid", "_bucket"], SortMultipleOptions::default())?;
    let mut out: Vec<Series> = Vec::new();
    let c = Cells::new(&df);
    for i in 0..df.height() {
        let phase = c.str("phase", i).unwrap_or_default();
        let stage = c.str("stage", i).unwrap_or_default();
        let w = c.f64("_w", i).unwrap_or(1.0);
        let bucket = c.f64("_bucket", i).unwrap_or(0.0);
        let count = c.u64("count", i).unwrap_or(0);
        let point = Point {
            t_ms: c.f64("_t0", i).unwrap_or(0.0) + bucket * w,
            count,
            failed: c.u64("failed", i).unwrap_or(0),
            latency_p50: c.f64("latency_p50", i),
            latency_p95: c.f64("latency_p95", i),
            bytes_mean: c.f64("bytes_mean", i),
            rate: count as f64 / (w / 1000.0),
        };
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
