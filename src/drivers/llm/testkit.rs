//! What the driver's unit tests run on: `Scripted`, an in-memory provider that plays a script
//! of answers and errors (the second implementation of the `Provider` seam), and `Harness`, a
//! stage context on the virtual clock whose events are kept in memory as well as written.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::config::{LlmCfg, Prices};
use super::provider::{CallError, Provider, Reply, Request};
use super::roster::{Agent, Target};
use crate::clock::Clock;
use crate::drivers::ledger::Ledger;
use crate::drivers::{BoxFuture, StageCheckpoint, StageContext};
use crate::events::sink::{EventSink, Position, SinkHandle};
use crate::events::{Emitter, Event, Observer};

/// What a scripted provider does on one call.
#[derive(Clone, Debug)]
pub enum Step {
    Answer,
    Fail(CallError),
    /// Never answers (the call path's timeout or a cancellation ends it).
    Hang,
}

/// Plays its script, one step per call, after `latency`; once the script is used up it answers.
/// Every answer is 10 tokens in, 10 out, at $1 per million each way.
pub struct Scripted {
    name: String,
    latency: Duration,
    script: Mutex<VecDeque<Step>>,
    calls: AtomicU32,
}

impl Scripted {
    pub fn new(name: &str, latency: Duration, script: Vec<Step>) -> Arc<Scripted> {
        Arc::new(Scripted { name: name.into(), latency, script: Mutex::new(script.into()), calls: AtomicU32::new(0) })
    }

    /// Calls that reached the provider.
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Provider for Scripted {
    fn name(&self) -> &str {
        &self.name
    }

    fn model(&self) -> &str {
        "scripted"
    }

    fn prices(&self) -> Prices {
        Prices { per_million_in: 1.0, per_million_out: 1.0 }
    }

    fn max_cost_nanos(&self, _prompt: &str) -> u64 {
        self.cost_nanos(10, 10)
    }

    fn call<'a>(&'a self, req: Request<'a>) -> BoxFuture<'a, Result<Reply, CallError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let step = self.script.lock().unwrap().pop_front().unwrap_or(Step::Answer);
            req.clock.sleep(self.latency).await;
            match step {
                Step::Answer => Ok(Reply { text: "ok".into(), tokens_in: 10, tokens_out: 10 }),
                Step::Fail(e) => Err(e),
                Step::Hang => std::future::pending().await,
            }
        })
    }
}

#[derive(Default)]
struct Seen(Mutex<Vec<Event>>);

impl Observer for Seen {
    fn observe(&self, ev: &Event) {
        self.0.lock().unwrap().push(ev.clone());
    }
}

/// A stage context on the virtual clock (create it inside `#[tokio::test(start_paused = true)]`).
pub struct Harness {
    pub ctx: StageContext,
    seen: Arc<Seen>,
    _sink: SinkHandle,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub fn new(run_budget_usd: Option<f64>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let (sink, handle) = EventSink::open(&dir.path().join("events.jsonl"), Position::default()).unwrap();
        let clock = Clock::new(1.0, 0.0, true);
        let seen = Arc::new(Seen::default());
        let events =
            Emitter::new(sink, clock.clone(), "p", "s", "llm").with_watch(Some(Arc::clone(&seen) as Arc<dyn Observer>));
        let ctx = StageContext {
            clock,
            cancel: CancellationToken::new(),
            events,
            phase: "p".into(),
            stage: "s".into(),
            duration: None,
            iteration: 0,
            seed: 7,
            run_dir: dir.path().to_path_buf(),
            vars: Arc::default(),
            ledger: Arc::new(Ledger::new(run_budget_usd)),
            checkpoint: StageCheckpoint::default(),
            tags: Default::default(),
        };
        Harness { ctx, seen, _sink: handle, _dir: dir }
    }

    pub fn events(&self) -> Vec<Event> {
        self.seen.0.lock().unwrap().clone()
    }

    pub fn of_kind(&self, kind: &str) -> Vec<Event> {
        self.events().into_iter().filter(|e| e.kind == kind).collect()
    }

    /// A prompt for an agent of this stage with this failover chain.
    pub fn target(&self, name: &str, providers: &[&str]) -> Target {
        let agent = Agent {
            name: name.into(),
            role: "agent".into(),
            providers: providers.iter().map(|p| p.to_string()).collect(),
            template: String::new(),
            cancel: self.ctx.cancel.child_token(),
        };
        Target { agent: Arc::new(agent), slot: 0, for_agent: None }
    }
}

/// An llm stage config from the JSON of its fields beyond one agent and a simulated provider
/// named `a` (the tests replace the providers with scripted ones of the same names).
pub fn cfg(fields: serde_json::Value) -> LlmCfg {
    let mut v = serde_json::json!({
        "agent": [{"name": "x", "provider": ["a"]}],
        "providers": {"a": {"kind": "simulated", "latency": {"dist": "fixed", "value": "1s"},
                            "tokens_in": 10, "tokens_out": 10, "price_in": 1.0, "price_out": 1.0}},
    });
    if let (Some(base), serde_json::Value::Object(extra)) = (v.as_object_mut(), fields) {
        base.extend(extra);
    }
    serde_json::from_value(v).unwrap()
}
