//! The rows of the metrics, typed: one struct per kind of row (a level's aggregates, an error
//! count, an agent, a time-series point), serialized in the field order report.json and the
//! templates show. Each reads itself from the polars frame `metrics` computes — the one place a
//! metric's column name is spelled on the way out — so findings and the baseline read fields,
//! and a misspelt metric is a compile error. Computing the values is `metrics`' job.

use polars::prelude::DataFrame;
use serde::Serialize;

use super::frame::Cells;

/// The key of a level's row: nothing for the plan, then phase, stage, (kind, name).
pub trait LevelKey: Serialize + Default {
    fn read(c: &Cells, i: usize) -> Self;
    /// The phase ("" at plan level or when null).
    fn phase(&self) -> &str {
        ""
    }
    /// The stage ("" above stage level or when null).
    fn stage(&self) -> &str {
        ""
    }
    /// What breaks ties between rows of the same stage and first event (kind, name).
    fn tie(&self) -> [&str; 2] {
        ["", ""]
    }
}

fn or_empty(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("")
}

/// The plan level has one row and no key.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PlanKey {}

impl LevelKey for PlanKey {
    fn read(_: &Cells, _: usize) -> Self {
        PlanKey {}
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PhaseKey {
    pub phase: Option<String>,
}

impl LevelKey for PhaseKey {
    fn read(c: &Cells, i: usize) -> Self {
        PhaseKey { phase: c.str("phase", i) }
    }
    fn phase(&self) -> &str {
        or_empty(&self.phase)
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct StageKey {
    pub phase: Option<String>,
    pub stage: Option<String>,
}

impl LevelKey for StageKey {
    fn read(c: &Cells, i: usize) -> Self {
        StageKey { phase: c.str("phase", i), stage: c.str("stage", i) }
    }
    fn phase(&self) -> &str {
        or_empty(&self.phase)
    }
    fn stage(&self) -> &str {
        or_empty(&self.stage)
    }
}

/// A (kind, name) within a stage; `name` may be null (an event without one).
#[derive(Clone, Debug, Default, Serialize)]
pub struct NameKey {
    pub phase: Option<String>,
    pub stage: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
}

impl LevelKey for NameKey {
    fn read(c: &Cells, i: usize) -> Self {
        NameKey { phase: c.str("phase", i), stage: c.str("stage", i), kind: c.str("kind", i), name: c.str("name", i) }
    }
    fn phase(&self) -> &str {
        or_empty(&self.phase)
    }
    fn stage(&self) -> &str {
        or_empty(&self.stage)
    }
    fn tie(&self) -> [&str; 2] {
        [or_empty(&self.kind), or_empty(&self.name)]
    }
}

impl NameKey {
    pub fn kind(&self) -> &str {
        or_empty(&self.kind)
    }
    pub fn name(&self) -> &str {
        or_empty(&self.name)
    }
}

/// A level's aggregates (docs/templates.md lists them). Latency in ms; null where nothing was
/// measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub count: u64,
    pub ok: u64,
    pub failed: u64,
    pub timeouts: u64,
    /// ok / (ok + failed); null when no event reported `ok`.
    pub success_rate: Option<f64>,
    pub latency_min: Option<f64>,
    pub latency_mean: Option<f64>,
    pub latency_max: Option<f64>,
    pub latency_stddev: Option<f64>,
    pub cost_usd: Option<f64>,
    pub tokens_in: Option<i64>,
    pub tokens_out: Option<i64>,
    pub t_first_ms: Option<f64>,
    pub t_last_ms: Option<f64>,
    pub latency_p50: Option<f64>,
    pub latency_p90: Option<f64>,
    pub latency_p95: Option<f64>,
    pub latency_p99: Option<f64>,
    pub latency_p999: Option<f64>,
    /// The scope's active window, in seconds.
    pub window_s: Option<f64>,
    /// Events per second over `window_s`.
    pub throughput: Option<f64>,
}

impl Stats {
    fn read(c: &Cells, i: usize) -> Stats {
        Stats {
            count: c.u64("count", i).unwrap_or(0),
            ok: c.u64("ok", i).unwrap_or(0),
            failed: c.u64("failed", i).unwrap_or(0),
            timeouts: c.u64("timeouts", i).unwrap_or(0),
            success_rate: c.f64("success_rate", i),
            latency_min: c.f64("latency_min", i),
            latency_mean: c.f64("latency_mean", i),
            latency_max: c.f64("latency_max", i),
            latency_stddev: c.f64("latency_stddev", i),
            cost_usd: c.f64("cost_usd", i),
            tokens_in: c.i64("tokens_in", i),
            tokens_out: c.i64("tokens_out", i),
            t_first_ms: c.f64("t_first_ms", i),
            t_last_ms: c.f64("t_last_ms", i),
            latency_p50: c.f64("latency_p50", i),
            latency_p90: c.f64("latency_p90", i),
            latency_p95: c.f64("latency_p95", i),
            latency_p99: c.f64("latency_p99", i),
            latency_p999: c.f64("latency_p999", i),
            window_s: None,
            throughput: None,
        }
    }

    /// Window and throughput over `win` seconds (without stage records — a crashed run — the
    /// events' own span); no cost where nothing was priced.
    pub fn finish(&mut self, win: Option<f64>) {
        let win = win.or_else(|| {
            let (a, b) = (self.t_first_ms?, self.t_last_ms?);
            (b > a).then(|| (b - a) / 1000.0)
        });
        self.window_s = win.filter(|w| w.is_finite());
        self.throughput = win.map(|w| self.count as f64 / w).filter(|t| t.is_finite());
        if self.cost_usd == Some(0.0) && self.tokens_in.is_none() {
            self.cost_usd = None;
        }
    }
}

/// One row of a level: its key, then its aggregates.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LevelRow<K> {
    #[serde(flatten)]
    pub key: K,
    #[serde(flatten)]
    pub stats: Stats,
}

impl<K: LevelKey> LevelRow<K> {
    pub fn read_all(df: &DataFrame) -> Vec<LevelRow<K>> {
        let c = Cells::new(df);
        (0..df.height()).map(|i| LevelRow { key: K::read(&c, i), stats: Stats::read(&c, i) }).collect()
    }
}

pub type PlanRow = LevelRow<PlanKey>;
pub type PhaseRow = LevelRow<PhaseKey>;
pub type StageRow = LevelRow<StageKey>;
pub type NameRow = LevelRow<NameKey>;

/// How often an error message occurred in a stage.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorRow {
    pub phase: Option<String>,
    pub stage: Option<String>,
    pub error: Option<String>,
    pub count: u64,
}

impl ErrorRow {
    pub fn read_all(df: &DataFrame) -> Vec<ErrorRow> {
        let c = Cells::new(df);
        (0..df.height())
            .map(|i| ErrorRow {
                phase: c.str("phase", i),
                stage: c.str("stage", i),
                error: c.str("error", i),
                count: c.u64("count", i).unwrap_or(0),
            })
            .collect()
    }
}

/// One agent's measured events in a stage.
#[derive(Clone, Debug, Serialize)]
pub struct AgentRow {
    pub phase: Option<String>,
    pub stage: Option<String>,
    pub agent: Option<String>,
    pub count: u64,
    pub latency_mean: Option<f64>,
    pub latency_p95: Option<f64>,
    pub failed: u64,
}

impl AgentRow {
    pub fn read_all(df: &DataFrame) -> Vec<AgentRow> {
        let c = Cells::new(df);
        (0..df.height())
            .map(|i| AgentRow {
                phase: c.str("phase", i),
                stage: c.str("stage", i),
                agent: c.str("agent", i),
                count: c.u64("count", i).unwrap_or(0),
                latency_mean: c.f64("latency_mean", i),
                latency_p95: c.f64("latency_p95", i),
                failed: c.u64("failed", i).unwrap_or(0),
            })
            .collect()
    }

    pub fn phase(&self) -> &str {
        or_empty(&self.phase)
    }
    pub fn stage(&self) -> &str {
        or_empty(&self.stage)
    }
    pub fn agent(&self) -> &str {
        or_empty(&self.agent)
    }
}

/// A stage's time series in windows of `window_ms`.
#[derive(Clone, Debug, Serialize)]
pub struct Series {
    pub phase: String,
    pub stage: String,
    pub window_ms: f64,
    pub points: Vec<Point>,
}

/// One memory series (a byte-valued sample of one process, or the fleet's mean) in a stage,
/// with its growth by `growth`'s rule (docs/criteria.md: a line fitted after a warm-up), so a
/// process that warms up and levels off is not read as a leak. The host's own
/// `system_memory_used` is left out: other processes move it.
#[derive(Clone, Debug, Serialize)]
pub struct MemorySeries {
    pub phase: String,
    pub stage: String,
    pub name: String,
    pub agent: Option<String>,
    pub samples: u64,
    pub growth: Option<f64>,
}

/// One window of a series.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    /// The window's start on the run clock.
    pub t_ms: f64,
    pub count: u64,
    pub failed: u64,
    pub latency_p50: Option<f64>,
    pub latency_p95: Option<f64>,
    /// Mean of the byte-valued samples (`unit == "bytes"`) in the window: memory.
    pub bytes_mean: Option<f64>,
    /// Events per second.
    pub rate: f64,
}

#[cfg(test)]
mod tests {
    use polars::prelude::*;

    use super::*;

    #[test]
    fn rows_read_their_columns_and_serialize_key_first() {
        let df = df!(
            "phase" => ["p"], "stage" => ["s"], "kind" => ["call"], "name" => [None::<&str>],
            "count" => [3u64], "ok" => [2u64], "failed" => [1u64], "timeouts" => [0u64],
            "latency_p50" => [f64::NAN], "tokens_in" => [7i64],
        )
        .unwrap();
        let rows = NameRow::read_all(&df);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!((r.key.phase(), r.key.stage(), r.key.kind(), r.key.name()), ("p", "s", "call", ""));
        assert_eq!((r.stats.count, r.stats.ok, r.stats.failed, r.stats.tokens_in), (3, 2, 1, Some(7)));
        // NaN is no data; a column the frame lacks reads as null.
        assert_eq!((r.stats.latency_p50, r.stats.latency_max), (None, None));
        let json = serde_json::to_value(r).unwrap();
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(&keys[..6], ["phase", "stage", "kind", "name", "count", "ok"]);
        assert_eq!(json["name"], serde_json::Value::Null);
        assert_eq!(json["count"], serde_json::json!(3));
        // The plan's row has no key fields at all.
        let plan = serde_json::to_value(PlanRow::default()).unwrap();
        assert_eq!(plan.as_object().unwrap().keys().next().map(String::as_str), Some("count"));
    }

    #[test]
    fn finish_divides_by_the_window_or_the_events_span() {
        let mut s = Stats { count: 20, t_first_ms: Some(1000.0), t_last_ms: Some(5000.0), ..Stats::default() };
        s.finish(Some(10.0));
        assert_eq!((s.window_s, s.throughput), (Some(10.0), Some(2.0)));
        s.finish(None);
        assert_eq!((s.window_s, s.throughput), (Some(4.0), Some(5.0)));
    }
}
