//! Who takes part: the stage's agents (a `count` expanded into NAME-1 … NAME-N), which of them
//! faults have terminated, and who answers which prompt in a round (`targets`, and
//! `replacement` when an agent is terminated mid-call under `on_terminate = "redistribute"`).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::config::{LlmCfg, OnTerminate};

const DEFAULT_PROMPT: &str = "Round {{ round }}: you are {{ agent }}. Choose cooperate or defect.";

pub struct Agent {
    pub name: Arc<str>,
    pub role: Arc<str>,
    /// A provider, or a failover chain of them (never empty: the plan check refuses that).
    pub providers: Vec<String>,
    /// Its prompt template's source (also the template's name).
    pub template: String,
    /// Fires when a fault terminates the agent (and with the stage's cancellation).
    pub cancel: CancellationToken,
}

/// One prompt of a round: the agent that answers it, and whose prompt it is when it answers
/// for a terminated agent. `slot` keeps the seeded draws of a stand-in apart from its own.
#[derive(Clone)]
pub struct Target {
    pub agent: Arc<Agent>,
    pub slot: u32,
    pub for_agent: Option<Arc<str>>,
}

pub struct Roster {
    agents: Vec<Arc<Agent>>,
    /// Sorted, so checkpoints list them in a stable order.
    terminated: Mutex<BTreeSet<String>>,
    on_terminate: OnTerminate,
}

impl Roster {
    /// The plan's agents; `terminated` (from a checkpoint) are cancelled from the start.
    pub fn new(cfg: &LlmCfg, stage_cancel: &CancellationToken, terminated: &[String]) -> Roster {
        let mut agents = Vec::new();
        for a in &cfg.agents {
            let template =
                a.prompt.clone().or_else(|| cfg.prompt.clone()).unwrap_or_else(|| DEFAULT_PROMPT.to_string());
            let names: Vec<String> = match a.count {
                Some(n) if n > 1 => (1..=n).map(|i| format!("{}-{i}", a.name)).collect(),
                _ => vec![a.name.clone()],
            };
            for name in names {
                agents.push(Arc::new(Agent {
                    name: name.into(),
                    role: a.role.clone().unwrap_or_else(|| "agent".into()).into(),
                    providers: a.provider.clone(),
                    template: template.clone(),
                    cancel: stage_cancel.child_token(),
                }));
            }
        }
        let terminated: BTreeSet<String> = terminated.iter().cloned().collect();
        for a in agents.iter().filter(|a| terminated.contains(&*a.name)) {
            a.cancel.cancel();
        }
        Roster { agents, terminated: Mutex::new(terminated), on_terminate: cfg.on_terminate }
    }

    pub fn agents(&self) -> &[Arc<Agent>] {
        &self.agents
    }

    /// Terminate an agent: its call in flight ends, and it gets no more prompts.
    pub fn terminate(&self, name: &str) {
        if let Some(a) = self.agents.iter().find(|a| &*a.name == name) {
            a.cancel.cancel();
        }
        if let Ok(mut t) = self.terminated.lock() {
            t.insert(name.to_string());
        }
    }

    pub fn terminated(&self) -> Vec<String> {
        self.terminated.lock().map(|t| t.iter().cloned().collect()).unwrap_or_default()
    }

    fn dead(&self) -> BTreeSet<String> {
        self.terminated.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Who gets this round's prompt: live agents, plus (with `redistribute`) a live agent per
    /// terminated one.
    pub fn targets(&self) -> Vec<Target> {
        let dead = self.dead();
        let live: Vec<&Arc<Agent>> = self.agents.iter().filter(|a| !dead.contains(&*a.name)).collect();
        let mut out: Vec<Target> =
            live.iter().map(|a| Target { agent: Arc::clone(a), slot: 0, for_agent: None }).collect();
        if self.on_terminate == OnTerminate::Redistribute && !live.is_empty() {
            for (i, gone) in self.agents.iter().filter(|a| dead.contains(&*a.name)).enumerate() {
                let same_role: Vec<&Arc<Agent>> = live.iter().copied().filter(|a| a.role == gone.role).collect();
                let pick = if same_role.is_empty() { live[i % live.len()] } else { same_role[i % same_role.len()] };
                out.push(Target {
                    agent: Arc::clone(pick),
                    slot: 1 + i as u32,
                    for_agent: Some(Arc::clone(&gone.name)),
                });
            }
        }
        out
    }

    /// A live agent (same role first) to take over a terminated agent's prompt; `n` counts the
    /// hand-overs of this round.
    pub fn replacement(&self, gone: &Target, n: u32) -> Option<Target> {
        let dead = self.dead();
        let live: Vec<&Arc<Agent>> =
            self.agents.iter().filter(|a| !dead.contains(&*a.name) && a.name != gone.agent.name).collect();
        let same: Vec<&&Arc<Agent>> = live.iter().filter(|a| a.role == gone.agent.role).collect();
        let pick = match (same.is_empty(), live.is_empty()) {
            (false, _) => *same[n as usize % same.len()],
            (true, false) => live[n as usize % live.len()],
            (true, true) => return None,
        };
        Some(Target { agent: Arc::clone(pick), slot: 1000 + n, for_agent: Some(Arc::clone(&gone.agent.name)) })
    }
}
