//! Bottleneck findings, each with a priority (HIGH / MEDIUM / LOW / INFO) and a recommendation,
//! read off the metrics already computed — the way the 1000-agent load suite this replaces
//! reported them. Thresholds are constants here and listed in docs/criteria.md.

use serde::Serialize;

use super::metric_rows::{AgentRow, LevelKey, LevelRow, NameKey};
use super::metrics::Metrics;
use super::report_data::{CriterionResult, CriterionStatus};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Priority {
    High,
    Medium,
    Low,
    Info,
}

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub priority: Priority,
    pub scope: String,
    pub title: String,
    pub detail: String,
    pub recommendation: String,
}

const MIN_SAMPLES: f64 = 20.0;
/// A passing criterion within this share of its limit is reported as near it.
const NEAR_LIMIT: f64 = 0.05;

fn scope_of(k: &NameKey) -> String {
    let base = format!("{}/{}", k.phase(), k.stage());
    if k.name().is_empty() { base } else { format!("{base} {}:{}", k.kind(), k.name()) }
}

/// The findings of a run. `unpaced` names the `bench` stages (`phase/stage`): their event rate is
/// not a throughput (commands of different lengths run one after another by design) and their
/// byte values are each run's peak RSS, not a memory series, so neither a falling rate nor a
/// memory growth there is a finding.
pub fn find(m: &Metrics, criteria: &[CriterionResult], unpaced: &[String]) -> Vec<Finding> {
    let mut out = Vec::new();
    for LevelRow { key, stats: r } in &m.names {
        let count = r.count as f64;
        let measured = (r.ok + r.failed) as f64;
        if measured >= 1.0 {
            let rate = r.timeouts as f64 / measured;
            if rate > 0.01 {
                out.push(Finding {
                    priority: if rate > 0.05 { Priority::High } else { Priority::Medium },
                    scope: scope_of(key),
                    title: "high timeout rate".into(),
                    detail: format!("{:.1}% of {measured} calls timed out", rate * 100.0),
                    recommendation: "Check the target's capacity and the timeout setting; add retries with backoff, or lower concurrency.".into(),
                });
            }
        }
        if count >= MIN_SAMPLES
            && let (Some(p50), Some(p99)) = (r.latency_p50, r.latency_p99)
            && p50 > 0.0
            && p99 / p50 > 5.0
        {
            out.push(Finding {
                priority: if p99 / p50 > 10.0 { Priority::High } else { Priority::Medium },
                scope: scope_of(key),
                title: "long latency tail".into(),
                detail: format!("p99 {p99:.1} ms is {:.1}× p50 {p50:.1} ms", p99 / p50),
                recommendation: "Look for queueing, lock contention, GC pauses or a slow subset of agents; compare the per-agent table.".into(),
            });
        }
    }
    for s in &m.series {
        let pts: Vec<f64> = s.points.iter().map(|p| p.rate).collect();
        let scope = format!("{}/{}", s.phase, s.stage);
        if pts.len() >= 6 {
            let third = pts.len() / 3;
            let head = pts[..third].iter().sum::<f64>() / third as f64;
            let tail = pts[pts.len() - third..].iter().sum::<f64>() / third as f64;
            if head > 0.0 && tail < 0.8 * head && !unpaced.contains(&scope) {
                out.push(Finding {
                    priority: Priority::Medium,
                    scope: scope.clone(),
                    title: "throughput falling".into(),
                    detail: format!("events/s fell from {head:.1} in the first third to {tail:.1} in the last"),
                    recommendation:
                        "Look for resource exhaustion (memory, file handles, connections) building up over the stage."
                            .into(),
                });
            }
            let fails: Vec<f64> = s.points.iter().map(|p| p.failed as f64).collect();
            let mean = fails.iter().sum::<f64>() / fails.len() as f64;
            if let Some((i, worst)) = fails.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1))
                && *worst >= 5.0
                && *worst > 3.0 * mean
            {
                out.push(Finding {
                    priority: Priority::Medium,
                    scope: scope.clone(),
                    title: "error burst".into(),
                    detail: format!(
                        "{worst} failures in one {:.0} ms window (#{i}), against a mean of {mean:.1}",
                        s.window_ms
                    ),
                    recommendation:
                        "Correlate the window with faults, restarts or deploys in run.log; check the errors table."
                            .into(),
                });
            }
        }
        // The series of this stage that grew most after its warm-up (docs/criteria.md, growth).
        // A bench stage's byte values are each run's peak RSS — a fresh process each time, no
        // series that can leak.
        let worst = m
            .memory
            .iter()
            .filter(|x| x.phase == s.phase && x.stage == s.stage && x.samples >= 4 && !unpaced.contains(&scope))
            .filter_map(|x| Some((x, x.growth?)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((x, g)) = worst
            && g > 0.05
        {
            let of = match &x.agent {
                Some(a) => format!("`{}` of {a}", x.name),
                None => format!("`{}`", x.name),
            };
            out.push(Finding {
                priority: if g > 0.10 { Priority::High } else { Priority::Medium },
                scope,
                title: "memory growth".into(),
                detail: format!(
                    "{of} grew {:.1}% over the stage, on a line fitted after its warm-up ({} samples)",
                    g * 100.0,
                    x.samples
                ),
                recommendation: "Check for leaks: caches without bounds, retained responses, listeners never removed."
                    .into(),
            });
        }
    }
    slow_agents(&m.agents, &mut out);
    for c in criteria.iter().filter(|c| !c.pass && !c.optional) {
        let detail = match c.status {
            CriterionStatus::NoData => format!("`{}` had no data: no events matched it", c.check),
            _ => format!("`{}` observed {}, against {} {}", c.check, c.observed_text, c.op, c.threshold_text),
        };
        out.push(Finding {
            priority: Priority::High,
            scope: c.scope.clone(),
            title: "criterion below target".into(),
            detail,
            recommendation: match c.status {
                CriterionStatus::NoData => "Check that the stage ran and that the criterion's filter names the events it writes (docs/events.md).".into(),
                _ => "This target is not met: see the stage's metrics and the findings above for where the time or the failures go.".into(),
            },
        });
    }
    for c in criteria {
        if let (true, Some(margin)) = (c.pass, c.margin)
            && margin < NEAR_LIMIT
        {
            out.push(Finding {
                priority: Priority::Low,
                scope: c.scope.clone(),
                title: "criterion near its limit".into(),
                detail: format!(
                    "`{}` passed with {:.1}% to spare (observed {})",
                    c.check,
                    margin * 100.0,
                    c.observed_text
                ),
                recommendation: "Small changes may flip this criterion; watch it in the baseline comparison.".into(),
            });
        }
    }
    if out.is_empty() {
        out.push(Finding {
            priority: Priority::Info,
            scope: "plan".into(),
            title: "no bottlenecks found".into(),
            detail: "timeouts, latency tails, throughput, memory, error bursts and agent spread are within bounds"
                .into(),
            recommendation: "Keep this run as a baseline: `planrun analyze NEXT_RUN --baseline THIS_RUN`.".into(),
        });
    }
    out.sort_by_key(|f| f.priority);
    collapse(out)
}

/// More findings of one kind in one stage than this (one per event name, say, for 100 swarms)
/// become one finding: the first (highest priority) stands for them, and says how many more.
const SAME_IN_STAGE: usize = 3;

fn collapse(found: Vec<Finding>) -> Vec<Finding> {
    let stage_of = |f: &Finding| f.scope.split(' ').next().unwrap_or("").to_string();
    let mut groups: Vec<((String, String), Vec<Finding>)> = Vec::new();
    for f in found {
        let key = (stage_of(&f), f.title.clone());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.push(f),
            None => groups.push((key, vec![f])),
        }
    }
    let mut out = Vec::new();
    for ((stage, title), mut g) in groups {
        // Each failed criterion is its own target not met: never folded away.
        if g.len() <= SAME_IN_STAGE || title == "criterion below target" {
            out.extend(g);
            continue;
        }
        let more = g.len() - 1;
        let names: Vec<String> =
            g[1..].iter().take(5).map(|f| f.scope.trim_start_matches(&stage).trim().to_string()).collect();
        let mut first = g.swap_remove(0);
        first.detail = format!(
            "{}; and {more} more in {stage} ({}{})",
            first.detail,
            names.join(", "),
            if more > names.len() { ", …" } else { "" }
        );
        out.push(first);
    }
    out.sort_by_key(|f| f.priority);
    out
}

/// Regressions against a baseline run, as MEDIUM findings ("performance degradation"), the
/// largest changes first; they replace the "no bottlenecks" note.
pub fn regressions(b: &super::baseline::Baseline, out: &mut Vec<Finding>) {
    if b.regressions.is_empty() {
        return;
    }
    out.retain(|f| f.priority != Priority::Info);
    let mut worst: Vec<_> = b.regressions.iter().collect();
    worst.sort_by(|x, y| y.change.abs().total_cmp(&x.change.abs()));
    for d in worst.iter().take(5) {
        out.push(Finding {
            priority: Priority::Medium,
            scope: d.scope.clone(),
            title: "regression against the baseline".into(),
            detail: format!(
                "{} went from {:.3} to {:.3} ({:+.1}%), beyond the {:.0}% tolerance",
                d.metric,
                d.baseline,
                d.current,
                d.change * 100.0,
                b.tolerance * 100.0
            ),
            recommendation: format!("Compare with the baseline run `{}`: what changed between the two?", b.dir),
        });
    }
    if worst.len() > 5 {
        out.push(Finding {
            priority: Priority::Medium,
            scope: "plan".into(),
            title: "more regressions".into(),
            detail: format!("{} more metrics regressed (the baseline section lists them all)", worst.len() - 5),
            recommendation: "See the comparison with the baseline below.".into(),
        });
    }
    out.sort_by_key(|f| f.priority);
}

/// One agent much slower than its peers in the same stage.
fn slow_agents(agents: &[AgentRow], out: &mut Vec<Finding>) {
    let mut by_stage: Vec<(String, Vec<(&str, f64)>)> = Vec::new();
    for a in agents {
        let key = format!("{}/{}", a.phase(), a.stage());
        let Some(mean) = a.latency_mean else { continue };
        match by_stage.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push((a.agent(), mean)),
            None => by_stage.push((key, vec![(a.agent(), mean)])),
        }
    }
    for (scope, mut v) in by_stage {
        if v.len() < 3 {
            continue;
        }
        v.sort_by(|a, b| a.1.total_cmp(&b.1));
        let median = v[v.len() / 2].1;
        let (agent, worst) = v[v.len() - 1];
        if median > 0.0 && worst > 2.0 * median {
            out.push(Finding {
                priority: Priority::Medium,
                scope,
                title: "one agent much slower than its peers".into(),
                detail: format!(
                    "agent {agent} mean latency {worst:.1} ms is {:.1}× the median agent ({median:.1} ms)",
                    worst / median
                ),
                recommendation:
                    "Inspect that agent's host, inputs and logs; check for a noisy neighbour or a bad instance.".into(),
            });
        }
    }
}
