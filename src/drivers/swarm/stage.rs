//! One swarm stage from start to teardown: start (or reach) the server, clear the stage's old
//! keys, create the swarms and start their members, watch the server's run id to tell a
//! restart, inject faults on schedule, stop at the stage's end, report swarms left without a
//! leader too long, remove every key and stop the server.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio_util::sync::CancellationToken;

use super::config::{Swarm, SwarmFault};
use super::lease::Scripts;
use super::member::{self, Book, Shared, run_id, wall_ms};
use super::server::Server;
use crate::drivers::keyspace::{self, shown, stage_prefix, with_password};
use crate::drivers::{Outcome, StageContext, Status};

pub async fn run(cfg: &Swarm, ctx: &StageContext) -> Outcome {
    let mut server = match &cfg.start_server {
        Some(s) => match Server::start(s).await {
            Ok(s) => Some(s),
            Err(e) => return Outcome::with(Status::Error, e),
        },
        None => None,
    };
    let url = match server.as_ref().map(Server::url) {
        Some(u) => u,
        None => match with_password(cfg.server.as_deref().unwrap_or_default(), cfg.password_env.as_deref()) {
            Ok(u) => u,
            Err(e) => return Outcome::with(Status::Error, e),
        },
    };
    if let Some(s) = &server {
        ctx.events.emit(ctx.events.event("server").name("redis").ok(true).attrs(serde_json::json!({
            "port": s.port, "pid": s.pid(), "appendonly": cfg.start_server.as_ref().is_some_and(|c| c.appendonly),
        })));
    }
    let outcome = drive(cfg, ctx, &url, server.as_mut()).await;
    if let Some(s) = server.as_mut() {
        s.stop(false).await;
    }
    outcome
}

async fn connect(url: &str) -> Result<(redis::Client, ConnectionManager), String> {
    let client = redis::Client::open(url).map_err(|e| format!("`{}` is not a Redis URL: {e}", shown(url)))?;
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_millis(500));
    let con = ConnectionManager::new_with_config(client.clone(), cfg).await.map_err(|e| {
        format!("cannot connect to the redis server {} ({e}); is redis-server running there?", shown(url))
    })?;
    Ok((client, con))
}

async fn drive(cfg: &Swarm, ctx: &StageContext, url: &str, mut server: Option<&mut Server>) -> Outcome {
    let (client, mut con) = match connect(url).await {
        Ok(c) => c,
        Err(e) => return Outcome::with(Status::Error, e),
    };
    let run = ctx.run_dir.file_name().and_then(|n| n.to_str()).unwrap_or("run");
    let prefix = stage_prefix(run, &ctx.phase, &ctx.stage);
    match keyspace::remove(&mut con, &prefix).await {
        Ok(0) => {}
        Ok(n) => ctx.events.emit(
            ctx.events
                .event("warning")
                .name("redis")
                .error(format!("removed {n} keys under `{prefix}` left by an earlier run")),
        ),
        Err(e) => return Outcome::with(Status::Error, format!("cannot clear `{prefix}` on {}: {e}", shown(url))),
    }
    let send_every =
        (cfg.message_rate > 0.0).then(|| ctx.clock.scaled(Duration::from_secs_f64(1.0 / cfg.message_rate)));
    let shared = Arc::new(Shared {
        client,
        con: con.clone(),
        scripts: Scripts::default(),
        events: ctx.events.clone(),
        epoch: Default::default(),
        lease_ms: ctx.clock.scaled(cfg.lease.0).as_millis().max(1) as u64,
        renew: ctx.clock.scaled(cfg.renew_every()),
        state_every: ctx.clock.scaled(cfg.state_every.0),
        send_every,
        cancel: CancellationToken::new(),
    });
    let width = cfg.swarms.to_string().len().max(3);
    let mut books = Vec::with_capacity(cfg.swarms as usize);
    let mut rng = StdRng::seed_from_u64(ctx.seed);
    let mut tasks = tokio::task::JoinSet::new();
    let first_server = run_id(&mut con).await.unwrap_or_default();
    for s in 1..=cfg.swarms {
        let id = format!("swarm-{s:0width$}");
        let book = Arc::new(Book::new(&prefix, id.clone(), cfg.agents_per_swarm));
        *book.checked_on.lock().unwrap_or_else(|p| p.into_inner()) = first_server.clone();
        let t = wall_ms();
        let made: redis::RedisResult<()> = redis::cmd("HSET")
            .arg(&book.keys.state)
            .arg("created_at")
            .arg(t as i64)
            .arg("members")
            .arg(cfg.agents_per_swarm)
            .query_async(&mut con)
            .await;
        let mut ev = ctx.events.event("swarm").name(id.as_str()).ok(made.is_ok()).latency_ms(wall_ms() - t);
        if let Err(e) = &made {
            ev = ev.error(format!("cannot create the swarm's state: {e}"));
        }
        ctx.events.emit(ev.attrs(serde_json::json!({ "members": cfg.agents_per_swarm })));
        for i in 0..book.members.len() {
            let offset = send_every.map(|e| e.mul_f64(rand::Rng::random::<f64>(&mut rng))).unwrap_or_default();
            tasks.spawn(member::sender(Arc::clone(&shared), Arc::clone(&book), i, offset));
            tasks.spawn(member::role(Arc::clone(&shared), Arc::clone(&book), i));
        }
        books.push(book);
    }
    let watch = tokio::spawn(watch_restarts(Arc::clone(&shared), con.clone()));
    let duration = ctx.clock.scaled(ctx.duration.unwrap_or_default());
    let end = tokio::time::Instant::now() + duration;
    let mut faults: Vec<&SwarmFault> = cfg.faults.iter().collect();
    faults.sort_by_key(|f| f.at.0);
    let start = tokio::time::Instant::now();
    let mut status = Status::Passed;
    for f in faults {
        let at = start + ctx.clock.scaled(f.at.0);
        if at >= end {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = ctx.cancel.cancelled() => { status = Status::Interrupted; break; }
        }
        inject(f, ctx, &books, &mut rng, server.as_deref_mut()).await;
    }
    if status == Status::Passed {
        tokio::select! {
            _ = tokio::time::sleep_until(end) => {}
            _ = ctx.cancel.cancelled() => status = Status::Interrupted,
        }
    }
    shared.cancel.cancel();
    watch.abort();
    let stopped =
        tokio::time::timeout(Duration::from_secs(5), async { while tasks.join_next().await.is_some() {} }).await;
    if stopped.is_err() {
        tasks.abort_all();
    }
    // Swarms still without a leader, for longer than the election timeout, failed to elect.
    let timeout_ms = ctx.clock.scaled(cfg.election_timeout.0).as_secs_f64() * 1000.0;
    for b in &books {
        let since = *b.leaderless.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((since, cause)) = since {
            let waited = wall_ms() - since;
            if waited > timeout_ms {
                ctx.events.emit(
                    ctx.events
                        .event("election")
                        .name(cause)
                        .ok(false)
                        .latency_ms(waited)
                        .error(format!("no leader within election_timeout ({:.0} ms)", timeout_ms))
                        .attrs(serde_json::json!({ "swarm": b.id })),
                );
            }
        }
    }
    let left = keyspace::remove_all(&mut con, &prefix).await;
    ctx.events.emit(
        ctx.events
            .event("teardown")
            .ok(left == 0)
            .value(left as f64, "keys")
            .attrs(serde_json::json!({ "swarms": books.len(), "keys_left": left })),
    );
    Outcome { status, message: None }
}

/// Bump the epoch when the server's run id changes (it restarted): leaders step down, and each
/// swarm's next election checks its state on the new server.
async fn watch_restarts(shared: Arc<Shared>, mut con: ConnectionManager) {
    let mut known = run_id(&mut con).await;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(now) = run_id(&mut con).await else { continue };
        if known.as_ref().is_some_and(|k| *k != now) {
            shared.epoch.fetch_add(1, Ordering::Relaxed);
            shared.events.emit(
                shared
                    .events
                    .event("warning")
                    .name("redis")
                    .error("the redis server restarted (its run id changed): swarms re-elect and check their state"),
            );
        }
        known = Some(now);
    }
}

/// Apply one fault.
async fn inject(
    f: &SwarmFault,
    ctx: &StageContext,
    books: &[Arc<Book>],
    rng: &mut StdRng,
    server: Option<&mut Server>,
) {
    let mut led: Vec<(&Arc<Book>, u64, usize)> =
        books.iter().filter_map(|b| b.current().map(|(t, i)| (b, t, i))).collect();
    led.shuffle(rng);
    if let Some(n) = f.kill_leaders {
        for (b, token, i) in led.iter().take(n as usize) {
            let m = &b.members[*i];
            m.killed.store(true, Ordering::Relaxed);
            b.lose_leader(*token, *i, "leader_killed");
            ctx.events.emit(
                ctx.events
                    .event("fault")
                    .name("kill_leader")
                    .agent(m.name.as_str())
                    .ok(true)
                    .attrs(serde_json::json!({ "swarm": b.id, "token": token })),
            );
        }
    }
    if let (Some(n), Some(d)) = (f.pause_leaders, f.for_) {
        let until = wall_ms() + ctx.clock.scaled(d.0).as_secs_f64() * 1000.0;
        for (b, token, i) in led.iter().skip(f.kill_leaders.unwrap_or(0) as usize).take(n as usize) {
            let m = &b.members[*i];
            m.paused_until.store(until as i64, Ordering::Relaxed);
            ctx.events.emit(ctx.events.event("fault").name("pause_leader").agent(m.name.as_str()).ok(true).attrs(
                serde_json::json!({ "swarm": b.id, "token": token, "for_ms": ctx.clock.scaled(d.0).as_millis() as u64 }),
            ));
        }
    }
    if let (Some(kill), Some(s)) = (f.restart_redis.as_ref().and_then(|r| r.kill()), server) {
        let r = s.restart(kill).await;
        let mut ev = ctx.events.event("fault").name("restart_redis").ok(r.is_ok());
        match r {
            Ok(down) => ev = ev.latency_ms(down.as_secs_f64() * 1000.0),
            Err(e) => ev = ev.error(e),
        }
        ctx.events.emit(ev.attrs(serde_json::json!({ "signal": if kill { "KILL" } else { "TERM" }, "pid": s.pid() })));
    }
}
