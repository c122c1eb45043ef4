//! Running a plan: create the run directory, open the event sink, drive the steps on a tokio
//! runtime (real or virtual clock), handle Ctrl-C/SIGTERM, then close the log and write
//! `events.parquet`. `resume` picks an interrupted run up from its last checkpoint. The
//! scheduling itself is in `runner`; what a stage does is in `crate::drivers`.

pub mod abort;
pub mod checkpoint;
pub mod manifest;
pub mod progress;
pub mod runner;
pub mod schedule;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::diag::Diags;
use crate::drivers::Status;
use crate::drivers::{Bound, Registry};
use crate::events::EventSink;
use crate::events::sink::Position;
use crate::plan::{ClockKind, LoadOptions};
use manifest::{Checkpoint, Host, Manifest, PlanInfo, RunStatus, StageRecord, now_rfc3339};
use progress::{Mode, Progress};
use runner::Runner;

pub const DEFAULT_SEED: u64 = 1;

/// A plan whose stages know their drivers: what the runner runs.
pub type Plan = crate::plan::Plan<Bound>;

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub out: PathBuf,
    pub time_scale: f64,
    pub seed: Option<u64>,
    pub clock: Option<ClockKind>,
    pub quiet: bool,
    /// The command line, recorded in the manifest.
    pub args: Vec<String>,
    /// Stop cleanly at the first checkpoint after this much plan time (for a later `resume`).
    pub suspend_after: Option<std::time::Duration>,
}

#[derive(Debug)]
pub struct RunResult {
    pub dir: PathBuf,
    pub status: RunStatus,
    pub message: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Plan(Diags),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Io(String),
}

/// Stages that touch real processes, files or the network, which the virtual clock refuses.
pub fn real_world_stages(plan: &Plan) -> Vec<String> {
    plan.stages()
        .filter(|(_, s)| !s.driver.simulated())
        .map(|(p, s)| format!("{}/{} ({})", p.name, s.name(), s.driver_name()))
        .collect()
}

fn check_clock(plan: &Plan, kind: &ClockKind) -> Result<(), RunError> {
    if *kind != ClockKind::Virtual {
        return Ok(());
    }
    let real = real_world_stages(plan);
    if real.is_empty() {
        return Ok(());
    }
    Err(RunError::Usage(format!(
        "the virtual clock only runs simulated stages; these touch real processes or the network: {}\nrun with `--clock real`, or move them to another plan",
        real.join(", ")
    )))
}

fn sanitize(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
    if s.is_empty() { "plan".into() } else { s }
}

fn create_run_dir(out: &Path, plan_name: &str) -> Result<PathBuf, RunError> {
    std::fs::create_dir_all(out).map_err(|e| RunError::Io(format!("cannot create {}: {e}", out.display())))?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let base = format!("{}-{stamp}", sanitize(plan_name));
    for n in 0..1000 {
        let name = if n == 0 { base.clone() } else { format!("{base}-{n}") };
        let dir = out.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(RunError::Io(format!("cannot create {}: {e}", dir.display()))),
        }
    }
    Err(RunError::Io(format!("too many runs named {base} in {}", out.display())))
}

/// The resolved plan as TOML: vars and templates baked in; loading it gives the same plan.
pub fn resolved_toml(plan: &Plan, from: &str) -> Result<String, String> {
    // TOML has no null: an unset optional field is simply left out.
    fn strip_nulls(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(o) => {
                o.retain(|_, x| !x.is_null());
                o.values_mut().for_each(strip_nulls);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip_nulls),
            _ => {}
        }
    }
    let mut canonical = plan.canonical();
    strip_nulls(&mut canonical);
    let body = toml::to_string_pretty(&canonical).map_err(|e| e.to_string())?;
    let profile = plan.profile.as_deref().map(|p| format!(", profile {p}")).unwrap_or_default();
    Ok(format!("# resolved by planrun {} from {from}{profile}\n\n{body}", env!("CARGO_PKG_VERSION")))
}

/// Start a new run of `plan`.
pub fn start(plan: Plan, plan_path: &Path, plan_text: &str, opts: &RunOptions) -> Result<RunResult, RunError> {
    let clock_kind = opts.clock.clone().unwrap_or(plan.meta.clock.clone());
    check_clock(&plan, &clock_kind)?;
    let seed = opts.seed.or(plan.meta.seed).unwrap_or(DEFAULT_SEED);
    let dir = create_run_dir(&opts.out, &plan.meta.name)?;
    let io =
        |what: &str, e: &dyn std::fmt::Display| RunError::Io(format!("cannot write {what} in {}: {e}", dir.display()));
    let resolved = resolved_toml(&plan, &plan_path.display().to_string()).map_err(|e| io("plan.resolved.toml", &e))?;
    std::fs::write(dir.join("plan.resolved.toml"), resolved).map_err(|e| io("plan.resolved.toml", &e))?;
    let manifest = Manifest {
        planrun_version: env!("CARGO_PKG_VERSION").into(),
        plan: PlanInfo {
            name: plan.meta.name.clone(),
            path: plan_path.display().to_string(),
            sha256: format!("{:x}", Sha256::digest(plan_text.as_bytes())),
        },
        profile: plan.profile.clone(),
        vars: plan.vars.iter().map(|(n, v)| (n.clone(), v.value.clone())).collect(),
        args: opts.args.clone(),
        seed,
        time_scale: opts.time_scale,
        clock: match clock_kind {
            ClockKind::Real => "real".into(),
            ClockKind::Virtual => "virtual".into(),
        },
        host: Host::detect(),
        status: RunStatus::Running,
        started_at: now_rfc3339(),
        ended_at: None,
        message: None,
        stages: plan
            .stages()
            .map(|(p, s)| StageRecord {
                phase: p.name.clone(),
                stage: s.name().to_string(),
                driver: s.driver_name().to_string(),
                status: Status::Pending,
                message: None,
                started_at: None,
                ended_at: None,
                t_start_ms: None,
                t_end_ms: None,
                events: 0,
                checkpoint: None,
            })
            .collect(),
        checkpoint: Checkpoint::default(),
        resumes: 0,
    };
    manifest.write(&dir).map_err(|e| io("manifest.json", &e))?;
    execute(plan, dir, manifest, opts.quiet, opts.suspend_after, None)
}

/// Continue an interrupted run from its last checkpoint.
pub fn resume(dir: &Path, quiet: bool, suspend_after: Option<std::time::Duration>) -> Result<RunResult, RunError> {
    let mut manifest = Manifest::read(dir).map_err(RunError::Usage)?;
    match manifest.status {
        RunStatus::Running | RunStatus::Interrupted | RunStatus::Error => {}
        RunStatus::Completed | RunStatus::Failed => {
            return Err(RunError::Usage(format!(
                "{} already finished ({}); there is nothing to resume",
                dir.display(),
                manifest.status.as_str()
            )));
        }
    }
    let resolved = dir.join("plan.resolved.toml");
    let (plan, _) =
        crate::plan::load_file_with(&resolved, &LoadOptions::default(), &Registry).map_err(RunError::Plan)?;
    let names: Vec<(String, String)> = plan.stages().map(|(p, s)| (p.name.clone(), s.name().to_string())).collect();
    let recorded: Vec<(String, String)> = manifest.stages.iter().map(|s| (s.phase.clone(), s.stage.clone())).collect();
    if names != recorded {
        return Err(RunError::Usage(format!(
            "{} does not match the stages in manifest.json; was it edited?",
            resolved.display()
        )));
    }
    // Events written after the last checkpoint belong to the step being redone: move them
    // aside (kept, not analyzed) so no stage's events appear twice and `seq` stays contiguous.
    // A step that is one stage with its own checkpoint continues from that checkpoint instead.
    manifest.resumes += 1;
    let steps = runner::steps(&plan);
    let done: usize = steps[..manifest.checkpoint.next_step.min(steps.len())].iter().map(Vec::len).sum();
    let single = steps.get(manifest.checkpoint.next_step).is_some_and(|s| s.len() == 1);
    let mid_stage = if single { manifest.stages.get(done).and_then(|r| r.checkpoint.clone()) } else { None };
    if let Some(state) = &mid_stage {
        manifest.checkpoint.position = state.position;
        manifest.checkpoint.t_ms = state.t_ms;
    }
    let events = dir.join("events.jsonl");
    let aside = dir.join(format!("events.discarded-{}.jsonl", manifest.resumes));
    let moved = crate::events::jsonl::truncate_to(&events, manifest.checkpoint.position.offset, &aside)
        .map_err(|e| RunError::Io(format!("cannot prepare {} for resume: {e}", events.display())))?;
    let _ = std::fs::remove_file(dir.join("events.parquet"));
    for (i, rec) in manifest.stages.iter_mut().enumerate().skip(done) {
        rec.status = Status::Pending;
        rec.message = None;
        if !(i == done && mid_stage.is_some()) {
            rec.checkpoint = None;
        }
    }
    manifest.status = RunStatus::Running;
    manifest.ended_at = None;
    manifest.message = None;
    manifest.write(dir).map_err(|e| RunError::Io(format!("cannot write manifest.json: {e}")))?;
    let progress_note = if moved > 0 {
        format!(" ({moved} bytes of unfinished-step events moved to {})", aside.display())
    } else {
        String::new()
    };
    execute(plan, dir.to_path_buf(), manifest, quiet, suspend_after, Some(progress_note))
}

fn execute(
    plan: Plan,
    dir: PathBuf,
    manifest: Manifest,
    quiet: bool,
    suspend_after: Option<std::time::Duration>,
    resume_note: Option<String>,
) -> Result<RunResult, RunError> {
    let virtual_time = manifest.clock == "virtual";
    let runtime = if virtual_time {
        tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build()
    } else {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()
    }
    .map_err(|e| RunError::Io(format!("cannot start the async runtime: {e}")))?;

    let start: Position = manifest.checkpoint.position;
    let (sink, handle) = EventSink::open(&dir.join("events.jsonl"), start)
        .map_err(|e| RunError::Io(format!("cannot open {}: {e}", dir.join("events.jsonl").display())))?;
    let total = manifest.stages.len() as u64;
    let progress = Progress::new(Mode::detect(quiet), &dir.join("run.log"), total, &plan.meta.name);
    match &resume_note {
        Some(note) => {
            progress.line(&format!("resuming {} at step {}{note}", dir.display(), manifest.checkpoint.next_step))
        }
        None => progress.line(&format!("run {} started in {}", plan.meta.name, dir.display())),
    }
    let cancel = CancellationToken::new();
    let offset_ms = manifest.checkpoint.t_ms;
    let seed = manifest.seed;
    let scale = manifest.time_scale;
    let ledger = Arc::new(crate::drivers::Ledger::with_spent(plan.meta.budget_usd, manifest.checkpoint.spent_nanos, 0));
    let vars = Arc::new(plan.vars.iter().map(|(n, v)| (n.clone(), v.value.clone())).collect());
    let suspend = Arc::new(AtomicBool::new(false));
    let plan = Arc::new(plan);

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
            manifest.checkpoint.position =
                if status == RunStatus::Interrupted { manifest.checkpoint.position } else { stats.position }
        }
        Err(e) => {
            status = RunStatus::Error;
            manifest.message = Some(e);
        }
    }
    progress.finish();
    let jsonl = dir.join("events.jsonl");
    match crate::events::parquet::jsonl_to_parquet(&jsonl, &dir.join("events.parquet")) {
        Ok(r) => progress.line(&format!("wrote events.parquet ({} events)", r.events)),
        Err(e) => {
            progress.line(&format!("warning: events.parquet not written: {e}; analysis will read events.jsonl"));
            manifest.message.get_or_insert(format!("events.parquet not written: {e}"));
        }
    }
    manifest.status = status.clone();
    manifest.ended_at = Some(now_rfc3339());
    manifest.write(&dir).map_err(|e| RunError::Io(format!("cannot write manifest.json in {}: {e}", dir.display())))?;
    progress.line(&format!("run {}: {}", status.as_str(), dir.display()));
    Ok(RunResult { dir, status, message: manifest.message })
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
