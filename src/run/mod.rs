//! Running a plan: `start` checks it and creates the run directory, `execute` drives the steps
//! on a tokio runtime (real or virtual clock), handles Ctrl-C/SIGTERM, then closes the log and
//! writes `events.parquet`; `resume` picks an interrupted run up from its last checkpoint. The
//! scheduling itself is in `runner` (live `abort` checks in `abort`, mid-stage checkpoints in
//! `checkpoint`, what a person sees in `progress`, `plan show` in `schedule`); what a stage does
//! is in `crate::drivers`; where things are written is `crate::rundir`'s. `worker` is
//! `planrun worker`, which runs shares of stages on other hosts.

pub mod abort;
pub mod checkpoint;
mod execute;
pub mod observe;
pub mod progress;
pub mod resume;
pub mod runner;
pub mod schedule;
pub mod start;
#[cfg(test)]
mod tests;
pub mod worker;

pub use resume::resume;
pub use start::{DEFAULT_SEED, RunError, RunOptions, RunResult, real_world_stages, resolved_toml, start};

/// A plan whose stages know their drivers: what the runner runs.
pub type Plan = crate::plan::Plan<crate::drivers::Bound>;
