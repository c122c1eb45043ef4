//! Where a run and each of its stages stand, as `manifest.json` records them. A stage's status
//! is its lifecycle (`pending` until it runs, `skipped` when an earlier stage failed) or how it
//! ended; how a driver's iteration ended is the driver's own, smaller `drivers::Status`.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Completed,
    Failed,
    Interrupted,
    Error,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Error => "error",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    /// Not run yet (or to be redone on resume).
    Pending,
    Passed,
    /// The system under test did not do what the stage expected.
    Failed,
    /// planrun could not carry the stage out (e.g. a command that cannot be started).
    Error,
    TimedOut,
    /// Stopped by one of its `abort = true` criteria.
    Aborted,
    /// The stage stopped making calls because its budget would be exceeded: budget enforcement
    /// working as planned, so it counts as a pass (the report shows it).
    BudgetExceeded,
    Interrupted,
    /// Not run because an earlier stage failed.
    Skipped,
}

impl StageStatus {
    pub fn is_success(self) -> bool {
        matches!(self, StageStatus::Passed | StageStatus::BudgetExceeded)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StageStatus::Pending => "pending",
            StageStatus::Passed => "passed",
            StageStatus::Failed => "failed",
            StageStatus::Error => "error",
            StageStatus::TimedOut => "timed_out",
            StageStatus::Aborted => "aborted",
            StageStatus::BudgetExceeded => "budget_exceeded",
            StageStatus::Interrupted => "interrupted",
            StageStatus::Skipped => "skipped",
        }
    }
}

impl fmt::Display for StageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
