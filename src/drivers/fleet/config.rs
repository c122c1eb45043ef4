//! The fleet stage as a plan writes it: `Fleet` and its parts (`FleetFault`, `Misbehave`,
//! `Restart`), their defaults, and the checks that need the stage's common fields. Running it is
//! the coordinator's job (`coordinator`); this file only says what was asked for.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::coordinator::Coordinator;
use super::process::Signal;
use crate::drivers::{BoxFuture, Driver, Outcome, StageContext, config_of};
use crate::plan::Dur;
use crate::plan::model::StageCommon;
use crate::plan::{FieldError, StageDriver};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    #[default]
    Never,
    OnCrash,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetFault {
    pub at: Dur,
    /// SIGKILL/SIGTERM this many agents (random, seeded) or the named ones.
    #[serde(default)]
    pub kill: Option<u32>,
    /// SIGSTOP this many agents, SIGCONT them after `for`.
    #[serde(default)]
    pub pause: Option<u32>,
    #[serde(default)]
    pub signal: Option<String>,
    #[serde(default, rename = "for")]
    pub for_: Option<Dur>,
    #[serde(default)]
    pub agents: Vec<String>,
}

/// Built-in agent switches for testing runners.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Misbehave {
    /// Agent ids (`agent-3`); empty means every agent.
    #[serde(default)]
    pub agents: Vec<String>,
    #[serde(default)]
    pub slow: Option<Dur>,
    #[serde(default)]
    pub leak_bytes: Option<u64>,
    #[serde(default)]
    pub crash_after: Option<u64>,
    #[serde(default)]
    pub garbage: bool,
    /// Read messages and heartbeat, but never answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub silent: bool,
    /// Answer in this other agent's name (a forgery the coordinator must refuse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonate: Option<String>,
}

impl Misbehave {
    /// Whether these switches apply to agent `id`.
    pub fn applies_to(&self, id: &str) -> bool {
        self.agents.is_empty() || self.agents.iter().any(|a| a == id)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    pub agents: u32,
    /// An agent program and its arguments; empty means the built-in `planrun agent`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default = "d_batch")]
    pub batch_size: u32,
    /// Pause between batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_pause: Option<Dur>,
    /// Coordination cycles; default: the stage duration divided by `interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycles: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Dur>,
    /// Message types, rotating (or chosen by `weights`).
    #[serde(default = "d_messages")]
    pub messages: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<f64>,
    /// `data` for each message type, e.g. `{ compute = { iterations = 1500 } }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub payload: BTreeMap<String, serde_json::Value>,
    /// Send each cycle's message to this many agents (random, seeded) instead of all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fanout: Option<u32>,
    #[serde(default = "d_response_timeout")]
    pub response_timeout: Dur,
    #[serde(default = "d_heartbeat")]
    pub heartbeat: Dur,
    #[serde(default = "d_missed")]
    pub missed_heartbeats: u32,
    #[serde(default)]
    pub restart: Restart,
    #[serde(default = "d_backoff")]
    pub restart_backoff: Dur,
    #[serde(default, rename = "fault", skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FleetFault>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_interval: Option<Dur>,
    /// How coordinator and agents talk: `file` (the default: a coordination directory) or a
    /// Redis server, `redis://HOST:PORT/DB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// The environment variable holding the Redis server's password (never in the plan: the
    /// plan's config is written into manifest.json).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Let agents started by hand on other machines join under this name (Redis transport):
    /// `planrun agent --transport URL --join NAME --id ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<String>,
    /// How many such agents the stage waits for (after starting its own `agents`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub expected_agents: u32,
    /// How long it waits for them.
    #[serde(default = "d_join_timeout")]
    pub join_timeout: Dur,
    /// Hand `expected_agents` to this many `planrun worker --join URL` processes (on any hosts),
    /// split evenly, instead of waiting for agents started by hand.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub workers: u32,
    /// Coordination directory; default: /dev/shm (else the temp dir)/planrun-RUN-STAGE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coord_dir: Option<String>,
    #[serde(default)]
    pub clean: bool,
    #[serde(default)]
    pub keep: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub misbehave: Option<Misbehave>,
    /// How long an agent may take to send its first heartbeat.
    #[serde(default = "d_startup")]
    pub startup_timeout: Dur,
    /// Grow or shrink the fleet at these times of the stage while cycles go on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scale: Vec<ScaleStep>,
    /// Grow and shrink the fleet by its backlog: each cycle's tasks are spread over the agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<Autoscale>,
}

/// `autoscale = { min, max, target_backlog, cooldown, step, load = [{ at, tasks }, …] }`.
///
/// With it, a cycle is `tasks` messages (the offered load from each `load` step's `at` on), each
/// to one agent, dealt round the live agents in turn, instead of one message to every agent. An
/// agent works its messages one at a time, so with too few agents a cycle's tasks are still
/// outstanding when the next cycle is due: the **backlog** is the tasks unanswered one
/// `interval` after the cycle was sent, per agent. Above `target_backlog` the fleet grows by
/// `step`; with no backlog and the cycle done within half its interval (the fleet more than
/// half idle) it shrinks by `step`; never past `min`/`max`, at most once per `cooldown`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autoscale {
    pub min: u32,
    pub max: u32,
    pub target_backlog: f64,
    pub cooldown: Dur,
    /// Agents added or removed per decision (default 1).
    #[serde(default = "one")]
    pub step: u32,
    pub load: Vec<LoadStep>,
}

/// From `at` (stage time) on, each cycle offers `tasks` tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadStep {
    pub at: Dur,
    pub tasks: u32,
}

fn one() -> u32 {
    1
}

impl Autoscale {
    /// Tasks per cycle at `t` (plan time since the stage began).
    pub fn tasks_at(&self, t: Duration) -> u32 {
        self.load.iter().rev().find(|l| l.at.0 <= t).map_or(0, |l| l.tasks)
    }
}

/// `scale = [{ at = "1m", agents = 1500 }, …]`: at `at` (stage time), make the fleet `agents`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleStep {
    pub at: Dur,
    pub agents: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
fn d_join_timeout() -> Dur {
    Dur(Duration::from_secs(60))
}
fn d_batch() -> u32 {
    50
}
fn d_messages() -> Vec<String> {
    vec!["ping".into()]
}
fn d_response_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn d_heartbeat() -> Dur {
    Dur(Duration::from_secs(1))
}
fn d_missed() -> u32 {
    3
}
fn d_backoff() -> Dur {
    Dur(Duration::from_secs(1))
}
fn d_startup() -> Dur {
    Dur(Duration::from_secs(10))
}

impl Fleet {
    /// How many coordination cycles to run in a stage of `duration`.
    pub fn cycle_count(&self, duration: Option<Duration>) -> u32 {
        match (self.cycles, self.interval, duration) {
            (Some(n), _, _) => n,
            (None, Some(i), Some(d)) if !i.0.is_zero() => (d.as_secs_f64() / i.0.as_secs_f64()).floor() as u32,
            _ => 0,
        }
    }
}

impl StageDriver for Fleet {
    fn config(&self) -> serde_json::Value {
        config_of(self)
    }

    fn describe(&self) -> String {
        let who = if self.command.is_empty() { "planrun agent".to_string() } else { self.command.join(" ") };
        format!("{} agents ({who}), batches of {}", self.agents, self.batch_size)
    }

    fn check(&self, stage: &StageCommon) -> Result<(), FieldError> {
        if self.agents == 0 && self.expected_agents == 0 {
            return Err(
                FieldError::new("a fleet needs at least one agent (or `expected_agents` that join)").at(&["agents"])
            );
        }
        let redis = self.transport.as_deref().is_some_and(crate::drivers::keyspace::is_redis_url);
        if self.join.is_some() && !redis {
            return Err(
                FieldError::new("agents join over Redis: add `transport = \"redis://HOST:PORT/DB\"`").at(&["join"])
            );
        }
        if let Some(j) = &self.join
            && (j.is_empty() || j.len() > 64 || !j.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
        {
            return Err(FieldError::new("a join name is 1-64 of [A-Za-z0-9._-]").at(&["join"]));
        }
        if self.expected_agents > 0 && self.join.is_none() {
            return Err(
                FieldError::new("`expected_agents` join under a name: add `join = \"NAME\"`").at(&["expected_agents"])
            );
        }
        if self.workers > 0 && self.expected_agents < self.workers {
            return Err(FieldError::new(
                "`workers` share `expected_agents` among them: give at least one agent per worker",
            )
            .at(&["workers"]));
        }
        if let Some(i) = self.messages.iter().position(|m| m == "shutdown") {
            return Err(FieldError::new(
                "`shutdown` is the message that stops joined agents at teardown; name this type otherwise",
            )
            .at(&["messages".to_string(), i.to_string()]));
        }
        if self.messages.is_empty() {
            return Err(FieldError::new("a fleet needs at least one message type").at(&["messages"]));
        }
        if !self.weights.is_empty() && self.weights.len() != self.messages.len() {
            return Err(FieldError::new("`weights` needs one weight per message type").at(&["weights"]));
        }
        if let Some(i) = self.weights.iter().position(|w| !w.is_finite() || *w < 0.0) {
            return Err(
                FieldError::new("a weight is a finite number, 0 or more").at(&["weights".to_string(), i.to_string()])
            );
        }
        if !self.weights.is_empty() && self.weights.iter().all(|w| *w == 0.0) {
            return Err(FieldError::new("at least one weight must be above 0").at(&["weights"]));
        }
        for (i, f) in self.faults.iter().enumerate() {
            if let Some(s) = f.signal.as_deref().filter(|s| Signal::parse(s).is_none()) {
                return Err(FieldError::new(format!(
                    "unknown signal `{s}`; use KILL, TERM, INT or STOP (with or without SIG)"
                ))
                .at(&["fault".to_string(), i.to_string(), "signal".to_string()]));
            }
        }
        if let Some(t) = &self.transport
            && t != "file"
            && !crate::drivers::keyspace::is_redis_url(t)
        {
            return Err(FieldError::new(format!(
                "unknown transport `{t}`; use \"file\" or a Redis server, \"redis://HOST:PORT/DB\""
            ))
            .at(&["transport"]));
        }
        if self.transport.as_deref().is_some_and(crate::drivers::keyspace::has_password) {
            return Err(FieldError::new(
                "a password here would be written into manifest.json; put it in an environment variable and name it: `password_env = \"REDIS_PASSWORD\"`",
            )
            .at(&["transport"]));
        }
        if self.transport.as_deref().is_some_and(crate::drivers::keyspace::is_redis_url) && self.coord_dir.is_some() {
            return Err(
                FieldError::new("`coord_dir` is the file transport's; a Redis transport needs none").at(&["coord_dir"])
            );
        }
        for (i, s) in self.scale.iter().enumerate() {
            let at = |k: &str| vec!["scale".to_string(), i.to_string(), k.to_string()];
            if s.agents == 0 {
                return Err(FieldError::new("a scale step keeps at least one agent").at(&at("agents")));
            }
            if i > 0 && s.at.0 <= self.scale[i - 1].at.0 {
                return Err(
                    FieldError::new("scale steps go in time order, each `at` after the one before").at(&at("at"))
                );
            }
            if let Some(d) = stage.duration
                && s.at.0 >= d.0
            {
                return Err(FieldError::new(format!("this step is at or after the stage's end ({d})")).at(&at("at")));
            }
            // The stage ends with its last cycle: a step must come before that cycle starts.
            let cycles = self.cycle_count(stage.duration.map(|d| d.0));
            if let Some(i) = self.interval.filter(|_| cycles > 0) {
                let last = i.0 * (cycles - 1);
                if s.at.0 >= last {
                    return Err(FieldError::new(format!(
                        "this step is at or after the last cycle starts ({} — {cycles} cycles every {i}): it would never run",
                        Dur(last)
                    ))
                    .at(&at("at")));
                }
            } else if stage.duration.is_none() {
                return Err(FieldError::new(
                    "a scale step needs the stage to last: give a `duration`, or `cycles` and an `interval`",
                )
                .at(&at("at")));
            }
        }
        if let Some(a) = &self.autoscale {
            let at = |k: &str| vec!["autoscale".to_string(), k.to_string()];
            if !self.scale.is_empty() {
                return Err(
                    FieldError::new("give `scale` (a schedule) or `autoscale` (a policy), not both").at(&["autoscale"])
                );
            }
            if a.min == 0 || a.min > a.max {
                return Err(FieldError::new(format!("`min` ({}) is at least 1 and at most `max` ({})", a.min, a.max))
                    .at(&at("min")));
            }
            if !(a.min..=a.max).contains(&self.agents) {
                return Err(FieldError::new(format!(
                    "the fleet starts with {} agents, outside autoscale's {}..={}",
                    self.agents, a.min, a.max
                ))
                .at(&["agents"]));
            }
            if !a.target_backlog.is_finite() || a.target_backlog < 0.0 {
                return Err(FieldError::new("`target_backlog` is a number of tasks per agent, 0 or more")
                    .at(&at("target_backlog")));
            }
            if a.step == 0 {
                return Err(FieldError::new("`step` is at least 1").at(&at("step")));
            }
            if a.load.is_empty() {
                return Err(FieldError::new(
                    "`load` says how many tasks a cycle offers: load = [{ at = \"0s\", tasks = 40 }]",
                )
                .at(&at("load")));
            }
            for (i, l) in a.load.iter().enumerate() {
                if i > 0 && l.at.0 <= a.load[i - 1].at.0 {
                    return Err(FieldError::new("load steps go in time order, each `at` after the one before").at(&[
                        "autoscale".to_string(),
                        "load".to_string(),
                        i.to_string(),
                        "at".to_string(),
                    ]));
                }
            }
            if self.fanout.is_some() {
                return Err(FieldError::new("autoscale deals each cycle's tasks over the agents; leave out `fanout`")
                    .at(&["fanout"]));
            }
            if self.interval.is_none() {
                return Err(FieldError::new(
                    "autoscale measures the backlog one `interval` after each cycle: give an `interval`",
                )
                .at(&["autoscale"]));
            }
        }
        if (!self.scale.is_empty() || self.autoscale.is_some()) && (self.expected_agents > 0 || self.workers > 0) {
            return Err(FieldError::new(
                "scaling grows and shrinks this host's agents; joined agents and workers are not scaled",
            )
            .at(&[if self.scale.is_empty() { "autoscale" } else { "scale" }]));
        }
        let wants_cycles = self.cycles.is_some_and(|c| c > 0) || (self.cycles.is_none() && stage.duration.is_some());
        if wants_cycles && self.interval.is_none() {
            return Err("coordination cycles need an `interval`".into());
        }
        Ok(())
    }
}

impl Driver for Fleet {
    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Outcome> {
        Box::pin(Coordinator::run_stage(self, ctx))
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::LoadOptions;
    use crate::plan::load::Syntax;

    /// The rendered error for a fleet stage with `fields`.
    fn refused(fields: &str) -> String {
        let text = format!(
            "[plan]\nname = \"x\"\n[[phase]]\nname = \"p\"\n[[phase.stage]]\nname = \"f\"\ndriver = \"fleet\"\n\
             agents = 2\ncycles = 1\ninterval = \"1s\"\n{fields}\n"
        );
        match crate::plan::load_str("f.toml", &text, Syntax::Toml, &LoadOptions::default(), &crate::drivers::Registry) {
            Ok(_) => panic!("`{fields}` should be refused"),
            Err(d) => d.render(false),
        }
    }

    #[test]
    fn no_message_types_is_a_located_error_not_a_panic() {
        let e = refused("messages = []");
        assert!(e.contains("at least one message type") && e.contains("f.toml:11:12]"), "{e}");
    }

    #[test]
    fn weights_are_finite_and_not_all_zero() {
        let e = refused("messages = [\"ping\", \"compute\"]\nweights = [1.0, -2.0]");
        assert!(e.contains("a weight is a finite number") && e.contains("f.toml:12:17]"), "{e}");
        let e = refused("messages = [\"ping\", \"compute\"]\nweights = [0.0, 0.0]");
        assert!(e.contains("at least one weight must be above 0"), "{e}");
    }

    #[test]
    fn an_unknown_fault_signal_is_refused_where_it_is_written() {
        let e = refused("fault = [{ at = \"1s\", kill = 1, signal = \"HUP\" }]");
        assert!(e.contains("unknown signal `HUP`") && e.contains("f.toml:11:42]"), "{e}");
    }
}
