//! Text views of a resolved plan for people: the one-screen summary `planrun validate` prints,
//! and the schedule that `planrun plan show` and `planrun run --dry-run` print (phases, steps,
//! stages with drivers and durations after `--time-scale`).

use std::fmt::Write;

use super::runner::steps;
use crate::plan::{Dur, Plan, StageDriver};

fn scaled(d: std::time::Duration, scale: f64) -> String {
    let s = Dur(d.mul_f64(scale));
    if scale == 1.0 { s.to_string() } else { format!("{s} ({} unscaled)", Dur(d)) }
}

pub fn summary<D: StageDriver>(plan: &Plan<D>, path: &str) -> String {
    let mut out = String::new();
    let stages = plan.stages().count();
    let mut drivers: Vec<&str> = plan.stages().map(|(_, s)| s.driver_name()).collect();
    drivers.sort_unstable();
    drivers.dedup();
    let _ = writeln!(out, "plan `{}` ({path}) is valid", plan.meta.name);
    if let Some(d) = &plan.meta.description {
        let _ = writeln!(out, "  {}", d.lines().next().unwrap_or(""));
    }
    let _ = writeln!(out, "  {} phases, {stages} stages; drivers: {}", plan.phases.len(), drivers.join(", "));
    if !plan.vars.is_empty() {
        let vars: Vec<String> = plan.vars.iter().map(|(n, v)| format!("{n}={}", v.value)).collect();
        let _ = writeln!(out, "  vars: {}", vars.join(", "));
    }
    if !plan.profiles.is_empty() {
        let chosen = plan.profile.as_deref().map(|p| format!(" (using {p})")).unwrap_or_default();
        let _ = writeln!(out, "  profiles: {}{chosen}", plan.profiles.join(", "));
    }
    let _ = writeln!(out, "  criteria: {}", plan.criteria().len());
    let _ = writeln!(out, "  expected duration: {}", Dur(plan.expected_duration()));
    out
}

pub fn schedule<D: StageDriver>(plan: &Plan<D>, scale: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plan {}  (time scale {scale}, expected {})",
        plan.meta.name,
        scaled(plan.expected_duration(), scale)
    );
    let mut last_phase = usize::MAX;
    for (n, step) in steps(plan).iter().enumerate() {
        let (pi, _) = step[0];
        if pi != last_phase {
            let phase = &plan.phases[pi];
            let label = phase.label.as_deref().map(|l| format!(" [{l}]")).unwrap_or_default();
            let _ = writeln!(out, "\nphase {}{label}", phase.name);
            if let Some(d) = &phase.description {
                let _ = writeln!(out, "  {}", d.lines().next().unwrap_or(""));
            }
            last_phase = pi;
        }
        let parallel = step.len() > 1;
        for &(pi, si) in step {
            let s = &plan.phases[pi].stages[si];
            let c = &s.common;
            let mut facts = Vec::new();
            if let Some(d) = c.duration {
                facts.push(format!("duration {}", scaled(d.0, scale)));
            }
            if let Some(t) = c.timeout {
                facts.push(format!("timeout {}", scaled(t.0, scale)));
            }
            if c.repeat > 1 {
                facts.push(format!("repeat {}", c.repeat));
            }
            if c.continue_on_failure {
                facts.push("continue on failure".into());
            }
            if !c.criteria.is_empty() {
                facts.push(format!("{} criteria", c.criteria.len()));
            }
            let group = if parallel { format!(" ‖ {}", c.parallel.as_deref().unwrap_or("")) } else { String::new() };
            let _ = writeln!(out, "  {:>2}. {} [{}]{group}: {}", n + 1, s.name(), s.driver_name(), s.driver.describe());
            if !facts.is_empty() {
                let _ = writeln!(out, "      {}", facts.join(", "));
            }
        }
    }
    out
}
