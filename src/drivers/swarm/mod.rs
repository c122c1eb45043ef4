//! `swarm`: many swarms of agents coordinating through a real Redis server — the driver behind
//! the 100-swarm Redis stress test. Each swarm elects a leader with a lease and a fencing token,
//! its members send messages that the leader relays (a fenced commit per batch, so a deposed
//! leader's write is refused), and its state is saved in a hash so that after a server restart
//! the swarm re-elects and checks what survived. Faults kill or pause leaders and restart the
//! server. Events: `swarm`, `election`, `message`, `state_saved`, `state_recovered`, `fenced`,
//! `fault`, `server`, `teardown`.
//!
//! The parts: `config` is the stage as a plan writes it (`Swarm`); `server` starts, restarts
//! and stops the stage's own `redis-server`; `lease` holds the election and fencing scripts;
//! `member` is one member's sender, role and relay loops and the swarm's `Book`; `stage` runs
//! the whole stage.

mod config;
mod lease;
mod member;
mod server;
mod stage;

pub use config::Swarm;
