//! The coordinator's book: every agent (process, heartbeats, restarts) and every message still
//! waiting for answers, behind one lock, with a `Notify` that wakes whoever waits for a change.
//! Each method is one decision — is this heartbeat the first, is this response expected — so the
//! rules are here and testable without processes or a transport; the coordinator turns the
//! answers into events.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use super::protocol::Response;

struct AgentState {
    pid: Option<u32>,
    /// Wall-clock ms at spawn, to compare with the agent's own heartbeat timestamp.
    spawned_wall_ms: f64,
    first_beat: bool,
    last_beat_ms: f64,
    alive: bool,
    unresponsive: bool,
    restarts: u32,
    /// It said (in its first heartbeat) that it blocks the doorbell signal.
    doorbell: bool,
    /// Started by hand elsewhere and joined (no process here).
    remote: bool,
    /// Being stopped on purpose (a scale-down): no longer addressed, its exit expected.
    retiring: bool,
}

/// A message sent to `expected` agents, and what came back so far.
pub struct Pending {
    pub sent_ms: f64,
    pub kind: String,
    /// 1-based.
    pub cycle: u64,
    pub expected: HashSet<String>,
    /// Agent → latency in ms.
    pub got: HashMap<String, f64>,
    /// Each answer's reported RSS, bytes.
    pub rss: Vec<f64>,
}

impl Pending {
    pub fn new(sent_ms: f64, kind: &str, cycle: u64, expected: &[String]) -> Pending {
        Pending {
            sent_ms,
            kind: kind.to_string(),
            cycle,
            expected: expected.iter().cloned().collect(),
            got: HashMap::new(),
            rss: Vec::new(),
        }
    }

    /// Expected agents that did not answer, sorted.
    pub fn missing(&self) -> Vec<&str> {
        let mut m: Vec<&str> =
            self.expected.iter().filter(|a| !self.got.contains_key(*a)).map(String::as_str).collect();
        m.sort();
        m
    }
}

/// What a heartbeat meant.
#[derive(Debug, PartialEq)]
pub enum Beat {
    /// From an agent the fleet did not start.
    Unknown,
    /// Its first since (re)start: the spawn is complete after `latency_ms`.
    First {
        latency_ms: f64,
        restarts: u32,
    },
    Again,
}

/// What a response meant.
#[derive(Debug, PartialEq)]
pub enum Answer {
    UnknownMessage,
    /// From an agent a scale-down is stopping: its answer came after it stopped counting.
    Retired,
    /// From an agent the message was not for, an unknown agent, or a second answer.
    Unexpected,
    Accepted {
        latency_ms: f64,
        kind: String,
        cycle: u64,
    },
}

/// What the watchdog found.
#[derive(Debug, Default, PartialEq)]
pub struct Watch {
    /// Agents that just went silent, with how long they have been.
    pub unresponsive: Vec<(String, f64)>,
    /// Dead agents claimed for a restart.
    pub restart: Vec<String>,
}

#[derive(Default)]
pub struct Book {
    agents: BTreeMap<String, AgentState>,
    pending: HashMap<String, Pending>,
    tearing_down: bool,
}

impl Book {
    /// Every one of `ids` has sent its first heartbeat or died.
    pub fn settled(&self, ids: &[String]) -> bool {
        ids.iter().all(|id| self.agents.get(id).is_some_and(|a| a.first_beat || !a.alive))
    }

    /// Pids of live agents that said, in a heartbeat since their (re)start, that they block the
    /// doorbell: it reaches them blocked, never at its default action (which kills). An agent
    /// binary that predates the doorbell never says so and is never rung.
    pub fn doorbell_pids(&self) -> Vec<u32> {
        self.agents.values().filter(|a| a.alive && a.first_beat && a.doorbell).filter_map(|a| a.pid).collect()
    }

    /// How many joined agents have heartbeated.
    pub fn remote_started(&self) -> u32 {
        self.agents.values().filter(|a| a.remote && a.first_beat).count() as u32
    }

    pub fn has_started(&self, id: &str) -> bool {
        self.agents.get(id).is_some_and(|a| a.first_beat)
    }

    /// The message is answered by every agent it was for (or is no longer pending).
    pub fn answered(&self, message_id: &str) -> bool {
        self.pending.get(message_id).is_none_or(|p| p.got.len() >= p.expected.len())
    }

    /// Every one of `ids` has exited.
    pub fn gone(&self, ids: &[String]) -> bool {
        ids.iter().all(|id| self.agents.get(id).is_none_or(|a| !a.alive))
    }

    pub fn none_alive(&self) -> bool {
        self.agents.values().all(|a| !a.alive)
    }
}

#[derive(Default)]
pub struct Roster {
    book: Mutex<Book>,
    changed: Notify,
}

impl Roster {
    pub fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wake everyone waiting for a change.
    pub fn notify(&self) {
        self.changed.notify_waiters();
    }

    /// Resolves at the next `notify`; create it before checking the condition it waits for.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Agent `id` was (re)started as `pid` at `now_ms` (clock) / `wall_ms` (epoch).
    pub fn started(&self, id: &str, pid: Option<u32>, now_ms: f64, wall_ms: f64) {
        let mut b = self.book();
        let (restarts, retiring) = b.agents.get(id).map_or((0, false), |a| (a.restarts, a.retiring));
        b.agents.insert(
            id.to_string(),
            AgentState {
                pid,
                spawned_wall_ms: wall_ms,
                first_beat: false,
                last_beat_ms: now_ms,
                alive: true,
                unresponsive: false,
                restarts,
                doorbell: false,
                remote: false,
                retiring,
            },
        );
    }

    /// Joined agents still counted alive (told to stop at teardown).
    pub fn remote_alive(&self) -> Vec<String> {
        self.book().agents.iter().filter(|(_, a)| a.alive && a.remote).map(|(id, _)| id.clone()).collect()
    }

    /// How many joined agents have heartbeated.
    pub fn remote_started(&self) -> u32 {
        self.book().remote_started()
    }

    /// Whether `id` is taken by an agent that is alive (a joined agent that fell silent may
    /// join again under its id).
    pub fn in_use(&self, id: &str) -> bool {
        self.book().agents.get(id).is_some_and(|a| a.alive || !a.remote)
    }

    /// Joined agents still alive, started or not.
    pub fn remote_count(&self) -> u32 {
        self.book().agents.values().filter(|a| a.remote && a.alive).count() as u32
    }

    /// Start a joined agent's entry (no process here), keeping its count of earlier joins.
    pub fn joined(&self, id: &str, now_ms: f64, wall_ms: f64) {
        self.started(id, None, now_ms, wall_ms);
        if let Some(a) = self.book().agents.get_mut(id) {
            a.remote = true;
        }
    }

    /// The process `pid` of agent `id` ended. True when that was expected (teardown, or a
    /// scale-down that stopped it).
    pub fn exited(&self, id: &str, pid: Option<u32>) -> bool {
        let mut b = self.book();
        let mut retiring = false;
        if let Some(a) = b.agents.get_mut(id).filter(|a| a.pid == pid) {
            a.alive = false;
            retiring = a.retiring;
        }
        b.tearing_down || retiring
    }

    /// A scale-down stops `ids`: from now on they are not addressed, the messages still open
    /// no longer wait for them, and their exits are expected. Their pids.
    pub fn retire(&self, ids: &[String]) -> Vec<u32> {
        let mut b = self.book();
        let mut pids = Vec::new();
        for id in ids {
            if let Some(a) = b.agents.get_mut(id) {
                a.retiring = true;
                match a.pid {
                    Some(pid) if a.alive => pids.push(pid),
                    // Claimed for a restart but not started again: nothing runs to stop.
                    _ => a.alive = false,
                }
            }
        }
        // Open messages stop waiting for the stopped agents — but what one already answered
        // stays answered (its answer counted, the cycle's ratio never above 1).
        for p in b.pending.values_mut() {
            let got = &p.got;
            p.expected.retain(|a| !ids.contains(a) || got.contains_key(a));
        }
        pids
    }

    /// Whether a scale-down is stopping `id` (a restart claimed before it must not happen).
    pub fn is_retiring(&self, id: &str) -> bool {
        self.book().agents.get(id).is_some_and(|a| a.retiring)
    }

    /// Of `ids`, those that have sent their first heartbeat.
    pub fn started_of(&self, ids: Vec<String>) -> Vec<String> {
        let b = self.book();
        ids.into_iter().filter(|id| b.has_started(id)).collect()
    }

    /// A heartbeat from `id`, written at `agent_ms` (epoch, its clock) and read at `now_ms`.
    #[cfg(test)]
    pub fn beat(&self, id: &str, agent_ms: i64, now_ms: f64) -> Beat {
        self.beat_with(id, agent_ms, now_ms, false)
    }

    /// A heartbeat that may also say the agent blocks the doorbell.
    pub fn beat_with(&self, id: &str, agent_ms: i64, now_ms: f64, doorbell: bool) -> Beat {
        let mut b = self.book();
        let Some(a) = b.agents.get_mut(id) else { return Beat::Unknown };
        // Until its first beat, `last_beat_ms` is when it started (on this clock).
        let since_start = now_ms - a.last_beat_ms;
        a.last_beat_ms = now_ms;
        a.doorbell |= doorbell;
        a.unresponsive = false;
        if a.first_beat {
            return Beat::Again;
        }
        a.first_beat = true;
        // From spawn to when the agent wrote its first heartbeat (its own timestamp, same host
        // clock): not to when we got round to reading it.
        // A joined agent's clock is another host's: time its join on ours (join → first beat read).
        let latency_ms = if a.remote { since_start.max(0.0) } else { (agent_ms as f64 - a.spawned_wall_ms).max(0.0) };
        Beat::First { latency_ms, restarts: a.restarts }
    }

    /// A message went out to `p.expected`.
    pub fn open(&self, message_id: &str, p: Pending) {
        self.book().pending.insert(message_id.to_string(), p);
    }

    /// The message's cycle is over: what it got.
    pub fn close(&self, message_id: &str) -> Option<Pending> {
        self.book().pending.remove(message_id)
    }

    pub fn answer(&self, r: &Response, now_ms: f64) -> Answer {
        let mut b = self.book();
        if b.agents.get(&r.agent_id).is_some_and(|a| a.retiring) {
            return Answer::Retired;
        }
        let known_agent = b.agents.contains_key(&r.agent_id);
        let Some(p) = b.pending.get_mut(&r.message_id) else { return Answer::UnknownMessage };
        if !known_agent || !p.expected.contains(&r.agent_id) || p.got.contains_key(&r.agent_id) {
            return Answer::Unexpected;
        }
        let latency_ms = now_ms - p.sent_ms;
        p.got.insert(r.agent_id.clone(), latency_ms);
        p.rss.push(r.memory.rss as f64);
        Answer::Accepted { latency_ms, kind: p.kind.clone(), cycle: p.cycle }
    }

    /// Live agents' ids, sorted (those being stopped by a scale-down left out).
    pub fn alive(&self) -> Vec<String> {
        self.book().agents.iter().filter(|(_, a)| a.alive && !a.retiring).map(|(id, _)| id.clone()).collect()
    }

    /// Live agents with a pid that a scale-down is not stopping: what faults may pick.
    pub fn working_pids(&self) -> Vec<(String, u32)> {
        self.book()
            .agents
            .iter()
            .filter(|(_, a)| a.alive && !a.retiring)
            .filter_map(|(id, a)| Some((id.clone(), a.pid?)))
            .collect()
    }

    /// Live agents with a pid: (id, pid), sorted by id.
    pub fn alive_pids(&self) -> Vec<(String, u32)> {
        self.book().agents.iter().filter(|(_, a)| a.alive).filter_map(|(id, a)| Some((id.clone(), a.pid?))).collect()
    }

    /// At `now_ms`: agents silent for more than `limit_ms` (reported once per silence), and
    /// dead agents to restart if `restart` (claimed: counted and marked alive again).
    pub fn watch(&self, now_ms: f64, limit_ms: f64, restart: bool) -> Watch {
        let mut b = self.book();
        let mut w = Watch::default();
        if b.tearing_down {
            return w;
        }
        for (id, a) in b.agents.iter_mut().filter(|(_, a)| !a.retiring) {
            if a.alive && a.first_beat && !a.unresponsive && now_ms - a.last_beat_ms > limit_ms {
                a.unresponsive = true;
                w.unresponsive.push((id.clone(), now_ms - a.last_beat_ms));
                // A joined agent has no process to watch: silence is all we will learn of its
                // death, so stop addressing it (it may join again).
                if a.remote {
                    a.alive = false;
                }
            }
            if !a.alive && restart && !a.remote {
                a.restarts += 1;
                a.alive = true;
                // The old process is gone: never signal its pid again (it may be reused).
                a.pid = None;
                w.restart.push(id.clone());
            }
        }
        w
    }

    /// Teardown begins: exits from now on are expected. The pids still alive.
    pub fn begin_teardown(&self) -> Vec<u32> {
        let mut b = self.book();
        b.tearing_down = true;
        b.agents.values().filter(|a| a.alive).filter_map(|a| a.pid).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::fleet::protocol::Memory;

    fn response(agent: &str, message: &str) -> Response {
        Response {
            agent_id: agent.into(),
            message_id: message.into(),
            timestamp: 0,
            processing_time: 0.0,
            coordination_count: 0,
            error_count: 0,
            uptime: 0,
            memory: Memory { rss: 7, allocated: 0 },
            response: serde_json::Value::Null,
            token: None,
        }
    }

    #[test]
    fn the_first_heartbeat_completes_the_spawn_once() {
        let r = Roster::default();
        r.started("agent-1", Some(1), 0.0, 1000.0);
        assert_eq!(r.beat("agent-1", 1012, 5.0), Beat::First { latency_ms: 12.0, restarts: 0 });
        assert_eq!(r.beat("agent-1", 2000, 6.0), Beat::Again);
        assert_eq!(r.beat("agent-9", 2000, 6.0), Beat::Unknown);
        assert!(r.book().settled(&["agent-1".into()]));
    }

    #[test]
    fn a_response_counts_once_and_only_from_an_addressee() {
        let r = Roster::default();
        for id in ["agent-1", "agent-2", "agent-3"] {
            r.started(id, Some(1), 0.0, 0.0);
        }
        r.open("m", Pending::new(10.0, "ping", 1, &["agent-1".into(), "agent-2".into()]));
        assert_eq!(
            r.answer(&response("agent-1", "m"), 15.0),
            Answer::Accepted { latency_ms: 5.0, kind: "ping".into(), cycle: 1 }
        );
        assert_eq!(r.answer(&response("agent-1", "m"), 16.0), Answer::Unexpected, "a duplicate");
        assert_eq!(r.answer(&response("agent-3", "m"), 16.0), Answer::Unexpected, "not an addressee");
        assert_eq!(r.answer(&response("agent-7", "m"), 16.0), Answer::Unexpected, "not an agent");
        assert_eq!(r.answer(&response("agent-2", "x"), 16.0), Answer::UnknownMessage);
        assert!(!r.book().answered("m"));
        let p = r.close("m").unwrap();
        assert_eq!(p.missing(), ["agent-2"]);
        assert_eq!(p.rss, [7.0]);
    }

    #[test]
    fn the_watchdog_reports_a_silence_once_and_claims_the_dead_for_restart() {
        let r = Roster::default();
        r.started("agent-1", Some(1), 0.0, 0.0);
        r.started("agent-2", Some(2), 0.0, 0.0);
        r.beat("agent-1", 0, 0.0);
        r.beat("agent-2", 0, 0.0);
        assert!(!r.exited("agent-2", Some(2)));
        let w = r.watch(500.0, 300.0, true);
        assert_eq!(w.unresponsive, [("agent-1".to_string(), 500.0)]);
        assert_eq!(w.restart, ["agent-2"]);
        // The coordinator restarts what it claimed before it watches again.
        r.started("agent-2", Some(3), 550.0, 0.0);
        assert_eq!(r.watch(600.0, 300.0, true), Watch::default(), "reported once, claimed once");
        // An exit of an earlier incarnation does not kill the restarted one.
        r.exited("agent-2", Some(2));
        assert_eq!(r.alive(), ["agent-1", "agent-2"]);
        assert_eq!(r.begin_teardown().len(), 2);
        assert!(r.exited("agent-1", Some(1)), "exits during teardown are expected");
    }
}
