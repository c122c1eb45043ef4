//! plans/fleet-suite end to end (its quick profile): the three included plans and the commands
//! phase run as one plan; each phase's confidence and the overall mean are recomputed from the
//! criteria; the epic figures and the multiplier are checked against the events and the files.

use std::process::Command;

use serde_json::Value;

use crate::support::{Sandbox, attrs, events, manifest, of_kind, repo};

#[test]
fn the_suite_runs_its_four_components_and_scores_each_and_their_mean() {
    let sb = Sandbox::new();
    let plan = repo().join("plans/fleet-suite.toml");
    let project = repo().join("examples/epic-app");
    let set = format!("project={}", project.display());
    let r = sb.run(&["run", plan.to_str().unwrap(), "--profile", "quick", "--set", &set, "--quiet"]);
    assert!(r.code == 0 || r.code == 1, "{}", r.stderr);
    let dir = sb.path().join(r.run_dir());
    let m = manifest(&dir);
    let stages: Vec<(String, String, String)> = m["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["phase"].as_str().unwrap().into(),
                s["stage"].as_str().unwrap().into(),
                s["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    let phases: Vec<&str> = stages.iter().map(|(p, _, _)| p.as_str()).collect();
    for p in ["fleet", "redis", "dashboard", "commands"] {
        assert!(phases.contains(&p), "phase {p} ran: {stages:?}");
    }
    for (p, s, status) in &stages {
        assert_eq!(status, "passed", "{p}/{s}: {}", m);
    }

    let report: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let criteria = report["criteria"].as_array().unwrap();
    for c in criteria {
        let check = c["check"].as_str().unwrap();
        assert_ne!(c["status"], "no_data", "{check} had no data");
        // Latency, rates and the multiplier are the machine's (a loaded 2-core test run).
        let timed = check.contains("latency_ms") || check.starts_with("rate(") || check.starts_with("ratio(");
        assert!(timed || c["pass"] == true, "{check} ({}) failed: {c}", c["scope"]);
    }
    // The included plans' criteria mean what they meant there: their vars are their values.
    assert!(
        criteria
            .iter()
            .any(|c| c["scope"] == "redis/coordination" && c["check"] == "count(where kind == \"swarm\" and ok) == 20"),
        "redis-swarms' quick profile has 20 swarms"
    );

    // Each phase's confidence, and the run's as their mean, from the criteria.
    let v = &report["verdict"];
    assert_eq!(v["confidence_rule"], "phases");
    let comps = v["components"].as_array().unwrap();
    let names: Vec<&str> = comps.iter().map(|c| c["phase"].as_str().unwrap()).collect();
    assert_eq!(names, ["fleet", "redis", "dashboard", "commands"]);
    let mut sum = 0.0;
    for c in comps {
        let p = c["phase"].as_str().unwrap();
        let mine: Vec<&Value> = criteria
            .iter()
            .filter(|x| x["scope"] == p || x["scope"].as_str().unwrap().starts_with(&format!("{p}/")))
            .collect();
        let total: f64 = mine.iter().map(|x| x["weight"].as_f64().unwrap()).sum();
        let passed: f64 = mine.iter().filter(|x| x["pass"] == true).map(|x| x["weight"].as_f64().unwrap()).sum();
        assert!(total > 0.0, "{p} has criteria");
        assert!((c["confidence"].as_f64().unwrap() - passed / total).abs() < 1e-12, "{p}: {c}");
        sum += passed / total;
    }
    assert!((v["confidence"].as_f64().unwrap() - sum / 4.0).abs() < 1e-12, "{v}");
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("## Confidence by phase") && md.contains("is the mean of the phases'"), "{md}");

    // The fleet phase's own stage after the included one: it auto-scaled up and back down.
    let evs = events(&dir);
    let scale: Vec<&Value> = of_kind(&evs, "scale").into_iter().filter(|e| e["stage"] == "autoscale").collect();
    assert!(
        scale.iter().any(|e| e["name"] == "backlog_high") && scale.iter().any(|e| e["name"] == "backlog_low"),
        "{scale:?}"
    );
    assert!(stages.iter().any(|(p, s, _)| p == "fleet" && s == "autoscale"));

    // The epic figures: the package's size is the file's, the install ran the installed binary.
    let pkg = of_kind(&evs, "metric").into_iter().find(|e| e["name"] == "package_bytes").expect("a package_bytes row");
    let size = std::fs::metadata(dir.join("epic-app.tar.gz")).unwrap().len();
    assert_eq!(pkg["value"].as_f64().unwrap(), size as f64);
    assert_eq!(pkg["unit"], "bytes");
    let install = of_kind(&evs, "exec").into_iter().find(|e| e["stage"] == "install").unwrap();
    assert!(attrs(install)["stdout_tail"].as_str().unwrap().starts_with("epic-app 0.1.0"), "{install}");

    // The multiplier: its ratio from the events, and the two commands doing the same work.
    let mean = |name: &str| {
        let xs: Vec<f64> = of_kind(&evs, "bench_run")
            .iter()
            .filter(|e| e["stage"] == "multiplier" && e["name"] == name && e["ok"] == true)
            .map(|e| e["latency_ms"].as_f64().unwrap())
            .collect();
        assert_eq!(xs.len(), 3, "{name}: the quick profile's 3 runs");
        xs.iter().sum::<f64>() / xs.len() as f64
    };
    let ratio = mean("baseline") / mean("candidate");
    let b = report["bench"].as_array().unwrap().iter().find(|b| b["stage"] == "commands/multiplier").unwrap();
    assert!((b["speedups"][0]["ratio"].as_f64().unwrap() - ratio).abs() < 1e-9 * ratio);
    assert!(ratio > 5.0, "a compiled parser is many times faster than the same in CPython: {ratio}");
    let parallel = of_kind(&evs, "bench_run").into_iter().filter(|e| e["stage"] == "parallel").count();
    assert_eq!(parallel, 3 * 10, "3 runs of 10 instances");
    let bin = dir.join("prefix/bin/epic-app");
    let fast = Command::new(&bin).args(["parse", "700", "9"]).output().unwrap();
    let slow =
        Command::new("python3").args(["baseline.py", "parse", "700", "9"]).current_dir(&project).output().unwrap();
    assert!(fast.status.success() && slow.status.success());
    assert_eq!(String::from_utf8_lossy(&fast.stdout), String::from_utf8_lossy(&slow.stdout), "same checksum, same ops");
}
