//! The `ws` stage as a plan writes it (`Ws`) and the checks `planrun validate` makes of it.

use serde::{Deserialize, Serialize};

use crate::drivers::config_of;
use crate::drivers::monitor::MonitorCfg;
use crate::plan::model::StageCommon;
use crate::plan::{Dur, FieldError, StageDriver};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ws {
    /// `ws://HOST:PORT/PATH?QUERY` (serve-demo: `/ws`, with `?push=1000` for metrics pushes).
    pub url: String,
    /// Concurrent connections.
    pub connections: u32,
    /// Connections opened per second of plan time (default: all at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_rate: Option<f64>,
    /// Messages each connection sends per second of plan time (default 0: it only listens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_rate: Option<f64>,
    /// Bytes of padding added to each message (default 0; a message is ~40 bytes without).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_bytes: Option<u32>,
    /// Send a WebSocket ping this often (plan time) and record its round trip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping_every: Option<Dur>,
    /// Limit for TCP connect plus the WebSocket handshake (real time, default 10 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Dur>,
    /// Reconnect after the server closes a connection or a connect fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect: Option<Reconnect>,
    /// At the end, echoes still due may arrive for this long (real time, default 1 s); those
    /// that do not are `lost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_stop: Option<Dur>,
    /// The server's processes: their memory is read before the first connection and once every
    /// connection is open, giving memory per connection (`ws_memory`, name `server`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<MonitorCfg>,
    /// Sample CPU and memory of these processes and the host while the stage runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<MonitorCfg>,
    /// Start `planrun serve-demo` on the url's address for the stage, and stop it after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demo: Option<crate::drivers::http::demo::DemoCfg>,
    /// Once, at `at` (plan time from the stage's start), POST to `url` — the server's own switch
    /// for dropping every connection (serve-demo: `/admin/drop-ws`) — to test reconnection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop: Option<DropCfg>,
    /// Share of connections that must open for the stage to pass (default: every one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_connected: Option<f64>,
}

/// `drop = { at = "10s", url = "http://127.0.0.1:8089/admin/drop-ws" }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropCfg {
    pub at: Dur,
    pub url: String,
}

/// `reconnect = { attempts = 5, backoff = "100ms", max_backoff = "5s" }`: after a close or a
/// failed connect, wait `backoff` (doubling each attempt, at most `max_backoff`, with jitter)
/// and try again, up to `attempts` times in a row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reconnect {
    #[serde(default = "d_attempts")]
    pub attempts: u32,
    #[serde(default = "d_backoff")]
    pub backoff: Dur,
    #[serde(default = "d_max_backoff")]
    pub max_backoff: Dur,
}

fn d_attempts() -> u32 {
    5
}
fn d_backoff() -> Dur {
    Dur(std::time::Duration::from_millis(100))
}
fn d_max_backoff() -> Dur {
    Dur(std::time::Duration::from_secs(5))
}

/// Where a `ws://` URL points.
#[derive(Clone, Debug, PartialEq)]
pub struct WsTarget {
    pub host: String,
    pub port: u16,
    /// Path and query, as sent in the request line.
    pub resource: String,
}

impl WsTarget {
    pub fn parse(url: &str) -> Result<WsTarget, String> {
        if url.starts_with("wss://") {
            return Err(format!("`{url}`: wss:// (TLS) is not supported yet; use ws:// (or a TLS-terminating proxy)"));
        }
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("`{url}` is not a WebSocket URL: write ws://HOST:PORT/PATH"))?;
        let (authority, resource) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let resource = if resource.starts_with('?') { format!("/{resource}") } else { resource };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("`{url}`: `{p}` is not a port"))?),
            None => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("`{url}` names no host"));
        }
        Ok(WsTarget { host: host.to_string(), port, resource })
    }
}

impl Ws {
    pub fn connect_timeout(&self) -> std::time::Duration {
        self.connect_timeout.map_or(std::time::Duration::from_secs(10), |d| d.0)
    }
    pub fn graceful_stop(&self) -> std::time::Duration {
        self.graceful_stop.map_or(std::time::Duration::from_secs(1), |d| d.0)
    }
}

fn is_rate(r: f64) -> bool {
    r.is_finite() && r >= 0.001
}

impl StageDriver for Ws {
    fn config(&self) -> serde_json::Value {
        config_of(self)
    }

    fn describe(&self) -> String {
        let sending = match self.send_rate {
            Some(r) if r > 0.0 => format!(", {r} messages/s each"),
            _ => String::new(),
        };
        format!("{} WebSocket connections to {}{sending}", self.connections, self.url)
    }

    fn check(&self, stage: &StageCommon) -> Result<(), FieldError> {
        WsTarget::parse(&self.url).map_err(|e| FieldError::new(e).at(&["url"]))?;
        if self.connections == 0 {
            return Err(FieldError::new("a ws stage needs at least one connection").at(&["connections"]));
        }
        if stage.duration.is_none() {
            return Err("a ws stage needs a `duration` (how long the connections stay open)".into());
        }
        if let Some(r) = self.connect_rate
            && !is_rate(r)
        {
            return Err(FieldError::new("connect_rate is connections per second, at least 0.001").at(&["connect_rate"]));
        }
        if let (Some(r), Some(len)) = (self.connect_rate, stage.duration)
            && self.connections as f64 / r >= len.0.as_secs_f64()
        {
            return Err(FieldError::new(format!(
                "{} connections at {r}/s take {:.1} s to open, longer than the stage's duration: raise connect_rate or the duration",
                self.connections,
                self.connections as f64 / r
            ))
            .at(&["connect_rate"]));
        }
        if let Some(r) = self.send_rate
            && !(r == 0.0 || is_rate(r))
        {
            return Err(FieldError::new("send_rate is messages per second per connection: 0, or at least 0.001")
                .at(&["send_rate"]));
        }
        if let Some(m) = self.min_connected
            && !(0.0..=1.0).contains(&m)
        {
            return Err(FieldError::new(format!("min_connected is a share of the connections, from 0 to 1 (got {m})"))
                .at(&["min_connected"]));
        }
        if let Some(d) = &self.drop {
            if !(d.url.starts_with("http://") || d.url.starts_with("https://")) {
                return Err(FieldError::new(format!("`drop.url` is the HTTP URL to POST to, not `{}`", d.url))
                    .at(&["drop", "url"]));
            }
            if let Some(len) = stage.duration
                && d.at.0 >= len.0
            {
                return Err(FieldError::new("`drop.at` is after the stage's duration: it would never happen")
                    .at(&["drop", "at"]));
            }
        }
        if let Some(r) = &self.reconnect
            && r.backoff.0 > r.max_backoff.0
        {
            return Err(FieldError::new(
                "`backoff` is the first wait and `max_backoff` the longest: give backoff <= max_backoff",
            )
            .at(&["reconnect", "backoff"]));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_host_port_and_resource() {
        let t = WsTarget::parse("ws://127.0.0.1:8089/ws?push=1000").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.resource.as_str()), ("127.0.0.1", 8089, "/ws?push=1000"));
        assert_eq!(WsTarget::parse("ws://localhost").unwrap().resource, "/");
        assert_eq!(WsTarget::parse("ws://[::1]:9/x").unwrap().host, "::1");
        assert!(WsTarget::parse("wss://x/").unwrap_err().contains("not supported yet"));
        assert!(WsTarget::parse("http://x/").unwrap_err().contains("not a WebSocket URL"));
        assert!(WsTarget::parse("ws://h:port/").unwrap_err().contains("not a port"));
    }
}
