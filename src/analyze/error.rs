//! What can go wrong reading and analyzing a run: a missing or unreadable run directory, a
//! manifest or plan that does not load, events that do not decode, an unreadable analysis
//! directory, and polars failures. Each message names the path and what was wrong.

use std::path::PathBuf;

use polars::prelude::PolarsError;

use crate::diag::Diags;
use crate::events::parquet::ConvertError;
use crate::rundir::RunDirError;
use crate::rundir::layout::{EVENTS_JSONL, EVENTS_PARQUET, MANIFEST};

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error("{}: no such run directory", .0.display())]
    NoRunDir(PathBuf),
    /// The manifest's own message names the file and the reason.
    #[error(transparent)]
    Manifest(#[from] RunDirError),
    #[error("{}: {diags}", path.display())]
    Plan { path: PathBuf, diags: Diags },
    #[error("{}: unreadable: {source}", path.display())]
    Parquet { path: PathBuf, source: PolarsError },
    #[error(transparent)]
    Jsonl(#[from] ConvertError),
    #[error("{}: no {EVENTS_PARQUET} or {EVENTS_JSONL}", .0.display())]
    NoEvents(PathBuf),
    #[error("{}: {source}", path.display())]
    ReadDir { path: PathBuf, source: std::io::Error },
    #[error("{}: not a run directory and holds none (no {MANIFEST})", .0.display())]
    NotARun(PathBuf),
    #[error("cannot read analysis dir {}: {source}", path.display())]
    AnalysisDir { path: PathBuf, source: std::io::Error },
    #[error("analysis failed: {0}")]
    Polars(#[from] PolarsError),
}
