//! The agent's side of the Redis transport (`RedisLink`), synchronous so the lean agent needs no
//! async runtime: `XREAD BLOCK` on `PREFIX:messages` from its own last id, `XADD` of responses
//! and heartbeats to `PREFIX:incoming`, and the heartbeat key with a TTL. A lost server is
//! retried on the next call (with a growing pause), never fatal: the coordinator's heartbeat
//! watch decides what a silent agent means.

use std::time::Duration;

use redis::streams::StreamReadReply;

use super::redis::{INCOMING_MAXLEN, Keys};

pub struct RedisLink {
    client: redis::Client,
    con: Option<redis::Connection>,
    keys: Keys,
    /// The last `messages` entry read; `0` reads every live message.
    last: String,
    /// The heartbeat key's TTL.
    ttl: Duration,
    pause: Duration,
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
        })
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
