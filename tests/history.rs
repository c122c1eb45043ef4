//! `planrun history`: three real runs of one plan, the third slower; the history flags it against
//! the run before and the best, not the first two; its figures are each run's own, recomputed
//! from events.jsonl; broken and foreign directories are skipped or named; the page draws.

use std::process::Command;

use serde_json::Value;

use crate::support::Sandbox;

const PLAN: &str = r#"
[plan]
name = "hist"
[vars]
nap = "0.05"
[[phase]]
name = "p"
[[phase.stage]]
name = "nap"
driver = "exec"
run = "sleep {{ vars.nap }}"
repeat = 20
criteria = ['p95(latency_ms where kind == "exec") < 150ms']
"#;

fn history(sb: &Sandbox, args: &[&str]) -> (i32, String, Option<Value>) {
    let mut all = vec!["history"];
    all.extend_from_slice(args);
    let r = sb.run(&all);
    let json = std::fs::read_to_string(sb.path().join("results/history/history.json")).ok();
    (r.code, r.stderr, json.map(|j| serde_json::from_str(&j).unwrap()))
}

#[test]
fn a_slower_run_is_flagged_against_the_previous_and_the_best_and_the_figures_are_the_runs_own() {
    let sb = Sandbox::new();
    sb.write("h.toml", PLAN);
    let run = |extra: &[&str]| {
        let mut a = vec!["run", "h.toml", "--quiet"];
        a.extend_from_slice(extra);
        let r = sb.run(&a);
        assert!(r.code == 0 || r.code == 1, "{}", r.stderr);
    };
    run(&[]);
    run(&[]);
    // Two runs alike: no regression, exit 0.
    let (code, err, h) = history(&sb, &["results"]);
    assert_eq!(code, 0, "{err}");
    let h = h.unwrap();
    assert!(h["newest_regressions"].as_array().unwrap().is_empty(), "{}", h["newest_regressions"]);

    run(&["--set", "nap=0.2"]);
    std::fs::create_dir(sb.path().join("results/torn")).unwrap();
    std::fs::write(sb.path().join("results/torn/manifest.json"), "{\"plan\": ").unwrap();
    let (code, err, h) = history(&sb, &["results"]);
    assert_eq!(code, 1, "the newest run regressed: {err}");
    assert!(err.contains("skipped results/torn"), "a broken run directory is skipped with its reason: {err}");
    let h = h.unwrap();
    let runs = h["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    let p95 = h["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["scope"] == "p/nap" && m["metric"] == "latency_p95")
        .unwrap();
    assert_eq!(p95["regressed"], serde_json::json!([null, null, "previous+best"]), "{p95}");
    let crit = &h["criteria"][0];
    assert_eq!(crit["pass"], serde_json::json!([true, true, false]));
    assert_eq!(crit["newly_failing"], serde_json::json!([false, false, true]));

    // Each run's p95 and the changes, from its own events (linear-interpolation percentile).
    let script = r#"
import json, sys
h = json.load(open(sys.argv[1]))
def p(xs, q):
    xs = sorted(xs); k = (len(xs) - 1) * q; lo = int(k); hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (k - lo) * (xs[hi] - xs[lo])
m = [m for m in h["metrics"] if m["scope"] == "p/nap" and m["metric"] == "latency_p95"][0]
vals = []
for i, r in enumerate(h["runs"]):
    rows = [json.loads(l) for l in open(sys.argv[2] + "/" + r["dir"] + "/events.jsonl")]
    lat = [e["latency_ms"] for e in rows if e["kind"] == "exec"]
    vals.append(p(lat, 0.95))
    assert abs(m["values"][i] - vals[i]) < 1e-9, (i, m["values"][i], vals[i])
assert abs(m["vs_previous"][2] - (vals[2] - vals[1]) / vals[1]) < 1e-9
best = min(vals[:2])
assert abs(m["vs_best"][2] - (vals[2] - best) / best) < 1e-9
assert h["runs"] == sorted(h["runs"], key=lambda r: r["started_at"])
print("ok")
"#;
    let json = sb.path().join("results/history/history.json");
    let out = Command::new("python3")
        .args(["-c", script, json.to_str().unwrap(), sb.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let md = std::fs::read_to_string(sb.path().join("results/history/history.md")).unwrap();
    assert!(md.contains("**The newest run regressed:**") && md.contains("⚠ prev+best"), "{md}");

    // The page draws a chart per stage metric, with no script error, in a real browser.
    if let Some(browser) = crate::browser::chromium() {
        let page = sb.path().join("results/history/history.html");
        let shot = crate::browser::screenshots().join("history.png");
        let (dom, log) = crate::browser::open(&browser, &format!("file://{}", page.display()), &shot, 3000);
        assert!(crate::browser::script_errors(&log).is_empty(), "{log}");
        let drawn = crate::browser::attr(&dom, "charts", "data-drawn").unwrap();
        assert_eq!(Some(drawn.clone()), crate::browser::attr(&dom, "charts", "data-expected"), "{dom}");
        assert!(drawn.parse::<u32>().unwrap() >= 4, "confidence and the stage's latency, throughput, success");
        assert!(!dom.contains("data-errors"), "{dom}");
    }
}

#[test]
fn history_names_what_it_cannot_do() {
    let sb = Sandbox::new();
    std::fs::create_dir(sb.path().join("empty")).unwrap();
    let (code, err, _) = history(&sb, &["empty"]);
    assert!(code == 2 && err.contains("no runs under empty"), "{err}");
    let (code, err, _) = history(&sb, &["nowhere"]);
    assert!(code == 2 && err.contains("cannot read nowhere"), "{err}");

    sb.write("h.toml", PLAN);
    sb.write("g.toml", &PLAN.replace("name = \"hist\"", "name = \"other\""));
    for p in ["h.toml", "g.toml"] {
        let r = sb.run(&["run", p, "--quiet"]);
        assert!(r.code == 0 || r.code == 1, "{}", r.stderr);
    }
    let (code, err, _) = history(&sb, &["results", "--plan", "nope"]);
    assert!(
        code == 2 && err.contains("no runs of plan `nope`") && err.contains("hist") && err.contains("other"),
        "{err}"
    );
    // Without --plan: the newest run's plan, the other named.
    let (code, err, h) = history(&sb, &["results"]);
    assert_eq!(code, 0, "{err}");
    let h = h.unwrap();
    assert_eq!(h["plan"], "other");
    assert_eq!(h["other_plans"], serde_json::json!(["hist"]));
    assert!(err.contains("also has runs of hist"), "{err}");
    let r = sb.run(&["history", "results", "--format", "junit"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}
