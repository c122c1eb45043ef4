//! The agent protocol's messages, whatever carries them (docs/agent-protocol.md is the contract
//! for agents written in any language), and the environment an agent is started with. Field
//! names follow the soak test this replaces (`messageId`, `processingTime`, …) so existing agents
//! port easily. Every response and heartbeat carries the agent's token, which binds it to the
//! agent that was given that token at start (see `transport::Enrollment`).

use serde::{Deserialize, Serialize};

/// The agent's id, e.g. `agent-17`.
pub const ENV_AGENT_ID: &str = "PLANRUN_AGENT_ID";
/// The secret that every response and heartbeat of this agent must carry.
pub const ENV_AGENT_TOKEN: &str = "PLANRUN_AGENT_TOKEN";
/// How often to heartbeat, in milliseconds.
pub const ENV_HEARTBEAT_MS: &str = "PLANRUN_HEARTBEAT_MS";
/// A seed for anything random the agent does.
pub const ENV_SEED: &str = "PLANRUN_SEED";
/// The file transport's coordination directory.
pub const ENV_COORD_DIR: &str = "PLANRUN_COORD_DIR";
/// Set for the built-in agent: it blocks SIGUSR1 and wakes on it (the file transport's
/// doorbell, for agents past the kernel's inotify limit).
pub const ENV_DOORBELL: &str = "PLANRUN_DOORBELL";
/// The Redis transport's server (`redis://host:port/db`).
pub const ENV_TRANSPORT: &str = "PLANRUN_TRANSPORT";
/// The Redis transport's key prefix for this stage (`planrun:RUN:PHASE:STAGE`).
pub const ENV_REDIS_PREFIX: &str = "PLANRUN_REDIS_PREFIX";

/// Coordinator → agents: `messages/<messageId>.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub message_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub cycle: u64,
    #[serde(default)]
    pub data: serde_json::Value,
    /// Agent ids this message is for; absent means every agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<String>>,
}

impl Message {
    pub fn is_for(&self, agent: &str) -> bool {
        self.to.as_ref().is_none_or(|t| t.iter().any(|a| a == agent))
    }
}

/// Memory an agent reports about itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    pub rss: u64,
    /// Bytes the agent itself holds on purpose (buffers, caches, a deliberate leak).
    #[serde(default)]
    pub allocated: u64,
}

/// Agent → coordinator: `responses/<agentId>--<messageId>.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub agent_id: String,
    pub message_id: String,
    pub timestamp: i64,
    /// Milliseconds the agent spent on the message.
    pub processing_time: f64,
    pub coordination_count: u64,
    pub error_count: u64,
    /// Milliseconds since the agent started.
    pub uptime: u64,
    pub memory: Memory,
    #[serde(default)]
    pub response: serde_json::Value,
    /// The agent's `PLANRUN_AGENT_TOKEN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Agent heartbeat: `status/<agentId>.json`, rewritten every heartbeat interval.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub agent_id: String,
    pub pid: u32,
    pub timestamp: i64,
    pub uptime: u64,
    pub memory: Memory,
    pub coordination_count: u64,
    pub error_count: u64,
    /// The agent's `PLANRUN_AGENT_TOKEN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The agent blocks SIGUSR1 and wakes on it (the built-in agent, given PLANRUN_DOORBELL).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub doorbell: bool,
}

/// Files larger than this are refused unread.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Wall-clock milliseconds with a fraction.
pub fn now_ms_f64() -> f64 {
    chrono::Utc::now().timestamp_micros() as f64 / 1000.0
}

/// Write `bytes` to `dir/name` atomically: a hidden temp file in the same directory, then a
/// rename, so a reader never sees half a file.
pub fn write_atomic(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, dir.join(name))
}
