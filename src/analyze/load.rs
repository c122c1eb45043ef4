//! Reading a run directory: its manifest, the resolved plan, and the events — the Parquet by lazy
//! scan, or the JSONL when the Parquet is missing or older (an interrupted or crashed run), with a
//! note saying so. Also finds the run directories under a path. It does not compute anything.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::error::AnalyzeError;
use super::frame;
use super::report_data::SourceInfo;
use crate::plan::{LoadOptions, Plan};
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
    let input = |m: String| AnalyzeError::Input(m);
    if !dir.is_dir() {
        return Err(input(format!("{}: no such run directory", dir.display())));
    }
    let manifest = RunDir::at(dir).read_manifest().map_err(|e| input(e.to_string()))?;
    let (plan, _) = crate::plan::load_file(&dir.join("plan.resolved.toml"), &LoadOptions::default())
        .map_err(|d| input(format!("{}: {}", dir.join("plan.resolved.toml").display(), d)))?;
    let pq = dir.join("events.parquet");
    let jl = dir.join("events.jsonl");
    let fresh = pq.exists() && (!jl.exists() || mtime(&pq) >= mtime(&jl));
    let (events, source) = if fresh {
        let path = PlRefPath::new(pq.to_string_lossy().as_ref());
        let lf = LazyFrame::scan_parquet(path, ScanArgsParquet::default())
            .map_err(|e| input(format!("{}: unreadable: {e}", pq.display())))?;
        let n =
            lf.clone().select([len()]).collect().map_err(|e| input(format!("{}: unreadable: {e}", pq.display())))?;
        let events = frame::scalar(&n, "len").unwrap_or(0.0) as u64;
        (lf, SourceInfo { file: "events.parquet".into(), events, note: None })
    } else if jl.exists() {
        let why = if pq.exists() { "events.parquet is older than events.jsonl" } else { "events.parquet is missing" };
        let (df, report) = crate::events::parquet::jsonl_to_frame(&jl).map_err(|e| input(e.to_string()))?;
        let mut note = format!("{why} (an interrupted or crashed run?); read events.jsonl instead");
        if report.torn_tail_bytes > 0 {
            note.push_str(&format!("; skipped a torn last line of {} bytes", report.torn_tail_bytes));
        }
        (df.lazy(), SourceInfo { file: "events.jsonl".into(), events: report.events, note: Some(note) })
    } else {
        return Err(input(format!("{}: no events.parquet or events.jsonl", dir.display())));
    };
    Ok(Run { dir: dir.to_path_buf(), manifest, plan, events, source })
}

/// The run directories under `path`: itself if it is one, else its children that are, newest last.
pub fn find_runs(path: &Path) -> Result<Vec<PathBuf>, AnalyzeError> {
    if path.join("manifest.json").exists() {
        return Ok(vec![path.to_path_buf()]);
    }
    let rd = std::fs::read_dir(path).map_err(|e| AnalyzeError::Input(format!("{}: {e}", path.display())))?;
    let mut runs: Vec<(String, PathBuf)> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("manifest.json").exists())
        .filter_map(|p| Some((RunDir::at(&p).read_manifest().ok()?.started_at, p)))
        .collect();
    if runs.is_empty() {
        return Err(AnalyzeError::Input(format!(
            "{}: not a run directory and holds none (no manifest.json)",
            path.display()
        )));
    }
    runs.sort();
    Ok(runs.into_iter().map(|(_, p)| p).collect())
}
