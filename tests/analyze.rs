//! `planrun analyze`: metrics and criteria checked against answers computed by hand on
//! hand-made events, the seed criteria evaluated as written, no-data semantics, the JSONL
//! fallback, baseline regressions, SQL tables, report formats and exit codes.
//!
//! Over 600 lines on purpose: the scenarios share the hand-made event helpers at the top.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::support::Sandbox;

/// A run directory built by hand: a plan, a manifest and events with known values.
struct Fixture {
    dir: PathBuf,
    events: Vec<Value>,
}

const PLAN: &str = r#"
[plan]
name = "fixture"
criteria = ["success_rate >= 0.95", "sum(cost_usd) <= vars.budget_usd"]

[vars]
budget_usd = 1.0

[[phase]]
name = "p"

[[phase.stage]]
name = "spawn"
driver = "sleep"
duration = "10s"
criteria = [
  'p95(latency_ms where name == "spawn") < 200ms',
  'count(where kind == "crash") == 0',
]

[[phase.stage]]
name = "soak"
driver = "sleep"
duration = "10s"
criteria = [
  'growth(value where name == "rss_bytes") < 0.10',
  'cov(latency_ms where kind == "cycle") < 0.20',
]
"#;

impl Fixture {
    fn new(sb: &Sandbox, name: &str) -> Fixture {
        let dir = sb.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("plan.resolved.toml"), PLAN).unwrap();
        Fixture { dir, events: Vec::new() }
    }

    fn push(&mut self, stage: &str, t_ms: f64, mut fields: Value) {
        let obj = fields.as_object_mut().unwrap();
        obj.insert("seq".into(), json!(self.events.len()));
        obj.insert("t_ms".into(), json!(t_ms));
        obj.insert("ts".into(), json!("2026-11-22T12:00:00.000000Z"));
        obj.insert("phase".into(), json!("p"));
        obj.insert("stage".into(), json!(stage));
        obj.insert("driver".into(), json!("sleep"));
        self.events.push(fields);
    }

    /// Stage markers and manifest with stage windows: spawn 0–10 s, soak 10–20 s.
    fn write(&mut self, status: &str) -> &Path {
        let mut lines = String::new();
        let mut evs = vec![];
        evs.push(("spawn", 0.0, json!({"kind": "stage", "name": "start"})));
        evs.push(("spawn", 10_000.0, json!({"kind": "stage", "name": "end", "ok": true})));
        evs.push(("soak", 10_000.0, json!({"kind": "stage", "name": "start"})));
        evs.push(("soak", 20_000.0, json!({"kind": "stage", "name": "end", "ok": true})));
        for (s, t, f) in evs {
            self.push(s, t, f);
        }
        for e in &self.events {
            lines.push_str(&e.to_string());
            lines.push('\n');
        }
        std::fs::write(self.dir.join("events.jsonl"), lines).unwrap();
        let stage = |name: &str, a: f64, b: f64| json!({"phase": "p", "stage": name, "driver": "sleep", "status": status, "t_start_ms": a, "t_end_ms": b, "events": 0});
        let manifest = json!({
            "planrun_version": "test", "plan": {"name": "fixture", "path": "x", "sha256": "0"},
            "profile": null, "vars": {"budget_usd": 1.0}, "args": [], "seed": 1, "time_scale": 1.0,
            "clock": "real", "host": {"os": "t", "kernel": "t", "hostname": "t", "cpus": 2, "memory_bytes": 1},
            "status": if status == "passed" { "completed" } else { "failed" },
            "started_at": "2026-11-22T12:00:00.000Z", "ended_at": "2026-11-22T12:00:20.000Z",
            "stages": [stage("spawn", 0.0, 10_000.0), stage("soak", 10_000.0, 20_000.0)],
            "checkpoint": {"next_step": 2, "position": {"next_seq": 0, "offset": 0}, "t_ms": 20000.0}
        });
        std::fs::write(self.dir.join("manifest.json"), manifest.to_string()).unwrap();
        &self.dir
    }
}

/// 20 spawns with latencies 10, 20, …, 200 ms (19 ok, 1 failed), cycles with known spread,
/// memory growing linearly by 5% over the soak, and two costed calls.
fn healthy(sb: &Sandbox, name: &str) -> Fixture {
    let mut f = Fixture::new(sb, name);
    for i in 1..=20 {
        let ok = i != 7;
        f.push("spawn", i as f64 * 400.0, json!({"kind": "spawn", "name": "spawn", "agent": format!("a{}", i % 4), "ok": ok, "latency_ms": i as f64 * 10.0}));
    }
    for (i, l) in [100.0, 110.0, 90.0, 105.0, 95.0].iter().enumerate() {
        f.push(
            "soak",
            10_500.0 + i as f64 * 1000.0,
            json!({"kind": "cycle", "name": "cycle", "ok": true, "latency_ms": l}),
        );
    }
    for i in 0..=10 {
        let v = 100_000_000.0 * (1.0 + 0.05 * i as f64 / 10.0);
        f.push(
            "soak",
            10_000.0 + i as f64 * 1000.0,
            json!({"kind": "sample", "name": "rss_bytes", "value": v, "unit": "bytes"}),
        );
    }
    f.push("soak", 15_000.0, json!({"kind": "llm_call", "name": "call", "ok": true, "latency_ms": 1.0, "cost_usd": 0.25, "tokens_in": 100, "tokens_out": 50}));
    f.push("soak", 16_000.0, json!({"kind": "llm_call", "name": "call", "ok": true, "latency_ms": 1.0, "cost_usd": 0.5, "tokens_in": 200, "tokens_out": 70}));
    f
}

fn report(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

fn criterion<'a>(r: &'a Value, check: &str) -> &'a Value {
    r["criteria"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check)
        .unwrap_or_else(|| panic!("no criterion {check}"))
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-9 * b.abs().max(1.0))
}

#[test]
fn metrics_and_seed_criteria_match_hand_computed_answers() {
    let sb = Sandbox::new();
    let mut f = healthy(&sb, "run");
    let dir = f.write("passed").to_path_buf();
    let r = sb.run(&["analyze", dir.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rep = report(&dir);
    assert_eq!(rep["source"]["file"], "events.jsonl");
    assert!(rep["source"]["note"].as_str().unwrap().contains("events.parquet is missing"));

    // Spawn latencies 10..200 step 10: linear-interpolated p50 = 105, p95 = 190.5, p99 = 198.1.
    let spawn = rep["metrics"]["names"].as_array().unwrap().iter().find(|m| m["name"] == "spawn").unwrap();
    assert_eq!(spawn["count"], 20);
    assert_eq!(spawn["failed"], 1);
    assert!(close(&spawn["latency_p50"], 105.0), "{}", spawn["latency_p50"]);
    assert!(close(&spawn["latency_p95"], 190.5), "{}", spawn["latency_p95"]);
    assert!(close(&spawn["latency_p99"], 198.1), "{}", spawn["latency_p99"]);
    assert!(close(&spawn["latency_mean"], 105.0));
    assert!(close(&spawn["success_rate"], 0.95));
    // 20 spawns over the stage's 10 s window.
    assert!(close(&spawn["throughput"], 2.0), "{}", spawn["throughput"]);

    // The stage, phase and plan levels are derived from the (kind, name) groups; check them
    // against the raw latencies: soak holds 5 cycles and 2 calls, the plan adds the 20 spawns.
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        let p = |q: f64| {
            let h = (n - 1.0) * q;
            v[h.floor() as usize] + (v[h.ceil() as usize] - v[h.floor() as usize]) * (h - h.floor())
        };
        (mean, sd, p(0.5), p(0.9), v[0], v[v.len() - 1])
    };
    let mut soak = vec![100.0, 110.0, 90.0, 105.0, 95.0, 1.0, 1.0];
    let mut all: Vec<f64> = (1..=20).map(|i| i as f64 * 10.0).chain(soak.iter().copied()).collect();
    let stage = rep["metrics"]["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "soak").unwrap();
    for (m, (mean, sd, p50, p90, min, max)) in [(stage, stats(&mut soak)), (&rep["metrics"]["plan"], stats(&mut all))] {
        assert!(close(&m["latency_mean"], mean), "{} vs {mean}", m["latency_mean"]);
        assert!(close(&m["latency_stddev"], sd), "{} vs {sd}", m["latency_stddev"]);
        assert!(close(&m["latency_p50"], p50) && close(&m["latency_p90"], p90), "{m}");
        assert!(close(&m["latency_min"], min) && close(&m["latency_max"], max), "{m}");
    }
    assert_eq!(rep["metrics"]["plan"]["count"], 20 + 5 + 11 + 2);
    assert!(close(&rep["metrics"]["plan"]["success_rate"], 26.0 / 27.0));
    assert!(close(&rep["metrics"]["plan"]["cost_usd"], 0.75));

    // p95 < 200ms: observed 190.5.
    let c = criterion(&rep, r#"p95(latency_ms where name == "spawn") < 200ms"#);
    assert_eq!(c["status"], "pass");
    assert!(close(&c["observed"], 190.5));
    // No crashes: a count of zero is data, not "no data".
    assert_eq!(criterion(&rep, r#"count(where kind == "crash") == 0"#)["status"], "pass");
    // Memory grew linearly by exactly 5%: growth = 0.05.
    let g = criterion(&rep, r#"growth(value where name == "rss_bytes") < 0.10"#);
    assert!(close(&g["observed"], 0.05), "{}", g["observed"]);
    // Cycle latencies 100,110,90,105,95: mean 100, sample stddev sqrt(62.5) → cov 0.0790569.
    let cv = criterion(&rep, r#"cov(latency_ms where kind == "cycle") < 0.20"#);
    assert!((cv["observed"].as_f64().unwrap() - 62.5f64.sqrt() / 100.0).abs() < 1e-9);
    // Costs 0.25 + 0.5 against vars.budget_usd = 1.0.
    let cost = criterion(&rep, "sum(cost_usd) <= vars.budget_usd");
    assert!(close(&cost["observed"], 0.75));
    assert!(close(&cost["threshold"], 1.0));
    // Measured events: 20 spawns (19 ok) + 5 cycles + 2 calls = 27 ok of 28 → 0.964… ≥ 0.95 passes.
    let sr = criterion(&rep, "success_rate >= 0.95");
    assert!(close(&sr["observed"], 26.0 / 27.0), "{}", sr["observed"]);
    assert_eq!(sr["status"], "pass");
    assert_eq!(rep["verdict"]["label"], "PASS", "{}", rep["verdict"]);
}

#[test]
fn parquet_and_jsonl_give_the_same_analysis() {
    let sb = Sandbox::new();
    let mut f = healthy(&sb, "run");
    let dir = f.write("passed").to_path_buf();
    assert_eq!(sb.run(&["analyze", dir.to_str().unwrap()]).code, 0);
    let from_jsonl = report(&dir);
    planrun::events::parquet::jsonl_to_parquet(&dir.join("events.jsonl"), &dir.join("events.parquet")).unwrap();
    assert_eq!(sb.run(&["analyze", dir.to_str().unwrap()]).code, 0);
    let from_parquet = report(&dir);
    assert_eq!(from_parquet["source"]["file"], "events.parquet");
    assert_eq!(from_jsonl["criteria"], from_parquet["criteria"]);
    assert_eq!(from_jsonl["metrics"]["stages"], from_parquet["metrics"]["stages"]);
}

#[test]
fn failing_criterion_exits_1_and_junit_carries_observed_vs_expected() {
    let sb = Sandbox::new();
    let mut f = healthy(&sb, "run");
    // A spawn slower than the limit pushes p95 over 200 ms.
    for i in 0..5 {
        f.push("spawn", 9_000.0 + i as f64, json!({"kind": "spawn", "name": "spawn", "ok": true, "latency_ms": 900.0}));
    }
    let dir = f.write("passed").to_path_buf();
    let r = sb.run(&["analyze", dir.to_str().unwrap(), "--format", "md,json,junit,html"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let rep = report(&dir);
    assert_eq!(rep["verdict"]["label"], "FAIL");
    assert!(rep["verdict"]["confidence"].as_f64().unwrap() < 1.0);
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert!(junit.contains("<failure message=\"observed 900 ms, expected &lt; 200 ms\""), "{junit}");
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.starts_with("# fixture — FAIL"), "{md}");
    assert!(
        md.contains("| ❌ | `p95(latency_ms where name == \"spawn\") < 200ms` | p/spawn | 900 ms | < 200 ms | fail |"),
        "{md}"
    );
    assert!(dir.join("report.html").exists());
}

#[test]
fn a_stage_whose_criteria_all_fail_has_confidence_zero_never_negative_zero() {
    let sb = Sandbox::new();
    let mut f = healthy(&sb, "run");
    // Both spawn criteria fail: p95 over 200 ms, and one crash.
    for i in 0..5 {
        f.push("spawn", 9_000.0 + i as f64, json!({"kind": "spawn", "name": "spawn", "ok": true, "latency_ms": 900.0}));
    }
    f.push("spawn", 9_500.0, json!({"kind": "crash", "name": "agent"}));
    let dir = f.write("passed").to_path_buf();
    let r = sb.run(&["analyze", dir.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let rep = report(&dir);
    let spawn = rep["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "spawn").unwrap();
    let c = spawn["confidence"].as_f64().unwrap();
    assert!(c == 0.0 && c.is_sign_positive(), "spawn confidence {} (raw {})", c, spawn["confidence"]);
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(!md.contains("-0.00"), "{md}");
    assert!(md.contains("| p | spawn | sleep | passed | 10.00 s | 0 | 0.00 |"), "{md}");
}

#[test]
fn no_data_fails_unless_optional() {
    let sb = Sandbox::new();
    let dir = sb.path().join("run");
    let mut f = healthy(&sb, "run");
    f.write("passed");
    let plan = PLAN.replace(
        "criteria = [\"success_rate >= 0.95\",",
        "criteria = ['p99(latency_ms where name == \"nothing\") < 1s', { check = 'mean(value where name == \"absent\") < 1', optional = true }, \"success_rate >= 0.95\",",
    );
    std::fs::write(dir.join("plan.resolved.toml"), plan).unwrap();
    let r = sb.run(&["analyze", dir.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let rep = report(&dir);
    assert_eq!(criterion(&rep, r#"p99(latency_ms where name == "nothing") < 1s"#)["status"], "no_data");
    let opt = criterion(&rep, r#"mean(value where name == "absent") < 1"#);
    assert_eq!((opt["status"].as_str(), opt["pass"].as_bool()), (Some("skipped"), Some(true)));
}

#[test]
fn findings_flag_timeouts_tails_and_slow_agents() {
    let sb = Sandbox::new();
    let mut f = Fixture::new(&sb, "run");
    for i in 0..40 {
        let agent = format!("agent-{}", i % 4);
        let slow = i % 4 == 3;
        let timeout = i % 10 == 0;
        let lat = if slow {
            400.0
        } else if i == 39 {
            5000.0
        } else {
            20.0 + (i % 3) as f64
        };
        let mut e = json!({"kind": "response", "name": "ping", "agent": agent, "ok": !timeout, "latency_ms": lat});
        if timeout {
            e["error"] = json!("timeout");
        }
        f.push("spawn", 100.0 + i as f64 * 200.0, e);
    }
    let dir = f.write("passed").to_path_buf();
    let r = sb.run(&["analyze", dir.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let rep = report(&dir);
    let titles: Vec<(String, String)> = rep["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["priority"].as_str().unwrap().to_string(), f["title"].as_str().unwrap().to_string()))
        .collect();
    assert!(titles.contains(&("HIGH".into(), "high timeout rate".into())), "{titles:?}");
    assert!(titles.iter().any(|(_, t)| t == "long latency tail"), "{titles:?}");
    assert!(titles.iter().any(|(_, t)| t == "one agent much slower than its peers"), "{titles:?}");
    // Sorted most urgent first.
    assert_eq!(titles[0].0, "HIGH");
}

#[test]
fn the_memory_finding_reads_each_process_after_its_warm_up_and_ignores_the_host() {
    let titles = |leak: bool| -> Vec<(String, String)> {
        let sb = Sandbox::new();
        let mut f = Fixture::new(&sb, "run");
        for i in 0..=20 {
            let t = 10_000.0 + i as f64 * 500.0;
            // A target that warms up (100 → 160 MB in its first two seconds) and then is flat,
            // or one that keeps climbing 1% a sample; the host's memory jumps around meanwhile,
            // and samples of different sizes mix in the same windows.
            let target = if leak {
                100e6 * (1.0 + 0.01 * i as f64)
            } else if i < 4 {
                100e6 + 20e6 * i as f64
            } else {
                160e6
            };
            f.push("soak", t, json!({"kind": "sample", "name": "target_rss_bytes", "agent": "demo:1", "value": target, "unit": "bytes"}));
            f.push("soak", t, json!({"kind": "sample", "name": "runner_rss_bytes", "value": 30e6, "unit": "bytes"}));
            let host = if i % 3 == 0 { 8e9 } else { 12e9 };
            f.push(
                "soak",
                t + 1.0,
                json!({"kind": "sample", "name": "system_memory_used", "value": host, "unit": "bytes"}),
            );
        }
        let dir = f.write("passed").to_path_buf();
        let r = sb.run(&["analyze", dir.to_str().unwrap()]);
        assert!(r.code == 0 || r.code == 1, "{}", r.stderr);
        report(&dir)["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["title"].as_str().unwrap().to_string(), f["detail"].as_str().unwrap().to_string()))
            .collect()
    };
    let healthy = titles(false);
    assert!(!healthy.iter().any(|(t, _)| t == "memory growth"), "warm-up read as a leak: {healthy:?}");
    let leaking = titles(true);
    let found = leaking.iter().find(|(t, _)| t == "memory growth").unwrap_or_else(|| panic!("{leaking:?}"));
    // 1% of 100 MB per sample over 20 samples: the fitted line grows 20%.
    assert!(found.1.starts_with("`target_rss_bytes` of demo:1 grew 20.0%"), "{found:?}");
}

#[test]
fn baseline_regressions_beyond_tolerance_are_listed() {
    let sb = Sandbox::new();
    let base = healthy(&sb, "base").write("passed").to_path_buf();
    let mut slower = Fixture::new(&sb, "slow");
    for i in 1..=20 {
        slower.push(
            "spawn",
            i as f64 * 400.0,
            json!({"kind": "spawn", "name": "spawn", "ok": true, "latency_ms": i as f64 * 13.0}),
        );
    }
    let cur = slower.write("passed").to_path_buf();
    let r = sb.run(&["analyze", cur.to_str().unwrap(), "--baseline", base.to_str().unwrap()]);
    // Spawn latencies 13..260 put p95 at 247.65 ms, over the stage's 200 ms limit, and the run
    // has no soak events: the verdict fails on its own criteria (a regression alone would not).
    assert_eq!(r.code, 1, "{}", r.stderr);
    let rep = report(&cur);
    let p95 = criterion(&rep, r#"p95(latency_ms where name == "spawn") < 200ms"#);
    assert!(close(&p95["observed"], 247.65) && p95["status"] == "fail", "{p95}");
    let regs = rep["baseline"]["regressions"].as_array().unwrap();
    let p50 = regs.iter().find(|d| d["scope"] == "p/spawn" && d["metric"] == "latency_p50").expect("p50 regression");
    assert!(close(&p50["change"], 0.3), "{p50}");
    // Success rate went up (0.95 → 1.0): a change, not a regression.
    assert!(!regs.iter().any(|d| d["metric"] == "success_rate"));
    let md = std::fs::read_to_string(cur.join("report.md")).unwrap();
    assert!(md.contains("## Against the baseline"), "{md}");
    // A looser tolerance hides it.
    sb.run(&["analyze", cur.to_str().unwrap(), "--baseline", base.to_str().unwrap(), "--tolerance", "0.5"]);
    assert!(report(&cur)["baseline"]["regressions"].as_array().unwrap().iter().all(|d| d["metric"] != "latency_p50"));
}

#[test]
fn custom_sql_tables_and_bad_queries() {
    let sb = Sandbox::new();
    let dir = healthy(&sb, "run").write("passed").to_path_buf();
    let q = sb.path().join("queries");
    std::fs::create_dir_all(&q).unwrap();
    std::fs::write(
        q.join("per_agent.sql"),
        "SELECT agent, COUNT(*) AS n FROM events WHERE agent IS NOT NULL GROUP BY agent ORDER BY agent",
    )
    .unwrap();
    std::fs::write(q.join("broken.sql"), "SELECT nope FROM events").unwrap();
    let r = sb.run(&["analyze", dir.to_str().unwrap(), "--analysis", q.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rep = report(&dir);
    let tables = rep["tables"].as_array().unwrap();
    let per_agent = tables.iter().find(|t| t["name"] == "per_agent").unwrap();
    assert_eq!(per_agent["rows"].as_array().unwrap().len(), 4);
    assert_eq!(per_agent["rows"][0], json!({"agent": "a0", "n": 5}));
    let broken = tables.iter().find(|t| t["name"] == "broken").unwrap();
    assert!(broken["error"].as_str().unwrap().contains("nope"), "{broken}");
    assert!(broken["source"].as_str().unwrap().ends_with("broken.sql"));
    // The rest of the report still rendered.
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("## per_agent") && md.contains("query `") && md.contains("## Criteria"), "{md}");
}

#[test]
fn templates_can_be_overridden() {
    let sb = Sandbox::new();
    let dir = healthy(&sb, "run").write("passed").to_path_buf();
    let t = sb.path().join("tpl");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(t.join("report.md.j2"), "verdict={{ verdict.label }} criteria={{ criteria | length }}\n").unwrap();
    std::fs::write(t.join("report.json.j2"), "{ not json").unwrap();
    let r = sb.run(&["analyze", dir.to_str().unwrap(), "--templates", t.to_str().unwrap(), "--format", "md"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(dir.join("report.md")).unwrap(), "verdict=PASS criteria=6\n");
    let r = sb.run(&["analyze", dir.to_str().unwrap(), "--templates", t.to_str().unwrap(), "--format", "json"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("invalid JSON"), "{}", r.stderr);
}

#[test]
fn bad_input_exits_2_with_the_path() {
    let sb = Sandbox::new();
    let r = sb.run(&["analyze", "nowhere"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("nowhere"), "{}", r.stderr);
    let dir = healthy(&sb, "run").write("passed").to_path_buf();
    std::fs::write(dir.join("events.jsonl"), "{\"seq\":0}\nnot json\n").unwrap();
    let r = sb.run(&["analyze", dir.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("events.jsonl:1"), "{}", r.stderr);
}

#[test]
fn a_directory_of_runs_analyzes_the_newest_or_all() {
    let sb = Sandbox::new();
    sb.write("p.toml", "[plan]\nname = \"x\"\ncriteria = [\"success_rate == 1\"]\n[[phase]]\nname = \"p\"\n[[phase.stage]]\nname = \"s\"\ndriver = \"exec\"\nrun = \"true\"\n");
    let first = sb.run(&["run", "p.toml", "--quiet"]).run_dir();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = sb.run(&["run", "p.toml", "--quiet"]).run_dir();
    let r = sb.run(&["analyze", "results"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), second.display().to_string());
    let r = sb.run(&["analyze", "results", "--all"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let cmp = std::fs::read_to_string(sb.path().join("results/comparison/report.md")).unwrap();
    assert!(cmp.contains(&first.display().to_string()) && cmp.contains("## Runs compared"), "{cmp}");
}

#[test]
fn run_ends_with_the_report_and_its_exit_code_is_the_verdict() {
    let sb = Sandbox::new();
    sb.write(
        "p.toml",
        "[plan]\nname = \"v\"\ncriteria = ['p95(latency_ms where kind == \"exec\") < 1ms']\n[[phase]]\nname = \"p\"\n[[phase.stage]]\nname = \"s\"\ndriver = \"exec\"\nrun = \"sleep 0.05\"\n",
    );
    let r = sb.run(&["run", "p.toml", "--quiet"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let dir = sb.path().join(r.run_dir());
    assert!(dir.join("report.md").exists() && dir.join("report.json").exists());
    let r = sb.run(&["run", "p.toml", "--quiet", "--no-analyze"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!sb.path().join(r.run_dir()).join("report.md").exists());
}

#[test]
fn criteria_errors_are_validate_errors_at_file_line_col() {
    let sb = Sandbox::new();
    sb.write("c.toml", "[plan]\nname = \"x\"\ncriteria = [\"p95(latncy_ms) < 2s\"]\n[[phase]]\nname = \"p\"\n[[phase.stage]]\nname = \"s\"\ndriver = \"exec\"\nrun = \"true\"\ncriteria = [\"sum(cost_usd) <= vars.budget\"]\n");
    let r = sb.run(&["validate", "c.toml"]);
    assert_eq!(r.code, 2);
    insta::assert_snapshot!(r.stderr.replace(sb.path().to_str().unwrap(), "TMP"));
}

#[test]
fn abort_criteria_stop_the_stage_while_it_runs() {
    let sb = Sandbox::new();
    sb.write(
        "a.toml",
        r#"
[plan]
name = "abort"
[[phase]]
name = "p"
[[phase.stage]]
name = "probe"
driver = "exec"
run = "true"
repeat = 200
pause = "50ms"
criteria = [{ check = 'p50(latency_ms where kind == "exec") < 1us', abort = true }]
[[phase.stage]]
name = "after"
driver = "exec"
run = "true"
"#,
    );
    let r = sb.run(&["run", "a.toml", "--quiet"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let dir = sb.path().join(r.run_dir());
    let rep = report(&dir);
    let probe = &rep["stages"][0];
    assert_eq!(probe["status"], "aborted", "{probe}");
    assert!(
        probe["message"]
            .as_str()
            .unwrap()
            .contains("abort criterion `p50(latency_ms where kind == \"exec\") < 1us` violated")
    );
    assert_eq!(rep["stages"][1]["status"], "skipped");
    let execs = super::support::events(&dir).iter().filter(|e| e["kind"] == "exec").count();
    assert!(execs < 200, "the stage ran to the end ({execs} executions) instead of aborting");
    assert!(std::fs::read_to_string(dir.join("report.md")).unwrap().contains("aborted"));
}

#[test]
fn abort_only_on_stage_criteria() {
    let sb = Sandbox::new();
    sb.write("a.toml", "[plan]\nname = \"x\"\ncriteria = [{ check = \"error_rate < 0.1\", abort = true }]\n[[phase]]\nname = \"p\"\n[[phase.stage]]\nname = \"s\"\ndriver = \"exec\"\nrun = \"true\"\n");
    let r = sb.run(&["validate", "a.toml"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("belongs on a stage's criteria") && r.stderr.contains("a.toml:3:"), "{}", r.stderr);
}

/// A minimal XML reader for the reports' own output (elements, attributes, text, entity
/// references): enough to check junit.xml's structure, and it rejects mismatched tags.
mod xml {
    #[derive(Debug, Default)]
    pub struct Element {
        pub name: String,
        pub attrs: Vec<(String, String)>,
        pub children: Vec<Element>,
        pub text: String,
    }

    impl Element {
        pub fn attr(&self, key: &str) -> Option<&str> {
            self.attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
        }

        /// The attribute as a number (panics, naming it, when absent).
        pub fn count(&self, key: &str) -> usize {
            let v = self.attr(key).unwrap_or_else(|| panic!("<{}> has no {key}=: {:?}", self.name, self.attrs));
            v.parse().unwrap_or_else(|_| panic!("<{}> {key}={v:?} is not a count", self.name))
        }

        pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
            self.children.iter().filter(move |c| c.name == name)
        }

        /// The child element named `name` (panics when there is not exactly one).
        pub fn one(&self, name: &str) -> &Element {
            let found: Vec<&Element> = self.children.iter().filter(|c| c.name == name).collect();
            assert_eq!(found.len(), 1, "<{}> should have one <{name}>: {self:?}", self.name);
            found[0]
        }
    }

    fn unescape(s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('&') {
            out.push_str(&rest[..i]);
            let end = rest[i..].find(';').expect("unterminated entity") + i;
            let ent = &rest[i + 1..end];
            out.push(match ent {
                "lt" => '<',
                "gt" => '>',
                "amp" => '&',
                "quot" => '"',
                "apos" => '\'',
                _ if ent.starts_with("#x") => char::from_u32(u32::from_str_radix(&ent[2..], 16).unwrap()).unwrap(),
                _ if ent.starts_with('#') => char::from_u32(ent[1..].parse().unwrap()).unwrap(),
                _ => panic!("unknown entity &{ent};"),
            });
            rest = &rest[end + 1..];
        }
        out + rest
    }

    /// Parse a document; panics on anything malformed.
    pub fn parse(doc: &str) -> Element {
        let mut stack = vec![Element::default()];
        let mut rest = doc;
        while let Some(i) = rest.find('<') {
            stack.last_mut().unwrap().text.push_str(&unescape(&rest[..i]));
            rest = &rest[i..];
            if let Some(r) = rest.strip_prefix("<?") {
                rest = &r[r.find("?>").expect("unterminated declaration") + 2..];
            } else if let Some(r) = rest.strip_prefix("<!--") {
                rest = &r[r.find("-->").expect("unterminated comment") + 3..];
            } else if let Some(r) = rest.strip_prefix("</") {
                let end = r.find('>').expect("unterminated end tag");
                let done = stack.pop().unwrap();
                assert_eq!(done.name, r[..end].trim(), "mismatched end tag");
                stack.last_mut().expect("end tag without start").children.push(done);
                rest = &r[end + 1..];
            } else {
                // A start tag: `>` inside a quoted value does not end it.
                let mut quoted = false;
                let end = rest.char_indices().find(|&(_, c)| {
                    quoted ^= c == '"';
                    c == '>' && !quoted
                });
                let end = end.expect("unterminated start tag").0;
                let inner = &rest[1..end];
                let (inner, empty) = match inner.strip_suffix('/') {
                    Some(s) => (s, true),
                    None => (inner, false),
                };
                let name_end = inner.find(char::is_whitespace).unwrap_or(inner.len());
                let mut el = Element { name: inner[..name_end].to_string(), ..Element::default() };
                let mut attrs = inner[name_end..].trim();
                while !attrs.is_empty() {
                    let eq = attrs.find("=\"").expect("attribute without =\"value\"");
                    let close = attrs[eq + 2..].find('"').expect("unterminated attribute") + eq + 2;
                    el.attrs.push((attrs[..eq].trim().to_string(), unescape(&attrs[eq + 2..close])));
                    attrs = attrs[close + 1..].trim_start();
                }
                if empty {
                    stack.last_mut().unwrap().children.push(el);
                } else {
                    stack.push(el);
                }
                rest = &rest[end + 1..];
            }
        }
        assert_eq!(stack.len(), 1, "unclosed elements");
        let mut root = stack.pop().unwrap();
        assert_eq!(root.children.len(), 1, "one root element");
        root.children.pop().unwrap()
    }
}

#[test]
fn junit_marks_skipped_stages_skipped_and_counts_failures_errors_and_skips() {
    let sb = Sandbox::new();
    sb.write(
        "j.toml",
        r#"
[plan]
name = "junit"
criteria = ['count(where kind == "crash") == 0', { check = 'mean(value where name == "absent") < 1', optional = true }]
[[phase]]
name = "p"
[[phase.stage]]
name = "ok"
driver = "exec"
run = "true"
criteria = ['p95(latency_ms where kind == "exec") < 1us']
[[phase.stage]]
name = "broken"
driver = "exec"
run = "false"
continue_on_failure = true
[[phase.stage]]
name = "missing"
driver = "exec"
cmd = "/nonexistent/planrun-no-such-binary"
[[phase.stage]]
name = "after"
driver = "exec"
run = "true"
[[phase]]
name = "q"
[[phase.stage]]
name = "last"
driver = "exec"
run = "true"
"#,
    );
    // A stage that cannot start is a runtime failure of the run (exit 3).
    let r = sb.run(&["run", "j.toml", "--quiet", "--no-analyze"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let dir = sb.path().join(r.run_dir());
    let statuses: Vec<String> =
        super::support::manifest(&dir)["stages"].as_array().unwrap().iter().map(|s| s["status"].to_string()).collect();
    assert_eq!(statuses, ["\"passed\"", "\"failed\"", "\"error\"", "\"skipped\"", "\"skipped\""]);
    let a = sb.run(&["analyze", dir.to_str().unwrap()]);
    assert_eq!(a.code, 1, "{}", a.stderr);
    let text = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert!(text.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites"), "{text}");
    let doc = xml::parse(&text);
    assert_eq!(doc.name, "testsuites");
    let suites: Vec<&xml::Element> = doc.all("testsuite").collect();
    assert_eq!(suites.len(), 2, "{text}");
    let (criteria, stages) = (suites[0], suites[1]);

    // Criteria: the stage's p95 fails, the optional one has no data and is skipped.
    let expect = |suite: &xml::Element, tests, failures, errors, skipped| {
        let got = ["tests", "failures", "errors", "skipped"].map(|k| suite.count(k));
        assert_eq!(got, [tests, failures, errors, skipped], "{} attributes: {text}", suite.attr("name").unwrap());
        // The attributes count the elements below them.
        let with = |child: &str| suite.all("testcase").filter(|t| t.all(child).next().is_some()).count();
        assert_eq!(suite.all("testcase").count(), tests);
        assert_eq!([with("failure"), with("error"), with("skipped")], [failures, errors, skipped], "{text}");
    };
    expect(criteria, 3, 1, 0, 1);
    // Stages: one failed, one could not start, two skipped after them.
    expect(stages, 5, 1, 1, 2);
    let case = |name: &str| stages.all("testcase").find(|t| t.attr("name") == Some(name)).unwrap();
    assert!(case("ok").children.is_empty());
    assert_eq!(case("broken").one("failure").attr("type"), Some("failed"));
    assert_eq!(case("missing").one("error").attr("type"), Some("error"));
    assert!(case("missing").one("error").text.contains("cannot start"), "{text}");
    for skipped in ["after", "last"] {
        let c = case(skipped);
        assert_eq!(c.children.len(), 1, "{skipped}: {text}");
        assert_eq!(c.one("skipped").attr("message"), Some("an earlier stage failed"));
    }
    // The root sums the suites.
    assert_eq!(["tests", "failures", "errors", "skipped"].map(|k| doc.count(k)), [8, 2, 1, 3], "{text}");
}

#[test]
fn the_verdict_line_says_why_a_run_with_passing_criteria_failed() {
    let sb = Sandbox::new();
    sb.write(
        "v.toml",
        r#"
[plan]
name = "why"
criteria = ['count(where kind == "crash") == 0', 'p95(latency_ms where kind == "exec") < 10s']
[[phase]]
name = "load"
[[phase.stage]]
name = "warm"
driver = "exec"
run = "true"
[[phase.stage]]
name = "probe"
driver = "exec"
run = "false"
[[phase.stage]]
name = "after"
driver = "exec"
run = "true"
"#,
    );
    let r = sb.run(&["run", "v.toml", "--quiet", "--no-analyze"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let dir = sb.path().join(r.run_dir());
    let a = sb.run(&["analyze", dir.to_str().unwrap()]);
    assert_eq!(a.code, 1, "{}", a.stderr);
    // Every criterion passed and the confidence clears the threshold, yet the run failed: the
    // one line says it was the stage (the skipped one after it is a consequence, not a cause).
    let line = a.stderr.lines().next().unwrap();
    let want = "FAIL: stage load/probe failed · criteria 2/2 passed · confidence 1.00 (pass at ≥ 0.75) · ";
    assert!(line.starts_with(want), "{line}");
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let want = "**Verdict: FAIL**: stage load/probe failed · criteria 2/2 passed · confidence **1.00** (pass at ≥ 0.75) · ran ";
    assert!(md.lines().any(|l| l.starts_with(want)), "{md}");
    assert!(!md.contains("PASS"), "{md}");
    let rep = report(&dir);
    assert_eq!(rep["verdict"]["cause"], "stage load/probe failed");
}
