//! The agent's side of the Redis transport (`RedisLink`), synchronous so the lean agent needs no
//! async runtime: `XREAD BLOCK` on `PREFIX:messages` from its own last id, `XADD` of responses
//! and heartbeats to `PREFIX:incoming`, and the heartbeat key with a TTL. A lost server is
//! retried on the next call (with a growing pause), never fatal: the coordinator's heartbeat
//! watch decides what a silent agent means.

use std::time::Duration;

use redis::streams::StreamReadReply;

use super::redis::{INCOMING_MAXLEN, Keys, join_key};

pub struct RedisLink {
    client: redis::Client,
    con: Option<redis::Connection>,
    keys: Keys,
    /// The last `messages` entry read; `0` reads every live message.
    last: String,
    /// The heartbeat key's TTL.
    ttl: Duration,
    pause: Duration,
    /// For a joined agent: the join key and the prefix it must name while the stage runs.
    join: Option<(String, String)>,
}

/// What joining a stage gives an agent started by hand: the stage's prefix and its token.
pub struct Joined {
    pub prefix: String,
    pub token: String,
    /// The stage's heartbeat interval.
    pub heartbeat_ms: Option<u64>,
}

/// Join the stage that published `name` on `url` as agent `id`: wait (up to `timeout`) for the
/// stage, ask to join, and wait for its answer.
pub fn join(url: &str, name: &str, id: &str, timeout: Duration) -> Result<Joined, String> {
    let shown = crate::drivers::keyspace::shown(url);
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err(format!("an agent id that joins is 1-64 of [A-Za-z0-9._-], not `{id}`"));
    }
    let client = redis::Client::open(url).map_err(|e| format!("`{shown}` is not a Redis URL: {e}"))?;
    let until = std::time::Instant::now() + timeout;
    let mut con = loop {
        match client.get_connection_with_timeout(Duration::from_secs(1)) {
            Ok(c) => break c,
            Err(e) if std::time::Instant::now() > until => return Err(format!("cannot connect to {shown}: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let _ = con.set_read_timeout(Some(Duration::from_secs(5)));
    let prefix: String = loop {
        let got: redis::RedisResult<Option<String>> = redis::cmd("GET").arg(join_key(name)).query(&mut con);
        if got.is_err()
            && let Ok(c) = client.get_connection_with_timeout(Duration::from_secs(1))
        {
            con = c;
            let _ = con.set_read_timeout(Some(Duration::from_secs(5)));
        }
        match got {
            Ok(Some(p)) => break p,
            _ if std::time::Instant::now() > until => {
                return Err(format!(
                    "no stage with `join = \"{name}\"` is running on {shown} (waited {} s)",
                    timeout.as_secs()
                ));
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let nonce = format!("{:032x}", rand::random::<u128>());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
    let body = serde_json::json!({ "agentId": id, "nonce": nonce, "host": host }).to_string();
    let keys = Keys::new(&prefix);
    let _: () = redis::cmd("XADD")
        .arg(keys.incoming())
        .arg("*")
        .arg("kind")
        .arg("join")
        .arg("agent")
        .arg(id)
        .arg("body")
        .arg(body)
        .query(&mut con)
        .map_err(|e| format!("cannot ask to join: {e}"))?;
    let answer = keys.join_reply(&nonce);
    loop {
        let got: redis::RedisResult<Option<String>> = redis::cmd("GET").arg(&answer).query(&mut con);
        if got.is_err()
            && let Ok(c) = client.get_connection_with_timeout(Duration::from_secs(1))
        {
            // A dropped connection: the answer waits under its key, so read it on a new one.
            con = c;
            let _ = con.set_read_timeout(Some(Duration::from_secs(5)));
        }
        if let Ok(Some(a)) = got {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&answer).query(&mut con);
            let v: serde_json::Value =
                serde_json::from_str(&a).map_err(|e| format!("the stage's answer is not JSON: {e}"))?;
            if let Some(why) = v["refused"].as_str() {
                return Err(format!("the stage refused `{id}`: {why}"));
            }
            let token = v["token"].as_str().ok_or("the stage's answer has no token")?.to_string();
            return Ok(Joined { prefix, token, heartbeat_ms: v["heartbeat_ms"].as_u64() });
        }
        if std::time::Instant::now() > until {
            return Err(format!("the stage did not answer `{id}`'s join within {} s", timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl RedisLink {
    /// A link to `url` under `prefix`; no connection is made until first use.
    pub fn open(url: &str, prefix: &str, heartbeat: Duration) -> Result<RedisLink, String> {
        let client = redis::Client::open(url)
            .map_err(|e| format!("`{}` is not a Redis URL: {e}", crate::drivers::keyspace::shown(url)))?;
        Ok(RedisLink {
            client,
            con: None,
            keys: Keys::new(prefix),
            last: "0".into(),
            ttl: (heartbeat * 5).max(Duration::from_secs(1)),
            pause: Duration::from_millis(20),
            join: None,
        })
    }

    /// This agent joined under `name`: `stage_gone` watches that join key.
    pub fn joined(&mut self, name: &str) {
        self.join = Some((join_key(name), self.keys.prefix.clone()));
    }

    /// For a joined agent: the stage no longer publishes its join key (it ended, or crashed and
    /// the key's TTL ran out). False when unknown (no connection).
    pub fn stage_gone(&mut self) -> bool {
        let Some((key, prefix)) = self.join.clone() else { return false };
        let Some(con) = self.con() else { return false };
        let got: redis::RedisResult<Option<String>> = redis::cmd("GET").arg(&key).query(con);
        matches!(got, Ok(v) if v.as_deref() != Some(prefix.as_str()))
    }

    fn con(&mut self) -> Option<&mut redis::Connection> {
        if self.con.is_none() {
            match self.client.get_connection_with_timeout(Duration::from_secs(1)) {
                Ok(c) => {
                    // Reads block at most a heartbeat or so; a server that stops answering
                    // must not hold the agent longer.
                    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                    self.con = Some(c);
                }
                Err(_) => {
                    std::thread::sleep(self.pause);
                    self.pause = (self.pause * 2).min(Duration::from_secs(1));
                    return None;
                }
            }
        }
        self.con.as_mut()
    }

    /// A command failed: drop the connection and pause before the next try, growing the pause
    /// (a server that answers every command with an error — LOADING after a restart, say —
    /// must not get a tight loop from a thousand agents).
    fn failed(&mut self) {
        self.con = None;
        std::thread::sleep(self.pause);
        self.pause = (self.pause * 2).min(Duration::from_secs(1));
    }

    fn succeeded(&mut self) {
        self.pause = Duration::from_millis(20);
    }

    /// Wait up to `wait` for messages; the JSON of each one that arrived.
    pub fn read(&mut self, wait: Duration) -> Vec<Vec<u8>> {
        let key = self.keys.messages();
        let last = self.last.clone();
        let block = wait.as_millis().max(1) as u64;
        let Some(con) = self.con() else { return Vec::new() };
        let _ = con.set_read_timeout(Some(Duration::from_millis(block) + Duration::from_secs(5)));
        let r: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(256)
            .arg("BLOCK")
            .arg(block)
            .arg("STREAMS")
            .arg(&key)
            .arg(&last)
            .query(con);
        match r {
            Ok(reply) => {
                self.succeeded();
                let mut out = Vec::new();
                for e in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                    if let Some(b) = e.get::<Vec<u8>>("msg") {
                        out.push(b);
                    }
                    self.last = e.id;
                }
                out
            }
            Err(_) => {
                self.failed();
                Vec::new()
            }
        }
    }

    /// Append a `response` or `status` entry; false if it could not be sent.
    pub fn send(&mut self, kind: &str, agent: &str, body: &[u8]) -> bool {
        let key = self.keys.incoming();
        let Some(con) = self.con() else { return false };
        let r: redis::RedisResult<()> = redis::cmd("XADD")
            .arg(&key)
            .arg("MAXLEN")
            .arg("~")
            .arg(INCOMING_MAXLEN)
            .arg("*")
            .arg("kind")
            .arg(kind)
            .arg("agent")
            .arg(agent)
            .arg("body")
            .arg(body)
            .query(con);
        match r {
            Ok(()) => self.succeeded(),
            Err(_) => self.failed(),
        }
        r.is_ok()
    }

    /// A heartbeat: the status entry, and the agent's heartbeat key with its TTL, in one round trip.
    pub fn beat(&mut self, agent: &str, body: &[u8]) -> bool {
        let (incoming, hb, ttl) = (self.keys.incoming(), self.keys.heartbeat(agent), self.ttl.as_millis() as u64);
        let Some(con) = self.con() else { return false };
        let mut p = redis::pipe();
        p.cmd("XADD")
            .arg(&incoming)
            .arg("MAXLEN")
            .arg("~")
            .arg(INCOMING_MAXLEN)
            .arg("*")
            .arg("kind")
            .arg("status")
            .arg("agent")
            .arg(agent)
            .arg("body")
            .arg(body)
            .ignore();
        p.cmd("SET").arg(&hb).arg(body).arg("PX").arg(ttl).ignore();
        let r: redis::RedisResult<()> = p.query(con);
        match r {
            Ok(()) => self.succeeded(),
            Err(_) => self.failed(),
        }
        r.is_ok()
    }
}
