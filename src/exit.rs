//! Exit codes: the one place they are defined. Documented in `--help` and the README.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Every criterion passed (and every stage completed).
    Passed = 0,
    /// A criterion or a stage failed.
    Failed = 1,
    /// The plan or the command line is wrong.
    Usage = 2,
    /// planrun could not carry out the run (I/O, a stage that could not start, a dead sink).
    Runtime = 3,
    /// Interrupted by Ctrl-C (or `--suspend-after`); `planrun resume` continues.
    Interrupted = 130,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }
}

pub const EXIT_CODES_HELP: &str = "Exit codes:
  0    every criterion passed
  1    a criterion or a stage failed
  2    plan or usage error
  3    runtime failure (I/O error, a stage that could not start)
  130  interrupted (resume with `planrun resume RUN_DIR`)";
