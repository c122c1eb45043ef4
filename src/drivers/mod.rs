//! Drivers: what a stage *does*. One trait, `Driver`, is the contract; each driver is a folder
//! with a config type that deserializes from the stage's fields and runs against a
//! `StageContext` (clock, cancellation, event emitter). Registering a driver is one line in
//! `DRIVERS`. The runner owns scheduling, timeouts and repeats; a driver owns one iteration.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::events::Emitter;
use crate::plan::de::{DeError, from_node};
use crate::plan::model::StageCommon;
use crate::plan::node::Node;
use crate::run::clock::Clock;

pub mod exec;
pub mod fleet;
pub mod llm;
pub mod sleep;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The contract every driver implements.
///
/// * `run` performs one iteration of the stage and returns how it went. It must return promptly
///   once `ctx.cancel` fires (Ctrl-C, stage timeout), cleaning up what it started: the runner
///   waits for it, then moves on.
/// * All waiting goes through `ctx.clock` (never `std::time` or bare `tokio::time`), so
///   `--time-scale` and the virtual clock apply.
/// * Everything observable goes out as events through `ctx.events`.
pub trait Driver: Send + Sync + fmt::Debug {
    /// The driver's own fields, as plain data (for `plan.resolved.toml` and model equality).
    fn config(&self) -> serde_json::Value;

    /// One line for `plan show` and `--dry-run`.
    fn describe(&self) -> String;

    /// True when the driver touches nothing real (no processes, files or network), so it may
    /// run under the virtual clock.
    fn simulated(&self) -> bool {
        false
    }

    /// Checks that need the stage's common fields (e.g. a required `duration`).
    fn check(&self, _stage: &StageCommon) -> Result<(), String> {
        Ok(())
    }

    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Outcome>;
}

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
    pub ledger: Arc<crate::run::ledger::Ledger>,
    /// Mid-stage checkpoints: state to resume from, saving, and suspend requests.
    pub checkpoint: crate::run::checkpoint::StageCheckpoint,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Running,
    Passed,
    /// The system under test did not do what the stage expected.
    Failed,
    /// planrun could not carry the stage out (e.g. a command that cannot be started).
    Error,
    TimedOut,
    Aborted,
    /// The stage stopped making calls because its budget would be exceeded: budget enforcement
    /// working as planned, so it counts as a pass (the report shows it).
    BudgetExceeded,
    Interrupted,
    Skipped,
}

impl Status {
    pub fn is_success(self) -> bool {
        matches!(self, Status::Passed | Status::BudgetExceeded)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::Error => "error",
            Status::TimedOut => "timed_out",
            Status::Aborted => "aborted",
            Status::BudgetExceeded => "budget_exceeded",
            Status::Interrupted => "interrupted",
            Status::Skipped => "skipped",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub status: Status,
    pub message: Option<String>,
}

impl Outcome {
    pub fn passed() -> Self {
        Outcome { status: Status::Passed, message: None }
    }

    pub fn with(status: Status, message: impl Into<String>) -> Self {
        Outcome { status, message: Some(message.into()) }
    }
}

pub struct DriverSpec {
    pub name: &'static str,
    pub parse: fn(&Node) -> Result<Arc<dyn Driver>, DeError>,
}

/// Deserialize a driver's config from its fields.
pub fn parse_as<T: DeserializeOwned + Driver + 'static>(node: &Node) -> Result<Arc<dyn Driver>, DeError> {
    from_node::<T>(node).map(|d| Arc::new(d) as Arc<dyn Driver>)
}

/// Plain-data view of a driver config.
pub fn config_of<T: Serialize>(cfg: &T) -> serde_json::Value {
    serde_json::to_value(cfg).unwrap_or(serde_json::Value::Null)
}

/// Every driver planrun knows, by the name plans use.
pub static DRIVERS: &[DriverSpec] = &[
    DriverSpec { name: "exec", parse: parse_as::<exec::Exec> },
    DriverSpec { name: "fleet", parse: parse_as::<fleet::Fleet> },
    DriverSpec { name: "llm", parse: parse_as::<llm::Llm> },
    DriverSpec { name: "sleep", parse: parse_as::<sleep::Sleep> },
];

pub fn find(name: &str) -> Option<&'static DriverSpec> {
    DRIVERS.iter().find(|d| d.name == name)
}
