//! `ws`: WebSocket load — the driver behind the dashboard test of the 1000-agent suite.
//! `connections` clients open at `connect_rate`, each sending messages at `send_rate` (a
//! sequence number and send time the server echoes back, so every message has a latency,
//! which k6 and Artillery do not record), taking what the server pushes (metrics updates,
//! timed from the server's send time), pinging, and reconnecting with back-off after the
//! server closes them; the share of dropped connections that recovered, and the server's
//! memory per connection, are measured too.
//!
//! The parts: `config` is the stage as a plan writes it (`Ws`) and its checks; `conn` is one
//! client's life (connect, session, reconnect); `stage` runs an iteration — the connect
//! schedule, the shared tally, memory per connection, the end-of-stage summary and outcome.

pub mod config;
mod conn;
mod stage;

pub use config::Ws;
