//! `manifest.json`: what a run was (plan, hash, vars, profile, args, version, host, clock) and
//! where it stands (the run's and each stage's status, the checkpoint `resume` continues from).
//! Reading and writing it is `RunDir`'s job (`layout`).

use serde::{Deserialize, Serialize};

use super::status::{RunStatus, StageStatus};
use crate::events::Position;
use crate::plan::ClockKind;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Host {
    pub os: String,
    pub kernel: String,
    pub hostname: String,
    pub cpus: usize,
    pub memory_bytes: u64,
}

impl Host {
    pub fn detect() -> Host {
        let memory_bytes = sysinfo::System::new()
            .map(|mut sys| {
                sys.refresh_memory();
                sys.total_memory()
            })
            .unwrap_or(0);
        Host {
            os: sysinfo::System::long_os_version().unwrap_or_else(|_| std::env::consts::OS.to_string()),
            kernel: sysinfo::System::kernel_version().unwrap_or_default(),
            hostname: sysinfo::System::host_name().unwrap_or_default(),
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            memory_bytes,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageRecord {
    pub phase: String,
    pub stage: String,
    pub driver: String,
    pub status: StageStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t_start_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t_end_ms: Option<f64>,
    #[serde(default)]
    pub events: u64,
    /// The stage's own checkpoint, when it saved one and has not finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<StageState>,
}

/// What the manifest keeps for a stage that saved a mid-stage checkpoint: the driver's state
/// and the log position and run time it matches.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageState {
    pub state: serde_json::Value,
    pub position: Position,
    pub t_ms: f64,
}

/// The point a resumed run continues from: every step before `next_step` is complete and its
/// events end at `position`.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct Checkpoint {
    pub next_step: usize,
    pub position: Position,
    pub t_ms: f64,
    /// Run-wide spending at this point, in nano-dollars (restored by `resume`).
    #[serde(default)]
    pub spent_nanos: u64,
}

/// Which build of planrun ran: a debug build compiles in minutes but drives real processes
/// several times slower, which shows in what it measures of them.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Build {
    Debug,
    Release,
    /// Recorded by a planrun that did not say (manifests from before this field).
    #[default]
    Unknown,
}

impl Build {
    /// The build of this binary.
    pub fn current() -> Build {
        if cfg!(debug_assertions) { Build::Debug } else { Build::Release }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Build::Debug => "debug",
            Build::Release => "release",
            Build::Unknown => "unknown",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanInfo {
    pub name: String,
    pub path: String,
    pub sha256: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub planrun_version: String,
    #[serde(default)]
    pub build: Build,
    pub plan: PlanInfo,
    pub profile: Option<String>,
    pub vars: serde_json::Map<String, serde_json::Value>,
    pub args: Vec<String>,
    pub seed: u64,
    pub time_scale: f64,
    pub clock: ClockKind,
    pub host: Host,
    pub status: RunStatus,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub stages: Vec<StageRecord>,
    pub checkpoint: Checkpoint,
    /// Number of times this run was resumed.
    #[serde(default)]
    pub resumes: u32,
    /// `--tags`: only tasks carrying one of these run (a resumed run keeps the selection).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// `--exclude-tags`: tasks carrying one of these never run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_tags: Vec<String>,
}

impl Manifest {
    pub fn stage_mut(&mut self, phase: &str, stage: &str) -> Option<&mut StageRecord> {
        self.stages.iter_mut().find(|s| s.phase == phase && s.stage == stage)
    }
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
