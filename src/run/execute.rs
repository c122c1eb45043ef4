//! Executing a run: the tokio runtime (multi-threaded on the real clock, paused on the virtual
//! one), the event sink, progress, Ctrl-C/SIGTERM, `--suspend-after`, the runner over the
//! steps; then, whatever happened, the log is closed, `events.parquet` written and the final
//! status recorded in `manifest.json`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::Plan;
use super::progress::{Mode, Progress};
use super::runner::Runner;
use super::start::{RunError, RunResult};
use crate::clock::Clock;
use crate::drivers::{Ledger, TagFilter};
use crate::events::EventSink;
use crate::events::Position;
use crate::plan::ClockKind;
use crate::rundir::{Build, Manifest, RunDir, RunStatus, now_rfc3339};

pub(super) fn execute(
    plan: Plan,
    dir: RunDir,
    manifest: Manifest,
    mode: Mode,
    suspend_after: Option<std::time::Duration>,
    resume_note: Option<String>,
    watch: Option<Arc<dyn crate::events::Observer>>,
) -> Result<RunResult, RunError> {
    let virtual_time = manifest.clock == ClockKind::Virtual;
    let runtime = if virtual_time {
        tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build()
    } else {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()
    }
    .map_err(|e| RunError::Io(format!("cannot start the async runtime: {e}")))?;

    let start: Position = manifest.checkpoint.position;
    let (sink, handle) = EventSink::open(&dir.events_jsonl(), start)
        .map_err(|e| RunError::Io(format!("cannot open {}: {e}", dir.events_jsonl().display())))?;
    let total = manifest.stages.len() as u64;
    let progress = Progress::new(mode, &dir.run_log(), total, &plan.meta.name);
    match &resume_note {
        Some(note) => {
            progress.line(&format!("resuming {} at step {}{note}", dir.path().display(), manifest.checkpoint.next_step))
        }
        None => progress.line(&format!("run {} started in {}", plan.meta.name, dir.path().display())),
    }
    let real = super::real_world_stages(&plan);
    if Build::current() == Build::Debug && !real.is_empty() {
        progress.line(&format!(
            "note: debug build of planrun: it drives the {} stage(s) that touch real processes more slowly than a release build, which shows in what it measures; for measurements use `just run-release` (or `cargo build --release --bins`)",
            real.len()
        ));
    }
    let cancel = CancellationToken::new();
    let offset_ms = manifest.checkpoint.t_ms;
    let seed = manifest.seed;
    let scale = manifest.time_scale;
    let ledger = Arc::new(Ledger::with_spent(plan.meta.budget_usd, manifest.checkpoint.spent_nanos, 0));
    let vars = Arc::new(plan.vars.iter().map(|(n, v)| (n.clone(), v.value.clone())).collect());
    let suspend = Arc::new(AtomicBool::new(false));
    let plan = Arc::new(plan);
    let tags = (manifest.tags.clone(), manifest.exclude_tags.clone());

    let status = runtime.block_on(async {
        let clock = Clock::new(scale, offset_ms, virtual_time);
        spawn_signal_handler(cancel.clone(), Arc::clone(&progress));
        if let Some(after) = suspend_after {
            let (flag, clock, progress) = (Arc::clone(&suspend), clock.clone(), Arc::clone(&progress));
            tokio::spawn(async move {
                clock.sleep(after).await;
                progress.line("--suspend-after reached: stopping at the next checkpoint");
                flag.store(true, Ordering::SeqCst);
            });
        }
        let ticker = (!virtual_time).then(|| {
            let p = Arc::clone(&progress);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                    p.tick();
                }
            })
        });
        let runner = Runner {
            plan: Arc::clone(&plan),
            dir: dir.clone(),
            manifest: Arc::new(Mutex::new(manifest)),
            vars,
            ledger,
            suspend,
            sink: sink.clone(),
            clock,
            progress: Arc::clone(&progress),
            cancel: cancel.clone(),
            seed,
            tags: Arc::new(TagFilter::new(tags.0, tags.1)),
            watch,
        };
        let status = runner.run().await;
        if let Some(t) = ticker {
            t.abort();
        }
        let manifest = runner.manifest().clone();
        (status, manifest)
    });
    let (mut status, mut manifest) = status;
    drop(sink);
    // Everything recorded is flushed whatever happened above.
    match handle.close() {
        Ok(stats) => {
            manifest.checkpoint.position = if matches!(status, RunStatus::Interrupted | RunStatus::Error) {
                manifest.checkpoint.position
            } else {
                stats.position
            }
        }
        Err(e) => {
            status = RunStatus::Error;
            manifest.message = Some(e.to_string());
        }
    }
    progress.finish();
    match crate::events::parquet::jsonl_to_parquet(&dir.events_jsonl(), &dir.events_parquet()) {
        Ok(r) => progress.line(&format!("wrote events.parquet ({} events)", r.events)),
        Err(e) => {
            progress.line(&format!("warning: events.parquet not written: {e}; analysis will read events.jsonl"));
            manifest.message.get_or_insert(format!("events.parquet not written: {e}"));
        }
    }
    manifest.status = status;
    manifest.ended_at = Some(now_rfc3339());
    if let Err(e) = dir.write_manifest(&manifest) {
        // Nowhere on that disk to record it: this message (and run.log, if it can still grow)
        // is the record, and the exit code says it.
        let why = manifest.message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default();
        let msg = format!(
            "{e}: the run ended `{status}`{why}, but manifest.json still says what it said last; \
             every event written so far is in {}",
            dir.events_jsonl().display()
        );
        progress.line(&format!("error: {msg}"));
        return Ok(RunResult { dir: dir.path().to_path_buf(), status: RunStatus::Error, message: Some(msg) });
    }
    progress.line(&format!("run {}: {}", status, dir.path().display()));
    Ok(RunResult { dir: dir.path().to_path_buf(), status, message: manifest.message })
}

/// First Ctrl-C (or SIGTERM): tell every stage to stop, then flush and record `interrupted`.
/// Second: exit at once (what was flushed stays; `resume` repairs a torn last line).
fn spawn_signal_handler(cancel: CancellationToken, progress: Arc<Progress>) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let next = async |term: &mut Option<tokio::signal::unix::Signal>| match term {
            Some(t) => tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = t.recv() => {} },
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        };
        next(&mut term).await;
        progress.line("interrupted: stopping stages and flushing events (press Ctrl-C again to quit at once)");
        cancel.cancel();
        next(&mut term).await;
        std::process::exit(crate::exit::Exit::Interrupted.code());
    });
}
