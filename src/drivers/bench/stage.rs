//! The order of a bench stage's runs and the events they make. For each command in turn:
//! `warmup` untimed runs (`bench_warmup` rows), then timed runs until the count is reached
//! (`runs`, or both `min_runs` and `min_time`, capped by `max_runs`), each a batch of
//! `instances` copies started together after `prepare`; one `bench_run` row per copy (wall time
//! in `latency_ms`, peak RSS in `value`, exit code in `status`, CPU times and the op count in
//! `attrs`) and a `bench_ops` row (ops/s) when the command printed an op count; then
//! `cleanup`. A run that exits non-zero ends that command's runs (hyperfine's rule) unless
//! `ignore_failure`; Ctrl-C or the stage timeout kills the running copies' process groups.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::{Bench, BenchCommand, DEFAULT_MIN_RUNS, DEFAULT_MIN_TIME};
use super::measure::{self, Launcher, Measured, Outputs, Spec};
use crate::drivers::context::RUN_DIR_ENV;
use crate::drivers::{Outcome, StageContext, Status};
use crate::events::BENCH_RUN;

/// How long the launchers have to stop their commands (their own grace, and a margin).
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Why a command's runs stopped early.
enum Stop {
    Interrupted,
    TimedOut(String),
    /// planrun could not start it.
    Error(String),
}

impl Bench {
    pub(super) async fn execute(&self, ctx: &StageContext) -> Outcome {
        let pattern = match self.ops_pattern.as_deref().map(regex::Regex::new).transpose() {
            Ok(p) => p.map(Arc::new),
            Err(e) => return Outcome::with(Status::Error, format!("ops_pattern: {e}")),
        };
        let launcher = match Launcher::find() {
            Ok(l) => l,
            Err(e) => return Outcome::with(Status::Error, e),
        };
        if let Some(note) = &launcher.fallback_note {
            ctx.events.emit(ctx.events.event("warning").error(note.clone()));
        }
        let baseline = self.baseline_name().map(str::to_string);
        let mut failures: Vec<String> = Vec::new();
        for c in &self.commands {
            let role = if baseline.as_deref() == Some(c.name.as_str()) { "baseline" } else { "candidate" };
            match self.command(ctx, &launcher, c, role, pattern.as_ref()).await {
                Ok(None) => {}
                Ok(Some(failed)) => failures.push(failed),
                Err(Stop::Interrupted) => return Outcome::with(Status::Interrupted, "interrupted"),
                Err(Stop::TimedOut(m)) => return Outcome::with(Status::TimedOut, m),
                Err(Stop::Error(m)) => return Outcome::with(Status::Error, m),
            }
        }
        if failures.is_empty() { Outcome::passed() } else { Outcome::with(Status::Failed, failures.join("; ")) }
    }

    /// All runs of one command. `Ok(Some(why))` when its runs failed (the stage fails).
    async fn command(
        &self,
        ctx: &StageContext,
        launcher: &Launcher,
        c: &BenchCommand,
        role: &'static str,
        pattern: Option<&Arc<regex::Regex>>,
    ) -> Result<Option<String>, Stop> {
        for i in 0..self.warmup {
            let ran = self.batch(ctx, launcher, c, 1, pattern.is_some()).await?;
            for (_, m) in &ran {
                let (ok, error) = judge(m);
                let mut ev = ctx.events.event("bench_warmup").name(c.name.as_str()).ok(ok).latency(m.wall);
                ev = ev.attrs(serde_json::json!({ "run": i, "role": role }));
                if let Some(e) = &error {
                    ev = ev.error(e.clone());
                }
                ctx.events.emit(ev);
                if !ok && !self.ignore_failure {
                    self.cleanup(ctx, launcher, c).await?;
                    return Ok(Some(format!("`{}` failed in warm-up: {}", c.name, error.unwrap_or_default())));
                }
            }
        }
        let min_runs = self.runs.unwrap_or(self.min_runs.unwrap_or(DEFAULT_MIN_RUNS));
        let min_time =
            if self.runs.is_some() { Duration::ZERO } else { self.min_time.map_or(DEFAULT_MIN_TIME, |d| d.0) };
        let min_time = ctx.clock.scaled(min_time);
        let cap = self.runs.or(self.max_runs).unwrap_or(u32::MAX);
        let started = Instant::now();
        let (mut runs, mut ok_runs, mut first_error) = (0u32, 0u64, None::<String>);
        while runs < cap && (runs < min_runs || started.elapsed() < min_time) {
            if let Some(p) = &self.prepare
                && let Some(why) = self.hook(ctx, launcher, c, "bench_prepare", p).await?
            {
                self.cleanup(ctx, launcher, c).await?;
                return Ok(Some(format!("`{}`: prepare failed: {why}", c.name)));
            }
            let ran = self.batch(ctx, launcher, c, self.instances, pattern.is_some()).await?;
            let mut failed_now = false;
            for (instance, m) in &ran {
                let (ok, error) = judge(m);
                let ops = pattern.and_then(|p| measure::ops_in(&m.stdout, p));
                let mut ev = ctx.events.event(BENCH_RUN).name(c.name.as_str()).ok(ok).latency(m.wall);
                ev = ev.value(m.max_rss as f64, "bytes").attrs(serde_json::json!({
                    "run": runs,
                    "instance": instance,
                    "role": role,
                    "pid": m.pid,
                    "user_ms": m.user.as_secs_f64() * 1000.0,
                    "sys_ms": m.sys.as_secs_f64() * 1000.0,
                    "ops": ops,
                    "signal": m.signal,
                }));
                if let Some(code) = m.exit {
                    ev = ev.status(i64::from(code));
                }
                if let Some(e) = &error {
                    ev = ev.error(e.clone());
                    first_error.get_or_insert_with(|| e.clone());
                    failed_now = true;
                } else {
                    ok_runs += 1;
                }
                ctx.events.emit(ev);
                if ok && let Some(n) = ops {
                    let secs = m.wall.as_secs_f64();
                    if secs > 0.0 {
                        let ev = ctx.events.event("bench_ops").name(c.name.as_str()).value(n / secs, "ops/s");
                        ctx.events.emit(ev.attrs(serde_json::json!({ "run": runs, "instance": instance, "ops": n })));
                    }
                }
            }
            runs += 1;
            if failed_now && !self.ignore_failure {
                break;
            }
        }
        self.cleanup(ctx, launcher, c).await?;
        Ok(match (first_error, ok_runs) {
            (None, _) => None,
            (Some(e), 0) => Some(format!("every run of `{}` failed: {e}", c.name)),
            (Some(e), _) if !self.ignore_failure => Some(format!("`{}` failed: {e}", c.name)),
            (Some(_), _) => None,
        })
    }

    async fn cleanup(&self, ctx: &StageContext, launcher: &Launcher, c: &BenchCommand) -> Result<(), Stop> {
        if let Some(line) = &self.cleanup {
            // A failed cleanup is reported in its row; the measurements stand.
            self.hook(ctx, launcher, c, "bench_cleanup", line).await?;
        }
        Ok(())
    }

    /// A `prepare` or `cleanup` line: one row of `kind`, and why it failed, if it did.
    async fn hook(
        &self,
        ctx: &StageContext,
        launcher: &Launcher,
        c: &BenchCommand,
        kind: &'static str,
        line: &str,
    ) -> Result<Option<String>, Stop> {
        let hook = BenchCommand { name: c.name.clone(), run: Some(line.to_string()), cmd: None, args: Vec::new() };
        let ran = self.batch(ctx, launcher, &hook, 1, false).await?;
        let (_, m) = &ran[0];
        let (ok, error) = judge(m);
        let mut ev = ctx.events.event(kind).name(c.name.as_str()).ok(ok).latency(m.wall);
        ev = ev.attrs(serde_json::json!({ "command": line, "stderr_tail": m.stderr_tail }));
        if let Some(e) = &error {
            ev = ev.error(e.clone());
        }
        ctx.events.emit(ev);
        Ok(error)
    }

    /// `n` copies of `c` started together; each copy's figures, by instance number.
    async fn batch(
        &self,
        ctx: &StageContext,
        launcher: &Launcher,
        c: &BenchCommand,
        n: u32,
        capture: bool,
    ) -> Result<Vec<(u32, Measured)>, Stop> {
        let (program, args) = c.program();
        let mut env = self.env.clone();
        let run_dir = std::path::absolute(&ctx.run_dir).unwrap_or_else(|_| ctx.run_dir.clone());
        env.entry(RUN_DIR_ENV.to_string()).or_insert_with(|| run_dir.to_string_lossy().into_owned());
        let spec = Spec { program: &program, args: &args, env: &env, cwd: self.cwd.as_deref() };
        let mut tasks = Vec::with_capacity(n as usize);
        let mut pids = Vec::with_capacity(n as usize);
        for i in 0..n {
            // Started from this (long-lived) runtime thread, not a blocking-pool thread that may
            // end while the run goes on: the launcher's parent-death signal follows the thread
            // that started it.
            let started = Outputs::new(capture)
                .map_err(|e| Stop::Error(format!("cannot make a temporary file: {e}")))
                .and_then(|out| {
                    measure::spawn(launcher, &spec, &out)
                        .map(|r| (r, out))
                        .map_err(|e| Stop::Error(format!("cannot start `{}` ({}): {e}", c.name, c.shown())))
                });
            let (running, mut out) = match started {
                Ok(s) => s,
                Err(stop) => {
                    for p in &pids {
                        measure::signal(*p, libc::SIGTERM);
                    }
                    for t in tasks {
                        let _ = t.await;
                    }
                    return Err(stop);
                }
            };
            pids.push(running.pid);
            tasks.push(tokio::task::spawn_blocking(move || (i, measure::wait(running, &mut out))));
        }
        let limit = self.command_timeout.map(|d| ctx.clock.scaled(d.0));
        let all = futures::future::join_all(tasks);
        tokio::pin!(all);
        let deadline = async {
            match limit {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let stop = tokio::select! {
            done = &mut all => return collect(done, c),
            _ = deadline => Stop::TimedOut(format!(
                "`{}` ran past its command_timeout of {}",
                c.name,
                self.command_timeout.map(|d| d.to_string()).unwrap_or_default()
            )),
            _ = ctx.cancel.cancelled() => Stop::Interrupted,
        };
        // Stop every copy: each launcher TERMs its command's group, KILLs it after a grace,
        // then reports. A launcher that does not (it cannot be, short of a bug) is killed.
        for p in &pids {
            measure::signal(*p, libc::SIGTERM);
        }
        if tokio::time::timeout(KILL_GRACE, &mut all).await.is_err() {
            for p in &pids {
                measure::signal(*p, libc::SIGKILL);
            }
            let _ = all.await;
        }
        Err(stop)
    }
}

/// One copy's instance number and what waiting for it gave.
type Waited = (u32, Result<Measured, String>);

fn collect(done: Vec<Result<Waited, tokio::task::JoinError>>, c: &BenchCommand) -> Result<Vec<(u32, Measured)>, Stop> {
    let mut out = Vec::with_capacity(done.len());
    for d in done {
        match d {
            Ok((i, Ok(m))) => out.push((i, m)),
            Ok((_, Err(e))) => return Err(Stop::Error(format!("waiting for `{}`: {e}", c.name))),
            Err(e) => return Err(Stop::Error(format!("waiting for `{}`: {e}", c.name))),
        }
    }
    Ok(out)
}

/// A run is ok when it exited 0; otherwise why not, with the tail of its stderr.
fn judge(m: &Measured) -> (bool, Option<String>) {
    let why = match (m.exit, m.signal) {
        (Some(0), _) => return (true, None),
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => "ended without an exit status".to_string(),
    };
    let tail = m.stderr_tail.trim();
    let tail = tail.lines().last().unwrap_or("");
    (false, Some(if tail.is_empty() { why } else { format!("{why}: {tail}") }))
}
