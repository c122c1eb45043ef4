//! The coordinator: runs one fleet stage over a `Transport`. It starts agents in batches and
//! waits for their first heartbeats, runs the coordination cycles (one message out, answers
//! collected until all are in or the response timeout passes), watches heartbeats and restarts
//! crashed agents, injects faults and samples resources alongside, and tears everything down.
//! It decides with the `Roster` and turns its answers into events; processes are `process`'s,
//! bytes are the transport's; growing and shrinking the running fleet is `scaling`'s.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc::UnboundedReceiver;

use super::config::{Fleet, Restart};
use super::faults;
use super::process::{self, AgentProgram, Launcher, Signal, pid_alive};
use super::protocol::{Message, Response, Status as AgentStatus, now_ms, now_ms_f64};
use super::roster::{Answer, Beat, Book, Pending, Roster};
use super::scaling::Observed;
use super::transport::owner::clear_stale;
use super::transport::{FileTransport, Incoming, RedisTransport, Transport, default_base};
use crate::drivers::keyspace::{is_redis_url, stage_prefix, with_password};
use crate::drivers::{Outcome, StageContext, Status};
use crate::events::Event;

/// How long agents get to act on SIGTERM at teardown before SIGKILL.
pub(super) const TERM_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for SIGKILLed agents to be reaped.
pub(super) const KILL_WAIT: Duration = Duration::from_secs(5);

pub struct Coordinator<'a> {
    pub(super) cfg: &'a Fleet,
    pub(super) ctx: &'a StageContext,
    pub(super) transport: Arc<dyn Transport>,
    pub(super) incoming: Mutex<Option<UnboundedReceiver<Incoming>>>,
    pub(super) launcher: Launcher,
    pub(super) roster: Arc<Roster>,
    pub(super) rng: Mutex<StdRng>,
    /// When the stage's fleet began (`scale` times count from here).
    pub(super) t0: tokio::time::Instant,
    /// The first fleet is up: scaling may begin.
    pub(super) ready: tokio::sync::Notify,
    pub(super) is_ready: std::sync::atomic::AtomicBool,
    /// The number of the next agent a scale-up starts.
    pub(super) next_index: std::sync::atomic::AtomicU32,
    /// Agents a scale-up started: their spawns are allocation under load.
    pub(super) scaled: Mutex<std::collections::HashSet<String>>,
    /// Each task cycle's backlog, for the autoscaler.
    pub(super) observed: tokio::sync::mpsc::UnboundedSender<Observed>,
    pub(super) observations: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Observed>>>,
}

impl<'a> Coordinator<'a> {
    /// The fleet stage as plans run it: the transport `cfg` names (Redis, else the file
    /// transport), the agent program `cfg` names.
    pub async fn run_stage(cfg: &'a Fleet, ctx: &'a StageContext) -> Outcome {
        let program = match AgentProgram::for_fleet(cfg) {
            Ok(p) => p,
            Err(e) => return Outcome::with(Status::Error, e),
        };
        let run = ctx.run_dir.file_name().and_then(|n| n.to_str()).unwrap_or("run");
        if let Some(url) = cfg.transport.as_deref().filter(|t| is_redis_url(t)) {
            let prefix = stage_prefix(run, &ctx.phase, &ctx.stage);
            let url = match with_password(url, cfg.password_env.as_deref()) {
                Ok(u) => u,
                Err(e) => return Outcome::with(Status::Error, e),
            };
            return match RedisTransport::connect(&url, &prefix).await {
                Ok((t, incoming)) => {
                    t.notes
                        .iter()
                        .for_each(|n| ctx.events.emit(ctx.events.event("warning").name("transport").error(n.as_str())));
                    if let Some(name) = &cfg.join
                        && let Some(e) = t.open_join(name).await
                    {
                        t.close(false).await;
                        return Outcome::with(Status::Error, e);
                    }
                    let run = Coordinator::new(cfg, ctx, Arc::new(t), incoming, program).run();
                    if cfg.workers == 0 {
                        return run.await;
                    }
                    // Workers on other hosts start the joining agents; watch them alongside.
                    tokio::select! {
                        o = run => o,
                        _ = super::worker::dispatch(&url, &prefix, cfg, ctx) => Outcome::with(Status::Error, "worker dispatch stopped"),
                    }
                }
                Err(e) => Outcome::with(Status::Error, e),
            };
        }
        let root = match &cfg.coord_dir {
            Some(d) => PathBuf::from(d),
            // The runner's pid too: two runs of one plan started in the same second (run
            // directories elsewhere, same name) must not share a coordination directory.
            None => default_base().join(format!("planrun-{run}-{}-{}-{}", std::process::id(), ctx.phase, ctx.stage)),
        };
        let warn = |w: &str| ctx.events.emit(ctx.events.event("warning").name("coordination_dir").error(w));
        if cfg.coord_dir.is_none() {
            clear_stale(&default_base(), &root).iter().for_each(|n| warn(n));
        }
        match FileTransport::create(&root, cfg.clean) {
            Ok((t, incoming)) => {
                t.notes.iter().for_each(|n| warn(n));
                Coordinator::new(cfg, ctx, Arc::new(t), incoming, program).run().await
            }
            Err(e) => Outcome::with(Status::Error, e),
        }
    }

    /// A coordinator over any transport; `incoming` is the transport's receiving end.
    pub fn new(
        cfg: &'a Fleet,
        ctx: &'a StageContext,
        transport: Arc<dyn Transport>,
        incoming: UnboundedReceiver<Incoming>,
        program: AgentProgram,
    ) -> Coordinator<'a> {
        let (obs_tx, obs_rx) = tokio::sync::mpsc::unbounded_channel();
        Coordinator {
            cfg,
            ctx,
            transport,
            incoming: Mutex::new(Some(incoming)),
            launcher: Launcher::new(program, cfg, &ctx.clock),
            roster: Arc::new(Roster::default()),
            rng: Mutex::new(StdRng::seed_from_u64(ctx.seed)),
            t0: ctx.clock.now(),
            ready: tokio::sync::Notify::new(),
            is_ready: std::sync::atomic::AtomicBool::new(false),
            next_index: std::sync::atomic::AtomicU32::new(cfg.agents + 1),
            scaled: Mutex::new(std::collections::HashSet::new()),
            observed: obs_tx,
            observations: Mutex::new(Some(obs_rx)),
        }
    }

    /// Run the stage to its end and tear down: no agent process and (unless `keep`) nothing of
    /// the transport is left.
    pub async fn run(self) -> Outcome {
        let warning = self.launcher.program().warning();
        if let Some(w) = &warning {
            self.ctx.events.emit(self.ctx.events.event("warning").name("agent_fallback").error(w.as_str()));
        }
        let outcome = tokio::select! {
            o = self.coordinate() => o,
            _ = self.receive() => Outcome::with(Status::Error, "the transport stopped"),
            _ = self.watchdog() => Outcome::with(Status::Error, "the watchdog stopped"),
            _ = faults::inject(&self.cfg.faults, &self.roster, &self.rng, self.ctx) => {
                Outcome::with(Status::Error, "faults stopped")
            }
            _ = self.sample() => Outcome::with(Status::Error, "sampling stopped"),
            _ = self.scaler() => Outcome::with(Status::Error, "scaling stopped"),
        };
        self.teardown().await;
        match (outcome.status, outcome.message.is_none(), warning) {
            // The stage did its work, but a person should still hear why it was slow to start.
            (Status::Passed, true, Some(w)) => Outcome::with(Status::Passed, format!("warning: {w}")),
            _ => outcome,
        }
    }

    pub(super) fn now(&self) -> f64 {
        self.ctx.clock.elapsed_ms()
    }

    pub(super) fn id(i: u32) -> String {
        format!("agent-{i}")
    }

    pub(super) fn protocol_error(&self, agent: Option<&str>, error: impl Into<String>, file: Option<&str>) {
        let mut ev = self.ctx.events.event("protocol_error").error(error);
        if let Some(a) = agent {
            ev = ev.agent(a);
        }
        if let Some(f) = file {
            ev = ev.attrs(serde_json::json!({ "file": f }));
        }
        self.ctx.events.emit(ev);
    }

    /// Consume what agents send: heartbeats, responses, protocol errors. Returns only if the
    /// transport closes its channel, which stops the stage.
    async fn receive(&self) {
        let Some(mut rx) = self.incoming.lock().ok().and_then(|mut r| r.take()) else {
            return std::future::pending().await;
        };
        while let Some(inc) = rx.recv().await {
            match inc {
                Incoming::Status(st) => self.on_status(&st),
                Incoming::Response(r) => self.on_response(&r),
                Incoming::Bad { file, agent, error } => self.protocol_error(agent.as_deref(), error, Some(&file)),
                Incoming::Notice(n) => {
                    self.ctx.events.emit(self.ctx.events.event("warning").name("transport").error(n.as_str()))
                }
                Incoming::Join { agent, nonce, host } => self.on_join(&agent, &nonce, &host).await,
            }
        }
    }

    /// An agent started by hand asks to join: admit it if the stage expects more, else tell it why not.
    async fn on_join(&self, agent: &str, nonce: &str, host: &str) {
        let local =
            agent.strip_prefix("agent-").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let refuse = if local {
            Some(format!(
                "join refused: `{agent}` is the form of the stage's own agents' ids (agent-N); give another --id"
            ))
        } else if self.roster.in_use(agent) {
            Some(format!("join refused: agent id `{agent}` is in use in this stage"))
        } else if self.roster.remote_count() >= self.cfg.expected_agents {
            Some(format!("join refused: the stage expects {} joined agents and has them", self.cfg.expected_agents))
        } else {
            None
        };
        if let Some(why) = refuse {
            self.transport.refuse_remote(nonce, &why).await;
            self.protocol_error(Some(agent), why, None);
            return;
        }
        self.roster.joined(agent, self.now(), now_ms_f64());
        let heartbeat_ms = self.ctx.clock.scaled(self.cfg.heartbeat.0).as_millis().max(10) as u64;
        let r = self.transport.admit_remote(agent, nonce, heartbeat_ms).await;
        let mut ev =
            self.ctx.events.event("join").agent(agent).ok(r.is_ok()).attrs(serde_json::json!({ "host": host }));
        if let Err(e) = &r {
            self.roster.exited(agent, None);
            ev = ev.error(format!("cannot answer the join: {e}"));
        }
        self.ctx.events.emit(ev);
    }

    fn on_status(&self, st: &AgentStatus) {
        match self.roster.beat_with(&st.agent_id, st.timestamp, self.now(), st.doorbell) {
            Beat::Unknown => self.protocol_error(Some(&st.agent_id), "status from an unknown agent", None),
            Beat::Again => {}
            Beat::First { latency_ms, restarts } => {
                let mut ev = self.ctx.events.event("spawn");
                // Started by a scale-up, while cycles ran: allocation under load (a restart of
                // one is a restart, not an allocation).
                if restarts == 0 && self.scaled.lock().is_ok_and(|s| s.contains(&st.agent_id)) {
                    ev = ev.name("scale");
                }
                self.ctx.events.emit(
                    ev.agent(st.agent_id.as_str())
                        .ok(true)
                        .latency_ms(latency_ms)
                        .attrs(serde_json::json!({ "pid": st.pid, "restarts": restarts })),
                );
                self.roster.notify();
            }
        }
    }

    fn on_response(&self, r: &Response) {
        match self.roster.answer(r, self.now()) {
            Answer::UnknownMessage => self.protocol_error(
                Some(&r.agent_id),
                format!("response to an unknown message id `{}`", r.message_id),
                None,
            ),
            Answer::Unexpected => self.protocol_error(Some(&r.agent_id), "unexpected or duplicate response", None),
            Answer::Retired => {}
            Answer::Accepted { latency_ms, kind, cycle } => {
                self.ctx.events.emit(
                    self.ctx
                        .events
                        .event("response")
                        .name(kind)
                        .agent(r.agent_id.as_str())
                        .ok(true)
                        .latency_ms(latency_ms)
                        .value(r.memory.rss as f64, "bytes")
                        .attrs(serde_json::json!({
                            "cycle": cycle, "processing_ms": r.processing_time, "coordination_count": r.coordination_count,
                            "error_count": r.error_count, "uptime_ms": r.uptime, "allocated_bytes": r.memory.allocated,
                        })),
                );
                self.roster.notify();
            }
        }
    }

    /// Wait (bounded by `deadline_ms` of clock time, and by cancellation) until `done` holds.
    pub(super) async fn wait_until(&self, deadline_ms: f64, done: impl Fn(&Book) -> bool) -> bool {
        self.wait(deadline_ms, done, true).await
    }

    /// Wait until `done` holds or `deadline_ms` passes; `cancellable` lets cancellation end the
    /// wait early (teardown, which runs because the stage was cancelled, must not let it).
    pub(super) async fn wait(&self, deadline_ms: f64, done: impl Fn(&Book) -> bool, cancellable: bool) -> bool {
        loop {
            let changed = self.roster.changed();
            if done(&self.roster.book()) {
                return true;
            }
            let left = deadline_ms - self.now();
            let cancelled = async {
                match cancellable {
                    true => self.ctx.cancel.cancelled().await,
                    false => std::future::pending().await,
                }
            };
            if left <= 0.0 || (cancellable && (self.ctx.cancel.is_cancelled() || self.transport.lost().is_some())) {
                return false;
            }
            // Wake at least every 250 ms to see whether the transport is gone (then nothing
            // waited for can come).
            let nap = (left / 1000.0).min(0.25);
            tokio::select! {
                _ = changed => {}
                _ = self.ctx.clock.sleep_unscaled(Duration::from_secs_f64(nap)) => {}
                _ = cancelled => return false,
            }
        }
    }

    /// Start (or restart) agent `id` and watch for its exit.
    pub(super) fn spawn(&self, id: &str) -> Result<(), String> {
        let env = self.transport.enroll(id);
        let (now, wall) = (self.now(), now_ms_f64());
        let started = self.launcher.start(id, &env, self.ctx.seed_for(&[id]))?;
        let pid = started.pid;
        self.roster.started(id, pid, now, wall);
        let (roster, events, id) = (Arc::clone(&self.roster), self.ctx.events.clone(), id.to_string());
        tokio::spawn(async move {
            let exit = started.exited().await;
            if !roster.exited(&id, pid) {
                let mut ev = events.event("crash").agent(id.as_str()).ok(false).error(exit.to_string());
                if let process::Exit::Code(c) = exit {
                    ev = ev.status(c as i64);
                }
                events.emit(ev);
            }
            roster.notify();
        });
        Ok(())
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
            if !self.wait_until(deadline, |b| b.settled(&ids)).await {
                let late: Vec<&String> = {
                    let b = self.roster.book();
                    ids.iter().filter(|id| !b.has_started(id)).collect()
                };
                for id in late {
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
        if self.cfg.expected_agents > 0 {
            let want = self.cfg.expected_agents;
            let deadline = self.now() + self.ctx.clock.scaled(self.cfg.join_timeout.0).as_secs_f64() * 1000.0;
            self.wait_until(deadline, |b| b.remote_started() >= want).await;
            let joined = self.roster.remote_started();
            let mut ev = self
                .ctx
                .events
                .event("join")
                .name("expected")
                .ok(joined >= want)
                .value(joined as f64, "agents")
                .attrs(serde_json::json!({ "expected": want }));
            if joined < want {
                ev = ev.error(format!(
                    "{joined} of {want} agents joined within join_timeout; start them with `planrun agent --transport URL --join {}`",
                    self.cfg.join.as_deref().unwrap_or("NAME")
                ));
            }
            self.ctx.events.emit(ev);
        }
        Ok(())
    }

    pub(super) fn pick_kind(&self, cycle: u64) -> String {
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

    /// Cycle `cycle`'s message `message_id` of `kind`, with its payload, to `to` (None: all).
    pub(super) fn message(&self, message_id: &str, kind: &str, cycle: u64, to: Option<Vec<String>>) -> Message {
        Message {
            message_id: message_id.to_string(),
            kind: kind.to_string(),
            timestamp: now_ms(),
            cycle,
            data: self.cfg.payload.get(kind).cloned().unwrap_or(serde_json::Value::Null),
            to,
        }
    }

    /// A failed `response` event: `agent` did not answer cycle `cycle`'s message (the caller adds why).
    pub(super) fn no_response(&self, kind: &str, agent: &str, cycle: u64) -> Event {
        self.ctx.events.event("response").name(kind).agent(agent).ok(false).attrs(serde_json::json!({ "cycle": cycle }))
    }

    /// Coordination cycle `cycle` (1-based). Err: the fleet cannot go on (its transport is gone).
    async fn cycle(&self, cycle: u64) -> Result<(), String> {
        if let Some(a) = &self.cfg.autoscale {
            return self.task_cycle(cycle, a).await;
        }
        let kind = self.pick_kind(cycle - 1);
        let mut to = self.addressed();
        if let (Some(n), Ok(mut rng)) = (self.cfg.fanout, self.rng.lock()) {
            to.shuffle(&mut *rng);
            to.truncate(n as usize);
            to.sort();
        }
        let message_id = format!("coord-{cycle}-{}", now_ms());
        // Addressed when only some agents are asked, and when scaling may start agents while it
        // is live (they must not answer a message sent before they existed).
        let addressed = (self.cfg.fanout.is_some() || !self.cfg.scale.is_empty()).then(|| to.clone());
        let msg = self.message(&message_id, &kind, cycle, addressed);
        let sent_ms = self.now();
        self.roster.open(&message_id, Pending::new(sent_ms, &kind, cycle, &to));
        if let Err(e) = self.transport.send(&msg).await {
            // Not delivered: nothing to wait for. Every addressee fails at once.
            self.protocol_error(None, format!("cannot write message: {e}"), None);
            self.roster.close(&message_id);
            for a in &to {
                self.ctx.events.emit(self.no_response(&kind, a, cycle).error(format!("not delivered: {e}")));
            }
            self.ctx.events.emit(
                self.ctx
                    .events
                    .event("cycle")
                    .name(kind.as_str())
                    .ok(false)
                    .value(0.0, "ratio")
                    .attrs(serde_json::json!({ "cycle": cycle, "sent": 0, "received": 0, "error": e.to_string() })),
            );
            return match self.transport.lost() {
                Some(why) => Err(format!("{why}; stopping the stage")),
                None => Ok(()),
            };
        }
        if self.transport.doorbell() && self.launcher.doorbell() {
            // One signal per agent: agents past the inotify limit wake at once instead of at
            // their next poll.
            for pid in self.roster.book().doorbell_pids() {
                Signal::Usr1.send(pid);
            }
        }
        let timeout_ms = self.ctx.clock.scaled(self.cfg.response_timeout.0).as_secs_f64() * 1000.0;
        self.wait_until(sent_ms + timeout_ms, |b| b.answered(&message_id)).await;
        if let Some(why) = self.transport.lost() {
            self.roster.close(&message_id);
            return Err(format!("{why}; stopping the stage"));
        }
        let p = self.roster.close(&message_id);
        self.transport.retire(&message_id);
        let Some(p) = p else { return Ok(()) };
        let missing = p.missing();
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
                .attrs(serde_json::json!({ "cycle": cycle, "sent": p.expected.len(), "received": p.got.len() })),
        );
        if !p.rss.is_empty() {
            let mean = p.rss.iter().sum::<f64>() / p.rss.len() as f64;
            self.ctx.events.emit(
                self.ctx
                    .events
                    .event("sample")
                    .name("agent_rss_mean")
                    .value(mean, "bytes")
                    .attrs(serde_json::json!({ "cycle": cycle, "agents": p.rss.len() })),
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
            let w = self.roster.watch(self.now(), limit_ms, self.cfg.restart == Restart::OnCrash);
            for (id, silent) in w.unresponsive {
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
            for id in w.restart {
                self.ctx.clock.sleep(self.cfg.restart_backoff.0).await;
                if self.roster.is_retiring(&id) {
                    // A scale-down took it meanwhile: it stays stopped.
                    self.roster.exited(&id, None);
                    continue;
                }
                self.ctx.events.emit(self.ctx.events.event("restart").agent(id.as_str()));
                if let Err(e) = self.spawn(&id) {
                    self.ctx.events.emit(self.ctx.events.event("restart").agent(id.as_str()).ok(false).error(e));
                }
            }
        }
    }

    async fn sample(&self) {
        match self.cfg.sample_interval {
            Some(every) => {
                crate::drivers::monitor::sample(every.0, &self.ctx.clock, &self.ctx.events, "agent", |_| {
                    self.roster.alive_pids()
                })
                .await
            }
            None => std::future::pending().await,
        }
    }

    async fn coordinate(&self) -> Outcome {
        if let Err(e) = self.spawn_all().await {
            return Outcome::with(Status::Error, e);
        }
        self.is_ready.store(true, std::sync::atomic::Ordering::Release);
        self.ready.notify_waiters();
        let cycles = self.cfg.cycle_count(self.ctx.duration);
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
            if let Err(e) = self.cycle(c as u64 + 1).await {
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

    /// TERM every agent, KILL what is left after a grace period, check nothing survived, and
    /// close the transport (removing what it made unless `keep`).
    async fn teardown(&self) {
        // Joined agents have no process here: tell them to stop, and count them gone.
        let remote = self.roster.remote_alive();
        if !remote.is_empty() {
            let msg = Message {
                message_id: format!("shutdown-{}", now_ms()),
                kind: "shutdown".into(),
                timestamp: now_ms(),
                cycle: 0,
                data: serde_json::Value::Null,
                to: Some(remote.clone()),
            };
            // Bounded, and skipped when the server is gone: teardown must not wait on it. Agents
            // that miss it stop anyway when the join key stops naming this stage.
            if self.transport.lost().is_none() {
                let _ = tokio::time::timeout(Duration::from_secs(1), self.transport.send(&msg)).await;
                // A moment to read it before the stream is removed.
                self.ctx.clock.sleep_unscaled(Duration::from_millis(200)).await;
            }
            for id in &remote {
                self.roster.exited(id, None);
            }
        }
        let pids = self.roster.begin_teardown();
        for pid in &pids {
            Signal::Cont.send(*pid); // a paused agent cannot act on TERM
            Signal::Term.send(*pid);
        }
        // A cancelled stage (timeout, abort, Ctrl-C) still gives its agents their grace.
        let stopped = self.wait(self.now() + TERM_GRACE.as_secs_f64() * 1000.0, Book::none_alive, false).await;
        let mut killed = 0;
        if !stopped {
            for (_, pid) in self.roster.alive_pids() {
                Signal::Kill.send(pid);
                killed += 1;
            }
            self.wait(self.now() + KILL_WAIT.as_secs_f64() * 1000.0, Book::none_alive, false).await;
        }
        let orphans = pids.iter().filter(|p| pid_alive(**p)).count();
        let left = self.transport.close(self.cfg.keep).await;
        self.ctx.events.emit(
            self.ctx.events.event("teardown").ok(orphans == 0 && (self.cfg.keep || left == 0)).value(orphans as f64, "processes").attrs(
                serde_json::json!({ "agents": pids.len(), "killed_after_grace": killed, "orphans": orphans, "files_left": left, "kept": self.cfg.keep }),
            ),
        );
    }
}
