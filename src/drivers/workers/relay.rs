//! A stage share's events, from the worker that made them to the run directory. On the worker,
//! `StreamOut` is the writer under its event sink: the sink's JSONL rows go, a numbered batch
//! per entry, to the stage's stream (`events_key`, field `rows`), and at the end a `Report`
//! (field `done`) says how the share went and how many rows it wrote. It writes with
//! NOMKSTREAM: once the stage has removed its stream (it is over), the worker's writes fail and
//! its share stops, and nothing it sends re-creates a key. On the runner, `Relay` creates the
//! stream, reads it on a connection of its own and writes every row into the run's log through
//! the stage's emitter (`Emitter::relay`: the `worker` column names who made it), trimming what
//! it has read. A batch sent twice (an XADD retried after its reply was lost) is taken once, by
//! its number; the caller checks each worker's row count against its report, so a lost batch
//! is said, not silent. A Redis hiccup is retried on both sides; only 30 s without the server
//! is an error.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};

use crate::drivers::Status;
use crate::drivers::keyspace::shown;
use crate::events::{Emitter, Event};

/// Rows are sent once this many bytes are waiting (and at every flush of the sink, which comes
/// at least every second).
const CHUNK: usize = 256 * 1024;
/// How long either side keeps retrying an unreachable server.
const GIVE_UP: Duration = Duration::from_secs(30);
const BLOCK_MS: u64 = 250;

/// How a worker's share ended, sent after its last row.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Rows the share's sink wrote (all sent before this report).
    pub rows: u64,
    /// The share's request counts (finished, failed), as its driver wrote them at its end
    /// (`http_schedule` rows): what the stage's outcome is judged on, even if rows were lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<(u64, u64)>,
}

/// The worker's side: a `Write` that sends whole JSONL rows to the stage's stream.
pub struct StreamOut {
    client: redis::Client,
    con: Option<redis::Connection>,
    key: String,
    worker: String,
    pending: Vec<u8>,
    /// The next batch's number, shared by every writer of one share (its sink's, its report's).
    batch: Arc<std::sync::atomic::AtomicU64>,
}

impl StreamOut {
    /// A writer to the stream `key` (the job's `events`). Writers of one share pass the same
    /// `batch` counter (starting at 1), so their entries' numbers keep growing.
    pub fn new(
        url: &str,
        key: &str,
        worker: &str,
        batch: Arc<std::sync::atomic::AtomicU64>,
    ) -> Result<StreamOut, String> {
        let client = redis::Client::open(url).map_err(|e| format!("`{}` is not a Redis URL: {e}", shown(url)))?;
        Ok(StreamOut {
            client,
            con: None,
            key: key.to_string(),
            worker: worker.to_string(),
            pending: Vec::new(),
            batch,
        })
    }

    /// XADD one entry, reconnecting and retrying for up to `GIVE_UP`. An error too when the
    /// stream is gone: the stage is over.
    fn add(&mut self, field: &str, body: &[u8]) -> io::Result<()> {
        // The number is this entry's whatever its tries: one that landed though its reply was
        // lost, and is sent again, is taken once.
        let n = self.batch.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            if self.con.is_none() {
                match self.client.get_connection_with_timeout(Duration::from_secs(2)) {
                    Ok(c) => {
                        let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                        self.con = Some(c);
                    }
                    Err(e) if started.elapsed() > GIVE_UP => return Err(io::Error::other(e.to_string())),
                    Err(_) => {}
                }
            }
            if let Some(c) = self.con.as_mut() {
                let r: redis::RedisResult<Option<String>> = redis::cmd("XADD")
                    .arg(&self.key)
                    .arg("NOMKSTREAM")
                    .arg("*")
                    .arg("w")
                    .arg(&self.worker)
                    .arg("n")
                    .arg(n)
                    .arg(field)
                    .arg(body)
                    .query(c);
                match r {
                    Ok(Some(_)) => return Ok(()),
                    Ok(None) => return Err(io::Error::other("the stage's event stream is gone: the stage is over")),
                    Err(e) if started.elapsed() > GIVE_UP => return Err(io::Error::other(e.to_string())),
                    Err(_) => self.con = None,
                }
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Send the rows waiting, up to the last whole one.
    fn ship(&mut self) -> io::Result<()> {
        let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') else { return Ok(()) };
        let body: Vec<u8> = self.pending.drain(..=end).collect();
        self.add("rows", &body)
    }

    /// Say how the share went (after the sink that wrote through this stream is closed).
    pub fn done(&mut self, report: &Report) -> io::Result<()> {
        self.ship()?;
        let body = serde_json::to_vec(report).unwrap_or_default();
        self.add("done", &body)
    }
}

impl Write for StreamOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= CHUNK {
            self.ship()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.ship()
    }
}

/// The runner's side: reads a stage's stream and writes what its workers sent into the run.
pub struct Relay {
    client: redis::Client,
    con: Option<MultiplexedConnection>,
    key: String,
    last: String,
    names: HashMap<String, Arc<str>>,
    /// Rows relayed per worker.
    pub rows: HashMap<Arc<str>, u64>,
    /// The last batch number taken per worker.
    batches: HashMap<Arc<str>, u64>,
    down_since: Option<Instant>,
    garbled: u64,
}

impl Relay {
    /// A relay of the stream `key`, which it creates (an entry without a worker, skipped) with
    /// a TTL of `ttl` that the stage renews (`keep`), so a runner that dies leaves none behind.
    pub async fn open(url: &str, key: &str, ttl: Duration) -> Result<Relay, String> {
        let client = redis::Client::open(url).map_err(|e| format!("`{}` is not a Redis URL: {e}", shown(url)))?;
        let mut relay = Relay {
            client,
            con: None,
            key: key.to_string(),
            last: "0".into(),
            names: HashMap::new(),
            rows: HashMap::new(),
            batches: HashMap::new(),
            down_since: None,
            garbled: 0,
        };
        let mut con = relay.connect().await.map_err(|e| format!("cannot reach {}: {e}", shown(url)))?;
        let made: redis::RedisResult<()> = redis::pipe()
            .cmd("XADD")
            .arg(key)
            .arg("*")
            .arg("opened")
            .arg(1)
            .ignore()
            .cmd("PEXPIRE")
            .arg(key)
            .arg(ttl.as_millis() as u64)
            .ignore()
            .query_async(&mut con)
            .await;
        made.map_err(|e| format!("cannot create the workers' event stream on {}: {e}", shown(url)))?;
        relay.con = Some(con);
        Ok(relay)
    }

    async fn connect(&self) -> redis::RedisResult<MultiplexedConnection> {
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_millis(BLOCK_MS) + Duration::from_secs(5)));
        self.client.get_multiplexed_async_connection_with_config(&cfg).await
    }

    /// Renew the stream's TTL.
    pub async fn keep(&mut self, ttl: Duration) {
        if let Some(con) = self.con.as_mut() {
            let _: redis::RedisResult<()> =
                redis::cmd("PEXPIRE").arg(&self.key).arg(ttl.as_millis() as u64).query_async(con).await;
        }
    }

    fn name(&mut self, w: &str) -> Arc<str> {
        if let Some(n) = self.names.get(w) {
            return Arc::clone(n);
        }
        let n: Arc<str> = w.into();
        self.names.insert(w.to_string(), Arc::clone(&n));
        n
    }

    /// Wait up to 250 ms for entries, relay their rows through `events`, and return the reports
    /// of the shares that finished. An error only after 30 s without the server.
    pub async fn pump(
        &mut self,
        events: &Emitter,
        tap: &mut (dyn FnMut(&Event) + Send),
    ) -> Result<Vec<(Arc<str>, Report)>, String> {
        self.read(events, true, tap).await.map(|(_, done)| done)
    }

    /// Relay everything the stream holds now, without waiting for more (before deciding that a
    /// worker that stopped announcing itself was lost: its report may be in the backlog).
    pub async fn drain(
        &mut self,
        events: &Emitter,
        tap: &mut (dyn FnMut(&Event) + Send),
    ) -> Result<Vec<(Arc<str>, Report)>, String> {
        let mut all = Vec::new();
        // Bounded (32 reads of 64 entries), so busy workers cannot keep the stage from its
        // other duties; what is left is read next time.
        for _ in 0..32 {
            let (read, done) = self.read(events, false, tap).await?;
            all.extend(done);
            if read == 0 || self.con.is_none() {
                break;
            }
        }
        Ok(all)
    }

    /// One read: how many entries it got, and the reports among them. `tap` sees every row
    /// relayed, as the worker wrote it.
    async fn read(
        &mut self,
        events: &Emitter,
        block: bool,
        tap: &mut (dyn FnMut(&Event) + Send),
    ) -> Result<(usize, Vec<(Arc<str>, Report)>), String> {
        if self.con.is_none() {
            match self.connect().await {
                Ok(c) => self.con = Some(c),
                Err(e) => {
                    tokio::time::sleep(Duration::from_millis(BLOCK_MS)).await;
                    return self.down(e).map(|d| (0, d));
                }
            }
        }
        let Some(con) = self.con.as_mut() else { return Ok((0, Vec::new())) };
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(64);
        if block {
            cmd.arg("BLOCK").arg(BLOCK_MS);
        }
        let got: redis::RedisResult<Option<redis::streams::StreamReadReply>> =
            cmd.arg("STREAMS").arg(&self.key).arg(&self.last).query_async(con).await;
        let reply = match got {
            Ok(r) => r,
            Err(e) => {
                self.con = None;
                tokio::time::sleep(Duration::from_millis(BLOCK_MS)).await;
                return self.down(e).map(|d| (0, d));
            }
        };
        self.down_since = None;
        let mut done = Vec::new();
        let mut read = 0;
        let Some(reply) = reply else { return Ok((0, done)) };
        for key in reply.keys {
            for entry in key.ids {
                read += 1;
                self.last = entry.id.clone();
                let who: Option<String> = entry.get("w");
                let Some(who) = who else { continue };
                let w = self.name(&who);
                // A batch seen before (its XADD was retried after a lost reply) is skipped.
                let n: u64 = entry.get("n").unwrap_or(0);
                let last = self.batches.entry(Arc::clone(&w)).or_default();
                if n <= *last {
                    continue;
                }
                *last = n;
                if let Some(rows) = entry.get::<Vec<u8>>("rows") {
                    let mut rows_in = 0;
                    for line in rows.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                        match serde_json::from_slice::<Event>(line) {
                            Ok(ev) => {
                                tap(&ev);
                                events.relay(ev, &w);
                                rows_in += 1;
                            }
                            Err(e) => {
                                self.garbled += 1;
                                if self.garbled <= 3 {
                                    let mut ev = events
                                        .event("warning")
                                        .name("relay")
                                        .error(format!("worker {w} sent a row that is not an event ({e}); skipped"));
                                    ev.worker = Some(Arc::clone(&w));
                                    events.emit(ev);
                                }
                            }
                        }
                    }
                    *self.rows.entry(Arc::clone(&w)).or_default() += rows_in;
                }
                if let Some(body) = entry.get::<Vec<u8>>("done") {
                    let report = serde_json::from_slice::<Report>(&body).unwrap_or_else(|e| Report {
                        status: Status::Error,
                        message: Some(format!("worker {w} sent a report that is not one: {e}")),
                        rows: 0,
                        counts: None,
                    });
                    done.push((w, report));
                }
            }
        }
        // What has been read is in the run's log now; the server need not keep it.
        if let Some(con) = self.con.as_mut() {
            let _: redis::RedisResult<i64> =
                redis::cmd("XTRIM").arg(&self.key).arg("MINID").arg(&self.last).query_async(con).await;
        }
        Ok((read, done))
    }

    fn down(&mut self, e: redis::RedisError) -> Result<Vec<(Arc<str>, Report)>, String> {
        let since = *self.down_since.get_or_insert_with(Instant::now);
        if since.elapsed() > GIVE_UP {
            return Err(format!("the workers' event stream has been unreachable for {:?}: {e}", since.elapsed()));
        }
        Ok(Vec::new())
    }
}
