//! Live checks for `abort = true` criteria, like k6's abortOnFail: while a stage runs, every
//! event its emitter sends also updates running aggregates (counts, Welford mean/variance,
//! an HDR histogram for percentiles, online least squares for growth/slope), and the runner
//! checks them about every 2 s of stage clock time, stopping the stage when one is violated.
//! The final verdict still comes from the full analysis; these are running approximations
//! (percentiles to 3 significant digits).

use std::sync::Mutex;

use hdrhistogram::Histogram;

use crate::criteria::{Agg, Check, Cmp, Filter, Lhs, Lit, Named};
use crate::events::{Event, Observer};

/// A field's value on one event.
enum V<'a> {
    Num(f64),
    Str(&'a str),
    Bool(bool),
    Null,
}

fn field<'a>(ev: &'a Event, name: &str) -> V<'a> {
    let opt_num = |o: Option<f64>| o.map_or(V::Null, V::Num);
    let opt_int = |o: Option<i64>| o.map_or(V::Null, |n| V::Num(n as f64));
    let opt_str = |o: Option<&'a str>| o.map_or(V::Null, V::Str);
    match name {
        "seq" => V::Num(ev.seq as f64),
        "t_ms" => V::Num(ev.t_ms),
        "phase" => V::Str(&ev.phase),
        "stage" => V::Str(&ev.stage),
        "driver" => V::Str(&ev.driver),
        "kind" => V::Str(&ev.kind),
        "name" => opt_str(ev.name.as_deref()),
        "agent" => opt_str(ev.agent.as_deref()),
        "ok" => ev.ok.map_or(V::Null, V::Bool),
        "latency_ms" => opt_num(ev.latency_ms),
        "value" => opt_num(ev.value),
        "unit" => opt_str(ev.unit.as_deref()),
        "error" => opt_str(ev.error.as_deref()),
        "bytes" => opt_int(ev.bytes),
        "tokens_in" => opt_int(ev.tokens_in),
        "tokens_out" => opt_int(ev.tokens_out),
        "cost_usd" => opt_num(ev.cost_usd),
        "status" => opt_int(ev.status),
        "attrs" => opt_str(ev.attrs.as_deref()),
        _ => V::Null,
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
    // Online least squares against t_ms.
    mean_t: f64,
    m2_t: f64,
    c_ty: f64,
    t_first: f64,
    t_last: f64,
    hist: Option<Histogram<u64>>,
}

impl Live {
    fn new(quantiles: bool) -> Live {
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
            mean_t: 0.0,
            m2_t: 0.0,
            c_ty: 0.0,
            t_first: f64::NAN,
            t_last: f64::NAN,
            hist: quantiles.then(|| Histogram::new(3)).and_then(Result::ok),
        }
    }

    fn add(&mut self, t: f64, y: f64) {
        self.n += 1.0;
        self.sum += y;
        self.min = self.min.min(y);
        self.max = self.max.max(y);
        let dy = y - self.mean;
        let dt = t - self.mean_t;
        self.mean += dy / self.n;
        self.mean_t += dt / self.n;
        self.m2 += dy * (y - self.mean);
        self.m2_t += dt * (t - self.mean_t);
        self.c_ty += dt * (y - self.mean);
        if self.t_first.is_nan() {
            self.t_first = t;
        }
        self.t_last = t;
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
}

/// The abort criteria of one running stage.
pub struct AbortWatch {
    stage_start_ms: f64,
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
                let quantiles = matches!(check.lhs, Lhs::Agg { agg: Agg::Quantile(_), .. });
                Watched { text, check, threshold, live: Live::new(quantiles) }
            })
            .collect();
        Some(AbortWatch { stage_start_ms, checks: Mutex::new(checks) })
    }

    /// The first violated criterion, with what was observed, as of `now_ms`.
    pub fn violated(&self, now_ms: f64) -> Option<String> {
        self.check(now_ms)
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
    fn check(&self, now_ms: f64) -> Option<String> {
        let checks = self.checks.lock().ok()?;
        let window_s = ((now_ms - self.stage_start_ms) / 1000.0).max(1e-3);
        for w in checks.iter() {
            let l = &w.live;
            let value = match &w.check.lhs {
                Lhs::Named(Named::Crashes) => Some(l.crashes),
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
                    Agg::Cov if l.n > 1.0 => Some((l.m2 / (l.n - 1.0)).sqrt() / l.mean),
                    Agg::Quantile(q) => l.hist.as_ref().map(|h| h.value_at_quantile(*q) as f64 / 1000.0),
                    Agg::Growth | Agg::Slope if l.n > 2.0 && l.m2_t > 0.0 => {
                        let slope = l.c_ty / l.m2_t;
                        if *agg == Agg::Slope {
                            Some(slope * 1000.0)
                        } else {
                            let start = l.mean + slope * (l.t_first - l.mean_t);
                            (start != 0.0).then(|| slope * (l.t_last - l.t_first) / start)
                        }
                    }
                    _ => None,
                },
            };
            if let Some(v) = value.filter(|v| v.is_finite())
                && !w.check.op.holds(v, w.threshold)
            {
                return Some(format!(
                    "abort criterion `{}` violated: observed {v:.4}, limit {} {}",
                    w.text,
                    w.check.op.as_str(),
                    w.threshold
                ));
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
        assert!(w.violated(2000.0).unwrap().contains("error_rate < 0.5"));
    }
}
