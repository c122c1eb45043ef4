//! Faults on schedule: at each fault's `at`, kill (or pause, then resume) some live agents,
//! chosen with the stage's seeded generator from those named or from all. The crash that a kill
//! causes is noticed, like any other, by the coordinator.

use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::config::FleetFault;
use super::process::Signal;
use super::roster::Roster;
use crate::drivers::StageContext;

/// How long a pause lasts when a fault gives no `for`.
const DEFAULT_PAUSE: Duration = Duration::from_secs(10);

/// Apply `faults` in time order, from now; never returns (it is raced against the stage).
pub async fn inject(faults: &[FleetFault], roster: &Roster, rng: &Mutex<StdRng>, ctx: &StageContext) {
    let mut faults: Vec<&FleetFault> = faults.iter().collect();
    faults.sort_by_key(|f| f.at);
    let start = ctx.clock.elapsed_ms();
    for f in faults {
        let at = start + ctx.clock.scaled(f.at.0).as_secs_f64() * 1000.0;
        let wait = at - ctx.clock.elapsed_ms();
        if wait > 0.0 {
            ctx.clock.sleep_unscaled(Duration::from_secs_f64(wait / 1000.0)).await;
        }
        let n = f.kill.or(f.pause).unwrap_or(1) as usize;
        let mut chosen: Vec<(String, u32)> = roster.working_pids();
        if !f.agents.is_empty() {
            chosen.retain(|(id, _)| f.agents.contains(id));
        }
        if let Ok(mut rng) = rng.lock() {
            chosen.shuffle(&mut *rng);
        }
        chosen.truncate(n);
        chosen.sort();
        let names: Vec<&str> = chosen.iter().map(|(id, _)| id.as_str()).collect();
        let pids: Vec<u32> = chosen.iter().map(|(_, p)| *p).collect();
        if f.pause.is_some() {
            for pid in &pids {
                Signal::Stop.send(*pid);
            }
            ctx.events.emit(
                ctx.events
                    .event("fault")
                    .name("pause")
                    .attrs(serde_json::json!({ "agents": names, "for_ms": f.for_.map(|d| d.0.as_millis()) })),
            );
            let d = ctx.clock.scaled(f.for_.map_or(DEFAULT_PAUSE, |d| d.0));
            let (events, clock) = (ctx.events.clone(), ctx.clock.clone());
            tokio::spawn(async move {
                clock.sleep_unscaled(d).await;
                for pid in pids {
                    Signal::Cont.send(pid);
                }
                events.emit(events.event("fault").name("resume"));
            });
        } else {
            // `check` refused unknown names; KILL is the default.
            let sig = f.signal.as_deref().and_then(Signal::parse).unwrap_or(Signal::Kill);
            for pid in &pids {
                sig.send(*pid);
            }
            ctx.events.emit(
                ctx.events
                    .event("fault")
                    .name("kill")
                    .attrs(serde_json::json!({ "agents": names, "signal": f.signal.as_deref().unwrap_or("KILL") })),
            );
        }
    }
    std::future::pending::<()>().await;
}
