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

fn q(e: Expr, p: f64) -> Expr {
    e.quantile(lit(p), QuantileMethod::Linear)
}

fn aggs() -> Vec<Expr> {
    let lat = || col("latency_ms");
    vec![
        len().cast(DataType::UInt64).alias("count"),
        col("ok").eq(lit(true)).fill_null(lit(false)).cast(DataType::UInt64).sum().alias("ok"),
        col("ok").eq(lit(false)).fill_null(lit(false)).cast(DataType::UInt64).sum().alias("failed"),
        timeout_mask().cast(DataType::UInt64).sum().alias("timeouts"),
        col("ok").cast(DataType::Float64).mean().alias("success_rate"),
        lat().min().alias("latency_min"),
        lat().mean().alias("latency_mean"),
        q(lat(), 0.50).alias("latency_p50"),
        q(lat(), 0.90).alias("latency_p90"),
        q(lat(), 0.95).alias("latency_p95"),
        q(lat(), 0.99).alias("latency_p99"),
        q(lat(), 0.999).alias("latency_p999"),
        lat().max().alias("latency_max"),
        lat().std(1).alias("latency_stddev"),
        col("cost_usd").sum().alias("cost_usd"),
        col("tokens_in").sum().alias("tokens_in"),
        col("tokens_out").sum().alias("tokens_out"),
        col("t_ms").min().alias("t_first_ms"),
        col("t_ms").max().alias("t_last_ms"),
    ]
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

pub fn compute(events: &LazyFrame, m: &Manifest) -> PolarsResult<Metrics> {
    let data = events.clone().filter(data_mask());
    let plan = data.clone().select(aggs()).collect()?;
    let plan_row = rows(&plan).into_iter().next().unwrap_or_default();
    let win_all = window(m, None, None);

    let phases = data.clone().group_by_stable([col("phase")]).agg(aggs()).collect()?;
    let stages = data.clone().group_by_stable([col("phase"), col("stage")]).agg(aggs()).collect()?;
    let names =
        data.clone().group_by_stable([col("phase"), col("stage"), col("kind"), col("name")]).agg(aggs()).collect()?;

    let errors = data
        .clone()
        .filter(col("error").is_not_null())
        .group_by_stable([col("phase"), col("stage"), col("error")])
        .agg([len().cast(DataType::UInt64).alias("count")])
        .sort(["count"], SortMultipleOptions::default().with_order_descending(true).with_maintain_order(true))
        .limit(100)
        .collect()?;

    let agents = data
        .clone()
        .filter(col("agent").is_not_null().and(col("latency_ms").is_not_null()))
        .group_by_stable([col("phase"), col("stage"), col("agent")])
        .agg([
            len().cast(DataType::UInt64).alias("count"),
            col("latency_ms").mean().alias("latency_mean"),
            q(col("latency_ms"), 0.95).alias("latency_p95"),
            col("ok").eq(lit(false)).fill_null(lit(false)).cast(DataType::UInt64).sum().alias("failed"),
        ])
        .collect()?;

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
    out.series = series(events, m)?;
    Ok(out)
}

/// Per-stage time series: counts, failures and latency percentiles per window, plus the mean
/// of byte-valued samples (memory) for trend findings.
fn series(events: &LazyFrame, m: &Manifest) -> PolarsResult<Vec<Series>> {
    let recs: Vec<_> = m.stages.iter().filter_map(|r| Some((r, r.t_start_ms?, r.t_end_ms?))).collect();
    if recs.is_empty() {
        return Ok(Vec::new());
    }
    let windows: Vec<f64> = recs.iter().map(|(_, a, b)| nice_window(b - a)).collect();
    let table = df!(
        "phase" => recs.iter().map(|(r, _, _)| r.phase.as_str()).collect::<Vec<_>>(),
        "stage" => recs.iter().map(|(r, _, _)| r.stage.as_str()).collect::<Vec<_>>(),
        "t0" => recs.iter().map(|(_, a, _)| *a).collect::<Vec<_>>(),
        "w" => windows.clone(),
    )?;
    let df = events
        .clone()
        .filter(data_mask())
        .join(table.lazy(), [col("phase"), col("stage")], [col("phase"), col("stage")], JoinArgs::new(JoinType::Inner))
        .with_column(((col("t_ms") - col("t0")) / col("w")).floor().cast(DataType::Int64).alias("bucket"))
        .group_by([col("phase"), col("stage"), col("bucket")])
        .agg([
            col("w").first().alias("w"),
            col("t0").first().alias("t0"),
            len().cast(DataType::UInt64).alias("count"),
            col("ok").eq(lit(false)).fill_null(lit(false)).cast(DataType::UInt64).sum().alias("failed"),
            q(col("latency_ms"), 0.50).alias("latency_p50"),
            q(col("latency_ms"), 0.95).alias("latency_p95"),
            col("value").filter(col("unit").eq(lit("bytes"))).mean().alias("bytes_mean"),
        ])
        .sort(["phase", "stage", "bucket"], SortMultipleOptions::default())
        .collect()?;
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
