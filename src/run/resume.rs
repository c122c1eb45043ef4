//! `planrun resume`: continue an interrupted or killed run from its last checkpoint. The events
//! of the step being redone are set aside (kept, not analysed) so no stage's events appear twice
//! and `seq` stays contiguous; a stage with its own mid-stage checkpoint continues from it.

use std::path::Path;

use super::execute::execute;
use super::progress::Mode;
use super::runner::steps;
use super::start::{RunError, RunResult};
use crate::drivers::Registry;
use crate::plan::LoadOptions;
use crate::rundir::{RunDir, RunStatus, StageStatus};

/// Continue an interrupted run from its last checkpoint.
pub fn resume(path: &Path, mode: Mode, suspend_after: Option<std::time::Duration>) -> Result<RunResult, RunError> {
    let dir = RunDir::at(path);
    let mut manifest = dir.read_manifest().map_err(|e| RunError::Usage(e.to_string()))?;
    match manifest.status {
        RunStatus::Running | RunStatus::Interrupted | RunStatus::Error => {}
        RunStatus::Completed | RunStatus::Failed => {
            return Err(RunError::Usage(format!(
                "{} already finished ({}); there is nothing to resume",
                path.display(),
                manifest.status
            )));
        }
    }
    let resolved = dir.plan_resolved();
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
    let steps = steps(&plan);
    let done: usize = steps[..manifest.checkpoint.next_step.min(steps.len())].iter().map(Vec::len).sum();
    let single = steps.get(manifest.checkpoint.next_step).is_some_and(|s| s.len() == 1);
    let mid_stage = if single { manifest.stages.get(done).and_then(|r| r.checkpoint.clone()) } else { None };
    if let Some(state) = &mid_stage {
        manifest.checkpoint.position = state.position;
        manifest.checkpoint.t_ms = state.t_ms;
    }
    let events = dir.events_jsonl();
    let aside = dir.discarded(manifest.resumes);
    let moved = crate::events::jsonl::truncate_to(&events, manifest.checkpoint.position.offset, &aside)
        .map_err(|e| RunError::Io(format!("cannot prepare {} for resume: {e}", events.display())))?;
    let _ = std::fs::remove_file(dir.events_parquet());
    for (i, rec) in manifest.stages.iter_mut().enumerate().skip(done) {
        rec.status = StageStatus::Pending;
        rec.message = None;
        if !(i == done && mid_stage.is_some()) {
            rec.checkpoint = None;
        }
    }
    manifest.status = RunStatus::Running;
    manifest.ended_at = None;
    manifest.message = None;
    dir.write_manifest(&manifest)?;
    let progress_note = if moved > 0 {
        format!(" ({moved} bytes of unfinished-step events moved to {})", aside.display())
    } else {
        String::new()
    };
    execute(plan, dir, manifest, mode, suspend_after, Some(progress_note), None)
}
