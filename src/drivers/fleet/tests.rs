//! The coordinator's logic through the in-memory transport: cycles, timeouts, crashes, protocol
//! errors, forged answers, a lost transport, the fallback warning. Agents' protocol side is
//! played by `MemoryAgent` tasks; their processes are real (`sleep`, `sh`), so spawning, exits
//! and teardown are the real thing. Time is real but short, and every wait has a bound.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::coordinator::Coordinator;
use super::process::AgentProgram;
use super::transport::{MemoryAgent, MemoryTransport};
use super::{Fleet, LEAN_AGENT};
use crate::clock::Clock;
use crate::drivers::{Ledger, Outcome, StageCheckpoint, StageContext, Status};
use crate::events::sink::{EventSink, Position, SinkHandle};
use crate::events::{Emitter, Event, Observer};

#[derive(Default)]
struct Seen(Mutex<Vec<Event>>);

impl Observer for Seen {
    fn observe(&self, ev: &Event) {
        self.0.lock().unwrap().push(ev.clone());
    }
}

struct Stage {
    ctx: StageContext,
    seen: Arc<Seen>,
    _sink: SinkHandle,
    _dir: tempfile::TempDir,
}

fn stage() -> Stage {
    let dir = tempfile::tempdir().unwrap();
    let (sink, handle) = EventSink::open(&dir.path().join("events.jsonl"), Position::default()).unwrap();
    let clock = Clock::new(1.0, 0.0, false);
    let seen = Arc::new(Seen::default());
    let events =
        Emitter::new(sink, clock.clone(), "p", "f", "fleet").with_watch(Some(seen.clone() as Arc<dyn Observer>));
    let ctx = StageContext {
        clock,
        cancel: Default::default(),
        events,
        phase: "p".into(),
        stage: "f".into(),
        duration: None,
        iteration: 0,
        seed: 7,
        run_dir: dir.path().to_path_buf(),
        vars: Default::default(),
        ledger: Arc::new(Ledger::new(None)),
        checkpoint: StageCheckpoint::default(),
        tags: Default::default(),
    };
    Stage { ctx, seen, _sink: handle, _dir: dir }
}

/// A fleet whose agent processes idle (`sleep`) while `MemoryAgent`s speak for them.
fn fleet(fields: serde_json::Value) -> Fleet {
    let mut v = serde_json::json!({
        "agents": 3, "cycles": 2, "interval": "50ms", "response_timeout": "5s",
        "heartbeat": "100ms", "missed_heartbeats": 50, "command": ["sleep", "30"],
    });
    v.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
    serde_json::from_value(v).unwrap()
}

/// What a simulated agent does with each message meant for it.
#[derive(Clone, Copy)]
enum Act {
    Answer,
    /// Heartbeats, never answers.
    Silent,
    /// Answers twice.
    Twice,
    /// Answers, and also sends something unreadable.
    Garble,
    /// Answers in this other agent's name.
    AnswerAs(&'static str),
}

async fn play(mut agent: MemoryAgent, act: Act) {
    if agent.enrolled().await.is_none() {
        return;
    }
    agent.beat();
    let mut beat = tokio::time::interval(Duration::from_millis(20));
    loop {
        let msg = tokio::select! {
            m = agent.next_message() => match m { Some(m) => m, None => return },
            _ = beat.tick() => { agent.beat(); continue; }
        };
        match act {
            Act::Answer => agent.answer(&msg),
            Act::Silent => {}
            Act::Twice => {
                agent.answer(&msg);
                agent.answer(&msg);
            }
            Act::Garble => {
                agent.answer(&msg);
                agent.garble("invalid response JSON: expected value");
            }
            Act::AnswerAs(other) => agent.answer_as(&msg, other),
        }
    }
}

/// Run `cfg` with `acts` playing the agents they name (unnamed agents say nothing at all).
async fn run(cfg: &Fleet, acts: &[(&str, Act)]) -> (Outcome, Vec<Event>, Arc<MemoryTransport>) {
    run_with(cfg, acts, |_| {}, AgentProgram::for_fleet(cfg).unwrap()).await
}

async fn run_with(
    cfg: &Fleet,
    acts: &[(&str, Act)],
    before: impl FnOnce(&MemoryTransport),
    program: AgentProgram,
) -> (Outcome, Vec<Event>, Arc<MemoryTransport>) {
    let st = stage();
    let (t, rx) = MemoryTransport::create();
    let players: Vec<_> = acts.iter().map(|(id, act)| tokio::spawn(play(t.agent(id), *act))).collect();
    before(&t);
    let c = Coordinator::new(cfg, &st.ctx, t.clone(), rx, program);
    let outcome = tokio::time::timeout(Duration::from_secs(30), c.run()).await.expect("the stage ends");
    players.iter().for_each(|p| p.abort());
    let events = st.seen.0.lock().unwrap().clone();
    (outcome, events, t)
}

fn of<'a>(evs: &'a [Event], kind: &str) -> Vec<&'a Event> {
    evs.iter().filter(|e| e.kind == kind).collect()
}

fn attr(e: &Event, key: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(e.attrs.as_deref().unwrap_or("{}")).unwrap()[key].clone()
}

fn of_agent<'a>(evs: &'a [Event], kind: &str, agent: &str) -> Vec<&'a Event> {
    evs.iter().filter(|e| e.kind == kind && e.agent.as_deref() == Some(agent)).collect()
}

#[tokio::test]
async fn a_cycle_collects_every_answer() {
    let cfg = fleet(serde_json::json!({}));
    let all = [("agent-1", Act::Answer), ("agent-2", Act::Answer), ("agent-3", Act::Answer)];
    let (outcome, evs, t) = run(&cfg, &all).await;
    assert_eq!(outcome, Outcome::passed());
    let spawns = of(&evs, "spawn");
    assert_eq!(spawns.len(), 3);
    assert!(spawns.iter().all(|s| s.ok == Some(true)));
    let cycles = of(&evs, "cycle");
    assert_eq!(cycles.len(), 2);
    for (i, c) in cycles.iter().enumerate() {
        assert_eq!((c.ok, c.value), (Some(true), Some(1.0)), "{c:?}");
        assert_eq!((attr(c, "cycle"), attr(c, "sent"), attr(c, "received")), ((i + 1).into(), 3.into(), 3.into()));
        assert!(c.latency_ms.unwrap() < 5000.0, "the cycle ended when the last answer came, not at the timeout");
    }
    let responses = of(&evs, "response");
    assert_eq!(responses.len(), 6);
    for id in ["agent-1", "agent-2", "agent-3"] {
        let mine = of_agent(&evs, "response", id);
        assert_eq!(mine.len(), 2, "{id}");
        assert!(mine.iter().all(|r| r.ok == Some(true) && r.value == Some((2u64 << 20) as f64)));
    }
    assert!(of(&evs, "protocol_error").is_empty(), "{:?}", of(&evs, "protocol_error"));
    assert_eq!(t.sent().iter().map(|m| m.cycle).collect::<Vec<_>>(), [1, 2]);
    let teardown = of(&evs, "teardown");
    assert_eq!(teardown.len(), 1);
    assert_eq!(teardown[0].ok, Some(true), "{:?}", teardown[0]);
    assert_eq!(attr(teardown[0], "orphans"), 0);
    assert!(t.closed());
}

#[tokio::test]
async fn a_missing_answer_is_a_timeout() {
    let cfg = fleet(serde_json::json!({ "cycles": 1, "response_timeout": "300ms" }));
    let (outcome, evs, _) =
        run(&cfg, &[("agent-1", Act::Answer), ("agent-2", Act::Silent), ("agent-3", Act::Answer)]).await;
    assert_eq!(outcome.status, Status::Passed, "{outcome:?}");
    let silent = of_agent(&evs, "response", "agent-2");
    assert_eq!(silent.len(), 1);
    assert_eq!(
        (silent[0].ok, silent[0].error.as_deref(), silent[0].latency_ms),
        (Some(false), Some("timeout"), Some(300.0))
    );
    assert_eq!(of(&evs, "response").iter().filter(|r| r.ok == Some(true)).count(), 2);
    let cycle = of(&evs, "cycle");
    assert_eq!(cycle.len(), 1);
    assert_eq!(cycle[0].ok, Some(false));
    assert_eq!(cycle[0].value, Some(2.0 / 3.0));
    assert_eq!(cycle[0].latency_ms, Some(300.0));
    assert_eq!(attr(cycle[0], "received"), 2);
}

#[tokio::test]
async fn a_crashed_agent_is_reported_and_left_out_of_cycles() {
    // agent-2's process exits with code 3 at once; it never heartbeats.
    let cfg = fleet(serde_json::json!({
        "agents": 2,
        "command": ["sh", "-c", "[ \"$PLANRUN_AGENT_ID\" = agent-2 ] && exit 3; exec sleep 30"],
    }));
    let (outcome, evs, t) = run(&cfg, &[("agent-1", Act::Answer)]).await;
    assert_eq!(outcome.status, Status::Passed, "{outcome:?}");
    let crashes = of(&evs, "crash");
    assert_eq!(crashes.len(), 1, "{crashes:?}");
    assert_eq!(crashes[0].agent.as_deref(), Some("agent-2"));
    assert_eq!(crashes[0].status, Some(3));
    assert_eq!(crashes[0].error.as_deref(), Some("exited with code 3"));
    assert!(of(&evs, "spawn").iter().all(|s| s.agent.as_deref() == Some("agent-1")), "agent-2 never started");
    assert!(of(&evs, "cycle").iter().all(|c| c.ok == Some(true) && attr(c, "sent") == 1));
    assert!(of_agent(&evs, "response", "agent-2").is_empty());
    assert!(t.sent().iter().all(|m| m.to.is_none()), "no fanout: every message is for every live agent");
    let teardown = of(&evs, "teardown")[0];
    assert_eq!((teardown.ok, attr(teardown, "agents")), (Some(true), 1.into()), "{teardown:?}");
}

#[tokio::test]
async fn protocol_errors_are_counted_not_fatal() {
    let cfg = fleet(serde_json::json!({}));
    let (outcome, evs, _) =
        run(&cfg, &[("agent-1", Act::Twice), ("agent-2", Act::Garble), ("agent-3", Act::Answer)]).await;
    assert_eq!(outcome.status, Status::Passed, "{outcome:?}");
    let errors = of(&evs, "protocol_error");
    let duplicates: Vec<_> = errors.iter().filter(|e| e.agent.as_deref() == Some("agent-1")).collect();
    assert_eq!(duplicates.len(), 2, "one duplicate per cycle: {errors:?}");
    assert!(duplicates.iter().all(|e| e.error.as_deref() == Some("unexpected or duplicate response")));
    let garbled: Vec<_> = errors.iter().filter(|e| e.agent.as_deref() == Some("agent-2")).collect();
    assert_eq!(garbled.len(), 2, "one per cycle: {errors:?}");
    assert!(garbled.iter().all(|e| e.error.as_deref().unwrap().starts_with("invalid response JSON")));
    assert_eq!(attr(garbled[0], "file"), "responses/agent-2--garbled");
    assert_eq!(errors.len(), 4);
    // The good answers still count, once each.
    assert!(of(&evs, "cycle").iter().all(|c| c.value == Some(1.0)));
    assert_eq!(of(&evs, "response").len(), 6);
}

#[tokio::test]
async fn an_answer_in_another_agents_name_is_refused() {
    // agent-1 answers as agent-2, which says nothing: agent-2 must not show successes.
    let cfg = fleet(serde_json::json!({ "agents": 2, "response_timeout": "300ms" }));
    let (_, evs, _) = run(&cfg, &[("agent-1", Act::AnswerAs("agent-2")), ("agent-2", Act::Silent)]).await;
    let victim = of_agent(&evs, "response", "agent-2");
    assert_eq!(victim.len(), 2);
    assert!(victim.iter().all(|r| r.ok == Some(false) && r.error.as_deref() == Some("timeout")), "{victim:?}");
    assert_eq!(of_agent(&evs, "response", "agent-1").iter().filter(|r| r.ok == Some(false)).count(), 2);
    let forged = of(&evs, "protocol_error");
    assert_eq!(forged.len(), 2, "one forgery per cycle: {forged:?}");
    for e in forged {
        assert_eq!(e.agent.as_deref(), Some("agent-2"));
        assert!(e.error.as_deref().unwrap().contains("not its own"), "{e:?}");
    }
    assert!(of(&evs, "cycle").iter().all(|c| c.value == Some(0.0)));
}

#[tokio::test]
async fn a_lost_transport_stops_the_stage() {
    let cfg = fleet(serde_json::json!({ "cycles": 5 }));
    let all = [("agent-1", Act::Answer), ("agent-2", Act::Answer), ("agent-3", Act::Answer)];
    let program = AgentProgram::for_fleet(&cfg).unwrap();
    let (outcome, evs, _) = run_with(&cfg, &all, |t| t.sever("the server went away"), program).await;
    assert_eq!(outcome.status, Status::Error);
    assert_eq!(outcome.message.as_deref(), Some("the server went away; stopping the stage"));
    assert_eq!(of(&evs, "cycle").len(), 1, "no cycle after the transport was lost");
    let undelivered = of(&evs, "response");
    assert_eq!(undelivered.len(), 3);
    assert!(undelivered.iter().all(|r| r.error.as_deref().unwrap().starts_with("not delivered")));
    assert_eq!(of(&evs, "teardown")[0].ok, Some(true), "agents are still stopped");
}

#[tokio::test]
async fn falling_back_to_planrun_agent_is_a_warning() {
    // A `planrun` with no `planrun-agent` beside it: here a script that idles like an agent.
    let dir = tempfile::tempdir().unwrap();
    let planrun = dir.path().join("planrun");
    std::fs::write(&planrun, "#!/bin/sh\nexec sleep 30\n").unwrap();
    std::fs::set_permissions(&planrun, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let program = AgentProgram::builtin_beside(&planrun);
    let mut cfg = fleet(serde_json::json!({ "agents": 1, "cycles": 1 }));
    cfg.command.clear();
    let (outcome, evs, _) = run_with(&cfg, &[("agent-1", Act::Answer)], |_| {}, program).await;
    let warnings = of(&evs, "warning");
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].name.as_deref(), Some("agent_fallback"));
    let w = warnings[0].error.as_deref().unwrap();
    assert!(
        w.contains(&dir.path().join(LEAN_AGENT).display().to_string()) && w.contains("cargo build --release --bins"),
        "{w}"
    );
    assert_eq!(outcome.status, Status::Passed);
    assert_eq!(outcome.message, Some(format!("warning: {w}")), "the stage's line says it too");
    assert_eq!(of(&evs, "cycle")[0].value, Some(1.0), "the fallback agent still works");
}

#[tokio::test]
async fn the_lean_agent_gives_no_warning() {
    let dir = tempfile::tempdir().unwrap();
    let planrun = dir.path().join("planrun");
    std::fs::write(&planrun, "").unwrap();
    let lean = dir.path().join(LEAN_AGENT);
    std::fs::write(&lean, "#!/bin/sh\nexec sleep 30\n").unwrap();
    std::fs::set_permissions(&lean, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut cfg = fleet(serde_json::json!({ "agents": 1, "cycles": 1 }));
    cfg.command.clear();
    let (outcome, evs, _) =
        run_with(&cfg, &[("agent-1", Act::Answer)], |_| {}, AgentProgram::builtin_beside(&planrun)).await;
    assert_eq!(outcome, Outcome::passed());
    assert!(of(&evs, "warning").is_empty());
}
