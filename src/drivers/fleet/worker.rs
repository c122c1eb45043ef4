//! Workers: planrun on other hosts taking a share of a fleet stage over Redis.
//!
//! `planrun worker --join redis://HOST:PORT` (the worker's side, `run`) announces itself under
//! `planrun:worker:NAME` (a key with a TTL it renews every second) and waits on the list
//! `planrun:worker:NAME:jobs`. A fleet stage with `workers = K` (the stage's side, `dispatch`)
//! waits for K workers, splits its `expected_agents` among them and pushes each its job; the
//! worker starts that many built-in agents on its host, which join the stage (`join`) with ids
//! `NAME-agent-I` — so every row those agents cause names their worker — and stop at the
//! stage's teardown. A worker whose key lapses is reported (`worker_lost`, with its share); its
//! agents, which die with it, become `unresponsive`. Its share is not moved to another worker.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

use super::config::Fleet;
use crate::drivers::StageContext;
use crate::drivers::keyspace::shown;

/// A worker's announcement lives this long unless renewed (every second): a dead worker is
/// noticed within 3.5 s.
const WORKER_TTL_MS: u64 = 3_000;

fn worker_key(name: &str) -> String {
    format!("planrun:worker:{name}")
}

fn jobs_key(name: &str) -> String {
    format!("planrun:worker:{name}:jobs")
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 48 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[derive(Clone, Debug, clap::Args)]
pub struct WorkerArgs {
    /// The Redis server the runs coordinate through, `redis://HOST:PORT/DB`.
    #[arg(long, env = "PLANRUN_TRANSPORT", hide_env_values = true, value_name = "URL")]
    pub join: String,
    /// This worker's name (default: the host name and pid); agents it starts are NAME-agent-I.
    #[arg(long)]
    pub name: Option<String>,
    /// Exit after this many jobs (0: serve until stopped).
    #[arg(long, default_value_t = 0)]
    pub jobs: u32,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Job {
    join: String,
    /// The stage's key prefix: a job whose join key no longer names it is stale (that stage ended).
    prefix: String,
    agents: u32,
    heartbeat_ms: u64,
}

/// Whether the stage `job` was made for still publishes its join key.
fn stage_running(con: &mut redis::Connection, job: &Job) -> Option<bool> {
    let got: redis::RedisResult<Option<String>> =
        redis::cmd("GET").arg(super::transport::join_key(&job.join)).query(con);
    got.ok().map(|v| v.as_deref() == Some(job.prefix.as_str()))
}

/// The worker's loop; its exit code.
pub fn run(args: WorkerArgs) -> i32 {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
    let name = args.name.clone().unwrap_or_else(|| format!("{host}-{}", std::process::id()));
    if !valid_name(&name) {
        eprintln!("planrun worker: a worker name is 1-48 of [A-Za-z0-9._-], not `{name}`");
        return 2;
    }
    let url = args.join.clone();
    let client = match redis::Client::open(url.as_str()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("planrun worker: `{}` is not a Redis URL: {e}", shown(&url));
            return 2;
        }
    };
    // The announcement, renewed on its own connection every second; it says when the worker
    // is busy with a job, so stages pick idle workers.
    let busy = Arc::new(AtomicBool::new(false));
    {
        let (client, name, host, busy) = (client.clone(), name.clone(), host.clone(), Arc::clone(&busy));
        std::thread::spawn(move || {
            loop {
                if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_secs(1)) {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                    loop {
                        let body = serde_json::json!({
                            "host": host, "pid": std::process::id(), "busy": busy.load(Ordering::Relaxed),
                        })
                        .to_string();
                        let r: redis::RedisResult<()> = redis::cmd("SET")
                            .arg(worker_key(&name))
                            .arg(body)
                            .arg("PX")
                            .arg(WORKER_TTL_MS)
                            .query(&mut c);
                        if r.is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
    }
    eprintln!("planrun worker {name}: waiting for jobs on {}", shown(&url));
    let mut done = 0;
    let mut con: Option<redis::Connection> = None;
    loop {
        let c = match con.as_mut() {
            Some(c) => c,
            None => match client.get_connection_with_timeout(Duration::from_secs(1)) {
                Ok(c) => {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
                    con.insert(c)
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let got: redis::RedisResult<Option<(String, String)>> =
            redis::cmd("BLPOP").arg(jobs_key(&name)).arg(2).query(c);
        let job = match got {
            Ok(Some((_, j))) => j,
            Ok(None) => continue,
            Err(_) => {
                con = None;
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let job: Job = match serde_json::from_str(&job) {
            Ok(j) => j,
            Err(e) => {
                eprintln!("planrun worker {name}: a job that is not one ({e}); skipped");
                continue;
            }
        };
        if stage_running(c, &job) == Some(false) {
            eprintln!("planrun worker {name}: a job for `{}`, whose stage is over; skipped", job.join);
            continue;
        }
        busy.store(true, Ordering::Relaxed);
        eprintln!("planrun worker {name}: starting {} agents for `{}`", job.agents, job.join);
        let mut agents: Vec<Child> =
            (1..=job.agents).filter_map(|i| start_agent(&url, &job, &format!("{name}-agent-{i}"))).collect();
        // Until the stage stops them (its teardown sends `shutdown`; they also stop when its join
        // key goes). Should they outlive the stage by 5 s anyway, they are killed by pid.
        let mut gone_since: Option<Instant> = None;
        while !agents.is_empty() {
            agents.retain_mut(|a| matches!(a.try_wait(), Ok(None)));
            std::thread::sleep(Duration::from_millis(200));
            match stage_running(c, &job) {
                Some(false) => {
                    let since = *gone_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(5) {
                        for a in &mut agents {
                            let _ = a.kill();
                            let _ = a.wait();
                        }
                        agents.clear();
                    }
                }
                _ => gone_since = None,
            }
        }
        busy.store(false, Ordering::Relaxed);
        eprintln!("planrun worker {name}: job `{}` done", job.join);
        done += 1;
        if args.jobs > 0 && done >= args.jobs {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(worker_key(&name)).query(c);
            return 0;
        }
    }
}

fn start_agent(url: &str, job: &Job, id: &str) -> Option<Child> {
    let exe = std::env::current_exe().ok()?;
    let lean = exe.with_file_name(super::LEAN_AGENT);
    let mut cmd = if lean.is_file() {
        Command::new(lean)
    } else {
        let mut c = Command::new(&exe);
        c.arg("agent");
        c
    };
    cmd.args(["--join", &job.join, "--id", id, "--heartbeat-ms", &job.heartbeat_ms.to_string()])
        .env(super::protocol::ENV_TRANSPORT, url)
        // Whatever this shell had of another stage's agent is not this agent's.
        .env_remove(super::protocol::ENV_REDIS_PREFIX)
        .env_remove(super::protocol::ENV_AGENT_TOKEN)
        .env_remove(super::protocol::ENV_COORD_DIR)
        .env_remove(super::protocol::ENV_AGENT_ID)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd.spawn().map_err(|e| eprintln!("planrun worker: cannot start agent {id}: {e}")).ok()
}

/// The stage's side: wait for `cfg.workers` workers, hand each its share of
/// `cfg.expected_agents`, then watch their announcements until the stage ends (never returns).
pub async fn dispatch(url: &str, prefix: &str, cfg: &Fleet, ctx: &StageContext) {
    let con = match redis::Client::open(url) {
        Ok(client) => ConnectionManager::new(client).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let mut con = match con {
        Ok(c) => c,
        Err(e) => {
            ctx.events.emit(
                ctx.events
                    .event("worker")
                    .name("expected")
                    .ok(false)
                    .error(format!("cannot reach {} to hand workers their shares: {e}", shown(url))),
            );
            return std::future::pending().await;
        }
    };
    let want = cfg.workers as usize;
    let deadline = Instant::now() + ctx.clock.scaled(cfg.join_timeout.0);
    let mut found: Vec<String> = Vec::new();
    while found.len() < want && Instant::now() < deadline {
        let keys: Vec<String> = crate::drivers::keyspace::scan(&mut con, "planrun:worker").await.unwrap_or_default();
        found =
            keys.iter().filter(|k| !k.ends_with(":jobs")).map(|k| k["planrun:worker:".len()..].to_string()).collect();
        found.sort();
        if found.len() < want {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    found.truncate(want);
    if found.len() < want {
        ctx.events.emit(
            ctx.events
                .event("worker")
                .name("expected")
                .ok(false)
                .value(found.len() as f64, "workers")
                .error(format!(
                    "{} of {want} workers announced themselves within join_timeout; start them with `planrun worker --join {}`",
                    found.len(),
                    shown(url)
                )),
        );
    }
    let n = found.len().max(1) as u32;
    let heartbeat_ms = ctx.clock.scaled(cfg.heartbeat.0).as_millis().max(10) as u64;
    let mut shares = Vec::new();
    for (i, w) in found.iter().enumerate() {
        let share = cfg.expected_agents / n + u32::from((i as u32) < cfg.expected_agents % n);
        let job =
            Job { join: cfg.join.clone().unwrap_or_default(), prefix: prefix.to_string(), agents: share, heartbeat_ms };
        // The list expires with the wait for joins: a job nobody took does not linger.
        let ttl = ctx.clock.scaled(cfg.join_timeout.0).as_millis().max(1000) as u64;
        let mut p = redis::pipe();
        p.cmd("RPUSH").arg(jobs_key(w)).arg(serde_json::to_string(&job).unwrap_or_default()).ignore();
        p.cmd("PEXPIRE").arg(jobs_key(w)).arg(ttl).ignore();
        let pushed: redis::RedisResult<()> = p.query_async(&mut con).await;
        let mut ev = ctx.events.event("worker").name(w.as_str()).ok(pushed.is_ok()).value(share as f64, "agents");
        if let Err(e) = &pushed {
            ev = ev.error(format!("cannot hand it its job: {e}"));
        }
        ctx.events.emit(ev);
        shares.push((w.clone(), share, true));
    }
    // Watch: a worker whose announcement lapses is gone, and so are its agents.
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (w, share, alive) in shares.iter_mut() {
            let exists: redis::RedisResult<bool> = redis::cmd("EXISTS").arg(worker_key(w)).query_async(&mut con).await;
            if let (Ok(true), false) = (&exists, *alive) {
                // Back after a hiccup longer than its TTL: say so (its agents tell their own story).
                *alive = true;
                ctx.events.emit(
                    ctx.events
                        .event("worker")
                        .name(w.as_str())
                        .ok(true)
                        .value(*share as f64, "agents")
                        .attrs(serde_json::json!({ "back": true })),
                );
                continue;
            }
            if let (Ok(false), true) = (exists, *alive) {
                *alive = false;
                ctx.events.emit(
                    ctx.events
                        .event("worker_lost")
                        .name(w.as_str())
                        .ok(false)
                        .value(*share as f64, "agents")
                        .error(format!(
                            "worker {w} stopped announcing itself; its {share} agents are gone with it (their share is not moved)"
                        )),
                );
            }
        }
    }
}
