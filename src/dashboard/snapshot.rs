//! What the dashboard shows: the analysis of a run directory as it stands, kept fresh. A
//! running run's events are in `events.jsonl` (flushed at least every second), which the
//! analysis reads when there is no Parquet yet, so a snapshot is exactly what `planrun analyze`
//! would say at that moment. Recomputing costs time proportional to the events so far, so the
//! next one waits at least four times as long as the last took (and at least `every`): on a
//! busy run the dashboard gets less fresh rather than slowing the run down.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::analyze::report_data::Report;
use crate::analyze::{AnalyzeOptions, analyze, load_run};

/// One analysis, and the JSON the page and `/api/stats` get.
pub struct Snapshot {
    pub report: Report,
    /// `{charts, criteria, stages, verdict, names, budget_usd}`: what the page's script draws.
    pub page_data: String,
    /// The whole report tree (`report.json`'s shape).
    pub stats: String,
    pub took: Duration,
}

/// The latest snapshot of one run directory.
pub struct Fresh {
    dir: Arc<Mutex<Option<PathBuf>>>,
    every: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    last: Option<Arc<Snapshot>>,
    at: Option<Instant>,
    error: Option<String>,
}

impl Fresh {
    /// A dashboard over `dir`, which may be known only later (a run not started yet).
    pub fn new(dir: Arc<Mutex<Option<PathBuf>>>, every: Duration) -> Fresh {
        Fresh { dir, every, state: Mutex::new(State::default()) }
    }

    pub fn dir(&self) -> Option<PathBuf> {
        self.dir.lock().ok().and_then(|d| d.clone())
    }

    /// The snapshot, recomputed first if it is due; or why there is none.
    pub fn get(&self) -> Result<Arc<Snapshot>, String> {
        let Some(dir) = self.dir() else { return Err("the run has not started yet".into()) };
        let mut st = self.state.lock().map_err(|_| "the dashboard's state is poisoned".to_string())?;
        let due = match (&st.last, st.at) {
            (Some(s), Some(at)) => at.elapsed() >= self.every.max(s.took * 4),
            (None, Some(at)) => at.elapsed() >= self.every,
            _ => true,
        };
        if due {
            st.at = Some(Instant::now());
            match compute(&dir) {
                Ok(s) => {
                    st.last = Some(Arc::new(s));
                    st.error = None;
                }
                Err(e) => st.error = Some(e),
            }
        }
        match (&st.last, &st.error) {
            (Some(s), _) => Ok(Arc::clone(s)),
            (None, Some(e)) => Err(e.clone()),
            (None, None) => Err("no events yet".into()),
        }
    }
}

fn compute(dir: &Path) -> Result<Snapshot, String> {
    let started = Instant::now();
    let run = load_run(dir).map_err(|e| e.to_string())?;
    let report = analyze(&run, &AnalyzeOptions::default()).map_err(|e| e.to_string())?;
    let page = serde_json::json!({
        "charts": &report.charts,
        "criteria": &report.criteria,
        "stages": &report.stages,
        "verdict": &report.verdict,
        "names": &report.metrics.names,
        "budget_usd": report.run.budget_usd,
    });
    let page_data = serde_json::to_string(&page).map_err(|e| e.to_string())?;
    let stats = serde_json::to_string(&report).map_err(|e| e.to_string())?;
    Ok(Snapshot { report, page_data, stats, took: started.elapsed() })
}
