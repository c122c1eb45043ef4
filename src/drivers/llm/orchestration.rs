//! One run of an `llm` stage: the rounds of its pattern (`sequential`, or `gather`/`rounds` with
//! a deadline, partial results and hand-over of a terminated agent's prompt), the faults beside
//! them, checkpoints between rounds, and the stage's end — the money events and the verdict
//! (`Tally`: a stage whose calls did not succeed fails). How one call is made is `call`'s.

use std::collections::BTreeMap;
use std::sync::Mutex;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};

use super::call::{CallPath, Restored};
use super::config::{LlmCfg, OnTerminate, Pattern};
use super::events::{Attempt, Events, RoundReport};
use super::faults::Faults;
use super::prompts::Prompts;
use super::provider::{self, CallError, Reply};
use super::resilience::BreakerState;
use super::roster::{Roster, Target};
use super::tally::Tally;
use crate::drivers::ledger::nanos_to_usd;
use crate::drivers::{Outcome, StageContext, Status};

/// What a checkpoint holds. Fields added later default, so older checkpoints still load.
#[derive(Serialize, Deserialize, Default)]
struct State {
    next_round: u32,
    spent_nanos: u64,
    calls: u64,
    terminated: Vec<String>,
    breakers: BTreeMap<String, (BreakerState, f64)>,
    previous: Vec<String>,
    /// Σ tokens × prices so far, so the resumed stage's cost check covers the whole stage.
    #[serde(default)]
    expected_usd: f64,
    #[serde(default)]
    tally: Tally,
}

pub struct Orchestration<'a> {
    cfg: &'a LlmCfg,
    ctx: &'a StageContext,
    events: Events<'a>,
    calls: CallPath<'a>,
    roster: Roster,
    faults: Faults<'a>,
    prompts: Prompts,
    tally: Mutex<Tally>,
    restored: Option<State>,
}

/// A round's answers, in target order (None: no answer).
type Answers = Vec<Option<String>>;

impl<'a> Orchestration<'a> {
    pub fn new(cfg: &'a LlmCfg, ctx: &'a StageContext) -> Orchestration<'a> {
        let restored: Option<State> = ctx.checkpoint.restored().and_then(|v| serde_json::from_value(v.clone()).ok());
        let roster = Roster::new(cfg, &ctx.cancel, restored.as_ref().map_or(&[], |s| &s.terminated));
        let prompts = Prompts::new(roster.agents().iter().map(|a| a.template.as_str()), &ctx.vars);
        let faults = Faults::new(&cfg.faults, ctx.clock.elapsed_ms());
        let providers = cfg.providers.iter().map(|(n, p)| (n.clone(), provider::build(n, p))).collect();
        let carried = restored.as_ref().map(|s| Restored {
            spent_nanos: s.spent_nanos,
            calls: s.calls,
            expected_usd: s.expected_usd,
            breakers: &s.breakers,
        });
        let calls = CallPath::new(cfg, ctx, faults, providers, carried);
        Orchestration {
            cfg,
            ctx,
            events: Events::new(&ctx.events),
            calls,
            roster,
            faults,
            prompts,
            tally: Mutex::new(restored.as_ref().map(|s| s.tally.clone()).unwrap_or_default()),
            restored,
        }
    }

    pub async fn run(self) -> Outcome {
        let outcome = tokio::select! {
            o = self.rounds() => o,
            _ = self.faults.fire(&self.ctx.clock, &self.roster, self.cfg.on_terminate, self.events) => Outcome::passed(),
        };
        self.close();
        self.verdict(outcome)
    }

    async fn rounds(&self) -> Outcome {
        let first = self.restored.as_ref().map_or(0, |s| s.next_round);
        let mut previous: Vec<String> = self.restored.as_ref().map(|s| s.previous.clone()).unwrap_or_default();
        for round in first..self.cfg.rounds.max(1) {
            if self.ctx.cancel.is_cancelled() {
                return Outcome::with(Status::Interrupted, "interrupted");
            }
            if self.calls.budget_hit() {
                break;
            }
            let answers = self.round(round, &previous).await;
            previous = answers.into_iter().flatten().collect();
            if let Some(n) = self.cfg.checkpoint_every
                && n > 0
                && (round + 1) % n == 0
                && round + 1 < self.cfg.rounds
            {
                // The event goes first so the saved log position includes it: a resumed run
                // then has it exactly once, where an uninterrupted run has it.
                self.events.checkpoint_saved(round + 1);
                if let Err(e) = self.ctx.checkpoint.save(self.state(round + 1, &previous)) {
                    return Outcome::with(Status::Error, format!("checkpoint failed: {e}"));
                }
                if self.ctx.checkpoint.suspend_requested() {
                    return Outcome::with(Status::Interrupted, format!("suspended after round {}", round + 1));
                }
            }
        }
        Outcome::passed()
    }

    /// One round; returns the answers in target order.
    async fn round(&self, round: u32, previous: &[String]) -> Answers {
        let targets = self.roster.targets();
        let previous = minijinja::Value::from(previous.to_vec());
        let t0 = self.ctx.clock.elapsed_ms();
        let (answers, timed_out) = match self.cfg.pattern {
            Pattern::Sequential => (self.sequential(round, &targets, &previous).await, false),
            Pattern::Gather | Pattern::Rounds => self.gather(round, &targets, &previous).await,
        };
        let responses = answers.iter().filter(|a| a.is_some()).count();
        let agents = self.roster.agents().len();
        let needed = self.cfg.min_responses.map(|n| n as usize).unwrap_or(agents);
        self.events.round(
            self.cfg,
            &RoundReport {
                round,
                targets: &targets,
                responses,
                needed,
                ok: responses >= needed.min(agents).max(1),
                timed_out,
                latency_ms: self.ctx.clock.elapsed_ms() - t0,
            },
        );
        answers
    }

    /// Count a finished call for the stage's verdict.
    fn count(&self, result: &Result<Reply, CallError>) {
        if let Ok(mut t) = self.tally.lock() {
            t.record(result);
        }
    }

    /// Each target in turn; stops early when the stage is cancelled or the budget is hit.
    async fn sequential(&self, round: u32, targets: &[Target], previous: &minijinja::Value) -> Answers {
        let mut answers = vec![None; targets.len()];
        for (i, t) in targets.iter().enumerate() {
            if self.ctx.cancel.is_cancelled() || self.calls.budget_hit() {
                break;
            }
            let prompt = self.prompts.render(&t.agent, round, previous);
            let result = self.calls.call(t, round, &prompt).await;
            self.count(&result);
            answers[i] = result.ok().map(|r| r.text);
        }
        answers
    }

    /// Every target at once, until all answered or `gather_timeout`; returns the answers and
    /// whether the deadline cut the round.
    async fn gather(&self, round: u32, targets: &[Target], previous: &minijinja::Value) -> (Answers, bool) {
        let call = |i: usize, t: Target| {
            let prompt = self.prompts.render(&t.agent, round, previous);
            async move {
                let r = self.calls.call(&t, round, &prompt).await;
                (i, t, r)
            }
        };
        let mut pending: FuturesUnordered<_> = targets.iter().enumerate().map(|(i, t)| call(i, t.clone())).collect();
        let mut answers = vec![None; targets.len()];
        let mut done = vec![false; targets.len()];
        let mut handed_over = 0u32;
        let mut timed_out = false;
        let deadline = async {
            match self.cfg.gather_timeout {
                Some(d) => self.ctx.clock.sleep(d.0).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = pending.next() => match next {
                    // An agent terminated mid-call: with `redistribute`, its prompt goes to a
                    // live agent within this same round.
                    Some((i, t, Err(CallError::Terminated))) if self.cfg.on_terminate == OnTerminate::Redistribute => {
                        handed_over += 1;
                        match self.roster.replacement(&t, handed_over) {
                            Some(r) => pending.push(call(i, r)),
                            None => done[i] = true,
                        }
                    }
                    Some((i, _, result)) => {
                        done[i] = true;
                        self.count(&result);
                        answers[i] = result.ok().map(|r| r.text);
                    }
                    None => break,
                },
                _ = &mut deadline => {
                    timed_out = true;
                    break;
                }
                _ = self.ctx.cancel.cancelled() => break,
            }
        }
        drop(pending);
        if timed_out {
            self.cut_off(round, targets, &done);
        }
        (answers, timed_out)
    }

    /// Record the calls a gather deadline abandoned: each is a failed call.
    fn cut_off(&self, round: u32, targets: &[Target], done: &[bool]) {
        const CUT: &str = "timeout (gather)";
        let waited = self.cfg.gather_timeout.map(|d| self.ctx.clock.scaled(d.0)).unwrap_or_default();
        for t in targets.iter().zip(done).filter(|(_, d)| !**d).map(|(t, _)| t) {
            if let Some(provider) = self.calls.first_provider(&t.agent) {
                self.events.gather_cut(&Attempt { agent: &t.agent, provider, round, attempt: 1 }, waited);
            }
            if let Ok(mut tally) = self.tally.lock() {
                tally.failure(CUT);
            }
        }
    }

    fn state(&self, next_round: u32, previous: &[String]) -> serde_json::Value {
        let ledger = self.calls.ledger();
        serde_json::to_value(State {
            next_round,
            spent_nanos: ledger.spent(),
            calls: ledger.calls(),
            terminated: self.roster.terminated(),
            breakers: self.calls.breaker_states(),
            previous: previous.to_vec(),
            expected_usd: self.calls.expected_usd(),
            tally: self.tally.lock().map(|t| t.clone()).unwrap_or_default(),
        })
        .unwrap_or_default()
    }

    /// The stage's money events: the cost cross-check, reservations left over (none should
    /// be: money still reserved would mean a call outlived its round), and the ledger.
    fn close(&self) {
        let ledger = self.calls.ledger();
        let expected = self.calls.expected_usd();
        if expected > 0.0 {
            self.events.cost_check(nanos_to_usd(ledger.spent()), expected);
        }
        self.events.reservations_left(ledger.reserved());
        self.events.ledger(ledger.spent(), ledger.calls(), self.cfg.budget_usd, self.ctx.ledger.spent());
    }

    /// A stage that ran its rounds passes if enough of its calls succeeded (`min_success`);
    /// one stopped by its budget then ends `budget_exceeded`.
    fn verdict(&self, outcome: Outcome) -> Outcome {
        if outcome.status != Status::Passed {
            return outcome;
        }
        let tally = self.tally.lock().map(|t| t.clone()).unwrap_or_default();
        if let Err(why) = tally.verdict(self.cfg.min_success) {
            return Outcome::with(Status::Failed, why);
        }
        if self.calls.budget_hit() {
            let spent = nanos_to_usd(self.calls.ledger().spent());
            return Outcome::with(
                Status::BudgetExceeded,
                format!("stopped before exceeding the budget (spent ${spent:.4})"),
            );
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_from_before_the_tally_still_loads() {
        let old = serde_json::json!({
            "next_round": 3, "spent_nanos": 10, "calls": 2, "terminated": ["a-1"],
            "breakers": {"p": ["open", 5000.0]}, "previous": ["cooperate"],
        });
        let s: State = serde_json::from_value(old).unwrap();
        assert_eq!((s.next_round, s.expected_usd, s.tally), (3, 0.0, Tally::default()));
        assert_eq!(s.breakers["p"], (BreakerState::Open, 5000.0));
    }

    #[test]
    fn the_tally_and_the_expected_cost_survive_a_checkpoint() {
        let mut tally = Tally::default();
        tally.record(&Err(CallError::Status { code: 500, retry_after: None }));
        let state = State { expected_usd: 0.125, tally: tally.clone(), ..State::default() };
        let back: State = serde_json::from_value(serde_json::to_value(&state).unwrap()).unwrap();
        assert_eq!((back.expected_usd, back.tally), (0.125, tally));
    }
}
