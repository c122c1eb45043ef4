//! The numbers behind `--format locust-csv`: Locust's `stats.csv` (one row per request type and
//! name, then `Aggregated`), `stats_history.csv` (one `Aggregated` row per second) and
//! `failures.csv` (method, name, error, occurrences), computed from the run's `http` rows so a
//! team's spreadsheets keep working. Response times are `latency_ms` (from the intended send
//! time in open-model stages), percentiles by the same linear interpolation as every other
//! planrun percentile (Locust rounds to buckets, so its figures can differ by a bucket), sizes
//! are `bytes`, rates are per second over the span from the first to the last request. Stages
//! that recorded per-second summaries (`record = "summary"` or a sample) are left out: their
//! rows are not every request (the report's Recording note says so). Rendering is the templates' job (`templates/locust_*.csv.j2`).

use polars::prelude::*;
use serde::Serialize;

use super::frame::Cells;

/// The percentiles Locust's CSV files list, as (column title, quantile).
pub const PERCENTILES: &[(&str, f64)] = &[
    ("50%", 0.50),
    ("66%", 0.66),
    ("75%", 0.75),
    ("80%", 0.80),
    ("90%", 0.90),
    ("95%", 0.95),
    ("98%", 0.98),
    ("99%", 0.99),
    ("99.9%", 0.999),
    ("99.99%", 0.9999),
    ("100%", 1.0),
];

#[derive(Debug, Serialize, Default)]
pub struct StatRow {
    pub method: String,
    pub name: String,
    pub requests: u64,
    pub failures: u64,
    pub median_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    pub min_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mean_bytes: Option<f64>,
    pub rps: f64,
    pub fps: f64,
    pub percentiles: Vec<Option<f64>>,
}

#[derive(Debug, Serialize)]
pub struct HistoryRow {
    pub timestamp: i64,
    pub users: Option<f64>,
    pub rps: f64,
    pub fps: f64,
    pub percentiles: Vec<Option<f64>>,
    pub total_requests: u64,
    pub total_failures: u64,
    pub total_mean_ms: Option<f64>,
    pub total_min_ms: Option<f64>,
    pub total_max_ms: Option<f64>,
    pub total_mean_bytes: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct FailureRow {
    pub method: String,
    pub name: String,
    pub error: String,
    pub occurrences: u64,
}

#[derive(Debug, Serialize)]
pub struct Locust {
    pub percentile_titles: Vec<&'static str>,
    pub stats: Vec<StatRow>,
    pub history: Vec<HistoryRow>,
    pub failures: Vec<FailureRow>,
}

fn has(schema: &Schema, c: &str) -> bool {
    schema.get(c).is_some()
}

fn stat_exprs() -> Vec<Expr> {
    let lat = col("latency_ms");
    let mut e = vec![
        len().cast(DataType::UInt64).alias("requests"),
        col("ok").not().sum().cast(DataType::UInt64).alias("failures"),
        lat.clone().median().alias("median_ms"),
        lat.clone().mean().alias("mean_ms"),
        lat.clone().min().alias("min_ms"),
        lat.clone().max().alias("max_ms"),
        col("bytes").cast(DataType::Float64).mean().alias("mean_bytes"),
    ];
    for (i, (_, q)) in PERCENTILES.iter().enumerate() {
        e.push(lat.clone().quantile(lit(*q), QuantileMethod::Linear).alias(format!("q{i}")));
    }
    e
}

// Whole columns through the analysis's one cell reader (`Cells`): these tables are a few
// rows per name or second.
fn f64s(df: &DataFrame, c: &str) -> PolarsResult<Vec<Option<f64>>> {
    let cells = Cells::new(df);
    Ok((0..df.height()).map(|i| cells.f64(c, i)).collect())
}

fn u64s(df: &DataFrame, c: &str) -> PolarsResult<Vec<u64>> {
    let cells = Cells::new(df);
    Ok((0..df.height()).map(|i| cells.u64(c, i).unwrap_or(0)).collect())
}

fn strs(df: &DataFrame, c: &str) -> PolarsResult<Vec<String>> {
    let cells = Cells::new(df);
    Ok((0..df.height()).map(|i| cells.str(c, i).unwrap_or_default()).collect())
}

fn rows(df: &DataFrame, span_s: f64) -> PolarsResult<Vec<StatRow>> {
    let n = df.height();
    let (requests, failures) = (u64s(df, "requests")?, u64s(df, "failures")?);
    let cols: Vec<Vec<Option<f64>>> = ["median_ms", "mean_ms", "min_ms", "max_ms", "mean_bytes"]
        .iter()
        .map(|c| f64s(df, c))
        .collect::<Result<_, _>>()?;
    let qs: Vec<Vec<Option<f64>>> =
        (0..PERCENTILES.len()).map(|i| f64s(df, &format!("q{i}"))).collect::<Result<_, _>>()?;
    let methods = if df.column("method").is_ok() { strs(df, "method")? } else { vec![String::new(); n] };
    let names = if df.column("name").is_ok() { strs(df, "name")? } else { vec!["Aggregated".into(); n] };
    Ok((0..n)
        .map(|i| StatRow {
            method: methods[i].clone(),
            name: names[i].clone(),
            requests: requests[i],
            failures: failures[i],
            median_ms: cols[0][i],
            mean_ms: cols[1][i],
            min_ms: cols[2][i],
            max_ms: cols[3][i],
            mean_bytes: cols[4][i],
            rps: requests[i] as f64 / span_s,
            fps: failures[i] as f64 / span_s,
            percentiles: qs.iter().map(|q| q[i]).collect(),
        })
        .collect())
}

/// Locust's three tables from the run's events.
pub fn compute(events: &LazyFrame) -> PolarsResult<Locust> {
    let schema = events.clone().collect_schema()?;
    let titles = PERCENTILES.iter().map(|(t, _)| *t).collect();
    let empty = Locust { percentile_titles: titles, stats: Vec::new(), history: Vec::new(), failures: Vec::new() };
    if !["kind", "latency_ms", "ok", "t_ms", "ts"].iter().all(|c| has(&schema, c)) {
        return Ok(empty);
    }
    let mut cols = vec![col("t_ms"), col("ts"), col("latency_ms"), col("ok"), col("name")];
    for (c, dt) in [("method", DataType::String), ("bytes", DataType::Int64), ("error", DataType::String)] {
        cols.push(if has(&schema, c) { col(c) } else { lit(NULL).cast(dt).alias(c) });
    }
    // Stages that kept per-second windows recorded a sample of their requests (or none): their
    // rows would count a fraction of the requests as all of them, so they are left out.
    let windowed: Vec<String> = {
        let df = events
            .clone()
            .filter(col("kind").eq(lit("http_window")))
            .select([col("stage")])
            .unique(None, UniqueKeepStrategy::Any)
            .collect()?;
        strs(&df, "stage")?
    };
    let keep = windowed.iter().fold(col("kind").eq(lit("http")), |e, s| e.and(col("stage").neq(lit(s.as_str()))));
    let http = events.clone().filter(keep).select(cols).collect()?;
    if http.height() == 0 {
        return Ok(empty);
    }
    let t = http.column("t_ms")?.f64()?;
    let span_s = ((t.max().unwrap_or(0.0) - t.min().unwrap_or(0.0)) / 1000.0).max(1e-3);
    let lf = http.clone().lazy().with_column(col("method").fill_null(lit("")));

    let by_name = lf
        .clone()
        .group_by([col("method"), col("name")])
        .agg(stat_exprs())
        .sort(["name", "method"], SortMultipleOptions::default())
        .collect()?;
    let mut stats = rows(&by_name, span_s)?;
    let total = lf.clone().select(stat_exprs()).collect()?;
    let mut agg = rows(&total, span_s)?;
    if let Some(a) = agg.first_mut() {
        a.method = String::new();
        a.name = "Aggregated".into();
    }
    stats.extend(agg);

    // One row per second of wall-clock time, with running totals.
    let sec = (col("ts").dt().timestamp(TimeUnit::Microseconds) / lit(1_000_000i64)).alias("sec");
    let mut per_sec = vec![
        len().cast(DataType::UInt64).alias("n"),
        col("ok").not().sum().cast(DataType::UInt64).alias("fails"),
        col("latency_ms").sum().alias("lat_sum"),
        col("latency_ms").min().alias("lat_min"),
        col("latency_ms").max().alias("lat_max"),
        col("bytes").cast(DataType::Float64).sum().alias("bytes_sum"),
    ];
    for (i, (_, q)) in PERCENTILES.iter().enumerate() {
        per_sec.push(col("latency_ms").quantile(lit(*q), QuantileMethod::Linear).alias(format!("q{i}")));
    }
    let hist = lf
        .clone()
        .with_column(sec)
        .group_by([col("sec")])
        .agg(per_sec)
        .sort(["sec"], SortMultipleOptions::default())
        .with_columns([
            col("n").cum_sum(false).alias("total_n"),
            col("fails").cum_sum(false).alias("total_fails"),
            col("lat_sum").cum_sum(false).alias("total_lat"),
            col("lat_min").cum_min(false).alias("total_min"),
            col("lat_max").cum_max(false).alias("total_max"),
            col("bytes_sum").fill_null(lit(0.0)).cum_sum(false).alias("total_bytes"),
        ])
        .collect()?;
    let users = users_per_second(events, &schema)?;
    let cells = Cells::new(&hist);
    let secs: Vec<i64> = (0..hist.height()).map(|i| cells.i64("sec", i).unwrap_or(0)).collect();
    let (n, fails) = (u64s(&hist, "n")?, u64s(&hist, "fails")?);
    let (tn, tf) = (u64s(&hist, "total_n")?, u64s(&hist, "total_fails")?);
    let (tl, tmin, tmax, tb) =
        (f64s(&hist, "total_lat")?, f64s(&hist, "total_min")?, f64s(&hist, "total_max")?, f64s(&hist, "total_bytes")?);
    let qs: Vec<Vec<Option<f64>>> =
        (0..PERCENTILES.len()).map(|i| f64s(&hist, &format!("q{i}"))).collect::<Result<_, _>>()?;
    let history = (0..hist.height())
        .map(|i| HistoryRow {
            timestamp: secs[i],
            users: users.at(secs[i]),
            rps: n[i] as f64,
            fps: fails[i] as f64,
            percentiles: qs.iter().map(|q| q[i]).collect(),
            total_requests: tn[i],
            total_failures: tf[i],
            total_mean_ms: tl[i].map(|s| s / tn[i].max(1) as f64),
            total_min_ms: tmin[i],
            total_max_ms: tmax[i],
            total_mean_bytes: tb[i].map(|b| b / tn[i].max(1) as f64),
        })
        .collect();

    let fail = lf
        .filter(col("ok").not())
        .group_by([col("method"), col("name"), col("error")])
        .agg([len().cast(DataType::UInt64).alias("n")])
        .sort(["name", "method", "error"], SortMultipleOptions::default())
        .collect()?;
    let (fm, fname, ferr, fnum) =
        (strs(&fail, "method")?, strs(&fail, "name")?, strs(&fail, "error")?, u64s(&fail, "n")?);
    let failures = (0..fail.height())
        .map(|i| FailureRow {
            method: fm[i].clone(),
            name: fname[i].clone(),
            error: ferr[i].clone(),
            occurrences: fnum[i],
        })
        .collect();
    Ok(Locust { percentile_titles: PERCENTILES.iter().map(|(t, _)| *t).collect(), stats, history, failures })
}

/// The users running at each second: from the `users` rows (each says how many users one
/// load generator — a stage, or a worker's share of it — has from then on), the sum of every
/// generator's latest count. A stage's end row ends all its generators (a worker lost with its
/// last rows unsent, a share that never said 0, count no longer).
pub(super) struct Users {
    /// (unix second, generator, count; None for a stage's end, whose generator is the stage's
    /// prefix), in time order.
    rows: Vec<(i64, String, Option<f64>)>,
}

impl Users {
    fn at(&self, sec: i64) -> Option<f64> {
        self.at_prefix(sec, "")
    }

    /// The same, over the generators whose name starts with `prefix` (`phase/stage/`: one stage's).
    pub(super) fn at_prefix(&self, sec: i64, prefix: &str) -> Option<f64> {
        let mut latest: std::collections::BTreeMap<&str, f64> = std::collections::BTreeMap::new();
        let mut any = false;
        for (_, g, v) in self.rows.iter().take_while(|(s, _, _)| *s <= sec) {
            if !g.starts_with(prefix) {
                continue;
            }
            match v {
                Some(v) => {
                    latest.insert(g, *v);
                    any = true;
                }
                None => latest.retain(|k, _| !k.starts_with(g.as_str())),
            }
        }
        any.then(|| latest.values().sum())
    }
}

pub(super) fn users_per_second(events: &LazyFrame, schema: &Schema) -> PolarsResult<Users> {
    if !has(schema, "value") || !has(schema, "name") {
        return Ok(Users { rows: Vec::new() });
    }
    let worker = if has(schema, "worker") { col("worker").fill_null(lit("")) } else { lit("") };
    let end = col("kind").eq(lit("stage")).and(col("name").eq(lit("end")));
    let df = events
        .clone()
        .filter(col("kind").eq(lit("users")).or(end.clone()))
        .select([
            (col("ts").dt().timestamp(TimeUnit::Microseconds) / lit(1_000_000i64)).alias("sec"),
            col("value"),
            end.alias("end"),
            concat_str([col("phase"), col("stage"), worker], "/", false).alias("generator"),
        ])
        .collect()?;
    let secs = df.column("sec")?.cast(&DataType::Int64)?;
    let vals = df.column("value")?.cast(&DataType::Float64)?;
    let ends = df.column("end")?.cast(&DataType::Boolean)?;
    let gens = strs(&df, "generator")?;
    let mut rows: Vec<(i64, String, Option<f64>)> = secs
        .i64()?
        .iter()
        .zip(vals.f64()?.iter())
        .zip(ends.bool()?.iter())
        .zip(gens)
        .filter_map(|(((s, v), e), g)| match e {
            // A stage's end: its generators are `phase/stage/…`.
            Some(true) => Some((s?, g, None)),
            _ => Some((s?, g, Some(v?))),
        })
        .collect();
    // Rows relayed from workers arrive in batches: put them in time order (stable, so rows of
    // one generator in the same second keep their order).
    rows.sort_by_key(|r| r.0);
    Ok(Users { rows })
}

#[cfg(test)]
mod tests {
    use super::Users;

    #[test]
    fn users_are_summed_over_generators_and_end_with_their_stage() {
        let row = |s: i64, g: &str, v: Option<f64>| (s, g.to_string(), v);
        let u = Users {
            rows: vec![
                row(10, "p/load/wa", Some(3.0)),
                row(10, "p/load/wb", Some(2.0)),
                row(11, "p/other/", Some(4.0)),
                row(12, "p/load/wb", Some(0.0)),
                // wa was lost and never said 0: its stage's end ends it.
                row(14, "p/load/", None),
            ],
        };
        assert_eq!(u.at(9), None);
        assert_eq!(u.at(10), Some(5.0));
        assert_eq!(u.at(11), Some(9.0));
        assert_eq!(u.at(13), Some(7.0));
        assert_eq!(u.at(14), Some(4.0), "p/load's generators are over; p/other goes on");
    }
}
