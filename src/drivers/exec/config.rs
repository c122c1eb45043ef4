//! The `exec` stage's fields (`run` or `cmd` + `args`, env, cwd, expected exit code, per-command
//! timeout, output tail) and its `Driver` impl; running the command is `command`'s job.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::drivers::{BoxFuture, Driver, Outcome, StageContext, config_of};
use crate::plan::Dur;
use crate::plan::model::StageCommon;
use crate::plan::{FieldError, StageDriver};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exec {
    /// A shell command line, run with `sh -c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// A program to run directly (no shell), with `args`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Exit code that counts as success.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub expect_exit: i32,
    /// Limit for one execution (the stage `timeout` bounds all repeats together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_timeout: Option<Dur>,
    /// Lines of stdout/stderr kept in the event.
    #[serde(default = "default_tail", skip_serializing_if = "is_default_tail")]
    pub tail_lines: usize,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

fn default_tail() -> usize {
    20
}

fn is_default_tail(n: &usize) -> bool {
    *n == default_tail()
}

/// The program and arguments for `run` (a shell line, `sh -c`) or `cmd` + `args` (no shell):
/// how `exec` and `bench` commands are written.
pub fn program(run: &Option<String>, cmd: &Option<String>, args: &[String]) -> (String, Vec<String>) {
    match (run, cmd) {
        (Some(line), _) => ("sh".into(), vec!["-c".into(), line.clone()]),
        (None, Some(cmd)) => (cmd.clone(), args.to_vec()),
        (None, None) => (String::new(), Vec::new()),
    }
}

/// The command as a person would type it.
pub fn shown(run: &Option<String>, cmd: &Option<String>, args: &[String]) -> String {
    match run {
        Some(line) => line.clone(),
        None => {
            let (p, a) = program(run, cmd, args);
            std::iter::once(p).chain(a).collect::<Vec<_>>().join(" ")
        }
    }
}

impl Exec {
    pub(super) fn program(&self) -> (String, Vec<String>) {
        program(&self.run, &self.cmd, &self.args)
    }

    pub(super) fn shown(&self) -> String {
        shown(&self.run, &self.cmd, &self.args)
    }
}

impl StageDriver for Exec {
    fn config(&self) -> serde_json::Value {
        config_of(self)
    }

    fn describe(&self) -> String {
        format!("run `{}`", self.shown())
    }

    fn check(&self, _stage: &StageCommon) -> Result<(), FieldError> {
        match (&self.run, &self.cmd) {
            (Some(_), Some(_)) => {
                Err(FieldError::new("give either `run` (a shell line) or `cmd` (a program), not both").at(&["cmd"]))
            }
            (None, None) => Err("an exec stage needs `run = \"shell line\"` or `cmd = \"program\"`".into()),
            (Some(_), None) if !self.args.is_empty() => {
                Err(FieldError::new("`args` goes with `cmd`; with `run`, write the arguments in the line")
                    .at(&["args"]))
            }
            _ => Ok(()),
        }
    }
}

impl Driver for Exec {
    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Outcome> {
        Box::pin(self.execute(ctx))
    }
}
