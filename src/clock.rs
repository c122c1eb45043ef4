//! The run clock: the one place time is read. `elapsed_ms` is the run-relative monotonic time
//! behind `t_ms`; sleeps and timeouts take *plan* durations and apply `--time-scale`. It sits on
//! tokio's clock, so under the virtual clock (tokio's paused time) sleeps complete instantly and
//! days of plan time pass in seconds. Wall time (`ts`) is the only thing read from the OS clock.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Clock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    start: tokio::time::Instant,
    /// Run time already spent before this process (a resumed run continues its `t_ms`).
    offset_ms: f64,
    scale: f64,
    wall_start_us: i64,
    real_start: std::time::Instant,
    virtual_time: bool,
}

/// A plan-time wait ran past its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl Clock {
    pub fn new(scale: f64, offset_ms: f64, virtual_time: bool) -> Clock {
        Clock {
            inner: Arc::new(Inner {
                start: tokio::time::Instant::now(),
                offset_ms,
                scale,
                wall_start_us: chrono::Utc::now().timestamp_micros(),
                real_start: std::time::Instant::now(),
                virtual_time,
            }),
        }
    }

    /// Milliseconds since run start (continuing across resume), at microsecond resolution.
    pub fn elapsed_ms(&self) -> f64 {
        let us = self.inner.start.elapsed().as_micros() as f64;
        round_us(self.inner.offset_ms + us / 1000.0)
    }

    /// Wall-clock microseconds since the Unix epoch (real even under the virtual clock).
    pub fn wall_us(&self) -> i64 {
        self.inner.wall_start_us + self.inner.real_start.elapsed().as_micros() as i64
    }

    pub fn now(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }

    pub fn scale(&self) -> f64 {
        self.inner.scale
    }

    pub fn is_virtual(&self) -> bool {
        self.inner.virtual_time
    }

    /// Plan time → clock time.
    pub fn scaled(&self, plan: Duration) -> Duration {
        plan.mul_f64(self.inner.scale)
    }

    /// Sleep for a plan duration.
    pub async fn sleep(&self, plan: Duration) {
        tokio::time::sleep(self.scaled(plan)).await
    }

    /// Sleep until a clock instant (already scaled).
    pub async fn sleep_until(&self, at: tokio::time::Instant) {
        tokio::time::sleep_until(at).await
    }

    /// Sleep for a duration that is *not* scaled (grace periods, poll intervals of real things).
    pub async fn sleep_unscaled(&self, d: Duration) {
        tokio::time::sleep(d).await
    }

    /// Run `fut` for at most a plan duration.
    pub async fn timeout<F: Future>(&self, plan: Duration, fut: F) -> Result<F::Output, Elapsed> {
        tokio::time::timeout(self.scaled(plan), fut).await.map_err(|_| Elapsed)
    }
}

/// Milliseconds rounded to whole microseconds.
pub fn round_us(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn scaled_sleep_under_paused_time() {
        let c = Clock::new(0.001, 0.0, true);
        let before = c.elapsed_ms();
        c.sleep(Duration::from_secs(8 * 3600)).await;
        let slept = c.elapsed_ms() - before;
        assert!((slept - 28_800.0).abs() < 1.0, "{slept}");
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_uses_plan_time() {
        let c = Clock::new(1.0, 0.0, true);
        let r = c.timeout(Duration::from_secs(5), c.sleep(Duration::from_secs(10))).await;
        assert_eq!(r, Err(Elapsed));
        let r = c.timeout(Duration::from_secs(10), c.sleep(Duration::from_secs(5))).await;
        assert_eq!(r, Ok(()));
    }
}
