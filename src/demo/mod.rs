//! `planrun serve-demo`: a built-in stand-in for an agent fleet, so the HTTP plans run on a
//! fresh machine with no outside service, and tests and benchmarks have a real HTTP server to
//! load. It knows nothing of plans or runs; the CLI starts it.
//!
//! `app` holds the endpoints (the fleet suite's services and the stress framework's five),
//! `behaviour` the knobs every response passes through: a latency distribution per endpoint
//! class, an error rate, and freezes (the `/admin/stall` switch, or a periodic one); `ws` the
//! dashboard side: a WebSocket that echoes and pushes agent metrics, a polling endpoint, and a
//! switch that drops every WebSocket once.

mod app;
mod behaviour;
mod ws;

pub use app::{DemoArgs, raise_open_files, serve};
pub use behaviour::Behaviour;
