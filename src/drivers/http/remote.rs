//! An `http` stage spread over workers (`workers = { count, redis }`): the load divided into
//! shares (`Http::share`: users and spawn rates, arrival rates, `max_in_flight`), each share
//! handed to a `planrun worker` as a job, the shares' events relayed into the run as they come
//! (each row names its worker), the workers watched, and one outcome from theirs. The target's
//! demo server and monitor stay on the runner's host; the workers only make requests.
//!
//! A worker lost mid-stage fails the stage (its rows up to then are kept, and `worker_lost`
//! says what it had): its share of the load is not moved to another worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::{DEFAULT_GRACEFUL_STOP, Http};
use crate::drivers::keyspace::{self, stage_prefix, with_password};
use crate::drivers::monitor::sample_targets;
use crate::drivers::workers::{Hire, Job, Relay, Report, StageJob, Work, Workers, alive_key, events_key};
use crate::drivers::{Outcome, StageContext, Status};
use crate::plan::StageDriver;

/// How long past its share's expected end a worker may take to report before the stage stops
/// waiting for it.
const REPORT_MARGIN: Duration = Duration::from_secs(30);

impl Http {
    /// Share `i` (0-based) of `n`: the same stage with its part of the load, and nothing the
    /// runner's host keeps (demo server, monitor, workers).
    pub fn share(&self, i: u32, n: u32) -> Http {
        let part = |x: u32| x / n + u32::from(i < x % n);
        let mut s = self.clone();
        s.workers = None;
        s.demo = None;
        s.monitor = None;
        if let Some(u) = self.users {
            s.users = Some(part(u));
            s.spawn_rate = self.spawn_rate.map(|r| r * part(u) as f64 / u.max(1) as f64);
        } else {
            s.spawn_rate = self.spawn_rate.map(|r| r / n as f64);
        }
        for p in &mut s.shape {
            p.users = part(p.users);
            p.spawn_rate = p.spawn_rate.map(|r| r / n as f64);
        }
        s.arrival_rate = self.arrival_rate.map(|r| r / n as f64);
        for p in &mut s.arrival {
            p.rate /= n as f64;
        }
        s.max_in_flight = self.max_in_flight.map(|m| m.div_ceil(n).max(1));
        s
    }

    /// How much load share `i` of `n` has, and its unit (for the `worker` events).
    fn share_size(&self, i: u32, n: u32) -> (f64, &'static str) {
        let s = self.share(i, n);
        match (s.users, s.arrival_rate) {
            (Some(u), _) => (u as f64, "users"),
            (_, Some(r)) => (r, "requests/s"),
            _ => (1.0 / n as f64, "share"),
        }
    }
}

pub async fn run(cfg: &Http, w: &Workers, ctx: &StageContext, demo_pid: Option<u32>) -> Outcome {
    let url = match with_password(&w.redis, w.password_env.as_deref()) {
        Ok(u) => u,
        Err(e) => return Outcome::with(Status::Error, e),
    };
    let run = ctx.run_dir.file_name().and_then(|n| n.to_str()).unwrap_or("run");
    let prefix = stage_prefix(run, &ctx.phase, &ctx.stage);
    // This run of the stage (an iteration, a retry): jobs, the alive key's value and the event
    // stream carry it, so a worker still busy with an earlier run cannot write into this one.
    let token =
        format!("{:016x}", ctx.seed_for(&["workers", &ctx.iteration.to_string(), &ctx.clock.wall_us().to_string()]));
    let mut hire = match Hire::connect(&url, &token).await {
        Ok(h) => h,
        Err(e) => return Outcome::with(Status::Error, e),
    };
    let mut con = hire.connection();
    let _ = keyspace::remove(&mut con, &prefix).await;
    let outcome = tokio::select! {
        o = drive(cfg, w, &url, &prefix, &token, &mut hire, ctx) => o,
        _ = async {
            match &cfg.monitor {
                Some(m) => {
                    let mut m = m.clone();
                    m.pids.extend(demo_pid);
                    sample_targets(&m, &ctx.clock, &ctx.events).await
                }
                None => std::future::pending().await,
            }
        } => Outcome::with(Status::Error, "the target monitor stopped"),
    };
    // The stage is over for its workers too: a share still running stops when its stream and
    // the alive key are gone, and what it would still send cannot re-create them.
    let _ = keyspace::remove(&mut con, &prefix).await;
    outcome
}

struct Running {
    worker: Arc<str>,
    report: Option<Report>,
    lost: bool,
}

/// The alive key's TTL, renewed every second while the stage runs; the event stream's.
const ALIVE_MS: u64 = 3_000;
const STREAM_TTL: Duration = Duration::from_secs(60);

async fn drive(
    cfg: &Http,
    w: &Workers,
    url: &str,
    prefix: &str,
    token: &str,
    hire: &mut Hire,
    ctx: &StageContext,
) -> Outcome {
    let found = hire.find(w.count as usize, w.timeout(), ctx).await;
    if ctx.cancel.is_cancelled() {
        return Outcome::with(Status::Interrupted, "interrupted");
    }
    if found.is_empty() {
        return Outcome::with(
            Status::Error,
            format!("no worker announced itself within {:?}: start them with `planrun worker --join URL`", w.timeout()),
        );
    }
    let events = events_key(prefix, token);
    let mut relay = match Relay::open(url, &events, STREAM_TTL).await {
        Ok(r) => r,
        Err(e) => return Outcome::with(Status::Error, e),
    };
    let alive = alive_key(prefix);
    let alive_value = format!("{prefix}:{token}");
    let mut con = hire.connection();
    let renew = async |con: &mut redis::aio::ConnectionManager| {
        let _: redis::RedisResult<()> =
            redis::cmd("SET").arg(&alive).arg(&alive_value).arg("PX").arg(ALIVE_MS).query_async(con).await;
    };
    renew(&mut con).await;
    let n = found.len() as u32;
    let mut shares = Vec::new();
    let mut running = Vec::new();
    for (i, name) in found.iter().enumerate() {
        let job = Job {
            prefix: prefix.to_string(),
            alive_key: alive.clone(),
            alive_value: alive_value.clone(),
            events: events.clone(),
            t0_ms: ctx.clock.elapsed_ms(),
            scale: ctx.clock.scale(),
            work: Work::Stage(Box::new(StageJob {
                driver: "http".into(),
                config: cfg.share(i as u32, n).config(),
                phase: ctx.phase.clone(),
                stage: ctx.stage.clone(),
                iteration: ctx.iteration,
                share: i as u32 + 1,
                of: n,
                duration_ms: ctx.duration.map(|d| d.as_millis() as u64),
                seed: ctx.seed_for(&["worker", name]),
                vars: (*ctx.vars).clone(),
                tags: (*ctx.tags).clone(),
            })),
        };
        let (size, unit) = cfg.share_size(i as u32, n);
        let share = hire.hand(name, &job, size, unit, w.timeout(), ctx).await;
        // A share that could not be handed out is over before it began (its `worker` event says why).
        let report = share.finished.then(|| Report {
            status: Status::Error,
            message: Some("could not be handed its job".into()),
            rows: 0,
            counts: None,
        });
        running.push(Running { worker: Arc::clone(&share.worker), report, lost: false });
        shares.push(share);
    }
    if shares.iter().all(|s| s.finished) {
        return Outcome::with(Status::Error, "no worker could be handed its job (see the `worker` events)");
    }
    let unit = cfg.share_size(0, n).1;
    // Every share should be over by then: its wait for the job, its readiness wait, its load,
    // its graceful stop.
    let grace = cfg.graceful_stop.map_or(DEFAULT_GRACEFUL_STOP, |d| d.0);
    let expected = w.timeout()
        + cfg.ready_timeout.map_or(Duration::ZERO, |d| d.0)
        + ctx.clock.scaled(ctx.duration.unwrap_or_default())
        + grace
        + REPORT_MARGIN;
    let mut deadline = Instant::now() + expected;
    let mut interrupted = false;
    let mut last_check = Instant::now();
    let mut last_renew = Instant::now();
    let mut tap = |_: &crate::events::Event| {};
    while running.iter().any(|r| r.report.is_none() && !r.lost) && Instant::now() < deadline {
        if !interrupted && ctx.cancel.is_cancelled() {
            // Ctrl-C or the stage's timeout: no more renewals, and the key goes now, so the
            // workers stop; what they send until their graceful stop is over is still taken.
            interrupted = true;
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&alive).query_async(&mut con).await;
            deadline = Instant::now() + grace + Duration::from_secs(3);
        }
        if last_renew.elapsed() >= Duration::from_secs(1) {
            last_renew = Instant::now();
            // The stream lives as long as the loop (reports still come during a graceful stop);
            // the alive key only while the stage has not been told to stop.
            if !interrupted {
                renew(&mut con).await;
            }
            relay.keep(STREAM_TTL).await;
        }
        match relay.pump(&ctx.events, &mut tap).await {
            Ok(done) => settle(done, &relay, &mut running, &mut shares, ctx),
            Err(e) => return Outcome::with(Status::Error, e),
        }
        if last_check.elapsed() >= Duration::from_millis(500) {
            last_check = Instant::now();
            // A worker reports before it takes its announcement down: look first, then take in
            // what the stream holds, and only then call the ones whose announcement was gone lost.
            let seen = hire.look(&shares).await;
            match relay.drain(&ctx.events, &mut tap).await {
                Ok(done) => settle(done, &relay, &mut running, &mut shares, ctx),
                Err(e) => return Outcome::with(Status::Error, e),
            }
            let lost = Hire::judge(
                &mut shares,
                &seen,
                unit,
                |s| format!("its share ({} {unit}) stopped with it and is not moved to another worker", s.size),
                ctx,
            );
            for who in lost {
                if let Some(r) = running.iter_mut().find(|r| r.worker == who && r.report.is_none()) {
                    r.lost = true;
                }
            }
        }
    }
    let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&alive).query_async(&mut con).await;
    if interrupted {
        return Outcome::with(Status::Interrupted, "interrupted");
    }
    // The request counts every share reported (from its own end-of-stage rows).
    let (finished, failed) = running
        .iter()
        .filter_map(|r| r.report.as_ref().and_then(|rep| rep.counts))
        .fold((0, 0), |(f, x), (a, b)| (f + a, x + b));
    combine(cfg, &running, finished, failed)
}

/// Take the reports of shares that finished; say so when rows a worker wrote did not arrive.
fn settle(
    done: Vec<(Arc<str>, Report)>,
    relay: &Relay,
    running: &mut [Running],
    shares: &mut [crate::drivers::workers::Share],
    ctx: &StageContext,
) {
    for (who, report) in done {
        let Some(r) = running.iter_mut().find(|r| r.worker == who) else { continue };
        let sent = relay.rows.get(&who).copied().unwrap_or(0);
        if sent != report.rows {
            let mut ev = ctx.events.event("warning").name("relay").error(format!(
                "worker {who} wrote {} rows and {sent} arrived: the log is {} for its share",
                report.rows,
                if sent < report.rows { "missing rows" } else { "holding rows twice" }
            ));
            ev.worker = Some(Arc::clone(&who));
            ctx.events.emit(ev);
        }
        r.report = Some(report);
        shares.iter_mut().filter(|s| s.worker == who).for_each(|s| s.finished = true);
    }
}

/// One outcome for the stage: a share that could not run (an error, a lost worker, one that
/// never reported) decides it; otherwise the stage's request counts — every share's summed —
/// are judged as a one-process stage's would be (`min_success` over all its requests).
fn combine(cfg: &Http, running: &[Running], finished: u64, failed: u64) -> Outcome {
    let rank = |s: Status| match s {
        Status::Passed => 0,
        Status::BudgetExceeded => 1,
        Status::Interrupted => 2,
        Status::TimedOut => 3,
        Status::Failed => 4,
        Status::Error => 5,
    };
    let mut worst = Status::Passed;
    let mut why = Vec::new();
    for r in running {
        let (status, message) = match (&r.report, r.lost) {
            (Some(rep), _) => (rep.status, rep.message.clone()),
            (None, true) => (Status::Failed, Some("lost mid-stage; its rows up to then are recorded".to_string())),
            (None, false) => (Status::Error, Some("did not report how its share went".to_string())),
        };
        // A share's own count verdict is not the stage's (the sum is judged below); a lost
        // worker is.
        let counts = status == Status::Failed && r.report.is_some();
        let status = if counts { Status::Passed } else { status };
        if rank(status) > rank(worst) {
            worst = status;
        }
        if !status.is_success()
            && let Some(m) = message
        {
            why.push(format!("worker {}: {m}", r.worker));
        }
    }
    match worst {
        Status::Passed => super::driver::judge(cfg, finished, failed),
        s => Outcome { status: s, message: Some(why.join("; ")).filter(|m| !m.is_empty()) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(extra: serde_json::Value) -> Http {
        let mut v = serde_json::json!({ "host": "http://127.0.0.1:1", "task": [{ "path": "/" }] });
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn shares_add_up_to_the_stage() {
        let h = http(serde_json::json!({ "users": 10, "spawn_rate": 5.0 }));
        let users: Vec<u32> = (0..3).map(|i| h.share(i, 3).users.unwrap()).collect();
        assert_eq!(users, [4, 3, 3]);
        let rate: f64 = (0..3).map(|i| h.share(i, 3).spawn_rate.unwrap()).sum();
        assert!((rate - 5.0).abs() < 1e-9, "{rate}");
        let open = http(serde_json::json!({ "arrival_rate": 900.0, "max_in_flight": 10 }));
        let shares: Vec<Http> = (0..4).map(|i| open.share(i, 4)).collect();
        assert!(shares.iter().all(|s| s.arrival_rate == Some(225.0) && s.max_in_flight == Some(3)));
    }

    #[test]
    fn a_share_round_trips_through_its_plain_data() {
        let h = http(serde_json::json!({ "users": 4, "wait": { "between": ["1s", "2s"] }, "graceful_stop": "1m30s" }));
        let back: Http = serde_json::from_value(h.share(1, 2).config()).unwrap();
        assert_eq!(back, h.share(1, 2));
    }

    fn reported(w: &str, status: Status) -> Running {
        Running {
            worker: w.into(),
            report: Some(Report { status, message: Some("why".into()), rows: 3, counts: None }),
            lost: false,
        }
    }

    #[test]
    fn a_lost_or_silent_worker_decides_the_stage_and_otherwise_the_summed_counts_do() {
        let h = http(serde_json::json!({ "users": 2, "min_success": 0.99 }));
        let lost = || Running { worker: "b".into(), report: None, lost: true };
        let silent = Running { worker: "c".into(), report: None, lost: false };
        assert_eq!(combine(&h, &[reported("a", Status::Passed)], 100, 0).status, Status::Passed);
        let o = combine(&h, &[reported("a", Status::Passed), lost()], 100, 0);
        assert_eq!(o.status, Status::Failed);
        assert!(o.message.unwrap().contains("worker b: lost mid-stage"));
        assert_eq!(combine(&h, &[lost(), silent], 100, 0).status, Status::Error);
        // Shares at 99.5% and 98.5% each: one fails its own 99%, the stage's 99.0% passes.
        let two = [reported("a", Status::Passed), reported("b", Status::Failed)];
        assert_eq!(combine(&h, &two, 2000, 20).status, Status::Passed);
        assert_eq!(combine(&h, &two, 2000, 21).status, Status::Failed);
        assert_eq!(combine(&h, &[reported("a", Status::Error)], 10, 0).status, Status::Error);
        // Every request failed, across the shares: the stage fails though no share was lost.
        let none = http(serde_json::json!({ "users": 2 }));
        assert_eq!(combine(&none, &[reported("a", Status::Failed)], 10, 10).status, Status::Failed);
    }
}
