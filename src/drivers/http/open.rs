//! The open model (wrk2's `-R`, k6's arrival-rate executors): requests start on a schedule —
//! `arrival_rate` per second, or an `arrival` ramp, linear between its points — whatever the
//! responses do. Each arrival's latency counts from its *intended* send time, so a target that
//! stalls shows the stall in `latency_ms` for every request it delayed (coordinated omission
//! corrected); `service_ms` beside it is the uncorrected figure. An arrival that would exceed
//! `max_in_flight` is dropped, and one sent more than `LATE` after its time is late: both are
//! counted per second in `http_schedule` rows (k6's `dropped_iterations`). Each arrival runs
//! one task (all steps of a sequence) with a fresh session; idle connections are pooled per host.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use tokio_util::sync::CancellationToken;

use super::config::{DEFAULT_MAX_IN_FLIGHT, Http};
use super::stage::{Load, Progress};
use super::target::Sender;
use crate::drivers::derive_seed;

/// A send this far behind its schedule counts as late.
pub const LATE: Duration = Duration::from_millis(10);

/// Requests per second (plan time) at `t` (plan time into the stage).
fn rate_at(cfg: &Http, t: Duration) -> f64 {
    if let Some(r) = cfg.arrival_rate {
        return r;
    }
    let pts = &cfg.arrival;
    match pts.iter().position(|p| p.at.0 > t) {
        Some(0) => pts[0].rate,
        Some(i) => {
            let (a, b) = (&pts[i - 1], &pts[i]);
            let span = (b.at.0 - a.at.0).as_secs_f64();
            if span <= 0.0 {
                return b.rate;
            }
            let f = (t - a.at.0).as_secs_f64() / span;
            a.rate + (b.rate - a.rate) * f
        }
        None => pts.last().map_or(0.0, |p| p.rate),
    }
}

type Pool = Arc<Vec<Mutex<Vec<Sender>>>>;

async fn arrival(load: Arc<Load>, pool: Pool, i: u64, intended: Instant, in_flight: Arc<AtomicU64>) {
    // Late is judged when the arrival actually runs: a busy runtime delays it after spawning.
    if intended.elapsed() > LATE {
        load.late.fetch_add(1, Ordering::Relaxed);
    }
    let user = minijinja::context! { id => i, n => i, name => format!("a{i}") };
    let mut rng = rand::rngs::StdRng::seed_from_u64(derive_seed(load.seed, &[&i.to_string()]));
    let task = load.book.pick(&mut rng);
    let home = load.homes[i as usize % load.homes.len()];
    let mut session = serde_json::Map::new();
    for (k, step) in load.book.tasks[task].steps.iter().enumerate() {
        let host = step.host.unwrap_or(home);
        let h2 = load.connectors[step.host.unwrap_or(host)].http2;
        // HTTP/1.1: one request per connection at a time, so take an idle one. HTTP/2: every
        // arrival shares the pooled connection (it multiplexes).
        let mut slot = {
            let mut idle = pool[host].lock().unwrap_or_else(|p| p.into_inner());
            if h2 { idle.iter().find(|s| s.is_open()).and_then(Sender::share) } else { idle.pop() }
        };
        let ctx = step.templated.then(|| load.context(&user, k as u64, &session));
        // Only the first request of an arrival has a schedule; later steps go when it is done.
        let when = (k == 0).then_some(intended);
        let (done, extracted) = load.request(step, None, i as usize, host, &mut slot, ctx, when).await;
        if let Some(s) = slot.filter(Sender::is_open) {
            let mut idle = pool[host].lock().unwrap_or_else(|p| p.into_inner());
            if h2 {
                idle.retain(Sender::is_open);
                if idle.is_empty() {
                    idle.push(s);
                }
            } else {
                idle.push(s);
            }
        }
        if !done.ok() {
            break;
        }
        session.extend(extracted);
    }
    in_flight.fetch_sub(1, Ordering::Relaxed);
}

/// Run the open model until `length` (real time) has passed or `cancel` fires; then requests in
/// flight have `grace` to finish before they are cut off.
pub async fn run(cfg: &Http, load: Arc<Load>, length: Duration, grace: Duration, cancel: &CancellationToken) -> bool {
    let max = cfg.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT) as u64;
    let pool: Pool = Arc::new((0..load.connectors.len()).map(|_| Mutex::new(Vec::new())).collect());
    let in_flight = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Progress::new(0));
    let watched = vec![(Arc::<str>::from("open"), Arc::clone(&progress))];
    let mut tasks = tokio::task::JoinSet::new();
    let end = load.started + length;
    let scale = load.clock.scale();
    let (mut dropped, mut late_told) = (0u64, 0u64);
    let mut next_flush = load.started + Duration::from_secs(1);
    let stall_every = Duration::from_millis(100);
    let mut next_stall = load.started + stall_every;
    // Arrival times as seconds from the start, so a constant rate lands exactly on its count.
    let mut offset = 0.0f64;
    let length_s = length.as_secs_f64();
    let mut next = load.started;
    let mut i: u64 = 0;
    let mut interrupted = false;
    let mut last_done = load.recorder.finished.load(Ordering::Relaxed);
    while offset < length_s - 1e-9 && next < end {
        if next > Instant::now() {
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {}
                _ = cancel.cancelled() => { interrupted = true; break; }
            }
        }
        let now = Instant::now();
        while now >= next_flush {
            load.recorder.flush();
            if dropped > 0 {
                load.count_row("dropped", std::mem::take(&mut dropped));
            }
            let late = load.late.load(Ordering::Relaxed);
            if late > late_told {
                load.count_row("late", late - late_told);
                late_told = late;
            }
            next_flush += Duration::from_secs(1);
        }
        if now >= next_stall {
            // The open model as a whole stalls when requests are out and none came back.
            let done = load.recorder.finished.load(Ordering::Relaxed);
            if done != last_done {
                progress.last_ms.store(load.now_ms(), Ordering::Relaxed);
                last_done = done;
            }
            let busy = in_flight.load(Ordering::Relaxed) > 0;
            if !busy {
                // Nothing out: the next request's wait starts from now.
                progress.last_ms.store(load.now_ms(), Ordering::Relaxed);
            }
            progress.in_request.store(busy, Ordering::Relaxed);
            if let Some(after) = cfg.stall_after {
                load.check_stalls(&watched, after.0);
            }
            next_stall = now + stall_every;
        }
        // Reap finished arrivals as we go, so the set holds about what is in flight.
        for _ in 0..2 {
            if tasks.try_join_next().is_none() {
                break;
            }
        }
        if in_flight.load(Ordering::Relaxed) >= max {
            dropped += 1;
        } else {
            in_flight.fetch_add(1, Ordering::Relaxed);
            tasks.spawn(arrival(Arc::clone(&load), Arc::clone(&pool), i, next, Arc::clone(&in_flight)));
        }
        i += 1;
        // The next arrival: one interval at the rate in force now (plan time), scaled.
        let rate = rate_at(cfg, Duration::from_secs_f64(offset / scale));
        offset += if rate > 0.0 {
            (scale / rate).min(length_s)
        } else {
            // Rate 0 until the ramp rises again: look again a little later.
            load.real(Duration::from_millis(10)).as_secs_f64()
        };
        next = load.started + Duration::from_secs_f64(offset);
    }
    // Requests in flight may finish within the grace (none after Ctrl-C); the rest are cut off.
    if !interrupted {
        let _ = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    }
    tasks.abort_all();
    let mut cut = 0;
    while let Some(r) = tasks.join_next().await {
        if r.is_err_and(|e| e.is_cancelled()) {
            cut += 1;
        }
    }
    load.cut_off.fetch_add(cut, Ordering::Relaxed);
    if dropped > 0 {
        load.count_row("dropped", dropped);
    }
    let late = load.late.load(Ordering::Relaxed);
    if late > late_told {
        load.count_row("late", late - late_told);
    }
    interrupted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ramp_is_linear_between_its_points_and_flat_after() {
        let cfg: Http = serde_json::from_value(serde_json::json!({
            "host": "http://127.0.0.1:1",
            "arrival": [{ "at": "0s", "rate": 10.0 }, { "at": "10s", "rate": 110.0 }, { "at": "20s", "rate": 0.0 }],
            "task": [{ "path": "/" }],
        }))
        .unwrap();
        assert_eq!(rate_at(&cfg, Duration::ZERO), 10.0);
        assert!((rate_at(&cfg, Duration::from_secs(5)) - 60.0).abs() < 1e-9);
        assert!((rate_at(&cfg, Duration::from_secs(15)) - 55.0).abs() < 1e-9);
        assert_eq!(rate_at(&cfg, Duration::from_secs(30)), 0.0);
    }
}
