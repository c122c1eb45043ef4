//! The data behind the report's charts and the live dashboard — one shape (`Charts`), computed
//! two ways with the same rules: from a finished log by polars (`compute`), and event by event
//! while a run goes (`LiveCharts`, an `Observer` the runner hands every event to), so watching a
//! run costs it next to nothing.
//!
//! The rules: time is the run clock (`t_ms`, so virtual runs chart plan time), cut into buckets
//! of `width_s` seconds (1 s, or wider so a long run has about 2,000 points). Per stage, from
//! its first measured bucket to its last or its end: throughput and failures per second
//! (measured events: those with `ok` set), latency p50/p95/p99 (linear interpolation, as every
//! planrun percentile), and users (the `users` rows summed over a stage's load generators, each
//! ended by its stage's end). Buckets without events inside the span are zero throughput, so a
//! stall shows as a dip. Memory: each `*_rss_bytes` sample name, per bucket the mean of each
//! process summed over processes. Cost: USD accumulated per bucket.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use polars::prelude::*;
use serde::Serialize;

use super::frame::Cells;
use super::metrics::percentile_sorted;
use crate::events::{Event, Observer};

/// About this many points per series at most.
const POINTS: f64 = 2000.0;

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Charts {
    /// Bucket width, seconds.
    pub width_s: f64,
    pub stages: Vec<StageSeries>,
    pub memory: Vec<Line>,
    /// Cost accumulated (USD), run-wide; absent when nothing cost anything.
    pub cost: Option<Line>,
}

/// One stage's series, all of the same length as `t`.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct StageSeries {
    /// `phase/stage`.
    pub key: String,
    /// Unix seconds of each bucket's start (the run's start plus its run-clock time).
    pub t: Vec<f64>,
    pub throughput: Vec<f64>,
    pub failures: Vec<f64>,
    pub p50: Vec<Option<f64>>,
    pub p95: Vec<Option<f64>>,
    pub p99: Vec<Option<f64>>,
    /// Users (or connections) running, where the stage writes `users` rows.
    pub users: Option<Vec<Option<f64>>>,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Line {
    pub name: String,
    pub t: Vec<f64>,
    pub v: Vec<f64>,
}

/// The bucket width for a run spanning `span_s` seconds of run clock: 1 s, or the next round
/// width that keeps it near `POINTS` buckets.
pub fn width_for(span_s: f64) -> f64 {
    let want = span_s / POINTS;
    [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0,
        86400.0,
    ]
    .into_iter()
    .find(|w| *w >= want)
    .unwrap_or(86400.0)
}

/// What a stage's buckets come to, with the rules above; shared by both ways of computing.
#[derive(Default)]
struct StageAcc {
    key: String,
    /// bucket → (measured, failed, p50, p95, p99)
    buckets: BTreeMap<i64, (f64, f64, [Option<f64>; 3])>,
    end: Option<i64>,
    /// (bucket, generator, users; None: the stage's end), in order.
    users: Vec<(i64, String, Option<f64>)>,
}

impl StageAcc {
    fn series(&self, t0: f64, width: f64) -> Option<StageSeries> {
        let first = *self.buckets.keys().next()?;
        let last = self.buckets.keys().next_back().copied().unwrap_or(first).max(self.end.unwrap_or(first));
        let mut s = StageSeries { key: self.key.clone(), ..Default::default() };
        let mut users = self.users.clone();
        users.sort_by_key(|u| u.0);
        let (mut latest, mut ui, mut any_users) = (BTreeMap::<&str, f64>::new(), 0, false);
        let mut u = Vec::new();
        for b in first..=last {
            s.t.push(t0 + b as f64 * width);
            let (n, f, q) = self.buckets.get(&b).copied().unwrap_or((0.0, 0.0, [None; 3]));
            s.throughput.push(n / width);
            s.failures.push(f / width);
            s.p50.push(q[0]);
            s.p95.push(q[1]);
            s.p99.push(q[2]);
            while ui < users.len() && users[ui].0 <= b {
                match users[ui].2 {
                    Some(v) => {
                        latest.insert(users[ui].1.as_str(), v);
                        any_users = true;
                    }
                    None => latest.clear(),
                }
                ui += 1;
            }
            u.push((!latest.is_empty() || any_users).then(|| latest.values().sum()));
        }
        s.users = any_users.then_some(u);
        Some(s)
    }
}

fn lines(by: BTreeMap<String, BTreeMap<i64, f64>>, t0: f64, width: f64) -> Vec<Line> {
    by.into_iter()
        .map(|(name, pts)| Line {
            name,
            t: pts.keys().map(|b| t0 + *b as f64 * width).collect(),
            v: pts.values().copied().collect(),
        })
        .collect()
}

fn has(schema: &Schema, c: &str) -> bool {
    schema.get(c).is_some()
}

/// The charts of a finished (or half-written) log.
pub fn compute(events: &LazyFrame) -> PolarsResult<Charts> {
    let schema = events.clone().collect_schema()?;
    if !["kind", "ts", "t_ms", "phase", "stage"].iter().all(|c| has(&schema, c)) {
        return Ok(Charts::default());
    }
    let span = events
        .clone()
        .select([
            col("t_ms").min().alias("lo"),
            col("t_ms").max().alias("hi"),
            (col("ts").dt().timestamp(TimeUnit::Microseconds).cast(DataType::Float64) / lit(1e6)
                - col("t_ms") / lit(1000.0))
            .first()
            .alias("t0"),
        ])
        .collect()?;
    let c = Cells::new(&span);
    let (Some(lo), Some(hi), Some(t0)) = (c.f64("lo", 0), c.f64("hi", 0), c.f64("t0", 0)) else {
        return Ok(Charts::default());
    };
    let width = width_for((hi - lo) / 1000.0);
    compute_with(events, &schema, t0, width)
}

fn bucket(width: f64) -> Expr {
    (col("t_ms") / lit(1000.0 * width)).floor().cast(DataType::Int64).alias("b")
}

fn compute_with(events: &LazyFrame, schema: &Schema, t0: f64, width: f64) -> PolarsResult<Charts> {
    let mut charts = Charts { width_s: width, ..Default::default() };
    let mut stages: BTreeMap<String, StageAcc> = BTreeMap::new();
    let key = |c: &Cells, i: usize| {
        format!("{}/{}", c.str("phase", i).unwrap_or_default(), c.str("stage", i).unwrap_or_default())
    };
    if has(schema, "ok") {
        let latency = if has(schema, "latency_ms") { col("latency_ms") } else { lit(NULL).cast(DataType::Float64) };
        let q = |p: f64, name: &str| latency.clone().quantile(lit(p), QuantileMethod::Linear).alias(name);
        let df = events
            .clone()
            .filter(col("kind").neq(lit("stage")).and(col("ok").is_not_null()))
            .with_column(bucket(width))
            .group_by([col("phase"), col("stage"), col("b")])
            .agg([
                len().cast(DataType::Float64).alias("n"),
                col("ok").not().sum().cast(DataType::Float64).alias("fails"),
                q(0.50, "p50"),
                q(0.95, "p95"),
                q(0.99, "p99"),
            ])
            .collect()?;
        let c = Cells::new(&df);
        for i in 0..df.height() {
            let k = key(&c, i);
            let acc = stages.entry(k.clone()).or_insert_with(|| StageAcc { key: k, ..Default::default() });
            let b = c.i64("b", i).unwrap_or(0);
            let v = (
                c.f64("n", i).unwrap_or(0.0),
                c.f64("fails", i).unwrap_or(0.0),
                [c.f64("p50", i), c.f64("p95", i), c.f64("p99", i)],
            );
            acc.buckets.insert(b, v);
        }
    }
    if has(schema, "name") {
        let worker = if has(schema, "worker") { col("worker").fill_null(lit("")) } else { lit("") };
        let value = if has(schema, "value") { col("value") } else { lit(NULL).cast(DataType::Float64) };
        let df = events
            .clone()
            .filter(col("kind").eq(lit("users")).or(col("kind").eq(lit("stage")).and(col("name").eq(lit("end")))))
            .with_columns([bucket(width), worker.alias("_w")])
            .select([col("phase"), col("stage"), col("b"), col("kind"), value.alias("v"), col("_w")])
            .collect()?;
        let c = Cells::new(&df);
        for i in 0..df.height() {
            let Some(acc) = stages.get_mut(&key(&c, i)) else { continue };
            let b = c.i64("b", i).unwrap_or(0);
            if c.str("kind", i).as_deref() == Some("stage") {
                acc.end = Some(acc.end.map_or(b, |e| e.max(b)));
                acc.users.push((b, String::new(), None));
            } else if let Some(v) = c.f64("v", i) {
                acc.users.push((b, c.str("_w", i).unwrap_or_default(), Some(v)));
            }
        }
    }
    let mut series: Vec<StageSeries> = stages.values().filter_map(|a| a.series(t0, width)).collect();
    series.sort_by(|a, b| {
        a.t.first().partial_cmp(&b.t.first()).unwrap_or(std::cmp::Ordering::Equal).then(a.key.cmp(&b.key))
    });
    charts.stages = series;

    if has(schema, "value") && has(schema, "name") {
        let agent = if has(schema, "agent") { col("agent").fill_null(lit("")) } else { lit("") };
        let worker = if has(schema, "worker") { col("worker").fill_null(lit("")) } else { lit("") };
        let proc = concat_str([worker, agent], "/", false);
        let df = events
            .clone()
            .filter(col("kind").eq(lit("sample")).and(col("name").str().ends_with(lit("_rss_bytes"))))
            .with_columns([bucket(width), proc.alias("_proc")])
            .group_by([col("name"), col("b"), col("_proc")])
            .agg([col("value").mean().alias("v")])
            .group_by([col("name"), col("b")])
            .agg([col("v").sum().alias("v")])
            .collect()?;
        let c = Cells::new(&df);
        let mut by: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
        for i in 0..df.height() {
            if let (Some(b), Some(v)) = (c.i64("b", i), c.f64("v", i)) {
                by.entry(c.str("name", i).unwrap_or_default()).or_default().insert(b, v);
            }
        }
        charts.memory = lines(by, t0, width);
    }
    if has(schema, "cost_usd") {
        let df = events
            .clone()
            .filter(col("cost_usd").is_not_null())
            .with_column(bucket(width))
            .group_by([col("b")])
            .agg([col("cost_usd").sum().alias("v")])
            .collect()?;
        let c = Cells::new(&df);
        let mut per: BTreeMap<i64, f64> = BTreeMap::new();
        for i in 0..df.height() {
            if let (Some(b), Some(v)) = (c.i64("b", i), c.f64("v", i)) {
                per.insert(b, v);
            }
        }
        charts.cost = cumulative(per, t0, width);
    }
    Ok(charts)
}

fn cumulative(per: BTreeMap<i64, f64>, t0: f64, width: f64) -> Option<Line> {
    if per.is_empty() {
        return None;
    }
    let mut sum = 0.0;
    let mut acc = BTreeMap::new();
    for (b, v) in per {
        sum += v;
        acc.insert(b, sum);
    }
    lines(BTreeMap::from([("cost_usd".to_string(), acc)]), t0, width).pop()
}

/// A bucket still taking events: its latencies kept until it closes.
#[derive(Default)]
struct Open {
    n: f64,
    fails: f64,
    lat: Vec<f64>,
}

impl Open {
    fn quantiles(&self) -> [Option<f64>; 3] {
        let mut v = self.lat.clone();
        v.sort_by(f64::total_cmp);
        [percentile_sorted(&v, 0.50), percentile_sorted(&v, 0.95), percentile_sorted(&v, 0.99)]
    }
}

#[derive(Default)]
struct LiveStage {
    acc: StageAcc,
    open: BTreeMap<i64, Open>,
    latest_ms: f64,
}

/// One sample name's buckets: bucket → process → (sum, count).
type MemoryBuckets = BTreeMap<i64, HashMap<String, (f64, f64)>>;

#[derive(Default)]
struct LiveState {
    t0: Option<f64>,
    stages: HashMap<(Arc<str>, Arc<str>), LiveStage>,
    memory: BTreeMap<String, MemoryBuckets>,
    cost: BTreeMap<i64, f64>,
    events: u64,
    /// The newest run-clock reading seen, ms.
    latest_ms: f64,
}

/// The charts of a run while it goes: fed every event (`Observer`), asked for `Charts` at any
/// time. A bucket's latencies are kept until the stage's clock is 3 s past its end (rows a
/// worker relays may come that late), then reduced to its three percentiles.
pub struct LiveCharts {
    width: f64,
    state: Mutex<LiveState>,
}

/// How long after a bucket's end its latencies are kept for late rows, ms.
const LATE_MS: f64 = 3000.0;

impl LiveCharts {
    /// For a run expected to span `expected_s` seconds of run clock.
    pub fn new(expected_s: f64) -> LiveCharts {
        LiveCharts { width: width_for(expected_s), state: Mutex::default() }
    }

    /// Events seen so far (a change tells the dashboard there is something new to show).
    pub fn events(&self) -> u64 {
        self.state.lock().map(|s| s.events).unwrap_or(0)
    }

    pub fn charts(&self) -> Charts {
        let w = self.width;
        // Copied under the lock (the emit path waits on it); sorted and summed outside it.
        let (t0, stages, memory, cost) = {
            let st = match self.state.lock() {
                Ok(s) => s,
                Err(p) => p.into_inner(),
            };
            // The run clock's newest reading: a running stage's span reaches the bucket before
            // it (that one is still filling), so a stage gone quiet shows zeros, not an end.
            let filling = (st.latest_ms / (1000.0 * w)).floor() as i64;
            let stages: Vec<(StageAcc, Vec<(i64, Open)>)> = st
                .stages
                .values()
                .map(|ls| {
                    let running = ls.acc.end.is_none();
                    let acc = StageAcc {
                        key: ls.acc.key.clone(),
                        buckets: ls.acc.buckets.clone(),
                        end: if running { Some(filling - 1) } else { ls.acc.end },
                        users: ls.acc.users.clone(),
                    };
                    let open = ls
                        .open
                        .iter()
                        .filter(|(b, _)| !(running && **b >= filling))
                        .map(|(b, o)| (*b, Open { n: o.n, fails: o.fails, lat: o.lat.clone() }))
                        .collect();
                    (acc, open)
                })
                .collect();
            let memory: BTreeMap<String, BTreeMap<i64, f64>> = st
                .memory
                .iter()
                .map(|(name, by)| {
                    (name.clone(), by.iter().map(|(b, procs)| (*b, procs.values().map(|(s, n)| s / n).sum())).collect())
                })
                .collect();
            (st.t0.unwrap_or(0.0), stages, memory, st.cost.clone())
        };
        let mut series: Vec<StageSeries> = stages
            .into_iter()
            .filter_map(|(mut acc, open)| {
                for (b, o) in open {
                    acc.buckets.insert(b, (o.n, o.fails, o.quantiles()));
                }
                acc.series(t0, w)
            })
            .collect();
        series.sort_by(|a, b| {
            a.t.first().partial_cmp(&b.t.first()).unwrap_or(std::cmp::Ordering::Equal).then(a.key.cmp(&b.key))
        });
        Charts { width_s: w, stages: series, memory: lines(memory, t0, w), cost: cumulative(cost, t0, w) }
    }
}

impl Observer for LiveCharts {
    fn observe(&self, ev: &Event) {
        let Ok(mut st) = self.state.lock() else { return };
        st.events += 1;
        st.latest_ms = st.latest_ms.max(ev.t_ms);
        if st.t0.is_none() {
            st.t0 = Some(ev.ts as f64 / 1e6 - ev.t_ms / 1000.0);
        }
        let w = self.width;
        let b = (ev.t_ms / (1000.0 * w)).floor() as i64;
        if let Some(c) = ev.cost_usd {
            *st.cost.entry(b).or_default() += c;
        }
        if ev.kind == "sample"
            && let (Some(name), Some(v)) = (ev.name.as_deref(), ev.value)
            && name.ends_with("_rss_bytes")
        {
            // A process is its worker's and its own (workers' `runner_rss_bytes` have no agent).
            let proc = format!("{}/{}", ev.worker.as_deref().unwrap_or(""), ev.agent.as_deref().unwrap_or(""));
            let e = st.memory.entry(name.to_string()).or_default().entry(b).or_default().entry(proc).or_default();
            e.0 += v;
            e.1 += 1.0;
        }
        let key = (Arc::clone(&ev.phase), Arc::clone(&ev.stage));
        let measured = ev.ok.is_some() && ev.kind != "stage";
        let is_end = ev.kind == "stage" && ev.name.as_deref() == Some("end");
        let is_users = ev.kind == "users" && ev.value.is_some();
        if !(measured || is_end || is_users || st.stages.contains_key(&key)) {
            return;
        }
        let ls = st.stages.entry(key).or_insert_with(|| LiveStage {
            acc: StageAcc { key: format!("{}/{}", ev.phase, ev.stage), ..Default::default() },
            ..Default::default()
        });
        ls.latest_ms = ls.latest_ms.max(ev.t_ms);
        if is_end {
            ls.acc.end = Some(ls.acc.end.map_or(b, |e| e.max(b)));
            ls.acc.users.push((b, String::new(), None));
            // The stage is over: nothing more comes for its buckets (a row a worker relays
            // later is still counted, its latency not).
            for (k, o) in std::mem::take(&mut ls.open) {
                ls.acc.buckets.insert(k, (o.n, o.fails, o.quantiles()));
            }
        }
        if is_users {
            ls.acc.users.push((b, ev.worker.as_deref().unwrap_or("").to_string(), ev.value));
        }
        if measured {
            if let Some(done) = ls.acc.buckets.get_mut(&b) {
                // A row later than the bucket was kept open for: counted, its latency not.
                done.0 += 1.0;
                done.1 += f64::from(u8::from(ev.ok == Some(false)));
            } else {
                let o = ls.open.entry(b).or_default();
                o.n += 1.0;
                o.fails += f64::from(u8::from(ev.ok == Some(false)));
                if let Some(l) = ev.latency_ms {
                    o.lat.push(l);
                }
            }
        }
        // Close the buckets the stage's clock has left behind.
        let latest = ls.latest_ms;
        while let Some((&first, _)) = ls.open.iter().next() {
            if (first + 1) as f64 * w * 1000.0 + LATE_MS >= latest {
                break;
            }
            if let Some(o) = ls.open.remove(&first) {
                ls.acc.buckets.insert(first, (o.n, o.fails, o.quantiles()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t_ms: f64, stage: &str, kind: &'static str) -> Event {
        Event {
            t_ms,
            ts: 1_796_000_000_000_000 + (t_ms * 1000.0) as i64,
            phase: "p".into(),
            stage: stage.into(),
            driver: "d".into(),
            kind: kind.into(),
            ..Event::default()
        }
    }

    /// The same events, live and from their Parquet file, give the same charts.
    #[test]
    fn the_live_charts_are_the_analysis_charts() {
        let mut evs = Vec::new();
        for i in 0..500u32 {
            let t = 100.0 + i as f64 * 13.7;
            let mut e = ev(t, "load", "http").ok(i % 17 != 0).latency_ms(1.0 + (i * 7919 % 97) as f64 / 3.0);
            e.name = Some("x".into());
            evs.push(e);
            if i % 50 == 0 {
                let mut u = ev(t, "load", "users").value((i / 50) as f64, "count");
                u.worker = Some(if i % 100 == 0 { "wa" } else { "wb" }.into());
                evs.push(u);
                evs.push(ev(t, "load", "sample").name("runner_rss_bytes").value(1e6 + i as f64, "bytes"));
                let mut c = ev(t, "load", "llm_call").ok(true);
                c.cost_usd = Some(0.01);
                evs.push(c);
            }
        }
        // A stall: nothing for 3 s, then the stage ends; a second stage with one event.
        evs.push(ev(10_000.0, "load", "stage").name("end").ok(true));
        evs.push(ev(10_500.0, "other", "exec").ok(false).latency_ms(5.0));
        evs.push(ev(10_600.0, "other", "stage").name("end").ok(false));
        let dir = tempfile::tempdir().unwrap();
        let jsonl = dir.path().join("events.jsonl");
        let (sink, handle) = crate::events::EventSink::open(&jsonl, Default::default()).unwrap();
        let live = LiveCharts::new(10.5);
        for e in &evs {
            sink.send(e);
            live.observe(e);
        }
        handle.close().unwrap();
        let parquet = dir.path().join("events.parquet");
        crate::events::parquet::jsonl_to_parquet(&jsonl, &parquet).unwrap();
        let path = PlRefPath::new(parquet.to_string_lossy().as_ref());
        let lf = LazyFrame::scan_parquet(path, ScanArgsParquet::default()).unwrap();
        let from_file = compute(&lf).unwrap();
        let now = live.charts();
        assert_eq!(from_file.width_s, 1.0);
        let close = |a: &Option<f64>, b: &Option<f64>| match (a, b) {
            (Some(x), Some(y)) => (x - y).abs() < 1e-9,
            (None, None) => true,
            _ => false,
        };
        assert_eq!(now.stages.len(), 2);
        for (a, b) in now.stages.iter().zip(&from_file.stages) {
            assert_eq!(
                (&a.key, &a.t, &a.throughput, &a.failures, &a.users),
                (&b.key, &b.t, &b.throughput, &b.failures, &b.users)
            );
            for (x, y) in [(&a.p50, &b.p50), (&a.p95, &b.p95), (&a.p99, &b.p99)] {
                assert!(x.iter().zip(y).all(|(x, y)| close(x, y)), "{x:?} vs {y:?}");
            }
        }
        // While a stage runs, its newest bucket (still filling) is not shown live.
        let running = LiveCharts::new(10.5);
        // (Up to t = 1.5 s: second 0 is shown, second 1 is filling.)
        evs.iter().take(100).for_each(|e| running.observe(e));
        let partial = running.charts();
        assert_eq!(partial.stages[0].t.len(), 1, "{:?}", partial.stages[0].t);
        let load = &now.stages[0];
        assert_eq!(load.t.len(), 11, "from the first second to the stage's end, the stall as zeros");
        assert_eq!(&load.throughput[7..], &[0.0, 0.0, 0.0, 0.0]);
        assert_eq!(load.users.as_ref().unwrap().last(), Some(&Some(0.0)), "users end with their stage");
        assert_eq!(now.memory, from_file.memory);
        assert_eq!(now.cost, from_file.cost);
        assert!((now.cost.as_ref().unwrap().v.last().unwrap() - 0.10).abs() < 1e-12);
    }

    #[test]
    fn widths_keep_long_runs_near_two_thousand_points() {
        assert_eq!(width_for(30.0), 1.0);
        assert_eq!(width_for(2000.0), 1.0);
        assert_eq!(width_for(8.0 * 3600.0), 15.0);
        assert_eq!(width_for(10.0 * 86400.0), 600.0);
    }
}
