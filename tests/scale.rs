//! Fleet scaling end to end with real agent processes: a schedule (4 → 8 → 3 while cycles run)
//! and the autoscaler (grow on backlog, shrink when idle, within min/max, once per cooldown);
//! new agents' allocation latency under load, scale-downs that leave no process or file, and
//! stopped agents never counted as crashes or lost answers.

use serde_json::Value;

use crate::support::{Sandbox, attrs, events, of_kind};

fn plan(fields: &str) -> String {
    format!(
        "[plan]\nname = \"scale\"\n[[phase]]\nname = \"p\"\n[[phase.stage]]\nname = \"s\"\ndriver = \"fleet\"\n\
         heartbeat = \"200ms\"\nresponse_timeout = \"5s\"\n{fields}\n\
         criteria = [\n  'count(where kind == \"crash\") == 0',\n  'count(where kind == \"protocol_error\") == 0',\n  \
         'count(where kind == \"response\" and not ok) == 0',\n  'count(where kind == \"teardown\" and not ok) == 0',\n]\n"
    )
}

fn run(sb: &Sandbox, text: &str) -> (std::path::PathBuf, Vec<Value>) {
    sb.write("f.toml", text);
    let r = sb.run(&["run", "f.toml", "--quiet", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dir = sb.path().join(r.run_dir());
    let evs = events(&dir);
    (dir, evs)
}

fn gone(pid: u64) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.is_empty() || stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z')
}

#[test]
fn a_schedule_grows_and_shrinks_the_fleet_while_cycles_run_and_leaves_nothing_behind() {
    let sb = Sandbox::new();
    let (_, evs) = run(
        &sb,
        &plan(
            "agents = 4\nbatch_size = 2\ninterval = \"200ms\"\nduration = \"4s\"\nscale = [{ at = \"1s\", agents = 8 }, { at = \"2500ms\", agents = 3 }]",
        ),
    );
    let scale = of_kind(&evs, "scale");
    assert_eq!(scale.len(), 2);
    assert_eq!((attrs(scale[0])["from"].as_u64(), attrs(scale[0])["to"].as_u64()), (Some(4), Some(8)));
    assert_eq!((attrs(scale[1])["from"].as_u64(), attrs(scale[1])["to"].as_u64()), (Some(8), Some(3)));

    // The new agents' allocation, while cycles ran: four spawn rows named "scale".
    let grown: Vec<&Value> = of_kind(&evs, "spawn").into_iter().filter(|e| e["name"] == "scale").collect();
    assert_eq!(grown.len(), 4);
    assert!(grown.iter().all(|e| e["ok"] == true && e["latency_ms"].as_f64().unwrap() > 0.0));
    let t_scale = scale[0]["t_ms"].as_f64().unwrap();
    let cycles_around =
        of_kind(&evs, "cycle").iter().filter(|c| (c["t_ms"].as_f64().unwrap() - t_scale).abs() < 400.0).count();
    assert!(cycles_around >= 2, "cycles went on while the fleet grew");
    let ready = of_kind(&evs, "scale_ready");
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0]["ok"], true);
    assert_eq!(ready[0]["value"], 4.0);

    // Each cycle addressed the fleet of its time: 4, then 8, then 3.
    let sent: Vec<u64> = of_kind(&evs, "cycle").iter().map(|c| attrs(c)["sent"].as_u64().unwrap()).collect();
    let phases: Vec<u64> = sent.iter().fold(Vec::new(), |mut v, s| {
        if v.last() != Some(s) {
            v.push(*s);
        }
        v
    });
    // (A cycle open while agents come up or stop may address some of them: between, in order.)
    let peak = phases.iter().position(|&s| s == 8).unwrap_or_else(|| panic!("never 8: {sent:?}"));
    assert_eq!((phases[0], phases.last().copied()), (4, Some(3)), "{sent:?}");
    assert!(phases[..=peak].windows(2).all(|w| w[0] < w[1]), "up to 8: {sent:?}");
    assert!(phases[peak..].windows(2).all(|w| w[0] > w[1]), "down to 3: {sent:?}");
    assert!(of_kind(&evs, "cycle").iter().all(|c| c["ok"] == true && c["value"] == 1.0));

    // The scale-down's check, and the stopped agents' processes really gone.
    let down: Vec<&Value> = of_kind(&evs, "teardown").into_iter().filter(|e| e["name"] == "scale_down").collect();
    assert_eq!(down.len(), 1);
    assert_eq!(down[0]["ok"], true);
    let a = attrs(down[0]);
    assert_eq!((a["agents"].as_u64(), a["orphans"].as_u64(), a["files_left"].as_u64()), (Some(5), Some(0), Some(0)));
    for e in of_kind(&evs, "spawn") {
        let pid = attrs(e)["pid"].as_u64().unwrap();
        assert!(gone(pid), "agent {} (pid {pid}) is gone", e["agent"]);
    }
    assert!(of_kind(&evs, "crash").is_empty() && of_kind(&evs, "protocol_error").is_empty());
}

#[test]
fn the_autoscaler_grows_on_backlog_and_shrinks_when_idle_within_its_bounds_and_cooldown() {
    let sb = Sandbox::new();
    // Agents take 50 ms a task; 40 tasks a cycle every 500 ms is 4 agents' work; then 4 tasks.
    let (_, evs) = run(
        &sb,
        &plan(
            "agents = 2\ninterval = \"500ms\"\nduration = \"10s\"\nmisbehave = { slow = \"50ms\" }\n\
             autoscale = { min = 2, max = 6, target_backlog = 0.5, cooldown = \"1s\", step = 2, load = [{ at = \"0s\", tasks = 40 }, { at = \"5s\", tasks = 4 }] }",
        ),
    );
    let scale = of_kind(&evs, "scale");
    let ups: Vec<&&Value> = scale.iter().filter(|e| e["name"] == "backlog_high").collect();
    let downs: Vec<&&Value> = scale.iter().filter(|e| e["name"] == "backlog_low").collect();
    assert!(!ups.is_empty(), "the backlog made it grow: {scale:?}");
    assert!(!downs.is_empty(), "the idle fleet shrank: {scale:?}");
    assert!(ups.iter().all(|e| attrs(e)["why"]["backlog"].as_f64().unwrap() > 0.5), "grew only above the target");
    for e in &scale {
        let to = attrs(e)["to"].as_u64().unwrap();
        assert!((2..=6).contains(&to), "within min and max: {e}");
    }
    for w in scale.windows(2) {
        let gap = w[1]["t_ms"].as_f64().unwrap() - w[0]["t_ms"].as_f64().unwrap();
        assert!(gap >= 1000.0, "decisions at least a cooldown apart: {gap} ms");
    }
    // Decisions follow the backlog the cycles measured: the first up comes after a cycle with
    // backlog above target, the first down after the load dropped.
    let backlog = of_kind(&evs, "sample").into_iter().filter(|e| e["name"] == "backlog").collect::<Vec<_>>();
    assert!(backlog.iter().any(|b| b["value"].as_f64().unwrap() > 0.5));
    let first_down = downs[0]["t_ms"].as_f64().unwrap();
    assert!(first_down >= 5000.0, "it shrank once the load dropped at 5 s: {first_down}");
    assert!(of_kind(&evs, "spawn").iter().filter(|e| e["name"] == "scale").count() >= 2);
    let downs_ok = of_kind(&evs, "teardown").iter().filter(|e| e["name"] == "scale_down").all(|e| e["ok"] == true);
    assert!(downs_ok);
    // Every task was answered or dropped with its stopped agent, never lost.
    for c in of_kind(&evs, "cycle") {
        assert_eq!(c["ok"], true, "{c}");
    }
}

#[test]
fn bad_scale_and_autoscale_fields_are_plan_errors_at_the_value() {
    let sb = Sandbox::new();
    let base = "agents = 2\ninterval = \"500ms\"\nduration = \"10s\"\n";
    let cases = [
        ("scale = [{ at = \"20s\", agents = 4 }]", "at or after the stage's end"),
        ("scale = [{ at = \"1s\", agents = 0 }]", "keeps at least one agent"),
        ("scale = [{ at = \"2s\", agents = 4 }, { at = \"1s\", agents = 3 }]", "in time order"),
        (
            "autoscale = { min = 4, max = 2, target_backlog = 1, cooldown = \"1s\", load = [{ at = \"0s\", tasks = 4 }] }",
            "at least 1 and at most `max`",
        ),
        (
            "autoscale = { min = 1, max = 4, target_backlog = -1, cooldown = \"1s\", load = [{ at = \"0s\", tasks = 4 }] }",
            "`target_backlog`",
        ),
        ("scale = [{ at = \"9800ms\", agents = 4 }]", "at or after the last cycle starts"),
        (
            "autoscale = { min = 1, max = 4, target_backlog = 1, cooldown = \"1s\", load = [] }",
            "`load` says how many tasks",
        ),
        (
            "autoscale = { min = 3, max = 4, target_backlog = 1, cooldown = \"1s\", load = [{ at = \"0s\", tasks = 4 }] }",
            "outside autoscale's 3..=4",
        ),
        (
            "scale = [{ at = \"1s\", agents = 3 }]\nautoscale = { min = 1, max = 4, target_backlog = 1, cooldown = \"1s\", load = [{ at = \"0s\", tasks = 4 }] }",
            "not both",
        ),
    ];
    for (fields, want) in cases {
        sb.write("f.toml", &plan(&format!("{base}{fields}")));
        let r = sb.run(&["validate", "f.toml"]);
        assert_eq!(r.code, 2, "{fields}: {}", r.stderr);
        assert!(r.stderr.contains(want), "{fields}: want {want:?} in\n{}", r.stderr);
        assert!(r.stderr.contains("f.toml:"), "{}", r.stderr);
    }
}

#[test]
fn a_fleet_scaled_over_redis_removes_the_stopped_agents_heartbeat_keys() {
    let redis = crate::support::RedisServer::start();
    let sb = Sandbox::new();
    let (_, evs) = run(
        &sb,
        &plan(&format!(
            "transport = \"{}\"\nagents = 3\ninterval = \"200ms\"\nduration = \"3s\"\nscale = [{{ at = \"800ms\", agents = 6 }}, {{ at = \"1800ms\", agents = 2 }}]",
            redis.url()
        )),
    );
    let sent: Vec<u64> = of_kind(&evs, "cycle").iter().map(|c| attrs(c)["sent"].as_u64().unwrap()).collect();
    assert!(sent.contains(&6) && sent.last() == Some(&2), "{sent:?}");
    let down: Vec<&Value> = of_kind(&evs, "teardown").into_iter().filter(|e| e["name"] == "scale_down").collect();
    assert_eq!(down.len(), 1);
    // The check asked the server: the 4 stopped agents' heartbeat keys no longer exist.
    assert_eq!((attrs(down[0])["agents"].as_u64(), attrs(down[0])["files_left"].as_u64()), (Some(4), Some(0)));
    assert_eq!(down[0]["ok"], true);
    assert_eq!(redis.planrun_keys(), Vec::<String>::new(), "nothing of the stage left on the server");
    assert!(of_kind(&evs, "crash").is_empty() && of_kind(&evs, "protocol_error").is_empty());
}

#[test]
fn a_scale_down_during_an_open_cycle_counts_what_the_stopped_agents_answered_and_nothing_false() {
    let sb = Sandbox::new();
    let coord = sb.path().join("coord");
    // The survivors (agent-1..3) are slow, the agents stopped (agent-4..8) answer at once, and
    // the scale-down lands while a cycle waits for the slow ones. The directory is kept, so
    // what the scale-down removed can be checked.
    let (_, evs) = run(
        &sb,
        &plan(&format!(
            "agents = 8\ninterval = \"1s\"\nduration = \"4s\"\ncoord_dir = \"{}\"\nkeep = true\n\
             misbehave = {{ agents = [\"agent-1\", \"agent-2\", \"agent-3\"], slow = \"800ms\" }}\n\
             scale = [{{ at = \"1300ms\", agents = 3 }}]",
            coord.display()
        )),
    );
    for c in of_kind(&evs, "cycle") {
        assert_eq!(c["ok"], true, "{c}");
        assert!(c["value"].as_f64().unwrap() <= 1.0, "never more answers than addressees: {c}");
        let a = attrs(c);
        assert!(a["received"].as_u64() <= a["sent"].as_u64(), "{c}");
    }
    assert!(of_kind(&evs, "response").iter().all(|r| r["ok"] == true), "no false timeouts");
    assert!(of_kind(&evs, "protocol_error").is_empty(), "{:?}", of_kind(&evs, "protocol_error"));
    // Nothing from a stopped agent after the scale-down.
    let down = of_kind(&evs, "teardown").into_iter().find(|e| e["name"] == "scale_down").unwrap();
    let t = down["t_ms"].as_f64().unwrap();
    let victims = ["agent-4", "agent-5", "agent-6", "agent-7", "agent-8"];
    let late: Vec<&Value> = evs
        .iter()
        .filter(|e| e["t_ms"].as_f64().unwrap() > t && victims.iter().any(|v| e["agent"] == *v))
        .filter(|e| e["kind"] != "response" || e["ok"] != true || e["t_ms"].as_f64().unwrap() > t + 50.0)
        .collect();
    assert!(late.is_empty(), "{late:?}");
    // The kept directory: the stopped agents' heartbeat files are gone, the survivors' kept
    // (a survivor stopped at the stage's end mid-write may also leave its temp file: not ours).
    let left: Vec<String> = std::fs::read_dir(coord.join("status"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for v in victims {
        assert!(!left.iter().any(|f| f.contains(&format!("{v}."))), "release removed {v}'s heartbeat: {left:?}");
    }
    for s in ["agent-1.json", "agent-2.json", "agent-3.json"] {
        assert!(left.iter().any(|f| f == s), "{s} kept: {left:?}");
    }
}
