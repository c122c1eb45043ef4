//! Mid-stage checkpoints, the runner's side. A driver with long-running state (the LLM driver's
//! rounds, ledger and breakers) saves it through its `StageCheckpoint`; this store flushes the
//! event log and records the state with the log position in `manifest.json`, atomically. `planrun resume`
//! cuts the log back to that position and hands the state back through `restored()`, so the
//! stage continues where it was instead of starting over. `--suspend-after` asks running stages
//! to stop cleanly at their next checkpoint.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::manifest::Manifest;
use crate::clock::Clock;
use crate::drivers::CheckpointStore;
use crate::events::EventSink;
use crate::events::sink::Position;

/// What the manifest keeps for a stage that checkpointed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageState {
    pub state: serde_json::Value,
    pub position: Position,
    pub t_ms: f64,
}

/// The runner's `CheckpointStore`: a stage's state goes into its record in `manifest.json`,
/// with the log position it matches.
pub struct ManifestCheckpoints {
    phase: String,
    stage: String,
    sink: EventSink,
    manifest: Arc<Mutex<Manifest>>,
    dir: PathBuf,
    clock: Clock,
}

impl ManifestCheckpoints {
    pub fn new(
        phase: &str,
        stage: &str,
        sink: EventSink,
        manifest: Arc<Mutex<Manifest>>,
        dir: PathBuf,
        clock: Clock,
    ) -> ManifestCheckpoints {
        ManifestCheckpoints { phase: phase.to_string(), stage: stage.to_string(), sink, manifest, dir, clock }
    }
}

impl CheckpointStore for ManifestCheckpoints {
    fn save(&self, state: serde_json::Value) -> Result<(), String> {
        let position = self.sink.flush()?;
        let mut m = self.manifest.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rec) = m.stage_mut(&self.phase, &self.stage) {
            rec.checkpoint = Some(StageState { state, position, t_ms: self.clock.elapsed_ms() });
        }
        m.write(&self.dir).map_err(|e| format!("cannot write manifest.json: {e}"))
    }
}
