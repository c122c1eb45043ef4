//! The `openai` provider: posts to any OpenAI-compatible `/chat/completions` endpoint, reading
//! its key from the environment variable the plan names (the key is never written anywhere).
//! Tokens and cost come from the response's `usage`. An error status is kept as it came
//! (`status` is the HTTP status) with the Retry-After it carried, whatever the status.

use std::time::Duration;

use reqwest::header::{DATE, HeaderMap, RETRY_AFTER};

use super::config::{OpenAiCfg, Prices};
use super::provider::{CallError, Provider, Reply, Request};
use super::retry_after;
use crate::clock::Clock;
use crate::drivers::BoxFuture;

/// Prompts run at most about one token per byte; this covers the chat framing around them.
const FRAMING_TOKENS: u64 = 16;

pub struct OpenAi {
    name: String,
    cfg: OpenAiCfg,
    /// Why the HTTP client could not be built, if it could not (every call then says so).
    http: Result<reqwest::Client, String>,
}

impl OpenAi {
    pub fn new(name: &str, cfg: OpenAiCfg) -> OpenAi {
        let http = reqwest::Client::builder().build().map_err(|e| format!("cannot build an HTTP client: {e}"));
        OpenAi { name: name.to_string(), cfg, http }
    }

    async fn answer(&self, req: Request<'_>) -> Result<Reply, CallError> {
        if req.conditions.down {
            return Err(CallError::unavailable());
        }
        let http = self.http.as_ref().map_err(|e| CallError::Transport(e.clone()))?;
        let url = format!("{}/chat/completions", self.cfg.base_url.trim_end_matches('/'));
        let body = serde_json::json!({
            "model": self.cfg.model,
            "messages": [{"role": "user", "content": req.prompt}],
            "max_tokens": self.cfg.max_tokens,
        });
        let mut post = http.post(&url).json(&body);
        if let Some(var) = &self.cfg.api_key_env {
            match std::env::var(var) {
                Ok(key) => post = post.bearer_auth(key),
                Err(_) => return Err(CallError::Transport(format!("environment variable {var} is not set"))),
            }
        }
        let resp = post.send().await.map_err(|e| {
            if e.is_timeout() { CallError::Timeout } else { CallError::Transport(e.without_url().to_string()) }
        })?;
        let status = resp.status().as_u16();
        if !(200..=299).contains(&status) {
            return Err(CallError::Status { code: status, retry_after: retry_after_of(resp.headers(), req.clock) });
        }
        let v: serde_json::Value =
            resp.json().await.map_err(|e| CallError::BadResponse(format!("not JSON: {}", e.without_url())))?;
        let text = v["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_string();
        let usage = &v["usage"];
        let (Some(tin), Some(tout)) = (usage["prompt_tokens"].as_u64(), usage["completion_tokens"].as_u64()) else {
            return Err(CallError::BadResponse("response has no usage.prompt_tokens/completion_tokens".into()));
        };
        Ok(Reply { text, tokens_in: tin, tokens_out: tout })
    }
}

/// The response's Retry-After, if it carries a valid one, in plan time. The server's delay is
/// real time whatever `--time-scale` says: waiting it as plan time would come back early (or
/// late), so it is divided by the scale the clock will multiply it by.
fn retry_after_of(headers: &HeaderMap, clock: &Clock) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    let date = headers.get(DATE).and_then(|d| d.to_str().ok());
    let now = chrono::DateTime::from_timestamp_micros(clock.wall_us()).unwrap_or_default();
    let real = retry_after::parse(value, date, now)?;
    Some(if clock.scale() > 0.0 { real.div_f64(clock.scale()) } else { real })
}

impl Provider for OpenAi {
    fn name(&self) -> &str {
        &self.name
    }

    fn model(&self) -> &str {
        &self.cfg.model
    }

    fn prices(&self) -> Prices {
        Prices { per_million_in: self.cfg.price_in, per_million_out: self.cfg.price_out }
    }

    fn max_cost_nanos(&self, prompt: &str) -> u64 {
        self.cost_nanos(prompt.len() as u64 + FRAMING_TOKENS, self.cfg.max_tokens)
    }

    fn call<'a>(&'a self, req: Request<'a>) -> BoxFuture<'a, Result<Reply, CallError>> {
        Box::pin(self.answer(req))
    }
}
