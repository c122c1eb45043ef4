//! One iteration of an `http` stage: prepare the load (tasks after `--tags`, connectors), wait
//! for the target if `ready_timeout` asks, run the closed or open model for the stage's
//! `duration` beside the target monitor, write the end-of-stage counts, and decide the outcome:
//! a stage passes only if its requests did their work — at least one succeeded, or the share
//! `min_success` asks for.
//!
//! Time: the stage's `duration`, shape and arrival points, think times and spawn rates are plan
//! time (`--time-scale` compresses them); request timeouts, `stall_after` and latencies are real
//! time, because the target does not run faster when the plan is compressed. The driver never
//! runs under the virtual clock (it touches the network).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::config::{DEFAULT_GRACEFUL_STOP, Http};
use super::demo::Demo;
use super::stage::Load;
use super::target::Target;
use super::{closed, open};
use crate::drivers::monitor::sample_targets;
use crate::drivers::{BoxFuture, Driver, Outcome, StageContext, Status};

impl Driver for Http {
    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Outcome> {
        Box::pin(run(self, ctx))
    }
}

async fn run(cfg: &Http, ctx: &StageContext) -> Outcome {
    let demo = match &cfg.demo {
        Some(d) if d.enabled => {
            let started = match Target::parse(cfg.all_hosts()[0]) {
                Ok(host) => Demo::start(d, &host, ctx.seed).await,
                Err(e) => Err(e),
            };
            match started {
                Ok(d) => Some(d),
                Err(e) => return Outcome::with(Status::Error, e),
            }
        }
        _ => None,
    };
    let demo_pid = demo.as_ref().map(|d| d.pid);
    let outcome = match &cfg.workers {
        Some(w) => super::remote::run(cfg, w, ctx, demo_pid).await,
        None => load_stage(cfg, ctx, demo_pid).await,
    };
    if let Some(d) = demo {
        d.stop().await;
    }
    outcome
}

async fn load_stage(cfg: &Http, ctx: &StageContext, demo_pid: Option<u32>) -> Outcome {
    let mut load = match Load::new(cfg, ctx, &ctx.tags).await {
        Ok(l) => l,
        Err(e) => return Outcome::with(Status::Error, e),
    };
    if let Some(limit) = cfg.ready_timeout {
        let ready = tokio::select! {
            r = load.wait_ready(limit.0) => r,
            _ = ctx.cancel.cancelled() => return Outcome::with(Status::Interrupted, "interrupted"),
        };
        if let Err(e) = ready {
            return Outcome::with(Status::Error, e);
        }
    }
    let length = ctx.clock.scaled(ctx.duration.unwrap_or_default());
    // The stage window starts now (the readiness wait is not load).
    load.started = std::time::Instant::now();
    let load = Arc::new(load);
    let grace = cfg.graceful_stop.map_or(DEFAULT_GRACEFUL_STOP, |d| d.0);
    let work = async {
        let interrupted = if cfg.is_open() {
            open::run(cfg, Arc::clone(&load), length, grace, &ctx.cancel).await
        } else {
            closed::run(cfg, Arc::clone(&load), length, grace, &ctx.cancel).await
        };
        load.recorder.flush();
        interrupted
    };
    let monitor = async {
        match &cfg.monitor {
            Some(m) => {
                let mut m = m.clone();
                m.pids.extend(demo_pid);
                sample_targets(&m, &ctx.clock, &ctx.events).await
            }
            None => std::future::pending().await,
        }
    };
    let interrupted = tokio::select! {
        i = work => i,
        _ = monitor => false,
    };
    // Always written, so "no request was left hanging" has data: sum(...) == 0.
    load.count_row("cut_off", load.cut_off.load(Ordering::Relaxed));
    // The request counts the outcome is judged on (a stage over workers judges their sum).
    let (finished, failed) =
        (load.recorder.finished.load(Ordering::Relaxed), load.recorder.failed.load(Ordering::Relaxed));
    load.count_row("finished", finished);
    load.count_row("failed", failed);
    if interrupted {
        return Outcome::with(Status::Interrupted, "interrupted");
    }
    judge(cfg, finished, failed)
}

/// The stage's outcome from its request counts.
pub(super) fn judge(cfg: &Http, finished: u64, failed: u64) -> Outcome {
    if finished == 0 {
        return Outcome::with(Status::Failed, "no request finished within the stage");
    }
    let ok = finished - failed;
    let share = ok as f64 / finished as f64;
    let summary = format!("{ok} of {finished} requests succeeded ({:.1}%)", share * 100.0);
    match cfg.min_success {
        Some(m) if share < m => Outcome::with(Status::Failed, format!("{summary}; min_success is {:.1}%", m * 100.0)),
        None if ok == 0 => Outcome::with(Status::Failed, format!("{summary}: every request failed")),
        _ => Outcome::passed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(min_success: Option<f64>) -> Http {
        let mut c: Http = serde_json::from_value(serde_json::json!({
            "host": "http://127.0.0.1:1", "users": 1, "task": [{ "path": "/" }],
        }))
        .unwrap();
        c.min_success = min_success;
        c
    }

    #[test]
    fn a_stage_whose_requests_all_failed_fails() {
        assert_eq!(judge(&cfg(None), 0, 0).status, Status::Failed);
        let all_failed = judge(&cfg(None), 10, 10);
        assert_eq!(all_failed.status, Status::Failed);
        assert_eq!(all_failed.message.as_deref(), Some("0 of 10 requests succeeded (0.0%): every request failed"));
        assert_eq!(judge(&cfg(None), 10, 9).status, Status::Passed);
        assert_eq!(judge(&cfg(Some(0.95)), 100, 6).status, Status::Failed);
        assert_eq!(judge(&cfg(Some(0.95)), 100, 5).status, Status::Passed);
    }
}
