//! `planrun worker --join redis://HOST:PORT`: planrun on another host, taking shares of stages.
//! It announces itself under `planrun:worker:NAME` (renewed every second, saying whether it is
//! busy) and waits on its job list. A job (`drivers::workers::Job`) is either agents to start
//! for a fleet stage (`fleet::worker::start_agents`; they join the stage's coordinator and stop
//! at its teardown) or a share of a stage to run here with the stage's own driver (an `http`
//! stage's users) — its events go back through the stage's Redis stream into the one run
//! directory, and a report says how it went. A job whose stage is over is skipped; a share whose
//! stage ends (its key is gone: the runner finished, stopped or died) is stopped, and agents
//! that outlive their stage by 5 s are killed by pid.

use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::drivers::keyspace::shown;
use crate::drivers::workers::{Announcement, Job, Report, StageJob, StreamOut, WORKER_TTL_MS, Work};
use crate::drivers::workers::{jobs_key, valid_name, worker_key};
use crate::drivers::{Ledger, StageCheckpoint, StageContext, Status};
use crate::events::{Emitter, EventSink, Observer, Position};

#[derive(Clone, Debug, clap::Args)]
pub struct WorkerArgs {
    /// The Redis server the runs coordinate through, `redis://HOST:PORT/DB`.
    #[arg(long, env = "PLANRUN_TRANSPORT", hide_env_values = true, value_name = "URL")]
    pub join: String,
    /// This worker's name (default: the host name and pid); agents it starts are NAME-agent-I.
    #[arg(long)]
    pub name: Option<String>,
    /// Exit after this many jobs (0: serve until stopped).
    #[arg(long, default_value_t = 0)]
    pub jobs: u32,
}

/// Whether the stage `job` was made for is still running (its key names it); None when the
/// server cannot be asked.
fn stage_running(con: &mut redis::Connection, job: &Job) -> Option<bool> {
    let got: redis::RedisResult<Option<String>> = redis::cmd("GET").arg(&job.alive_key).query(con);
    got.ok().map(|v| v.as_deref() == Some(job.alive_value.as_str()))
}

/// The worker's loop; its exit code.
pub fn run(args: WorkerArgs) -> i32 {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
    let name = args.name.clone().unwrap_or_else(|| format!("{host}-{}", std::process::id()));
    if !valid_name(&name) {
        eprintln!("planrun worker: a worker name is 1-48 of [A-Za-z0-9._-], not `{name}`");
        return 2;
    }
    let url = args.join.clone();
    let client = match redis::Client::open(url.as_str()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("planrun worker: `{}` is not a Redis URL: {e}", shown(&url));
            return 2;
        }
    };
    let busy = Arc::new(AtomicBool::new(false));
    announce(client.clone(), name.clone(), host, Arc::clone(&busy));
    eprintln!("planrun worker {name}: waiting for jobs on {}", shown(&url));
    let mut done = 0;
    let mut con: Option<redis::Connection> = None;
    loop {
        let c = match con.as_mut() {
            Some(c) => c,
            None => match client.get_connection_with_timeout(Duration::from_secs(1)) {
                Ok(c) => {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
                    con.insert(c)
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let got: redis::RedisResult<Option<(String, String)>> =
            redis::cmd("BLPOP").arg(jobs_key(&name)).arg(2).query(c);
        let job = match got {
            Ok(Some((_, j))) => j,
            Ok(None) => continue,
            Err(_) => {
                con = None;
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let job: Job = match serde_json::from_str(&job) {
            Ok(j) => j,
            Err(e) => {
                eprintln!(
                    "planrun worker {name}: a job that is not one ({e}); skipped (is the runner the same planrun version?)"
                );
                continue;
            }
        };
        if stage_running(c, &job) == Some(false) {
            eprintln!("planrun worker {name}: a job for `{}`, whose stage is over; skipped", job.prefix);
            continue;
        }
        busy.store(true, Ordering::Relaxed);
        match &job.work {
            Work::Agents { join, agents, heartbeat_ms } => {
                eprintln!("planrun worker {name}: starting {agents} agents for `{join}`");
                agents_job(&url, &name, &job, join, *agents, *heartbeat_ms, c);
            }
            Work::Stage(sj) => {
                eprintln!("planrun worker {name}: share {} of {} of stage {}/{}", sj.share, sj.of, sj.phase, sj.stage);
                let batch = Arc::new(std::sync::atomic::AtomicU64::new(1));
                let report = stage_job(&url, &name, &job, sj, Arc::clone(&batch));
                let mut out = StreamOut::new(&url, &job.events, &name, batch);
                if let Err(e) =
                    out.as_mut().map_err(|e| e.to_string()).and_then(|o| o.done(&report).map_err(|e| e.to_string()))
                {
                    eprintln!("planrun worker {name}: cannot report how the share went: {e}");
                }
            }
        }
        busy.store(false, Ordering::Relaxed);
        eprintln!("planrun worker {name}: job for `{}` done", job.prefix);
        done += 1;
        if args.jobs > 0 && done >= args.jobs {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(worker_key(&name)).query(c);
            return 0;
        }
    }
}

/// The announcement, renewed on its own connection every second.
fn announce(client: redis::Client, name: String, host: String, busy: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        loop {
            if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_secs(1)) {
                let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                loop {
                    let a = Announcement {
                        host: host.clone(),
                        pid: std::process::id(),
                        busy: busy.load(Ordering::Relaxed),
                    };
                    let r: redis::RedisResult<()> = redis::cmd("SET")
                        .arg(worker_key(&name))
                        .arg(serde_json::to_string(&a).unwrap_or_default())
                        .arg("PX")
                        .arg(WORKER_TTL_MS)
                        .query(&mut c);
                    if r.is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
}

/// A sink whose rows go to the stage's stream, and an emitter for the stage's rows.
fn remote_sink(
    url: &str,
    name: &str,
    job: &Job,
    batch: Arc<std::sync::atomic::AtomicU64>,
) -> Result<(EventSink, crate::events::sink::SinkHandle), String> {
    let out = StreamOut::new(url, &job.events, name, batch)?;
    EventSink::to_writer(Box::new(out), Position::default()).map_err(|e| e.to_string())
}

#[allow(clippy::too_many_arguments)]
fn agents_job(url: &str, name: &str, job: &Job, join: &str, agents: u32, heartbeat_ms: u64, c: &mut redis::Connection) {
    let t0 = Instant::now();
    let (mut started, failed) = crate::drivers::fleet::worker::start_agents(url, join, heartbeat_ms, name, agents);
    // What this worker saw, for the run's log: how long starting its agents took, and failures.
    if let Ok((sink, handle)) = remote_sink(url, name, job, Arc::new(std::sync::atomic::AtomicU64::new(1))) {
        let e = Emitter::new(
            sink,
            Clock::new(job.scale, job.t0_ms + t0.elapsed().as_secs_f64() * 1000.0, false),
            "",
            "",
            "fleet",
        );
        let ok = failed.is_empty();
        let mut ev =
            e.event("worker").name("started").ok(ok).value(started.len() as f64, "agents").latency(t0.elapsed());
        if !ok {
            ev = ev.error(failed.join("; "));
        }
        e.emit(ev);
        let _ = handle.close();
    }
    failed.iter().for_each(|f| eprintln!("planrun worker {name}: {f}"));
    // Until the stage stops them (its teardown sends `shutdown`; they also stop when its join
    // key goes). Should they outlive the stage by 5 s anyway, they are killed by pid.
    let mut gone_since: Option<Instant> = None;
    while !started.is_empty() {
        started.retain_mut(|a: &mut Child| matches!(a.try_wait(), Ok(None)));
        std::thread::sleep(Duration::from_millis(200));
        match stage_running(c, job) {
            Some(false) => {
                let since = *gone_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(5) {
                    for a in &mut started {
                        let _ = a.kill();
                        let _ = a.wait();
                    }
                    started.clear();
                }
            }
            _ => gone_since = None,
        }
    }
}

/// Run a share of a stage with its driver; how it went.
fn stage_job(url: &str, name: &str, job: &Job, sj: &StageJob, batch: Arc<std::sync::atomic::AtomicU64>) -> Report {
    let error = |m: String| Report { status: Status::Error, message: Some(m), rows: 0, counts: None };
    let Some(spec) = crate::drivers::find(&sj.driver) else {
        return error(format!("this planrun has no `{}` driver (is it the runner's version?)", sj.driver));
    };
    let driver = match (spec.from_json)(sj.config.clone()) {
        Ok(d) => d,
        Err(e) => return error(format!("cannot read the stage's config ({e}); is this planrun the runner's version?")),
    };
    let (sink, handle) = match remote_sink(url, name, job, batch) {
        Ok(s) => s,
        Err(e) => return error(e),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return error(format!("cannot start a runtime: {e}")),
    };
    let counts = Arc::new(Counts::default());
    let outcome = rt.block_on(async {
        let clock = Clock::new(job.scale, job.t0_ms, false);
        let cancel = CancellationToken::new();
        let ctx = StageContext {
            clock: clock.clone(),
            cancel: cancel.clone(),
            events: Emitter::new(sink.clone(), clock, &sj.phase, &sj.stage, &sj.driver)
                .with_watch(Some(Arc::clone(&counts) as Arc<dyn Observer>)),
            phase: sj.phase.clone(),
            stage: sj.stage.clone(),
            duration: sj.duration_ms.map(Duration::from_millis),
            iteration: sj.iteration,
            seed: sj.seed,
            run_dir: std::env::temp_dir(),
            vars: Arc::new(sj.vars.clone()),
            ledger: Arc::new(Ledger::new(None)),
            checkpoint: StageCheckpoint::default(),
            tags: Arc::new(sj.tags.clone()),
        };
        let watch = watch_stage(url, job, cancel.clone(), sink.broken().clone());
        let outcome = driver.run(&ctx).await;
        watch.abort();
        outcome
    });
    // A task still blocked (a DNS lookup) does not keep the worker from its next job.
    rt.shutdown_timeout(Duration::from_secs(2));
    match handle.close() {
        Ok(stats) => {
            Report { status: outcome.status, message: outcome.message, rows: stats.events, counts: counts.get() }
        }
        Err(e) => Report {
            status: Status::Error,
            message: Some(format!("its events could not all be sent: {e}")),
            rows: 0,
            counts: None,
        },
    }
}

/// The request counts a share's driver writes at its end (`http_schedule` rows `finished` and
/// `failed`), seen as they are emitted, for its report.
#[derive(Default)]
struct Counts {
    finished: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
    seen: AtomicBool,
}

impl Observer for Counts {
    fn observe(&self, ev: &crate::events::Event) {
        if ev.kind != "http_schedule" {
            return;
        }
        let n = ev.value.unwrap_or(0.0) as u64;
        match ev.name.as_deref() {
            Some("finished") => self.finished.fetch_add(n, Ordering::Relaxed),
            Some("failed") => self.failed.fetch_add(n, Ordering::Relaxed),
            _ => return,
        };
        self.seen.store(true, Ordering::Relaxed);
    }
}

impl Counts {
    fn get(&self) -> Option<(u64, u64)> {
        self.seen
            .load(Ordering::Relaxed)
            .then(|| (self.finished.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed)))
    }
}

/// Stop the share when its stage is over (its key is gone) or its events cannot be sent.
fn watch_stage(
    url: &str,
    job: &Job,
    cancel: CancellationToken,
    broken: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let (url, job) = (url.to_string(), job.clone());
    tokio::spawn(async move {
        let Ok(client) = redis::Client::open(url.as_str()) else { return };
        let mut con = None;
        let mut gone = 0;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = broken.cancelled() => { cancel.cancel(); return; }
            }
            if con.is_none() {
                con = client.get_multiplexed_async_connection().await.ok();
            }
            let Some(c) = con.as_mut() else { continue };
            let got: redis::RedisResult<Option<String>> = redis::cmd("GET").arg(&job.alive_key).query_async(c).await;
            match got {
                Ok(v) if v.as_deref() == Some(job.alive_value.as_str()) => gone = 0,
                // Twice in a row, so one renewal that came late does not stop the load.
                Ok(_) => {
                    gone += 1;
                    if gone >= 2 {
                        cancel.cancel();
                        return;
                    }
                }
                Err(_) => con = None,
            }
        }
    })
}
