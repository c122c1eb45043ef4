//! What a driver gets for one iteration: the `StageContext`. Everything a driver needs from the
//! runner — the clock, its seed, the run's cost ledger, mid-stage checkpoints, the event
//! emitter, cancellation — arrives here, so drivers never import the runner. The runner
//! implements `CheckpointStore`; drivers see only `StageCheckpoint`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::ledger::Ledger;
use crate::clock::Clock;
use crate::events::Emitter;

/// The variable naming the run directory (absolute) that `exec` and `bench` commands get, for
/// commands that leave files there.
pub const RUN_DIR_ENV: &str = "PLANRUN_RUN_DIR";

/// What a driver gets for one iteration.
pub struct StageContext {
    pub clock: Clock,
    pub cancel: CancellationToken,
    pub events: Emitter,
    pub phase: String,
    pub stage: String,
    /// The stage's `duration`, in plan time (the clock scales it).
    pub duration: Option<Duration>,
    /// 0-based repeat number.
    pub iteration: u32,
    /// Seed for this stage (derived from the run seed and the stage's name).
    pub seed: u64,
    pub run_dir: PathBuf,
    /// The plan's resolved vars, for templates drivers render at run time.
    pub vars: Arc<serde_json::Map<String, serde_json::Value>>,
    /// The run-wide cost ledger (the plan's `budget_usd`).
    pub ledger: Arc<Ledger>,
    /// Mid-stage checkpoints: state to resume from, saving, and suspend requests.
    pub checkpoint: StageCheckpoint,
    /// Which tagged tasks run (`--tags`, `--exclude-tags`).
    pub tags: Arc<TagFilter>,
}

impl StageContext {
    /// A seed for something inside this iteration (an agent, a round), stable across runs.
    pub fn seed_for(&self, parts: &[&str]) -> u64 {
        derive_seed(self.seed, parts)
    }
}

/// FNV-1a: a stable hash for deriving per-stage seeds (std's hasher may change between Rust
/// versions, which would change seeded runs).
pub fn derive_seed(seed: u64, parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

/// Why a checkpoint could not be saved (the store's own error: a full disk, a stopped log).
pub type CheckpointError = Box<dyn std::error::Error + Send + Sync>;

/// Where a stage's mid-stage state is kept (the runner's manifest; a test's memory).
pub trait CheckpointStore: Send + Sync {
    /// Record `state`; everything emitted so far must be on disk first, so state and log agree.
    fn save(&self, state: serde_json::Value) -> Result<(), CheckpointError>;
}

/// Mid-stage checkpoints as a driver sees them. A driver with long-running state saves it
/// with `save`; on `planrun resume` it gets it back from `restored` and continues from there.
/// `--suspend-after` asks it to stop cleanly at its next checkpoint (`suspend_requested`).
#[derive(Clone, Default)]
pub struct StageCheckpoint {
    store: Option<Arc<dyn CheckpointStore>>,
    restored: Option<Arc<serde_json::Value>>,
    suspend: Arc<AtomicBool>,
}

impl StageCheckpoint {
    pub fn new(
        store: Arc<dyn CheckpointStore>,
        restored: Option<serde_json::Value>,
        suspend: Arc<AtomicBool>,
    ) -> StageCheckpoint {
        StageCheckpoint { store: Some(store), restored: restored.map(Arc::new), suspend }
    }

    /// State saved by an earlier run of this stage, when resuming mid-stage.
    pub fn restored(&self) -> Option<&serde_json::Value> {
        self.restored.as_deref()
    }

    /// Save the stage's state (a no-op where nothing keeps checkpoints).
    pub fn save(&self, state: serde_json::Value) -> Result<(), CheckpointError> {
        match &self.store {
            Some(s) => s.save(state),
            None => Ok(()),
        }
    }

    /// True once `--suspend-after` has passed: stop at this checkpoint.
    pub fn suspend_requested(&self) -> bool {
        self.suspend.load(Ordering::SeqCst)
    }
}

/// `planrun run --tags a,b --exclude-tags c`: which tagged pieces of work (an `http` stage's
/// tasks) run. Locust's rule: with `include` set, only work carrying one of those tags runs;
/// work carrying an `exclude` tag never does.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TagFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

impl TagFilter {
    pub fn new(include: Vec<String>, exclude: Vec<String>) -> TagFilter {
        TagFilter { include, exclude }
    }

    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    pub fn admits(&self, tags: &[String]) -> bool {
        (self.include.is_empty() || tags.iter().any(|t| self.include.contains(t)))
            && !tags.iter().any(|t| self.exclude.contains(t))
    }

    /// The selection as it was asked for (`--tags a,b --exclude-tags c`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.include.is_empty() {
            parts.push(format!("--tags {}", self.include.join(",")));
        }
        if !self.exclude.is_empty() {
            parts.push(format!("--exclude-tags {}", self.exclude.join(",")));
        }
        if parts.is_empty() { "the plan".into() } else { parts.join(" ") }
    }
}
