//! What can go wrong reading and analyzing a run: a missing or unreadable run directory, events
//! that do not decode, and polars failures. Each message names the path and what was wrong.

use polars::prelude::PolarsError;

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// No such run, unreadable events: the path and the reason.
    #[error("{0}")]
    Input(String),
    #[error("analysis failed: {0}")]
    Polars(#[from] PolarsError),
}
