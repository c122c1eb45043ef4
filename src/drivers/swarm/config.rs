//! The swarm stage as a plan writes it (`Swarm`, its `SwarmFault`s and `ServerCfg`), defaults
//! and checks. Running it is `stage`'s job.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::drivers::{BoxFuture, Driver, Outcome, StageContext, config_of};
use crate::plan::Dur;
use crate::plan::model::StageCommon;
use crate::plan::{FieldError, StageDriver};

/// `start_server = { … }`: the stage starts its own `redis-server` on a free loopback port.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerCfg {
    /// `appendonly yes`: state survives a restart (the default; the recovery check needs it).
    #[serde(default = "yes")]
    pub appendonly: bool,
    /// The program (default `redis-server`, from PATH).
    #[serde(default = "d_program")]
    pub program: String,
}

fn yes() -> bool {
    true
}
fn d_program() -> String {
    "redis-server".into()
}

/// What a fault does to the swarms at `at`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmFault {
    pub at: Dur,
    /// Kill this many swarms' leaders (seeded choice): they stop without releasing their lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_leaders: Option<u32>,
    /// Pause this many leaders for `for` between reading a batch and writing it, as a stop-the-
    /// world pause does: when they wake, a new leader holds a higher fencing token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_leaders: Option<u32>,
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<Dur>,
    /// Restart the server the stage started: `true` (SIGTERM, it writes its AOF) or `"kill"`
    /// (SIGKILL: up to a second of writes may be lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_redis: Option<RestartHow>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RestartHow {
    Graceful(bool),
    Named(String),
}

impl RestartHow {
    /// Some(true) for a SIGKILL restart, Some(false) for a graceful one, None for none.
    pub fn kill(&self) -> Option<bool> {
        match self {
            RestartHow::Graceful(true) => Some(false),
            RestartHow::Graceful(false) => None,
            RestartHow::Named(s) if s == "kill" => Some(true),
            RestartHow::Named(s) if s == "term" => Some(false),
            RestartHow::Named(_) => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Swarm {
    pub swarms: u32,
    #[serde(default = "d_members")]
    pub agents_per_swarm: u32,
    /// Messages per second each member sends to its swarm (through the leader).
    #[serde(default = "d_rate")]
    pub message_rate: f64,
    /// A Redis server to use, `redis://HOST:PORT/DB`; or `start_server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_server: Option<ServerCfg>,
    /// The environment variable holding `server`'s password (never in the plan: the plan's
    /// config is written into manifest.json).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// A leader's lease (`SET NX PX`).
    #[serde(default = "d_lease")]
    pub lease: Dur,
    /// How often members renew or try for the lease; default a quarter of `lease`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew: Option<Dur>,
    /// How often a leader saves its swarm's state.
    #[serde(default = "d_state_every")]
    pub state_every: Dur,
    /// A swarm without a leader for this long is a failed election.
    #[serde(default = "d_election_timeout")]
    pub election_timeout: Dur,
    #[serde(default, rename = "fault", skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<SwarmFault>,
}

fn d_members() -> u32 {
    5
}
fn d_rate() -> f64 {
    20.0
}
fn d_lease() -> Dur {
    Dur(Duration::from_secs(2))
}
fn d_state_every() -> Dur {
    Dur(Duration::from_secs(1))
}
fn d_election_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

impl Swarm {
    pub fn renew_every(&self) -> Duration {
        self.renew.map(|r| r.0).unwrap_or(self.lease.0 / 4)
    }
}

impl StageDriver for Swarm {
    fn config(&self) -> serde_json::Value {
        config_of(self)
    }

    fn describe(&self) -> String {
        format!(
            "{} swarms of {} over Redis, {} messages/s in all",
            self.swarms,
            self.agents_per_swarm,
            self.message_rate * (self.swarms * self.agents_per_swarm) as f64
        )
    }

    fn check(&self, stage: &StageCommon) -> Result<(), FieldError> {
        if self.swarms == 0 || self.swarms > 10_000 {
            return Err(FieldError::new("`swarms` is 1 to 10000").at(&["swarms"]));
        }
        if self.agents_per_swarm == 0 || self.agents_per_swarm > 1000 {
            return Err(FieldError::new("`agents_per_swarm` is 1 to 1000").at(&["agents_per_swarm"]));
        }
        if !self.message_rate.is_finite() || self.message_rate < 0.0 || self.message_rate > 100_000.0 {
            return Err(
                FieldError::new("`message_rate` is messages per second per member, 0 to 100000").at(&["message_rate"])
            );
        }
        match (&self.server, &self.start_server) {
            (None, None) => {
                return Err(FieldError::new(
                    "a swarm stage needs a Redis server: `server = \"redis://HOST:PORT/DB\"`, or `start_server = {}` to start one",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(FieldError::new("give `server` or `start_server`, not both").at(&["start_server"]));
            }
            (Some(s), None) if !crate::drivers::keyspace::is_redis_url(s) => {
                return Err(FieldError::new(format!("`{s}` is not a Redis URL (redis://HOST:PORT/DB)")).at(&["server"]));
            }
            (Some(s), None) if crate::drivers::keyspace::has_password(s) => {
                return Err(FieldError::new(
                    "a password here would be written into manifest.json; put it in an environment variable and name it: `password_env = \"REDIS_PASSWORD\"`",
                )
                .at(&["server"]));
            }
            _ => {}
        }
        if self.lease.0 < Duration::from_millis(10) {
            return Err(FieldError::new("a lease shorter than 10ms cannot be renewed in time").at(&["lease"]));
        }
        if self.renew_every() >= self.lease.0 {
            return Err(FieldError::new("`renew` must be shorter than `lease`, or the lease lapses between renewals")
                .at(&["renew"]));
        }
        if stage.duration.is_none() {
            return Err("a swarm stage needs a `duration`".into());
        }
        for (i, f) in self.faults.iter().enumerate() {
            let at = |field: &str| vec!["fault".to_string(), i.to_string(), field.to_string()];
            let restart = f.restart_redis.as_ref();
            if let Some(r) = restart
                && r.kill().is_none()
                && !matches!(r, RestartHow::Graceful(false))
            {
                return Err(FieldError::new("`restart_redis` is true, \"term\" or \"kill\"").at(&at("restart_redis")));
            }
            if restart.and_then(RestartHow::kill).is_some() && self.start_server.is_none() {
                return Err(FieldError::new(
                    "`restart_redis` restarts the server the stage started: add `start_server = {}`",
                )
                .at(&at("restart_redis")));
            }
            if f.pause_leaders.is_some() && f.for_.is_none() {
                return Err(
                    FieldError::new("`pause_leaders` needs `for`, how long the pause lasts").at(&at("pause_leaders"))
                );
            }
            if f.kill_leaders.is_some() && self.agents_per_swarm < 2 {
                return Err(FieldError::new(
                    "killing a leader needs `agents_per_swarm` of 2 or more, or no one can follow it",
                )
                .at(&at("kill_leaders")));
            }
        }
        Ok(())
    }
}

impl Driver for Swarm {
    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Outcome> {
        Box::pin(super::stage::run(self, ctx))
    }
}
