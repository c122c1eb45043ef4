//! `http`: HTTP load — the driver behind the Locust-style fleet suite and the multi-modal
//! stress plan. Users in a closed model (`users`, `spawn_rate`, `wait`, `shape`) or arrivals in
//! an open one (`arrival_rate`, `arrival`, `max_in_flight`, latency from the intended send
//! time) run weighted, tagged tasks against one or more hosts, with checks, extraction and
//! sequences; one `http` event per request (or per-second summaries), stalls, and the
//! target's CPU and memory beside them.
//!
//! The parts: `config` is the stage as a plan writes it (`Http`) and its checks; `task`
//! compiles tasks into steps (templates from `template`, checks, extraction) and picks them;
//! `target` opens connections (TCP, rustls, hyper's HTTP/1.1 and HTTP/2 handshakes);
//! `exchange` sends one request and reads its response within its limits; `outcome` names
//! what a request came to; `record` writes events; `stage` is what users share; `closed` and
//! `open` are the two load models; `demo` starts `serve-demo` for a stage that asks; `driver`
//! runs an iteration and decides its outcome; `remote` spreads a stage over workers on other
//! hosts (`workers = { count, redis }`).

mod closed;
pub mod config;
pub mod demo;
mod driver;
mod exchange;
mod open;
pub mod outcome;
mod record;
mod remote;
mod stage;
pub mod target;
mod task;
pub mod template;

pub use config::Http;
