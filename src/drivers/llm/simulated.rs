//! The `simulated` provider: latency, failures and tokens drawn from the plan's distributions
//! with the calling agent's seeded generator, every wait on the run clock — deterministic under
//! `--seed`, instant under the virtual clock. The order of the draws is part of the contract:
//! changing it changes every seeded run's events.

use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, LogNormal};

use super::config::{LatencyDist, Prices, SimulatedCfg, Tokens};
use super::provider::{CallError, Provider, Reply, Request};
use crate::drivers::BoxFuture;

/// How long a call takes to fail during an outage.
const OUTAGE_FAILURE: Duration = Duration::from_millis(50);
/// A failing call fails after this share of its drawn latency.
const FAILURE_LATENCY_SHARE: f64 = 0.2;

pub struct Simulated {
    name: String,
    cfg: SimulatedCfg,
}

impl Simulated {
    pub fn new(name: &str, cfg: SimulatedCfg) -> Simulated {
        Simulated { name: name.to_string(), cfg }
    }

    /// Pick a failure from the plan's error mix: 429 (with `retry_after`), 500 or 529.
    fn failure(&self, rng: &mut StdRng) -> CallError {
        let e = &self.cfg.errors;
        let total = e.rate_limited + e.server_error + e.overloaded;
        let pick = rng.random::<f64>() * total.max(1e-12);
        if pick < e.rate_limited {
            CallError::rate_limited(self.cfg.retry_after.map(|d| d.0))
        } else if pick < e.rate_limited + e.server_error {
            CallError::Status { code: 500, retry_after: None }
        } else {
            CallError::Status { code: 529, retry_after: None }
        }
    }

    async fn answer(&self, req: Request<'_>) -> Result<Reply, CallError> {
        let c = &self.cfg;
        let Request { rng, clock, conditions, .. } = req;
        if conditions.down {
            clock.sleep(OUTAGE_FAILURE).await;
            return Err(CallError::unavailable());
        }
        let u: f64 = rng.random();
        if u < c.timeout_rate {
            // Never answers: the caller's timeout (gather, call or stage) ends it.
            std::future::pending::<()>().await;
        }
        let lat = draw_latency(&c.latency, rng);
        if rng.random::<f64>() < (c.failure_rate + conditions.extra_fail_rate).min(1.0) {
            clock.sleep(lat.mul_f64(FAILURE_LATENCY_SHARE)).await;
            return Err(self.failure(rng));
        }
        let tin = draw_tokens(&c.tokens_in, rng);
        let tout = draw_tokens(&c.tokens_out, rng);
        let stream = c.first_token.map(|d| d.0).unwrap_or_default()
            + c.per_token.map(|d| d.0.saturating_mul(u32::try_from(tout).unwrap_or(u32::MAX))).unwrap_or_default();
        clock.sleep(lat.saturating_add(stream)).await;
        let choice = if rng.random::<bool>() { "cooperate" } else { "defect" };
        Ok(Reply { text: format!("{choice} ({tout} tokens)"), tokens_in: tin, tokens_out: tout })
    }
}

impl Provider for Simulated {
    fn name(&self) -> &str {
        &self.name
    }

    fn model(&self) -> &str {
        &self.cfg.model
    }

    fn prices(&self) -> Prices {
        Prices { per_million_in: self.cfg.price_in, per_million_out: self.cfg.price_out }
    }

    fn max_cost_nanos(&self, _prompt: &str) -> u64 {
        self.cost_nanos(self.cfg.tokens_in.max(), self.cfg.tokens_out.max())
    }

    fn call<'a>(&'a self, req: Request<'a>) -> BoxFuture<'a, Result<Reply, CallError>> {
        Box::pin(self.answer(req))
    }
}

fn draw_tokens(t: &Tokens, rng: &mut StdRng) -> u64 {
    match t {
        Tokens::Fixed(n) => *n,
        Tokens::Uniform { min, max } if max > min => rng.random_range(*min..=*max),
        Tokens::Uniform { min, .. } => *min,
    }
}

fn draw_latency(d: &LatencyDist, rng: &mut StdRng) -> Duration {
    match d {
        LatencyDist::Fixed { value } => value.0,
        LatencyDist::Uniform { min, max } => {
            let (a, b) = (min.0.as_secs_f64(), max.0.as_secs_f64());
            Duration::from_secs_f64(if b > a { rng.random_range(a..b) } else { a })
        }
        LatencyDist::Lognormal { median, p99 } => {
            let mu = median.0.as_secs_f64().max(1e-6).ln();
            // z(0.99) = 2.3263: the p99 fixes sigma.
            let sigma = ((p99.0.as_secs_f64().max(1e-6).ln() - mu) / 2.326_347_874).max(1e-9);
            let d = LogNormal::new(mu, sigma).map(|d| d.sample(rng)).unwrap_or(median.0.as_secs_f64());
            Duration::from_secs_f64(d.min(86_400.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::clock::Clock;
    use crate::drivers::llm::config::ProviderCfg;
    use crate::drivers::llm::provider::Conditions;

    fn sim(extra: &str) -> Simulated {
        let text = format!(
            r#"{{"kind": "simulated", "latency": {{"dist": "fixed", "value": "2s"}}, "tokens_in": 10, "tokens_out": 20, "price_in": 3.0, "price_out": 15.0 {extra}}}"#
        );
        match serde_json::from_str::<ProviderCfg>(&text).unwrap() {
            ProviderCfg::Simulated(c) => Simulated::new("sim", c),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn answers_after_its_latency_and_costs_tokens_times_prices() {
        let p = sim("");
        let clock = Clock::new(1.0, 0.0, true);
        let mut rng = StdRng::seed_from_u64(1);
        let req = Request { prompt: "hi", rng: &mut rng, clock: &clock, conditions: Conditions::default() };
        let r = p.call(req).await.unwrap();
        assert_eq!((r.tokens_in, r.tokens_out), (10, 20));
        assert_eq!(clock.elapsed_ms(), 2000.0);
        assert_eq!(p.cost_nanos(10, 20), 10 * 3000 + 20 * 15_000);
        assert_eq!(p.max_cost_nanos("anything"), p.cost_nanos(10, 20));
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_is_a_503_and_a_rate_limit_carries_its_retry_after() {
        let p = sim(
            r#", "failure_rate": 1.0, "retry_after": "7s", "errors": {"rate_limited": 1.0, "server_error": 0.0, "overloaded": 0.0}"#,
        );
        let clock = Clock::new(1.0, 0.0, true);
        let mut rng = StdRng::seed_from_u64(1);
        let down = Conditions { extra_fail_rate: 0.0, down: true };
        let e = p.call(Request { prompt: "", rng: &mut rng, clock: &clock, conditions: down }).await.unwrap_err();
        assert_eq!((e.kind(), e.status()), ("unavailable", Some(503)));
        let e = p.call(Request { prompt: "", rng: &mut rng, clock: &clock, conditions: Conditions::default() }).await;
        assert_eq!(e, Err(CallError::rate_limited(Some(Duration::from_secs(7)))));
    }
}
