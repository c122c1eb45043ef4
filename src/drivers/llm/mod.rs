//! `llm`: orchestrations of LLM agents — the driver behind the KSI campaign, where each call
//! takes seconds, agents time out and fail, and costs add up. Patterns (`gather`, `sequential`,
//! `rounds`), providers (`provider`: simulated or OpenAI-compatible), resilience (`resilience`:
//! retries, breakers, failover), budgets (the run's `Ledger`), faults, a response cache, and
//! mid-stage checkpoints. Every call, retry, breaker transition, failover, fault and round is an
//! event.

pub mod config;
pub mod provider;
pub mod resilience;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{BoxFuture, Driver, Outcome, StageContext, Status, config_of};
use crate::drivers::ledger::{Ledger, nanos_to_usd};
use crate::plan::model::{FieldError, StageCommon};
pub use config::LlmCfg as Llm;
use config::{CacheMode, LlmCfg, OnTerminate, Pattern};
use provider::{CallError, Provider, Reply};
use resilience::{Admit, Breaker, BreakerState, backoff};

/// Without a `call_timeout`, a call is still never waited on for longer than this.
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(600);
const DEFAULT_PROMPT: &str = "Round {{ round }}: you are {{ agent }}. Choose cooperate or defect.";

impl Driver for LlmCfg {
    fn config(&self) -> serde_json::Value {
        config_of(self)
    }

    fn describe(&self) -> String {
        let agents: u32 = self.agents.iter().map(|a| a.count.unwrap_or(1)).sum();
        format!("{:?} of {agents} LLM agents, {} round(s)", self.pattern, self.rounds).to_lowercase()
    }

    fn simulated(&self) -> bool {
        self.providers.values().all(|p| matches!(p, config::ProviderCfg::Simulated { .. }))
    }

    fn check(&self, _stage: &StageCommon) -> Result<(), FieldError> {
        if self.agents.is_empty() {
            return Err("an llm stage needs at least one `agent`".into());
        }
        for (i, a) in self.agents.iter().enumerate() {
            let at = i.to_string();
            if a.provider.is_empty() {
                return Err(FieldError::new(format!("agent `{}` names no provider", a.name)).at(&["agent", &at]));
            }
            for p in &a.provider {
                if !self.providers.contains_key(p) {
                    let names: Vec<&str> = self.providers.keys().map(String::as_str).collect();
                    let msg =
                        format!("agent `{}` uses unknown provider `{p}` (providers: {})", a.name, names.join(", "));
                    return Err(FieldError::new(msg).at(&["agent", &at, "provider"]));
                }
            }
            if let Some(t) = &a.prompt {
                let env = minijinja::Environment::new();
                env.template_from_str(t)
                    .map_err(|e| FieldError::new(format!("prompt template: {e}")).at(&["agent", &at, "prompt"]))?;
            }
        }
        for (i, f) in self.faults.iter().enumerate() {
            let at = ["fault".to_string(), i.to_string()];
            let kinds =
                [f.terminate.is_some(), f.outage.is_some(), f.fail_rate.is_some()].iter().filter(|x| **x).count();
            if kinds != 1 {
                let msg = format!("fault at {} must have exactly one of terminate, outage, fail_rate", f.at);
                return Err(FieldError::new(msg).at(&at));
            }
            if f.fail_rate.is_some() && f.for_.is_none() {
                return Err(FieldError::new(format!("fail_rate fault at {} needs `for`", f.at)).at(&at));
            }
        }
        if let Some(t) = &self.prompt {
            let env = minijinja::Environment::new();
            env.template_from_str(t).map_err(|e| FieldError::new(format!("prompt template: {e}")).at(&["prompt"]))?;
        }
        Ok(())
    }

    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let run = Orchestration::new(self, ctx);
            run.run().await
        })
    }
}

struct Agent {
    name: Arc<str>,
    role: Arc<str>,
    providers: Vec<String>,
    template: String,
    cancel: CancellationToken,
}

#[derive(Clone)]
struct Cached {
    reply: Reply,
    latency_ms: f64,
}

/// What a checkpoint holds.
#[derive(Serialize, Deserialize, Default)]
struct State {
    next_round: u32,
    spent_nanos: u64,
    calls: u64,
    terminated: Vec<String>,
    breakers: BTreeMap<String, (BreakerState, f64)>,
    previous: Vec<String>,
}

struct Orchestration<'a> {
    cfg: &'a LlmCfg,
    ctx: &'a StageContext,
    providers: BTreeMap<String, Provider>,
    breakers: Mutex<BTreeMap<String, Breaker>>,
    cache: Mutex<HashMap<String, Cached>>,
    ledger: Ledger,
    agents: Vec<Arc<Agent>>,
    terminated: Mutex<HashSet<String>>,
    start_ms: f64,
    budget_hit: AtomicBool,
    /// Σ tokens × price in floating point, kept beside the integer ledger as a cross-check.
    expected_usd: Mutex<f64>,
    env: minijinja::Environment<'static>,
    vars: minijinja::Value,
    restored: Option<State>,
}

fn normalize(prompt: &str) -> String {
    prompt.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

#[derive(Clone)]
struct Target {
    agent: Arc<Agent>,
    slot: u32,
    for_agent: Option<Arc<str>>,
}

impl<'a> Orchestration<'a> {
    fn new(cfg: &'a LlmCfg, ctx: &'a StageContext) -> Orchestration<'a> {
        let restored: Option<State> = ctx.checkpoint.restored().and_then(|v| serde_json::from_value(v.clone()).ok());
        let mut env = minijinja::Environment::new();
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
                    cancel: ctx.cancel.child_token(),
                }));
            }
        }
        let mut templates: Vec<String> = agents.iter().map(|a| a.template.clone()).collect();
        templates.sort();
        templates.dedup();
        for t in templates {
            let _ = env.add_template_owned(t.clone(), t);
        }
        let providers = cfg.providers.iter().map(|(n, p)| (n.clone(), Provider::new(n, p))).collect();
        let mut breakers = BTreeMap::new();
        if let Some(b) = &cfg.breaker {
            for name in cfg.providers.keys() {
                let restored_state = restored.as_ref().and_then(|s| s.breakers.get(name));
                breakers.insert(
                    name.clone(),
                    match restored_state {
                        Some((state, until)) => Breaker::restore(b, *state, *until),
                        None => Breaker::new(b),
                    },
                );
            }
        }
        let ledger = match &restored {
            Some(s) => {
                ctx.ledger.add_spent(s.spent_nanos);
                Ledger::with_spent(cfg.budget_usd, s.spent_nanos, s.calls)
            }
            None => Ledger::new(cfg.budget_usd),
        };
        let terminated: HashSet<String> =
            restored.as_ref().map(|s| s.terminated.iter().cloned().collect()).unwrap_or_default();
        for a in agents.iter().filter(|a| terminated.contains(&*a.name)) {
            a.cancel.cancel();
        }
        Orchestration {
            cfg,
            ctx,
            providers,
            breakers: Mutex::new(breakers),
            cache: Mutex::new(HashMap::new()),
            ledger,
            agents,
            terminated: Mutex::new(terminated),
            start_ms: ctx.clock.elapsed_ms(),
            budget_hit: AtomicBool::new(false),
            expected_usd: Mutex::new(0.0),
            env,
            vars: minijinja::Value::from(minijinja::value::Serde(&*ctx.vars)),
            restored,
        }
    }

    /// Plan-time milliseconds since the stage (first) started.
    fn plan_ms(&self) -> f64 {
        (self.ctx.clock.elapsed_ms() - self.start_ms) / self.ctx.clock.scale()
    }

    fn emit(&self, ev: crate::events::Event) {
        self.ctx.events.emit(ev);
    }

    /// (extra failure rate, down) for a provider now, from the plan's faults.
    fn fault_state(&self, provider: &str) -> (f64, bool) {
        let now = self.plan_ms();
        let mut extra = 0.0;
        let mut down = false;
        for f in &self.cfg.faults {
            if f.provider.as_deref().is_some_and(|p| p != provider) {
                continue;
            }
            let at = f.at.0.as_secs_f64() * 1000.0;
            if let Some(len) = f.outage {
                down |= now >= at && now < at + len.0.as_secs_f64() * 1000.0;
            }
            if let (Some(rate), Some(len)) = (f.fail_rate, f.for_)
                && now >= at
                && now < at + len.0.as_secs_f64() * 1000.0
            {
                extra += rate;
            }
        }
        (extra, down)
    }

    /// Render an agent's prompt. `previous` is built once per round: cloning the answers into
    /// every call's context made a 10,000-agent round quadratic.
    fn render(&self, agent: &Agent, round: u32, previous: &minijinja::Value) -> String {
        let ctx = minijinja::context! {
            vars => self.vars.clone(),
            round => round + 1,
            agent => &*agent.name,
            role => &*agent.role,
            previous => previous.clone(),
        };
        self.env
            .get_template(&agent.template)
            .and_then(|t| t.render(ctx))
            .unwrap_or_else(|e| format!("(prompt template failed: {e})"))
    }

    /// An `llm_call` event: name `completion` for calls to a provider, `cache_hit` for answers
    /// from the cache.
    fn call_event(&self, agent: &Agent, provider: &Provider, round: u32, attempt: u32) -> crate::events::Event {
        self.ctx.events.event("llm_call").name("completion").agent(Arc::clone(&agent.name)).attrs(serde_json::json!({
            "provider": provider.name, "model": provider.model(), "role": &*agent.role, "round": round + 1, "attempt": attempt,
        }))
    }

    /// One agent answers one prompt: cache, breaker, budget, retries and failover.
    async fn call(&self, t: &Target, round: u32, prompt: &str) -> Result<Reply, CallError> {
        let agent = &*t.agent;
        let mut rng = StdRng::seed_from_u64(self.ctx.seed_for(&[&agent.name, &round.to_string(), &t.slot.to_string()]));
        let first = &self.providers[&agent.providers[0]];
        let cache_key = match self.cfg.cache {
            CacheMode::Off => None,
            CacheMode::Exact => Some(format!("{}\u{1f}{}\u{1f}{prompt}", first.name, first.model())),
            CacheMode::Normalized => Some(format!("{}\u{1f}{}\u{1f}{}", first.name, first.model(), normalize(prompt))),
        };
        if let Some(key) = &cache_key {
            let hit = self.cache.lock().ok().and_then(|c| c.get(key).cloned());
            if let Some(hit) = hit {
                // The original latency goes to attrs, never to latency_ms: cached calls must not
                // make latency look better than the provider is.
                let mut ev = self.call_event(agent, first, round, 1).name("cache_hit").ok(true);
                ev.tokens_in = Some(hit.reply.tokens_in as i64);
                ev.tokens_out = Some(hit.reply.tokens_out as i64);
                ev.cost_usd = Some(0.0);
                ev = ev.attrs(serde_json::json!({
                    "provider": first.name, "model": first.model(), "role": &*agent.role, "round": round + 1, "attempt": 1,
                    "cache_hit": true, "original_latency_ms": hit.latency_ms, "cost_nanos": 0,
                }));
                self.emit(ev);
                return Ok(hit.reply);
            }
        }
        let call_timeout = self.cfg.call_timeout.map(|d| d.0).unwrap_or(DEFAULT_CALL_TIMEOUT);
        let mut last = CallError::Unavailable;
        for (pi, pname) in agent.providers.iter().enumerate() {
            let provider = &self.providers[pname];
            if pi > 0 {
                self.emit(
                    self.ctx
                        .events
                        .event("failover")
                        .name(format!("{}->{pname}", agent.providers[pi - 1]))
                        .agent(Arc::clone(&agent.name))
                        .error(last.kind()),
                );
            }
            for attempt in 1..=self.cfg.retry.attempts.max(1) {
                if agent.cancel.is_cancelled() {
                    return Err(CallError::Terminated);
                }
                let admit = self
                    .breakers
                    .lock()
                    .ok()
                    .and_then(|mut b| b.get_mut(pname).map(|b| b.allow(self.ctx.clock.elapsed_ms())));
                match admit {
                    Some(Admit::No) => {
                        last = CallError::CircuitOpen;
                        self.emit(self.call_event(agent, provider, round, attempt).ok(false).error(last.kind()));
                        break;
                    }
                    Some(Admit::Probe) => {
                        self.emit(
                            self.ctx
                                .events
                                .event("breaker")
                                .name("half_open")
                                .attrs(serde_json::json!({ "provider": pname })),
                        );
                    }
                    _ => {}
                }
                let max = provider.max_cost_nanos(prompt);
                let (Some(stage_res), Some(run_res)) = (self.ledger.reserve(max), self.ctx.ledger.reserve(max)) else {
                    if !self.budget_hit.swap(true, Ordering::SeqCst) {
                        let spent = nanos_to_usd(self.ledger.spent().max(self.ctx.ledger.spent()));
                        self.emit(
                            self.ctx
                                .events
                                .event("budget_exceeded")
                                .agent(Arc::clone(&agent.name))
                                .value(spent, "usd")
                                .attrs(serde_json::json!({
                                    "stage_budget_usd": self.cfg.budget_usd,
                                    "stage_spent_usd": nanos_to_usd(self.ledger.spent()),
                                    "run_spent_usd": nanos_to_usd(self.ctx.ledger.spent()),
                                    "next_call_max_usd": nanos_to_usd(max),
                                })),
                        );
                    }
                    return Err(CallError::BudgetExceeded);
                };
                let (extra, down) = self.fault_state(pname);
                let t0 = self.ctx.clock.now();
                let result = tokio::select! {
                    r = provider.call(prompt, &mut rng, &self.ctx.clock, extra, down) => r,
                    _ = self.ctx.clock.sleep(call_timeout) => Err(CallError::Timeout),
                    _ = agent.cancel.cancelled() => Err(CallError::Terminated),
                };
                let latency = self.ctx.clock.now().duration_since(t0);
                let cost = result.as_ref().map(|r| provider.cost_nanos(r.tokens_in, r.tokens_out)).unwrap_or(0);
                stage_res.settle(cost);
                run_res.settle(cost);
                let mut ev = self.call_event(agent, provider, round, attempt).ok(result.is_ok()).latency(latency);
                let mut attrs = serde_json::json!({
                    "provider": pname, "model": provider.model(), "role": &*agent.role, "round": round + 1,
                    "attempt": attempt, "cache_hit": false, "cost_nanos": cost,
                });
                match &result {
                    Ok(r) => {
                        ev.tokens_in = Some(r.tokens_in as i64);
                        ev.tokens_out = Some(r.tokens_out as i64);
                        ev.cost_usd = Some(nanos_to_usd(cost));
                        if let Ok(mut e) = self.expected_usd.lock() {
                            *e += provider.expected_usd(r.tokens_in, r.tokens_out);
                        }
                        if self.cfg.trace {
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
                ev.attrs = Some(attrs.to_string());
                self.emit(ev);
                let change = self.breakers.lock().ok().and_then(|mut b| {
                    b.get_mut(pname).and_then(|b| b.record(self.ctx.clock.elapsed_ms(), result.is_ok()))
                });
                if let Some(state) = change {
                    self.emit(
                        self.ctx
                            .events
                            .event("breaker")
                            .name(state.as_str())
                            .attrs(serde_json::json!({ "provider": pname })),
                    );
                }
                match result {
                    Ok(reply) => {
                        if let (Some(key), Ok(mut c)) = (cache_key, self.cache.lock()) {
                            c.insert(key, Cached { reply: reply.clone(), latency_ms: latency.as_secs_f64() * 1000.0 });
                        }
                        return Ok(reply);
                    }
                    Err(e) => {
                        let retry_after = match &e {
                            CallError::RateLimited { retry_after } => *retry_after,
                            _ => None,
                        };
                        let again = e.retryable() && attempt < self.cfg.retry.attempts;
                        last = e;
                        if !again {
                            break;
                        }
                        let wait = backoff(&self.cfg.retry, attempt, retry_after, &mut rng);
                        self.emit(
                            self.ctx
                                .events
                                .event("retry")
                                .name(last.kind())
                                .agent(Arc::clone(&agent.name))
                                .value(wait.as_secs_f64() * 1000.0, "ms")
                                .attrs(
                                    serde_json::json!({ "provider": pname, "attempt": attempt, "round": round + 1 }),
                                ),
                        );
                        tokio::select! {
                            _ = self.ctx.clock.sleep(wait) => {}
                            _ = agent.cancel.cancelled() => return Err(CallError::Terminated),
                        }
                    }
                }
            }
            if matches!(last, CallError::Terminated | CallError::BudgetExceeded) {
                return Err(last);
            }
        }
        Err(last)
    }

    /// Who gets this round's prompt: live agents, plus (with `redistribute`) a live agent per
    /// terminated one.
    fn targets(&self) -> Vec<Target> {
        let dead = self.terminated.lock().map(|t| t.clone()).unwrap_or_default();
        let live: Vec<&Arc<Agent>> = self.agents.iter().filter(|a| !dead.contains(&*a.name)).collect();
        let mut out: Vec<Target> =
            live.iter().map(|a| Target { agent: Arc::clone(a), slot: 0, for_agent: None }).collect();
        if self.cfg.on_terminate == OnTerminate::Redistribute && !live.is_empty() {
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

    /// A live agent (same role first) to take over a terminated agent's prompt.
    fn replacement(&self, gone: &Target, n: u32) -> Option<Target> {
        let dead = self.terminated.lock().map(|t| t.clone()).unwrap_or_default();
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

    /// One round; returns the answers in target order (None for no answer).
    async fn round(&self, round: u32, previous: &[String]) -> Vec<Option<String>> {
        let targets = self.targets();
        let previous = &minijinja::Value::from(previous.to_vec());
        let expected = targets.len();
        let t0 = self.ctx.clock.elapsed_ms();
        let mut answers: Vec<Option<String>> = vec![None; expected];
        let mut timed_out = false;
        match self.cfg.pattern {
            Pattern::Sequential => {
                for (i, t) in targets.iter().enumerate() {
                    if self.ctx.cancel.is_cancelled() || self.budget_hit.load(Ordering::SeqCst) {
                        break;
                    }
                    let prompt = self.render(&t.agent, round, previous);
                    answers[i] = self.call(t, round, &prompt).await.ok().map(|r| r.text);
                }
            }
            Pattern::Gather | Pattern::Rounds => {
                let call = |i: usize, t: Target| {
                    let prompt = self.render(&t.agent, round, previous);
                    async move {
                        let r = self.call(&t, round, &prompt).await;
                        (i, t, r)
                    }
                };
                let mut pending: FuturesUnordered<_> =
                    targets.iter().enumerate().map(|(i, t)| call(i, t.clone())).collect();
                let mut handed_over = 0u32;
                let deadline = async {
                    match self.cfg.gather_timeout {
                        Some(d) => self.ctx.clock.sleep(d.0).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::pin!(deadline);
                let mut done = vec![false; expected];
                loop {
                    tokio::select! {
                        next = pending.next() => match next {
                            // An agent terminated mid-call: with `redistribute`, its prompt goes
                            // to a live agent within this same round.
                            Some((i, t, Err(CallError::Terminated))) if self.cfg.on_terminate == OnTerminate::Redistribute => {
                                handed_over += 1;
                                match self.replacement(&t, handed_over) {
                                    Some(r) => pending.push(call(i, r)),
                                    None => done[i] = true,
                                }
                            }
                            Some((i, _, r)) => {
                                done[i] = true;
                                answers[i] = r.ok().map(|r| r.text);
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
                    let waited = self.cfg.gather_timeout.map(|d| self.ctx.clock.scaled(d.0)).unwrap_or_default();
                    for t in targets.iter().zip(&done).filter(|(_, d)| !**d).map(|(t, _)| t) {
                        let provider = &self.providers[&t.agent.providers[0]];
                        self.emit(
                            self.call_event(&t.agent, provider, round, 1)
                                .ok(false)
                                .latency(waited)
                                .error("timeout (gather)")
                                .attrs(serde_json::json!({"provider": provider.name, "round": round + 1, "gather_timeout": true})),
                        );
                    }
                }
            }
        }
        let responses = answers.iter().filter(|a| a.is_some()).count();
        let need = self.cfg.min_responses.map(|n| n as usize).unwrap_or(self.agents.len());
        let ok = responses >= need.min(self.agents.len()).max(1);
        let mut ev = self
            .ctx
            .events
            .event("round")
            .name(format!("{:?}", self.cfg.pattern).to_lowercase())
            .ok(ok)
            .latency_ms(self.ctx.clock.elapsed_ms() - t0)
            .value(responses as f64, "responses")
            .attrs(serde_json::json!({
                "round": round + 1, "expected": expected, "responses": responses,
                "partial": responses < expected, "gather_timed_out": timed_out,
                "redistributed": targets.iter().filter_map(|t| t.for_agent.as_deref()).collect::<Vec<_>>(),
            }));
        if !ok {
            ev = ev.error(format!("{responses} of {need} required responses"));
        }
        self.emit(ev);
        answers
    }

    /// Apply the plan's faults at their times (runs beside the rounds).
    async fn faults(&self) {
        let mut faults: Vec<_> = self.cfg.faults.iter().collect();
        faults.sort_by_key(|f| f.at);
        for f in faults {
            let wait = (f.at.0.as_secs_f64() * 1000.0 - self.plan_ms()).max(0.0);
            if wait > 0.0 {
                self.ctx.clock.sleep(Duration::from_secs_f64(wait / 1000.0)).await;
            }
            let (name, detail) = if let Some(agent) = &f.terminate {
                if let Some(a) = self.agents.iter().find(|a| &*a.name == agent) {
                    a.cancel.cancel();
                }
                if let Ok(mut t) = self.terminated.lock() {
                    t.insert(agent.clone());
                }
                ("terminate", serde_json::json!({ "agent": agent, "on_terminate": self.cfg.on_terminate }))
            } else if let Some(len) = f.outage {
                ("outage", serde_json::json!({ "for_ms": len.0.as_secs_f64() * 1000.0, "provider": f.provider }))
            } else {
                (
                    "fail_rate",
                    serde_json::json!({ "rate": f.fail_rate, "for_ms": f.for_.map(|d| d.0.as_secs_f64() * 1000.0), "provider": f.provider }),
                )
            };
            let mut ev = self.ctx.events.event("fault").name(name).attrs(detail);
            if let Some(agent) = &f.terminate {
                ev = ev.agent(agent.as_str());
            }
            self.emit(ev);
        }
        std::future::pending::<()>().await;
    }

    fn state(&self, next_round: u32, previous: &[String]) -> serde_json::Value {
        let breakers = self
            .breakers
            .lock()
            .map(|b| b.iter().map(|(n, b)| (n.clone(), (b.state, b.open_until_ms))).collect())
            .unwrap_or_default();
        serde_json::to_value(State {
            next_round,
            spent_nanos: self.ledger.spent(),
            calls: self.ledger.calls(),
            terminated: self.terminated.lock().map(|t| t.iter().cloned().collect()).unwrap_or_default(),
            breakers,
            previous: previous.to_vec(),
        })
        .unwrap_or_default()
    }

    async fn rounds(&self) -> Outcome {
        let first = self.restored.as_ref().map_or(0, |s| s.next_round);
        let mut previous: Vec<String> = self.restored.as_ref().map(|s| s.previous.clone()).unwrap_or_default();
        for round in first..self.cfg.rounds.max(1) {
            if self.ctx.cancel.is_cancelled() {
                return Outcome::with(Status::Interrupted, "interrupted");
            }
            if self.budget_hit.load(Ordering::SeqCst) {
                break;
            }
            let answers = self.round(round, &previous).await;
            previous = answers.into_iter().flatten().collect();
            if let Some(n) = self.cfg.checkpoint_every
                && n > 0
                && (round + 1) % n == 0
                && round + 1 < self.cfg.rounds
            {
                if let Err(e) = self.ctx.checkpoint.save(self.state(round + 1, &previous)) {
                    return Outcome::with(Status::Error, format!("checkpoint failed: {e}"));
                }
                self.emit(
                    self.ctx
                        .events
                        .event("checkpoint")
                        .name("saved")
                        .attrs(serde_json::json!({ "next_round": round + 2 })),
                );
                if self.ctx.checkpoint.suspend_requested() {
                    return Outcome::with(Status::Interrupted, format!("suspended after round {}", round + 1));
                }
            }
        }
        Outcome::passed()
    }

    async fn run(self) -> Outcome {
        let outcome = tokio::select! {
            o = self.rounds() => o,
            _ = self.faults() => Outcome::passed(),
        };
        // The campaign's "cost accurate within 1%": the ledger against tokens × prices.
        let expected = self.expected_usd.lock().map(|e| *e).unwrap_or(0.0);
        let ledger_usd = nanos_to_usd(self.ledger.spent());
        if expected > 0.0 {
            let diff = (ledger_usd - expected).abs() / expected;
            self.emit(
                self.ctx
                    .events
                    .event("cost_check")
                    .name("ledger_vs_tokens")
                    .value(diff, "ratio")
                    .attrs(serde_json::json!({ "ledger_usd": ledger_usd, "tokens_times_prices_usd": expected })),
            );
        }
        // Every call's reservation must be settled or released by now: money still reserved
        // would mean a call outlived its round (an orphan).
        let outstanding = self.ledger.reserved();
        self.emit(
            self.ctx
                .events
                .event("cleanup")
                .name("reservations")
                .value(outstanding as f64, "nanos")
                .ok(outstanding == 0),
        );
        self.emit(self.ctx.events.event("ledger").name("stage").value(nanos_to_usd(self.ledger.spent()), "usd").attrs(
            serde_json::json!({
                "cost_nanos": self.ledger.spent(), "calls": self.ledger.calls(),
                "budget_usd": self.cfg.budget_usd, "run_cost_nanos": self.ctx.ledger.spent(),
            }),
        ));
        match outcome.status {
            Status::Passed if self.budget_hit.load(Ordering::SeqCst) => Outcome::with(
                Status::BudgetExceeded,
                format!("stopped before exceeding the budget (spent ${:.4})", nanos_to_usd(self.ledger.spent())),
            ),
            _ => outcome,
        }
    }
}
