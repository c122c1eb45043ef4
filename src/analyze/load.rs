//! Reading a run directory: its manifest, the resolved plan, and the events — the Parquet by lazy
//! scan, or the JSONL when the Parquet is missing or older (an interrupted or crashed run), with a
//! note saying so. Also finds the run directories under a path. It does not compute anything.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::error::AnalyzeError;
use super::frame;
use super::report_data::SourceInfo;
use crate::plan::{LoadOptions, Plan};
use crate::rundir::layout::{EVENTS_JSONL, EVENTS_PARQUET};
use crate::rundir::{Manifest, RunDir};

/// A run directory, loaded.
pub struct Run {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub plan: Plan,
    pub events: LazyFrame,
    pub source: SourceInfo,
}

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Load a run directory.
pub fn load_run(dir: &Path) -> Result<Run, AnalyzeError> {
    if !dir.is_dir() {
        return Err(AnalyzeError::NoRunDir(dir.to_path_buf()));
    }
    let rd = RunDir::at(dir);
    let manifest = rd.read_manifest()?;
    let plan_file = rd.plan_resolved();
    let (plan, _) = crate::plan::load_file(&plan_file, &LoadOptions::default())
        .map_err(|diags| AnalyzeError::Plan { path: plan_file.clone(), diags })?;
    let pq = rd.events_parquet();
    let jl = rd.events_jsonl();
    let fresh = pq.exists() && (!jl.exists() || mtime(&pq) >= mtime(&jl));
    let (events, source) = if fresh {
        let path = PlRefPath::new(pq.to_string_lossy().as_ref());
        let unreadable = |source| AnalyzeError::Parquet { path: pq.clone(), source };
        let lf = LazyFrame::scan_parquet(path, ScanArgsParquet::default()).map_err(unreadable)?;
        let n = lf.clone().select([len()]).collect().map_err(unreadable)?;
        let events = frame::scalar(&n, "len").unwrap_or(0.0) as u64;
        (lf, SourceInfo { file: EVENTS_PARQUET.into(), events, note: None, recording: Vec::new() })
    } else if jl.exists() {
        let why = if pq.exists() {
            format!("{EVENTS_PARQUET} is older than {EVENTS_JSONL}")
        } else {
            format!("{EVENTS_PARQUET} is missing")
        };
        let (df, report) = crate::events::parquet::jsonl_to_frame(&jl)?;
        let mut note = format!("{why} (an interrupted or crashed run?); read {EVENTS_JSONL} instead");
        if report.torn_tail_bytes > 0 {
            note.push_str(&format!("; skipped a torn last line of {} bytes", report.torn_tail_bytes));
        }
        (
            df.lazy(),
            SourceInfo { file: EVENTS_JSONL.into(), events: report.events, note: Some(note), recording: Vec::new() },
        )
    } else {
        return Err(AnalyzeError::NoEvents(dir.to_path_buf()));
    };
    Ok(Run { dir: dir.to_path_buf(), manifest, plan, events, source })
}

/// The run directories under `path`: itself if it is one, else its children that are, newest last.
pub fn find_runs(path: &Path) -> Result<Vec<PathBuf>, AnalyzeError> {
    if RunDir::is_run(path) {
        return Ok(vec![path.to_path_buf()]);
    }
    let rd = std::fs::read_dir(path).map_err(|source| AnalyzeError::ReadDir { path: path.to_path_buf(), source })?;
    let mut runs: Vec<(String, PathBuf)> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| RunDir::is_run(p))
        .filter_map(|p| Some((RunDir::at(&p).read_manifest().ok()?.started_at, p)))
        .collect();
    if runs.is_empty() {
        return Err(AnalyzeError::NotARun(path.to_path_buf()));
    }
    runs.sort();
    Ok(runs.into_iter().map(|(_, p)| p).collect())
}
