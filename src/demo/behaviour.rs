//! How the demo server's responses behave: each endpoint class has a log-normal latency
//! (median and spread, multiplied by `latency_scale`), non-health endpoints fail with 503 at
//! `error_rate`, and every response waits out a freeze — one switched on with
//! `POST /admin/stall?ms=N`, or the periodic one of `--freeze-every`/`--freeze-for`. The
//! random draws are seeded per request, so a run with the same seed and request order draws
//! the same latencies.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};

/// What kind of work an endpoint stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Health,
    Event,
    Chat,
    Creative,
    Agent,
    Memory,
    Code,
    Library,
    Static,
}

impl Class {
    /// (median ms, sigma of the log) at latency scale 1.
    fn latency(self) -> (f64, f64) {
        match self {
            Class::Health => (5.0, 0.25),
            Class::Event => (10.0, 0.25),
            Class::Chat => (150.0, 0.35),
            Class::Creative => (1000.0, 0.3),
            Class::Agent => (250.0, 0.35),
            Class::Memory => (20.0, 0.3),
            Class::Code => (50.0, 0.35),
            Class::Library => (30.0, 0.3),
            Class::Static => (0.0, 0.0),
        }
    }
}

/// Knobs that can change while the server runs (`POST /admin/config`).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Knobs {
    pub latency_scale: f64,
    pub error_rate: f64,
}

pub struct Behaviour {
    knobs: Mutex<Knobs>,
    seed: u64,
    counter: AtomicU64,
    started: Instant,
    /// ms since start until which every response is held.
    frozen_until: AtomicU64,
    /// Periodic freeze: (every, for).
    periodic: Option<(Duration, Duration)>,
}

impl Behaviour {
    pub fn new(knobs: Knobs, seed: u64, periodic: Option<(Duration, Duration)>) -> Behaviour {
        Behaviour {
            knobs: Mutex::new(knobs),
            seed,
            counter: AtomicU64::new(0),
            started: Instant::now(),
            frozen_until: AtomicU64::new(0),
            periodic,
        }
    }

    pub fn knobs(&self) -> Knobs {
        *self.knobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_knobs(&self, k: Knobs) {
        *self.knobs.lock().unwrap_or_else(|p| p.into_inner()) = k;
    }

    /// Hold every response for `d` from now.
    pub fn stall(&self, d: Duration) {
        let until = (self.started.elapsed() + d).as_millis() as u64;
        self.frozen_until.fetch_max(until, Ordering::SeqCst);
    }

    /// How long a response arriving now must wait for the freeze to end.
    fn frozen_for(&self) -> Duration {
        let now = self.started.elapsed();
        let mut wait = Duration::from_millis(self.frozen_until.load(Ordering::SeqCst)).saturating_sub(now);
        if let Some((every, length)) = self.periodic {
            let every_ms = every.as_millis().max(1) as u64;
            let into = now.as_millis() as u64 % every_ms;
            // The freeze is the last `length` of each period, so a run starts unfrozen.
            let start = every_ms.saturating_sub(length.as_millis() as u64);
            if into >= start {
                wait = wait.max(Duration::from_millis(every_ms - into));
            }
        }
        wait
    }

    /// Wait as a response of `class` should; `Err(())` when this one is to fail with 503.
    pub async fn gate(&self, class: Class) -> Result<(), ()> {
        let frozen = self.frozen_for();
        if !frozen.is_zero() {
            tokio::time::sleep(frozen).await;
        }
        let knobs = self.knobs();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (median, sigma) = class.latency();
        if median > 0.0 && knobs.latency_scale > 0.0 {
            let ms = LogNormal::new(median.ln(), sigma).map(|d| d.sample(&mut rng)).unwrap_or(median);
            tokio::time::sleep(Duration::from_secs_f64(ms * knobs.latency_scale / 1000.0)).await;
        }
        if class != Class::Health
            && class != Class::Static
            && knobs.error_rate > 0.0
            && rng.random::<f64>() < knobs.error_rate
        {
            return Err(());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_periodic_freeze_is_the_end_of_each_period() {
        let b = Behaviour::new(
            Knobs { latency_scale: 0.0, error_rate: 0.0 },
            1,
            Some((Duration::from_secs(10), Duration::from_secs(1))),
        );
        // At start (0 ms into the period) nothing is frozen.
        assert!(b.frozen_for() < Duration::from_millis(5));
        b.stall(Duration::from_millis(300));
        let f = b.frozen_for();
        assert!(f > Duration::from_millis(250) && f <= Duration::from_millis(300), "{f:?}");
    }
}
