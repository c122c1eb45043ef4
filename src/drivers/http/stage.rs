//! What every user and arrival of one `http` stage iteration shares (`Load`): the compiled
//! tasks, one connector per distinct host, the recorder, the run clock's scale, the stage
//! window in real time, and per-user progress for stall detection. `Load::request` sends one
//! step and records it; the closed and open models differ only in who calls it and when.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::config::{DEFAULT_MAX_BODY, Http};
use super::exchange::{Render, Slot, send};
use super::outcome::Done;
use super::record::Recorder;
use super::target::{Connector, Target};
use super::task::{Book, Step};
use crate::clock::Clock;
use crate::drivers::{StageContext, TagFilter};
use crate::events::Emitter;

/// A user's (or the open model's) progress, for stall detection.
pub struct Progress {
    /// Real ms since the stage started at which a request last finished (or the user started).
    pub last_ms: AtomicU64,
    pub in_request: AtomicBool,
    pub reported: AtomicBool,
}

impl Progress {
    pub fn new(now_ms: u64) -> Progress {
        Progress {
            last_ms: AtomicU64::new(now_ms),
            in_request: AtomicBool::new(false),
            reported: AtomicBool::new(false),
        }
    }
}

pub struct Load {
    pub book: Book,
    pub connectors: Vec<Connector>,
    /// Connector index of each stage host, in order (users are given them in turn).
    pub homes: Vec<usize>,
    pub recorder: Arc<Recorder>,
    pub events: Emitter,
    pub clock: Clock,
    pub vars: minijinja::Value,
    pub cap: u64,
    pub seed: u64,
    pub started: Instant,
    /// Requests cut off by the end of the stage (or Ctrl-C) before they finished.
    pub cut_off: AtomicU64,
    /// Open model: requests that went out more than `open::LATE` after their intended time.
    pub late: AtomicU64,
    /// Cuts off every request in flight: Ctrl-C, or the end of the graceful stop.
    pub hard: tokio_util::sync::CancellationToken,
}

impl Load {
    pub async fn new(cfg: &Http, ctx: &StageContext, tags: &TagFilter) -> Result<Load, String> {
        let mut urls: Vec<String> = cfg.all_hosts().iter().map(|s| s.to_string()).collect();
        let homes: Vec<usize> = (0..urls.len()).collect();
        let mut extra = BTreeMap::new();
        for t in &cfg.tasks {
            for h in std::iter::once(&t.host).chain(t.sequence.iter().map(|s| &s.host)).flatten() {
                if !urls.contains(h) {
                    urls.push(h.clone());
                }
            }
        }
        let mut connectors = Vec::new();
        for (i, u) in urls.iter().enumerate() {
            extra.insert(u.clone(), i);
            let target = Target::parse(u)?;
            let mut c = Connector::new(target, cfg.http2, cfg.insecure).await?;
            c.index = i;
            connectors.push(c);
        }
        let mut book = Book::new(cfg, tags, &extra)?;
        for step in book.tasks.iter_mut().flat_map(|t| t.steps.iter_mut()) {
            step.prepare(&connectors);
        }
        Ok(Load {
            book,
            connectors,
            homes,
            recorder: Recorder::new(cfg.record.clone(), ctx.events.clone()),
            events: ctx.events.clone(),
            clock: ctx.clock.clone(),
            vars: minijinja::Value::from(minijinja::value::Serde(&*ctx.vars)),
            cap: cfg.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY),
            seed: ctx.seed,
            started: Instant::now(),
            cut_off: AtomicU64::new(0),
            late: AtomicU64::new(0),
            hard: ctx.cancel.child_token(),
        })
    }

    /// What a step's templates are rendered with.
    pub fn context(
        &self,
        user: &minijinja::Value,
        iteration: u64,
        session: &serde_json::Map<String, serde_json::Value>,
    ) -> minijinja::Value {
        minijinja::context! {
            vars => self.vars.clone(),
            user => user.clone(),
            iteration => iteration,
            session => minijinja::Value::from(minijinja::value::Serde(session)),
        }
    }

    /// Real ms since the stage started.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Plan time → real time under the run's `--time-scale`.
    pub fn real(&self, plan: Duration) -> Duration {
        self.clock.scaled(plan)
    }

    /// Send one step for a user and record it; returns what it came to and any extracted values.
    #[allow(clippy::too_many_arguments)]
    pub async fn request(
        &self,
        step: &Step,
        user: Option<&Arc<str>>,
        shard: usize,
        host: usize,
        slot: &mut Slot,
        ctx: Option<minijinja::Value>,
        intended: Option<Instant>,
    ) -> (Done, Vec<(String, serde_json::Value)>) {
        let render = Render { book: &self.book, ctx };
        let target = &self.connectors[step.host.unwrap_or(host)];
        let (done, extracted) = send(step, target, slot, &render, self.cap, intended).await;
        self.recorder.record(user, shard, step, &done);
        (done, extracted)
    }

    /// Wait until every connector's host accepts TCP connections, for at most `limit`.
    pub async fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        for c in &self.connectors {
            loop {
                let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(10));
                if c.reachable(left).await {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "{}:{} did not accept connections within {:?} (ready_timeout): is the target running?",
                        c.target.host, c.target.port, limit
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Report users whose request has been outstanding for longer than `after` (real time;
    /// `last_ms` is when it started): one `stall` event per stall, until the user moves again.
    pub fn check_stalls(&self, users: &[(Arc<str>, Arc<Progress>)], after: Duration) {
        let now = self.now_ms();
        for (id, p) in users {
            let last = p.last_ms.load(Ordering::Relaxed);
            let stalled = p.in_request.load(Ordering::Relaxed) && now.saturating_sub(last) >= after.as_millis() as u64;
            if stalled && !p.reported.swap(true, Ordering::Relaxed) {
                let e = &self.events;
                e.emit(
                    e.event("stall")
                        .name("user")
                        .agent(Arc::clone(id))
                        .ok(false)
                        .latency_ms((now - last) as f64)
                        .error(format!("a request outstanding for {} ms (stall_after {:?})", now - last, after)),
                );
            }
            if !stalled {
                p.reported.store(false, Ordering::Relaxed);
            }
        }
    }

    /// A `http_schedule` row: counts the load model keeps (dropped, late, cut_off).
    pub fn count_row(&self, name: &'static str, n: u64) {
        let e = &self.events;
        e.emit(e.event("http_schedule").name(name).value(n as f64, "count"));
    }
}
