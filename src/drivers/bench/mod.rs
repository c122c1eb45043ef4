//! `bench`: a command benchmark as a stage, in the manner of hyperfine. Each of `commands` (a
//! candidate and, usually, a `baseline`) gets `warmup` untimed runs, then timed runs — exactly
//! `runs`, or until both `min_runs` and `min_time` are reached — each of `instances` copies at
//! once, with `prepare` before every timed batch and `cleanup` after a command's last run. Per
//! run the child's wall time, user and system CPU time and peak RSS come from the kernel's
//! accounting of that child (`wait4(2)`, not polling), plus an operation count the command may
//! print (`ops_pattern`). The statistics (mean, stddev, median, outliers, the speed-up ratio with
//! its confidence interval) are the analysis's (`crate::analyze::bench`), over these events.
//!
//! `config` holds the fields and the `Driver` impl, `launch` the small process each run is
//! started and measured by, `measure` one timed execution through it, `stage` the order of
//! runs and the events.

pub mod config;
pub mod launch;
pub mod measure;
pub mod stage;

pub use config::{Bench, BenchCommand};
