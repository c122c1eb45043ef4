//! What the runner watches in a stage's events as they are emitted: the live `abort = true`
//! criteria (`abort`), and `warning` events, which go to the person watching the moment they
//! happen (a driver cannot print: it only emits); and it hands every event to whoever else
//! watches the run (the live dashboard).

use std::sync::Arc;

use super::abort::AbortWatch;
use super::progress::Progress;
use crate::events::{Event, Observer};

pub struct StageWatch {
    pub key: String,
    pub abort: Option<Arc<AbortWatch>>,
    pub progress: Arc<Progress>,
    /// Whoever else watches the run (the live dashboard).
    pub extra: Option<Arc<dyn Observer>>,
}

impl Observer for StageWatch {
    fn observe(&self, ev: &Event) {
        if let Some(a) = &self.abort {
            a.observe(ev);
        }
        if let Some(x) = &self.extra {
            x.observe(ev);
        }
        if ev.kind == "warning" {
            let what = ev.error.as_deref().or(ev.name.as_deref()).unwrap_or("(no message)");
            self.progress.line(&format!("warning: {}: {what}", self.key));
        }
    }
}
