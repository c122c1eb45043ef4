//! Writing what requests did. `record = "all"` (the default) writes one `http` event per
//! request. For long runs at tens of thousands of requests a second, `record = "summary"`
//! writes instead one `http_window` event per task per second (count, failures, bytes, and
//! latency percentiles from an HDR histogram in `attrs`), and `record = { sample = 0.01 }`
//! writes the windows plus one `http` event for that share of the requests (chosen by a
//! counter, so the share is exact). Windows are kept in a few shards, each behind its own lock,
//! so users on different threads rarely meet.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use std::sync::Mutex;

use super::config::Record;
use super::outcome::Done;
use super::task::Step;
use crate::events::Emitter;

const SHARDS: usize = 16;

/// (task name, method, its window) for the current second.
type Windows = Vec<(Arc<str>, &'static str, Window)>;

#[derive(Clone)]
struct Window {
    count: u64,
    failures: u64,
    bytes: u64,
    latency: Histogram<u64>,
}

impl Window {
    fn new() -> Window {
        Window {
            count: 0,
            failures: 0,
            bytes: 0,
            // Microseconds, 1 µs to 1 hour, 3 significant digits.
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
        }
    }
}

pub struct Recorder {
    mode: Record,
    events: Emitter,
    /// Per shard: (task name → window) for the current second.
    shards: Vec<Mutex<Windows>>,
    sampled: AtomicU64,
    every: u64,
    /// Requests finished and failed (for the stage outcome), whatever the mode.
    pub finished: AtomicU64,
    pub failed: AtomicU64,
}

impl Recorder {
    pub fn new(mode: Record, events: Emitter) -> Arc<Recorder> {
        let every = match mode {
            Record::Sample(f) => (1.0 / f).round().max(1.0) as u64,
            _ => 1,
        };
        Arc::new(Recorder {
            mode,
            events,
            shards: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
            sampled: AtomicU64::new(0),
            every,
            finished: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }

    pub fn windows(&self) -> bool {
        self.mode != Record::All
    }

    /// Record one finished request by `user`.
    pub fn record(&self, user: Option<&Arc<str>>, shard: usize, step: &Step, d: &Done) {
        self.finished.fetch_add(1, Ordering::Relaxed);
        if !d.ok() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let write_row = match self.mode {
            Record::All => true,
            Record::Summary => false,
            Record::Sample(_) => self.sampled.fetch_add(1, Ordering::Relaxed) % self.every == 0,
        };
        if write_row {
            let e = &self.events;
            let mut ev =
                e.event("http").name(Arc::clone(&step.name)).ok(d.ok()).latency_ms(d.latency_ms).bytes(d.bytes as i64);
            ev.agent = user.cloned();
            ev.method = Some(step.method_str.into());
            ev.service_ms = Some(crate::clock::round_us(d.service_ms));
            if let Some(s) = d.status {
                ev.status = Some(s as i64);
            }
            if let Some(f) = &d.failure {
                ev.error_kind = Some(f.kind.as_str().into());
                ev.error = Some(f.message.to_string());
            }
            e.emit(ev);
        }
        if self.windows() {
            let mut g = self.shards[shard % SHARDS].lock().unwrap_or_else(|p| p.into_inner());
            let w = match g.iter().position(|(n, _, _)| *n == step.name) {
                Some(i) => &mut g[i].2,
                None => {
                    g.push((Arc::clone(&step.name), step.method_str, Window::new()));
                    &mut g.last_mut().expect("just pushed").2
                }
            };
            w.count += 1;
            w.failures += u64::from(!d.ok());
            w.bytes += d.bytes;
            let _ = w.latency.record((d.latency_ms * 1000.0).round().max(1.0) as u64);
        }
    }

    /// Write the windows collected since the last flush (once a second, and at the end).
    pub fn flush(&self) {
        if !self.windows() {
            return;
        }
        let mut merged: Windows = Vec::new();
        for s in &self.shards {
            let taken = std::mem::take(&mut *s.lock().unwrap_or_else(|p| p.into_inner()));
            for (name, method, w) in taken {
                match merged.iter_mut().find(|(n, _, _)| *n == name) {
                    Some((_, _, m)) => {
                        m.count += w.count;
                        m.failures += w.failures;
                        m.bytes += w.bytes;
                        let _ = m.latency.add(&w.latency);
                    }
                    None => merged.push((name, method, w)),
                }
            }
        }
        merged.sort_by(|a, b| a.0.cmp(&b.0));
        let e = &self.events;
        for (name, method, w) in merged {
            let q = |p: f64| w.latency.value_at_quantile(p) as f64 / 1000.0;
            let mut ev = e.event("http_window").name(name).value(w.count as f64, "count").attrs(serde_json::json!({
                "failures": w.failures,
                "bytes": w.bytes,
                "mean_ms": w.latency.mean() / 1000.0,
                "p50_ms": q(0.50),
                "p90_ms": q(0.90),
                "p95_ms": q(0.95),
                "p99_ms": q(0.99),
                "max_ms": w.latency.max() as f64 / 1000.0,
            }));
            // No `ok`: a window is not a request, and success rates count requests.
            ev.method = Some(method.into());
            e.emit(ev);
        }
    }
}
