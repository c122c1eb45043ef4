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

impl Exec {
    pub(super) fn program(&self) -> (String, Vec<String>) {
        match (&self.run, &self.cmd) {
            (Some(line), _) => ("sh".into(), vec!["-c".into(), line.clone()]),
            (None, Some(cmd)) => (cmd.clone(), self.args.clone()),
            (None, None) => (String::new(), Vec::new()),
        }
    }

    pub(super) fn shown(&self) -> String {
        match (&self.run, &self.cmd) {
            (Some(line), _) => line.clone(),
            _ => {
                let (p, a) = self.program();
                std::iter::once(p).chain(a).collect::<Vec<_>>().join(" ")
            }
        }
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
