//! The closed model (Locust's): a number of users, each sending a request, waiting for its
//! response, thinking (`wait`), and going again. The user count follows the `shape` — or
//! `users` from the start — moving towards each point's target at its `spawn_rate`; a `users`
//! event records every change. Each user keeps its own connection per host (keep-alive), its
//! own seeded random choices and its `session` of extracted values; a task that is a
//! `sequence` runs its steps in order, and a failed step ends that pass through the sequence
//! (the follow-ups depend on it).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use super::config::{Http, ShapePoint, Wait};
use super::exchange::Slot;
use super::stage::{Load, Progress};
use crate::drivers::derive_seed;

struct User {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

async fn think(load: &Load, wait: &Option<Wait>, rng: &mut impl Rng, started: Instant, stop: &CancellationToken) {
    let pause = match wait {
        None => return,
        Some(Wait::Constant(d)) => load.real(d.0),
        Some(Wait::Between(a, b)) => {
            let (a, b) = (load.real(a.0), load.real(b.0));
            if b > a { a + (b - a).mul_f64(rng.random::<f64>()) } else { a }
        }
        Some(Wait::ConstantPacing(d)) => load.real(d.0).saturating_sub(started.elapsed()),
        Some(Wait::ConstantThroughput(n)) => load.real(per(*n)).saturating_sub(started.elapsed()),
    };
    if pause.is_zero() {
        // A user that never waits still lets the others run.
        tokio::task::yield_now().await;
        return;
    }
    tokio::select! {
        _ = tokio::time::sleep(pause) => {}
        _ = stop.cancelled() => {}
    }
}

/// One over a rate (per second), as a duration; rates are at least 0.001 (checked at load).
fn per(rate: f64) -> Duration {
    Duration::from_secs_f64((1.0 / rate).min(1e6))
}

/// A user until `stop` (soft: it finishes the request it is in) or the load's `hard` stop.
async fn user(load: Arc<Load>, wait: Option<Wait>, n: u32, stop: CancellationToken, progress: Arc<Progress>) {
    let id: Arc<str> = format!("u{n}").into();
    let mut rng = rand::rngs::StdRng::seed_from_u64(derive_seed(load.seed, &[&id]));
    let home = load.homes[n as usize % load.homes.len()];
    let mut slots: Vec<Slot> = (0..load.connectors.len()).map(|_| None).collect();
    let mut session = serde_json::Map::new();
    let mut iteration: u64 = 0;
    let user_value = minijinja::context! { id => n, n => n, name => &*id };
    while !stop.is_cancelled() {
        let task = load.book.pick(&mut rng);
        for step in &load.book.tasks[task].steps {
            let started = Instant::now();
            let ctx = step.templated.then(|| load.context(&user_value, iteration, &session));
            let host = step.host.unwrap_or(home);
            progress.last_ms.store(load.now_ms(), Ordering::Relaxed);
            progress.in_request.store(true, Ordering::Relaxed);
            let slot = &mut slots[host];
            let sent = tokio::select! {
                r = load.request(step, Some(&id), n as usize, host, slot, ctx, None) => Some(r),
                _ = load.hard.cancelled() => None,
            };
            progress.in_request.store(false, Ordering::Relaxed);
            let Some((done, extracted)) = sent else {
                load.cut_off.fetch_add(1, Ordering::Relaxed);
                return;
            };
            iteration += 1;
            for (k, v) in extracted {
                session.insert(k, v);
            }
            think(&load, &wait, &mut rng, started, &stop).await;
            if !done.ok() || stop.is_cancelled() {
                break;
            }
        }
    }
}

/// The shape as (real offset, target users, spawn interval); without one, `users` from the start.
fn schedule(cfg: &Http, load: &Load) -> Vec<(Duration, u32, Duration)> {
    let points: Vec<ShapePoint> = if cfg.shape.is_empty() {
        vec![ShapePoint {
            at: crate::plan::Dur(Duration::ZERO),
            users: cfg.users.unwrap_or(1),
            spawn_rate: cfg.spawn_rate,
        }]
    } else {
        cfg.shape.clone()
    };
    points
        .iter()
        .map(|p| {
            let rate = p.spawn_rate.or(cfg.spawn_rate);
            let gap = rate.map_or(Duration::ZERO, |r| load.real(per(r)));
            (load.real(p.at.0), p.users, gap)
        })
        .collect()
}

/// Run the closed model until `length` (real time) has passed or `cancel` fires; then users
/// finish the request they are in, for at most `grace`, before the rest are cut off.
pub async fn run(cfg: &Http, load: Arc<Load>, length: Duration, grace: Duration, cancel: &CancellationToken) -> bool {
    let plan = schedule(cfg, &load);
    let mut users: Vec<User> = Vec::new();
    // Users told to stop by the shape, finishing their last request.
    let mut stopping: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let mut watched: Vec<(Arc<str>, Arc<Progress>)> = Vec::new();
    let end = load.started + length;
    let stall_every = Duration::from_millis(250);
    let mut next_stall_check = Instant::now() + stall_every;
    let mut next_flush = Instant::now() + Duration::from_secs(1);
    // When the next user starts or stops while the count moves; `None` while it is on target.
    let mut next_user: Option<Instant> = None;
    let mut count = 0usize;
    let mut interrupted = false;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let elapsed = now - load.started;
        let current = plan.iter().rev().find(|(at, _, _)| *at <= elapsed).or(plan.first()).copied();
        let (_, target, gap) = current.unwrap_or((Duration::ZERO, 0, Duration::ZERO));
        let mut wake = end.min(next_flush).min(next_stall_check);
        if let Some((at, _, _)) = plan.iter().find(|(at, _, _)| *at > elapsed) {
            wake = wake.min(load.started + *at);
        }
        if (users.len() as u32) == target {
            next_user = None;
        } else if now >= *next_user.get_or_insert(now) {
            // Start or stop one user per gap, on a schedule, so a rate above the timer's
            // resolution (5000 users/s) is kept by starting every user that is due at once;
            // without a spawn rate, all at once.
            loop {
                if (users.len() as u32) < target {
                    let n = count as u32;
                    count += 1;
                    let stop = load.hard.child_token();
                    let progress = Arc::new(Progress::new(load.now_ms()));
                    watched.push((format!("u{n}").into(), Arc::clone(&progress)));
                    let handle = tokio::spawn(user(Arc::clone(&load), cfg.wait.clone(), n, stop.clone(), progress));
                    users.push(User { stop, handle });
                } else if let Some(u) = users.pop() {
                    u.stop.cancel();
                    watched.pop();
                    stopping.push(u.handle);
                }
                let due = next_user.get_or_insert(now);
                *due += gap;
                if (users.len() as u32) != target && (gap.is_zero() || Instant::now() >= *due) {
                    continue;
                }
                break;
            }
            let e = &load.events;
            e.emit(e.event("users").name("users").value(users.len() as f64, "count"));
        }
        if let (true, Some(at)) = ((users.len() as u32) != target, next_user) {
            wake = wake.min(at);
        }
        if now >= next_flush {
            load.recorder.flush();
            next_flush += Duration::from_secs(1);
        }
        if now >= next_stall_check {
            if let Some(after) = cfg.stall_after {
                load.check_stalls(&watched, after.0);
            }
            next_stall_check += stall_every;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(wake.max(Instant::now()).into()) => {}
            _ = cancel.cancelled() => { interrupted = true; break; }
        }
    }
    for u in &users {
        u.stop.cancel();
    }
    stopping.extend(users.into_iter().map(|u| u.handle));
    // Each handle is awaited once: a finished one leaves the list.
    let all = async {
        while let Some(h) = stopping.last_mut() {
            let _ = h.await;
            stopping.pop();
        }
    };
    if tokio::time::timeout(grace, all).await.is_err() {
        load.hard.cancel();
    }
    for h in stopping {
        let _ = h.await;
    }
    let e = &load.events;
    e.emit(e.event("users").name("users").value(0.0, "count"));
    interrupted
}
