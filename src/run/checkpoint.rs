//! Mid-stage checkpoints. A driver with long-running state (the LLM driver's rounds, ledger and
//! breakers) saves it through `StageCheckpoint::save`; the runner flushes the event log and
//! records the state with the log position in `manifest.json`, atomically. `planrun resume`
//! cuts the log back to that position and hands the state back through `restored()`, so the
//! stage continues where it was instead of starting over. `--suspend-after` asks running stages
//! to stop cleanly at their next checkpoint.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::clock::Clock;
use super::manifest::Manifest;
use crate::events::EventSink;
use crate::events::sink::Position;

/// What the manifest keeps for a stage that checkpointed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageState {
    pub state: serde_json::Value,
    pub position: Position,
    pub t_ms: f64,
}

#[derive(Clone, Default)]
pub struct StageCheckpoint {
    inner: Option<Arc<Inner>>,
    suspend: Arc<AtomicBool>,
}

struct Inner {
    phase: String,
    stage: String,
    restored: Option<serde_json::Value>,
    sink: EventSink,
    manifest: Arc<Mutex<Manifest>>,
    dir: PathBuf,
    clock: Clock,
}

impl StageCheckpoint {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        phase: &str,
        stage: &str,
        restored: Option<serde_json::Value>,
        sink: EventSink,
        manifest: Arc<Mutex<Manifest>>,
        dir: PathBuf,
        clock: Clock,
        suspend: Arc<AtomicBool>,
    ) -> StageCheckpoint {
        StageCheckpoint {
            inner: Some(Arc::new(Inner {
                phase: phase.to_string(),
                stage: stage.to_string(),
                restored,
                sink,
                manifest,
                dir,
                clock,
            })),
            suspend,
        }
    }

    /// State saved by an earlier run of this stage, when resuming mid-stage.
    pub fn restored(&self) -> Option<&serde_json::Value> {
        self.inner.as_ref()?.restored.as_ref()
    }

    /// Save the stage's state; everything emitted so far is flushed first, so the state and the
    /// log agree.
    pub fn save(&self, state: serde_json::Value) -> Result<(), String> {
        let Some(inner) = &self.inner else { return Ok(()) };
        let position = inner.sink.flush()?;
        let mut m = inner.manifest.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rec) = m.stage_mut(&inner.phase, &inner.stage) {
            rec.checkpoint = Some(StageState { state, position, t_ms: inner.clock.elapsed_ms() });
        }
        m.write(&inner.dir).map_err(|e| format!("cannot write manifest.json: {e}"))
    }

    /// True once `--suspend-after` has passed: stop at this checkpoint.
    pub fn suspend_requested(&self) -> bool {
        self.suspend.load(Ordering::SeqCst)
    }
}
