//! Workers: `planrun worker` processes on any hosts that take a share of a stage, coordinated
//! through a Redis server. This module is what the runner's side and the worker's side share,
//! whichever driver the stage has:
//!
//! * `job` — what a worker is handed (`Job`: start joining agents, or run a share of a stage),
//!   the keys it lives under, and the plan's `workers = { count, redis }` table (`Workers`);
//! * `hire` — the runner's side: find idle workers, hand each its job, watch their
//!   announcements (`worker`, `worker_lost` events);
//! * `relay` — the events a worker's share makes, sent through a Redis stream (`StreamOut`, a
//!   writer under a worker's event sink) and written into the one run directory by the runner
//!   with the `worker` column naming who made them (`Relay`).
//!
//! The worker's loop itself (`planrun worker`) is `crate::run::worker`: it runs drivers.

mod hire;
mod job;
mod relay;

pub use hire::{Hire, Share};
pub use job::{
    Announcement, Job, StageJob, WORKER_TTL_MS, Work, Workers, alive_key, claim_key, events_key, jobs_key, valid_name,
    worker_key,
};
pub use relay::{Relay, Report, StreamOut};
