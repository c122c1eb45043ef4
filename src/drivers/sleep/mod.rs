//! `sleep`: wait for the stage's `duration` (scaled by the run clock). Useful for soak gaps,
//! warm-up pauses and for exercising the runner itself. Touches nothing real, so it is allowed
//! under the virtual clock. The whole driver is in `config`.

pub mod config;

pub use config::Sleep;
