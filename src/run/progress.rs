//! What a person watching sees. On a terminal: indicatif bars (plan → running stages, with event
//! counts and ETA). Piped: plain timestamped lines, nothing that redraws. `--quiet`: nothing.
//! Every line also goes to the run's `run.log`, whatever the mode.

use std::collections::HashMap;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::events::Emitter;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Bars,
    Lines,
    Quiet,
}

impl Mode {
    /// Bars on a terminal, lines otherwise; `verbose` asks for lines (every stage start and end,
    /// timestamped) even on a terminal.
    pub fn detect(quiet: bool, verbose: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() && !verbose {
            Mode::Bars
        } else {
            Mode::Lines
        }
    }
}

pub struct Progress {
    mode: Mode,
    log: Mutex<Option<File>>,
    multi: MultiProgress,
    plan_bar: ProgressBar,
    stages: Mutex<HashMap<String, (ProgressBar, Emitter)>>,
}

fn stamp() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

impl Progress {
    pub fn new(mode: Mode, run_log: &Path, total_stages: u64, plan_name: &str) -> Arc<Progress> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(run_log).ok();
        let multi = MultiProgress::with_draw_target(match mode {
            Mode::Bars => ProgressDrawTarget::stderr_with_hz(4),
            _ => ProgressDrawTarget::hidden(),
        });
        let plan_bar = multi.add(ProgressBar::new(total_stages));
        plan_bar.set_style(
            ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {pos}/{len} stages  {elapsed_precise}  ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        plan_bar.set_prefix(plan_name.to_string());
        Arc::new(Progress { mode, log: Mutex::new(log), multi, plan_bar, stages: Mutex::new(HashMap::new()) })
    }

    /// A timestamped line for run.log, and for stderr unless quiet.
    pub fn line(&self, msg: &str) {
        let text = format!("[{}] {msg}", stamp());
        if let Ok(mut g) = self.log.lock() {
            if let Some(f) = g.as_mut() {
                let _ = writeln!(f, "{text}");
            }
        }
        match self.mode {
            Mode::Bars => self.multi.suspend(|| eprintln!("{text}")),
            Mode::Lines => eprintln!("{text}"),
            Mode::Quiet => {}
        }
    }

    pub fn stage_started(&self, key: &str, emitter: &Emitter, expected: Option<Duration>) {
        let eta = expected.map(|d| format!(" (~{})", crate::plan::Dur(d))).unwrap_or_default();
        self.line(&format!("stage {key} started{eta}"));
        if self.mode != Mode::Bars {
            return;
        }
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("  {spinner} {prefix} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(key.to_string());
        if let Ok(mut g) = self.stages.lock() {
            g.insert(key.to_string(), (bar, emitter.clone()));
        }
    }

    pub fn stage_finished(&self, key: &str, status: &str, message: Option<&str>, events: u64) {
        let detail = message.map(|m| format!(": {m}")).unwrap_or_default();
        if let Ok(mut g) = self.stages.lock() {
            if let Some((bar, _)) = g.remove(key) {
                bar.finish_and_clear();
            }
        }
        self.plan_bar.inc(1);
        self.line(&format!("stage {key} {status} ({events} events){detail}"));
    }

    pub fn skip(&self, n: u64) {
        self.plan_bar.inc(n);
    }

    /// Refresh the running stages' event counts; called a few times a second.
    pub fn tick(&self) {
        if self.mode != Mode::Bars {
            return;
        }
        if let Ok(g) = self.stages.lock() {
            for (bar, em) in g.values() {
                bar.set_message(format!("{} events", em.count()));
                bar.tick();
            }
        }
    }

    pub fn finish(&self) {
        self.plan_bar.finish_and_clear();
        let _ = self.multi.clear();
    }
}
