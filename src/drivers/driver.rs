//! The `Driver` contract every stage's work implements, and what one iteration returns
//! (`Outcome`, `Status`).

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

use super::context::StageContext;
use crate::plan::StageDriver;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The contract every driver implements: what the plan needs to know of it (`StageDriver`:
/// its config as data, a one-line description, whether it is simulated, its field checks) and
/// one iteration of its work.
///
/// * `run` performs one iteration of the stage and returns how it went. It must return promptly
///   once `ctx.cancel` fires (Ctrl-C, stage timeout), cleaning up what it started: the runner
///   waits for it, then moves on.
/// * All waiting goes through `ctx.clock` (never `std::time` or bare `tokio::time`), so
///   `--time-scale` and the virtual clock apply.
/// * Everything observable goes out as events through `ctx.events`.
pub trait Driver: StageDriver {
    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Outcome>;
}

/// A stage whose driver is known: what the runner runs.
pub type Bound = std::sync::Arc<dyn Driver>;

/// How one iteration of a stage ended. (The runner adds what only it can decide — a stage
/// timeout, an abort criterion — and the lifecycle states, in `rundir::StageStatus`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Passed,
    /// The system under test did not do what the stage expected.
    Failed,
    /// planrun could not carry the stage out (e.g. a command that cannot be started).
    Error,
    /// The driver's own time limit ran out (a command's `timeout`).
    TimedOut,
    /// The stage stopped making calls because its budget would be exceeded: budget enforcement
    /// working as planned, so it counts as a pass (the report shows it).
    BudgetExceeded,
    /// Told to stop (Ctrl-C, `--suspend-after`).
    Interrupted,
}

impl Status {
    pub fn is_success(self) -> bool {
        matches!(self, Status::Passed | Status::BudgetExceeded)
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
