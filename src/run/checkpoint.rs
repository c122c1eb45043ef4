//! Mid-stage checkpoints, the runner's side. A driver with long-running state (the LLM driver's
//! rounds, ledger and breakers) saves it through its `StageCheckpoint`; this store flushes the
//! event log and records the state with the log position in `manifest.json`, atomically. `planrun resume`
//! cuts the log back to that position and hands the state back through `restored()`, so the
//! stage continues where it was instead of starting over. `--suspend-after` asks running stages
//! to stop cleanly at their next checkpoint.

use std::sync::{Arc, Mutex};

use crate::clock::Clock;
use crate::drivers::{CheckpointError, CheckpointStore};
use crate::events::EventSink;
use crate::rundir::{Manifest, RunDir, StageState};

/// The runner's `CheckpointStore`: a stage's state goes into its record in `manifest.json`,
/// with the log position it matches.
pub struct ManifestCheckpoints {
    phase: String,
    stage: String,
    sink: EventSink,
    manifest: Arc<Mutex<Manifest>>,
    dir: RunDir,
    clock: Clock,
}

impl ManifestCheckpoints {
    pub fn new(
        phase: &str,
        stage: &str,
        sink: EventSink,
        manifest: Arc<Mutex<Manifest>>,
        dir: RunDir,
        clock: Clock,
    ) -> ManifestCheckpoints {
        ManifestCheckpoints { phase: phase.to_string(), stage: stage.to_string(), sink, manifest, dir, clock }
    }
}

impl CheckpointStore for ManifestCheckpoints {
    fn save(&self, state: serde_json::Value) -> Result<(), CheckpointError> {
        let position = self.sink.flush()?;
        let mut m = self.manifest.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rec) = m.stage_mut(&self.phase, &self.stage) {
            rec.checkpoint = Some(StageState { state, position, t_ms: self.clock.elapsed_ms() });
        }
        Ok(self.dir.write_manifest(&m)?)
    }
}
