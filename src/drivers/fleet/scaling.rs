//! Scaling a running fleet: the `scale` schedule and the autoscaler (`scaler`), the task cycles
//! an autoscaled fleet runs and the backlog they measure (`task_cycle`), and growing or
//! shrinking the fleet with the rows and the teardown check that go with it (`scale_to`).
//! Methods of the coordinator, apart from the cycles and lifecycle it owns in `coordinator`.

use std::time::Duration;

use super::coordinator::{Coordinator, KILL_WAIT, TERM_GRACE};
use super::process::{Signal, pid_alive};
use super::protocol::now_ms;
use super::roster::{Book, Pending};

/// What one task cycle saw, one interval after it was sent.
#[derive(Clone, Copy, Debug)]
pub(super) struct Observed {
    /// Tasks still unanswered, per agent.
    pub(super) backlog: f64,
    /// When every task was answered, as a share of the interval (1 when some were not).
    pub(super) busy: f64,
}

impl Coordinator<'_> {
    /// The agents a cycle addresses: the live ones not being stopped, less those a scale-up
    /// started that have not heartbeated yet (they join from the cycle after they are up).
    pub(super) fn addressed(&self) -> Vec<String> {
        let alive = self.roster.alive();
        let scaled: Vec<String> = match self.scaled.lock() {
            Ok(s) => alive.iter().filter(|id| s.contains(*id)).cloned().collect(),
            Err(_) => Vec::new(),
        };
        if scaled.is_empty() {
            return alive;
        }
        let up = self.roster.started_of(scaled.clone());
        alive.into_iter().filter(|id| !scaled.contains(id) || up.contains(id)).collect()
    }

    /// Plan time since the fleet began.
    fn plan_elapsed(&self) -> Duration {
        let real = self.ctx.clock.now().duration_since(self.t0).as_secs_f64();
        Duration::from_secs_f64(real / self.ctx.clock.scale().max(1e-9))
    }

    /// An autoscaled cycle: the offered load's tasks, one message each, dealt round the live
    /// agents; the backlog one interval after sending goes to the autoscaler; then, as any
    /// cycle, every task is waited for up to `response_timeout`.
    pub(super) async fn task_cycle(&self, cycle: u64, a: &super::config::Autoscale) -> Result<(), String> {
        let kind = self.pick_kind(cycle - 1);
        let agents = self.addressed();
        let tasks = a.tasks_at(self.plan_elapsed()) as usize;
        if agents.is_empty() || tasks == 0 {
            // No load: no backlog, and an idle fleet the autoscaler may shrink.
            let _ = self.observed.send(Observed { backlog: 0.0, busy: 0.0 });
            return Ok(());
        }
        let sent_ms = self.now();
        let offset = (cycle as usize).wrapping_mul(tasks) % agents.len();
        let mut ids = Vec::with_capacity(tasks);
        for k in 0..tasks {
            let agent = agents[(offset + k) % agents.len()].clone();
            let message_id = format!("task-{cycle}-{k}-{}", now_ms());
            let msg = self.message(&message_id, &kind, cycle, Some(vec![agent.clone()]));
            self.roster.open(&message_id, Pending::new(sent_ms, &kind, cycle, std::slice::from_ref(&agent)));
            if let Err(e) = self.transport.send(&msg).await {
                self.protocol_error(None, format!("cannot write message: {e}"), None);
                self.roster.close(&message_id);
                self.ctx.events.emit(self.no_response(&kind, &agent, cycle).error(format!("not delivered: {e}")));
                if let Some(why) = self.transport.lost() {
                    return Err(format!("{why}; stopping the stage"));
                }
                continue;
            }
            ids.push(message_id);
        }
        if self.transport.doorbell() && self.launcher.doorbell() {
            for pid in self.roster.book().doorbell_pids() {
                Signal::Usr1.send(pid);
            }
        }
        let interval_ms = self.cfg.interval.map_or(0.0, |i| self.ctx.clock.scaled(i.0).as_secs_f64() * 1000.0);
        let all = |b: &Book| ids.iter().all(|m| b.answered(m));
        let in_time = self.wait_until(sent_ms + interval_ms, all).await;
        let outstanding = {
            let b = self.roster.book();
            ids.iter().filter(|m| !b.answered(m)).count()
        };
        let backlog = outstanding as f64 / agents.len() as f64;
        let busy = if in_time && interval_ms > 0.0 { ((self.now() - sent_ms) / interval_ms).min(1.0) } else { 1.0 };
        let _ = self.observed.send(Observed { backlog, busy });
        self.ctx.events.emit(
            self.ctx
                .events
                .event("sample")
                .name("backlog")
                .value(backlog, "tasks/agent")
                .attrs(serde_json::json!({ "cycle": cycle, "tasks": tasks, "outstanding": outstanding, "agents": agents.len(), "busy": busy })),
        );
        let timeout_ms = self.ctx.clock.scaled(self.cfg.response_timeout.0).as_secs_f64() * 1000.0;
        self.wait_until(sent_ms + timeout_ms, all).await;
        if let Some(why) = self.transport.lost() {
            ids.iter().for_each(|m| drop(self.roster.close(m)));
            return Err(format!("{why}; stopping the stage"));
        }
        let (mut received, mut dropped, mut missing_n, mut longest) = (0, 0, 0, 0.0_f64);
        for m in &ids {
            self.transport.retire(m);
            let Some(p) = self.roster.close(m) else { continue };
            if p.expected.is_empty() {
                // Its agent was stopped by a scale-down before it answered.
                dropped += 1;
                continue;
            }
            for a in p.missing() {
                missing_n += 1;
                self.ctx.events.emit(self.no_response(&kind, a, cycle).latency_ms(timeout_ms).error("timeout"));
            }
            received += p.got.len();
            longest = p.got.values().copied().fold(longest, f64::max);
        }
        let asked = ids.len() - dropped;
        self.ctx.events.emit(
            self.ctx
                .events
                .event("cycle")
                .name(kind.as_str())
                .ok(missing_n == 0)
                .latency_ms(if missing_n == 0 { longest } else { timeout_ms })
                .value(if asked == 0 { 1.0 } else { received as f64 / asked as f64 }, "ratio")
                .attrs(serde_json::json!({
                    "cycle": cycle, "sent": ids.len(), "received": received, "dropped_by_scale_down": dropped,
                    "agents": agents.len(), "backlog": backlog,
                })),
        );
        Ok(())
    }

    /// The autoscaler: after each task cycle's backlog, grow above `target_backlog`, shrink when
    /// there is none and the fleet is more than half idle, at most once per cooldown.
    async fn autoscaler(&self, a: &super::config::Autoscale) {
        let Some(mut rx) = self.observations.lock().ok().and_then(|mut r| r.take()) else {
            return std::future::pending().await;
        };
        let mut last: Option<tokio::time::Instant> = None;
        let cooldown = self.ctx.clock.scaled(a.cooldown.0);
        while let Some(o) = rx.recv().await {
            if last.is_some_and(|t| self.ctx.clock.now().duration_since(t) < cooldown) {
                continue;
            }
            let n = self.local_alive().len() as u32;
            let (target, reason) = if o.backlog > a.target_backlog && n < a.max {
                ((n + a.step).min(a.max), "backlog_high")
            } else if o.backlog == 0.0 && o.busy < 0.5 && n > a.min {
                (n.saturating_sub(a.step).max(a.min), "backlog_low")
            } else {
                continue;
            };
            last = Some(self.ctx.clock.now());
            let why = serde_json::json!({ "backlog": o.backlog, "busy": o.busy, "target_backlog": a.target_backlog });
            self.scale_to(target, reason, why).await;
            // What was measured while the fleet changed describes the old fleet.
            while rx.try_recv().is_ok() {}
        }
        std::future::pending().await
    }

    /// The `scale` schedule: once the first fleet is up, at each step's time grow or shrink the
    /// fleet while the cycles go on. Never returns (the stage ends it).
    pub(super) async fn scaler(&self) {
        if self.cfg.scale.is_empty() && self.cfg.autoscale.is_none() {
            return std::future::pending().await;
        }
        loop {
            let woken = self.ready.notified();
            if self.is_ready.load(std::sync::atomic::Ordering::Acquire) {
                break;
            }
            woken.await;
        }
        if let Some(a) = &self.cfg.autoscale {
            return self.autoscaler(a).await;
        }
        for step in &self.cfg.scale {
            self.ctx.clock.sleep_until(self.t0 + self.ctx.clock.scaled(step.at.0)).await;
            if self.ctx.cancel.is_cancelled() {
                break;
            }
            self.scale_to(step.agents, "schedule", serde_json::Value::Null).await;
        }
        std::future::pending().await
    }

    /// This host's agents (not joined ones), in start order.
    fn local_alive(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.roster.alive().into_iter().filter(|id| id.starts_with("agent-")).collect();
        ids.sort_by_key(|id| id["agent-".len()..].parse::<u64>().unwrap_or(u64::MAX));
        ids
    }

    /// Grow or shrink the fleet to `target` agents: a `scale` row for the decision, then for
    /// a scale-up the new agents' `spawn` rows (`name = "scale"`) and a `scale_ready` row (the
    /// time from the decision to every new agent's first heartbeat); for a scale-down the
    /// newest agents stopped (TERM, KILL after a grace) and a `teardown` row (`name =
    /// "scale_down"`) saying whether any process or transport state of theirs is left.
    async fn scale_to(&self, target: u32, reason: &str, why: serde_json::Value) {
        let alive = self.local_alive();
        let from = alive.len() as u32;
        let decided = self.now();
        let attrs = serde_json::json!({ "from": from, "to": target, "reason": reason, "why": why });
        self.ctx.events.emit(self.ctx.events.event("scale").name(reason).value(target as f64, "agents").attrs(attrs));
        if target > from {
            let n = target - from;
            let ids: Vec<String> =
                (0..n).map(|_| Self::id(self.next_index.fetch_add(1, std::sync::atomic::Ordering::Relaxed))).collect();
            if let Ok(mut s) = self.scaled.lock() {
                s.extend(ids.iter().cloned());
            }
            for id in &ids {
                if let Err(e) = self.spawn(id) {
                    self.ctx
                        .events
                        .emit(self.ctx.events.event("spawn").name("scale").agent(id.as_str()).ok(false).error(e));
                }
                tokio::task::yield_now().await;
            }
            let deadline = self.now() + self.ctx.clock.scaled(self.cfg.startup_timeout.0).as_secs_f64() * 1000.0;
            self.wait_until(deadline, |b| b.settled(&ids)).await;
            let started = {
                let b = self.roster.book();
                ids.iter().filter(|id| b.has_started(id)).count()
            };
            let mut ev = self
                .ctx
                .events
                .event("scale_ready")
                .name(reason)
                .ok(started == ids.len())
                .latency_ms(self.now() - decided)
                .value(started as f64, "agents")
                .attrs(serde_json::json!({ "from": from, "to": target, "started": started, "asked": n }));
            if started < ids.len() {
                ev = ev.error(format!(
                    "{} of {n} new agents sent no heartbeat within startup_timeout",
                    ids.len() - started
                ));
            }
            self.ctx.events.emit(ev);
        } else if target < from {
            let victims: Vec<String> = alive[target as usize..].to_vec();
            let pids = self.roster.retire(&victims);
            self.roster.notify();
            for pid in &pids {
                Signal::Cont.send(*pid);
                Signal::Term.send(*pid);
            }
            let gone = |b: &Book| b.gone(&victims);
            let stopped = self.wait(self.now() + TERM_GRACE.as_secs_f64() * 1000.0, gone, false).await;
            let mut killed = 0;
            if !stopped {
                for (id, pid) in self.roster.alive_pids() {
                    if victims.contains(&id) {
                        Signal::Kill.send(pid);
                        killed += 1;
                    }
                }
                self.wait(self.now() + KILL_WAIT.as_secs_f64() * 1000.0, gone, false).await;
            }
            let orphans = pids.iter().filter(|p| pid_alive(**p)).count();
            let mut left = 0;
            for id in &victims {
                left += self.transport.release(id).await;
            }
            self.ctx.events.emit(
                self.ctx
                    .events
                    .event("teardown")
                    .name("scale_down")
                    .ok(orphans == 0 && left == 0)
                    .latency_ms(self.now() - decided)
                    .value(orphans as f64, "processes")
                    .attrs(serde_json::json!({
                        "from": from, "to": target, "agents": victims.len(), "killed_after_grace": killed,
                        "orphans": orphans, "files_left": left,
                    })),
            );
        }
    }
}
