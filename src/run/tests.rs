//! The runner's step loop, tested in-process through the `Driver` seam: plans whose stages run
//! a scripted driver (each iteration returns the next outcome of its script, optionally after a
//! wait on the run clock), on the virtual clock, so timing is exact and nothing real runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Deserialize;

use super::progress::Mode;
use super::{RunOptions, start};
use crate::drivers::{BoxFuture, Driver, Outcome, StageContext, Status};
use crate::plan::de::{DeError, from_node};
use crate::plan::load::{Catalog, Syntax, load_str};
use crate::plan::node::Node;
use crate::plan::{ClockKind, Dur, StageDriver};
use crate::rundir::{Manifest, RunDir, RunStatus};

#[derive(Debug, Deserialize)]
struct Script {
    /// One outcome per iteration (`passed`, `failed`, `error`), the last repeated.
    outcomes: Vec<String>,
    #[serde(default)]
    wait: Option<Dur>,
    #[serde(skip)]
    calls: AtomicUsize,
}

impl StageDriver for Script {
    fn config(&self) -> serde_json::Value {
        serde_json::json!({ "outcomes": self.outcomes })
    }

    fn describe(&self) -> String {
        "script".into()
    }

    fn simulated(&self) -> bool {
        true
    }
}

impl Driver for Script {
    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if let Some(w) = self.wait {
                tokio::select! {
                    _ = ctx.clock.sleep(w.0) => {}
                    _ = ctx.cancel.cancelled() => return Outcome::with(Status::Interrupted, "interrupted"),
                }
            }
            ctx.events.emit(ctx.events.event("script").ok(true).value(n as f64, "call"));
            match self.outcomes.get(n).or(self.outcomes.last()).map(String::as_str) {
                Some("failed") => Outcome::with(Status::Failed, format!("call {n} failed")),
                Some("error") => Outcome::with(Status::Error, format!("call {n} could not run")),
                _ => Outcome::passed(),
            }
        })
    }
}

struct Scripts;

impl Catalog for Scripts {
    type Driver = Arc<dyn Driver>;
    fn names(&self) -> Vec<&'static str> {
        vec!["script"]
    }

    fn parse(&self, name: &str, fields: &Node) -> Option<Result<Arc<dyn Driver>, DeError>> {
        (name == "script").then(|| from_node::<Script>(fields).map(|s| Arc::new(s) as Arc<dyn Driver>))
    }
}

/// Run `stages` (TOML `[[phase.stage]]` bodies, one phase each unless they say `phase`) and
/// return the manifest it left.
fn run(stages: &str) -> (RunStatus, Manifest, tempfile::TempDir) {
    let text = format!("[plan]\nname = \"t\"\nclock = \"virtual\"\n{stages}");
    let plan = load_str("t.toml", &text, Syntax::Toml, &Default::default(), &Scripts)
        .unwrap_or_else(|d| panic!("{}", d.render(false)));
    let out = tempfile::tempdir().unwrap();
    let opts = RunOptions {
        out: out.path().to_path_buf(),
        time_scale: 1.0,
        seed: Some(1),
        clock: Some(ClockKind::Virtual),
        progress: Mode::Quiet,
        args: vec![],
        suspend_after: None,
        tags: Default::default(),
        announce: None,
        watch: None,
    };
    let r = start(plan, std::path::Path::new("t.toml"), &text, &opts).unwrap();
    let m = RunDir::at(&r.dir).read_manifest().unwrap();
    (r.status, m, out)
}

fn statuses(m: &Manifest) -> Vec<String> {
    m.stages.iter().map(|s| format!("{}:{}", s.stage, s.status)).collect()
}

const PHASE: &str = "[[phase]]\nname = \"p\"\n";

fn stage(name: &str, fields: &str) -> String {
    format!("[[phase.stage]]\nname = \"{name}\"\ndriver = \"script\"\n{fields}\n")
}

#[test]
fn a_failed_stage_skips_the_rest_unless_it_may_fail() {
    let plan = format!(
        "{PHASE}{}{}{}",
        stage("a", "outcomes = [\"passed\"]"),
        stage("b", "outcomes = [\"failed\"]"),
        stage("c", "outcomes = [\"passed\"]")
    );
    let (status, m, _d) = run(&plan);
    assert_eq!(status, RunStatus::Failed);
    assert_eq!(statuses(&m), ["a:passed", "b:failed", "c:skipped"]);

    let plan = format!(
        "{PHASE}{}{}{}",
        stage("a", "outcomes = [\"passed\"]"),
        stage("b", "outcomes = [\"failed\"]\ncontinue_on_failure = true"),
        stage("c", "outcomes = [\"passed\"]")
    );
    let (status, m, _d) = run(&plan);
    assert_eq!(status, RunStatus::Failed, "a failed stage fails the run even when the plan goes on");
    assert_eq!(statuses(&m), ["a:passed", "b:failed", "c:passed"]);
}

#[test]
fn stages_of_one_parallel_group_are_one_step() {
    // Both wait 10 s of plan time; together they take 10 s, not 20.
    let plan = format!(
        "{PHASE}{}{}{}",
        stage("a", "outcomes = [\"passed\"]\nwait = \"10s\"\nparallel = \"g\""),
        stage("b", "outcomes = [\"passed\"]\nwait = \"10s\"\nparallel = \"g\""),
        stage("c", "outcomes = [\"passed\"]")
    );
    let (status, m, _d) = run(&plan);
    assert_eq!(status, RunStatus::Completed);
    let (a, b, c) = (&m.stages[0], &m.stages[1], &m.stages[2]);
    assert_eq!(a.t_start_ms, b.t_start_ms);
    let c_start = c.t_start_ms.unwrap();
    assert!((c_start - a.t_start_ms.unwrap() - 10_000.0).abs() < 1.0, "c started at {c_start}");
    assert_eq!(m.checkpoint.next_step, 2, "two steps: the group, then c");
}

#[test]
fn repeats_stop_at_a_failure_unless_keep_going() {
    let (_, m, _d) =
        run(&format!("{PHASE}{}", stage("a", "outcomes = [\"passed\", \"failed\", \"passed\"]\nrepeat = 3")));
    assert_eq!(statuses(&m), ["a:failed"]);
    assert_eq!(m.stages[0].events, 4, "start, two calls, end");

    let (status, m, _d) = run(&format!(
        "{PHASE}{}",
        stage("a", "outcomes = [\"passed\", \"failed\", \"passed\"]\nrepeat = 3\nkeep_going = true")
    ));
    assert_eq!(status, RunStatus::Completed);
    assert_eq!(statuses(&m), ["a:passed"]);
    assert_eq!(m.stages[0].message.as_deref(), Some("1 of 3 iterations failed (keep_going)"));

    let (_, m, _d) = run(&format!("{PHASE}{}", stage("a", "outcomes = [\"failed\"]\nrepeat = 3\nkeep_going = true")));
    assert_eq!(statuses(&m), ["a:failed"]);
}

#[test]
fn a_stage_past_its_timeout_is_stopped_and_timed_out() {
    let (status, m, _d) =
        run(&format!("{PHASE}{}", stage("a", "outcomes = [\"passed\"]\nwait = \"1h\"\ntimeout = \"5s\"")));
    assert_eq!(status, RunStatus::Failed);
    assert_eq!(statuses(&m), ["a:timed_out"]);
    let took = m.stages[0].t_end_ms.unwrap() - m.stages[0].t_start_ms.unwrap();
    assert!((took - 5_000.0).abs() < 1.0, "{took}");
}

#[test]
fn an_errored_step_keeps_the_checkpoint_before_it() {
    let plan = format!(
        "{PHASE}{}{}{}",
        stage("a", "outcomes = [\"passed\"]"),
        stage("b", "outcomes = [\"error\"]"),
        stage("c", "outcomes = [\"passed\"]")
    );
    let (status, m, _d) = run(&plan);
    assert_eq!(status, RunStatus::Error);
    assert_eq!(statuses(&m), ["a:passed", "b:error", "c:skipped"]);
    assert_eq!(m.checkpoint.next_step, 1, "resume redoes b");
}

#[test]
fn steps_after_an_errored_one_do_not_move_the_checkpoint_past_it() {
    let plan = format!(
        "{PHASE}{}{}{}",
        stage("a", "outcomes = [\"passed\"]"),
        stage("b", "outcomes = [\"error\"]\ncontinue_on_failure = true"),
        stage("c", "outcomes = [\"passed\"]")
    );
    let (status, m, _d) = run(&plan);
    assert_eq!(status, RunStatus::Error);
    assert_eq!(statuses(&m), ["a:passed", "b:error", "c:passed"]);
    assert_eq!(m.checkpoint.next_step, 1, "resume redoes b (and c after it)");
}
