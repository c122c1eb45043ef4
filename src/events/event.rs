//! One event row — the schema's single declaration (`event_schema!` derives the column list and
//! readers from it) — and the per-stage `Emitter` drivers use to make them. Context columns
//! (phase, stage, driver) are shared `Arc<str>`s so emitting an event allocates nothing for
//! them; `seq` is assigned by the sink so it is contiguous across concurrent stages.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::schema::event_schema;
use super::sink::EventSink;
use crate::clock::{Clock, round_us};

event_schema! {
    /// A flat event. Column meanings are in `docs/events.md`.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
    pub struct Event {
        /// Assigned by the sink, which writes it in front of the serialized row.
        #[serde(skip_serializing)]
        pub seq: u64 => U64,
        /// Milliseconds since run start on the run clock (monotonic; virtual under the virtual clock).
        pub t_ms: f64 => F64,
        /// Wall-clock UTC, microseconds since the Unix epoch; written as RFC 3339 text.
        #[serde(with = "ts_format")]
        pub ts: i64 => Time,
        pub phase: Arc<str> => Str,
        pub stage: Arc<str> => Str,
        pub driver: Arc<str> => Str,
        pub kind: Cow<'static, str> => Str,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub name: Option<Arc<str>> => Str,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub agent: Option<Arc<str>> => Str,
        /// The `planrun worker` (on whichever host) that made the row or runs its agent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub worker: Option<Arc<str>> => Str,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ok: Option<bool> => Bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub latency_ms: Option<f64> => F64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub value: Option<f64> => F64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub unit: Option<Cow<'static, str>> => Str,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub error: Option<String> => Str,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub bytes: Option<i64> => I64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub tokens_in: Option<i64> => I64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub tokens_out: Option<i64> => I64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub cost_usd: Option<f64> => F64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub status: Option<i64> => I64,
        /// The request method (HTTP).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub method: Option<Cow<'static, str>> => Str,
        /// What sort of failure, as a fixed word a criterion can compare (`connect`, `timeout`, …).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub error_kind: Option<Cow<'static, str>> => Str,
        /// Time from the actual send to the response, where `latency_ms` counts from the
        /// intended send time (open-model load: the coordinated-omission-free figure's partner).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub service_ms: Option<f64> => F64,
        /// Anything else, as JSON text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub attrs: Option<String> => Str,
    }
}

/// The kind of a `bench` stage's timed runs, which the criteria's `ratio(A, B)`, the live
/// abort checks and the analysis's benchmark table read (one name, declared here).
pub const BENCH_RUN: &str = "bench_run";

impl Event {
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }
    pub fn agent(mut self, agent: impl Into<Arc<str>>) -> Self {
        self.agent = Some(agent.into());
        self
    }
    pub fn ok(mut self, ok: bool) -> Self {
        self.ok = Some(ok);
        self
    }
    pub fn latency(self, d: Duration) -> Self {
        self.latency_ms(d.as_secs_f64() * 1000.0)
    }
    /// Latency in ms, kept to microsecond precision (finer digits are timer noise).
    pub fn latency_ms(mut self, ms: f64) -> Self {
        self.latency_ms = Some(round_us(ms));
        self
    }
    pub fn value(mut self, v: f64, unit: impl Into<Cow<'static, str>>) -> Self {
        self.value = Some(v);
        self.unit = Some(unit.into());
        self
    }
    pub fn error(mut self, e: impl Into<String>) -> Self {
        self.error = Some(e.into());
        self
    }
    pub fn status(mut self, s: i64) -> Self {
        self.status = Some(s);
        self
    }
    pub fn bytes(mut self, b: i64) -> Self {
        self.bytes = Some(b);
        self
    }
    pub fn attrs(mut self, v: serde_json::Value) -> Self {
        self.attrs = Some(v.to_string());
        self
    }
}

/// Sees every event a stage emits, as it is emitted (the runner's live `abort = true` checks).
pub trait Observer: Send + Sync {
    fn observe(&self, ev: &Event);
}

/// Makes events for one stage: fills the context columns and the clock readings, counts what it
/// sent (for progress), and hands events to the sink. Rows about an agent a worker runs get the
/// `worker` column (`place`), whoever emits them.
#[derive(Clone)]
pub struct Emitter {
    sink: EventSink,
    clock: Clock,
    phase: Arc<str>,
    stage: Arc<str>,
    driver: Arc<str>,
    count: Arc<AtomicU64>,
    watch: Option<Arc<dyn Observer>>,
    placed: Arc<Placed>,
}

/// Which worker runs which agent, shared by every clone of a stage's emitter.
#[derive(Default)]
struct Placed {
    any: std::sync::atomic::AtomicBool,
    map: std::sync::RwLock<std::collections::HashMap<Arc<str>, Arc<str>>>,
}

impl Emitter {
    pub fn new(sink: EventSink, clock: Clock, phase: &str, stage: &str, driver: &str) -> Self {
        Emitter {
            sink,
            clock,
            phase: phase.into(),
            stage: stage.into(),
            driver: driver.into(),
            count: Arc::new(AtomicU64::new(0)),
            watch: None,
            placed: Arc::default(),
        }
    }

    /// From now on, rows about `agent` say that `worker` runs it.
    pub fn place(&self, agent: &str, worker: &Arc<str>) {
        if let Ok(mut m) = self.placed.map.write() {
            m.insert(agent.into(), Arc::clone(worker));
            self.placed.any.store(true, Ordering::Release);
        }
    }

    /// Emit a row a worker made for this stage: it keeps its own clock readings and columns,
    /// but the context columns are this stage's (a worker cannot write into another stage) and
    /// `worker` names it; its agent ids are prefixed with the worker's name (`W-u3`), so users
    /// of different workers stay apart.
    pub fn relay(&self, mut ev: Event, worker: &Arc<str>) {
        ev.phase = Arc::clone(&self.phase);
        ev.stage = Arc::clone(&self.stage);
        ev.driver = Arc::clone(&self.driver);
        if let Some(a) = &ev.agent
            && !a.starts_with(&format!("{worker}-"))
        {
            ev.agent = Some(format!("{worker}-{a}").into());
        }
        ev.worker = Some(Arc::clone(worker));
        self.emit(ev);
    }

    /// Also show every event to `watch` (the runner's live abort checks).
    pub fn with_watch(mut self, watch: Option<Arc<dyn Observer>>) -> Self {
        self.watch = watch;
        self
    }

    /// A new event of `kind`, stamped now.
    pub fn event(&self, kind: impl Into<Cow<'static, str>>) -> Event {
        Event {
            t_ms: self.clock.elapsed_ms(),
            ts: self.clock.wall_us(),
            phase: Arc::clone(&self.phase),
            stage: Arc::clone(&self.stage),
            driver: Arc::clone(&self.driver),
            kind: kind.into(),
            ..Event::default()
        }
    }

    pub fn emit(&self, mut ev: Event) {
        if self.placed.any.load(Ordering::Acquire)
            && ev.worker.is_none()
            && let Some(a) = &ev.agent
            && let Ok(m) = self.placed.map.read()
        {
            ev.worker = m.get(a).cloned();
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Some(w) = &self.watch {
            w.observe(&ev);
        }
        self.sink.send(&ev);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// `ts` as RFC 3339 UTC with microseconds, e.g. `2026-11-22T11:53:00.123456Z`.
pub mod ts_format {
    use chrono::{DateTime, SecondsFormat};
    use serde::{Deserialize, Deserializer, Serializer};
    use std::cell::RefCell;

    thread_local! {
        // (second, "YYYY-MM-DDTHH:MM:SS", scratch): formatting the date part is the expensive
        // bit, and events come many per second; the scratch buffer saves an allocation each.
        static LAST: RefCell<(i64, String, String)> = const { RefCell::new((i64::MIN, String::new(), String::new())) };
    }

    /// Call `f` with the formatted timestamp, without allocating.
    pub fn with_formatted<R>(us: i64, f: impl FnOnce(&str) -> R) -> R {
        use std::fmt::Write;
        let secs = us.div_euclid(1_000_000);
        let micros = us.rem_euclid(1_000_000);
        LAST.with(|cell| {
            let mut guard = cell.borrow_mut();
            let (last, prefix, scratch) = &mut *guard;
            if *last != secs {
                let dt = DateTime::from_timestamp(secs, 0).unwrap_or_default();
                *prefix = dt.to_rfc3339_opts(SecondsFormat::Secs, true).trim_end_matches('Z').to_string();
                *last = secs;
            }
            scratch.clear();
            let _ = write!(scratch, "{prefix}.{micros:06}Z");
            f(scratch)
        })
    }

    pub fn format(us: i64) -> String {
        with_formatted(us, str::to_string)
    }

    pub fn parse(s: &str) -> Option<i64> {
        DateTime::parse_from_rfc3339(s).ok().map(|d| d.timestamp_micros())
    }

    pub fn serialize<S: Serializer>(us: &i64, s: S) -> Result<S::Ok, S::Error> {
        with_formatted(*us, |t| s.serialize_str(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad timestamp \"{s}\"")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ts_round_trips() {
        let us = 1_795_000_000_123_456;
        let s = ts_format::format(us);
        assert!(s.ends_with(".123456Z"), "{s}");
        assert_eq!(ts_format::parse(&s), Some(us));
    }

    #[test]
    fn json_round_trip_keeps_every_column() {
        let ev = Event {
            seq: 3,
            t_ms: 12.5,
            ts: 1_795_000_000_000_001,
            phase: "p".into(),
            stage: "s".into(),
            driver: "exec".into(),
            kind: "exec".into(),
            name: Some("n".into()),
            ok: Some(false),
            latency_ms: Some(1.25),
            status: Some(2),
            error: Some("boom".into()),
            attrs: Some("{\"a\":1}".into()),
            ..Event::default()
        };
        // The sink writes `seq` in front of the serialized row.
        let line = format!("{{\"seq\":3,{}", &serde_json::to_string(&ev).unwrap()[1..]);
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), ev);
    }
}
