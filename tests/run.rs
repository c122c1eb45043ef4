//! `planrun run`: exit codes, stage semantics (repeat, parallel, timeout, continue_on_failure),
//! the run directory, and events.parquet matching events.jsonl row for row.

use std::path::Path;

use super::support::{Sandbox, events, manifest, repo};

fn stage_statuses(dir: &Path) -> Vec<(String, String)> {
    manifest(dir)["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["stage"].as_str().unwrap().to_string(), s["status"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn demo_plan_runs_and_writes_the_run_directory() {
    let sb = Sandbox::new();
    let plan = repo().join("plans/demo.toml");
    let r = sb.run(&["run", plan.to_str().unwrap(), "--profile", "quick", "--quiet", "--out", "out"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dir = r.run_dir();
    assert!(dir.starts_with("out"), "{}", dir.display());
    let dir = sb.path().join(dir);
    for f in ["manifest.json", "plan.resolved.toml", "events.jsonl", "events.parquet", "run.log"] {
        assert!(dir.join(f).exists(), "missing {f}");
    }
    let m = manifest(&dir);
    assert_eq!(m["status"], "completed");
    assert_eq!(m["profile"], "quick");
    // Which build ran is recorded (the tests run the build they were compiled with).
    let build = if cfg!(debug_assertions) { "debug" } else { "release" };
    assert_eq!(m["build"], build);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["run"]["build"], build, "the report says which build ran");
    assert_eq!(m["vars"]["probes"], 2);
    assert!(m["host"]["cpus"].as_u64().unwrap() >= 1);
    assert_eq!(m["plan"]["sha256"].as_str().unwrap().len(), 64);
    let evs = events(&dir);
    let seqs: Vec<u64> = evs.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..evs.len() as u64).collect::<Vec<_>>());
    // probe repeats twice (quick profile): two exec events for it.
    let probes = evs.iter().filter(|e| e["stage"] == "probe" && e["kind"] == "exec").count();
    assert_eq!(probes, 2);
    let log = std::fs::read_to_string(dir.join("run.log")).unwrap();
    assert!(log.contains("stage load/probe passed"), "{log}");
}

#[test]
fn parallel_group_runs_concurrently() {
    let sb = Sandbox::new();
    sb.write(
        "p.toml",
        r#"
[plan]
name = "par"
[[phase]]
name = "p"
[[phase.stage]]
name = "a"
driver = "exec"
run = "sleep 0.4"
parallel = "g"
[[phase.stage]]
name = "b"
driver = "exec"
run = "sleep 0.4"
parallel = "g"
"#,
    );
    let r = sb.run(&["run", "p.toml", "--quiet"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let evs = events(&sb.path().join(r.run_dir()));
    let starts: Vec<f64> = evs.iter().filter(|e| e["name"] == "start").map(|e| e["t_ms"].as_f64().unwrap()).collect();
    let ends: Vec<f64> = evs.iter().filter(|e| e["name"] == "end").map(|e| e["t_ms"].as_f64().unwrap()).collect();
    // Both started before either ended: they overlapped.
    assert_eq!((starts.len(), ends.len()), (2, 2), "starts {starts:?} ends {ends:?}");
    assert!(starts.iter().all(|s| ends.iter().all(|e| s < e)), "starts {starts:?} ends {ends:?}");
}

#[test]
fn failed_stage_stops_the_plan_unless_continue_on_failure() {
    let sb = Sandbox::new();
    sb.write(
        "p.toml",
        r#"
[plan]
name = "f"
[[phase]]
name = "p"
[[phase.stage]]
name = "tolerated"
driver = "exec"
run = "exit 3"
continue_on_failure = true
[[phase.stage]]
name = "expected-code"
driver = "exec"
run = "exit 4"
expect_exit = 4
[[phase.stage]]
name = "fatal"
driver = "exec"
run = "echo boom >&2; exit 1"
[[phase.stage]]
name = "never"
driver = "exec"
run = "true"
"#,
    );
    let r = sb.run(&["run", "p.toml", "--quiet"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let dir = sb.path().join(r.run_dir());
    assert_eq!(
        stage_statuses(&dir),
        [("tolerated", "failed"), ("expected-code", "passed"), ("fatal", "failed"), ("never", "skipped")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let evs = events(&dir);
    let fatal = evs.iter().find(|e| e["stage"] == "fatal" && e["kind"] == "exec").unwrap();
    assert_eq!(fatal["status"], 1);
    assert_eq!(fatal["ok"], false);
    let attrs: serde_json::Value = serde_json::from_str(fatal["attrs"].as_str().unwrap()).unwrap();
    assert_eq!(attrs["stderr_tail"], "boom");
    assert!(!evs.iter().any(|e| e["stage"] == "never"));
}

#[test]
fn timeouts_end_stages_and_commands() {
    let sb = Sandbox::new();
    sb.write(
        "p.toml",
        r#"
[plan]
name = "t"
[[phase]]
name = "p"
[[phase.stage]]
name = "cmd-timeout"
driver = "exec"
run = "sleep 30"
command_timeout = "300ms"
continue_on_failure = true
[[phase.stage]]
name = "stage-timeout"
driver = "sleep"
duration = "1h"
timeout = "300ms"
"#,
    );
    let started = std::time::Instant::now();
    let r = sb.run(&["run", "p.toml", "--quiet"]);
    assert!(started.elapsed().as_secs() < 20, "timeouts did not end the stages");
    assert_eq!(r.code, 1, "{}", r.stderr);
    let dir = sb.path().join(r.run_dir());
    assert_eq!(
        stage_statuses(&dir),
        [("cmd-timeout", "timed_out"), ("stage-timeout", "timed_out")].map(|(a, b)| (a.to_string(), b.to_string()))
    );
}

#[test]
fn time_scale_shrinks_durations() {
    let sb = Sandbox::new();
    sb.write("p.toml", "[plan]\nname = \"s\"\n[[phase]]\nname = \"p\"\n[[phase.stage]]\nname = \"soak\"\ndriver = \"sleep\"\nduration = \"8h\"\n");
    let r = sb.run(&["run", "p.toml", "--quiet", "--time-scale", "0.00005"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let evs = events(&sb.path().join(r.run_dir()));
    let slept = evs.iter().find(|e| e["kind"] == "sleep").unwrap()["latency_ms"].as_f64().unwrap();
    // 8h × 0.00005 = 1.44 s of clock time.
    assert!((1400.0..4000.0).contains(&slept), "{slept}");
}

#[test]
fn dry_run_prints_the_schedule_and_runs_nothing() {
    let sb = Sandbox::new();
    let plan = repo().join("plans/demo.kdl");
    let r = sb.run(&["run", plan.to_str().unwrap(), "--dry-run", "--time-scale", "0.5"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("phase load"), "{}", r.stdout);
    assert!(r.stdout.contains("duration 1s (2s unscaled)"), "{}", r.stdout);
    assert!(!sb.path().join("results").exists());
}

#[test]
fn command_that_cannot_start_is_a_runtime_error() {
    let sb = Sandbox::new();
    sb.write("p.toml", "[plan]\nname = \"e\"\n[[phase]]\nname = \"p\"\n[[phase.stage]]\nname = \"s\"\ndriver = \"exec\"\ncmd = \"/nonexistent/tool\"\n");
    let r = sb.run(&["run", "p.toml", "--quiet"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let dir = sb.path().join(r.run_dir());
    let evs = events(&dir);
    let ev = evs.iter().find(|e| e["kind"] == "exec").unwrap();
    assert!(ev["error"].as_str().unwrap().contains("cannot start `/nonexistent/tool`"), "{ev}");
}

#[test]
fn virtual_clock_refuses_real_stages_by_name() {
    let sb = Sandbox::new();
    let plan = repo().join("plans/demo.toml");
    let r = sb.run(&["run", plan.to_str().unwrap(), "--clock", "virtual", "--quiet"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("setup/start (exec)"), "{}", r.stderr);
}

#[test]
fn virtual_clock_runs_days_of_sleep_instantly() {
    let sb = Sandbox::new();
    sb.write("p.toml", "[plan]\nname = \"v\"\nclock = \"virtual\"\n[[phase]]\nname = \"p\"\n[[phase.stage]]\nname = \"wait\"\ndriver = \"sleep\"\nduration = \"10d\"\n");
    let started = std::time::Instant::now();
    let r = sb.run(&["run", "p.toml", "--quiet"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(started.elapsed().as_secs() < 30);
    let evs = events(&sb.path().join(r.run_dir()));
    let end = evs.iter().find(|e| e["name"] == "end").unwrap();
    assert!(end["t_ms"].as_f64().unwrap() >= 864_000_000.0, "{end}");
}

/// Every JSONL row equals its Parquet row, column by column, with typed Parquet columns.
#[test]
fn parquet_matches_jsonl_row_for_row() {
    use polars::prelude::*;
    let sb = Sandbox::new();
    let plan = repo().join("plans/demo.toml");
    let r = sb.run(&["run", plan.to_str().unwrap(), "--profile", "quick", "--quiet"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dir = sb.path().join(r.run_dir());
    let json = events(&dir);
    let file = std::fs::File::open(dir.join("events.parquet")).unwrap();
    let df = ParquetReader::new(file).finish().unwrap();
    assert_eq!(df.height(), json.len());
    assert_eq!(df.column("seq").unwrap().dtype(), &DataType::UInt64);
    assert_eq!(df.column("ok").unwrap().dtype(), &DataType::Boolean);
    assert_eq!(df.column("latency_ms").unwrap().dtype(), &DataType::Float64);
    assert!(matches!(df.column("ts").unwrap().dtype(), DataType::Datetime(TimeUnit::Microseconds, Some(_))));
    for (i, row) in json.iter().enumerate() {
        for col in df.columns() {
            let name = col.name().as_str();
            let want = row.get(name).cloned().unwrap_or(serde_json::Value::Null);
            let got = col.get(i).unwrap();
            let same = match (&got, &want) {
                (AnyValue::Null, serde_json::Value::Null) => true,
                (AnyValue::Datetime(us, _, _), serde_json::Value::String(s)) => {
                    planrun::events::event::ts_format::parse(s) == Some(*us)
                }
                (AnyValue::String(a), serde_json::Value::String(b)) => a == b,
                (AnyValue::Boolean(a), serde_json::Value::Bool(b)) => a == b,
                (AnyValue::UInt64(a), v) => v.as_u64() == Some(*a),
                (AnyValue::Int64(a), v) => v.as_i64() == Some(*a),
                (AnyValue::Float64(a), v) => v.as_f64() == Some(*a),
                _ => false,
            };
            assert!(same, "row {i} column {name}: parquet {got:?} vs jsonl {want}");
        }
    }
}

/// An exec stage whose command fails on every second execution (a counter file in the sandbox).
fn flaky_plan(sb: &Sandbox, extra: &str, fail_every: u32) -> std::path::PathBuf {
    sb.write(
        "flaky.toml",
        &format!(
            r#"
[plan]
name = "flaky"
[[phase]]
name = "p"
[[phase.stage]]
name = "probe"
driver = "exec"
run = "n=$(cat count 2>/dev/null || echo 0); echo $((n+1)) > count; [ $((n % {fail_every})) -ne {last} ]"
repeat = 4
{extra}
"#,
            last = fail_every - 1
        ),
    )
}

#[test]
fn keep_going_repeats_after_failures_and_counts_them() {
    // Without keep_going the stage stops at the first failed command (the 2nd of 4).
    let sb = Sandbox::new();
    flaky_plan(&sb, "", 2);
    let r = sb.run(&["run", "flaky.toml", "--quiet", "--no-analyze"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let evs = events(&sb.path().join(r.run_dir()));
    assert_eq!(evs.iter().filter(|e| e["kind"] == "exec").count(), 2);

    // With it, all four run, two fail, and the stage passes saying so.
    let sb = Sandbox::new();
    flaky_plan(&sb, "keep_going = true", 2);
    let r = sb.run(&["run", "flaky.toml", "--quiet", "--no-analyze"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dir = sb.path().join(r.run_dir());
    let execs: Vec<bool> =
        events(&dir).iter().filter(|e| e["kind"] == "exec").map(|e| e["ok"].as_bool().unwrap()).collect();
    assert_eq!(execs, vec![true, false, true, false]);
    let stage = &manifest(&dir)["stages"][0];
    assert_eq!(stage["status"], "passed");
    assert_eq!(stage["message"], "2 of 4 iterations failed (keep_going)");

    // When every iteration fails, keep_going does not make the stage pass.
    let sb = Sandbox::new();
    flaky_plan(&sb, "keep_going = true", 1);
    let r = sb.run(&["run", "flaky.toml", "--quiet", "--no-analyze"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let dir = sb.path().join(r.run_dir());
    assert_eq!(events(&dir).iter().filter(|e| e["kind"] == "exec" && e["ok"] == false).count(), 4);
    let stage = &manifest(&dir)["stages"][0];
    assert_eq!(stage["status"], "failed");
    assert!(stage["message"].as_str().unwrap().starts_with("all 4 iterations failed"), "{stage}");
}

/// A tmpfs of `size` mounted for one test and unmounted after it (None where mounting is not
/// allowed: not root, no tmpfs).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(at.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_a_runtime_error_that_keeps_what_was_written() {
    let sb = Sandbox::new();
    let Some(_disk) = SmallDisk::mount(&sb.path().join("disk"), "256k") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root); the full-disk path is untested");
        return;
    };
    let plan = repo().join("plans/ksi-10-day.toml");
    let r = sb.run(&["run", plan.to_str().unwrap(), "--out", "disk/r"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("No space left on device"), "{}", r.stderr);
    assert!(r.stderr.contains("the run ended `error`"), "{}", r.stderr);
    // The warning names the file that could not be written, never the data.
    assert!(!r.stderr.contains("not a valid event"), "{}", r.stderr);
    let dir = sb.path().join(r.run_dir());
    // The manifest is still a whole, readable one (the last good one), and no half-written
    // temp files are left.
    let _ = manifest(&dir);
    let leftovers: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Analysing it in place on the still-full disk is planrun's failure to write, not bad input.
    let a = sb.run(&["analyze", dir.to_str().unwrap()]);
    assert_eq!(a.code, 3, "{}", a.stderr);
    assert!(a.stderr.contains("No space left on"), "{}", a.stderr);
    // Every complete line written is a valid event, numbered from 0.
    let text = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    let whole: Vec<&str> = text.split_inclusive('\n').filter(|l| l.ends_with('\n')).collect();
    assert!(whole.len() > 100);
    for (i, l) in whole.iter().enumerate() {
        let e: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(e["seq"], i as u64);
    }
}
