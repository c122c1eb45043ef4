//! The `fleet` driver with real agent processes on this machine: the built-in agent, the Python
//! example agent, protocol violations, crashes, faults, and no orphans after a SIGKILLed runner.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::support::{Sandbox, events, of_kind, repo};

fn fleet_plan(coord: &Path, fields: &str) -> String {
    format!(
        "[plan]\nname = \"fleet\"\n[[phase]]\nname = \"p\"\n[[phase.stage]]\nname = \"f\"\ndriver = \"fleet\"\ncoord_dir = \"{}\"\nheartbeat = \"50ms\"\n{fields}\n",
        coord.display()
    )
}

#[test]
fn builtin_agents_cycle_and_clean_up() {
    let sb = Sandbox::new();
    let coord = sb.path().join("coord");
    let text = fleet_plan(
        &coord,
        "agents = 4\ncycles = 3\ninterval = \"200ms\"\nmessages = [\"ping\", \"compute\", \"memory_test\"]\npayload = { compute = { iterations = 1500 }, memory_test = { size = 256 } }\nsample_interval = \"200ms\"",
    );
    let (code, dir, err) = sb.run_plan(&text);
    assert_eq!(code, 0, "{err}");
    let evs = events(&dir);
    assert_eq!(of_kind(&evs, "spawn").len(), 4);
    assert!(of_kind(&evs, "spawn").iter().all(|s| s["ok"] == true && s["latency_ms"].as_f64().unwrap() > 0.0));
    let cycles = of_kind(&evs, "cycle");
    assert_eq!(
        cycles.iter().map(|c| c["name"].as_str().unwrap()).collect::<Vec<_>>(),
        ["ping", "compute", "memory_test"]
    );
    assert!(cycles.iter().all(|c| c["value"] == 1.0 && c["ok"] == true));
    let responses = of_kind(&evs, "response");
    assert_eq!(responses.len(), 12);
    assert!(
        responses.iter().all(|r| r["unit"] == "bytes" && r["value"].as_f64().unwrap() > 1e6),
        "agents report their RSS"
    );
    assert!(evs.iter().any(|e| e["name"] == "runner_rss_bytes"));
    assert!(evs.iter().any(|e| e["name"] == "agent_rss_bytes" && e["agent"].is_string()));
    let teardown = of_kind(&evs, "teardown")[0];
    assert_eq!(teardown["ok"], true, "{teardown}");
    assert!(!coord.exists(), "the coordination directory was not removed");
}

#[test]
fn planrun_agent_subcommand_is_the_same_agent() {
    // The driver starts `planrun-agent`; `planrun agent` (used when that binary is missing, or
    // named as a command) must behave the same, configured by the environment alone.
    let sb = Sandbox::new();
    let coord = sb.path().join("coord");
    let text = fleet_plan(
        &coord,
        &format!(
            "agents = 2\ncycles = 2\ninterval = \"200ms\"\nmessages = [\"ping\"]\ncommand = [\"{}\", \"agent\"]",
            super::support::bin()
        ),
    );
    let (code, dir, err) = sb.run_plan(&text);
    assert_eq!(code, 0, "{err}");
    let evs = events(&dir);
    assert_eq!(of_kind(&evs, "spawn").iter().filter(|s| s["ok"] == true).count(), 2);
    assert_eq!(of_kind(&evs, "response").len(), 4);
    let cycles = of_kind(&evs, "cycle");
    assert_eq!(cycles.len(), 2);
    assert!(cycles.iter().all(|c| c["value"] == 1.0 && c["ok"] == true), "{cycles:?}");
}

#[test]
fn python_example_agent_speaks_the_protocol() {
    let sb = Sandbox::new();
    let coord = sb.path().join("coord");
    let agent = repo().join("examples/agent.py");
    let text = fleet_plan(
        &coord,
        &format!(
            "agents = 3\ncycles = 3\ninterval = \"300ms\"\nresponse_timeout = \"5s\"\nstartup_timeout = \"20s\"\ncommand = [\"python3\", \"{}\"]\nmessages = [\"ping\", \"compute\", \"custom\"]\npayload = {{ compute = {{ iterations = 1500 }}, custom = {{ hello = \"world\" }} }}",
            agent.display()
        ),
    );
    let (code, dir, err) = sb.run_plan(&text);
    assert_eq!(code, 0, "{err}");
    let evs = events(&dir);
    assert_eq!(of_kind(&evs, "spawn").iter().filter(|s| s["ok"] == true).count(), 3);
    let cycles = of_kind(&evs, "cycle");
    assert_eq!(cycles.len(), 3);
    assert!(cycles.iter().all(|c| c["value"] == 1.0), "{cycles:?}");
    assert!(of_kind(&evs, "protocol_error").is_empty());
    assert!(of_kind(&evs, "crash").is_empty(), "python agents exited before teardown");
}

#[test]
fn protocol_violations_are_errors_not_crashes() {
    let sb = Sandbox::new();
    let coord = sb.path().join("coord");
    // An agent that heartbeats, then answers every message with a symlink (to a file of the
    // test's own), an oversized file, a response to an unknown message id, one without its
    // token, and garbage — never a valid response.
    let target = sb.write("target.json", "the symlink's target");
    let bad = sb.write(
        "bad_agent.py",
        r#"
import json, os, sys, time
TARGET = sys.argv[1]
A, R, T = os.environ["PLANRUN_AGENT_ID"], os.environ["PLANRUN_COORD_DIR"], os.environ["PLANRUN_AGENT_TOKEN"]
def put(name, data):
    tmp = os.path.join(R, "responses", "." + name)
    open(tmp, "w").write(data)
    os.rename(tmp, os.path.join(R, "responses", name))
seen = set()
while True:
    st = {"agentId": A, "pid": os.getpid(), "timestamp": 0, "uptime": 0, "memory": {"rss": 1}, "coordinationCount": 0, "errorCount": 0, "token": T}
    put_dir = os.path.join(R, "status")
    open(os.path.join(put_dir, ".s"), "w").write(json.dumps(st)); os.rename(os.path.join(put_dir, ".s"), os.path.join(put_dir, A + ".json"))
    for m in os.listdir(os.path.join(R, "messages")):
        if m.startswith(".") or m in seen: continue
        seen.add(m)
        mid = m[:-5]
        os.symlink(TARGET, os.path.join(R, "responses", A + "--link.json"))
        put(A + "--big.json", "x" * (2 << 20))
        put(A + "--" + mid + "x.json", json.dumps({"agentId": A, "messageId": "no-such-id", "timestamp": 0, "processingTime": 1, "coordinationCount": 1, "errorCount": 0, "uptime": 1, "memory": {"rss": 1}, "token": T}))
        put(A + "--" + mid + "-notoken.json", json.dumps({"agentId": A, "messageId": mid, "timestamp": 0, "processingTime": 1, "coordinationCount": 1, "errorCount": 0, "uptime": 1, "memory": {"rss": 1}}))
        put(A + "--" + mid + ".json", "{ garbage")
    time.sleep(0.05)
"#,
    );
    let text = fleet_plan(
        &coord,
        &format!(
            "agents = 1\ncycles = 1\ninterval = \"100ms\"\nresponse_timeout = \"1500ms\"\nkeep = true\ncommand = [\"python3\", \"{}\", \"{}\"]",
            bad.display(),
            target.display()
        ),
    );
    let started = Instant::now();
    let (code, dir, err) = sb.run_plan(&text);
    assert_eq!(code, 0, "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let evs = events(&dir);
    let errors: Vec<String> =
        of_kind(&evs, "protocol_error").iter().map(|e| e["error"].as_str().unwrap().to_string()).collect();
    for want in
        ["symlink refused", "refused (limit 1048576)", "unknown message id", "without a token", "invalid response JSON"]
    {
        assert!(errors.iter().any(|e| e.contains(want)), "no `{want}` in {errors:?}");
    }
    let timeouts: Vec<_> = of_kind(&evs, "response").into_iter().filter(|r| r["error"] == "timeout").collect();
    assert_eq!(timeouts.len(), 1, "the agent never answered validly");
    assert_eq!(of_kind(&evs, "cycle")[0]["value"], 0.0);
    // The symlink was removed (the directory was kept, so its absence means the coordinator
    // removed it), and never followed: its target is untouched.
    assert!(coord.join("responses").is_dir(), "keep = true keeps the coordination directory");
    assert!(
        std::fs::symlink_metadata(coord.join("responses/agent-1--link.json")).is_err(),
        "the symlink is still there"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "the symlink's target");
}

#[test]
fn an_answer_in_another_agents_name_is_refused() {
    // agent-1 answers every message as agent-2; agent-2 reads messages but never answers. Before
    // responses were bound to their writer, agent-2 showed a success for every cycle.
    let sb = Sandbox::new();
    let coord = sb.path().join("coord");
    let text = fleet_plan(
        &coord,
        &format!(
            "agents = 2\ncycles = 2\ninterval = \"200ms\"\nresponse_timeout = \"500ms\"\ncommand = [\"sh\", \"-c\", 'case \"$PLANRUN_AGENT_ID\" in agent-1) exec \"$0\" --impersonate agent-2 ;; *) exec \"$0\" --silent ;; esac', \"{}\"]",
            env!("CARGO_BIN_EXE_planrun-agent")
        ),
    );
    let (code, dir, err) = sb.run_plan(&text);
    assert_eq!(code, 0, "{err}");
    let evs = events(&dir);
    assert_eq!(of_kind(&evs, "spawn").iter().filter(|s| s["ok"] == true).count(), 2);
    let responses = of_kind(&evs, "response");
    assert_eq!(responses.len(), 4, "{responses:?}");
    assert!(responses.iter().all(|r| r["ok"] == false && r["error"] == "timeout"), "{responses:?}");
    let forged = of_kind(&evs, "protocol_error");
    assert_eq!(forged.len(), 2, "one forgery per cycle: {forged:?}");
    assert!(
        forged.iter().all(|e| e["agent"] == "agent-2" && e["error"].as_str().unwrap().contains("not its own")),
        "{forged:?}"
    );
}

#[test]
fn a_missing_planrun_agent_is_said_out_loud() {
    // What a fresh `cargo build` of only `planrun` leaves: no planrun-agent beside it.
    let sb = Sandbox::new();
    let bin_dir = sb.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    let planrun = bin_dir.join("planrun");
    if std::fs::hard_link(super::support::bin(), &planrun).is_err() {
        std::fs::copy(super::support::bin(), &planrun).unwrap();
    }
    sb.write("f.toml", &fleet_plan(&sb.path().join("coord"), "agents = 1\ncycles = 1\ninterval = \"100ms\""));
    let out = std::process::Command::new(&planrun)
        .args(["run", "f.toml", "--no-analyze"])
        .current_dir(sb.path())
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let missing = bin_dir.join("planrun-agent");
    let line = stderr.lines().find(|l| l.contains("warning:")).unwrap_or_else(|| panic!("no warning in:\n{stderr}"));
    assert!(line.contains(&format!("planrun-agent not found at {}", missing.display())), "{line}");
    assert!(line.contains("cargo build --release --bins"), "{line}");
    // Said as it happens, before the stage ends, not only in the stage's closing line.
    let live = stderr.lines().position(|l| l.contains("] warning: ")).unwrap_or_else(|| panic!("{stderr}"));
    let ended = stderr.lines().position(|l| l.contains(" passed (")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(live < ended, "{stderr}");
    let run_dir = sb.path().join(String::from_utf8_lossy(&out.stdout).lines().last().unwrap().trim());
    let evs = events(&run_dir);
    let warnings = of_kind(&evs, "warning");
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0]["name"], "agent_fallback");
    assert_eq!(of_kind(&evs, "cycle")[0]["value"], 1.0, "the agents still work, started as `planrun agent`");
}

#[test]
fn crashes_are_counted_and_restarted() {
    let sb = Sandbox::new();
    let coord = sb.path().join("coord");
    let text = fleet_plan(
        &coord,
        "agents = 2\ncycles = 6\ninterval = \"250ms\"\nresponse_timeout = \"1s\"\nrestart = \"on-crash\"\nrestart_backoff = \"50ms\"\nmisbehave = { agents = [\"agent-2\"], crash_after = 2 }",
    );
    let (code, dir, err) = sb.run_plan(&text);
    assert_eq!(code, 0, "{err}");
    let evs = events(&dir);
    let crashes = of_kind(&evs, "crash");
    assert!(!crashes.is_empty());
    assert!(crashes.iter().all(|c| c["agent"] == "agent-2" && c["status"] == 3), "{crashes:?}");
    assert!(!of_kind(&evs, "restart").is_empty());
    assert!(of_kind(&evs, "spawn").iter().any(|s| s["agent"] == "agent-2"
        && serde_json::from_str::<Value>(s["attrs"].as_str().unwrap()).unwrap()["restarts"].as_u64().unwrap() > 0));
    assert_eq!(of_kind(&evs, "cycle").len(), 6, "the stage went on through the crashes");
}

#[test]
fn kill_and_pause_faults() {
    let sb = Sandbox::new();
    let coord = sb.path().join("coord");
    let text = fleet_plan(
        &coord,
        "agents = 4\ncycles = 8\ninterval = \"200ms\"\nresponse_timeout = \"150ms\"\nmissed_heartbeats = 3\nfault = [{ at = \"300ms\", kill = 1, signal = \"KILL\" }, { at = \"500ms\", pause = 1, for = \"700ms\" }]",
    );
    let (code, dir, err) = sb.run_plan(&text);
    assert_eq!(code, 0, "{err}");
    let evs = events(&dir);
    let faults: Vec<&str> = of_kind(&evs, "fault").iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert!(faults.contains(&"kill") && faults.contains(&"pause") && faults.contains(&"resume"), "{faults:?}");
    let crash = of_kind(&evs, "crash");
    assert_eq!(crash.len(), 1);
    assert_eq!(crash[0]["error"], "killed by signal 9");
    assert!(!of_kind(&evs, "unresponsive").is_empty(), "a paused agent misses its heartbeats");
}

#[test]
fn a_leftover_directory_is_refused_unless_clean() {
    let sb = Sandbox::new();
    let coord = sb.path().join("coord");
    std::fs::create_dir_all(coord.join("messages")).unwrap();
    let text = fleet_plan(&coord, "agents = 1\ncycles = 1\ninterval = \"100ms\"");
    let (code, dir, _) = sb.run_plan(&text);
    assert_eq!(code, 3);
    let m = super::support::manifest(&dir);
    assert!(m["stages"][0]["message"].as_str().unwrap().contains("already exists"), "{m}");
    let (code, _, err) = sb.run_plan(&format!("{text}clean = true\n"));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn no_agent_survives_a_killed_runner() {
    let sb = Sandbox::new();
    let coord = sb.path().join("coord");
    sb.write("f.toml", &fleet_plan(&coord, "agents = 5\ncycles = 100\ninterval = \"1s\""));
    let mut child = sb.cmd(&["run", "f.toml", "--quiet"]).spawn().unwrap();
    // Kills the runner if an assertion below fails, so it never outlives the test.
    struct Reap(i32);
    impl Drop for Reap {
        fn drop(&mut self) {
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
            }
        }
    }
    let _reap = Reap(child.id() as i32);
    // Every agent's pid, from its heartbeat (a file may be mid-rename: read until all five parse).
    let deadline = Instant::now() + Duration::from_secs(30);
    let pids: Vec<i32> = loop {
        let pids: Vec<i32> = std::fs::read_dir(coord.join("status"))
            .into_iter()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .filter_map(|t| serde_json::from_str::<Value>(&t).ok()?["pid"].as_i64())
            .map(|p| p as i32)
            .collect();
        if pids.len() == 5 {
            break pids;
        }
        assert!(Instant::now() < deadline, "agents never started: {pids:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive: Vec<i32> = pids
            .iter()
            .copied()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
            })
            .collect();
        if alive.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "orphan agents still running: {alive:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_removed_coordination_directory_stops_the_stage_at_once() {
    // Each cycle would otherwise wait its full response timeout for answers that cannot come.
    let sb = Sandbox::new();
    let coord = sb.path().join("coord");
    sb.write(
        "f.toml",
        &fleet_plan(&coord, "agents = 3\ncycles = 50\ninterval = \"300ms\"\nresponse_timeout = \"30s\""),
    );
    let mut child =
        sb.cmd(&["run", "f.toml", "--quiet", "--no-analyze"]).stdout(std::process::Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(coord.join("status")).map_or(0, |d| d.count()) < 3 {
        assert!(Instant::now() < deadline, "agents never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_dir_all(&coord).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the runner kept going after its coordination directory was removed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(3));
    let run = std::fs::read_dir(sb.path().join("results")).unwrap().next().unwrap().unwrap().path();
    let log = std::fs::read_to_string(run.join("run.log")).unwrap();
    assert!(log.contains("was removed while the fleet ran"), "{log}");
    // A cycle in flight when the directory went (whether one was is a race with the 250 ms
    // check) ends its missing answers as "not delivered", without waiting out its timeout.
    let evs = events(&run);
    for e in evs.iter().filter(|e| e["kind"] == "response" && e["ok"] == false) {
        assert!(e["error"].as_str().is_some_and(|m| m.starts_with("not delivered")), "{e}");
        assert!(e["latency_ms"].as_f64().unwrap_or(0.0) < 5_000.0, "{e}");
    }
}

#[test]
fn a_killed_fleet_run_resumes_over_its_own_leftover_directory() {
    let sb = Sandbox::new();
    let coord = sb.path().join("coord");
    sb.write("f.toml", &fleet_plan(&coord, "agents = 2\ncycles = 30\ninterval = \"200ms\"\nresponse_timeout = \"5s\""));
    let mut child =
        sb.cmd(&["run", "f.toml", "--quiet", "--no-analyze"]).stdout(std::process::Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(coord.join("status")).map_or(0, |d| d.count()) < 2 {
        assert!(Instant::now() < deadline, "agents never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(coord.join("owner").exists(), "the killed run's directory is left behind");
    let run = std::fs::read_dir(sb.path().join("results")).unwrap().next().unwrap().unwrap().path();
    let r = sb.run(&["resume", run.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("took over"), "{}", r.stderr);
    assert_eq!(super::support::manifest(&run)["status"], "completed");
    assert_eq!(of_kind(&events(&run), "cycle").len(), 30);
    assert!(!coord.exists(), "teardown removed it");
}

#[test]
fn a_directory_someone_else_made_is_refused_not_removed() {
    let sb = Sandbox::new();
    let coord = sb.path().join("coord");
    std::fs::create_dir(&coord).unwrap();
    std::fs::write(coord.join("precious.txt"), "keep me").unwrap();
    let (code, dir, _) = sb.run_plan(&fleet_plan(&coord, "agents = 1\ncycles = 1\ninterval = \"100ms\""));
    assert_eq!(code, 3);
    let m = super::support::manifest(&dir);
    assert!(m["stages"][0]["message"].as_str().unwrap().contains("planrun did not make it"), "{m}");
    assert_eq!(std::fs::read_to_string(coord.join("precious.txt")).unwrap(), "keep me");
}

#[test]
fn a_timed_out_fleet_stage_still_gives_its_agents_their_grace() {
    let sb = Sandbox::new();
    let coord = sb.path().join("coord");
    let text = fleet_plan(&coord, "agents = 3\ncycles = 100\ninterval = \"200ms\"\ntimeout = \"2s\"");
    let (code, dir, err) = sb.run_plan(&text);
    assert_eq!(code, 1, "{err}");
    assert_eq!(super::support::manifest(&dir)["stages"][0]["status"], "timed_out");
    let evs = events(&dir);
    let teardown = of_kind(&evs, "teardown");
    assert_eq!(teardown.len(), 1);
    let attrs: Value = serde_json::from_str(teardown[0]["attrs"].as_str().unwrap()).unwrap();
    assert_eq!(attrs["killed_after_grace"], 0, "agents were sent TERM and given time: {attrs}");
    assert_eq!(attrs["orphans"], 0, "{attrs}");
    assert_eq!(teardown[0]["ok"], true, "{attrs}");
}
