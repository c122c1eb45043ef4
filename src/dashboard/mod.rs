//! The dashboard: a run directory — finished, or still being written by a run — served to a
//! browser as it goes. The page is report.html itself, rendered in live mode (the same template,
//! chart script and data shape, so the report and the dashboard cannot drift apart), with its
//! data pushed as Server-Sent Events; `/api/stats` is the same data as JSON for polling clients
//! and `/metrics` a Prometheus text view of it. The data is the analysis of what the run has
//! written so far (`snapshot`), recomputed at most every second and never more often than its
//! own cost allows; `server` holds the routes. `planrun run --dashboard` and `planrun dashboard
//! RUN_DIR` start it.

mod server;
mod snapshot;

pub use server::{Dashboard, serve};
