//! `fleet`: spawn N agent processes and coordinate them — the driver behind the 50-agent soak
//! and the 1000-agent fleet tests. Agents are the built-in `planrun agent` or any command that
//! speaks the protocol (`protocol`, docs/agent-protocol.md) over a transport (`transport`). The
//! driver owns spawning in batches, heartbeats, coordination cycles, crashes and restarts,
//! faults, resource sampling, and a teardown that leaves no process and no file behind.

pub mod agent;
pub mod protocol;
pub mod transport;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::{BoxFuture, Driver, Outcome, StageContext, Status, config_of};
use crate::plan::Dur;
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

const TERM_GRACE: Duration = Duration::from_secs(2);

impl Driver for Fleet {
    fn config(&self) -> serde_json::Value {
        config_of(self)
    }

    fn describe(&self) -> String {
        let who = if self.command.is_empty() { "planrun agent".to_string() } else { self.command.join(" ") };
        format!("{} agents ({who}), batches of {}", self.agents, self.batch_size)
    }

    fn check(&self, stage: &crate::plan::model::StageCommon) -> Result<(), String> {
        if self.agents == 0 {
            return Err("a fleet needs at least one agent".into());
        }
        if !self.weights.is_empty() && self.weights.len() != self.messages.len() {
            return Err("`weights` needs one weight per message type".into());
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
    spawned_ms: f64,
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

fn signal_of(name: Option<&str>) -> i32 {
    match name.unwrap_or("KILL").trim_start_matches("SIG") {
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        "STOP" => libc::SIGSTOP,
        _ => libc::SIGKILL,
    }
}

fn send_signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid this driver spawned.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

fn pid_alive(pid: u32) -> bool {
    // A zombie still "exists"; check /proc state so reaped-later children are not counted.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
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

    /// Start (or restart) one agent process and watch for its exit.
    fn spawn(&self, id: &str) -> Result<(), String> {
        let cfg = self.cfg;
        let hb_ms = self.ctx.clock.scaled(cfg.heartbeat.0).as_millis().max(10) as u64;
        let mut cmd = if cfg.command.is_empty() {
            let exe = std::env::current_exe().map_err(|e| format!("cannot find the planrun binary: {e}"))?;
            let mut c = tokio::process::Command::new(exe);
            c.args(["agent", "--id", id, "--dir", &self.transport.address(), "--heartbeat-ms", &hb_ms.to_string()]);
            if let Some(m) = cfg.misbehave.as_ref().filter(|m| m.agents.is_empty() || m.agents.iter().any(|a| a == id))
            {
                if let Some(s) = m.slow {
                    c.args(["--slow-ms", &self.ctx.clock.scaled(s.0).as_millis().to_string()]);
                }
                if let Some(b) = m.leak_bytes {
                    c.args(["--leak-bytes", &b.to_string()]);
                }
                if let Some(n) = m.crash_after {
                    c.args(["--crash-after", &n.to_string()]);
                }
                if m.garbage {
                    c.arg("--garbage");
                }
            }
            c
        } else {
            let mut c = tokio::process::Command::new(&cfg.command[0]);
            c.args(&cfg.command[1..]);
            c
        };
        cmd.env("PLANRUN_AGENT_ID", id)
            .env("PLANRUN_COORD_DIR", self.transport.address())
            .env("PLANRUN_HEARTBEAT_MS", hb_ms.to_string())
            .env("PLANRUN_SEED", crate::run::runner::derive_seed(self.ctx.seed, &[id]).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; agents die with the runner even if it is SIGKILLed.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let spawned_ms = self.now();
        let mut child = cmd.spawn().map_err(|e| format!("cannot start agent {id}: {e}"))?;
        let pid = child.id();
        {
            let mut s = self.shared();
            let restarts = s.agents.get(id).map_or(0, |a| a.restarts);
            s.agents.insert(
                id.to_string(),
                AgentState {
                    pid,
                    spawned_ms,
                    first_beat: false,
                    last_beat_ms: spawned_ms,
                    alive: true,
                    unresponsive: false,
                    restarts,
                },
            );
        }
        let (shared, changed, events, id) =
            (Arc::clone(&self.shared), Arc::clone(&self.changed), self.ctx.events.clone(), id.to_string());
        tokio::spawn(async move {
            let status = child.wait().await;
            let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
            let tearing_down = s.tearing_down;
            if let Some(a) = s.agents.get_mut(&id).filter(|a| a.pid == pid) {
                a.alive = false;
            }
            drop(s);
            if !tearing_down {
                let mut ev = events.event("crash").agent(id.as_str()).ok(false);
                match status {
                    Ok(st) => {
                        use std::os::unix::process::ExitStatusExt;
                        if let Some(c) = st.code() {
                            ev = ev.status(c as i64).error(format!("exited with code {c}"));
                        } else {
                            ev = ev.error(format!("killed by signal {}", st.signal().unwrap_or(0)));
                        }
                    }
                    Err(e) => ev = ev.error(e.to_string()),
                }
                events.emit(ev);
            }
            changed.notify_waiters();
        });
        Ok(())
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
                        self.ctx.events.emit(
                            self.ctx
                                .events
                                .event("protocol_error")
                                .agent(st.agent_id.as_str())
                                .error("status from an unknown agent"),
                        );
                        continue;
                    };
                    a.last_beat_ms = now;
                    a.unresponsive = false;
                    if !a.first_beat {
                        a.first_beat = true;
                        let latency = now - a.spawned_ms;
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
                        self.ctx.events.emit(
                            self.ctx
                                .events
                                .event("protocol_error")
                                .agent(r.agent_id.as_str())
                                .error(format!("response to an unknown message id `{}`", r.message_id)),
                        );
                        continue;
                    };
                    if !known_agent || !p.expected.contains(&r.agent_id) || p.got.contains_key(&r.agent_id) {
                        drop(s);
                        self.ctx.events.emit(
                            self.ctx
                                .events
                                .event("protocol_error")
                                .agent(r.agent_id.as_str())
                                .error("unexpected or duplicate response"),
                        );
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

    async fn cycle(&self, cycle: u64) {
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
            self.ctx.events.emit(self.ctx.events.event("protocol_error").error(format!("cannot write message: {e}")));
        }
        let deadline = sent_ms + self.ctx.clock.scaled(self.cfg.response_timeout.0).as_secs_f64() * 1000.0;
        let id = message_id.clone();
        self.wait_until(deadline, |s| s.pending.get(&id).is_none_or(|p| p.got.len() >= p.expected.len())).await;
        let p = self.shared().pending.remove(&message_id);
        self.transport.retire(&message_id);
        let Some(p) = p else { return };
        let timeout_ms = self.ctx.clock.scaled(self.cfg.response_timeout.0).as_secs_f64() * 1000.0;
        let mut missing: Vec<&String> = p.expected.iter().filter(|a| !p.got.contains_key(*a)).collect();
        missing.sort();
        for a in &missing {
            self.ctx.events.emit(
                self.ctx
                    .events
                    .event("response")
                    .name(kind.as_str())
                    .agent(a.as_str())
                    .ok(false)
                    .latency_ms(timeout_ms)
                    .error("timeout")
                    .attrs(serde_json::json!({ "cycle": cycle + 1 })),
            );
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

    async fn faults(&self) {
        let mut faults: Vec<&FleetFault> = self.cfg.faults.iter().collect();
        faults.sort_by_key(|f| f.at);
        let start = self.now();
        for f in faults {
            let at = start + self.ctx.clock.scaled(f.at.0).as_secs_f64() * 1000.0;
            let wait = at - self.now();
            if wait > 0.0 {
                self.ctx.clock.sleep_unscaled(Duration::from_secs_f64(wait / 1000.0)).await;
            }
            let n = f.kill.or(f.pause).unwrap_or(1) as usize;
            let mut chosen: Vec<(String, u32)> = {
                let s = self.shared();
                let alive: Vec<(String, u32)> =
                    s.agents.iter().filter(|(_, a)| a.alive).filter_map(|(id, a)| Some((id.clone(), a.pid?))).collect();
                if f.agents.is_empty() {
                    alive
                } else {
                    alive.into_iter().filter(|(id, _)| f.agents.contains(id)).collect()
                }
            };
            if let Ok(mut rng) = self.rng.lock() {
                chosen.shuffle(&mut *rng);
            }
            chosen.truncate(n);
            chosen.sort();
            let names: Vec<&str> = chosen.iter().map(|(id, _)| id.as_str()).collect();
            if f.pause.is_some() {
                for (_, pid) in &chosen {
                    send_signal(*pid, libc::SIGSTOP);
                }
                self.ctx.events.emit(
                    self.ctx
                        .events
                        .event("fault")
                        .name("pause")
                        .attrs(serde_json::json!({ "agents": names, "for_ms": f.for_.map(|d| d.0.as_millis()) })),
                );
                let (pids, d) = (
                    chosen.iter().map(|(_, p)| *p).collect::<Vec<_>>(),
                    self.ctx.clock.scaled(f.for_.map(|d| d.0).unwrap_or(Duration::from_secs(10))),
                );
                let (events, clock) = (self.ctx.events.clone(), self.ctx.clock.clone());
                tokio::spawn(async move {
                    clock.sleep_unscaled(d).await;
                    for pid in pids {
                        send_signal(pid, libc::SIGCONT);
                    }
                    events.emit(events.event("fault").name("resume"));
                });
            } else {
                let sig = signal_of(f.signal.as_deref());
                for (_, pid) in &chosen {
                    send_signal(*pid, sig);
                }
                self.ctx.events.emit(
                    self.ctx
                        .events
                        .event("fault")
                        .name("kill")
                        .attrs(serde_json::json!({ "agents": names, "signal": f.signal.as_deref().unwrap_or("KILL") })),
                );
            }
        }
        std::future::pending::<()>().await;
    }

    /// Every `sample_interval`: system CPU and memory, the runner's RSS, each agent's RSS and CPU.
    async fn sample(&self) {
        let Some(every) = self.cfg.sample_interval else { return std::future::pending().await };
        let Ok(mut sys) = sysinfo::System::new() else { return std::future::pending().await };
        let me = sysinfo::get_current_pid().ok();
        loop {
            sys.refresh_cpu_usage();
            sys.refresh_memory();
            sys.refresh_processes(sysinfo::ProcessesToUpdate::All, true);
            let e = &self.ctx.events;
            e.emit(e.event("sample").name("system_cpu").value(sys.global_cpu_usage() as f64, "percent"));
            e.emit(e.event("sample").name("system_memory_used").value(sys.used_memory() as f64, "bytes"));
            if let Some(p) = me.and_then(|pid| sys.process(pid)) {
                e.emit(e.event("sample").name("runner_rss_bytes").value(p.memory() as f64, "bytes"));
            }
            let agents: Vec<(String, u32)> = self
                .shared()
                .agents
                .iter()
                .filter(|(_, a)| a.alive)
                .filter_map(|(id, a)| Some((id.clone(), a.pid?)))
                .collect();
            for (id, pid) in agents {
                if let Some(p) = sys.process(sysinfo::Pid::from_u32(pid)) {
                    e.emit(
                        e.event("sample").name("agent_rss_bytes").agent(id.as_str()).value(p.memory() as f64, "bytes"),
                    );
                    e.emit(
                        e.event("sample").name("agent_cpu").agent(id.as_str()).value(p.cpu_usage() as f64, "percent"),
                    );
                }
            }
            self.ctx.clock.sleep(every.0).await;
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
            self.cycle(c as u64).await;
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

    /// TERM every agent, KILL what is left after a grace period, check nothing survived, and
    /// remove the coordination directory unless `keep`.
    async fn teardown(&self) {
        let pids: Vec<u32> = {
            let mut s = self.shared();
            s.tearing_down = true;
            s.agents.values().filter(|a| a.alive).filter_map(|a| a.pid).collect()
        };
        for pid in &pids {
            send_signal(*pid, libc::SIGCONT); // a paused agent cannot act on TERM
            send_signal(*pid, libc::SIGTERM);
        }
        let deadline = self.now() + TERM_GRACE.as_secs_f64() * 1000.0;
        let stopped = self.wait_until(deadline, |s| s.agents.values().all(|a| !a.alive)).await;
        let mut killed = 0;
        if !stopped {
            for a in self.shared().agents.values().filter(|a| a.alive) {
                if let Some(pid) = a.pid {
                    send_signal(pid, libc::SIGKILL);
                    killed += 1;
                }
            }
            let deadline = self.now() + 5000.0;
            self.wait_until(deadline, |s| s.agents.values().all(|a| !a.alive)).await;
        }
        let orphans = pids.iter().filter(|p| pid_alive(**p)).count();
        let files_left = if self.cfg.keep {
            self.transport.leftovers()
        } else {
            let _ = self.transport.cleanup();
            usize::from(std::path::Path::new(&self.transport.address()).exists())
        };
        self.ctx.events.emit(
            self.ctx.events.event("teardown").ok(orphans == 0 && (self.cfg.keep || files_left == 0)).value(orphans as f64, "processes").attrs(
                serde_json::json!({ "agents": pids.len(), "killed_after_grace": killed, "orphans": orphans, "files_left": files_left, "kept": self.cfg.keep }),
            ),
        );
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
