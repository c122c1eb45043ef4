//! Live checks for `abort = true` criteria, like k6's abortOnFail: while a stage runs, every
//! event its emitter sends also updates running aggregates (counts, Welford mean/variance,
//! an HDR histogram for percentiles, mergeable least-squares chunks for growth/slope, so that
//! growth can leave its warm-up out as the analysis does), and the runner checks them about
//! every 2 s of stage clock time, stopping the stage with a `Violation` when one does not hold.
//! The final verdict still comes from the full analysis (`analyze::compile`); these are running
//! approximations of the same semantics (percentiles to 3 significant digits). Events' columns
//! are read by name through the event schema (`Event::cell`).

use std::sync::Mutex;

use hdrhistogram::Histogram;

use crate::criteria::{Agg, Check, Cmp, Filter, Lhs, Lit, Named};
use crate::events::{Cell, Event, Observer};

/// A field's value on one event.
enum V<'a> {
    Num(f64),
    Str(&'a str),
    Bool(bool),
    Null,
}

/// Column `name` of `ev`, read through the event schema.
fn field<'a>(ev: &'a Event, name: &str) -> V<'a> {
    match ev.cell(name) {
        Some(Cell::Str(Some(s))) => V::Str(s),
        Some(Cell::Bool(Some(b))) => V::Bool(b),
        Some(c) => c.number().map_or(V::Null, V::Num),
        None => V::Null,
    }
}

fn matches(f: &Filter, ev: &Event) -> bool {
    match f {
        Filter::And(a, b) => matches(a, ev) && matches(b, ev),
        Filter::Or(a, b) => matches(a, ev) || matches(b, ev),
        Filter::Not(a) => !matches(a, ev),
        Filter::Truthy(name) => matches!(field(ev, name), V::Bool(true)),
        Filter::In { field: name, list } => list.iter().any(|l| equal(&field(ev, name), l)),
        Filter::Cmp { field: name, op, lit } => {
            let v = field(ev, name);
            match (op, lit) {
                (Cmp::Eq, l) => equal(&v, l),
                (Cmp::Ne, Lit::Null) => !matches!(v, V::Null),
                (Cmp::Ne, l) => !matches!(v, V::Null) && !equal(&v, l),
                (op, Lit::Num(n)) => match v {
                    V::Num(x) => op.holds(x, *n),
                    _ => false,
                },
                _ => false,
            }
        }
    }
}

fn equal(v: &V<'_>, l: &Lit) -> bool {
    match (v, l) {
        (V::Null, Lit::Null) => true,
        (V::Num(a), Lit::Num(b)) => a == b,
        (V::Str(a), Lit::Str(b)) => a == b,
        (V::Bool(a), Lit::Bool(b)) => a == b,
        _ => false,
    }
}

fn is_timeout(ev: &Event) -> bool {
    ev.error.as_deref().is_some_and(|e| {
        let e = e.to_ascii_lowercase();
        e.contains("timeout") || e.contains("timed out")
    })
}

/// Least-squares moments of (t, y) points: mergeable (Chan et al.'s pairwise update), so a
/// series can be kept as a bounded list of chunks and refitted over any run of them.
#[derive(Clone, Copy, Debug)]
struct Moments {
    n: f64,
    t_min: f64,
    t_max: f64,
    mean_t: f64,
    mean_y: f64,
    /// Σ (t − mean_t)²
    m2_t: f64,
    /// Σ (t − mean_t)(y − mean_y)
    c_ty: f64,
}

impl Moments {
    fn point(t: f64, y: f64) -> Moments {
        Moments { n: 1.0, t_min: t, t_max: t, mean_t: t, mean_y: y, m2_t: 0.0, c_ty: 0.0 }
    }

    fn merge(self, o: Moments) -> Moments {
        let n = self.n + o.n;
        let (dt, dy) = (o.mean_t - self.mean_t, o.mean_y - self.mean_y);
        let w = self.n * o.n / n;
        Moments {
            n,
            t_min: self.t_min.min(o.t_min),
            t_max: self.t_max.max(o.t_max),
            mean_t: self.mean_t + dt * o.n / n,
            mean_y: self.mean_y + dy * o.n / n,
            m2_t: self.m2_t + o.m2_t + dt * dt * w,
            c_ty: self.c_ty + o.c_ty + dt * dy * w,
        }
    }

    /// Slope per ms of the fitted line, when there is one.
    fn slope(&self) -> Option<f64> {
        (self.n >= 2.0 && self.m2_t > 0.0).then(|| self.c_ty / self.m2_t)
    }
}

/// A time series for `growth` and `slope`, as at most `2 * CHUNKS` chunks of moments in arrival
/// order. Exact (one point per chunk) up to `2 * CHUNKS` points; past that, neighbours merge, so
/// the warm-up boundary falls on a chunk boundary: within 1/`CHUNKS` of the points, and always
/// on the side that leaves out more.
struct Series {
    chunks: Vec<Moments>,
    per_chunk: f64,
}

const CHUNKS: usize = 256;

impl Series {
    fn new() -> Series {
        Series { chunks: Vec::new(), per_chunk: 1.0 }
    }

    fn add(&mut self, t: f64, y: f64) {
        let p = Moments::point(t, y);
        match self.chunks.last_mut() {
            Some(last) if last.n < self.per_chunk => *last = last.merge(p),
            _ => self.chunks.push(p),
        }
        if self.chunks.len() > 2 * CHUNKS {
            self.chunks =
                self.chunks.chunks(2).map(|c| c.iter().copied().reduce(Moments::merge).unwrap_or(c[0])).collect();
            self.per_chunk *= 2.0;
        }
    }

    fn all(&self) -> Option<Moments> {
        self.chunks.iter().copied().reduce(Moments::merge)
    }

    /// Slope per second over every point.
    fn slope(&self) -> Option<f64> {
        self.all().filter(|m| m.n > 2.0)?.slope().map(|b| b * 1000.0)
    }

    /// The `growth` figure, as `analyze::compile` defines it: the line fitted to the points at or
    /// after the first `warmup` share of the time span, its change over the span, relative to the
    /// magnitude of its value at the first point. While the stage runs, the span the warm-up is a
    /// share of reaches at least to `expected_end` (when the stage has a planned length): the
    /// series' final span is not known yet, and a quarter of the span seen so far would take a
    /// warm-up still in view for growth.
    fn growth(&self, warmup: f64, relative: bool, expected_end: Option<f64>) -> Option<f64> {
        let all = self.all().filter(|m| m.n > 2.0)?;
        let end = expected_end.map_or(all.t_max, |e| e.max(all.t_max));
        let cutoff = all.t_min + warmup * (end - all.t_min);
        let steady = self.chunks.iter().filter(|c| c.t_min >= cutoff).copied().reduce(Moments::merge)?;
        let slope = steady.slope()?;
        let start = steady.mean_y + slope * (all.t_min - steady.mean_t);
        let change = slope * (all.t_max - all.t_min);
        if !relative {
            return Some(change);
        }
        (start != 0.0).then(|| change / start.abs())
    }
}

/// Running aggregates for one criterion.
struct Live {
    n: f64,
    ok: f64,
    timeouts: f64,
    crashes: f64,
    sum: f64,
    min: f64,
    max: f64,
    mean: f64,
    m2: f64,
    /// For `growth` and `slope`.
    series: Option<Series>,
    hist: Option<Histogram<u64>>,
}

impl Live {
    fn new(agg: Option<&Agg>) -> Live {
        Live {
            n: 0.0,
            ok: 0.0,
            timeouts: 0.0,
            crashes: 0.0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            mean: 0.0,
            m2: 0.0,
            series: matches!(agg, Some(Agg::Growth { .. } | Agg::Slope)).then(Series::new),
            hist: matches!(agg, Some(Agg::Quantile(_) | Agg::Tail(_))).then(|| Histogram::new(3)).and_then(Result::ok),
        }
    }

    fn add(&mut self, t: f64, y: f64) {
        self.n += 1.0;
        self.sum += y;
        self.min = self.min.min(y);
        self.max = self.max.max(y);
        let dy = y - self.mean;
        self.mean += dy / self.n;
        self.m2 += dy * (y - self.mean);
        if let Some(s) = &mut self.series {
            s.add(t, y);
        }
        if let Some(h) = &mut self.hist {
            // Thousandths, so sub-millisecond latencies keep their precision.
            let _ = h.record((y.max(0.0) * 1000.0) as u64);
        }
    }
}

struct Watched {
    text: String,
    check: Check,
    threshold: f64,
    live: Live,
    /// `ratio(A, B)`'s B (A is `live`).
    den: Live,
}

/// Runs of each command a live `ratio(A, B)` waits for before it judges.
const MIN_RATIO_RUNS: f64 = 3.0;

/// The abort criteria of one running stage.
pub struct AbortWatch {
    stage_start_ms: f64,
    /// Clock time (ms) the stage is planned to end at, if it has a planned length.
    expected_end_ms: Option<f64>,
    checks: Mutex<Vec<Watched>>,
}

impl AbortWatch {
    /// `criteria` are (text, parsed check, threshold in the check's units).
    pub fn new(stage_start_ms: f64, criteria: Vec<(String, Check, f64)>) -> Option<AbortWatch> {
        if criteria.is_empty() {
            return None;
        }
        let checks = criteria
            .into_iter()
            .map(|(text, check, threshold)| {
                let live = Live::new(match &check.lhs {
                    Lhs::Agg { agg, .. } => Some(agg),
                    Lhs::Named(_) | Lhs::Ratio { .. } => None,
                });
                Watched { text, check, threshold, live, den: Live::new(None) }
            })
            .collect();
        Some(AbortWatch { stage_start_ms, expected_end_ms: None, checks: Mutex::new(checks) })
    }

    /// The stage's planned length in clock ms (scaled), which bounds `growth`'s warm-up from below
    /// while the stage runs.
    pub fn expecting(mut self, planned_ms: Option<f64>) -> AbortWatch {
        self.expected_end_ms = planned_ms.filter(|ms| *ms > 0.0).map(|ms| self.stage_start_ms + ms);
        self
    }
}

/// An abort criterion that does not hold: the stage's abort reason.
#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    /// The criterion as written.
    pub criterion: String,
    pub observed: f64,
    pub op: Cmp,
    pub limit: f64,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "abort criterion `{}` violated: observed {:.4}, limit {} {}",
            self.criterion,
            self.observed,
            self.op.as_str(),
            self.limit
        )
    }
}

impl From<Violation> for String {
    fn from(v: Violation) -> String {
        v.to_string()
    }
}

impl Observer for AbortWatch {
    /// Fold one event into every watched criterion.
    fn observe(&self, ev: &Event) {
        if ev.kind == "stage" {
            return;
        }
        let Ok(mut checks) = self.checks.lock() else { return };
        for w in checks.iter_mut() {
            match &w.check.lhs {
                Lhs::Named(_) => {
                    if ev.kind == "crash" {
                        w.live.crashes += 1.0;
                    }
                    if let Some(ok) = ev.ok {
                        w.live.add(ev.t_ms, if ok { 1.0 } else { 0.0 });
                        w.live.ok += f64::from(u8::from(ok));
                        w.live.timeouts += f64::from(u8::from(is_timeout(ev)));
                    }
                }
                Lhs::Ratio { num, den } => {
                    let (Some(name), Some(true), Some(ms)) = (ev.name.as_deref(), ev.ok, ev.latency_ms) else {
                        continue;
                    };
                    if ev.kind != crate::events::BENCH_RUN {
                        continue;
                    }
                    if name == num {
                        w.live.add(ev.t_ms, ms);
                    } else if name == den {
                        w.den.add(ev.t_ms, ms);
                    }
                }
                Lhs::Agg { field: f, filter, .. } => {
                    if filter.as_ref().is_some_and(|flt| !matches(flt, ev)) {
                        continue;
                    }
                    let y = match f.as_deref().map(|name| field(ev, name)) {
                        None => 0.0,
                        Some(V::Num(y)) => y,
                        Some(V::Bool(b)) => f64::from(u8::from(b)),
                        Some(_) => continue,
                    };
                    w.live.add(ev.t_ms, y);
                }
            }
        }
    }
}

impl AbortWatch {
    /// The first violated criterion, with what was observed, as of `now_ms`.
    pub fn violated(&self, now_ms: f64) -> Option<Violation> {
        let checks = self.checks.lock().ok()?;
        let window_s = ((now_ms - self.stage_start_ms) / 1000.0).max(1e-3);
        for w in checks.iter() {
            let l = &w.live;
            let value = match &w.check.lhs {
                Lhs::Named(Named::Crashes) => Some(l.crashes),
                // One cold run of each is no speed-up: judge from three of each.
                Lhs::Ratio { .. } if l.n < MIN_RATIO_RUNS || w.den.n < MIN_RATIO_RUNS || w.den.mean == 0.0 => None,
                Lhs::Ratio { .. } => Some(l.mean / w.den.mean),
                Lhs::Named(_) if l.n == 0.0 => None,
                Lhs::Named(Named::SuccessRate) => Some(l.ok / l.n),
                Lhs::Named(Named::ErrorRate) => Some(1.0 - l.ok / l.n),
                Lhs::Named(Named::TimeoutRate) => Some(l.timeouts / l.n),
                Lhs::Named(Named::Throughput) => Some(l.n / window_s),
                Lhs::Agg { agg: Agg::Count, .. } => Some(l.n),
                Lhs::Agg { agg: Agg::Rate, .. } => Some(l.n / window_s),
                Lhs::Agg { .. } if l.n == 0.0 => None,
                Lhs::Agg { agg, .. } => match agg {
                    Agg::Sum => Some(l.sum),
                    Agg::Mean => Some(l.mean),
                    Agg::Min => Some(l.min),
                    Agg::Max => Some(l.max),
                    Agg::Stddev if l.n > 1.0 => Some((l.m2 / (l.n - 1.0)).sqrt()),
                    Agg::Cov { floor } if l.n > 1.0 => {
                        // Below the floor, the spread is measured against the floor.
                        let mean = if *floor > 0.0 { l.mean.max(*floor) } else { l.mean };
                        Some((l.m2 / (l.n - 1.0)).sqrt() / mean)
                    }
                    Agg::Quantile(q) => l.hist.as_ref().map(|h| h.value_at_quantile(*q) as f64 / 1000.0),
                    Agg::Tail(q) if l.mean != 0.0 => {
                        l.hist.as_ref().map(|h| h.value_at_quantile(*q) as f64 / 1000.0 / l.mean)
                    }
                    Agg::Slope => l.series.as_ref().and_then(Series::slope),
                    Agg::Growth { warmup, relative } => {
                        l.series.as_ref().and_then(|s| s.growth(*warmup, *relative, self.expected_end_ms))
                    }
                    _ => None,
                },
            };
            if let Some(v) = value.filter(|v| v.is_finite())
                && !w.check.op.holds(v, w.threshold)
            {
                return Some(Violation { criterion: w.text.clone(), observed: v, op: w.check.op, limit: w.threshold });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::criteria::parse;

    fn ev(kind: &str, ok: bool, lat: f64) -> Event {
        Event { kind: kind.to_string().into(), ok: Some(ok), latency_ms: Some(lat), ..Event::default() }
    }

    #[test]
    fn error_rate_trips_and_filters_apply() {
        let w = AbortWatch::new(
            0.0,
            vec![
                ("error_rate < 0.5".into(), parse("error_rate < 0.5").unwrap(), 0.5),
                ("p95".into(), parse(r#"p95(latency_ms where kind == "call") < 100"#).unwrap(), 100.0),
            ],
        )
        .unwrap();
        for _ in 0..10 {
            w.observe(&ev("call", true, 10.0));
            w.observe(&ev("other", true, 5000.0));
        }
        assert_eq!(w.violated(1000.0), None);
        for _ in 0..30 {
            w.observe(&ev("call", false, 10.0));
        }
        let v = w.violated(2000.0).expect("error rate 30/50 violates < 0.5");
        assert_eq!((v.criterion.as_str(), v.observed), ("error_rate < 0.5", 0.6));
        assert!(v.to_string().starts_with("abort criterion `error_rate < 0.5` violated: observed 0.6000"), "{v}");
    }

    fn sample(t_ms: f64, value: f64) -> Event {
        Event { t_ms, kind: "sample".into(), value: Some(value), ..Event::default() }
    }

    #[test]
    fn a_warm_up_still_in_view_is_not_growth_in_a_stage_with_a_planned_length() {
        let watch = || AbortWatch::new(0.0, vec![("g".into(), parse("growth(value) < 0.1").unwrap(), 0.1)]).unwrap();
        let (planned, unplanned) = (watch().expecting(Some(20_000.0)), watch());
        // 8 s into a 20 s stage: a step from 4 to 6 at 5 s, flat after.
        for i in 0..8 {
            let ev = sample(i as f64 * 1000.0, if i < 5 { 4.0 } else { 6.0 });
            planned.observe(&ev);
            unplanned.observe(&ev);
        }
        // A quarter of the 7 s seen so far leaves the step in the fit; a quarter of the planned
        // 20 s leaves it out.
        assert!(unplanned.violated(8000.0).is_some_and(|v| v.observed > 0.4));
        assert_eq!(planned.violated(8000.0), None);

        // A leak is still one: 4 + 0.5 a second, seen after the planned warm-up.
        let leaking = watch().expecting(Some(20_000.0));
        for i in 0..8 {
            leaking.observe(&sample(i as f64 * 1000.0, 4.0 + 0.5 * i as f64));
        }
        let v = leaking.violated(8000.0).expect("a leak aborts");
        assert!((v.observed - 0.5 * 7.0 / 4.0).abs() < 1e-9, "{v}");
    }

    /// Pins what `field` reads for every column criteria can name, so a generated version can be
    /// checked against it.
    #[test]
    fn field_reads_every_criteria_column_with_its_kind() {
        use crate::criteria::{FieldKind, fields};
        let ev = Event {
            seq: 7,
            t_ms: 1.5,
            ts: 0,
            phase: "ph".into(),
            stage: "st".into(),
            driver: "dr".into(),
            kind: "k".into(),
            name: Some("n".into()),
            agent: Some("a".into()),
            worker: Some("w".into()),
            ok: Some(true),
            latency_ms: Some(2.5),
            value: Some(3.5),
            unit: Some("u".into()),
            error: Some("e".into()),
            bytes: Some(4),
            tokens_in: Some(5),
            tokens_out: Some(6),
            cost_usd: Some(7.5),
            status: Some(200),
            method: Some("GET".into()),
            error_kind: Some("status".into()),
            service_ms: Some(8.5),
            attrs: Some("{}".into()),
        };
        let read: Vec<String> = fields()
            .iter()
            .map(|(name, kind)| match (field(&ev, name), kind) {
                (V::Num(x), FieldKind::Num) => format!("{name}={x}"),
                (V::Str(x), FieldKind::Str) => format!("{name}={x}"),
                (V::Bool(x), FieldKind::Bool) => format!("{name}={x}"),
                _ => format!("{name}: wrong kind"),
            })
            .collect();
        assert_eq!(
            read.join(" "),
            "seq=7 t_ms=1.5 phase=ph stage=st driver=dr kind=k name=n agent=a worker=w ok=true latency_ms=2.5 value=3.5 \
             unit=u error=e bytes=4 tokens_in=5 tokens_out=6 cost_usd=7.5 status=200 method=GET error_kind=status \
             service_ms=8.5 attrs={}"
        );
        let empty = Event::default();
        for (name, _) in
            fields().iter().filter(|(n, _)| !["seq", "t_ms", "phase", "stage", "driver", "kind"].contains(n))
        {
            assert!(matches!(field(&empty, name), V::Null), "{name} of an empty event is not null");
        }
        assert!(matches!(field(&ev, "no_such_column"), V::Null));
    }
}
