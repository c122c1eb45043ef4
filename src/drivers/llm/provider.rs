//! The provider seam: a `Provider` answers one prompt. The call path (`call`) owns everything
//! around an answer — cache, breaker, budget, retries, failover, events — and sees a provider
//! only through this trait, so unit tests drive it with a scripted in-memory provider. The two
//! real implementations are `simulated` and `openai`; `build` picks one from the plan.
//! This file also owns the call's vocabulary: `Reply` and `CallError` (the `error` and
//! `status` columns).

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;

use super::config::{Prices, ProviderCfg};
use super::openai::OpenAi;
use super::simulated::Simulated;
use crate::clock::Clock;
use crate::drivers::BoxFuture;

/// An answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub text: String,
    pub tokens_in: u64,
    pub tokens_out: u64,
}

/// Why a call failed, in the driver's vocabulary (the `error` column; `status` for HTTP).
#[derive(Clone, Debug, PartialEq)]
pub enum CallError {
    /// The provider answered with an error status (HTTP, or the simulation's stand-in for one),
    /// with the Retry-After it carried.
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// No answer within `call_timeout` (or the client's own timeout).
    Timeout,
    /// The agent was terminated (a fault) or the stage cancelled while the call was running.
    Terminated,
    /// Not made: the provider's circuit breaker is open.
    CircuitOpen,
    /// Not made: it could have taken spending past a budget.
    BudgetExceeded,
    Transport(String),
    BadResponse(String),
}

impl CallError {
    /// 429 Too Many Requests.
    pub fn rate_limited(retry_after: Option<Duration>) -> CallError {
        CallError::Status { code: 429, retry_after }
    }

    /// 503 Service Unavailable (what an outage fault makes every call return).
    pub fn unavailable() -> CallError {
        CallError::Status { code: 503, retry_after: None }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Status { code: 429, .. } => "rate_limited",
            CallError::Status { code: 503, .. } => "unavailable",
            // Not in RFC 9110; the "overloaded" status of Anthropic's API and the simulation.
            CallError::Status { code: 529, .. } => "overloaded",
            CallError::Status { code: 500..=599, .. } => "server_error",
            CallError::Status { .. } => "client_error",
            CallError::Timeout => "timeout",
            CallError::Terminated => "terminated",
            CallError::CircuitOpen => "circuit_open",
            CallError::BudgetExceeded => "budget_exceeded",
            CallError::Transport(_) => "transport",
            CallError::BadResponse(_) => "bad_response",
        }
    }

    /// The HTTP status the provider answered with.
    pub fn status(&self) -> Option<i64> {
        match self {
            CallError::Status { code, .. } => Some(i64::from(*code)),
            _ => None,
        }
    }

    /// How long the provider asked us to wait before trying again, whatever the status.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Worth another attempt: rate limits, server errors, timeouts and transport errors are;
    /// a client error (401, 404…) will fail the same way again.
    pub fn retryable(&self) -> bool {
        match self {
            CallError::Status { code, .. } => *code == 408 || *code == 429 || *code >= 500,
            CallError::Timeout | CallError::Transport(_) => true,
            CallError::Terminated | CallError::CircuitOpen | CallError::BudgetExceeded | CallError::BadResponse(_) => {
                false
            }
        }
    }

    /// Ends the whole call, not just this provider's attempts: no failover.
    pub fn ends_call(&self) -> bool {
        matches!(self, CallError::Terminated | CallError::BudgetExceeded)
    }

    /// The `error` column.
    pub fn detail(&self) -> String {
        match self {
            CallError::Transport(m) | CallError::BadResponse(m) => format!("{}: {m}", self.kind()),
            _ => self.kind().to_string(),
        }
    }
}

/// The plan's faults as they stand for one call to one provider.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Conditions {
    /// Failure rate added by `fail_rate` faults (simulated providers only).
    pub extra_fail_rate: f64,
    /// An `outage` fault: the call fails with `unavailable`.
    pub down: bool,
}

/// One call to a provider.
pub struct Request<'a> {
    pub prompt: &'a str,
    /// The calling agent's generator, seeded for this agent, round and slot.
    pub rng: &'a mut StdRng,
    /// Every wait goes through the run clock.
    pub clock: &'a Clock,
    pub conditions: Conditions,
}

/// Nano-dollars per token for a price in dollars per million tokens.
fn per_token_nanos(price_per_million: f64) -> f64 {
    price_per_million * 1000.0
}

/// Something that answers prompts.
///
/// * `call` answers one prompt or says why not. It must return promptly when its future is
///   dropped (the call path drops it on `call_timeout`, termination or cancellation) and must
///   wait only through `req.clock`. It never retries: the call path does.
/// * `max_cost_nanos` bounds what a call for this prompt can cost; the call path reserves it
///   against the budgets before calling.
pub trait Provider: Send + Sync {
    fn name(&self) -> &str;
    fn model(&self) -> &str;
    fn prices(&self) -> Prices;
    fn max_cost_nanos(&self, prompt: &str) -> u64;
    fn call<'a>(&'a self, req: Request<'a>) -> BoxFuture<'a, Result<Reply, CallError>>;

    /// Exact cost of a call in nano-dollars.
    fn cost_nanos(&self, tokens_in: u64, tokens_out: u64) -> u64 {
        let p = self.prices();
        (tokens_in as f64 * per_token_nanos(p.per_million_in) + tokens_out as f64 * per_token_nanos(p.per_million_out))
            .round() as u64
    }

    /// The same cost as tokens × price per million, in floating-point dollars (a cross-check).
    fn expected_usd(&self, tokens_in: u64, tokens_out: u64) -> f64 {
        let p = self.prices();
        tokens_in as f64 * p.per_million_in / 1e6 + tokens_out as f64 * p.per_million_out / 1e6
    }
}

/// The provider a plan's `providers.NAME` table describes.
pub fn build(name: &str, cfg: &ProviderCfg) -> Arc<dyn Provider> {
    match cfg {
        ProviderCfg::Simulated(c) => Arc::new(Simulated::new(name, c.clone())),
        ProviderCfg::Openai(c) => Arc::new(OpenAi::new(name, c.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_kind_follows_the_http_status() {
        let kinds: Vec<&str> = [429, 503, 529, 500, 502, 401, 404]
            .iter()
            .map(|c| CallError::Status { code: *c, retry_after: None }.kind())
            .collect();
        assert_eq!(
            kinds,
            [
                "rate_limited",
                "unavailable",
                "overloaded",
                "server_error",
                "server_error",
                "client_error",
                "client_error"
            ]
        );
        assert_eq!(CallError::Status { code: 401, retry_after: None }.status(), Some(401));
        assert!(!CallError::Status { code: 401, retry_after: None }.retryable());
        assert!(CallError::Status { code: 503, retry_after: None }.retryable());
        let wait = Some(Duration::from_secs(3));
        assert_eq!(CallError::Status { code: 503, retry_after: wait }.retry_after(), wait);
    }
}
