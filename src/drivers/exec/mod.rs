//! `exec`: run a command — how plans build, start, restart and probe the system under test.
//! Either `run` (a shell line, via `sh -c`) or `cmd` + `args` (no shell). One `exec` event per
//! execution with its duration, exit code and the tail of stdout/stderr. The command runs in its
//! own process group so a timeout or Ctrl-C ends everything it started (TERM, then KILL after a
//! grace period), and it is told to die with the runner (PR_SET_PDEATHSIG) if the runner is
//! killed outright. The command gets the run directory in `PLANRUN_RUN_DIR`, and each
//! `planrun-metric NAME VALUE [UNIT]` line it prints becomes a `metric` row.

pub mod command;
pub mod config;

pub use config::Exec;
