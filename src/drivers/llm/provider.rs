//! Providers answer one prompt. `simulated` draws latency, failures and tokens from the plan's
//! distributions with the calling agent's seeded RNG and waits on the run clock, so it is
//! deterministic under `--seed` and instant under the virtual clock. `openai` posts to any
//! OpenAI-compatible `/chat/completions` endpoint, reading its key from the environment variable
//! the plan names; tokens and cost come from the response's `usage`.

use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, LogNormal};

use super::config::{LatencyDist, ProviderCfg, Tokens};
use crate::clock::Clock;

/// Why a call failed, in the driver's vocabulary (the `error` column).
#[derive(Clone, Debug, PartialEq)]
pub enum CallError {
    RateLimited {
        retry_after: Option<Duration>,
    },
    ServerError(u16),
    Overloaded,
    Timeout,
    Unavailable,
    Terminated,
    CircuitOpen,
    /// Not made: it could have taken spending past a budget.
    BudgetExceeded,
    Transport(String),
    BadResponse(String),
}

impl CallError {
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::RateLimited { .. } => "rate_limited",
            CallError::ServerError(_) => "server_error",
            CallError::Overloaded => "overloaded",
            CallError::Timeout => "timeout",
            CallError::Unavailable => "unavailable",
            CallError::Terminated => "terminated",
            CallError::CircuitOpen => "circuit_open",
            CallError::BudgetExceeded => "budget_exceeded",
            CallError::Transport(_) => "transport",
            CallError::BadResponse(_) => "bad_response",
        }
    }

    pub fn status(&self) -> Option<i64> {
        match self {
            CallError::RateLimited { .. } => Some(429),
            CallError::ServerError(s) => Some(*s as i64),
            CallError::Overloaded => Some(529),
            CallError::Unavailable => Some(503),
            _ => None,
        }
    }

    pub fn retryable(&self) -> bool {
        !matches!(
            self,
            CallError::Terminated | CallError::BadResponse(_) | CallError::CircuitOpen | CallError::BudgetExceeded
        )
    }

    pub fn detail(&self) -> String {
        match self {
            CallError::Transport(m) | CallError::BadResponse(m) => format!("{}: {m}", self.kind()),
            _ => self.kind().to_string(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Reply {
    pub text: String,
    pub tokens_in: u64,
    pub tokens_out: u64,
}

pub struct Provider {
    pub name: String,
    pub cfg: ProviderCfg,
    http: Option<reqwest::Client>,
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

/// Nano-dollars per token for a price in dollars per million tokens.
fn per_token_nanos(price_per_million: f64) -> f64 {
    price_per_million * 1000.0
}

impl Provider {
    pub fn new(name: &str, cfg: &ProviderCfg) -> Provider {
        let http = match cfg {
            ProviderCfg::Openai { .. } => reqwest::Client::builder().build().ok(),
            ProviderCfg::Simulated { .. } => None,
        };
        Provider { name: name.to_string(), cfg: cfg.clone(), http }
    }

    pub fn model(&self) -> &str {
        match &self.cfg {
            ProviderCfg::Simulated { model, .. } | ProviderCfg::Openai { model, .. } => model,
        }
    }

    fn prices(&self) -> (f64, f64) {
        match &self.cfg {
            ProviderCfg::Simulated { price_in, price_out, .. } | ProviderCfg::Openai { price_in, price_out, .. } => {
                (*price_in, *price_out)
            }
        }
    }

    /// Exact cost of a call in nano-dollars.
    pub fn cost_nanos(&self, tokens_in: u64, tokens_out: u64) -> u64 {
        let (pi, po) = self.prices();
        (tokens_in as f64 * per_token_nanos(pi) + tokens_out as f64 * per_token_nanos(po)).round() as u64
    }

    /// The same cost as tokens × price per million, in floating-point dollars (a cross-check).
    pub fn expected_usd(&self, tokens_in: u64, tokens_out: u64) -> f64 {
        let (pi, po) = self.prices();
        tokens_in as f64 * pi / 1e6 + tokens_out as f64 * po / 1e6
    }

    /// An upper bound of a call's cost, reserved against budgets before the call.
    pub fn max_cost_nanos(&self, prompt: &str) -> u64 {
        match &self.cfg {
            ProviderCfg::Simulated { tokens_in, tokens_out, .. } => self.cost_nanos(tokens_in.max(), tokens_out.max()),
            // Prompts run at most ~1 token per byte; the answer at most max_tokens.
            ProviderCfg::Openai { max_tokens, .. } => self.cost_nanos(prompt.len() as u64 + 16, *max_tokens),
        }
    }

    /// One call. `extra_fail` is a fault's added failure rate; `down` an outage.
    pub async fn call(
        &self,
        prompt: &str,
        rng: &mut StdRng,
        clock: &Clock,
        extra_fail: f64,
        down: bool,
    ) -> Result<Reply, CallError> {
        match &self.cfg {
            ProviderCfg::Simulated {
                latency,
                first_token,
                per_token,
                failure_rate,
                errors,
                retry_after,
                timeout_rate,
                tokens_in,
                tokens_out,
                ..
            } => {
                if down {
                    clock.sleep(Duration::from_millis(50)).await;
                    return Err(CallError::Unavailable);
                }
                let u: f64 = rng.random();
                if u < *timeout_rate {
                    // Never answers: the caller's timeout (gather, call or stage) ends it.
                    std::future::pending::<()>().await;
                }
                let lat = draw_latency(latency, rng);
                if rng.random::<f64>() < (failure_rate + extra_fail).min(1.0) {
                    clock.sleep(lat.mul_f64(0.2)).await;
                    let total = errors.rate_limited + errors.server_error + errors.overloaded;
                    let pick = rng.random::<f64>() * total.max(1e-12);
                    return Err(if pick < errors.rate_limited {
                        CallError::RateLimited { retry_after: retry_after.map(|d| d.0) }
                    } else if pick < errors.rate_limited + errors.server_error {
                        CallError::ServerError(500)
                    } else {
                        CallError::Overloaded
                    });
                }
                let tin = draw_tokens(tokens_in, rng);
                let tout = draw_tokens(tokens_out, rng);
                let stream = first_token.map(|d| d.0).unwrap_or_default()
                    + per_token.map(|d| d.0 * tout as u32).unwrap_or_default();
                clock.sleep(lat + stream).await;
                let choice = if rng.random::<bool>() { "cooperate" } else { "defect" };
                Ok(Reply { text: format!("{choice} ({tout} tokens)"), tokens_in: tin, tokens_out: tout })
            }
            ProviderCfg::Openai { base_url, model, api_key_env, max_tokens, .. } => {
                if down {
                    return Err(CallError::Unavailable);
                }
                let Some(http) = &self.http else { return Err(CallError::Transport("no HTTP client".into())) };
                let url = format!("{}/chat/completions", base_url.trim_end_matches('/'));
                let body = serde_json::json!({
                    "model": model,
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": max_tokens,
                });
                let mut req = http.post(&url).json(&body);
                if let Some(var) = api_key_env {
                    match std::env::var(var) {
                        Ok(key) => req = req.bearer_auth(key),
                        Err(_) => return Err(CallError::Transport(format!("environment variable {var} is not set"))),
                    }
                }
                let resp = req.send().await.map_err(|e| {
                    if e.is_timeout() { CallError::Timeout } else { CallError::Transport(e.without_url().to_string()) }
                })?;
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .map(Duration::from_secs_f64);
                match status {
                    200..=299 => {}
                    429 => return Err(CallError::RateLimited { retry_after }),
                    503 | 529 => return Err(CallError::Overloaded),
                    s if s >= 500 => return Err(CallError::ServerError(s)),
                    s => return Err(CallError::BadResponse(format!("HTTP {s}"))),
                }
                let v: serde_json::Value =
                    resp.json().await.map_err(|e| CallError::BadResponse(format!("not JSON: {}", e.without_url())))?;
                let text = v["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_string();
                let usage = &v["usage"];
                let (Some(tin), Some(tout)) = (usage["prompt_tokens"].as_u64(), usage["completion_tokens"].as_u64())
                else {
                    return Err(CallError::BadResponse("response has no usage.prompt_tokens/completion_tokens".into()));
                };
                Ok(Reply { text, tokens_in: tin, tokens_out: tout })
            }
        }
    }
}
