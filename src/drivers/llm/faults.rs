//! The plan's faults: what is in force for a call right now (`conditions`: an outage, an
//! added failure rate), and the task that fires them at their plan times (`fire`: terminate an
//! agent, announce an outage or a failure window). Times are plan time from the stage's start.

use std::time::Duration;

use super::config::{FaultCfg, OnTerminate};
use super::events::Events;
use super::provider::Conditions;
use super::roster::Roster;
use crate::clock::Clock;

#[derive(Clone, Copy)]
pub struct Faults<'a> {
    faults: &'a [FaultCfg],
    /// Run-clock milliseconds when the stage (this process's part of it) started.
    start_ms: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl<'a> Faults<'a> {
    pub fn new(faults: &'a [FaultCfg], start_ms: f64) -> Faults<'a> {
        Faults { faults, start_ms }
    }

    /// Plan-time milliseconds since the stage started.
    pub fn plan_ms(&self, clock: &Clock) -> f64 {
        (clock.elapsed_ms() - self.start_ms) / clock.scale()
    }

    /// The faults in force for a call to `provider` now.
    pub fn conditions(&self, clock: &Clock, provider: &str) -> Conditions {
        let now = self.plan_ms(clock);
        let mut c = Conditions::default();
        for f in self.faults {
            if f.provider.as_deref().is_some_and(|p| p != provider) {
                continue;
            }
            let at = ms(f.at.0);
            if let Some(len) = f.outage {
                c.down |= now >= at && now < at + ms(len.0);
            }
            if let (Some(rate), Some(len)) = (f.fail_rate, f.for_)
                && now >= at
                && now < at + ms(len.0)
            {
                c.extra_fail_rate += rate;
            }
        }
        c
    }

    /// Fire each fault at its time, as an event (terminations also act on the roster). Never
    /// returns: it runs beside the rounds and is dropped with them.
    pub async fn fire(&self, clock: &Clock, roster: &Roster, on_terminate: OnTerminate, events: Events<'_>) {
        let mut faults: Vec<_> = self.faults.iter().collect();
        faults.sort_by_key(|f| f.at);
        for f in faults {
            let wait = (ms(f.at.0) - self.plan_ms(clock)).max(0.0);
            if wait > 0.0 {
                clock.sleep(Duration::from_secs_f64(wait / 1000.0)).await;
            }
            if let Some(agent) = &f.terminate {
                roster.terminate(agent);
                let detail = serde_json::json!({ "agent": agent, "on_terminate": on_terminate });
                events.fault("terminate", Some(agent), detail);
            } else if let Some(len) = f.outage {
                events.fault("outage", None, serde_json::json!({ "for_ms": ms(len.0), "provider": f.provider }));
            } else {
                let detail = serde_json::json!({
                    "rate": f.fail_rate, "for_ms": f.for_.map(|d| ms(d.0)), "provider": f.provider,
                });
                events.fault("fail_rate", None, detail);
            }
        }
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn outages_and_failure_windows_hold_for_their_length_and_provider() {
        let faults: Vec<FaultCfg> = serde_json::from_str(
            r#"[{"at": "10s", "outage": "5s", "provider": "a"}, {"at": "12s", "fail_rate": 0.5, "for": "10s"}]"#,
        )
        .unwrap();
        let clock = Clock::new(1.0, 0.0, true);
        let f = Faults::new(&faults, clock.elapsed_ms());
        assert_eq!(f.conditions(&clock, "a"), Conditions::default());
        clock.sleep(Duration::from_secs(11)).await;
        assert_eq!(f.conditions(&clock, "a"), Conditions { extra_fail_rate: 0.0, down: true });
        assert_eq!(f.conditions(&clock, "b"), Conditions::default(), "the outage is a's alone");
        clock.sleep(Duration::from_secs(2)).await;
        assert_eq!(f.conditions(&clock, "b"), Conditions { extra_fail_rate: 0.5, down: false });
        clock.sleep(Duration::from_secs(10)).await;
        assert_eq!(f.conditions(&clock, "a"), Conditions::default());
    }
}
