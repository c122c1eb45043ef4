//! Starting a run: the options, the result and errors of a run, the checks made before anything
//! is written (the clock kind against the stages), the run directory with `plan.resolved.toml`
//! and the first `manifest.json`. Then `execute` takes over.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::Plan;
use super::execute::execute;
use super::progress::Mode;
use crate::diag::Diags;
use crate::drivers::TagFilter;
use crate::plan::ClockKind;
use crate::rundir::{
    Build, Checkpoint, Host, Manifest, PlanInfo, RunDir, RunStatus, StageRecord, StageStatus, now_rfc3339,
};

pub const DEFAULT_SEED: u64 = 1;

#[derive(Clone)]
pub struct RunOptions {
    pub out: PathBuf,
    pub time_scale: f64,
    pub seed: Option<u64>,
    pub clock: Option<ClockKind>,
    /// Progress output: bars, lines or nothing (`Mode::detect`).
    pub progress: Mode,
    /// The command line, recorded in the manifest.
    pub args: Vec<String>,
    /// Stop cleanly at the first checkpoint after this much plan time (for a later `resume`).
    pub suspend_after: Option<std::time::Duration>,
    /// `--tags` / `--exclude-tags`.
    pub tags: TagFilter,
    /// Told the run directory once it exists with its manifest (the live dashboard).
    pub announce: Option<std::sync::mpsc::Sender<PathBuf>>,
    /// Sees every event of every stage as it is emitted (the live dashboard's charts).
    pub watch: Option<std::sync::Arc<dyn crate::events::Observer>>,
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

impl From<crate::rundir::RunDirError> for RunError {
    fn from(e: crate::rundir::RunDirError) -> RunError {
        RunError::Io(e.to_string())
    }
}

/// Stages that touch real processes, files or the network, which the virtual clock refuses.
pub fn real_world_stages(plan: &Plan) -> Vec<String> {
    plan.stages()
        .filter(|(_, s)| !s.driver.simulated())
        .map(|(p, s)| format!("{}/{} ({})", p.name, s.name(), s.driver_name()))
        .collect()
}

fn check_clock(plan: &Plan, kind: ClockKind) -> Result<(), RunError> {
    if kind != ClockKind::Virtual {
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

/// The resolved plan as TOML: vars and templates baked in; loading it gives the same plan.
pub fn resolved_toml(plan: &Plan, from: &str) -> Result<String, toml::ser::Error> {
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
    let body = toml::to_string_pretty(&canonical)?;
    let profile = plan.profile.as_deref().map(|p| format!(", profile {p}")).unwrap_or_default();
    Ok(format!("# resolved by planrun {} from {from}{profile}\n\n{body}", env!("CARGO_PKG_VERSION")))
}

/// Start a new run of `plan`.
pub fn start(plan: Plan, plan_path: &Path, plan_text: &str, opts: &RunOptions) -> Result<RunResult, RunError> {
    let clock_kind = opts.clock.unwrap_or(plan.meta.clock);
    check_clock(&plan, clock_kind)?;
    let seed = opts.seed.or(plan.meta.seed).unwrap_or(DEFAULT_SEED);
    let dir = RunDir::create(&opts.out, &plan.meta.name)?;
    let resolved = resolved_toml(&plan, &plan_path.display().to_string())
        .map_err(|e| RunError::Io(format!("cannot write {}: {e}", dir.plan_resolved().display())))?;
    std::fs::write(dir.plan_resolved(), resolved)
        .map_err(|e| RunError::Io(format!("cannot write {}: {e}", dir.plan_resolved().display())))?;
    let manifest = Manifest {
        planrun_version: env!("CARGO_PKG_VERSION").into(),
        build: Build::current(),
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
        clock: clock_kind,
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
                status: StageStatus::Pending,
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
        tags: opts.tags.include.clone(),
        exclude_tags: opts.tags.exclude.clone(),
    };
    dir.write_manifest(&manifest)?;
    if let Some(tx) = &opts.announce {
        let _ = tx.send(dir.path().to_path_buf());
    }
    execute(plan, dir, manifest, opts.progress, opts.suspend_after, None, opts.watch.clone())
}
