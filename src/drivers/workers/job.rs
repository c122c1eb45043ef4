//! What a worker is handed and where it finds it: the `Job` (a share of one stage), the keys a
//! worker and its jobs live under, its announcement, and the plan's `workers` table for drivers
//! whose stages spread over workers (`http`).

use serde::{Deserialize, Serialize};

use crate::drivers::TagFilter;
use crate::plan::Dur;

/// A worker's announcement lives this long unless renewed (every second): a dead worker is
/// noticed within 3.5 s.
pub const WORKER_TTL_MS: u64 = 3_000;

/// `planrun:worker:NAME`: the worker's announcement (`Announcement`, with a TTL).
pub fn worker_key(name: &str) -> String {
    format!("planrun:worker:{name}")
}

/// `planrun:worker:NAME:jobs`: the list a worker waits on for jobs.
pub fn jobs_key(name: &str) -> String {
    format!("planrun:worker:{name}:jobs")
}

/// `PREFIX:TOKEN:events`: the stream one run of a stage (`token`, new each time the stage
/// hands out jobs) gets its workers' events and results on. A worker still writing for an
/// earlier run of the stage finds no stream (it writes with NOMKSTREAM) and stops.
pub fn events_key(prefix: &str, token: &str) -> String {
    format!("{prefix}:{token}:events")
}

/// `planrun:worker:NAME:claim`: held (briefly) by the stage about to hand NAME a job, so two
/// stages never hire the same idle worker.
pub fn claim_key(name: &str) -> String {
    format!("planrun:worker:{name}:claim")
}

/// `PREFIX:alive`: holds the prefix while the stage runs (renewed, with a TTL); a worker stops
/// its share when it is gone, so a runner that died leaves no load running.
pub fn alive_key(prefix: &str) -> String {
    format!("{prefix}:alive")
}

/// A worker name: 1-48 of `[A-Za-z0-9._-]` (it is part of keys and agent ids).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 48 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// What a worker says of itself under `worker_key`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Announcement {
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub pid: u32,
    /// Working on a job: stages pick idle workers first.
    #[serde(default)]
    pub busy: bool,
}

/// One share of one stage, for one worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    /// The stage's key prefix (`planrun:RUN:PHASE:STAGE`).
    pub prefix: String,
    /// The stage is running while this key holds `alive_value`; a job found otherwise is
    /// stale and is skipped, and a share whose key goes away (or changes) stops.
    pub alive_key: String,
    pub alive_value: String,
    /// The stream its events and report go to (`events_key`).
    pub events: String,
    /// The run clock's reading when the job was handed out, so the rows the job makes continue
    /// the run's `t_ms` (give or take the time the job took to arrive).
    pub t0_ms: f64,
    /// The run's `--time-scale`.
    pub scale: f64,
    pub work: Work,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Work {
    /// Start this many built-in agents that join the stage's coordinator (a `fleet` stage's
    /// `join`), with ids `WORKER-agent-I`.
    Agents { join: String, agents: u32, heartbeat_ms: u64 },
    /// Run a share of a stage with its driver, on the worker.
    Stage(Box<StageJob>),
}

/// A stage share a worker runs with the stage's own driver.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageJob {
    /// The driver's name, as plans write it.
    pub driver: String,
    /// The driver's config for this share (its part of the load), as the driver serializes it.
    pub config: serde_json::Value,
    pub phase: String,
    pub stage: String,
    pub iteration: u32,
    /// 1-based share number, and how many shares the stage has.
    pub share: u32,
    pub of: u32,
    /// The stage's `duration` in plan time, in ms.
    pub duration_ms: Option<u64>,
    pub seed: u64,
    pub vars: serde_json::Map<String, serde_json::Value>,
    pub tags: TagFilter,
}

/// `workers = { count = 4, redis = "redis://HOST:PORT/DB" }`: spread a stage over this many
/// `planrun worker --join URL` processes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workers {
    pub count: u32,
    /// The Redis server the workers wait on.
    pub redis: String,
    /// The environment variable holding the server's password (never written anywhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// How long to wait for `count` workers to announce themselves (real time; default 60 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
}

impl Workers {
    pub fn timeout(&self) -> std::time::Duration {
        self.timeout.map_or(std::time::Duration::from_secs(60), |d| d.0)
    }

    /// The checks `planrun validate` makes: a count, a Redis URL without its password.
    pub fn check(&self) -> Result<(), crate::plan::FieldError> {
        use crate::plan::FieldError;
        if self.count == 0 {
            return Err(FieldError::new("`workers.count` must be at least 1 (or leave `workers` out)")
                .at(&["workers", "count"]));
        }
        if !crate::drivers::keyspace::is_redis_url(&self.redis) {
            return Err(FieldError::new(format!(
                "`workers.redis` must be a Redis URL (`redis://HOST:PORT/DB`), not `{}`",
                self.redis
            ))
            .at(&["workers", "redis"]));
        }
        if crate::drivers::keyspace::has_password(&self.redis) {
            return Err(FieldError::new(
                "a password in `workers.redis` would be written to manifest.json: put it in an environment variable and name it in `workers.password_env`",
            )
            .at(&["workers", "redis"]));
        }
        Ok(())
    }
}
