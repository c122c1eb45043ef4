//! planrun: declarative test plans for agent fleets.
//!
//! The pipeline, one module each: `plan` (parse TOML or KDL into one model, resolve vars and
//! profiles, validate) → `run` (schedule phases and stages, clock, checkpoints, progress) →
//! `drivers` (each stage's work, producing events) → `events` (JSONL while running, Parquet at
//! the end). `cli` maps the command line onto them; `diag` renders errors at file:line:col; `demo` is
//! `planrun serve-demo`, a stand-in HTTP fleet for the load plans; `dashboard` serves a run
//! directory (or a running run) as a live page with the report's charts.

pub mod analyze;
pub mod cli;
pub mod clock;
pub mod criteria;
pub mod dashboard;
pub mod demo;
pub mod diag;
pub mod drivers;
pub mod events;
pub mod exit;
pub mod plan;
pub mod report;
pub mod run;
pub mod rundir;
