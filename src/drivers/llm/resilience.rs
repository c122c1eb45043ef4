//! Retries with exponential backoff and jitter, and a circuit breaker per provider. Both are
//! written here rather than taken from a crate because every wait and every window must read
//! the run clock (virtual time, `--time-scale`) and every random draw the agent's seeded RNG —
//! the crates we looked at read `Instant::now()` and an unseeded RNG directly.

use std::collections::VecDeque;
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;

use super::config::{BreakerCfg, RetryCfg};

/// Delay before retry `attempt` (1-based): min(cap, base·2^(attempt−1)), with "equal jitter"
/// (half fixed, half random) so retries spread out but never collapse to zero. A Retry-After
/// from the provider is honoured when it is longer.
pub fn backoff(cfg: &RetryCfg, attempt: u32, retry_after: Option<Duration>, rng: &mut StdRng) -> Duration {
    let exp = cfg.base.0.saturating_mul(1u32 << (attempt.saturating_sub(1)).min(20));
    let capped = exp.min(cfg.cap.0);
    let jittered = capped.mul_f64(0.5 + 0.5 * rng.random::<f64>());
    match retry_after {
        Some(r) if r > jittered => r,
        _ => jittered,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Circuit breaker on run-clock milliseconds.
#[derive(Debug, Clone)]
pub struct Breaker {
    cfg: BreakerCfg,
    pub state: BreakerState,
    consecutive: u32,
    recent: VecDeque<(f64, bool)>,
    pub open_until_ms: f64,
    probing: bool,
}

/// What `allow` decided.
pub enum Admit {
    Yes,
    /// Yes, as the half-open probe (the breaker just moved to half-open).
    Probe,
    No,
}

impl Breaker {
    pub fn new(cfg: &BreakerCfg) -> Breaker {
        Breaker {
            cfg: cfg.clone(),
            state: BreakerState::Closed,
            consecutive: 0,
            recent: VecDeque::new(),
            open_until_ms: 0.0,
            probing: false,
        }
    }

    pub fn restore(cfg: &BreakerCfg, state: BreakerState, open_until_ms: f64) -> Breaker {
        let mut b = Breaker::new(cfg);
        b.state = if state == BreakerState::HalfOpen { BreakerState::Open } else { state };
        b.open_until_ms = open_until_ms;
        b
    }

    pub fn allow(&mut self, now_ms: f64) -> Admit {
        match self.state {
            BreakerState::Closed => Admit::Yes,
            BreakerState::Open if now_ms >= self.open_until_ms => {
                self.state = BreakerState::HalfOpen;
                self.probing = true;
                Admit::Probe
            }
            BreakerState::Open => Admit::No,
            BreakerState::HalfOpen if !self.probing => {
                self.probing = true;
                Admit::Probe
            }
            BreakerState::HalfOpen => Admit::No,
        }
    }

    /// Record a call's result; returns the new state when it changed.
    pub fn record(&mut self, now_ms: f64, ok: bool) -> Option<BreakerState> {
        let before = self.state;
        let window_ms = self.cfg.window.0.as_secs_f64() * 1000.0;
        self.recent.push_back((now_ms, ok));
        while self.recent.front().is_some_and(|(t, _)| *t < now_ms - window_ms) {
            self.recent.pop_front();
        }
        self.consecutive = if ok { 0 } else { self.consecutive + 1 };
        match (self.state, ok) {
            (BreakerState::HalfOpen, true) => {
                self.state = BreakerState::Closed;
                self.probing = false;
                self.recent.clear();
            }
            (BreakerState::HalfOpen, false) => self.open(now_ms),
            (BreakerState::Closed, false) => {
                let by_count = self.cfg.failures.is_some_and(|n| self.consecutive >= n);
                let fails = self.recent.iter().filter(|(_, ok)| !ok).count();
                let by_ratio = self.cfg.ratio.is_some_and(|r| {
                    self.recent.len() >= self.cfg.min_calls as usize && fails as f64 / self.recent.len() as f64 >= r
                });
                if by_count || by_ratio {
                    self.open(now_ms);
                }
            }
            _ => {}
        }
        (self.state != before).then_some(self.state)
    }

    fn open(&mut self, now_ms: f64) {
        self.state = BreakerState::Open;
        self.probing = false;
        self.open_until_ms = now_ms + self.cfg.cooldown.0.as_secs_f64() * 1000.0;
        self.consecutive = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Dur;
    use rand::SeedableRng;

    fn cfg() -> BreakerCfg {
        BreakerCfg {
            failures: Some(3),
            ratio: None,
            window: Dur(Duration::from_secs(60)),
            min_calls: 10,
            cooldown: Dur(Duration::from_secs(30)),
        }
    }

    #[test]
    fn opens_after_consecutive_failures_probes_after_cooldown_and_closes() {
        let mut b = Breaker::new(&cfg());
        assert_eq!(b.record(0.0, false), None);
        assert_eq!(b.record(1.0, false), None);
        assert_eq!(b.record(2.0, false), Some(BreakerState::Open));
        assert!(matches!(b.allow(10_000.0), Admit::No));
        assert!(matches!(b.allow(32_001.0), Admit::Probe));
        assert!(matches!(b.allow(32_002.0), Admit::No), "only one probe at a time");
        assert_eq!(b.record(33_000.0, true), Some(BreakerState::Closed));
        assert!(matches!(b.allow(33_001.0), Admit::Yes));
    }

    #[test]
    fn backoff_grows_caps_jitters_and_honours_retry_after() {
        let r = RetryCfg { attempts: 5, base: Dur(Duration::from_secs(1)), cap: Dur(Duration::from_secs(4)) };
        let mut rng = StdRng::seed_from_u64(1);
        let d1 = backoff(&r, 1, None, &mut rng);
        assert!(d1 >= Duration::from_millis(500) && d1 <= Duration::from_secs(1));
        let d5 = backoff(&r, 5, None, &mut rng);
        assert!(d5 >= Duration::from_secs(2) && d5 <= Duration::from_secs(4));
        assert_eq!(backoff(&r, 1, Some(Duration::from_secs(9)), &mut rng), Duration::from_secs(9));
    }
}
