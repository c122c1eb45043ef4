//! Drivers: what a stage *does*. One trait, `Driver` (`driver`), is the contract; each driver
//! is a folder with a config type that deserializes from the stage's fields and runs against a
//! `StageContext` (`context`: clock, seed, ledger, checkpoints, cancellation, event emitter).
//! Registering a driver is one line in `registry::DRIVERS`. The runner owns scheduling,
//! timeouts and repeats; a driver owns one iteration. Drivers import nothing of the runner.
//! Shared by several drivers: `keyspace` (a stage's keys on a Redis server), `monitor`
//! (sampling processes), `ledger` (the cost budget) and `workers` (a stage's shares on
//! `planrun worker` processes, and their events relayed back).

pub mod context;
pub mod driver;
pub mod keyspace;
pub mod ledger;
pub mod monitor;
pub mod registry;

pub mod bench;
pub mod exec;
pub mod fleet;
pub mod http;
pub mod llm;
pub mod sleep;
pub mod swarm;
pub mod workers;
pub mod ws;

pub use context::{CheckpointError, CheckpointStore, StageCheckpoint, StageContext, TagFilter, derive_seed};
pub use driver::{Bound, BoxFuture, Driver, Outcome, Status};
pub use ledger::Ledger;
pub use registry::{DRIVERS, DriverSpec, Registry, config_of, find, parse_as};
