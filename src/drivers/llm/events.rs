//! Every event the `llm` driver writes, in one place: what each kind carries is the table in
//! `docs/drivers/llm.md`. The call path and the orchestration say *what happened*; this file
//! says how it is written. Attribute order is part of the output (JSON text), so keep it.

use std::sync::Arc;
use std::time::Duration;

use super::config::LlmCfg;
use super::provider::{CallError, Provider, Reply};
use super::resilience::BreakerState;
use super::roster::{Agent, Target};
use crate::drivers::ledger::nanos_to_usd;
use crate::events::{Emitter, Event};

/// The driver's events, written through the stage's emitter.
#[derive(Clone, Copy)]
pub struct Events<'a> {
    em: &'a Emitter,
}

/// One attempt at a provider, as the `llm_call` row records it.
pub struct Attempt<'a> {
    pub agent: &'a Agent,
    pub provider: &'a dyn Provider,
    pub round: u32,
    pub attempt: u32,
}

impl<'a> Events<'a> {
    pub fn new(em: &'a Emitter) -> Events<'a> {
        Events { em }
    }

    /// An `llm_call` row with the attempt's identity in attrs.
    fn call(&self, a: &Attempt<'_>) -> Event {
        self.em.event("llm_call").name("completion").agent(Arc::clone(&a.agent.name)).attrs(serde_json::json!({
            "provider": a.provider.name(), "model": a.provider.model(), "role": &*a.agent.role,
            "round": a.round + 1, "attempt": a.attempt,
        }))
    }

    /// An answer from the cache. The original latency goes to attrs, never to `latency_ms`:
    /// cached calls must not make latency look better than the provider is.
    pub fn cache_hit(&self, a: &Attempt<'_>, reply: &Reply, original_latency_ms: f64) {
        let mut ev = self.call(a).name("cache_hit").ok(true);
        ev.tokens_in = Some(reply.tokens_in as i64);
        ev.tokens_out = Some(reply.tokens_out as i64);
        ev.cost_usd = Some(0.0);
        let p = a.provider;
        self.em.emit(ev.attrs(serde_json::json!({
            "provider": p.name(), "model": p.model(), "role": &*a.agent.role, "round": a.round + 1, "attempt": a.attempt,
            "cache_hit": true, "original_latency_ms": original_latency_ms, "cost_nanos": 0,
        })));
    }

    /// A call refused by an open breaker.
    pub fn circuit_open(&self, a: &Attempt<'_>) {
        self.em.emit(self.call(a).ok(false).error(CallError::CircuitOpen.kind()));
    }

    /// A call made: its result, latency, cost, and (with `trace`) the prompt and the answer.
    pub fn attempt(
        &self,
        a: &Attempt<'_>,
        result: &Result<Reply, CallError>,
        latency: Duration,
        cost_nanos: u64,
        trace: Option<&str>,
    ) {
        let mut ev = self.em.event("llm_call").name("completion").agent(Arc::clone(&a.agent.name));
        ev = ev.ok(result.is_ok()).latency(latency);
        let mut attrs = serde_json::json!({
            "provider": a.provider.name(), "model": a.provider.model(), "role": &*a.agent.role, "round": a.round + 1,
            "attempt": a.attempt, "cache_hit": false, "cost_nanos": cost_nanos,
        });
        match result {
            Ok(r) => {
                ev.tokens_in = Some(r.tokens_in as i64);
                ev.tokens_out = Some(r.tokens_out as i64);
                ev.cost_usd = Some(nanos_to_usd(cost_nanos));
                if let Some(prompt) = trace {
                    attrs["prompt"] = prompt.into();
                    attrs["response"] = r.text.clone().into();
                }
            }
            Err(e) => {
                ev = ev.error(e.detail());
                if let Some(s) = e.status() {
                    ev = ev.status(s);
                }
            }
        }
        self.em.emit(ev.attrs(attrs));
    }

    /// A call still running when its gather round's deadline passed.
    pub fn gather_cut(&self, a: &Attempt<'_>, waited: Duration) {
        self.em.emit(self.call(a).ok(false).latency(waited).error("timeout (gather)").attrs(serde_json::json!({
            "provider": a.provider.name(), "round": a.round + 1, "gather_timeout": true,
        })));
    }

    pub fn retry(&self, a: &Attempt<'_>, why: &CallError, wait: Duration) {
        self.em.emit(
            self.em
                .event("retry")
                .name(why.kind())
                .agent(Arc::clone(&a.agent.name))
                .value(wait.as_secs_f64() * 1000.0, "ms")
                .attrs(
                    serde_json::json!({ "provider": a.provider.name(), "attempt": a.attempt, "round": a.round + 1 }),
                ),
        );
    }

    pub fn failover(&self, agent: &Agent, from: &str, to: &str, why: &CallError) {
        self.em.emit(
            self.em.event("failover").name(format!("{from}->{to}")).agent(Arc::clone(&agent.name)).error(why.kind()),
        );
    }

    pub fn breaker(&self, provider: &str, state: BreakerState) {
        self.em.emit(self.em.event("breaker").name(state.as_str()).attrs(serde_json::json!({ "provider": provider })));
    }

    pub fn budget_exceeded(&self, agent: &Agent, budgets: serde_json::Value, spent_usd: f64) {
        self.em.emit(
            self.em.event("budget_exceeded").agent(Arc::clone(&agent.name)).value(spent_usd, "usd").attrs(budgets),
        );
    }

    /// The end of a round: how many answers it got of how many it needed.
    pub fn round(&self, cfg: &LlmCfg, r: &RoundReport<'_>) {
        let mut ev = self
            .em
            .event("round")
            .name(format!("{:?}", cfg.pattern).to_lowercase())
            .ok(r.ok)
            .latency_ms(r.latency_ms)
            .value(r.responses as f64, "responses")
            .attrs(serde_json::json!({
                "round": r.round + 1, "expected": r.targets.len(), "responses": r.responses,
                "partial": r.responses < r.targets.len(), "gather_timed_out": r.timed_out,
                "redistributed": r.targets.iter().filter_map(|t| t.for_agent.as_deref()).collect::<Vec<_>>(),
            }));
        if !r.ok {
            ev = ev.error(format!("{} of {} required responses", r.responses, r.needed));
        }
        self.em.emit(ev);
    }

    pub fn fault(&self, name: &'static str, agent: Option<&str>, detail: serde_json::Value) {
        let mut ev = self.em.event("fault").name(name).attrs(detail);
        if let Some(agent) = agent {
            ev = ev.agent(agent);
        }
        self.em.emit(ev);
    }

    pub fn checkpoint_saved(&self, next_round: u32) {
        self.em
            .emit(self.em.event("checkpoint").name("saved").attrs(serde_json::json!({ "next_round": next_round + 1 })));
    }

    /// The campaign's "cost accurate within 1%": the ledger against tokens × prices.
    pub fn cost_check(&self, ledger_usd: f64, expected_usd: f64) {
        let diff = (ledger_usd - expected_usd).abs() / expected_usd;
        self.em.emit(
            self.em
                .event("cost_check")
                .name("ledger_vs_tokens")
                .value(diff, "ratio")
                .attrs(serde_json::json!({ "ledger_usd": ledger_usd, "tokens_times_prices_usd": expected_usd })),
        );
    }

    /// Money still reserved when the stage ends (a call that outlived its round).
    pub fn reservations_left(&self, outstanding_nanos: u64) {
        self.em.emit(
            self.em
                .event("cleanup")
                .name("reservations")
                .value(outstanding_nanos as f64, "nanos")
                .ok(outstanding_nanos == 0),
        );
    }

    pub fn ledger(&self, spent_nanos: u64, calls: u64, budget_usd: Option<f64>, run_spent_nanos: u64) {
        self.em.emit(self.em.event("ledger").name("stage").value(nanos_to_usd(spent_nanos), "usd").attrs(
            serde_json::json!({
                "cost_nanos": spent_nanos, "calls": calls, "budget_usd": budget_usd, "run_cost_nanos": run_spent_nanos,
            }),
        ));
    }
}

/// What a `round` event reports.
pub struct RoundReport<'a> {
    pub round: u32,
    pub targets: &'a [Target],
    pub responses: usize,
    pub needed: usize,
    pub ok: bool,
    pub timed_out: bool,
    pub latency_ms: f64,
}
