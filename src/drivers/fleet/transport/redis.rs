//! `RedisTransport`: the fleet transport over a real Redis server, chosen in the plan with
//! `transport = "redis://host:port/db"`. Everything of one stage lives under one key prefix
//! (`Keys`, `planrun:RUN:PHASE:STAGE`) and is removed at teardown:
//!
//! * `PREFIX:messages` — a stream the coordinator appends each cycle's message to (`msg` = the
//!   JSON). Every agent reads all of it with `XREAD` from its own last id (a broadcast: a consumer
//!   group would hand each message to one agent only). A message is deleted when its cycle ends,
//!   so an agent that starts later reads exactly the live ones, as with the file transport.
//! * `PREFIX:incoming` — a stream agents append responses and heartbeats to (`kind`, `agent`,
//!   `body`); the coordinator reads it through the consumer group `coordinator` with `XREADGROUP`
//!   on a connection of its own (a blocking read on the shared multiplexed connection would stall
//!   every other command), acknowledges and deletes what it read. One reader for any number of
//!   agents.
//! * `PREFIX:hb:AGENT` — each agent's latest heartbeat, with a TTL of a few heartbeat intervals,
//!   for anyone watching the run from outside.
//!
//! A lost connection is retried with backoff and reported as an `Incoming::Notice` (a `warning`
//! event), then its restoration; only a server gone for `LOST_AFTER` makes `lost()` stop the
//! stage. After a Redis restart that lost the consumer group, the reader makes it anew.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::StreamReadReply;
use tokio::sync::mpsc;

use super::contract::{Incoming, Transport};
use super::enrollment::Enrollment;
use crate::drivers::BoxFuture;
use crate::drivers::fleet::protocol::{
    ENV_AGENT_TOKEN, ENV_REDIS_PREFIX, ENV_TRANSPORT, MAX_FILE_BYTES, Message, Response, Status, now_ms,
};
use crate::drivers::keyspace::{self, shown};

/// A server unreachable for this long is gone for good: the stage stops.
pub const LOST_AFTER: Duration = Duration::from_secs(30);
/// How long the coordinator's reader blocks in one `XREADGROUP`.
const BLOCK_MS: usize = 250;
/// The most entries read at once.
const BATCH: usize = 512;
/// The consumer group the coordinator reads `incoming` through.
const GROUP: &str = "coordinator";
/// `incoming` is capped (approximately) at this many entries, whatever agents send.
pub const INCOMING_MAXLEN: usize = 1_000_000;

/// The keys of one stage.
#[derive(Clone, Debug)]
pub struct Keys {
    pub prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Keys {
        Keys { prefix: prefix.into() }
    }
    pub fn messages(&self) -> String {
        format!("{}:messages", self.prefix)
    }
    pub fn incoming(&self) -> String {
        format!("{}:incoming", self.prefix)
    }
    pub fn heartbeat(&self, agent: &str) -> String {
        format!("{}:hb:{agent}", self.prefix)
    }
    /// Where a joining agent's token is left for it.
    pub fn join_reply(&self, nonce: &str) -> String {
        format!("{}:join:{nonce}", self.prefix)
    }
}

/// The well-known key a stage with `join = NAME` publishes its prefix under, for agents
/// started by hand (`planrun agent --transport URL --join NAME`).
pub fn join_key(name: &str) -> String {
    format!("planrun:join:{name}")
}

/// How long a joining agent's answer waits for it.
pub const JOIN_REPLY_TTL_MS: u64 = 60_000;
/// The join key's TTL (renewed at a quarter of it while the stage runs). Joined agents check it
/// every heartbeat and stop when it no longer names their stage.
pub const JOIN_KEY_TTL_MS: u64 = 10_000;

impl Keys {}

/// Milliseconds since the epoch the connection went down; 0 while it is up.
#[derive(Default)]
struct Health {
    down_since: AtomicI64,
}

impl Health {
    fn down(&self) -> bool {
        self.down_since.load(Ordering::Relaxed) != 0
    }
    fn mark_down(&self) -> bool {
        self.down_since.compare_exchange(0, now_ms(), Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
    /// Mark up; the outage's length in ms if it was down.
    fn mark_up(&self) -> Option<i64> {
        let was = self.down_since.swap(0, Ordering::Relaxed);
        (was != 0).then(|| now_ms() - was)
    }
}

pub struct RedisTransport {
    url: String,
    keys: Keys,
    enrollment: Arc<Enrollment>,
    con: ConnectionManager,
    /// message id → stream entry id, for `retire`.
    entries: Arc<Mutex<HashMap<String, String>>>,
    retire_tx: mpsc::UnboundedSender<String>,
    health: Arc<Health>,
    reader: tokio::task::JoinHandle<()>,
    janitor: tokio::task::JoinHandle<()>,
    /// The join name published (removed at close), and the task renewing its TTL.
    join: Mutex<Option<(String, tokio::task::JoinHandle<()>)>>,
    /// What creating it had to do that the user should hear of (leftover keys removed).
    pub notes: Vec<String>,
}

fn redis_err(url: &str, what: &str, e: &redis::RedisError) -> String {
    format!(
        "redis transport {}: {what}: {e}; is redis-server running there (e.g. `redis-server --port PORT`)?",
        shown(url)
    )
}

async fn reader_connection(client: &redis::Client) -> redis::RedisResult<MultiplexedConnection> {
    // Its own connection, and a response timeout past the blocking time: a server that stops
    // answering is noticed, and a long block is not cut short.
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_millis(BLOCK_MS as u64) + Duration::from_secs(5)));
    client.get_multiplexed_async_connection_with_config(&cfg).await
}

/// Create the consumer group (and the stream) unless it exists.
async fn ensure_group(con: &mut MultiplexedConnection, keys: &Keys) -> redis::RedisResult<()> {
    let r: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(keys.incoming())
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(con)
        .await;
    match r {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

impl RedisTransport {
    /// Connect to `url`, clear what an earlier run under the same `prefix` left, create the
    /// consumer group and start reading; what arrives comes on the returned receiver.
    pub async fn connect(
        url: &str,
        prefix: &str,
    ) -> Result<(RedisTransport, mpsc::UnboundedReceiver<Incoming>), String> {
        let client =
            redis::Client::open(url).map_err(|e| format!("transport `{}` is not a Redis URL: {e}", shown(url)))?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let mut con = ConnectionManager::new_with_config(client.clone(), cfg)
            .await
            .map_err(|e| redis_err(url, "cannot connect", &e))?;
        let keys = Keys::new(prefix);
        let mut notes = Vec::new();
        let left =
            keyspace::remove(&mut con, &keys.prefix).await.map_err(|e| redis_err(url, "cannot clear old keys", &e))?;
        if left > 0 {
            notes.push(format!("removed {left} keys under `{}` left by an earlier run", keys.prefix));
        }
        let mut rcon = reader_connection(&client).await.map_err(|e| redis_err(url, "cannot connect", &e))?;
        ensure_group(&mut rcon, &keys).await.map_err(|e| redis_err(url, "cannot create the consumer group", &e))?;
        let enrollment = Arc::new(Enrollment::default());
        let health = Arc::new(Health::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let reader =
            tokio::spawn(read_loop(client, Some(rcon), keys.clone(), tx, Arc::clone(&enrollment), Arc::clone(&health)));
        let entries: Arc<Mutex<HashMap<String, String>>> = Default::default();
        let (retire_tx, mut retire_rx) = mpsc::unbounded_channel::<String>();
        let janitor = {
            let (mut con, entries, key) = (con.clone(), Arc::clone(&entries), keys.messages());
            tokio::spawn(async move {
                while let Some(message_id) = retire_rx.recv().await {
                    let entry = entries.lock().ok().and_then(|mut e| e.remove(&message_id));
                    if let Some(entry) = entry {
                        let _: redis::RedisResult<i64> = con.xdel(&key, &[entry]).await;
                    }
                }
            })
        };
        let t = RedisTransport {
            url: url.to_string(),
            keys,
            enrollment,
            con,
            entries,
            retire_tx,
            health,
            reader,
            janitor,
            join: Mutex::new(None),
            notes,
        };
        Ok((t, rx))
    }
}

/// Read `incoming` until the coordinator drops its receiver: parse, screen, pass on, then
/// acknowledge and delete. Connection trouble is retried with backoff and reported once per
/// outage.
async fn read_loop(
    client: redis::Client,
    mut con: Option<MultiplexedConnection>,
    keys: Keys,
    tx: mpsc::UnboundedSender<Incoming>,
    enrollment: Arc<Enrollment>,
    health: Arc<Health>,
) {
    let mut backoff = Duration::from_millis(50);
    let key = keys.incoming();
    // After every (re)connect, first what was handed to this reader but never acknowledged
    // (a reply lost in a dropped connection), then new entries.
    let mut pending = true;
    while !tx.is_closed() {
        let c = match con.as_mut() {
            Some(c) => c,
            None => match reader_connection(&client).await {
                Ok(mut c) => match ensure_group(&mut c, &keys).await {
                    Ok(()) => {
                        pending = true;
                        con.insert(c)
                    }
                    Err(e) => {
                        outage(&health, &tx, &e);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                },
                Err(e) => {
                    outage(&health, &tx, &e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            },
        };
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(GROUP).arg("reader").arg("COUNT").arg(BATCH);
        if !pending {
            cmd.arg("BLOCK").arg(BLOCK_MS);
        }
        cmd.arg("STREAMS").arg(&key).arg(if pending { "0" } else { ">" });
        let read: redis::RedisResult<Option<StreamReadReply>> = cmd.query_async(c).await;
        match read {
            Ok(reply) => {
                if pending && reply.as_ref().is_none_or(|r| r.keys.iter().all(|k| k.ids.is_empty())) {
                    pending = false;
                }
                backoff = Duration::from_millis(50);
                if let Some(ms) = health.mark_up() {
                    let _ = tx
                        .send(Incoming::Notice(format!("redis connection restored after {:.1} s", ms as f64 / 1000.0)));
                }
                let ids: Vec<String> = reply
                    .into_iter()
                    .flat_map(|r| r.keys)
                    .flat_map(|k| k.ids)
                    .map(|e| {
                        let _ = tx.send(parse_entry(&e, &enrollment));
                        e.id
                    })
                    .collect();
                if !ids.is_empty() {
                    let mut p = redis::pipe();
                    p.cmd("XACK").arg(&key).arg(GROUP).arg(&ids).ignore();
                    p.cmd("XDEL").arg(&key).arg(&ids).ignore();
                    if let Err(e) = p.query_async::<()>(c).await {
                        outage(&health, &tx, &e);
                        con = None;
                    }
                }
            }
            Err(e) if e.code() == Some("NOGROUP") => {
                // The server restarted without our group (or the stream was removed): make it
                // anew and go on reading; what agents send from now on arrives.
                if let Err(e) = ensure_group(c, &keys).await {
                    outage(&health, &tx, &e);
                    con = None;
                } else {
                    let _ = tx.send(Incoming::Notice(format!(
                        "the consumer group on `{key}` was gone (redis restarted without it?); made it anew"
                    )));
                }
            }
            Err(e) => {
                outage(&health, &tx, &e);
                con = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

fn outage(health: &Health, tx: &mpsc::UnboundedSender<Incoming>, e: &redis::RedisError) {
    if health.mark_down() {
        let _ = tx.send(Incoming::Notice(format!("lost the redis connection ({e}); retrying with backoff")));
    }
}

/// One `incoming` entry as what it says it is, checked: fields present, size bounded, JSON
/// well formed, token the agent's own.
fn parse_entry(e: &redis::streams::StreamId, enrollment: &Enrollment) -> Incoming {
    let agent: Option<String> = e.get("agent");
    let kind: Option<String> = e.get("kind");
    let file = || format!("incoming/{}", e.id);
    let bad = |error: String| Incoming::Bad { file: file(), agent: agent.clone(), error };
    let Some(body) = e.get::<Vec<u8>>("body") else { return bad("entry without a `body` field".into()) };
    if body.len() as u64 > MAX_FILE_BYTES {
        return bad(format!("entry of {} bytes refused (limit {MAX_FILE_BYTES})", body.len()));
    }
    let inc = match kind.as_deref() {
        Some("response") => match serde_json::from_slice::<Response>(&body) {
            Ok(r) => Incoming::Response(r),
            Err(e) => return bad(format!("invalid response JSON: {e}")),
        },
        Some("status") => match serde_json::from_slice::<Status>(&body) {
            Ok(s) => Incoming::Status(s),
            Err(e) => return bad(format!("invalid status JSON: {e}")),
        },
        Some("join") => {
            #[derive(serde::Deserialize)]
            struct Join {
                #[serde(rename = "agentId")]
                agent_id: String,
                nonce: String,
                #[serde(default)]
                host: String,
            }
            return match serde_json::from_slice::<Join>(&body) {
                Ok(j) if valid_id(&j.agent_id) && valid_id(&j.nonce) => {
                    Incoming::Join { agent: j.agent_id, nonce: j.nonce, host: j.host }
                }
                Ok(_) => bad("join with an agent id or nonce that is not 1-64 of [A-Za-z0-9._-]".into()),
                Err(e) => bad(format!("invalid join JSON: {e}")),
            };
        }
        other => return bad(format!("entry of unknown kind {other:?} (want `response`, `status` or `join`)")),
    };
    enrollment.screen(inc, file)
}

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl Transport for RedisTransport {
    fn open_join<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let key = join_key(name);
            // With a TTL, renewed while the stage runs: a crashed stage's name frees itself.
            let set: redis::RedisResult<Option<String>> = redis::cmd("SET")
                .arg(&key)
                .arg(&self.keys.prefix)
                .arg("NX")
                .arg("PX")
                .arg(JOIN_KEY_TTL_MS)
                .query_async(&mut con)
                .await;
            match set {
                Ok(Some(_)) => {
                    let (mut c, k, prefix) = (self.con.clone(), key.clone(), self.keys.prefix.clone());
                    let renew = tokio::spawn(async move {
                        let script = redis::Script::new(
                            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0",
                        );
                        loop {
                            tokio::time::sleep(Duration::from_millis(JOIN_KEY_TTL_MS / 4)).await;
                            let _: redis::RedisResult<i64> =
                                script.key(&k).arg(&prefix).arg(JOIN_KEY_TTL_MS).invoke_async(&mut c).await;
                        }
                    });
                    if let Ok(mut j) = self.join.lock() {
                        *j = Some((name.to_string(), renew));
                    }
                    None
                }
                Ok(None) => Some(format!(
                    "join name `{name}` is in use on {} by another running stage (key {key}, renewed every few seconds while that stage runs); give this stage another `join`",
                    shown(&self.url),
                )),
                Err(e) => Some(format!("cannot publish join name `{name}`: {e}")),
            }
        })
    }

    fn refuse_remote<'a>(&'a self, nonce: &'a str, why: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let body = serde_json::json!({ "refused": why }).to_string();
            let _: redis::RedisResult<()> = redis::cmd("SET")
                .arg(self.keys.join_reply(nonce))
                .arg(body)
                .arg("PX")
                .arg(JOIN_REPLY_TTL_MS)
                .query_async(&mut con)
                .await;
        })
    }

    fn admit_remote<'a>(
        &'a self,
        agent: &'a str,
        nonce: &'a str,
        heartbeat_ms: u64,
    ) -> BoxFuture<'a, std::io::Result<()>> {
        Box::pin(async move {
            let token = self.enrollment.admit(agent);
            let mut con = self.con.clone();
            let body = serde_json::json!({ "token": token, "prefix": self.keys.prefix, "heartbeat_ms": heartbeat_ms })
                .to_string();
            redis::cmd("SET")
                .arg(self.keys.join_reply(nonce))
                .arg(body)
                .arg("PX")
                .arg(JOIN_REPLY_TTL_MS)
                .query_async::<()>(&mut con)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
        })
    }

    fn enroll(&self, agent_id: &str) -> Vec<(&'static str, String)> {
        let token = self.enrollment.admit(agent_id);
        vec![(ENV_TRANSPORT, self.url.clone()), (ENV_REDIS_PREFIX, self.keys.prefix.clone()), (ENV_AGENT_TOKEN, token)]
    }

    fn send<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, std::io::Result<()>> {
        Box::pin(async move {
            let bytes = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
            let mut con = self.con.clone();
            let mut wait = Duration::from_millis(100);
            let mut tries = 0;
            loop {
                let r: redis::RedisResult<String> = con.xadd(self.keys.messages(), "*", &[("msg", &bytes)]).await;
                match r {
                    Ok(entry) => {
                        if let Ok(mut e) = self.entries.lock() {
                            e.insert(msg.message_id.clone(), entry);
                        }
                        return Ok(());
                    }
                    Err(e) if tries >= 3 => return Err(std::io::Error::other(format!("redis XADD: {e}"))),
                    Err(_) => {
                        tries += 1;
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                }
            }
        })
    }

    fn retire(&self, message_id: &str) {
        let _ = self.retire_tx.send(message_id.to_string());
    }

    fn lost(&self) -> Option<String> {
        let since = self.health.down_since.load(Ordering::Relaxed);
        (self.health.down() && now_ms() - since > LOST_AFTER.as_millis() as i64).then(|| {
            format!("the redis server {} has been unreachable for over {} s", shown(&self.url), LOST_AFTER.as_secs())
        })
    }

    fn release<'a>(&'a self, agent_id: &'a str) -> BoxFuture<'a, usize> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let key = self.keys.heartbeat(agent_id);
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&key).query_async(&mut con).await;
            let left: redis::RedisResult<i64> = redis::cmd("EXISTS").arg(&key).query_async(&mut con).await;
            left.map_or(1, |n| n.max(0) as usize)
        })
    }

    fn close(&self, keep: bool) -> BoxFuture<'_, usize> {
        Box::pin(async move {
            self.reader.abort();
            self.janitor.abort();
            let mut con = self.con.clone();
            let join = self.join.lock().ok().and_then(|mut j| j.take());
            if let Some((name, renew)) = join {
                renew.abort();
                // Only our own publication: another stage may have taken the name since.
                let _: redis::RedisResult<i64> = redis::Script::new(
                    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
                )
                .key(join_key(&name))
                .arg(&self.keys.prefix)
                .invoke_async(&mut con)
                .await;
            }
            if keep {
                return keyspace::scan(&mut con, &self.keys.prefix).await.map_or(0, |k| k.len());
            }
            keyspace::remove_all(&mut con, &self.keys.prefix).await
        })
    }
}
