//! The `bench` driver end to end: real commands timed through the launcher, the analysis's
//! benchmark table checked against an independent computation over the run's own events, the
//! kernel's peak RSS, failures, timeouts, hooks and plan errors.

use std::process::Command;

use crate::support::{Sandbox, attrs, events, of_kind};

fn plan(stage: &str) -> String {
    format!(
        "[plan]\nname = \"b\"\n[[phase]]\nname = \"p\"\n[[phase.stage]]\nname = \"s\"\ndriver = \"bench\"\n{stage}\n"
    )
}

fn run(sb: &Sandbox, text: &str, extra: &[&str]) -> (i32, std::path::PathBuf, String) {
    sb.write("f.toml", text);
    let mut args = vec!["run", "f.toml", "--quiet", "--format", "json,md"];
    args.extend_from_slice(extra);
    let r = sb.run(&args);
    let dir = sb.path().join(r.run_dir());
    (r.code, dir, r.stderr)
}

fn report(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

#[test]
fn the_benchmark_table_and_ratio_match_the_events_and_hooks_run_when_they_should() {
    let sb = Sandbox::new();
    let log = sb.path().join("hooks.log");
    let text = plan(&format!(
        "warmup = 1\nruns = 6\ninstances = 2\nops_pattern = 'ops=(\\d+)'\n\
         prepare = \"echo prepare >> {log}\"\ncleanup = \"echo cleanup >> {log}\"\n\
         commands = [\n  {{ name = \"candidate\", run = \"echo ops=500\" }},\n  {{ name = \"baseline\", cmd = \"sleep\", args = [\"0.03\"] }},\n]\n\
         criteria = [\"ratio(baseline, candidate) > 3\", 'mean(value where kind == \"bench_ops\") > 100']\n",
        log = log.display()
    ));
    let (code, dir, err) = run(&sb, &text, &[]);
    assert_eq!(code, 0, "{err}");
    let evs = events(&dir);
    assert_eq!(of_kind(&evs, "bench_warmup").len(), 2, "one warm-up run per command");
    let runs = of_kind(&evs, "bench_run");
    assert_eq!(runs.len(), 2 * 6 * 2, "6 runs of 2 instances per command");
    assert!(runs.iter().all(|r| r["ok"] == true && r["status"] == 0 && r["unit"] == "bytes"));
    let hooks = std::fs::read_to_string(&log).unwrap();
    assert_eq!(hooks.matches("prepare").count(), 12, "prepare before every timed run: {hooks}");
    assert_eq!(hooks.matches("cleanup").count(), 2, "cleanup after each command's last run: {hooks}");
    // Two instances of a run start together: their pids differ.
    let inst: Vec<_> = runs.iter().map(|r| attrs(r)["instance"].as_u64().unwrap()).collect();
    assert_eq!(inst.iter().filter(|&&i| i == 1).count(), 12);

    // An independent computation over the events (Python's statistics module).
    let script = r#"
import json, statistics, sys
d = sys.argv[1]
rows = [json.loads(l) for l in open(d + "/events.jsonl")]
rep = json.load(open(d + "/report.json"))
b = rep["bench"][0]
assert b["stage"] == "p/s" and b["baseline"] == "baseline", b
for c in b["commands"]:
    lat = [r["latency_ms"] for r in rows if r["kind"] == "bench_run" and r["name"] == c["name"] and r["ok"]]
    assert c["runs"] == len(lat) == 12, (c, len(lat))
    assert abs(c["mean_ms"] - statistics.mean(lat)) < 1e-9, c
    assert abs(c["stddev_ms"] - statistics.stdev(lat)) < 1e-9, c
    assert abs(c["median_ms"] - statistics.median(lat)) < 1e-9, c
    assert c["min_ms"] == min(lat) and c["max_ms"] == max(lat)
    rss = [r["value"] for r in rows if r["kind"] == "bench_run" and r["name"] == c["name"]]
    assert c["peak_rss_max"] == max(rss)
    user = [json.loads(r["attrs"])["user_ms"] for r in rows if r["kind"] == "bench_run" and r["name"] == c["name"]]
    assert abs(c["user_ms"] - statistics.mean(user)) < 1e-9
ops = [r for r in rows if r["kind"] == "bench_ops"]
assert len(ops) == 12 and all(r["name"] == "candidate" for r in ops)
by_run = {(json.loads(r["attrs"])["run"], json.loads(r["attrs"])["instance"]): r["latency_ms"] for r in rows if r["kind"] == "bench_run" and r["name"] == "candidate"}
for r in ops:
    a = json.loads(r["attrs"])
    assert abs(r["value"] - 500 / (by_run[(a["run"], a["instance"])] / 1000)) / r["value"] < 1e-3, (r, by_run)
mean = lambda n: statistics.mean([r["latency_ms"] for r in rows if r["kind"] == "bench_run" and r["name"] == n and r["ok"]])
ratio = mean("baseline") / mean("candidate")
s = b["speedups"][0]
assert s["candidate"] == "candidate" and abs(s["ratio"] - ratio) < 1e-9, (s, ratio)
assert s["ci_low"] <= ratio <= s["ci_high"], s
crit = [c for c in rep["criteria"] if c["check"].startswith("ratio")][0]
assert abs(crit["observed"] - ratio) < 1e-9 and crit["pass"], crit
print("ok")
"#;
    let out = Command::new("python3").args(["-c", script, dir.to_str().unwrap()]).output().expect("python3");
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("## Benchmarks") && md.contains("as long as `candidate`"), "{md}");
    assert!(!md.contains("throughput falling"), "a bench stage's event rate is no throughput: {md}");
}

#[test]
fn peak_rss_is_the_commands_own_from_the_kernel_not_the_runners() {
    let sb = Sandbox::new();
    let text = plan(
        "runs = 3\ncommands = [\n  { name = \"small\", cmd = \"true\" },\n  \
         { name = \"big\", cmd = \"python3\", args = [\"-c\", \"b = bytearray(96 << 20); b[::4096] = b'x' * len(b[::4096])\"] },\n]\n",
    );
    let (code, dir, err) = run(&sb, &text, &[]);
    assert_eq!(code, 0, "{err}");
    let evs = events(&dir);
    let rss = |name: &str| -> Vec<f64> {
        of_kind(&evs, "bench_run").iter().filter(|r| r["name"] == name).map(|r| r["value"].as_f64().unwrap()).collect()
    };
    const MIB: f64 = 1024.0 * 1024.0;
    // The runner itself holds tens of MiB: a command forked from it would show them.
    assert!(rss("small").iter().all(|&b| b > 0.0 && b < 12.0 * MIB), "`true` is small: {:?}", rss("small"));
    assert!(rss("big").iter().all(|&b| b > 96.0 * MIB && b < 160.0 * MIB), "96 MiB touched: {:?}", rss("big"));
    let user: f64 = of_kind(&evs, "bench_run")
        .iter()
        .filter(|r| r["name"] == "big")
        .map(|r| attrs(r)["user_ms"].as_f64().unwrap() + attrs(r)["sys_ms"].as_f64().unwrap())
        .sum();
    assert!(user > 0.0, "CPU time is counted");
}

#[test]
fn a_failing_command_fails_the_stage_with_its_exit_code_and_stderr() {
    let sb = Sandbox::new();
    let text = plan("runs = 5\ncommands = [{ name = \"bad\", run = \"echo broken pipe dream >&2; exit 3\" }]\n");
    let (code, dir, _) = run(&sb, &text, &[]);
    assert_eq!(code, 1);
    let evs = events(&dir);
    let runs = of_kind(&evs, "bench_run");
    assert_eq!(runs.len(), 1, "hyperfine's rule: a failing run ends the command's runs");
    assert_eq!(runs[0]["ok"], false);
    assert_eq!(runs[0]["status"], 3);
    assert!(runs[0]["error"].as_str().unwrap().contains("exit code 3: broken pipe dream"), "{:?}", runs[0]);
    let m = crate::support::manifest(&dir);
    assert!(m.to_string().contains("`bad` failed: exit code 3"), "{m}");

    // ignore_failure: the runs go on; the stage still fails when every run failed.
    let text = plan("runs = 4\nignore_failure = true\ncommands = [{ name = \"bad\", run = \"exit 1\" }]\n");
    let (code, dir, _) = run(&sb, &text, &[]);
    assert_eq!(code, 1);
    assert_eq!(of_kind(&events(&dir), "bench_run").len(), 4);
    assert!(crate::support::manifest(&dir).to_string().contains("every run of `bad` failed"));

    // Some runs fail, some pass: with ignore_failure the stage passes, and the statistics
    // count only the runs that exited 0.
    let flip = sb.path().join("flip");
    let text = plan(&format!(
        "runs = 4\nignore_failure = true\ncommands = [{{ name = \"flaky\", run = \"if [ -e {f} ]; then rm {f}; exit 1; else touch {f}; fi\" }}]\n",
        f = flip.display()
    ));
    let (code, dir, err) = run(&sb, &text, &[]);
    assert_eq!(code, 0, "{err}");
    let b = &report(&dir)["bench"][0]["commands"][0];
    assert_eq!((b["runs"].as_u64(), b["failed"].as_u64()), (Some(2), Some(2)), "{b}");
}

#[test]
fn runs_go_on_until_min_runs_and_min_time_and_a_command_timeout_kills_the_group() {
    let sb = Sandbox::new();
    // min_time 2s at --time-scale 0.1 is 200 ms: a 1 ms command runs far more than min_runs.
    let text = plan("min_runs = 3\nmin_time = \"2s\"\ncommands = [{ name = \"quick\", cmd = \"true\" }]\n");
    let (code, dir, err) = run(&sb, &text, &["--time-scale", "0.1"]);
    assert_eq!(code, 0, "{err}");
    let evs = events(&dir);
    let runs = of_kind(&evs, "bench_run");
    let span: f64 = runs.last().unwrap()["t_ms"].as_f64().unwrap() - runs[0]["t_ms"].as_f64().unwrap();
    assert!(runs.len() > 3, "ran until 200 ms had passed: {} runs", runs.len());
    assert!(span >= 150.0, "{span}");

    // max_runs caps it.
    let text =
        plan("min_runs = 2\nmin_time = \"1h\"\nmax_runs = 5\ncommands = [{ name = \"quick\", cmd = \"true\" }]\n");
    let (code, dir, err) = run(&sb, &text, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(of_kind(&events(&dir), "bench_run").len(), 5);

    let pidfile = sb.path().join("pid");
    let text = plan(&format!(
        "runs = 2\ncommand_timeout = \"300ms\"\ncommands = [{{ name = \"slow\", run = \"trap '' TERM; sleep 30 & echo $! > {p}; wait\" }}]\n",
        p = pidfile.display()
    ));
    let t0 = std::time::Instant::now();
    let (code, dir, _) = run(&sb, &text, &[]);
    assert_eq!(code, 1);
    assert!(t0.elapsed() < std::time::Duration::from_secs(20), "the timeout ended it");
    let m = crate::support::manifest(&dir).to_string();
    assert!(m.contains("command_timeout of 300ms"), "{m}");
    let pid: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let alive = !stat.is_empty() && !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z');
    assert!(!alive, "the command's whole process group was killed, TERM ignored or not (pid {pid})");

    // What a run leaves running in its group (`server &`) ends with the run.
    let text = plan(&format!(
        "runs = 1\ncommands = [{{ name = \"leaves\", run = \"sleep 30 & echo $! > {p}\" }}]\n",
        p = pidfile.display()
    ));
    let (code, _, err) = run(&sb, &text, &[]);
    assert_eq!(code, 0, "{err}");
    let pid: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let alive = !stat.is_empty() && !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z');
    assert!(!alive, "a background process the command left is killed (pid {pid})");
}

#[test]
fn bad_bench_fields_are_plan_errors_at_the_offending_value() {
    let sb = Sandbox::new();
    let cases = [
        (
            "baseline = \"nope\"\ncommands = [{ name = \"a\", run = \"true\" }]",
            "baseline `nope` is not one of the commands (a)",
            "baseline = \"nope\"",
        ),
        (
            "runs = 3\nmin_time = \"1s\"\ncommands = [{ name = \"a\", run = \"true\" }]",
            "`runs` fixes the count",
            "runs = 3",
        ),
        (
            "commands = [{ name = \"a\", run = \"true\" }, { name = \"a\", cmd = \"true\" }]",
            "two commands are named `a`",
            "",
        ),
        ("commands = [{ name = \"a\" }]", "needs `run = \"shell line\"` or `cmd = \"program\"`", ""),
        (
            "instances = 0\ncommands = [{ name = \"a\", run = \"true\" }]",
            "`instances` is between 1 and 256",
            "instances = 0",
        ),
        (
            "ops_pattern = 'ops=\\d+'\ncommands = [{ name = \"a\", run = \"true\" }]",
            "needs a group around the number",
            "",
        ),
        ("commands = []", "at least one command", ""),
    ];
    for (fields, want, line) in cases {
        sb.write("f.toml", &plan(fields));
        let r = sb.run(&["validate", "f.toml"]);
        assert_eq!(r.code, 2, "{fields}: {}", r.stderr);
        assert!(r.stderr.contains(want), "{fields}: want {want:?} in\n{}", r.stderr);
        assert!(r.stderr.contains("f.toml:"), "file:line:col: {}", r.stderr);
        if !line.is_empty() {
            assert!(r.stderr.contains(line), "points at `{line}`: {}", r.stderr);
        }
    }
    // ratio(A, A) and a malformed ratio are criteria errors.
    sb.write("f.toml", &plan("commands = [{ name = \"a\", run = \"true\" }]\ncriteria = [\"ratio(a, a) > 2\"]"));
    let r = sb.run(&["validate", "f.toml"]);
    assert!(r.code == 2 && r.stderr.contains("always 1"), "{}", r.stderr);
    sb.write("f.toml", &plan("commands = [{ name = \"baseline\", run = \"true\" }, { name = \"candidate\", run = \"true\" }]\ncriteria = [\"ratio(basline, candidate) > 2\"]"));
    let r = sb.run(&["validate", "f.toml"]);
    assert!(
        r.code == 2 && r.stderr.contains("ratio names `basline`") && r.stderr.contains("did you mean `baseline`"),
        "{}",
        r.stderr
    );
    let at_plan = plan("commands = [{ name = \"a\", run = \"true\" }, { name = \"b\", run = \"true\" }]")
        .replace("name = \"b\"\n[[phase]]", "name = \"b\"\ncriteria = [\"ratio(a, b) > 2\"]\n[[phase]]");
    sb.write("f.toml", &at_plan);
    let r = sb.run(&["validate", "f.toml"]);
    assert!(r.code == 2 && r.stderr.contains("put it in that stage's criteria"), "{}", r.stderr);
    sb.write("f.toml", &plan("commands = [{ name = \"a\", run = \"true\" }]\ncriteria = [\"ratio(a) > 2\"]"));
    let r = sb.run(&["validate", "f.toml"]);
    assert!(r.code == 2 && r.stderr.contains("`,` between the two command names"), "{}", r.stderr);
}

#[test]
fn a_live_ratio_criterion_aborts_the_stage() {
    let sb = Sandbox::new();
    // The candidate is slower than the baseline: ratio < 1 violates `> 2` once both have runs.
    let text = plan(
        "runs = 40\ncommands = [\n  { name = \"baseline\", cmd = \"true\" },\n  { name = \"candidate\", cmd = \"sleep\", args = [\"0.1\"] },\n]\n\
         criteria = [{ check = \"ratio(baseline, candidate) > 2\", abort = true }]\n",
    );
    let t0 = std::time::Instant::now();
    let (code, dir, _) = run(&sb, &text, &[]);
    assert_eq!(code, 1);
    let m = crate::support::manifest(&dir).to_string();
    assert!(m.contains("abort criterion `ratio(baseline, candidate) > 2` violated"), "{m}");
    assert!(of_kind(&events(&dir), "bench_run").len() < 80, "stopped before all 40 candidate runs");
    // All 40 runs of the candidate would take 4 s of sleeping alone.
    assert!(t0.elapsed() < std::time::Duration::from_secs(15), "{:?}", t0.elapsed());
}
