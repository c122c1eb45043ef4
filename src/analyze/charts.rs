//! The data behind the report's charts and the live dashboard (one shape for both): per stage,
//! one point per second of wall-clock time from its first measured event to its last —
//! throughput (measured events, those with `ok` set), failures, latency p50/p95/p99 (linear
//! interpolation, as every planrun percentile) and users (the `users` rows, summed over a
//! stage's load generators); memory over time (each `*_rss_bytes` sample name, summed over the
//! processes it samples, per second); and the cost accumulated. Seconds without events inside a
//! stage's span are points of zero throughput, so a stall shows as a dip, not a straight line.

use std::collections::BTreeMap;

use polars::prelude::*;
use serde::Serialize;

use super::frame::Cells;

#[derive(Debug, Default, Serialize)]
pub struct Charts {
    pub stages: Vec<StageSeries>,
    pub memory: Vec<Line>,
    /// Cost accumulated (USD), run-wide; absent when nothing cost anything.
    pub cost: Option<Line>,
}

/// One stage's series, all of the same length as `t`.
#[derive(Debug, Default, Serialize)]
pub struct StageSeries {
    /// `phase/stage`.
    pub key: String,
    /// Unix seconds.
    pub t: Vec<i64>,
    pub throughput: Vec<f64>,
    pub failures: Vec<f64>,
    pub p50: Vec<Option<f64>>,
    pub p95: Vec<Option<f64>>,
    pub p99: Vec<Option<f64>>,
    /// Users (or connections) running, where the stage writes `users` rows.
    pub users: Option<Vec<Option<f64>>>,
}

#[derive(Debug, Default, Serialize)]
pub struct Line {
    pub name: String,
    pub t: Vec<i64>,
    pub v: Vec<f64>,
}

fn has(schema: &Schema, c: &str) -> bool {
    schema.get(c).is_some()
}

fn sec() -> Expr {
    (col("ts").dt().timestamp(TimeUnit::Microseconds) / lit(1_000_000i64)).alias("sec")
}

pub fn compute(events: &LazyFrame) -> PolarsResult<Charts> {
    let schema = events.clone().collect_schema()?;
    let mut charts = Charts::default();
    if !["kind", "ts", "phase", "stage"].iter().all(|c| has(&schema, c)) {
        return Ok(charts);
    }
    if has(&schema, "ok") {
        charts.stages = stage_series(events, &schema)?;
    }
    if has(&schema, "value") && has(&schema, "name") {
        charts.memory = memory(events, &schema)?;
    }
    if has(&schema, "cost_usd") {
        charts.cost = cost(events)?;
    }
    Ok(charts)
}

fn stage_series(events: &LazyFrame, schema: &Schema) -> PolarsResult<Vec<StageSeries>> {
    let latency = if has(schema, "latency_ms") { col("latency_ms") } else { lit(NULL).cast(DataType::Float64) };
    let q = |p: f64, name: &str| latency.clone().quantile(lit(p), QuantileMethod::Linear).alias(name);
    let df = events
        .clone()
        .filter(col("kind").neq(lit("stage")).and(col("ok").is_not_null()))
        .with_column(sec())
        .group_by([col("phase"), col("stage"), col("sec")])
        .agg([
            len().cast(DataType::Float64).alias("n"),
            col("ok").not().sum().cast(DataType::Float64).alias("fails"),
            q(0.50, "p50"),
            q(0.95, "p95"),
            q(0.99, "p99"),
        ])
        .sort(["sec"], SortMultipleOptions::default())
        .collect()?;
    let users = super::locust::users_per_second(events, schema)?;
    let c = Cells::new(&df);
    // Stages in the order their first second comes.
    let mut by_stage: BTreeMap<String, (i64, Vec<usize>)> = BTreeMap::new();
    for i in 0..df.height() {
        let key = format!("{}/{}", c.str("phase", i).unwrap_or_default(), c.str("stage", i).unwrap_or_default());
        let s = c.i64("sec", i).unwrap_or(0);
        by_stage.entry(key).or_insert((s, Vec::new())).1.push(i);
    }
    let mut stages: Vec<(i64, StageSeries)> = by_stage
        .into_iter()
        .map(|(key, (first, rows))| {
            let last = rows.iter().filter_map(|&i| c.i64("sec", i)).max().unwrap_or(first);
            let at: BTreeMap<i64, usize> = rows.iter().filter_map(|&i| c.i64("sec", i).map(|s| (s, i))).collect();
            let mut s = StageSeries { key: key.clone(), ..Default::default() };
            let prefix = format!("{key}/");
            let mut has_users = false;
            let mut u = Vec::new();
            for t in first..=last {
                s.t.push(t);
                let row = at.get(&t).copied();
                s.throughput.push(row.and_then(|i| c.f64("n", i)).unwrap_or(0.0));
                s.failures.push(row.and_then(|i| c.f64("fails", i)).unwrap_or(0.0));
                s.p50.push(row.and_then(|i| c.f64("p50", i)));
                s.p95.push(row.and_then(|i| c.f64("p95", i)));
                s.p99.push(row.and_then(|i| c.f64("p99", i)));
                let n = users.at_prefix(t, &prefix);
                has_users |= n.is_some();
                u.push(n);
            }
            s.users = has_users.then_some(u);
            (first, s)
        })
        .collect();
    stages.sort_by_key(|(first, s)| (*first, s.key.clone()));
    Ok(stages.into_iter().map(|(_, s)| s).collect())
}

fn memory(events: &LazyFrame, schema: &Schema) -> PolarsResult<Vec<Line>> {
    let agent = if has(schema, "agent") { col("agent").fill_null(lit("")) } else { lit("") };
    let df = events
        .clone()
        .filter(col("kind").eq(lit("sample")).and(col("name").str().ends_with(lit("_rss_bytes"))))
        .with_columns([sec(), agent.alias("_proc")])
        // Each process's mean in the second, then their sum.
        .group_by([col("name"), col("sec"), col("_proc")])
        .agg([col("value").mean().alias("v")])
        .group_by([col("name"), col("sec")])
        .agg([col("v").sum().alias("v")])
        .sort(["name", "sec"], SortMultipleOptions::default())
        .collect()?;
    let c = Cells::new(&df);
    let mut lines: Vec<Line> = Vec::new();
    for i in 0..df.height() {
        let name = c.str("name", i).unwrap_or_default();
        if lines.last().is_none_or(|l| l.name != name) {
            lines.push(Line { name, ..Default::default() });
        }
        if let (Some(l), Some(t), Some(v)) = (lines.last_mut(), c.i64("sec", i), c.f64("v", i)) {
            l.t.push(t);
            l.v.push(v);
        }
    }
    Ok(lines)
}

fn cost(events: &LazyFrame) -> PolarsResult<Option<Line>> {
    let df = events
        .clone()
        .filter(col("cost_usd").is_not_null())
        .with_column(sec())
        .group_by([col("sec")])
        .agg([col("cost_usd").sum().alias("v")])
        .sort(["sec"], SortMultipleOptions::default())
        .with_column(col("v").cum_sum(false).alias("v"))
        .collect()?;
    if df.height() == 0 {
        return Ok(None);
    }
    let c = Cells::new(&df);
    let mut l = Line { name: "cost_usd".into(), ..Default::default() };
    for i in 0..df.height() {
        if let (Some(t), Some(v)) = (c.i64("sec", i), c.f64("v", i)) {
            l.t.push(t);
            l.v.push(v);
        }
    }
    Ok(Some(l))
}
