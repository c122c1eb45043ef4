//! The runner's side of workers: find the workers that have announced themselves idle and claim
//! them (waiting up to a timeout for enough), hand each its job, and watch their announcements
//! while the stage runs — `worker` events for each share handed out (and for a worker that comes
//! back), `worker_lost` for one whose announcement lapsed.
//!
//! Watching is two steps, `look` then `judge`, so a caller can take in what the stream holds
//! between them: a worker reports before it takes its announcement down, so a report that
//! exists is in the stream by the time its announcement is seen gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::job::{Announcement, Job, claim_key, jobs_key, worker_key};
use crate::drivers::StageContext;
use crate::drivers::keyspace::{self, shown};

/// How long a claim holds a worker for the stage that claimed it: until it has taken its job
/// and says it is busy (it renews its announcement every second).
const CLAIM_MS: u64 = 5_000;

/// One worker's share of a stage.
#[derive(Clone, Debug)]
pub struct Share {
    pub worker: Arc<str>,
    /// How much of the stage it has (agents, users), in `unit`s.
    pub size: f64,
    /// Its announcement was there at the last check.
    pub alive: bool,
    /// Its work is over (it reported): it is no longer watched.
    pub finished: bool,
}

/// A connection for handing out jobs and watching workers, for one run of one stage (`token`).
pub struct Hire {
    con: ConnectionManager,
    url: String,
    token: String,
}

impl Hire {
    pub async fn connect(url: &str, token: &str) -> Result<Hire, String> {
        let client = redis::Client::open(url).map_err(|e| format!("`{}` is not a Redis URL: {e}", shown(url)))?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let con = ConnectionManager::new_with_config(client, cfg).await.map_err(|e| {
            format!("cannot reach {} to hand workers their shares: {e}; is redis-server running there?", shown(url))
        })?;
        Ok(Hire { con, url: url.to_string(), token: token.to_string() })
    }

    /// The connection, for the stage's own keys.
    pub fn connection(&self) -> ConnectionManager {
        self.con.clone()
    }

    /// Claim `name` for this stage (or keep a claim it already holds); false if another stage has it.
    async fn claim(&mut self, name: &str) -> bool {
        let got: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(claim_key(name))
            .arg(&self.token)
            .arg("NX")
            .arg("PX")
            .arg(CLAIM_MS)
            .query_async(&mut self.con)
            .await;
        if matches!(got, Ok(Some(_))) {
            return true;
        }
        let holder: redis::RedisResult<Option<String>> =
            redis::cmd("GET").arg(claim_key(name)).query_async(&mut self.con).await;
        if holder.ok().flatten().as_deref() == Some(self.token.as_str()) {
            let _: redis::RedisResult<()> =
                redis::cmd("PEXPIRE").arg(claim_key(name)).arg(CLAIM_MS).query_async(&mut self.con).await;
            return true;
        }
        false
    }

    /// The idle workers announced now that this stage could claim, by name, at most `want`.
    async fn idle(&mut self, want: usize) -> Vec<String> {
        let keys = keyspace::scan(&mut self.con, "planrun:worker").await.unwrap_or_default();
        let mut names: Vec<String> = keys
            .iter()
            .filter(|k| !k.ends_with(":jobs") && !k.ends_with(":claim"))
            .map(|k| k["planrun:worker:".len()..].to_string())
            .collect();
        names.sort();
        let mut idle = Vec::new();
        for n in names {
            if idle.len() >= want {
                break;
            }
            let body: redis::RedisResult<Option<String>> =
                redis::cmd("GET").arg(worker_key(&n)).query_async(&mut self.con).await;
            // Gone since the scan, or not a worker's announcement: not hired.
            let Some(a) = body.ok().flatten().and_then(|b| serde_json::from_str::<Announcement>(&b).ok()) else {
                continue;
            };
            // A job waiting in its list makes it busy too (it has not said so yet).
            let queued: redis::RedisResult<u64> = redis::cmd("LLEN").arg(jobs_key(&n)).query_async(&mut self.con).await;
            if !a.busy && queued.unwrap_or(1) == 0 && self.claim(&n).await {
                idle.push(n);
            }
        }
        idle
    }

    /// Wait up to `timeout` (real time) for `want` idle workers and claim them; fewer when fewer
    /// came, with a failed `worker` event (name `expected`) saying how to start them.
    pub async fn find(&mut self, want: usize, timeout: Duration, ctx: &StageContext) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut found = self.idle(want).await;
        while found.len() < want && Instant::now() < deadline && !ctx.cancel.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            found = self.idle(want).await;
        }
        if found.len() < want {
            ctx.events.emit(
                ctx.events.event("worker").name("expected").ok(false).value(found.len() as f64, "workers").error(
                    format!(
                        "{} of {want} workers announced themselves within {timeout:?}; start them with `planrun worker --join {}`",
                        found.len(),
                        shown(&self.url)
                    ),
                ),
            );
        }
        found
    }

    /// Hand `worker` its job; the job expires after `ttl` if nobody takes it. Emits the share's
    /// `worker` event.
    #[allow(clippy::too_many_arguments)]
    pub async fn hand(
        &mut self,
        worker: &str,
        job: &Job,
        size: f64,
        unit: &'static str,
        ttl: Duration,
        ctx: &StageContext,
    ) -> Share {
        let mut p = redis::pipe();
        p.cmd("RPUSH").arg(jobs_key(worker)).arg(serde_json::to_string(job).unwrap_or_default()).ignore();
        p.cmd("PEXPIRE").arg(jobs_key(worker)).arg(ttl.as_millis().max(1000) as u64).ignore();
        let pushed: redis::RedisResult<()> = p.query_async(&mut self.con).await;
        let w: Arc<str> = worker.into();
        let mut ev = ctx.events.event("worker").name(Arc::clone(&w)).ok(pushed.is_ok()).value(size, unit);
        ev.worker = Some(Arc::clone(&w));
        if let Err(e) = &pushed {
            ev = ev.error(format!("cannot hand it its job: {e}"));
        }
        ctx.events.emit(ev);
        Share { worker: w, size, alive: pushed.is_ok(), finished: pushed.is_err() }
    }

    /// Whether each share's announcement is there now (None: finished, or the server did not answer).
    pub async fn look(&mut self, shares: &[Share]) -> Vec<Option<bool>> {
        let mut seen = Vec::with_capacity(shares.len());
        for s in shares {
            if s.finished {
                seen.push(None);
                continue;
            }
            let exists: redis::RedisResult<bool> =
                redis::cmd("EXISTS").arg(worker_key(&s.worker)).query_async(&mut self.con).await;
            seen.push(exists.ok());
        }
        seen
    }

    /// From what `look` saw: a share still unfinished whose announcement had lapsed is
    /// `worker_lost` (its error says `consequence(share)`); one that is back after that is a
    /// `worker` event with `attrs.back`. Returns the shares newly lost.
    pub fn judge(
        shares: &mut [Share],
        seen: &[Option<bool>],
        unit: &'static str,
        consequence: impl Fn(&Share) -> String,
        ctx: &StageContext,
    ) -> Vec<Arc<str>> {
        let mut lost = Vec::new();
        for (s, seen) in shares.iter_mut().zip(seen) {
            if s.finished {
                continue;
            }
            match (seen, s.alive) {
                (Some(true), false) => {
                    s.alive = true;
                    let mut ev = ctx
                        .events
                        .event("worker")
                        .name(Arc::clone(&s.worker))
                        .ok(true)
                        .value(s.size, unit)
                        .attrs(serde_json::json!({ "back": true }));
                    ev.worker = Some(Arc::clone(&s.worker));
                    ctx.events.emit(ev);
                }
                (Some(false), true) => {
                    s.alive = false;
                    let mut ev = ctx
                        .events
                        .event("worker_lost")
                        .name(Arc::clone(&s.worker))
                        .ok(false)
                        .value(s.size, unit)
                        .error(format!("worker {} stopped announcing itself; {}", s.worker, consequence(s)));
                    ev.worker = Some(Arc::clone(&s.worker));
                    ctx.events.emit(ev);
                    lost.push(Arc::clone(&s.worker));
                }
                _ => {}
            }
        }
        lost
    }
}
