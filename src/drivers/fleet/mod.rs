//! `fleet`: spawn N agent processes and coordinate them — the driver behind the 50-agent soak
//! and the 1000-agent fleet tests. Agents are the built-in `planrun agent` or any command that
//! speaks the protocol (`protocol`, docs/agent-protocol.md) over a transport (`transport`). The
//! driver owns spawning in batches, heartbeats, coordination cycles, crashes and restarts,
//! faults, resource sampling, and a teardown that leaves no process and no file behind.

pub mod agent;
mod process;
pub mod protocol;
pub mod transport;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::{BoxFuture, Driver, Outcome, StageContext, Status, config_of};
use crate::plan::Dur;
use crate::plan::model::{FieldError, StageCommon};
use protocol::{Message, now_ms};
use transport::{FileTransport, Incoming, Transport};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    #[default]
    Never,
    OnCrash,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetFault {
    pub at: Dur,
    /// SIGKILL/SIGTERM this many agents (random, seeded) or the named ones.
    #[serde(default)]
    pub kill: Option<u32>,
    /// SIGSTOP this many agents, SIGCONT them after `for`.
    #[serde(default)]
    pub pause: Option<u32>,
    #[serde(default)]
    pub signal: Option<String>,
    #[serde(default, rename = "for")]
    pub for_: Option<Dur>,
    #[serde(default)]
    pub agents: Vec<String>,
}

/// Built-in agent switches for testing runners.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Misbehave {
    /// Agent ids (`agent-3`); empty means every agent.
    #[serde(default)]
    pub agents: Vec<String>,
    #[serde(default)]
    pub slow: Option<Dur>,
    #[serde(default)]
    pub leak_bytes: Option<u64>,
    #[serde(default)]
    pub crash_after: Option<u64>,
    #[serde(default)]
    pub garbage: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    pub agents: u32,
    /// An agent program and its arguments; empty means the built-in `planrun agent`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default = "d_batch")]
    pub batch_size: u32,
    /// Pause between batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_pause: Option<Dur>,
    /// Coordination cycles; default: the stage duration divided by `interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycles: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Dur>,
    /// Message types, rotating (or chosen by `weights`).
    #[serde(default = "d_messages")]
    pub messages: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<f64>,
    /// `data` for each message type, e.g. `{ compute = { iterations = 1500 } }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub payload: BTreeMap<String, serde_json::Value>,
    /// Send each cycle's message to this many agents (random, seeded) instead of all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fanout: Option<u32>,
    #[serde(default = "d_response_timeout")]
    pub response_timeout: Dur,
    #[serde(default = "d_heartbeat")]
    pub heartbeat: Dur,
    #[serde(default = "d_missed")]
    pub missed_heartbeats: u32,
    #[serde(default)]
    pub restart: Restart,
    #[serde(default = "d_backoff")]
    pub restart_backoff: Dur,
    #[serde(default, rename = "fault", skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FleetFault>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_interval: Option<Dur>,
    /// Coordination directory; default: /dev/shm (else the temp dir)/planrun-RUN-STAGE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coord_dir: Option<String>,
    #[serde(default)]
    pub clean: bool,
    #[serde(default)]
    pub keep: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub misbehave: Option<Misbehave>,
    /// How long an agent may take to send its first heartbeat.
    #[serde(default = "d_startup")]
    pub startup_timeout: Dur,
}

fn d_batch() -> u32 {
    50
}
fn d_messages() -> Vec<String> {
    vec!["ping".into()]
}
fn d_response_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn d_heartbeat() -> Dur {
    Dur(Duration::from_secs(1))
}
fn d_missed() -> u32 {
    3
}
fn d_backoff() -> Dur {
    Dur(Duration::from_secs(1))
}
fn d_startup() -> Dur {
    Dur(Duration::from_secs(10))
}

impl Driver for Fleet {
    fn config(&self) -> serde_json::Value {
        config_of(self)
    }

    fn describe(&self) -> String {
        let who = if self.command.is_empty() { "planrun agent".to_string() } else { self.command.join(" ") };
        format!("{} agents ({who}), batches of {}", self.agents, self.batch_size)
    }

    fn check(&self, stage: &StageCommon) -> Result<(), FieldError> {
        if self.agents == 0 {
            return Err(FieldError::new("a fleet needs at least one agent").at(&["agents"]));
        }
        if !self.weights.is_empty() && self.weights.len() != self.messages.len() {
            return Err(FieldError::new("`weights` needs one weight per message type").at(&["weights"]));
        }
        let wants_cycles = self.cycles.is_some_and(|c| c > 0) || (self.cycles.is_none() && stage.duration.is_some());
        if wants_cycles && self.interval.is_none() {
            return Err("coordination cycles need an `interval`".into());
        }
        Ok(())
    }

    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            match Coordinator::start(self, ctx) {
                Ok(c) => c.run().await,
                Err(e) => Outcome::with(Status::Error, e),
            }
        })
    }
}

struct AgentState {
    pid: Option<u32>,
    /// Wall-clock ms at spawn, to compare with the agent's own heartbeat timestamp.
    spawned_wall_ms: f64,
    first_beat: bool,
    last_beat_ms: f64,
    alive: bool,
    unresponsive: bool,
    restarts: u32,
}

struct Pending {
    sent_ms: f64,
    kind: String,
    cycle: u64,
    expected: HashSet<String>,
    got: HashMap<String, f64>,
    rss: Vec<f64>,
}

#[derive(Default)]
struct Shared {
    agents: BTreeMap<String, AgentState>,
    pending: HashMap<String, Pending>,
    tearing_down: bool,
}

struct Coordinator<'a> {
    cfg: &'a Fleet,
    ctx: &'a StageContext,
    transport: Arc<FileTransport>,
    rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Incoming>>>,
    shared: Arc<Mutex<Shared>>,
    changed: Arc<Notify>,
    rng: Mutex<StdRng>,
}

impl<'a> Coordinator<'a> {
    fn start(cfg: &'a Fleet, ctx: &'a StageContext) -> Result<Coordinator<'a>, String> {
        let run = ctx.run_dir.file_name().and_then(|n| n.to_str()).unwrap_or("run");
        let root = match &cfg.coord_dir {
            Some(d) => PathBuf::from(d),
            None => transport::default_base().join(format!("planrun-{run}-{}-{}", ctx.phase, ctx.stage)),
        };
        let (t, rx) = FileTransport::create(&root, cfg.clean)?;
        Ok(Coordinator {
            cfg,
            ctx,
            transport: Arc::new(t),
            rx: Mutex::new(Some(rx)),
            shared: Arc::new(Mutex::new(Shared::default())),
            changed: Arc::new(Notify::new()),
            rng: Mutex::new(StdRng::seed_from_u64(ctx.seed)),
        })
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> f64 {
        self.ctx.clock.elapsed_ms()
    }

    fn id(i: u32) -> String {
        format!("agent-{i}")
    }

    fn protocol_error(&self, agent: Option<&str>, error: impl Into<String>) {
        let mut ev = self.ctx.events.event("protocol_error").error(error);
        if let Some(a) = agent {
            ev = ev.agent(a);
        }
        self.ctx.events.emit(ev);
    }

    /// Consume what agents send: heartbeats, responses, protocol errors.
    async fn receive(&self) {
        let Some(mut rx) = self.rx.lock().ok().and_then(|mut r| r.take()) else { return };
        while let Some(inc) = rx.recv().await {
            let now = self.now();
            match inc {
                Incoming::Status(st) => {
                    let mut s = self.shared();
                    let Some(a) = s.agents.get_mut(&st.agent_id) else {
                        drop(s);
                        self.protocol_error(Some(&st.agent_id), "status from an unknown agent");
                        continue;
                    };
                    a.last_beat_ms = now;
                    a.unresponsive = false;
                    if !a.first_beat {
                        a.first_beat = true;
                        // From spawn to when the agent wrote its first heartbeat (its own
                        // timestamp, same host clock): not to when we got round to reading it.
                        let latency = (st.timestamp as f64 - a.spawned_wall_ms).max(0.0);
                        let restarts = a.restarts;
                        drop(s);
                        self.ctx.events.emit(
                            self.ctx
                                .events
                                .event("spawn")
                                .agent(st.agent_id.as_str())
                                .ok(true)
                                .latency_ms(latency)
                                .attrs(serde_json::json!({
                                    "pid": st.pid, "restarts": restarts,
                                })),
                        );
                        self.changed.notify_waiters();
                    }
                }
                Incoming::Response(r) => {
                    let mut s = self.shared();
                    let known_agent = s.agents.contains_key(&r.agent_id);
                    let Some(p) = s.pending.get_mut(&r.message_id) else {
                        drop(s);
                        self.protocol_error(
                            Some(&r.agent_id),
                            format!("response to an unknown message id `{}`", r.message_id),
                        );
                        continue;
                    };
                    if !known_agent || !p.expected.contains(&r.agent_id) || p.got.contains_key(&r.agent_id) {
                        drop(s);
                        self.protocol_error(Some(&r.agent_id), "unexpected or duplicate response");
                        continue;
                    }
                    let latency = now - p.sent_ms;
                    p.got.insert(r.agent_id.clone(), latency);
                    p.rss.push(r.memory.rss as f64);
                    let (kind, cycle) = (p.kind.clone(), p.cycle);
                    drop(s);
                    self.ctx.events.emit(
                        self.ctx
                            .events
                            .event("response")
                            .name(kind)
                            .agent(r.agent_id.as_str())
                            .ok(true)
                            .latency_ms(latency)
                            .value(r.memory.rss as f64, "bytes")
                            .attrs(serde_json::json!({
                                "cycle": cycle, "processing_ms": r.processing_time, "coordination_count": r.coordination_count,
                                "error_count": r.error_count, "uptime_ms": r.uptime, "allocated_bytes": r.memory.allocated,
                            })),
                    );
                    self.changed.notify_waiters();
                }
                Incoming::Bad { file, agent, error } => {
                    let mut ev =
                        self.ctx.events.event("protocol_error").error(error).attrs(serde_json::json!({ "file": file }));
                    if let Some(a) = agent {
                        ev = ev.agent(a);
                    }
                    self.ctx.events.emit(ev);
                }
            }
        }
    }

    /// Wait (bounded by `deadline_ms` of clock time) until `done` holds.
    async fn wait_until(&self, deadline_ms: f64, done: impl Fn(&Shared) -> bool) -> bool {
        loop {
            let notified = self.changed.notified();
            if done(&self.shared()) {
                return true;
            }
            let left = deadline_ms - self.now();
            if left <= 0.0 || self.ctx.cancel.is_cancelled() {
                return false;
            }
            tokio::select! {
                _ = notified => {}
                _ = self.ctx.clock.sleep_unscaled(Duration::from_secs_f64(left / 1000.0)) => {}
                _ = self.ctx.cancel.cancelled() => return false,
            }
        }
    }

    async fn spawn_all(&self) -> Result<(), String> {
        let batch = self.cfg.batch_size.max(1);
        let mut i = 1;
        while i <= self.cfg.agents {
            let ids: Vec<String> = (i..(i + batch).min(self.cfg.agents + 1)).map(Self::id).collect();
            for id in &ids {
                self.spawn(id)?;
                // Let the heartbeat reader run between spawns.
                tokio::task::yield_now().await;
            }
            let deadline = self.now() + self.ctx.clock.scaled(self.cfg.startup_timeout.0).as_secs_f64() * 1000.0;
            let up = self
                .wait_until(deadline, |s| {
                    ids.iter().all(|id| s.agents.get(id).is_some_and(|a| a.first_beat || !a.alive))
                })
                .await;
            if !up {
                for id in ids.iter().filter(|id| !self.shared().agents.get(*id).is_some_and(|a| a.first_beat)) {
                    self.ctx.events.emit(
                        self.ctx
                            .events
                            .event("spawn")
                            .agent(id.as_str())
                            .ok(false)
                            .error("no heartbeat within startup_timeout"),
                    );
                }
            }
            if self.ctx.cancel.is_cancelled() {
                return Ok(());
            }
            i += batch;
            if let (Some(p), true) = (self.cfg.batch_pause, i <= self.cfg.agents) {
                self.ctx.clock.sleep(p.0).await;
            }
        }
        Ok(())
    }

    fn pick_kind(&self, cycle: u64) -> String {
        let m = &self.cfg.messages;
        if self.cfg.weights.is_empty() {
            return m[(cycle as usize) % m.len()].clone();
        }
        let total: f64 = self.cfg.weights.iter().sum();
        let mut x = self.rng.lock().map(|mut r| r.random::<f64>()).unwrap_or(0.0) * total;
        for (k, w) in m.iter().zip(&self.cfg.weights) {
            if x < *w {
                return k.clone();
            }
            x -= w;
        }
        m[m.len() - 1].clone()
    }

    /// A failed `response` event: `agent` did not answer this cycle's message (the caller adds why).
    fn no_response(&self, kind: &str, agent: &str, cycle: u64) -> crate::events::event::Event {
        self.ctx
            .events
            .event("response")
            .name(kind)
            .agent(agent)
            .ok(false)
            .attrs(serde_json::json!({ "cycle": cycle + 1 }))
    }

    /// One coordination cycle. Err: the fleet cannot go on (its transport is gone).
    async fn cycle(&self, cycle: u64) -> Result<(), String> {
        let kind = self.pick_kind(cycle);
        let mut alive: Vec<String> =
            self.shared().agents.iter().filter(|(_, a)| a.alive).map(|(id, _)| id.clone()).collect();
        if let (Some(n), Ok(mut rng)) = (self.cfg.fanout, self.rng.lock()) {
            alive.shuffle(&mut *rng);
            alive.truncate(n as usize);
            alive.sort();
        }
        let message_id = format!("coord-{}-{}", cycle + 1, now_ms());
        let msg = Message {
            message_id: message_id.clone(),
            kind: kind.clone(),
            timestamp: now_ms(),
            cycle: cycle + 1,
            data: self.cfg.payload.get(&kind).cloned().unwrap_or(serde_json::Value::Null),
            to: self.cfg.fanout.map(|_| alive.clone()),
        };
        let sent_ms = self.now();
        self.shared().pending.insert(
            message_id.clone(),
            Pending {
                sent_ms,
                kind: kind.clone(),
                cycle: cycle + 1,
                expected: alive.iter().cloned().collect(),
                got: HashMap::new(),
                rss: Vec::new(),
            },
        );
        if let Err(e) = self.transport.send(&msg) {
            // Not delivered: nothing to wait for. Every addressee fails at once.
            self.protocol_error(None, format!("cannot write message: {e}"));
            self.shared().pending.remove(&message_id);
            for a in &alive {
                self.ctx.events.emit(self.no_response(&kind, a, cycle).error(format!("not delivered: {e}")));
            }
            self.ctx.events.emit(
                self.ctx
                    .events
                    .event("cycle")
                    .name(kind.as_str())
                    .ok(false)
                    .value(0.0, "ratio")
                    .attrs(serde_json::json!({ "cycle": cycle + 1, "sent": 0, "received": 0, "error": e.to_string() })),
            );
            if !self.transport.present() {
                return Err(format!(
                    "the coordination directory {} was removed while the fleet ran (by another process?); \
                     stopping the stage",
                    self.transport.address()
                ));
            }
            return Ok(());
        }
        let timeout_ms = self.ctx.clock.scaled(self.cfg.response_timeout.0).as_secs_f64() * 1000.0;
        let deadline = sent_ms + timeout_ms;
        let id = message_id.clone();
        self.wait_until(deadline, |s| s.pending.get(&id).is_none_or(|p| p.got.len() >= p.expected.len())).await;
        let p = self.shared().pending.remove(&message_id);
        self.transport.retire(&message_id);
        let Some(p) = p else { return Ok(()) };
        let mut missing: Vec<&String> = p.expected.iter().filter(|a| !p.got.contains_key(*a)).collect();
        missing.sort();
        for a in &missing {
            self.ctx.events.emit(self.no_response(&kind, a, cycle).latency_ms(timeout_ms).error("timeout"));
        }
        let duration = if missing.is_empty() { p.got.values().copied().fold(0.0, f64::max) } else { timeout_ms };
        let rate = if p.expected.is_empty() { 0.0 } else { p.got.len() as f64 / p.expected.len() as f64 };
        self.ctx.events.emit(
            self.ctx
                .events
                .event("cycle")
                .name(kind.as_str())
                .ok(missing.is_empty())
                .latency_ms(duration)
                .value(rate, "ratio")
                .attrs(serde_json::json!({
                    "cycle": cycle + 1, "sent": p.expected.len(), "received": p.got.len(),
                })),
        );
        if !p.rss.is_empty() {
            let mean = p.rss.iter().sum::<f64>() / p.rss.len() as f64;
            self.ctx.events.emit(
                self.ctx
                    .events
                    .event("sample")
                    .name("agent_rss_mean")
                    .value(mean, "bytes")
                    .attrs(serde_json::json!({ "cycle": cycle + 1, "agents": p.rss.len() })),
            );
        }
        Ok(())
    }

    /// Unresponsive agents, crashes to restart.
    async fn watchdog(&self) {
        let beat = self.ctx.clock.scaled(self.cfg.heartbeat.0);
        let limit_ms = beat.as_secs_f64() * 1000.0 * self.cfg.missed_heartbeats as f64;
        loop {
            self.ctx.clock.sleep_unscaled(beat).await;
            let now = self.now();
            let mut flagged = Vec::new();
            let mut restart = Vec::new();
            {
                let mut s = self.shared();
                if s.tearing_down {
                    continue;
                }
                for (id, a) in s.agents.iter_mut() {
                    if a.alive && a.first_beat && !a.unresponsive && now - a.last_beat_ms > limit_ms {
                        a.unresponsive = true;
                        flagged.push((id.clone(), now - a.last_beat_ms));
                    }
                    if !a.alive && self.cfg.restart == Restart::OnCrash {
                        a.restarts += 1;
                        a.alive = true; // claimed for restart
                        restart.push(id.clone());
                    }
                }
            }
            for (id, silent) in flagged {
                self.ctx.events.emit(
                    self.ctx
                        .events
                        .event("unresponsive")
                        .agent(id.as_str())
                        .ok(false)
                        .latency_ms(silent)
                        .error(format!("missed {} heartbeats", self.cfg.missed_heartbeats)),
                );
            }
            for id in restart {
                self.ctx.clock.sleep(self.cfg.restart_backoff.0).await;
                self.ctx.events.emit(self.ctx.events.event("restart").agent(id.as_str()));
                if let Err(e) = self.spawn(&id) {
                    self.ctx.events.emit(self.ctx.events.event("restart").agent(id.as_str()).ok(false).error(e));
                }
            }
        }
    }

    async fn coordinate(&self) -> Outcome {
        if let Err(e) = self.spawn_all().await {
            return Outcome::with(Status::Error, e);
        }
        let cycles = match (self.cfg.cycles, self.cfg.interval, self.ctx.duration) {
            (Some(n), _, _) => n,
            (None, Some(i), Some(d)) if !i.0.is_zero() => (d.as_secs_f64() / i.0.as_secs_f64()).floor() as u32,
            _ => 0,
        };
        let interval = self.cfg.interval.map(|i| self.ctx.clock.scaled(i.0)).unwrap_or_default();
        let first = self.ctx.clock.now();
        for c in 0..cycles {
            if self.ctx.cancel.is_cancelled() {
                return Outcome::with(Status::Interrupted, "interrupted");
            }
            // Fixed-rate schedule: cycle k starts k intervals after the first.
            if c > 0 {
                tokio::select! {
                    _ = self.ctx.clock.sleep_until(first + interval * c) => {}
                    _ = self.ctx.cancel.cancelled() => return Outcome::with(Status::Interrupted, "interrupted"),
                }
            }
            if let Err(e) = self.cycle(c as u64).await {
                return Outcome::with(Status::Error, e);
            }
        }
        // A fleet with no cycles (spawn-only) holds its agents for the stage duration, if any.
        if cycles == 0
            && let Some(d) = self.ctx.duration
        {
            tokio::select! {
                _ = self.ctx.clock.sleep(d) => {}
                _ = self.ctx.cancel.cancelled() => {}
            }
        }
        Outcome::passed()
    }

    async fn run(self) -> Outcome {
        let outcome = tokio::select! {
            o = self.coordinate() => o,
            _ = self.receive() => Outcome::with(Status::Error, "the transport stopped"),
            _ = self.watchdog() => Outcome::with(Status::Error, "the watchdog stopped"),
            _ = self.faults() => Outcome::with(Status::Error, "faults stopped"),
            _ = self.sample() => Outcome::with(Status::Error, "sampling stopped"),
        };
        // Keep reading while agents shut down, so late heartbeats do not pile up unread.
        self.teardown().await;
        outcome
    }
}
