//! The `llm` driver's plan fields. Providers are named (usually shared through
//! `[defaults.llm.providers.NAME]`); agents pick a provider or a failover chain of them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plan::Dur;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// Every round, one prompt to all agents in parallel; proceed on partial results.
    #[default]
    Gather,
    /// Every round, each agent in turn.
    Sequential,
    /// Gather repeated for `rounds` rounds, each prompt seeing the previous round's answers.
    Rounds,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    #[default]
    Off,
    /// Same provider, model and prompt text.
    Exact,
    /// Same after lower-casing and collapsing whitespace.
    Normalized,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnTerminate {
    /// Rounds go on with the agents left (partial results).
    #[default]
    Partial,
    /// A terminated agent's prompt goes to a live agent of the same role (or any live agent).
    Redistribute,
}

/// A latency distribution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "lowercase", deny_unknown_fields)]
pub enum LatencyDist {
    Fixed {
        value: Dur,
    },
    Uniform {
        min: Dur,
        max: Dur,
    },
    /// Log-normal with this median and 99th percentile.
    Lognormal {
        median: Dur,
        p99: Dur,
    },
}

/// A token count: fixed, or uniform between bounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Tokens {
    Fixed(u64),
    Uniform { min: u64, max: u64 },
}

impl Tokens {
    pub fn max(&self) -> u64 {
        match self {
            Tokens::Fixed(n) => *n,
            Tokens::Uniform { max, .. } => *max,
        }
    }
}

/// Relative weights of the error kinds a failing simulated call returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorMix {
    #[serde(default = "one")]
    pub rate_limited: f64,
    #[serde(default = "one")]
    pub server_error: f64,
    #[serde(default = "one")]
    pub overloaded: f64,
}

fn one() -> f64 {
    1.0
}

impl Default for ErrorMix {
    fn default() -> Self {
        ErrorMix { rate_limited: 1.0, server_error: 1.0, overloaded: 1.0 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ProviderCfg {
    /// Built-in simulation: latency, failures, tokens and prices from distributions.
    Simulated(SimulatedCfg),
    /// Any OpenAI-compatible chat-completions endpoint.
    Openai(OpenAiCfg),
}

impl ProviderCfg {
    pub fn is_simulated(&self) -> bool {
        matches!(self, ProviderCfg::Simulated(_))
    }
}

/// Dollars per million input / output tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prices {
    pub per_million_in: f64,
    pub per_million_out: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedCfg {
    #[serde(default = "sim_model")]
    pub model: String,
    pub latency: LatencyDist,
    /// Optional streaming shape: time to first token plus per output token (added to latency).
    #[serde(default)]
    pub first_token: Option<Dur>,
    #[serde(default)]
    pub per_token: Option<Dur>,
    #[serde(default)]
    pub failure_rate: f64,
    #[serde(default)]
    pub errors: ErrorMix,
    /// Retry-After a rate-limited call carries.
    #[serde(default)]
    pub retry_after: Option<Dur>,
    /// Share of calls that never answer (the caller's timeout ends them).
    #[serde(default)]
    pub timeout_rate: f64,
    pub tokens_in: Tokens,
    pub tokens_out: Tokens,
    /// Dollars per million input / output tokens.
    pub price_in: f64,
    pub price_out: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiCfg {
    pub base_url: String,
    pub model: String,
    /// Name of the environment variable holding the API key (the key itself is never written).
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default = "max_tokens")]
    pub max_tokens: u64,
    pub price_in: f64,
    pub price_out: f64,
}

fn sim_model() -> String {
    "sim-1".into()
}

fn max_tokens() -> u64 {
    512
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentCfg {
    pub name: String,
    #[serde(default)]
    pub role: Option<String>,
    /// A provider name, or a failover chain of them.
    pub provider: Vec<String>,
    #[serde(default)]
    pub prompt: Option<String>,
    /// Make this many agents from this one: NAME-1 … NAME-N.
    #[serde(default)]
    pub count: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryCfg {
    #[serde(default = "attempts")]
    pub attempts: u32,
    #[serde(default = "base")]
    pub base: Dur,
    #[serde(default = "cap")]
    pub cap: Dur,
}

fn attempts() -> u32 {
    1
}
fn base() -> Dur {
    Dur(std::time::Duration::from_millis(500))
}
fn cap() -> Dur {
    Dur(std::time::Duration::from_secs(30))
}

impl Default for RetryCfg {
    fn default() -> Self {
        RetryCfg { attempts: attempts(), base: base(), cap: cap() }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerCfg {
    /// Open after this many consecutive failures…
    #[serde(default)]
    pub failures: Option<u32>,
    /// …or when the failure ratio over `window` reaches this (with at least `min_calls`).
    #[serde(default)]
    pub ratio: Option<f64>,
    #[serde(default = "window")]
    pub window: Dur,
    #[serde(default = "min_calls")]
    pub min_calls: u32,
    /// How long it stays open before a half-open probe.
    pub cooldown: Dur,
}

fn window() -> Dur {
    Dur(std::time::Duration::from_secs(60))
}
fn min_calls() -> u32 {
    10
}

/// A fault, at a plan time from the stage's start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultCfg {
    pub at: Dur,
    /// Terminate this agent.
    #[serde(default)]
    pub terminate: Option<String>,
    /// Every provider (or `provider`) is down for this long.
    #[serde(default)]
    pub outage: Option<Dur>,
    /// Extra failure rate for `for`.
    #[serde(default)]
    pub fail_rate: Option<f64>,
    #[serde(default, rename = "for")]
    pub for_: Option<Dur>,
    #[serde(default)]
    pub provider: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmCfg {
    #[serde(default)]
    pub pattern: Pattern,
    #[serde(default = "one_round")]
    pub rounds: u32,
    /// How long a gather waits for answers.
    #[serde(default)]
    pub gather_timeout: Option<Dur>,
    /// Answers a round needs to count as done (default: every live agent).
    #[serde(default)]
    pub min_responses: Option<u32>,
    /// Share of the stage's calls (prompts, after retries and failover) that must be answered
    /// for the stage to pass; unset, at least one must be (see `Tally`).
    #[serde(default)]
    pub min_success: Option<f64>,
    /// Client-side limit for one call.
    #[serde(default)]
    pub call_timeout: Option<Dur>,
    #[serde(default)]
    pub budget_usd: Option<f64>,
    #[serde(default)]
    pub cache: CacheMode,
    /// Default prompt template (minijinja: vars, round, agent, role, previous).
    #[serde(default)]
    pub prompt: Option<String>,
    pub providers: BTreeMap<String, ProviderCfg>,
    #[serde(rename = "agent")]
    pub agents: Vec<AgentCfg>,
    #[serde(default)]
    pub retry: RetryCfg,
    #[serde(default)]
    pub breaker: Option<BreakerCfg>,
    #[serde(default, rename = "fault")]
    pub faults: Vec<FaultCfg>,
    #[serde(default)]
    pub on_terminate: OnTerminate,
    /// Save a checkpoint every N rounds (for `resume` and `--suspend-after`).
    #[serde(default)]
    pub checkpoint_every: Option<u32>,
    /// Record each call's prompt and answer text in the event (a full trace).
    #[serde(default)]
    pub trace: bool,
}

fn one_round() -> u32 {
    1
}
