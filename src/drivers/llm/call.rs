//! The call path: one agent answers one prompt. In order — the cache; then each provider of
//! the agent's failover chain; for each, up to `retry.attempts` attempts, each one admitted by
//! the provider's circuit breaker, its largest possible cost reserved against the stage's and
//! the run's budgets, made under `call_timeout`, settled, recorded on the breaker; between
//! attempts a backoff (or the provider's Retry-After) unless the breaker has opened. Providers
//! are reached only through the `Provider` trait, so the tests below drive all of this with a
//! scripted provider.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::config::{CacheMode, LlmCfg};
use super::events::{Attempt, Events};
use super::faults::Faults;
use super::provider::{CallError, Provider, Reply, Request};
use super::resilience::{Admit, Breaker, BreakerState, backoff};
use super::roster::{Agent, Target};
use crate::drivers::StageContext;
use crate::drivers::ledger::{Ledger, Reservation, nanos_to_usd};

/// Without a `call_timeout`, a call is still never waited on for longer than this.
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(600);

/// An answer and how long it took.
struct Answer {
    reply: Reply,
    latency: Duration,
}

#[derive(Clone)]
struct Cached {
    reply: Reply,
    latency_ms: f64,
}

/// What the call path carries over a checkpoint.
pub struct Restored<'s> {
    pub spent_nanos: u64,
    pub calls: u64,
    pub expected_usd: f64,
    pub breakers: &'s BTreeMap<String, (BreakerState, f64)>,
}

pub struct CallPath<'a> {
    cfg: &'a LlmCfg,
    ctx: &'a StageContext,
    events: Events<'a>,
    faults: Faults<'a>,
    providers: BTreeMap<String, Arc<dyn Provider>>,
    breakers: Mutex<BTreeMap<String, Breaker>>,
    cache: Mutex<HashMap<String, Cached>>,
    /// The stage's own ledger (its `budget_usd`); the run's is `ctx.ledger`.
    ledger: Ledger,
    budget_hit: AtomicBool,
    /// Σ tokens × price in floating point, kept beside the integer ledger as a cross-check.
    expected_usd: Mutex<f64>,
}

fn normalize(prompt: &str) -> String {
    prompt.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

impl<'a> CallPath<'a> {
    pub fn new(
        cfg: &'a LlmCfg,
        ctx: &'a StageContext,
        faults: Faults<'a>,
        providers: BTreeMap<String, Arc<dyn Provider>>,
        restored: Option<Restored<'_>>,
    ) -> CallPath<'a> {
        let mut breakers = BTreeMap::new();
        if let Some(b) = &cfg.breaker {
            for name in providers.keys() {
                let breaker = match restored.as_ref().and_then(|r| r.breakers.get(name)) {
                    Some((state, until)) => Breaker::restore(b, *state, *until),
                    None => Breaker::new(b),
                };
                breakers.insert(name.clone(), breaker);
            }
        }
        let ledger = match &restored {
            Some(r) => {
                ctx.ledger.add_spent(r.spent_nanos);
                Ledger::with_spent(cfg.budget_usd, r.spent_nanos, r.calls)
            }
            None => Ledger::new(cfg.budget_usd),
        };
        CallPath {
            cfg,
            ctx,
            events: Events::new(&ctx.events),
            faults,
            providers,
            breakers: Mutex::new(breakers),
            cache: Mutex::new(HashMap::new()),
            ledger,
            budget_hit: AtomicBool::new(false),
            expected_usd: Mutex::new(restored.map_or(0.0, |r| r.expected_usd)),
        }
    }

    /// A call was refused because it could have passed a budget.
    pub fn budget_hit(&self) -> bool {
        self.budget_hit.load(Ordering::SeqCst)
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn expected_usd(&self) -> f64 {
        self.expected_usd.lock().map(|e| *e).unwrap_or(0.0)
    }

    pub fn breaker_states(&self) -> BTreeMap<String, (BreakerState, f64)> {
        self.breakers
            .lock()
            .map(|b| b.iter().map(|(n, b)| (n.clone(), (b.state, b.open_until_ms))).collect())
            .unwrap_or_default()
    }

    /// The provider an agent tries first.
    pub fn first_provider(&self, agent: &Agent) -> Option<&dyn Provider> {
        agent.providers.first().and_then(|n| self.providers.get(n)).map(|p| &**p)
    }

    /// One agent answers one prompt: cache, then each provider of its chain.
    pub async fn call(&self, t: &Target, round: u32, prompt: &str) -> Result<Reply, CallError> {
        let agent = &*t.agent;
        let mut rng = StdRng::seed_from_u64(self.ctx.seed_for(&[&agent.name, &round.to_string(), &t.slot.to_string()]));
        let key = self.cache_key(agent, prompt);
        if let Some(reply) = self.cached(key.as_deref(), agent, round) {
            return Ok(reply);
        }
        let mut last: Option<CallError> = None;
        for (i, name) in agent.providers.iter().enumerate() {
            if let Some(why) = &last {
                self.events.failover(agent, &agent.providers[i - 1], name, why);
            }
            match self.with_provider(agent, name, round, prompt, &mut rng).await {
                Ok(answer) => {
                    self.remember(key, &answer);
                    return Ok(answer.reply);
                }
                Err(e) if e.ends_call() => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| CallError::Transport(format!("agent {} has no provider", agent.name))))
    }

    /// The cache key, when the cache is on: the agent's first provider, its model and the
    /// (normalized) prompt.
    fn cache_key(&self, agent: &Agent, prompt: &str) -> Option<String> {
        let p = self.first_provider(agent)?;
        match self.cfg.cache {
            CacheMode::Off => None,
            CacheMode::Exact => Some(format!("{}\u{1f}{}\u{1f}{prompt}", p.name(), p.model())),
            CacheMode::Normalized => Some(format!("{}\u{1f}{}\u{1f}{}", p.name(), p.model(), normalize(prompt))),
        }
    }

    /// A cached answer, recorded as a `cache_hit`.
    fn cached(&self, key: Option<&str>, agent: &Agent, round: u32) -> Option<Reply> {
        let hit = self.cache.lock().ok()?.get(key?).cloned()?;
        let provider = self.first_provider(agent)?;
        self.events.cache_hit(&Attempt { agent, provider, round, attempt: 1 }, &hit.reply, hit.latency_ms);
        Some(hit.reply)
    }

    fn remember(&self, key: Option<String>, answer: &Answer) {
        if let (Some(key), Ok(mut c)) = (key, self.cache.lock()) {
            c.insert(key, Cached { reply: answer.reply.clone(), latency_ms: answer.latency.as_secs_f64() * 1000.0 });
        }
    }

    /// Up to `retry.attempts` attempts at one provider.
    async fn with_provider(
        &self,
        agent: &Agent,
        name: &str,
        round: u32,
        prompt: &str,
        rng: &mut StdRng,
    ) -> Result<Answer, CallError> {
        let provider =
            self.providers.get(name).ok_or_else(|| CallError::Transport(format!("no provider named {name}")))?.as_ref();
        let mut attempt = 1;
        loop {
            if agent.cancel.is_cancelled() {
                return Err(CallError::Terminated);
            }
            let at = Attempt { agent, provider, round, attempt };
            self.admit(&at)?;
            let error = match self.attempt(&at, prompt, rng).await {
                Ok(answer) => return Ok(answer),
                Err(e) => e,
            };
            let Some(wait) = self.retry_wait(&error, name, attempt, rng) else { return Err(error) };
            self.events.retry(&at, &error, wait);
            tokio::select! {
                _ = self.ctx.clock.sleep(wait) => {}
                _ = agent.cancel.cancelled() => return Err(CallError::Terminated),
            }
            attempt += 1;
        }
    }

    /// Ask the provider's breaker: an open one refuses the call (recorded as `circuit_open`);
    /// past its cooldown it lets one probe through.
    fn admit(&self, at: &Attempt<'_>) -> Result<(), CallError> {
        let name = at.provider.name();
        let now = self.ctx.clock.elapsed_ms();
        let admit = self.breakers.lock().ok().and_then(|mut b| b.get_mut(name).map(|b| b.allow(now)));
        match admit {
            Some(Admit::No) => {
                self.events.circuit_open(at);
                Err(CallError::CircuitOpen)
            }
            Some(Admit::Probe) => {
                self.events.breaker(name, BreakerState::HalfOpen);
                Ok(())
            }
            Some(Admit::Yes) | None => Ok(()),
        }
    }

    /// Reserve the call's largest possible cost against both budgets, or refuse it (the first
    /// refusal writes `budget_exceeded`).
    fn reserve(&self, agent: &Agent, max: u64) -> Result<(Reservation<'_>, Reservation<'_>), CallError> {
        if let (Some(stage), Some(run)) = (self.ledger.reserve(max), self.ctx.ledger.reserve(max)) {
            return Ok((stage, run));
        }
        if !self.budget_hit.swap(true, Ordering::SeqCst) {
            let budgets = serde_json::json!({
                "stage_budget_usd": self.cfg.budget_usd,
                "stage_spent_usd": nanos_to_usd(self.ledger.spent()),
                "run_spent_usd": nanos_to_usd(self.ctx.ledger.spent()),
                "next_call_max_usd": nanos_to_usd(max),
            });
            self.events.budget_exceeded(agent, budgets, nanos_to_usd(self.ledger.spent().max(self.ctx.ledger.spent())));
        }
        Err(CallError::BudgetExceeded)
    }

    /// One attempt: reserve, call under the timeout, settle, record the row and the breaker.
    async fn attempt(&self, at: &Attempt<'_>, prompt: &str, rng: &mut StdRng) -> Result<Answer, CallError> {
        let provider = at.provider;
        let (stage_res, run_res) = self.reserve(at.agent, provider.max_cost_nanos(prompt))?;
        let clock = &self.ctx.clock;
        let conditions = self.faults.conditions(clock, provider.name());
        let timeout = self.cfg.call_timeout.map(|d| d.0).unwrap_or(DEFAULT_CALL_TIMEOUT);
        let t0 = clock.now();
        let result = tokio::select! {
            r = provider.call(Request { prompt, rng, clock, conditions }) => r,
            _ = clock.sleep(timeout) => Err(CallError::Timeout),
            _ = at.agent.cancel.cancelled() => Err(CallError::Terminated),
        };
        let latency = clock.now().duration_since(t0);
        let cost = result.as_ref().map(|r| provider.cost_nanos(r.tokens_in, r.tokens_out)).unwrap_or(0);
        stage_res.settle(cost);
        run_res.settle(cost);
        if let (Ok(r), Ok(mut e)) = (&result, self.expected_usd.lock()) {
            *e += provider.expected_usd(r.tokens_in, r.tokens_out);
        }
        self.events.attempt(at, &result, latency, cost, self.cfg.trace.then_some(prompt));
        self.record(provider.name(), result.is_ok());
        result.map(|reply| Answer { reply, latency })
    }

    /// Tell the provider's breaker how the call went.
    fn record(&self, name: &str, ok: bool) {
        let now = self.ctx.clock.elapsed_ms();
        let change = self.breakers.lock().ok().and_then(|mut b| b.get_mut(name).and_then(|b| b.record(now, ok)));
        if let Some(state) = change {
            self.events.breaker(name, state);
        }
    }

    /// How long to wait before trying this provider again, or None to stop trying it: the
    /// error is final, the attempts are used up, or its breaker is no longer closed (a wait
    /// would only end in `circuit_open`).
    fn retry_wait(&self, e: &CallError, name: &str, attempt: u32, rng: &mut StdRng) -> Option<Duration> {
        if !e.retryable() || attempt >= self.cfg.retry.attempts {
            return None;
        }
        let closed = self.breakers.lock().map(|b| b.get(name).is_none_or(|b| b.state == BreakerState::Closed));
        if !closed.unwrap_or(true) {
            return None;
        }
        Some(backoff(&self.cfg.retry, attempt, e.retry_after(), rng))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::drivers::llm::testkit::{Harness, Scripted, Step, cfg};

    const SECOND: Duration = Duration::from_secs(1);

    fn http(code: u16) -> Step {
        Step::Fail(CallError::Status { code, retry_after: None })
    }

    fn path<'a>(h: &'a Harness, cfg: &'a LlmCfg, providers: &[&Arc<Scripted>]) -> CallPath<'a> {
        let map = providers.iter().map(|p| (p.name().to_string(), Arc::clone(*p) as Arc<dyn Provider>)).collect();
        CallPath::new(cfg, &h.ctx, Faults::new(&[], 0.0), map, None)
    }

    fn waits(h: &Harness) -> Vec<f64> {
        h.of_kind("retry").iter().map(|r| r.value.unwrap()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn retries_a_failing_provider_until_it_answers() {
        let h = Harness::new(None);
        let cfg = cfg(json!({"retry": {"attempts": 3, "base": "1s", "cap": "1s"}}));
        let a = Scripted::new("a", SECOND, vec![http(500), http(502)]);
        let reply = path(&h, &cfg, &[&a]).call(&h.target("x", &["a"]), 0, "hi").await;
        assert_eq!(reply.map(|r| r.text), Ok("ok".into()));
        assert_eq!(a.calls(), 3);
        let rows = h.of_kind("llm_call");
        let statuses: Vec<Option<i64>> = rows.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [Some(500), Some(502), None]);
        let w = waits(&h);
        assert_eq!(w.len(), 2);
        assert!(w.iter().all(|w| (500.0..=1000.0).contains(w)), "equal jitter of a 1 s cap: {w:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_sets_the_wait_whatever_the_status() {
        let h = Harness::new(None);
        let cfg = cfg(json!({"retry": {"attempts": 3, "base": "10ms", "cap": "20ms"}}));
        let seven = Some(Duration::from_secs(7));
        let a = Scripted::new(
            "a",
            SECOND,
            vec![
                Step::Fail(CallError::Status { code: 503, retry_after: seven }),
                Step::Fail(CallError::rate_limited(seven)),
            ],
        );
        assert!(path(&h, &cfg, &[&a]).call(&h.target("x", &["a"]), 0, "hi").await.is_ok());
        assert_eq!(waits(&h), [7000.0, 7000.0]);
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_wait_once_the_breaker_opens() {
        let h = Harness::new(None);
        let cfg = cfg(json!({
            "retry": {"attempts": 5, "base": "1s", "cap": "1s"},
            "breaker": {"failures": 2, "cooldown": "1h"},
        }));
        let a = Scripted::new("a", SECOND, vec![http(500); 10]);
        let b = Scripted::new("b", SECOND, vec![]);
        let calls = path(&h, &cfg, &[&a, &b]);
        assert!(calls.call(&h.target("x", &["a", "b"]), 0, "hi").await.is_ok());
        assert_eq!(a.calls(), 2, "the breaker opened at the second failure");
        assert_eq!(waits(&h).len(), 1, "only the wait before the second attempt");
        let seen: Vec<String> =
            h.events().iter().map(|e| format!("{}:{}", e.kind, e.name.as_deref().unwrap_or(""))).collect();
        assert_eq!(
            seen,
            [
                "llm_call:completion",
                "retry:server_error",
                "llm_call:completion",
                "breaker:open",
                "failover:a->b",
                "llm_call:completion"
            ]
        );
        assert_eq!(h.of_kind("failover")[0].error.as_deref(), Some("server_error"));
        // The next call is refused at the breaker without reaching the provider.
        assert!(calls.call(&h.target("y", &["a", "b"]), 0, "hi").await.is_ok());
        assert_eq!(a.calls(), 2);
        assert_eq!(h.of_kind("failover")[1].error.as_deref(), Some("circuit_open"));
        assert!(h.of_kind("llm_call").iter().any(|r| r.error.as_deref() == Some("circuit_open")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_error_is_not_retried_and_fails_over() {
        let h = Harness::new(None);
        let cfg = cfg(json!({"retry": {"attempts": 3}}));
        let a = Scripted::new("a", SECOND, vec![http(401)]);
        let b = Scripted::new("b", SECOND, vec![]);
        assert!(path(&h, &cfg, &[&a, &b]).call(&h.target("x", &["a", "b"]), 0, "hi").await.is_ok());
        assert_eq!((a.calls(), b.calls()), (1, 1));
        assert!(waits(&h).is_empty());
        let rows = h.of_kind("llm_call");
        assert_eq!((rows[0].status, rows[0].error.as_deref()), (Some(401), Some("client_error")));
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_refuses_a_call_that_could_pass_it_before_calling() {
        let h = Harness::new(None);
        // A call costs (10 + 10 tokens) x $1 per million = 20,000 nano-dollars: room for one.
        let cfg = cfg(json!({"budget_usd": 0.00003}));
        let a = Scripted::new("a", SECOND, vec![]);
        let b = Scripted::new("b", SECOND, vec![]);
        let calls = path(&h, &cfg, &[&a, &b]);
        let t = h.target("x", &["a", "b"]);
        assert!(calls.call(&t, 0, "hi").await.is_ok());
        assert_eq!(calls.call(&t, 1, "hi").await, Err(CallError::BudgetExceeded));
        assert_eq!(calls.call(&t, 2, "hi").await, Err(CallError::BudgetExceeded));
        assert_eq!((a.calls(), b.calls()), (1, 0), "no failover past a budget");
        assert_eq!(h.of_kind("budget_exceeded").len(), 1);
        assert!(calls.budget_hit());
        assert_eq!((calls.ledger().spent(), calls.ledger().reserved()), (20_000, 0));
        assert_eq!(h.ctx.ledger.reserved(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_run_budget_binds_as_well() {
        let h = Harness::new(Some(0.00001));
        let cfg = cfg(json!({}));
        let a = Scripted::new("a", SECOND, vec![]);
        assert_eq!(path(&h, &cfg, &[&a]).call(&h.target("x", &["a"]), 0, "hi").await, Err(CallError::BudgetExceeded));
        assert_eq!(a.calls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn call_timeout_ends_a_call_that_never_answers() {
        let h = Harness::new(None);
        let cfg = cfg(json!({"call_timeout": "5s", "retry": {"attempts": 2, "base": "1s", "cap": "1s"}}));
        let a = Scripted::new("a", SECOND, vec![Step::Hang]);
        assert!(path(&h, &cfg, &[&a]).call(&h.target("x", &["a"]), 0, "hi").await.is_ok());
        let first = &h.of_kind("llm_call")[0];
        assert_eq!((first.error.as_deref(), first.latency_ms), (Some("timeout"), Some(5000.0)));
        assert_eq!(h.ctx.ledger.reserved(), 0, "the abandoned call's reservation was released");
    }

    #[tokio::test(start_paused = true)]
    async fn terminating_the_agent_during_a_retry_wait_ends_the_call() {
        let h = Harness::new(None);
        let cfg = cfg(json!({"retry": {"attempts": 3, "base": "10s", "cap": "10s"}}));
        let a = Scripted::new("a", SECOND, vec![http(500); 3]);
        let calls = path(&h, &cfg, &[&a]);
        let t = h.target("x", &["a"]);
        let stop = async {
            h.ctx.clock.sleep(2 * SECOND).await;
            t.agent.cancel.cancel();
        };
        let (result, ()) = tokio::join!(calls.call(&t, 0, "hi"), stop);
        assert_eq!(result, Err(CallError::Terminated));
        assert_eq!(a.calls(), 1);
        assert_eq!(h.ctx.clock.elapsed_ms(), 2000.0, "the wait ended at the termination");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cache_hit_costs_nothing_and_reports_no_latency() {
        let h = Harness::new(None);
        let cfg = cfg(json!({"cache": "normalized"}));
        let a = Scripted::new("a", SECOND, vec![]);
        let calls = path(&h, &cfg, &[&a]);
        assert!(calls.call(&h.target("x", &["a"]), 0, "Same  question").await.is_ok());
        assert!(calls.call(&h.target("y", &["a"]), 1, "same question").await.is_ok());
        assert_eq!(a.calls(), 1);
        let hit = h.events().into_iter().find(|e| e.name.as_deref() == Some("cache_hit")).expect("a cache hit");
        assert_eq!((hit.latency_ms, hit.cost_usd, hit.ok), (None, Some(0.0), Some(true)));
        assert_eq!(calls.ledger().spent(), 20_000);
    }
}
