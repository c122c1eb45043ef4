//! What the dashboard shows, kept fresh. Two sources, one shape: the charts of a running run
//! come from `LiveCharts` (fed every event by the runner; cheap, so they are new every second),
//! and everything else — criteria with their values, stages, metrics, the verdict so far — from
//! the analysis of what the run has written (`events.jsonl` is flushed at least every second,
//! and the analysis reads it when there is no Parquet yet), which is exactly what `planrun
//! analyze` would say at that moment. The analysis costs time in proportion to the events so
//! far, so while a run goes it is redone only when at least 20 times its last duration (and 5 s)
//! have passed: watching takes at most about a twentieth of the machine from the run. A
//! finished run is analyzed again only when its files change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::analyze::charts::LiveCharts;
use crate::analyze::report_data::Report;
use crate::analyze::{AnalyzeOptions, analyze, load_run};

/// What the page, `/api/stats` and `/metrics` get.
pub struct Snapshot {
    pub report: Arc<Report>,
    /// `Report::page_data`: what the page's script draws.
    pub page_data: String,
    /// The whole report tree (`report.json`'s shape), its charts the live ones.
    pub stats: String,
    /// The live charts' data, when the run is live.
    pub live: Option<serde_json::Value>,
}

pub struct Fresh {
    dir: Arc<Mutex<Option<PathBuf>>>,
    live: Option<Arc<LiveCharts>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    report: Option<Arc<Report>>,
    took: Duration,
    at: Option<Instant>,
    /// The run directory's files as they were at the last analysis (length, modified).
    files: Vec<(u64, Option<SystemTime>)>,
    error: Option<String>,
    /// The snapshot last built, and what it was built from (analysis time, live events).
    built: Option<(Arc<Snapshot>, Option<Instant>, u64)>,
    /// The run has ended: its charts are the analysis's, as report.json has them.
    finished: bool,
}

fn files(dir: &Path) -> Vec<(u64, Option<SystemTime>)> {
    ["events.jsonl", "events.parquet", "manifest.json"]
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).map(|m| (m.len(), m.modified().ok())).unwrap_or((0, None)))
        .collect()
}

impl Fresh {
    pub fn new(dir: Arc<Mutex<Option<PathBuf>>>, live: Option<Arc<LiveCharts>>) -> Fresh {
        Fresh { dir, live, state: Mutex::new(State::default()) }
    }

    /// The run has ended: analyze it once more at the next `get`, and show the analysis's
    /// charts from then on (what report.json has).
    pub fn finish(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.at = None;
        st.finished = true;
    }

    fn dir(&self) -> Option<PathBuf> {
        self.dir.lock().ok().and_then(|d| d.clone())
    }

    /// The snapshot, brought up to date first when it is due; or why there is none.
    pub fn get(&self) -> Result<Arc<Snapshot>, String> {
        let Some(dir) = self.dir() else { return Err("the run has not started yet".into()) };
        // A panic in an analysis must not leave the dashboard dead: the state is taken back.
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now_files = files(&dir);
        let due = match st.at {
            None => true,
            Some(at) if self.live.is_some() && !st.finished => {
                at.elapsed() >= (st.took * 20).max(Duration::from_secs(5))
            }
            // A directory another process is still writing is analyzed as sparingly; a
            // finished one only when its files change.
            Some(at) => now_files != st.files && at.elapsed() >= (st.took * 20).max(Duration::from_secs(1)),
        };
        if due {
            let started = Instant::now();
            st.at = Some(started);
            st.files = now_files;
            match std::panic::catch_unwind(|| compute(&dir)) {
                Ok(Ok(r)) => {
                    st.report = Some(Arc::new(r));
                    st.error = None;
                }
                Ok(Err(e)) => st.error = Some(e),
                Err(_) => st.error = Some("the analysis of the run so far failed (a panic); it is tried again".into()),
            }
            st.took = started.elapsed();
        }
        let Some(report) = st.report.clone() else {
            return Err(st.error.clone().unwrap_or_else(|| "no events yet".into()));
        };
        let live_events = self.live.as_ref().map_or(0, |l| l.events());
        if let Some((s, at, n)) = &st.built
            && *at == st.at
            && *n == live_events
        {
            return Ok(Arc::clone(s));
        }
        let live = self.live.as_deref().filter(|_| !st.finished);
        let s = Arc::new(build(report, live)?);
        st.built = Some((Arc::clone(&s), st.at, live_events));
        Ok(s)
    }
}

fn compute(dir: &Path) -> Result<Report, String> {
    let run = load_run(dir).map_err(|e| e.to_string())?;
    analyze(&run, &AnalyzeOptions::default()).map_err(|e| e.to_string())
}

fn build(report: Arc<Report>, live: Option<&LiveCharts>) -> Result<Snapshot, String> {
    let charts = match live {
        Some(l) => serde_json::to_value(l.charts()).map_err(|e| e.to_string())?,
        None => serde_json::to_value(&report.charts).map_err(|e| e.to_string())?,
    };
    let page = report.page_data(Some(charts.clone()));
    let mut tree = serde_json::to_value(&*report).map_err(|e| e.to_string())?;
    tree["charts"] = charts.clone();
    Ok(Snapshot {
        page_data: serde_json::to_string(&page).map_err(|e| e.to_string())?,
        stats: serde_json::to_string(&tree).map_err(|e| e.to_string())?,
        live: live.map(|_| charts),
        report,
    })
}
