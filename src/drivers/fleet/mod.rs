//! `fleet`: spawn N agent processes and coordinate them — the driver behind the 50-agent soak
//! and the 1000-agent fleet tests. Agents are the built-in agent (`agent`, started as the lean
//! `planrun-agent` beside `planrun`, else — with a `warning` event — as `planrun agent`) or any
//! command that speaks the protocol (`protocol`, docs/agent-protocol.md) over a transport
//! (`transport`).
//!
//! The parts: `config` is the stage as a plan writes it (`Fleet`) and its checks;
//! `coordinator` runs it — spawning in batches, heartbeats, coordination cycles, crashes and
//! restarts — deciding with the `roster` (its book of agents and pending messages); `faults`
//! kills and pauses agents on schedule; `scaling` grows and shrinks a running fleet (`scale`,
//! `autoscale`: task cycles, the backlog, scale-downs and their check); `process` is the operating-system side (which program,
//! starting, signals, reaping checks, resource sampling). The coordinator talks to agents only
//! through `transport::Transport`, so a second transport is a new file there. `worker` hands a
//! stage's joining agents to `planrun worker`s on other hosts and starts a worker's share.

pub mod agent;
mod config;
mod coordinator;
mod faults;
mod process;
pub mod protocol;
mod roster;
mod scaling;
pub mod transport;
pub mod worker;

#[cfg(test)]
mod tests;

pub use config::{Autoscale, Fleet, FleetFault, LoadStep, Misbehave, Restart, ScaleStep};
pub use coordinator::Coordinator;
pub use process::{AgentProgram, LEAN_AGENT};
