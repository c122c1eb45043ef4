//! Criteria semantics that need more than the parser: `growth` leaves a warm-up out and still
//! catches a leak — end to end on real fleet agents (the built-in agent's allocator warm-up, and
//! its `leak_bytes` switch) at a scaled time — and the analysis (polars) and the live abort
//! checks compute the same `growth` and `cov` figures on the same series.

use polars::prelude::*;
use serde_json::Value;

use planrun::criteria::parse;
use planrun::events::Event;
use planrun::run::abort::AbortWatch;

use super::support::{Sandbox, events};

const GROWTH: &str = r#"growth(value where name == "agent_rss_mean") < 0.10"#;

/// A fleet of three built-in agents on the stability plan's dev schedule: 20 cycles of ping,
/// compute (1500 iterations) and memory_test (1500 KiB), 30 s apart — 6 s at `--time-scale 0.01`.
fn soak(sb: &Sandbox, extra: &str, criteria: &str) -> (i32, std::path::PathBuf, String) {
    let coord = sb.path().join("coord");
    let plan = format!(
        r#"[plan]
name = "soak"
[[phase]]
name = "p"
[[phase.stage]]
name = "soak"
driver = "fleet"
coord_dir = "{}"
agents = 3
duration = "10m"
interval = "30s"
cycles = 20
messages = ["ping", "compute", "memory_test"]
payload = {{ compute = {{ iterations = 1500 }}, memory_test = {{ size = 1500 }} }}
response_timeout = "60s"
startup_timeout = "5m"
heartbeat = "10s"
{extra}
criteria = [{criteria}]
"#,
        coord.display()
    );
    sb.write("soak.toml", &plan);
    let r = sb.run(&["run", "soak.toml", "--time-scale", "0.01", "--quiet"]);
    let dir = sb.path().join(r.run_dir());
    (r.code, dir, r.stderr)
}

fn report(dir: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("report.json")).expect("report json")
}

fn criterion<'a>(rep: &'a Value, check: &str) -> &'a Value {
    rep["criteria"].as_array().unwrap().iter().find(|c| c["check"] == check).unwrap_or_else(|| panic!("no {check}"))
}

/// The agents' mean RSS, one sample per cycle.
fn rss_series(dir: &std::path::Path) -> Vec<f64> {
    events(dir)
        .iter()
        .filter(|e| e["kind"] == "sample" && e["name"] == "agent_rss_mean")
        .map(|e| e["value"].as_f64().unwrap())
        .collect()
}

#[test]
fn memory_that_steps_up_while_warming_up_and_then_stays_flat_is_not_growth() {
    let sb = Sandbox::new();
    // Checked live too: the stage must not be aborted while the warm-up is still in view.
    let (code, dir, err) = soak(&sb, "", &format!("{{ check = '{GROWTH}', abort = true }}"));
    let rss = rss_series(&dir);
    let rep = report(&dir);
    // 20 cycles are planned in a 2 s stage (time scale 0.01); on a loaded machine the last one
    // can fall past the stage's end, so the figures use the samples there are.
    let n = rss.len();
    assert!((16..=20).contains(&n), "{n} samples: {}\n{err}", rep["stages"][0]);
    // The series is what the test is about: up by more than the 10% limit in the first quarter
    // (the second memory_test round, cycle 6, leaves each agent's allocator holding its block)...
    let (first, last) = (rss[0], rss[n - 1]);
    assert!(last / first - 1.0 > 0.10, "no warm-up step to leave out: {rss:?}");
    // ...and flat over the last three quarters.
    let steady = &rss[5..];
    let (lo, hi) = steady.iter().fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
    assert!(hi / lo - 1.0 < 0.01, "not flat after the warm-up: {rss:?}");

    assert_eq!(rep["stages"][0]["status"], "passed", "{}", rep["stages"][0]);
    let g = criterion(&rep, GROWTH);
    assert_eq!(g["status"], "pass", "{g}");
    assert!(g["observed"].as_f64().unwrap().abs() < 0.01, "{g}");
    assert_eq!(code, 0, "{err}");
}

/// Bytes each agent keeps per message, never freed.
const LEAK: f64 = 256.0 * 1024.0;

#[test]
fn a_leak_after_the_warm_up_is_growth_at_its_rate_over_the_whole_run() {
    let sb = Sandbox::new();
    let (code, dir, err) = soak(&sb, "misbehave = { leak_bytes = 262144 }", &format!("'{GROWTH}'"));
    assert_eq!(code, 1, "{err}");
    let rss = rss_series(&dir);
    let n = rss.len();
    assert!((16..=20).contains(&n), "{n} samples\n{err}");
    let rep = report(&dir);
    let g = criterion(&rep, GROWTH);
    assert_eq!(g["status"], "fail", "{g}");
    // The honest figure: the leak's 256 KiB a cycle over the n - 1 intervals, relative to where
    // that line starts (the last sample less the leak), the warm-up step not counted.
    let leaked = LEAK * (n - 1) as f64;
    let expected = leaked / (rss[n - 1] - leaked);
    let observed = g["observed"].as_f64().unwrap();
    assert!((observed / expected - 1.0).abs() < 0.2, "observed {observed}, expected ~{expected}; series {rss:?}");
}

#[test]
fn a_leak_aborts_the_stage_while_it_runs() {
    let sb = Sandbox::new();
    let (code, dir, err) =
        soak(&sb, "misbehave = { leak_bytes = 262144 }", &format!("{{ check = '{GROWTH}', abort = true }}"));
    assert_eq!(code, 1, "{err}");
    let rep = report(&dir);
    let stage = &rep["stages"][0];
    assert_eq!(stage["status"], "aborted", "{stage}");
    let message = stage["message"].as_str().unwrap();
    assert!(message.contains(&format!("abort criterion `{GROWTH}` violated")), "{message}");
    assert!(rss_series(&dir).len() < 20, "the stage ran every cycle instead of aborting");
}

/// One `(t_ms, value)` series as both evaluators see it: a frame for the analysis, events for
/// the live checks.
fn both(check: &str, series: &[(f64, f64)]) -> (Option<f64>, Option<f64>) {
    let parsed = parse(check).unwrap_or_else(|e| panic!("{check}: {e}"));
    let n = series.len();
    let df = df! {
        "t_ms" => series.iter().map(|p| p.0).collect::<Vec<_>>(),
        "value" => series.iter().map(|p| p.1).collect::<Vec<_>>(),
        "latency_ms" => series.iter().map(|p| p.1).collect::<Vec<_>>(),
        "name" => vec!["x"; n],
        "kind" => vec!["sample"; n],
        "_data" => vec![true; n],
    }
    .expect("frame");
    let (v, _) = planrun::analyze::compile::compile(&parsed, lit(true));
    let out = df.lazy().select([v.cast(DataType::Float64).alias("v")]).collect().expect("select");
    let analysis = out.column("v").unwrap().f64().unwrap().get(0).filter(|v| v.is_finite());

    // A limit every figure violates, so the live check reports what it observed.
    let (text, mut live) = (check.to_string(), parsed);
    live.op = planrun::criteria::Cmp::Lt;
    let watch = AbortWatch::new(0.0, vec![(text, live, f64::NEG_INFINITY)]).unwrap();
    for &(t_ms, value) in series {
        let ev = Event {
            t_ms,
            kind: "sample".into(),
            name: Some("x".into()),
            value: Some(value),
            latency_ms: Some(value),
            ..Event::default()
        };
        planrun::events::Observer::observe(&watch, &ev);
    }
    let t_end = series.last().map_or(0.0, |p| p.0);
    (analysis, watch.violated(t_end).map(|v| v.observed))
}

fn close(a: Option<f64>, b: f64, tol: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() <= tol * b.abs().max(1.0))
}

#[test]
fn analysis_and_live_checks_compute_the_same_growth() {
    let g = r#"growth(value where name == "x") < 0.1"#;
    // 20 samples a second apart: 4.0 for the first five, 6.0 after — a warm-up step, no growth.
    let step: Vec<(f64, f64)> = (0..20).map(|i| (i as f64 * 1000.0, if i < 5 { 4.0 } else { 6.0 })).collect();
    let (a, l) = both(g, &step);
    assert!(close(a, 0.0, 1e-12) && close(l, 0.0, 1e-12), "{a:?} {l:?}");
    // Without a warm-up the same series reads as +50% growth (what the fit saw before).
    let (a0, l0) = both(r#"growth(value where name == "x", warmup = 0%) < 0.1"#, &step);
    assert!(a0.is_some_and(|g| g > 0.4), "{a0:?}");
    assert!(close(l0, a0.unwrap(), 1e-9), "{a0:?} {l0:?}");

    // Linear growth 100 → 105: 0.05, warm-up or not.
    let linear: Vec<(f64, f64)> = (0..=10).map(|i| (i as f64 * 1000.0, 100.0 + 0.5 * i as f64)).collect();
    let (a, l) = both(g, &linear);
    assert!(close(a, 0.05, 1e-9) && close(l, 0.05, 1e-9), "{a:?} {l:?}");

    // The step, then a leak of 0.1 a sample: the leak's line 5.5 + 0.1·i, over 19 samples,
    // relative to its value at the first sample: 1.9 / 5.5.
    let leak: Vec<(f64, f64)> =
        (0..20).map(|i| (i as f64 * 1000.0, if i < 5 { 4.0 } else { 5.5 + 0.1 * i as f64 })).collect();
    let (a, l) = both(g, &leak);
    assert!(close(a, 1.9 / 5.5, 1e-9) && close(l, 1.9 / 5.5, 1e-9), "{a:?} {l:?}");

    // Past 512 samples the live fit works on merged chunks: the same figure within 1%.
    let long: Vec<(f64, f64)> = (0..5000)
        .map(|i| {
            (i as f64 * 10.0, if i < 1000 { 4.0 } else { 5.0 + 1e-4 * i as f64 + 0.01 * ((i * 7919) % 13) as f64 })
        })
        .collect();
    let (a, l) = both(g, &long);
    let a = a.expect("analysis growth");
    assert!(close(l, a, 0.01), "{a} {l:?}");

    // Fewer than two samples after the warm-up: no figure from either.
    assert_eq!(both(g, &[(0.0, 1.0), (1000.0, 2.0)]), (None, None));
}

#[test]
fn analysis_and_live_checks_apply_the_cov_floor_the_same_way() {
    // Durations 2, 4, 6 ms: stddev 2, mean 4.
    let short = [(0.0, 2.0), (1000.0, 4.0), (2000.0, 6.0)];
    let (a, l) = both(r#"cov(latency_ms where kind == "sample") < 0.2"#, &short);
    assert!(close(a, 0.5, 1e-12) && close(l, 0.5, 1e-12), "{a:?} {l:?}");
    let (a, l) = both(r#"cov(latency_ms where kind == "sample", floor = 100ms) < 0.2"#, &short);
    assert!(close(a, 0.02, 1e-12) && close(l, 0.02, 1e-12), "{a:?} {l:?}");
    // Above the floor, the plain cov: 200, 400, 600 ms.
    let long = [(0.0, 200.0), (1000.0, 400.0), (2000.0, 600.0)];
    let (a, l) = both(r#"cov(latency_ms where kind == "sample", floor = 100ms) < 0.2"#, &long);
    assert!(close(a, 0.5, 1e-12) && close(l, 0.5, 1e-12), "{a:?} {l:?}");
}
