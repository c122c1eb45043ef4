//! One iteration of a `ws` stage: start the demo server if asked, read the server's memory,
//! open `connections` clients on the connect schedule (`connect_rate`), read the memory again
//! once they are open (memory per connection, `ws_memory`), hold them for the stage's
//! `duration` beside the monitor, stop them (echoes still due get `graceful_stop`), and write
//! the summary (`ws_summary`: connections, opened, failed, peak_open, dropped, recovered,
//! sent, received, lost, pushes, bytes_in). The stage passes when the share `min_connected` of
//! connections opened (default: all), and — when they send — at least one echo came back.
//!
//! Time: `duration`, `connect_rate`, `send_rate` and `ping_every` are plan time; latencies,
//! `connect_timeout`, back-off and `graceful_stop` are real time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::config::{Ws, WsTarget};
use crate::clock::Clock;
use crate::demo::raise_open_files;
use crate::drivers::http::demo::Demo;
use crate::drivers::http::target::Target;
use crate::drivers::monitor::{rss_now, sample_targets};
use crate::drivers::{BoxFuture, Driver, Outcome, StageContext, Status, derive_seed};
use crate::events::Emitter;

/// Counts every connection adds to.
#[derive(Default)]
pub struct Tally {
    pub open: AtomicU64,
    pub peak: AtomicU64,
    pub opened: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
    pub recovered: AtomicU64,
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub lost: AtomicU64,
    pub pushes: AtomicU64,
    /// Pushes skipped, from gaps in their sequence numbers.
    pub pushes_missed: AtomicU64,
    /// Pushes sent (by the server's clock) after they arrived (by ours): clocks apart.
    pub push_clock_behind: AtomicU64,
    pub bytes_in: AtomicU64,
}

/// What every connection of one iteration shares.
pub struct Shared {
    pub cfg: Ws,
    pub target: WsTarget,
    pub events: Emitter,
    pub clock: Clock,
    /// Message send times are µs since this.
    pub started: Instant,
    /// Fires at the end of the stage's duration, or on Ctrl-C.
    pub stop: CancellationToken,
    pub tally: Tally,
}

impl Driver for Ws {
    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Outcome> {
        Box::pin(run(self, ctx))
    }
}

async fn run(cfg: &Ws, ctx: &StageContext) -> Outcome {
    let target = match WsTarget::parse(&cfg.url) {
        Ok(t) => t,
        Err(e) => return Outcome::with(Status::Error, e),
    };
    let demo = match &cfg.demo {
        Some(d) if d.enabled => {
            let host = match Target::parse(&format!("http://{}:{}", target.host, target.port)) {
                Ok(h) => h,
                Err(e) => return Outcome::with(Status::Error, e),
            };
            match Demo::start(d, &host, ctx.seed).await {
                Ok(d) => Some(d),
                Err(e) => return Outcome::with(Status::Error, e),
            }
        }
        _ => None,
    };
    // Memory per connection is read from `server`, or from the demo server the stage started.
    let mut server = cfg.server.clone();
    if let Some(d) = demo.as_ref() {
        server.get_or_insert_with(Default::default).pids.push(d.pid);
    }
    let outcome = load(cfg, target, server, ctx, demo.as_ref().map(|d| d.pid)).await;
    if let Some(d) = demo {
        d.stop().await;
    }
    outcome
}

async fn load(
    cfg: &Ws,
    target: WsTarget,
    server: Option<crate::drivers::monitor::MonitorCfg>,
    ctx: &StageContext,
    demo_pid: Option<u32>,
) -> Outcome {
    // A descriptor per connection: past the open-file limit, connects fail with EMFILE.
    let files = raise_open_files();
    if files > 0 && files < cfg.connections as u64 + 64 {
        ctx.events.emit(ctx.events.event("warning").name("open_files").error(format!(
            "{} connections need more open files than this process may have ({files}); raise the hard limit (`ulimit -Hn`, or LimitNOFILE in a service) or connects will fail with `Too many open files`",
            cfg.connections
        )));
    }
    let (server_before, client_before) = rss_now(server.as_ref());
    let sh = Arc::new(Shared {
        cfg: cfg.clone(),
        target,
        events: ctx.events.clone(),
        clock: ctx.clock.clone(),
        started: Instant::now(),
        stop: ctx.cancel.child_token(),
        tally: Tally::default(),
    });
    let length = ctx.clock.scaled(ctx.duration.unwrap_or_default());
    let n = cfg.connections;
    let gap = cfg.connect_rate.map(|r| ctx.clock.scaled(Duration::from_secs_f64(1.0 / r)));
    let connecting = {
        let sh = Arc::clone(&sh);
        let seed = ctx.seed;
        async move {
            let mut tasks = tokio::task::JoinSet::new();
            let t0 = tokio::time::Instant::now();
            for i in 0..n {
                if let Some(g) = gap {
                    tokio::select! {
                        _ = tokio::time::sleep_until(t0 + g.mul_f64(i as f64)) => {}
                        _ = sh.stop.cancelled() => break,
                    }
                }
                let id: Arc<str> = format!("c{}", i + 1).into();
                let s = derive_seed(seed, &[&id]);
                tasks.spawn(super::conn::run(id, Arc::clone(&sh), s));
            }
            tasks
        }
    };
    let monitor = async {
        match &cfg.monitor {
            Some(m) => {
                let mut m = m.clone();
                m.pids.extend(demo_pid);
                sample_targets(&m, &ctx.clock, &ctx.events).await
            }
            None => std::future::pending().await,
        }
    };
    // Memory per connection: the growth from half the connections open to all of them, over
    // the connections opened in between — so what a server allocates once (thread arenas, its
    // first buffers, lazy set-up) is not charged to each connection.
    let memory = {
        let sh = Arc::clone(&sh);
        let server = server.clone();
        let connect_phase = gap.map_or(Duration::ZERO, |g| g.mul_f64(n as f64)) + cfg.connect_timeout();
        async move {
            let until = Instant::now() + connect_phase;
            // Each reading's connection count is taken after it: connections that opened while
            // it ran count as already there, which errs towards more memory per connection.
            let reading = |want: u64, settle: Duration| {
                let sh = Arc::clone(&sh);
                let server = server.clone();
                async move {
                    while sh.tally.open.load(Ordering::Relaxed) < want && Instant::now() < until {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    tokio::time::sleep(settle).await;
                    let (s, c) =
                        tokio::task::spawn_blocking(move || rss_now(server.as_ref())).await.unwrap_or((None, None));
                    (sh.tally.open.load(Ordering::Relaxed), s, c)
                }
            };
            let mid = reading(n as u64 / 2, Duration::ZERO).await;
            // Let the buffers the last connections just made settle.
            let (open, server_after, client_after) = reading(n as u64, Duration::from_millis(200)).await;
            // Everything opened during the first reading: measure from before the first connection.
            let (open_mid, server_mid, client_mid) = if mid.0 < open { mid } else { (0, server_before, client_before) };
            let e = &sh.events;
            for (name, before, after) in [("server", server_mid, server_after), ("client", client_mid, client_after)] {
                if let (Some(b), Some(a), true) = (before, after, open > open_mid) {
                    e.emit(
                        e.event("ws_memory")
                            .name(name)
                            .value((a as f64 - b as f64) / (open - open_mid) as f64, "bytes_per_connection")
                            .attrs(
                                serde_json::json!({ "before": b, "after": a, "open_before": open_mid, "open": open }),
                            ),
                    );
                }
            }
            std::future::pending::<()>().await
        }
    };
    let dropper = async {
        let Some(d) = &cfg.drop else { return std::future::pending().await };
        ctx.clock.sleep(d.at.0).await;
        // How many were open when the drop was asked for.
        let open = sh.tally.open.load(Ordering::Relaxed);
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build();
        let answer = match client {
            Ok(c) => match c.post(&d.url).send().await {
                Ok(r) if r.status().is_success() => Ok(r.text().await.unwrap_or_default()),
                Ok(r) => Err(format!("{} answered HTTP {}", d.url, r.status())),
                Err(e) => Err(format!("cannot POST to {}: {e}", d.url)),
            },
            Err(e) => Err(e.to_string()),
        };
        let e = &ctx.events;
        let ev = e.event("fault").name("drop").value(open as f64, "connections");
        e.emit(match answer {
            Ok(body) => ev
                .ok(true)
                .attrs(serde_json::json!({ "url": d.url, "answer": body.chars().take(200).collect::<String>() })),
            Err(msg) => ev.ok(false).error(msg),
        });
        std::future::pending::<()>().await
    };
    let held = async {
        let mut tasks = connecting.await;
        let rest = length.saturating_sub(sh.started.elapsed());
        tokio::select! {
            _ = tokio::time::sleep(rest) => {}
            _ = ctx.cancel.cancelled() => {}
        }
        sh.stop.cancel();
        // Every connection closes within its graceful stop plus the close handshake.
        let limit = cfg.graceful_stop() + Duration::from_secs(2);
        let _ = tokio::time::timeout(limit, async { while tasks.join_next().await.is_some() {} }).await;
        tasks.abort_all();
    };
    tokio::select! {
        _ = held => {}
        _ = monitor => {}
        _ = memory => {}
        _ = dropper => {}
    }
    summarize(cfg, &sh, ctx)
}

fn summarize(cfg: &Ws, sh: &Shared, ctx: &StageContext) -> Outcome {
    let t = &sh.tally;
    let e = &sh.events;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let rows = [
        ("connections", cfg.connections as u64),
        ("opened", get(&t.opened)),
        ("failed", get(&t.failed)),
        ("peak_open", get(&t.peak)),
        ("dropped", get(&t.dropped)),
        ("recovered", get(&t.recovered)),
        ("sent", get(&t.sent)),
        ("received", get(&t.received)),
        ("lost", get(&t.lost)),
        ("pushes", get(&t.pushes)),
        ("pushes_missed", get(&t.pushes_missed)),
        ("push_clock_behind", get(&t.push_clock_behind)),
        ("bytes_in", get(&t.bytes_in)),
    ];
    for (name, v) in rows {
        e.emit(e.event("ws_summary").name(name).value(v as f64, "count"));
    }
    if ctx.cancel.is_cancelled() {
        return Outcome::with(Status::Interrupted, "interrupted");
    }
    let (opened, n) = (get(&t.opened), cfg.connections as u64);
    let want = cfg.min_connected.unwrap_or(1.0);
    if opened == 0 {
        return Outcome::with(Status::Failed, format!("none of the {n} connections opened"));
    }
    if (opened as f64) < want * n as f64 {
        return Outcome::with(
            Status::Failed,
            format!(
                "{opened} of {n} connections opened ({:.1}%); min_connected is {:.1}%",
                100.0 * opened as f64 / n as f64,
                want * 100.0
            ),
        );
    }
    if get(&t.sent) > 0 && get(&t.received) == 0 {
        return Outcome::with(Status::Failed, format!("{} messages sent and no echo came back", get(&t.sent)));
    }
    Outcome::passed()
}
