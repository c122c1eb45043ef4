//! A fleet stage's shares on workers (`workers = K`): the stage's side (`dispatch`) waits for K
//! idle `planrun worker` processes, splits its `expected_agents` among them and hands each its
//! job; the worker starts that many built-in agents on its host (`start_agents`), which join the
//! stage (`join`) with ids `WORKER-agent-I` and stop at the stage's teardown. Every row about
//! those agents carries the `worker` column (`Emitter::place`), and what the worker itself
//! reports (how its agents started) is relayed into the run. A worker whose announcement lapses
//! is reported (`worker_lost`, with its share); its agents, which die with it, become
//! `unresponsive`. Its share is not moved to another worker.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::Fleet;
use crate::drivers::StageContext;
use crate::drivers::workers::{Hire, Job, Relay, Work, events_key};

/// Start `agents` built-in agents that join `join` through `url`, ids `WORKER-agent-I`; the
/// ones that started, and for each that did not, why.
pub fn start_agents(url: &str, join: &str, heartbeat_ms: u64, worker: &str, agents: u32) -> (Vec<Child>, Vec<String>) {
    let mut started = Vec::new();
    let mut failed = Vec::new();
    for i in 1..=agents {
        let id = format!("{worker}-agent-{i}");
        match start_agent(url, join, heartbeat_ms, &id) {
            Ok(c) => started.push(c),
            Err(e) => failed.push(format!("cannot start agent {id}: {e}")),
        }
    }
    (started, failed)
}

fn start_agent(url: &str, join: &str, heartbeat_ms: u64, id: &str) -> std::io::Result<Child> {
    let exe = std::env::current_exe()?;
    let lean = exe.with_file_name(super::LEAN_AGENT);
    let mut cmd = if lean.is_file() {
        Command::new(lean)
    } else {
        let mut c = Command::new(&exe);
        c.arg("agent");
        c
    };
    cmd.args(["--join", join, "--id", id, "--heartbeat-ms", &heartbeat_ms.to_string()])
        .env(super::protocol::ENV_TRANSPORT, url)
        // Whatever this shell had of another stage's agent is not this agent's.
        .env_remove(super::protocol::ENV_REDIS_PREFIX)
        .env_remove(super::protocol::ENV_AGENT_TOKEN)
        .env_remove(super::protocol::ENV_COORD_DIR)
        .env_remove(super::protocol::ENV_AGENT_ID)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd.spawn()
}

/// The stage's side: wait for `cfg.workers` workers, hand each its share of
/// `cfg.expected_agents`, then relay what they report and watch their announcements until the
/// stage ends (never returns).
pub async fn dispatch(url: &str, prefix: &str, cfg: &Fleet, ctx: &StageContext) {
    let token =
        format!("{:016x}", ctx.seed_for(&["workers", &ctx.iteration.to_string(), &ctx.clock.wall_us().to_string()]));
    let mut hire = match Hire::connect(url, &token).await {
        Ok(h) => h,
        Err(e) => {
            ctx.events.emit(ctx.events.event("worker").name("expected").ok(false).error(e));
            return std::future::pending().await;
        }
    };
    let timeout = ctx.clock.scaled(cfg.join_timeout.0);
    let found = hire.find(cfg.workers as usize, timeout, ctx).await;
    let n = found.len().max(1) as u32;
    let heartbeat_ms = ctx.clock.scaled(cfg.heartbeat.0).as_millis().max(10) as u64;
    let join = cfg.join.clone().unwrap_or_default();
    let events = events_key(prefix, &token);
    // The stage's transport removes its keys (this stream among them) at teardown; the TTL is
    // for a runner that dies first.
    let ttl = Duration::from_secs(60);
    let mut relay = Relay::open(url, &events, ttl).await.ok();
    let mut shares = Vec::new();
    for (i, w) in found.iter().enumerate() {
        let share = cfg.expected_agents / n + u32::from((i as u32) < cfg.expected_agents % n);
        let job = Job {
            prefix: prefix.to_string(),
            // The join key holds the stage's prefix while it runs.
            alive_key: super::transport::join_key(&join),
            alive_value: prefix.to_string(),
            events: events.clone(),
            t0_ms: ctx.clock.elapsed_ms(),
            scale: ctx.clock.scale(),
            work: Work::Agents { join: join.clone(), agents: share, heartbeat_ms },
        };
        let worker: Arc<str> = w.as_str().into();
        for a in 1..=share {
            ctx.events.place(&format!("{w}-agent-{a}"), &worker);
        }
        shares.push(hire.hand(w, &job, share as f64, "agents", timeout, ctx).await);
    }
    let mut last_check = Instant::now();
    let mut last_keep = Instant::now();
    loop {
        match relay.as_mut() {
            // A relay that gave up (30 s without the server) says so once; the coordinator's
            // own transport reports the outage too.
            Some(r) => {
                if let Err(e) = r.pump(&ctx.events, &mut |_| {}).await {
                    ctx.events.emit(ctx.events.event("warning").name("relay").error(e));
                    relay = None;
                }
                if last_keep.elapsed() >= Duration::from_secs(1) {
                    last_keep = Instant::now();
                    if let Some(r) = relay.as_mut() {
                        r.keep(ttl).await;
                    }
                }
            }
            None => tokio::time::sleep(Duration::from_millis(250)).await,
        }
        if last_check.elapsed() >= Duration::from_millis(500) {
            last_check = Instant::now();
            let seen = hire.look(&shares).await;
            Hire::judge(
                &mut shares,
                &seen,
                "agents",
                |s| format!("its {} agents are gone with it (their share is not moved)", s.size),
                ctx,
            );
        }
    }
}
