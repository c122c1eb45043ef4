//! Checkpoint and resume: a runner killed with SIGKILL (or stopped with Ctrl-C) mid-plan is
//! continued by `planrun resume`, with contiguous `seq`, every stage's events exactly once, and
//! a valid Parquet file at the end.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::support::{Sandbox, events, events_without_ts, manifest};

const PLAN: &str = r#"
[plan]
name = "multi"
[[phase]]
name = "one"
[[phase.stage]]
name = "a"
driver = "exec"
run = "sleep 0.3; echo a"
[[phase.stage]]
name = "b"
driver = "exec"
run = "sleep 0.3; echo b"
[[phase]]
name = "two"
[[phase.stage]]
name = "c"
driver = "exec"
run = "sleep 0.3; echo c"
repeat = 3
[[phase.stage]]
name = "d"
driver = "exec"
run = "sleep 0.3; echo d"
"#;

/// Wait (bounded) until the newest run's manifest shows `n` passed stages.
fn wait_for_passed(out: &Path, n: usize) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "runner never reached {n} passed stages");
        if let Some(dir) = std::fs::read_dir(out).ok().and_then(|mut d| d.next()).and_then(|e| e.ok()).map(|e| e.path())
        {
            if let Ok(text) = std::fs::read_to_string(dir.join("manifest.json")) {
                if let Ok(m) = serde_json::from_str::<serde_json::Value>(&text) {
                    let passed =
                        m["stages"].as_array().map_or(0, |s| s.iter().filter(|s| s["status"] == "passed").count());
                    if passed >= n {
                        return dir;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn check_complete(dir: &Path) {
    let evs = events(dir);
    let seqs: Vec<u64> = evs.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..evs.len() as u64).collect::<Vec<_>>(), "seq not contiguous");
    for stage in ["a", "b", "c", "d"] {
        let starts = evs.iter().filter(|e| e["stage"] == stage && e["name"] == "start").count();
        let ends = evs.iter().filter(|e| e["stage"] == stage && e["name"] == "end" && e["ok"] == true).count();
        assert_eq!((starts, ends), (1, 1), "stage {stage} ran {starts} times / completed {ends} times");
    }
    let execs_c = evs.iter().filter(|e| e["stage"] == "c" && e["kind"] == "exec").count();
    assert_eq!(execs_c, 3);
    let t: Vec<f64> = evs.iter().filter(|e| e["kind"] == "stage").map(|e| e["t_ms"].as_f64().unwrap()).collect();
    assert!(t.windows(2).all(|w| w[0] <= w[1]), "t_ms went backwards across the resume: {t:?}");
    let m = manifest(dir);
    assert_eq!(m["status"], "completed");
    assert!(m["stages"].as_array().unwrap().iter().all(|s| s["status"] == "passed"));
    let df = polars::prelude::ParquetReader::new(std::fs::File::open(dir.join("events.parquet")).unwrap());
    use polars::prelude::SerReader;
    assert_eq!(df.finish().unwrap().height(), evs.len());
}

#[test]
fn resume_after_kill_9_completes_each_stage_once() {
    let sb = Sandbox::new();
    sb.write("multi.toml", PLAN);
    let mut child = sb.cmd(&["run", "multi.toml", "--quiet", "--out", "out"]).spawn().unwrap();
    let dir = wait_for_passed(&sb.path().join("out"), 2);
    // Let stage `c` get going, then kill the runner outright.
    std::thread::sleep(Duration::from_millis(400));
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
    // Simulate a write torn mid-line, as a kill during a write would leave.
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("events.jsonl"))
        .unwrap()
        .write_all(b"{\"seq\":99,\"t_m")
        .unwrap();

    let r = sb.run(&["resume", dir.to_str().unwrap(), "--quiet"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    check_complete(&dir);
    assert_eq!(manifest(&dir)["resumes"], 1);
    assert!(dir.join("events.discarded-1.jsonl").exists(), "the unfinished step's events were not kept aside");
}

#[test]
fn ctrl_c_flushes_records_interrupted_and_resumes() {
    let sb = Sandbox::new();
    sb.write("multi.toml", PLAN);
    let mut child = sb.cmd(&["run", "multi.toml", "--quiet", "--out", "out"]).spawn().unwrap();
    let dir = wait_for_passed(&sb.path().join("out"), 1);
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let m = manifest(&dir);
    assert_eq!(m["status"], "interrupted");
    assert!(dir.join("events.parquet").exists(), "interrupted run must still write its parquet");

    let r = sb.run(&["resume", dir.to_str().unwrap(), "--quiet"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    check_complete(&dir);
}

#[test]
fn finished_runs_are_not_resumable() {
    let sb = Sandbox::new();
    sb.write("p.toml", "[plan]\nname = \"x\"\n[[phase]]\nname = \"p\"\n[[phase.stage]]\nname = \"s\"\ndriver = \"exec\"\nrun = \"true\"\n");
    let r = sb.run(&["run", "p.toml", "--quiet"]);
    assert_eq!(r.code, 0);
    let dir = sb.path().join(r.run_dir());
    let r = sb.run(&["resume", dir.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("already finished (completed)"), "{}", r.stderr);
}

#[test]
fn a_suspended_and_resumed_campaign_matches_an_uninterrupted_one() {
    // The KSI campaign runs in virtual time, so the same seed must give the same events and the
    // same verdict however often it is stopped and resumed: between stages (10m), just before
    // the long game's first checkpoint (33m), and twice inside it (40m, 50m).
    let plan = super::support::repo().join("plans/ksi-10-day.toml");
    let plan = plan.to_str().unwrap();
    let sb = Sandbox::new();
    let whole = sb.run(&["run", plan, "--quiet", "--out", "whole"]);
    assert_eq!(whole.code, 0, "{}", whole.stderr);
    let want = events_without_ts(&sb.path().join(whole.run_dir()));
    assert!(want.iter().filter(|e| e["kind"] == "checkpoint").count() >= 5);
    for at in ["10m", "33m", "40m", "50m"] {
        let out = format!("cut-{at}");
        let first = sb.run(&["run", plan, "--quiet", "--out", &out, "--suspend-after", at]);
        assert_eq!(first.code, 130, "suspended at {at}: {}", first.stderr);
        let dir = sb.path().join(first.run_dir());
        let mut code = 130;
        for _ in 0..5 {
            if code != 130 {
                break;
            }
            code = sb.run(&["resume", dir.to_str().unwrap(), "--quiet"]).code;
        }
        assert_eq!(code, 0, "resumed after {at}");
        assert_eq!(manifest(&dir)["status"], "completed");
        let got = events_without_ts(&dir);
        let first_diff = want.iter().zip(&got).position(|(a, b)| a != b);
        assert!(
            got.len() == want.len() && first_diff.is_none(),
            "suspended at {at}: {} events against {}; first difference at {first_diff:?}: {:?} vs {:?}",
            got.len(),
            want.len(),
            first_diff.map(|i| &want[i]),
            first_diff.map(|i| &got[i]),
        );
        let verdict = |d: &Path| -> serde_json::Value {
            let r: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(d.join("report.json")).unwrap()).unwrap();
            r["verdict"].clone()
        };
        assert_eq!(verdict(&dir)["pass"], verdict(&sb.path().join(whole.run_dir()))["pass"]);
    }
}

#[test]
fn a_run_that_stopped_on_an_error_redoes_that_step_on_resume() {
    // `./tool` does not exist yet: the stage cannot start (exit 3). Once it exists, `resume`
    // runs that stage, and the ones after it, instead of finding nothing left to do.
    let sb = Sandbox::new();
    sb.write(
        "p.toml",
        "[plan]\nname = \"x\"\n[[phase]]\nname = \"p\"\n[[phase.stage]]\nname = \"a\"\ndriver = \"exec\"\nrun = \"true\"\n[[phase.stage]]\nname = \"b\"\ndriver = \"exec\"\ncmd = \"./tool\"\n[[phase.stage]]\nname = \"c\"\ndriver = \"exec\"\nrun = \"true\"\n",
    );
    let r = sb.run(&["run", "p.toml", "--quiet", "--no-analyze"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let dir = sb.path().join(r.run_dir());
    assert_eq!(manifest(&dir)["status"], "error");
    let tool = sb.write("tool", "#!/bin/sh\nexit 0\n");
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let r = sb.run(&["resume", dir.to_str().unwrap(), "--quiet"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let m = manifest(&dir);
    assert_eq!(m["status"], "completed");
    let statuses: Vec<&str> = m["stages"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["passed", "passed", "passed"]);
    // Each stage's events once: the failed attempt's were set aside.
    let ends = events(&dir).iter().filter(|e| e["kind"] == "stage" && e["name"] == "end").count();
    assert_eq!(ends, 3);
}
