//! `llm`: orchestrations of LLM agents — the driver behind the KSI campaign, where each call
//! takes seconds, agents time out and fail, and costs add up. Every call, retry, breaker
//! transition, failover, fault and round is an event. The files, along the data:
//!
//! - `config`: the stage's plan fields; `driver`: `impl Driver` (checks, describe, run).
//! - `orchestration`: one run of the stage — rounds of its pattern (`gather`, `sequential`,
//!   `rounds`), checkpoints, the money events at the end and the verdict (`tally`: the
//!   `min_success` rule). `roster`: the agents, terminations and who answers which prompt;
//!   `prompts`: the templates; `faults`: the plan's faults, in force and fired.
//! - `call`: the call path — cache, breaker, budget reservation, retries and failover — for one
//!   prompt, with `resilience` (backoff, circuit breaker) and `events` (every row it writes).
//! - `provider`: the seam — the `Provider` trait, `Reply`, `CallError` — with two
//!   implementations, `simulated` and `openai` (its `Retry-After` read by `retry_after`), and
//!   `testkit`'s scripted provider for the unit tests.

mod call;
pub mod config;
mod driver;
mod events;
mod faults;
mod openai;
mod orchestration;
mod prompts;
pub mod provider;
pub mod resilience;
mod retry_after;
mod roster;
mod simulated;
mod tally;
#[cfg(test)]
mod testkit;

pub use config::LlmCfg as Llm;
pub use provider::{CallError, Provider, Reply};
