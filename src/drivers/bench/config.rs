//! The `bench` stage's fields — the commands, warm-up and run counts, parallel instances,
//! prepare/cleanup hooks, the op-count pattern — their checks, and the `Driver` impl.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::drivers::{BoxFuture, Driver, Outcome, StageContext, config_of, exec};
use crate::plan::Dur;
use crate::plan::model::StageCommon;
use crate::plan::{FieldError, StageDriver};

/// One command to time: a shell line (`run`, via `sh -c`) or a program with arguments (`cmd` +
/// `args`, no shell — what `hyperfine -N` times).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchCommand {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

impl BenchCommand {
    pub fn program(&self) -> (String, Vec<String>) {
        exec::config::program(&self.run, &self.cmd, &self.args)
    }

    pub fn shown(&self) -> String {
        exec::config::shown(&self.run, &self.cmd, &self.args)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bench {
    pub commands: Vec<BenchCommand>,
    /// The command the others are compared with; default: the one named `baseline`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// Untimed runs of each command before its timed ones (hyperfine `--warmup`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub warmup: u32,
    /// Exactly this many timed runs of each command (hyperfine `--runs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<u32>,
    /// Without `runs`: at least this many timed runs… (default 10, as hyperfine)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_runs: Option<u32>,
    /// …and until this much time has gone by (default 3s, as hyperfine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_time: Option<Dur>,
    /// Without `runs`: never more than this many (default: no cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runs: Option<u32>,
    /// Copies of the command run at once in each timed run; each copy is one measured run.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub instances: u32,
    /// A shell line run before every timed run (batch of instances), not timed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare: Option<String>,
    /// A shell line run after the last run of each command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup: Option<String>,
    /// A regex over the command's stdout whose first group is the number of operations the run
    /// did (the last match counts), e.g. `'ops=(\d+)'`: gives `bench_ops` rows in ops/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops_pattern: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Limit for one run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_timeout: Option<Dur>,
    /// Go on after a run that exits non-zero (hyperfine `-i`); the stage still fails when every
    /// run of a command failed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_failure: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// hyperfine's defaults: at least 10 runs and 3 s.
pub const DEFAULT_MIN_RUNS: u32 = 10;
pub const DEFAULT_MIN_TIME: std::time::Duration = std::time::Duration::from_secs(3);
/// Copies waited for at once: each holds one of tokio's blocking threads (512 by default), so
/// more than this would not all run together.
pub const MAX_INSTANCES: u32 = 256;

impl Bench {
    /// The baseline's name: `baseline`, or the command named "baseline".
    pub fn baseline_name(&self) -> Option<&str> {
        match &self.baseline {
            Some(b) => Some(b.as_str()),
            None => self.commands.iter().find(|c| c.name == "baseline").map(|c| c.name.as_str()),
        }
    }
}

impl StageDriver for Bench {
    fn config(&self) -> serde_json::Value {
        config_of(self)
    }

    fn describe(&self) -> String {
        let names: Vec<&str> = self.commands.iter().map(|c| c.name.as_str()).collect();
        let runs = match self.runs {
            Some(n) => format!("{n} runs"),
            None => format!(
                "≥{} runs and ≥{}",
                self.min_runs.unwrap_or(DEFAULT_MIN_RUNS),
                self.min_time.unwrap_or(Dur(DEFAULT_MIN_TIME))
            ),
        };
        let inst = if self.instances > 1 { format!(", {} at once", self.instances) } else { String::new() };
        format!("benchmark {} ({runs} each{inst})", names.join(" vs "))
    }

    fn check(&self, _stage: &StageCommon) -> Result<(), FieldError> {
        if self.commands.is_empty() {
            return Err(FieldError::new(
                "a bench stage needs at least one command: commands = [{ name = \"candidate\", run = \"…\" }]",
            )
            .at(&["commands"]));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, c) in self.commands.iter().enumerate() {
            let at = i.to_string();
            match (&c.run, &c.cmd) {
                (Some(_), Some(_)) => {
                    return Err(FieldError::new("give either `run` (a shell line) or `cmd` (a program), not both")
                        .at(&["commands", &at, "cmd"]));
                }
                (None, None) => {
                    return Err(FieldError::new(format!(
                        "command `{}` needs `run = \"shell line\"` or `cmd = \"program\"`",
                        c.name
                    ))
                    .at(&["commands", &at]));
                }
                (Some(_), None) if !c.args.is_empty() => {
                    return Err(FieldError::new("`args` goes with `cmd`; with `run`, write the arguments in the line")
                        .at(&["commands", &at, "args"]));
                }
                _ => {}
            }
            if c.name.is_empty() {
                return Err(FieldError::new("a command's `name` is empty").at(&["commands", &at, "name"]));
            }
            if !seen.insert(c.name.as_str()) {
                return Err(
                    FieldError::new(format!("two commands are named `{}`", c.name)).at(&["commands", &at, "name"])
                );
            }
        }
        if let Some(b) = &self.baseline
            && !self.commands.iter().any(|c| &c.name == b)
        {
            let names: Vec<&str> = self.commands.iter().map(|c| c.name.as_str()).collect();
            return Err(FieldError::new(format!("baseline `{b}` is not one of the commands ({})", names.join(", ")))
                .at(&["baseline"]));
        }
        if self.runs == Some(0) {
            return Err(FieldError::new("`runs` must be at least 1").at(&["runs"]));
        }
        if self.runs.is_some() && (self.min_runs.is_some() || self.min_time.is_some() || self.max_runs.is_some()) {
            return Err(FieldError::new(
                "`runs` fixes the count; leave out `min_runs`, `min_time` and `max_runs`, or drop `runs`",
            )
            .at(&["runs"]));
        }
        if let (Some(lo), Some(hi)) = (self.min_runs, self.max_runs)
            && lo > hi
        {
            return Err(FieldError::new(format!("`min_runs` ({lo}) is above `max_runs` ({hi})")).at(&["min_runs"]));
        }
        if self.max_runs == Some(0) {
            return Err(FieldError::new("`max_runs` must be at least 1").at(&["max_runs"]));
        }
        if self.instances == 0 || self.instances > MAX_INSTANCES {
            return Err(FieldError::new(format!("`instances` is between 1 and {MAX_INSTANCES}")).at(&["instances"]));
        }
        if let Some(p) = &self.ops_pattern {
            match regex::Regex::new(p) {
                Err(e) => {
                    return Err(FieldError::new(format!("`ops_pattern` is not a regex: {e}")).at(&["ops_pattern"]));
                }
                Ok(re) if re.captures_len() < 2 => {
                    return Err(FieldError::new("`ops_pattern` needs a group around the number, e.g. 'ops=(\\d+)'")
                        .at(&["ops_pattern"]));
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }
}

impl Driver for Bench {
    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Outcome> {
        Box::pin(self.execute(ctx))
    }
}
