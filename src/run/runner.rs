//! The scheduler: phases in order, stages in order, consecutive stages sharing a `parallel`
//! group run together as one *step*. It owns repeats, pauses, stage timeouts,
//! `continue_on_failure`, cancellation (Ctrl-C), the stage lifecycle events, and the manifest
//! checkpoint written after each step. Drivers only ever see one iteration at a time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Plan;
use super::abort::AbortWatch;
use super::checkpoint::ManifestCheckpoints;
use super::observe::StageWatch;
use super::progress::Progress;
use crate::clock::Clock;
use crate::criteria;
use crate::drivers::{Ledger, Outcome, StageCheckpoint, StageContext, Status, TagFilter, derive_seed};
use crate::events::{Emitter, EventSink};
use crate::plan::StageDriver;
use crate::rundir::{Checkpoint, Manifest, RunDir, RunStatus, StageRecord, StageStatus, now_rfc3339};

/// How long a driver gets to stop after it was told to (timeout or Ctrl-C) before the runner
/// gives up on it and moves on.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// How often (in stage clock time) `abort = true` criteria are checked.
const ABORT_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Indexes of the stages that run together, as (phase, stage).
pub type Step = Vec<(usize, usize)>;

pub fn steps<D: StageDriver>(plan: &crate::plan::Plan<D>) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    for (pi, phase) in plan.phases.iter().enumerate() {
        let mut prev_group: Option<&str> = None;
        for (si, stage) in phase.stages.iter().enumerate() {
            let group = stage.common.parallel.as_deref();
            match (group, prev_group) {
                (Some(g), Some(p)) if g == p => {
                    if let Some(last) = out.last_mut() {
                        last.push((pi, si));
                    }
                }
                _ => out.push(vec![(pi, si)]),
            }
            prev_group = group;
        }
    }
    out
}

/// How a stage ended, as the manifest records it: the driver's outcome, or what the runner
/// decided (timed out, aborted by a criterion, interrupted).
pub struct Ended {
    pub status: StageStatus,
    pub message: Option<String>,
}

impl Ended {
    fn with(status: StageStatus, message: impl Into<String>) -> Ended {
        Ended { status, message: Some(message.into()) }
    }
}

impl From<Outcome> for Ended {
    fn from(o: Outcome) -> Ended {
        let status = match o.status {
            Status::Passed => StageStatus::Passed,
            Status::Failed => StageStatus::Failed,
            Status::Error => StageStatus::Error,
            Status::TimedOut => StageStatus::TimedOut,
            Status::BudgetExceeded => StageStatus::BudgetExceeded,
            Status::Interrupted => StageStatus::Interrupted,
        };
        Ended { status, message: o.message }
    }
}

/// A `keep_going` stage's outcome after all its iterations: it fails only when every one
/// failed; otherwise it passes and says how many failed (criteria judge the rate).
fn keep_going_outcome(last: Outcome, failed: u32, repeat: u32) -> Outcome {
    match failed {
        0 => last,
        n if n == repeat => Outcome::with(
            Status::Failed,
            format!("all {repeat} iterations failed; last: {}", last.message.unwrap_or_default()),
        ),
        n => Outcome::with(Status::Passed, format!("{n} of {repeat} iterations failed (keep_going)")),
    }
}

pub struct Runner {
    pub plan: Arc<Plan>,
    pub dir: RunDir,
    pub manifest: Arc<Mutex<Manifest>>,
    pub vars: Arc<serde_json::Map<String, serde_json::Value>>,
    pub ledger: Arc<Ledger>,
    /// Set once `--suspend-after` has passed.
    pub suspend: Arc<AtomicBool>,
    pub sink: EventSink,
    pub clock: Clock,
    pub progress: Arc<Progress>,
    pub cancel: CancellationToken,
    pub seed: u64,
    /// Which tagged tasks run (`--tags`, `--exclude-tags`).
    pub tags: Arc<TagFilter>,
    /// Sees every event of every stage (the live dashboard).
    pub watch: Option<Arc<dyn crate::events::Observer>>,
}

impl Runner {
    /// Run steps from the manifest's checkpoint on; returns the run's final status.
    pub async fn run(&self) -> RunStatus {
        let all = steps(&self.plan);
        let start = self.manifest().checkpoint.next_step;
        let already: u64 = all[..start.min(all.len())].iter().map(|s| s.len() as u64).sum();
        self.progress.skip(already);
        let mut failed = false;
        let mut errored = false;
        for (i, step) in all.iter().enumerate().skip(start) {
            if self.cancel.is_cancelled() {
                return RunStatus::Interrupted;
            }
            if self.suspend.load(Ordering::SeqCst) {
                self.manifest().message = Some("suspended (--suspend-after); continue with `planrun resume`".into());
                self.save();
                return RunStatus::Interrupted;
            }
            if failed {
                self.mark_skipped(step);
                continue;
            }
            let outcomes = futures::future::join_all(step.iter().map(|&(pi, si)| self.run_stage(pi, si))).await;
            let mut step_failed = false;
            let mut interrupted = false;
            for (&(pi, si), outcome) in step.iter().zip(&outcomes) {
                let stage = &self.plan.phases[pi].stages[si];
                match outcome.status {
                    StageStatus::Interrupted => interrupted = true,
                    s if !s.is_success() && !stage.common.continue_on_failure => step_failed = true,
                    _ => {}
                }
            }
            if interrupted || self.cancel.is_cancelled() {
                // The step is redone on resume: its stages go back to pending, and the events
                // it wrote after the last checkpoint are set aside by `resume`.
                for &(pi, si) in step {
                    let (p, s) = self.names(pi, si);
                    if let Some(r) = self.manifest().stage_mut(&p, &s) {
                        r.status = StageStatus::Interrupted;
                    }
                }
                self.save();
                return RunStatus::Interrupted;
            }
            // A step where planrun itself could not do a stage's work (`error`: a command that
            // cannot start, a directory it cannot create) is not passed: the checkpoint stays
            // before it, so `resume` redoes it once the cause is fixed.
            errored |= outcomes.iter().any(|o| o.status == StageStatus::Error);
            match self.sink.flush() {
                // Steps after it (under `continue_on_failure`) do not move it on either.
                Ok(_) if errored => {}
                Ok(position) => {
                    self.manifest().checkpoint = Checkpoint {
                        next_step: i + 1,
                        position,
                        t_ms: self.clock.elapsed_ms(),
                        spent_nanos: self.ledger.spent(),
                    };
                }
                Err(e) => {
                    self.manifest().message = Some(e.to_string());
                    self.save();
                    return RunStatus::Error;
                }
            }
            self.save();
            if step_failed {
                failed = true;
            }
        }
        let m = self.manifest();
        if m.stages.iter().any(|s| s.status == StageStatus::Error) {
            RunStatus::Error
        } else if failed || m.stages.iter().any(|s| !s.status.is_success()) {
            RunStatus::Failed
        } else {
            RunStatus::Completed
        }
    }

    fn names(&self, pi: usize, si: usize) -> (String, String) {
        let phase = &self.plan.phases[pi];
        (phase.name.clone(), phase.stages[si].name().to_string())
    }

    /// The manifest, shared by the stages of a step that finish concurrently.
    pub fn manifest(&self) -> MutexGuard<'_, Manifest> {
        self.manifest.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn save(&self) {
        let m = self.manifest().clone();
        if let Err(e) = self.dir.write_manifest(&m) {
            self.progress.line(&format!("warning: cannot write manifest.json: {e}"));
        }
    }

    fn mark_skipped(&self, step: &Step) {
        for &(pi, si) in step {
            let (p, s) = self.names(pi, si);
            if let Some(r) = self.manifest().stage_mut(&p, &s) {
                r.status = StageStatus::Skipped;
                r.message = Some("an earlier stage failed".into());
            }
            self.progress.skip(1);
            self.progress.line(&format!("stage {p}/{s} skipped: an earlier stage failed"));
        }
        self.save();
    }

    async fn run_stage(&self, pi: usize, si: usize) -> Ended {
        let phase = &self.plan.phases[pi];
        let stage = &phase.stages[si];
        let key = format!("{}/{}", phase.name, stage.name());
        // A stage resumed from its own checkpoint keeps its start time and does not start again.
        let saved = self
            .manifest()
            .stage_mut(&phase.name, stage.name())
            .and_then(|r| r.checkpoint.clone().map(|c| (c, r.t_start_ms)));
        let t_start = saved.as_ref().and_then(|(_, t)| *t).unwrap_or_else(|| self.clock.elapsed_ms());
        let watch = self.abort_watch(stage, t_start);
        let emitter =
            Emitter::new(self.sink.clone(), self.clock.clone(), &phase.name, stage.name(), stage.driver_name())
                .with_watch(Some(Arc::new(StageWatch {
                    key: key.clone(),
                    abort: watch.clone(),
                    progress: Arc::clone(&self.progress),
                    extra: self.watch.clone(),
                })));
        let expected = Some(stage.expected_duration()).filter(|d| !d.is_zero()).map(|d| self.clock.scaled(d));
        self.progress.stage_started(&key, &emitter, expected);
        let started_at = now_rfc3339();
        if saved.is_none() {
            emitter.emit(emitter.event("stage").name("start"));
        }
        let store = ManifestCheckpoints::new(
            &phase.name,
            stage.name(),
            self.sink.clone(),
            Arc::clone(&self.manifest),
            self.dir.clone(),
            self.clock.clone(),
        );
        let checkpoint = StageCheckpoint::new(
            Arc::new(store),
            saved.as_ref().map(|(c, _)| c.state.clone()),
            Arc::clone(&self.suspend),
        );

        let stage_cancel = self.cancel.child_token();
        let seed = derive_seed(self.seed, &[&phase.name, stage.name()]);
        let body = async {
            let repeat = stage.common.repeat.max(1);
            let mut last = Outcome::passed();
            let mut failed = 0u32;
            for iteration in 0..repeat {
                let ctx = StageContext {
                    clock: self.clock.clone(),
                    cancel: stage_cancel.clone(),
                    events: emitter.clone(),
                    phase: phase.name.clone(),
                    stage: stage.name().to_string(),
                    duration: stage.common.duration.map(|d| d.0),
                    iteration,
                    seed: derive_seed(seed, &[&iteration.to_string()]),
                    run_dir: self.dir.path().to_path_buf(),
                    vars: Arc::clone(&self.vars),
                    ledger: Arc::clone(&self.ledger),
                    checkpoint: checkpoint.clone(),
                    tags: Arc::clone(&self.tags),
                };
                let outcome = stage.driver.run(&ctx).await;
                match outcome.status {
                    Status::Failed if stage.common.keep_going => {
                        failed += 1;
                        last = outcome;
                    }
                    s if !s.is_success() => return outcome,
                    // A success that is not a plain pass (stopped at budget) is what the stage reports.
                    _ if failed == 0 => last = outcome,
                    _ => {}
                }
                if let (Some(pause), true) = (stage.common.pause, iteration + 1 < repeat) {
                    tokio::select! {
                        _ = self.clock.sleep(pause.0) => {}
                        _ = stage_cancel.cancelled() => return Outcome::with(Status::Interrupted, "interrupted"),
                    }
                }
            }
            keep_going_outcome(last, failed, repeat)
        };
        tokio::pin!(body);
        let limit = async {
            match stage.common.timeout {
                Some(t) => self.clock.sleep(t.0).await,
                None => std::future::pending().await,
            }
        };
        let abort_check = async {
            match &watch {
                Some(w) => loop {
                    self.clock.sleep_unscaled(ABORT_CHECK_EVERY).await;
                    if let Some(reason) = w.violated(self.clock.elapsed_ms()) {
                        return reason;
                    }
                },
                None => std::future::pending().await,
            }
        };
        let mut outcome = tokio::select! {
            o = &mut body => Ended::from(o),
            reason = abort_check => {
                stage_cancel.cancel();
                self.wait_stopped(&mut body).await;
                self.progress.line(&format!("stage {key} aborted: {reason}"));
                Ended::with(StageStatus::Aborted, reason)
            }
            _ = limit => {
                stage_cancel.cancel();
                let t = stage.common.timeout.unwrap_or_default();
                self.wait_stopped(&mut body).await;
                Ended::with(StageStatus::TimedOut, format!("stage timed out after {t}"))
            }
            _ = self.cancel.cancelled() => {
                self.wait_stopped(&mut body).await;
                Ended::with(StageStatus::Interrupted, "interrupted")
            }
            _ = self.sink.broken().cancelled() => {
                // Nothing more can be recorded (a full disk): stop rather than run unrecorded.
                stage_cancel.cancel();
                self.wait_stopped(&mut body).await;
                let why = self.sink.error().map_or_else(|| "the event log stopped".into(), |e| e.to_string());
                Ended::with(StageStatus::Error, format!("events can no longer be recorded: {why}"))
            }
        };
        if self.cancel.is_cancelled() {
            outcome = Ended::with(StageStatus::Interrupted, "interrupted");
        }
        let t_end = self.clock.elapsed_ms();
        let mut end = emitter.event("stage").name("end").ok(outcome.status.is_success()).latency_ms(t_end - t_start);
        end = end.attrs(serde_json::json!({ "status": outcome.status.as_str() }));
        if let Some(m) = &outcome.message {
            end = end.error(m.clone());
        }
        emitter.emit(end);
        self.progress.stage_finished(&key, outcome.status.as_str(), outcome.message.as_deref(), emitter.count());
        // Record the stage (the checkpoint itself moves only when the whole step is done).
        let record = StageRecord {
            phase: phase.name.clone(),
            stage: stage.name().to_string(),
            driver: stage.driver_name().to_string(),
            status: outcome.status,
            message: outcome.message.clone(),
            started_at: Some(started_at),
            ended_at: Some(now_rfc3339()),
            t_start_ms: Some(t_start),
            t_end_ms: Some(t_end),
            events: emitter.count(),
            // An interrupted stage keeps its checkpoint for `resume`; a finished one drops it.
            checkpoint: match outcome.status {
                StageStatus::Interrupted => {
                    self.manifest().stage_mut(&phase.name, stage.name()).and_then(|r| r.checkpoint.clone())
                }
                _ => None,
            },
        };
        self.record(record);
        outcome
    }

    /// Live checks for the stage's `abort = true` criteria, if it has any.
    fn abort_watch(&self, stage: &crate::plan::Stage<crate::drivers::Bound>, t_start: f64) -> Option<Arc<AbortWatch>> {
        let checks: Vec<_> = stage
            .common
            .criteria
            .iter()
            .filter(|c| c.abort)
            .filter_map(|c| {
                let check = criteria::parse(&c.check.value).ok()?;
                let limit = criteria::threshold(&check, &self.plan)?;
                Some((c.check.value.clone(), check, limit))
            })
            .collect();
        let planned_ms = self.clock.scaled(stage.expected_duration()).as_secs_f64() * 1000.0;
        AbortWatch::new(t_start, checks).map(|w| Arc::new(w.expecting(Some(planned_ms))))
    }

    /// Wait (bounded) for a cancelled stage body to return.
    async fn wait_stopped<F: std::future::Future<Output = Outcome> + Unpin>(&self, body: &mut F) {
        tokio::select! {
            _ = body => {}
            _ = self.clock.sleep_unscaled(STOP_GRACE) => {
                self.progress.line("warning: a stage did not stop within 30s of being told to; moving on");
            }
        }
    }

    fn record(&self, rec: StageRecord) {
        if let Some(r) = self.manifest().stage_mut(&rec.phase, &rec.stage) {
            *r = rec;
        }
        self.save();
    }
}
