//! Redis against a real `redis-server` on a loopback port: the fleet over the Redis transport
//! (cycles, faults, crashes, forgeries, keys removed at teardown, a server restarted mid-run),
//! and the stability plan switched to it by one var.

use std::time::Duration;

use serde_json::Value;

use super::support::{Reap, RedisServer, Sandbox, attrs, events, of_kind, repo};

fn fleet_plan(url: &str, fields: &str) -> String {
    format!(
        "[plan]\nname = \"fleet\"\n[[phase]]\nname = \"p\"\n[[phase.stage]]\nname = \"f\"\ndriver = \"fleet\"\n\
         transport = \"{url}\"\nheartbeat = \"50ms\"\n{fields}\n"
    )
}

#[test]
fn the_fleet_cycles_over_redis_and_leaves_no_key() {
    let redis = RedisServer::start();
    let sb = Sandbox::new();
    let text = fleet_plan(
        &redis.url(),
        "agents = 4\ncycles = 3\ninterval = \"200ms\"\nmessages = [\"ping\", \"compute\", \"memory_test\"]\n\
         payload = { compute = { iterations = 1500 }, memory_test = { size = 256 } }\nsample_interval = \"200ms\"",
    );
    let (code, dir, err) = sb.run_plan(&text);
    assert_eq!(code, 0, "{err}");
    let evs = events(&dir);
    assert_eq!(of_kind(&evs, "spawn").iter().filter(|s| s["ok"] == true).count(), 4);
    let cycles = of_kind(&evs, "cycle");
    assert_eq!(
        cycles.iter().map(|c| c["name"].as_str().unwrap()).collect::<Vec<_>>(),
        ["ping", "compute", "memory_test"]
    );
    assert!(cycles.iter().all(|c| c["value"] == 1.0 && c["ok"] == true), "{cycles:?}");
    let responses = of_kind(&evs, "response");
    assert_eq!(responses.len(), 12);
    assert!(responses.iter().all(|r| r["ok"] == true && r["value"].as_f64().unwrap() > 1e6), "agents report their RSS");
    assert!(of_kind(&evs, "protocol_error").is_empty());
    let teardown = of_kind(&evs, "teardown")[0];
    assert_eq!(teardown["ok"], true, "{teardown}");
    assert_eq!(redis.planrun_keys(), Vec::<String>::new(), "keys left after teardown");
}

/// Every file under `dir`, as text.
fn everything_written(dir: &std::path::Path) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            all.push_str(&everything_written(&p));
        } else {
            all.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
        }
    }
    all
}

#[test]
fn a_password_server_is_reached_through_password_env_and_the_password_is_written_nowhere() {
    let pass = "pw-7c1f9e-not-in-any-file";
    let redis = RedisServer::start_with(&["--save", "", "--appendonly", "no", "--requirepass", pass]);
    let sb = Sandbox::new();
    sb.write(
        "f.toml",
        &fleet_plan(
            &redis.url(),
            "agents = 3\ncycles = 2\ninterval = \"200ms\"\npassword_env = \"PLANRUN_TEST_REDIS_PW\"",
        ),
    );
    // Without the variable: a clear error naming it.
    let r = sb.run(&["run", "f.toml", "--quiet", "--no-analyze"]);
    assert_ne!(r.code, 0);
    let said = everything_written(&sb.path().join(r.run_dir()));
    assert!(said.contains("names PLANRUN_TEST_REDIS_PW, which is not set: export PLANRUN_TEST_REDIS_PW="), "{said}");
    // With it: the run passes (so the password reached the server and the agents), and no file
    // the run wrote — events, manifest, report, logs — holds it.
    let out = sb.cmd(&["run", "f.toml", "--quiet"]).env("PLANRUN_TEST_REDIS_PW", pass).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let dir = sb.path().join(String::from_utf8_lossy(&out.stdout).lines().last().unwrap().trim());
    let evs = events(&dir);
    assert_eq!(of_kind(&evs, "cycle").iter().filter(|c| c["value"] == 1.0).count(), 2, "{evs:?}");
    let written = everything_written(&dir);
    assert!(written.contains("PLANRUN_TEST_REDIS_PW"), "the manifest names the variable");
    assert!(!written.contains(pass), "the password is in a file under the run directory");
    assert!(!stderr.contains(pass) && !String::from_utf8_lossy(&out.stdout).contains(pass));
    assert_eq!(redis.planrun_keys(), Vec::<String>::new());
}

#[test]
fn kept_keys_show_the_stage_namespace_and_heartbeats_with_a_ttl() {
    let redis = RedisServer::start();
    let sb = Sandbox::new();
    let (code, dir, err) =
        // A 1 s heartbeat: the keys' TTL (5 heartbeats) outlasts planrun's exit on a loaded machine.
        sb.run_plan(&fleet_plan(&redis.url(), "agents = 2\ncycles = 1\ninterval = \"100ms\"\nkeep = true").replace("\"50ms\"", "\"1s\""));
    assert_eq!(code, 0, "{err}");
    let run_id = dir.file_name().unwrap().to_str().unwrap().to_string();
    let keys = redis.planrun_keys();
    let prefix = format!("planrun:{run_id}:p:f:");
    assert!(keys.iter().all(|k| k.starts_with(&prefix)), "{keys:?} not under {prefix}");
    for a in ["agent-1", "agent-2"] {
        let hb = format!("{prefix}hb:{a}");
        assert!(keys.contains(&hb), "{keys:?}");
        let ttl: i64 = redis.cli(&["PTTL", &hb]).trim().parse().unwrap();
        assert!(ttl > 0, "heartbeat key {hb} has no TTL ({ttl})");
    }
    let teardown = of_kind(&events(&dir), "teardown")[0].clone();
    assert_eq!(attrs(&teardown)["kept"], true);
    assert!(attrs(&teardown)["files_left"].as_u64().unwrap() >= 2, "{teardown}");
}

#[test]
fn crashes_restarts_and_kill_faults_over_redis() {
    let redis = RedisServer::start();
    let sb = Sandbox::new();
    let text = fleet_plan(
        &redis.url(),
        "agents = 3\ncycles = 8\ninterval = \"250ms\"\nresponse_timeout = \"1s\"\nrestart = \"on-crash\"\n\
         restart_backoff = \"50ms\"\nmisbehave = { agents = [\"agent-2\"], crash_after = 2 }\n\
         fault = [{ at = \"600ms\", agents = [\"agent-3\"], kill = 1, signal = \"KILL\" }]",
    );
    let (code, dir, err) = sb.run_plan(&text);
    assert_eq!(code, 0, "{err}");
    let evs = events(&dir);
    let crashes = of_kind(&evs, "crash");
    assert!(crashes.iter().any(|c| c["agent"] == "agent-2" && c["status"] == 3), "{crashes:?}");
    assert!(crashes.iter().any(|c| c["agent"] == "agent-3" && c["error"] == "killed by signal 9"), "{crashes:?}");
    let restarted = of_kind(&evs, "spawn")
        .into_iter()
        .filter(|s| s["ok"] == true && attrs(s)["restarts"].as_u64().unwrap() > 0)
        .count();
    assert!(restarted >= 2, "restarted agents heartbeat again over redis");
    assert_eq!(of_kind(&evs, "cycle").len(), 8);
    assert_eq!(of_kind(&evs, "cycle").last().unwrap()["value"], 1.0, "every agent answers the last cycle");
    assert_eq!(redis.planrun_keys(), Vec::<String>::new());
}

#[test]
fn forged_and_garbled_answers_over_redis_are_protocol_errors() {
    // agent-1 writes garbage; agent-2 answers in agent-3's name; agent-3 is silent. An entry
    // written by hand with redis-cli lacks a body.
    let redis = RedisServer::start();
    let sb = Sandbox::new();
    let text = fleet_plan(
        &redis.url(),
        &format!(
            "agents = 3\ncycles = 2\ninterval = \"200ms\"\nresponse_timeout = \"400ms\"\ncommand = [\"sh\", \"-c\", \
             'case \"$PLANRUN_AGENT_ID\" in agent-1) exec \"$0\" --garbage ;; agent-2) exec \"$0\" --impersonate agent-3 ;; \
             *) redis-cli -u \"$PLANRUN_TRANSPORT\" XADD \"$PLANRUN_REDIS_PREFIX:incoming\" \"*\" kind response agent x >/dev/null; \
             exec \"$0\" --silent ;; esac', \"{}\"]",
            env!("CARGO_BIN_EXE_planrun-agent")
        ),
    );
    let (code, dir, err) = sb.run_plan(&text);
    assert_eq!(code, 0, "{err}");
    let evs = events(&dir);
    let responses = of_kind(&evs, "response");
    assert_eq!(responses.len(), 6);
    assert!(responses.iter().all(|r| r["ok"] == false && r["error"] == "timeout"), "{responses:?}");
    let errors = of_kind(&evs, "protocol_error");
    let said = |agent: &str, what: &str| {
        errors.iter().filter(|e| e["agent"] == agent && e["error"].as_str().unwrap().contains(what)).count()
    };
    assert_eq!(said("agent-1", "invalid response JSON"), 2, "{errors:?}");
    assert_eq!(said("agent-3", "not its own"), 2, "{errors:?}");
    assert_eq!(said("x", "without a `body`"), 1, "{errors:?}");
}

#[test]
fn a_redis_restart_mid_run_is_retried_reported_and_survived() {
    let mut redis = RedisServer::start();
    let sb = Sandbox::new();
    sb.write(
        "f.toml",
        &fleet_plan(
            &redis.url(),
            "agents = 2\ncycles = 16\ninterval = \"250ms\"\nresponse_timeout = \"200ms\"\nmissed_heartbeats = 100",
        ),
    );
    let child =
        sb.cmd(&["run", "f.toml", "--quiet", "--no-analyze"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut child = Reap(vec![child]);
    // Wait until both agents heartbeat over this server, then take it away mid-run.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while redis.planrun_keys().iter().filter(|k| k.contains(":hb:")).count() < 2 {
        assert!(std::time::Instant::now() < until, "the agents never heartbeated");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    redis.kill();
    std::thread::sleep(Duration::from_millis(800));
    redis.restart();
    let out = child.0.remove(0).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "the stage survives a lost server");
    let dir = sb.path().join(String::from_utf8_lossy(&out.stdout).lines().last().unwrap().trim());
    let evs = events(&dir);
    let warnings: Vec<String> = of_kind(&evs, "warning")
        .iter()
        .filter(|w| w["name"] == "transport")
        .map(|w| w["error"].as_str().unwrap().to_string())
        .collect();
    assert!(warnings.iter().any(|w| w.contains("lost the redis connection")), "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("restored after")), "{warnings:?}");
    let cycles = of_kind(&evs, "cycle");
    assert_eq!(cycles.len(), 16);
    assert!(cycles.iter().any(|c| c["value"] != 1.0), "some cycle fell in the outage");
    assert_eq!(cycles.last().unwrap()["value"], 1.0, "the fleet answers again after the restart: {cycles:?}");
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let sb = Sandbox::new();
    let (code, dir, _) = sb
        .run_plan(&fleet_plan(&format!("redis://127.0.0.1:{port}/0"), "agents = 1\ncycles = 1\ninterval = \"100ms\""));
    assert_eq!(code, 3);
    let m = super::support::manifest(&dir);
    let msg = m["stages"][0]["message"].as_str().unwrap();
    assert!(msg.contains("cannot connect") && msg.contains("redis-server"), "{msg}");
}

#[test]
fn an_unknown_transport_is_refused_where_it_is_written() {
    let sb = Sandbox::new();
    sb.write("f.toml", &fleet_plan("tcp://x", "agents = 1\ncycles = 1\ninterval = \"100ms\""));
    let r = sb.run(&["run", "f.toml", "--quiet"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("unknown transport `tcp://x`") && r.stderr.contains("f.toml:8:"), "{}", r.stderr);
    // A password in the plan would land in manifest.json: refused, pointing at password_env.
    sb.write("f.toml", &fleet_plan("redis://:hunter2@127.0.0.1:1/0", "agents = 1\ncycles = 1\ninterval = \"100ms\""));
    let r = sb.run(&["run", "f.toml", "--quiet"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("password_env") && r.stderr.contains("f.toml:8:"), "{}", r.stderr);
}

#[test]
fn the_stability_plan_runs_unchanged_over_redis() {
    let redis = RedisServer::start();
    let sb = Sandbox::new();
    let plan = repo().join("plans/stability-50.toml");
    let set = format!("transport={}", redis.url());
    let r =
        sb.run(&["run", plan.to_str().unwrap(), "--profile", "dev", "--time-scale", "0.01", "--set", &set, "--quiet"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let evs = events(&sb.path().join(r.run_dir()));
    assert_eq!(of_kind(&evs, "cycle").len(), 20);
    assert!(of_kind(&evs, "cycle").iter().all(|c| c["value"] == 1.0));
    assert_eq!(redis.planrun_keys(), Vec::<String>::new());
}

fn swarm_plan(fields: &str) -> String {
    format!(
        "[plan]\nname = \"swarms\"\n[[phase]]\nname = \"p\"\n[[phase.stage]]\nname = \"s\"\ndriver = \"swarm\"\n{fields}\n"
    )
}

#[test]
fn the_swarm_plans_quick_profile_checks_every_criterion_and_its_figures_match_the_events() {
    let sb = Sandbox::new();
    let plan = repo().join("plans/redis-swarms.toml");
    let r = sb.run(&["run", plan.to_str().unwrap(), "--profile", "quick", "--quiet"]);
    assert!(r.code == 0 || r.code == 1, "{}", r.stderr);
    let dir = sb.path().join(r.run_dir());
    assert_eq!(super::support::manifest(&dir)["stages"][0]["status"], "passed");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let criteria = report["criteria"].as_array().unwrap();
    for c in criteria {
        let check = c["check"].as_str().unwrap();
        assert_ne!(c["status"], "no_data", "{check} had no data");
        // Throughput and latency are the machine's (a loaded 2-core test run); the rest must hold.
        let timed = check.contains("latency_ms") || check.starts_with("rate(");
        assert!(timed || c["pass"] == true, "{check} failed: {c}");
    }
    // The reported figures, recomputed from events.jsonl.
    let evs = events(&dir);
    let observed = |prefix: &str| {
        criteria.iter().find(|c| c["check"].as_str().unwrap().starts_with(prefix)).unwrap()["observed"]
            .as_f64()
            .unwrap()
    };
    let msgs: Vec<f64> = evs
        .iter()
        .filter(|e| e["kind"] == "message" && e["ok"] == true)
        .map(|e| e["latency_ms"].as_f64().unwrap())
        .collect();
    assert!(msgs.len() > 5000, "{} messages", msgs.len());
    let mean = msgs.iter().sum::<f64>() / msgs.len() as f64;
    assert!((observed("mean(latency_ms where kind == \"message\"") - mean).abs() < 1e-6 * mean.max(1.0));
    let stage: Vec<f64> =
        evs.iter().filter(|e| e["stage"] == "coordination").map(|e| e["t_ms"].as_f64().unwrap()).collect();
    let window_s =
        (stage.iter().cloned().fold(f64::MIN, f64::max) - stage.iter().cloned().fold(f64::MAX, f64::min)) / 1000.0;
    let rate = msgs.len() as f64 / window_s;
    assert!((observed("rate(") - rate).abs() / rate < 0.01, "rate {} vs {rate}", observed("rate("));
    // Every swarm elected at start, and the faults did what they say.
    assert_eq!(of_kind(&evs, "election").iter().filter(|e| e["name"] == "initial" && e["ok"] == true).count(), 20);
    let kills = of_kind(&evs, "fault").iter().filter(|f| f["name"] == "kill_leader").count();
    let reelected =
        of_kind(&evs, "election").iter().filter(|e| e["name"] == "leader_killed" && e["ok"] == true).count();
    assert_eq!((kills, reelected), (2, 2));
    let fenced = of_kind(&evs, "fenced");
    assert!(fenced.iter().any(|f| attrs(f)["accepted"] == false), "a paused leader's write was refused");
    assert!(fenced.iter().all(|f| f["ok"] == true), "{fenced:?}");
    let recovered = of_kind(&evs, "state_recovered");
    assert_eq!(recovered.len(), 20);
    assert!(recovered.iter().all(|s| attrs(s)["found"].as_i64() >= attrs(s)["saved"].as_i64()));
    // Exactly-once relay: each swarm's committed total equals the messages recorded for it.
    let last_saved = |swarm: &str| {
        of_kind(&evs, "state_saved")
            .iter()
            .filter(|s| s["name"] == swarm)
            .map(|s| s["value"].as_f64().unwrap())
            .fold(0.0, f64::max)
    };
    for s in ["swarm-001", "swarm-007", "swarm-020"] {
        let recorded =
            evs.iter().filter(|e| e["kind"] == "message" && e["ok"] == true && e["name"] == s).count() as f64;
        assert!(last_saved(s) <= recorded, "{s}: saved {} > recorded {recorded}", last_saved(s));
    }
}

#[test]
fn state_that_does_not_survive_a_restart_is_reported_not_recovered() {
    // Without appendonly the restart loses every swarm's state: recovery must say so.
    let sb = Sandbox::new();
    let text = swarm_plan(
        "duration = \"4s\"\nswarms = 4\nagents_per_swarm = 3\nmessage_rate = 20\nlease = \"500ms\"\nstate_every = \"200ms\"\n\
         start_server = { appendonly = false }\nfault = [{ at = \"2s\", restart_redis = \"kill\" }]",
    );
    let (code, dir, err) = sb.run_plan(&text);
    assert_eq!(code, 0, "{err}");
    let evs = events(&dir);
    let recovered = of_kind(&evs, "state_recovered");
    assert_eq!(recovered.len(), 4, "{recovered:?}");
    assert!(recovered.iter().all(|s| s["ok"] == false && attrs(s)["saved"].as_i64().unwrap() > 0), "{recovered:?}");
    // The fence counter was lost with the data, so tokens start again at 1; the lease check
    // still refuses the old leaders, and no swarm is left (or reported) leaderless.
    assert!(of_kind(&evs, "fenced").iter().all(|f| f["ok"] == true), "{:?}", of_kind(&evs, "fenced"));
    assert!(of_kind(&evs, "election").iter().all(|e| e["ok"] == true), "{:?}", of_kind(&evs, "election"));
    let restart = of_kind(&evs, "fault").into_iter().find(|f| f["name"] == "restart_redis").unwrap().clone();
    assert_eq!(attrs(&restart)["signal"], "KILL");
}

#[test]
fn a_swarm_stage_uses_a_server_it_is_given_and_leaves_no_key() {
    let redis = RedisServer::start();
    let sb = Sandbox::new();
    let text = swarm_plan(&format!(
        "duration = \"2s\"\nswarms = 3\nagents_per_swarm = 2\nmessage_rate = 10\nlease = \"400ms\"\nserver = \"{}\"",
        redis.url()
    ));
    let (code, dir, err) = sb.run_plan(&text);
    assert_eq!(code, 0, "{err}");
    let evs = events(&dir);
    assert_eq!(of_kind(&evs, "swarm").iter().filter(|s| s["ok"] == true).count(), 3);
    assert!(of_kind(&evs, "message").len() > 50);
    assert_eq!(of_kind(&evs, "teardown")[0]["ok"], true);
    assert_eq!(redis.planrun_keys(), Vec::<String>::new());
}

#[test]
fn a_swarm_stage_without_a_server_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let sb = Sandbox::new();
    let (code, dir, _) =
        sb.run_plan(&swarm_plan(&format!("duration = \"1s\"\nswarms = 1\nserver = \"redis://127.0.0.1:{port}/0\"")));
    assert_eq!(code, 3);
    let msg = super::support::manifest(&dir)["stages"][0]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("cannot connect") && msg.contains("redis-server"), "{msg}");
    // A restart fault needs a server the stage started.
    sb.write("g.toml", &swarm_plan("duration = \"1s\"\nswarms = 1\nserver = \"redis://127.0.0.1:1/0\"\nfault = [{ at = \"0s\", restart_redis = true }]"));
    let r = sb.run(&["run", "g.toml", "--quiet"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("add `start_server = {}`") && r.stderr.contains("g.toml:"), "{}", r.stderr);
}

#[test]
fn agents_started_by_hand_join_a_running_stage() {
    let redis = RedisServer::start();
    let sb = Sandbox::new();
    sb.write(
        "f.toml",
        &fleet_plan(
            &redis.url(),
            "agents = 1\nexpected_agents = 2\njoin = \"soak-a\"\njoin_timeout = \"30s\"\ncycles = 3\ninterval = \"300ms\"\nresponse_timeout = \"2s\"",
        ),
    );
    let runner =
        sb.cmd(&["run", "f.toml", "--quiet", "--no-analyze"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    // Two agents "on other machines" (here: processes the stage did not start), and a third
    // that the full stage refuses.
    let agent = |id: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_planrun-agent"))
            .args([
                "--transport",
                &redis.url(),
                "--join",
                "soak-a",
                "--id",
                id,
                "--join-timeout",
                "20",
                "--heartbeat-ms",
                "100",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut procs = Reap(vec![runner, agent("remote-a"), agent("remote-b")]);
    // The duplicate asks once the first remote-a is in.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while !redis.planrun_keys().iter().any(|k| k.ends_with(":hb:remote-a")) {
        assert!(std::time::Instant::now() < until, "remote-a never joined");
        std::thread::sleep(Duration::from_millis(20));
    }
    procs.0.push(
        std::process::Command::new(env!("CARGO_BIN_EXE_planrun-agent"))
            .args(["--transport", &redis.url(), "--join", "soak-a", "--id", "remote-a", "--join-timeout", "20"])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let runner = procs.0.remove(0);
    let out = runner.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // Joined agents stop when the stage tells them to; the duplicate gives up with a reason.
    for c in procs.0.iter_mut().take(2) {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = c.try_wait().unwrap() {
                break s;
            }
            assert!(std::time::Instant::now() < until, "a joined agent kept running after the stage");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(0));
    }
    let dup = procs.0.remove(2).wait_with_output().unwrap();
    assert_eq!(dup.status.code(), Some(3));
    let said = String::from_utf8_lossy(&dup.stderr);
    assert!(said.contains("refused `remote-a`") && said.contains("is in use"), "{said}");
    let dir = sb.path().join(String::from_utf8_lossy(&out.stdout).lines().last().unwrap().trim());
    let evs = events(&dir);
    let joins = of_kind(&evs, "join");
    assert!(joins.iter().any(|j| j["name"] == "expected" && j["ok"] == true && j["value"] == 2.0), "{joins:?}");
    for id in ["remote-a", "remote-b"] {
        assert!(of_kind(&evs, "spawn").iter().any(|s| s["agent"] == id && s["ok"] == true), "{id} never heartbeated");
    }
    assert!(of_kind(&evs, "protocol_error").iter().any(|e| e["error"].as_str().unwrap().contains("is in use")));
    let cycles = of_kind(&evs, "cycle");
    assert_eq!(cycles.len(), 3);
    assert!(cycles.iter().all(|c| c["value"] == 1.0 && attrs(c)["sent"] == 3), "{cycles:?}");
    assert_eq!(of_kind(&evs, "teardown")[0]["ok"], true);
    assert_eq!(redis.planrun_keys(), Vec::<String>::new(), "the join key and the stage's keys are gone");
}

#[test]
fn workers_on_other_hosts_take_shares_and_a_lost_one_is_reported() {
    let redis = RedisServer::start();
    let sb = Sandbox::new();
    let worker = |name: &str| {
        std::process::Command::new(super::support::bin())
            .args(["worker", "--join", &redis.url(), "--name", name, "--jobs", "1"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut procs = Reap(vec![worker("wa"), worker("wb")]);
    sb.write(
        "f.toml",
        &fleet_plan(
            &redis.url(),
            "agents = 0\nexpected_agents = 5\nworkers = 2\njoin = \"shares\"\njoin_timeout = \"30s\"\ncycles = 25\n\
             interval = \"400ms\"\nresponse_timeout = \"1s\"\nheartbeat = \"100ms\"",
        )
        .replace("heartbeat = \"50ms\"\n", ""),
    );
    procs.0.push(
        sb.cmd(&["run", "f.toml", "--quiet", "--no-analyze"]).stdout(std::process::Stdio::piped()).spawn().unwrap(),
    );
    // Once every agent heartbeats, take worker wb (and so its agents) away.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while redis.planrun_keys().iter().filter(|k| k.contains(":hb:")).count() < 5 {
        assert!(std::time::Instant::now() < until, "the workers' agents never heartbeated");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1000));
    let _ = procs.0[1].kill();
    let _ = procs.0[1].wait();
    let runner = procs.0.remove(2);
    let out = runner.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    // The surviving worker's job ends with the stage (its agents got `shutdown`).
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = procs.0[0].try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < until, "worker wa kept running after its job");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    let dir = sb.path().join(String::from_utf8_lossy(&out.stdout).lines().last().unwrap().trim());
    let evs = events(&dir);
    let shares: Vec<(String, f64)> = of_kind(&evs, "worker")
        .iter()
        .filter(|w| w["name"] != "started")
        .map(|w| (w["name"].as_str().unwrap().to_string(), w["value"].as_f64().unwrap()))
        .collect();
    assert_eq!(shares, [("wa".to_string(), 3.0), ("wb".to_string(), 2.0)]);
    for id in ["wa-agent-1", "wa-agent-2", "wa-agent-3", "wb-agent-1", "wb-agent-2"] {
        assert!(of_kind(&evs, "spawn").iter().any(|s| s["agent"] == id && s["ok"] == true), "{id} never heartbeated");
    }
    // Every row about a worker's agent names the worker; each worker's own report came through.
    for e in evs.iter().filter(|e| e["agent"].as_str().is_some_and(|a| a.contains("-agent-"))) {
        let a = e["agent"].as_str().unwrap();
        assert_eq!(e["worker"].as_str(), Some(&a[..2]), "{e}");
    }
    let started: Vec<_> = of_kind(&evs, "worker").into_iter().filter(|w| w["name"] == "started").collect();
    assert_eq!(started.len(), 2, "{started:?}");
    for s in &started {
        let want = if s["worker"] == "wa" { 3.0 } else { 2.0 };
        assert!(s["ok"] == true && s["value"] == want && s["phase"] == "p" && s["stage"] == "f", "{s}");
    }
    let lost = of_kind(&evs, "worker_lost");
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(lost[0]["name"] == "wb" && lost[0]["value"] == 2.0, "{lost:?}");
    assert!(of_kind(&evs, "unresponsive").iter().any(|u| u["agent"].as_str().unwrap().starts_with("wb-")));
    let cycles = of_kind(&evs, "cycle");
    assert_eq!(cycles[0]["value"], 1.0, "{cycles:?}");
    let last = cycles.last().unwrap();
    assert_eq!(attrs(last)["received"], 3, "only wa's agents answer at the end: {last}");
}

fn worker(url: &str, name: &str, jobs: u32) -> std::process::Child {
    std::process::Command::new(super::support::bin())
        .args(["worker", "--join", url, "--name", name, "--jobs", &jobs.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn http_plan(demo: &str, redis: &str, fields: &str) -> String {
    format!(
        "[plan]\nname = \"spread\"\n[[phase]]\nname = \"p\"\n[[phase.stage]]\nname = \"load\"\ndriver = \"http\"\n\
         host = \"{demo}\"\nworkers = {{ count = 2, redis = \"{redis}\", timeout = \"20s\" }}\n{fields}\n\
         [[phase.stage.task]]\nmethod = \"POST\"\npath = \"/api/chat\"\njson = true\nbody = '{{\"message\": \"hi\"}}'\n\
         check = {{ status = 200 }}\n"
    )
}

#[test]
fn an_http_stage_spreads_its_users_over_workers_and_their_rows_come_back_named() {
    let redis = RedisServer::start();
    let demo = super::http::Demo::start(&["--latency-scale", "0.05"]);
    let sb = Sandbox::new();
    let _workers = Reap(vec![worker(&redis.url(), "wa", 1), worker(&redis.url(), "wb", 1)]);
    sb.write(
        "h.toml",
        &http_plan(
            &demo.url,
            &redis.url(),
            "users = 5\nduration = \"2s\"\nwait = { constant = \"20ms\" }\n\
             criteria = ['count(where kind == \"http\" and worker == \"wb\" and ok) > 20']",
        ),
    );
    let ran = sb.run(&["run", "h.toml", "--quiet"]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let dir = sb.path().join(ran.run_dir());
    let evs = events(&dir);
    let shares: Vec<(String, f64, String)> = of_kind(&evs, "worker")
        .iter()
        .map(|w| (w["name"].as_str().unwrap().into(), w["value"].as_f64().unwrap(), w["unit"].as_str().unwrap().into()))
        .collect();
    assert_eq!(shares, [("wa".into(), 3.0, "users".into()), ("wb".into(), 2.0, "users".into())]);
    let http = of_kind(&evs, "http");
    assert!(http.len() > 50, "{} requests", http.len());
    let mut users = std::collections::BTreeMap::<&str, std::collections::BTreeSet<&str>>::new();
    for e in &http {
        assert!(e["phase"] == "p" && e["stage"] == "load" && e["driver"] == "http" && e["ok"] == true, "{e}");
        let (w, a) = (e["worker"].as_str().unwrap(), e["agent"].as_str().unwrap());
        assert!(a.starts_with(&format!("{w}-u")), "{e}");
        users.entry(w).or_default().insert(a);
    }
    assert_eq!(users["wa"].len(), 3, "{users:?}");
    assert_eq!(users["wb"].len(), 2, "{users:?}");
    // The rows continue the run's clock: inside the stage's window.
    let (start, end) = {
        let st = of_kind(&evs, "stage");
        (st[0]["t_ms"].as_f64().unwrap(), st.last().unwrap()["t_ms"].as_f64().unwrap())
    };
    for e in &http {
        let t = e["t_ms"].as_f64().unwrap();
        assert!(t > start && t < end, "{t} outside {start}..{end}");
    }
    // Nothing of the stage is left on the server; the workers have finished their one job.
    let left: Vec<String> = redis.planrun_keys().into_iter().filter(|k| !k.starts_with("planrun:worker:")).collect();
    assert!(left.is_empty(), "{left:?}");
    // The analysis (over events.parquet) reads the worker column as the log has it.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let wb = http.iter().filter(|e| e["worker"] == "wb").count() as f64;
    assert_eq!(report["criteria"][0]["observed"].as_f64(), Some(wb), "{}", report["criteria"]);
}

#[test]
fn a_worker_lost_mid_stage_fails_the_http_stage_and_keeps_its_rows() {
    let redis = RedisServer::start();
    let demo = super::http::Demo::start(&["--latency-scale", "0.05"]);
    let sb = Sandbox::new();
    let mut procs = Reap(vec![worker(&redis.url(), "wa", 1), worker(&redis.url(), "wb", 1)]);
    sb.write(
        "h.toml",
        &http_plan(&demo.url, &redis.url(), "users = 4\nduration = \"4s\"\nwait = { constant = \"20ms\" }"),
    );
    procs.0.push(
        sb.cmd(&["run", "h.toml", "--quiet", "--no-analyze"]).stdout(std::process::Stdio::piped()).spawn().unwrap(),
    );
    // Once wb's share is under way (its stage key exists and it is busy), take it away.
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !redis.cli(&["GET", "planrun:worker:wb"]).contains("\"busy\":true") {
        assert!(std::time::Instant::now() < until, "worker wb never took its job");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let _ = procs.0[1].kill();
    let _ = procs.0[1].wait();
    let runner = procs.0.remove(2);
    let out = runner.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(0), "a stage that lost a worker does not pass");
    let dir = sb.path().join(String::from_utf8_lossy(&out.stdout).lines().last().unwrap().trim());
    let evs = events(&dir);
    let lost = of_kind(&evs, "worker_lost");
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(lost[0]["name"] == "wb" && lost[0]["worker"] == "wb" && lost[0]["value"] == 2.0, "{lost:?}");
    let http = of_kind(&evs, "http");
    assert!(http.iter().any(|e| e["worker"] == "wb"), "wb's rows before it was lost are kept");
    assert!(http.iter().any(|e| e["worker"] == "wa"));
    let end = of_kind(&evs, "stage").into_iter().find(|s| s["name"] == "end").unwrap().clone();
    assert!(end["error"].as_str().unwrap().contains("worker wb: lost mid-stage"), "{end}");
}

#[test]
fn an_http_stage_without_enough_workers_says_how_to_start_them() {
    let redis = RedisServer::start();
    let demo = super::http::Demo::start(&[]);
    let sb = Sandbox::new();
    let (code, dir, _) = sb.run_plan(
        &http_plan(&demo.url, &redis.url(), "users = 2\nduration = \"1s\"")
            .replace("timeout = \"20s\"", "timeout = \"300ms\""),
    );
    assert_ne!(code, 0);
    let evs = events(&dir);
    let expected = of_kind(&evs, "worker");
    assert!(expected[0]["error"].as_str().unwrap().contains("planrun worker --join"), "{expected:?}");
    let end = of_kind(&evs, "stage").into_iter().find(|s| s["name"] == "end").unwrap().clone();
    assert!(end["error"].as_str().unwrap().contains("no worker announced itself"), "{end}");
}

#[test]
fn a_stage_that_times_out_stops_its_workers_load() {
    let redis = RedisServer::start();
    let demo = super::http::Demo::start(&["--latency-scale", "0"]);
    let sb = Sandbox::new();
    let mut workers = Reap(vec![worker(&redis.url(), "wa", 1), worker(&redis.url(), "wb", 1)]);
    let (code, dir, _) = sb.run_plan(&http_plan(
        &demo.url,
        &redis.url(),
        "users = 2\nduration = \"60s\"\ntimeout = \"2s\"\ngraceful_stop = \"500ms\"\nwait = { constant = \"50ms\" }",
    ));
    assert_ne!(code, 0);
    // Both workers saw their stage end and stopped their share at once (within their graceful
    // stop and a few polls), then exited after their one job.
    let ended = std::time::Instant::now();
    for w in &mut workers.0 {
        while w.try_wait().unwrap().is_none() {
            assert!(ended.elapsed() < Duration::from_secs(3), "a worker kept loading after its stage timed out");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let evs = events(&dir);
    let stage_end = of_kind(&evs, "stage").last().unwrap()["t_ms"].as_f64().unwrap();
    let last_http = of_kind(&evs, "http").iter().map(|e| e["t_ms"].as_f64().unwrap()).fold(0.0, f64::max);
    assert!(
        last_http > 1000.0 && last_http < 3500.0,
        "requests went on until {last_http} ms (stage ended at {stage_end})"
    );
    assert_eq!(redis.planrun_keys().iter().filter(|k| !k.starts_with("planrun:worker:")).count(), 0);
}
