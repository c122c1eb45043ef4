//! The `ws` driver end to end against `planrun serve-demo`'s WebSocket (a real server, its own
//! process, stopped by pid): echoes timed per message, metrics pushes, pings, a server-side
//! drop of every connection and the reconnection after it, memory per connection read from the
//! server's process, and the failures a person would meet (nothing listening, not a WebSocket).

use crate::http::Demo;
use crate::support::{Sandbox, attrs, events, manifest, of_kind};

fn plan(fields: &str) -> String {
    format!(
        "[plan]\nname = \"ws\"\n[[phase]]\nname = \"p\"\n[[phase.stage]]\nname = \"w\"\ndriver = \"ws\"\n{fields}\n"
    )
}

fn summary(evs: &[serde_json::Value], name: &str) -> f64 {
    of_kind(evs, "ws_summary").iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("no {name}"))["value"]
        .as_f64()
        .unwrap()
}

#[test]
fn connections_echo_push_ping_drop_and_come_back_and_the_numbers_match_the_rows() {
    let demo = Demo::start(&["--latency-scale", "0"]);
    let sb = Sandbox::new();
    let ws = demo.url.replace("http://", "ws://");
    sb.write(
        "w.toml",
        &plan(&format!(
            "url = \"{ws}/ws?push=300&every_ms=200\"\nconnections = 40\nconnect_rate = 200\nsend_rate = 20\n\
             ping_every = \"250ms\"\nduration = \"3s\"\npayload_bytes = 64\n\
             reconnect = {{ attempts = 5, backoff = \"50ms\", max_backoff = \"400ms\" }}\n\
             drop = {{ at = \"1500ms\", url = \"{}/admin/drop-ws\" }}\nserver = {{ pids = [{}] }}\n\
             criteria = ['p95(latency_ms where kind == \"ws_message\" and name == \"echo\") < 100ms', \
             'mean(ok where kind == \"ws_reconnect\") > 0.9']",
            demo.url,
            demo.pid()
        )),
    );
    let r = sb.run(&["run", "w.toml", "--quiet"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dir = sb.path().join(r.run_dir());
    let evs = events(&dir);
    let connects = of_kind(&evs, "ws_connect");
    assert!(connects.iter().all(|c| c["ok"] == true), "{connects:?}");
    let agents: std::collections::BTreeSet<&str> = connects.iter().map(|c| c["agent"].as_str().unwrap()).collect();
    assert_eq!(agents.len(), 40);
    assert_eq!(summary(&evs, "opened"), 40.0);
    assert_eq!(summary(&evs, "peak_open"), 40.0);
    // The drop closed every connection once, and each came back.
    let fault = of_kind(&evs, "fault");
    assert!(fault.len() == 1 && fault[0]["ok"] == true && fault[0]["value"] == 40.0, "{fault:?}");
    let closes = of_kind(&evs, "ws_close");
    assert_eq!(closes.len(), 40, "{closes:?}");
    assert!(closes.iter().all(|c| c["error"].as_str().unwrap().contains("1012")), "{closes:?}");
    let back = of_kind(&evs, "ws_reconnect");
    assert_eq!(back.len(), 40);
    assert!(back.iter().all(|b| b["ok"] == true && b["latency_ms"].as_f64().unwrap() < 2000.0), "{back:?}");
    assert_eq!((summary(&evs, "dropped"), summary(&evs, "recovered")), (40.0, 40.0));
    // Every echo row is one message that came back; the summary says the same.
    let echoes: Vec<f64> = of_kind(&evs, "ws_message")
        .iter()
        .filter(|m| m["name"] == "echo")
        .map(|m| {
            assert_eq!(m["ok"], true, "{m}");
            assert!(m["bytes"].as_i64().unwrap() > 64, "{m}");
            m["latency_ms"].as_f64().unwrap()
        })
        .collect();
    // 40 connections x 20/s x ~3 s, less the time spent reconnecting.
    assert!(echoes.len() > 1500, "{} echoes", echoes.len());
    assert_eq!(summary(&evs, "received"), echoes.len() as f64);
    let lost = summary(&evs, "lost");
    // Messages in flight when the server dropped the connections have no echo: counted, not hidden.
    assert_eq!(summary(&evs, "sent"), echoes.len() as f64 + lost);
    assert_eq!(of_kind(&evs, "ws_lost").iter().map(|l| l["value"].as_f64().unwrap()).sum::<f64>(), lost);
    // Pushes carry 300 agents each, about every 200 ms per connection.
    let pushes: Vec<_> = of_kind(&evs, "ws_message").into_iter().filter(|m| m["name"] == "push").collect();
    assert!(pushes.len() > 300, "{} pushes", pushes.len());
    assert!(pushes.iter().all(|p| p["value"] == 300.0 && p["latency_ms"].as_f64().unwrap() >= 0.0));
    assert_eq!(summary(&evs, "pushes"), pushes.len() as f64);
    assert!(!of_kind(&evs, "ws_ping").is_empty());
    // Memory per connection from the server's process: its readings at half and all of the
    // connections open are of that process (the test reads its memory too), and the figure is
    // their difference over the connections opened in between.
    let mem = of_kind(&evs, "ws_memory");
    let server = mem.iter().find(|m| m["name"] == "server").expect("server memory");
    let a = attrs(server);
    let (before, after) = (a["before"].as_f64().unwrap(), a["after"].as_f64().unwrap());
    let (open_before, open) = (a["open_before"].as_f64().unwrap(), a["open"].as_f64().unwrap());
    assert!((20.0..40.0).contains(&open_before) && open == 40.0, "{server}");
    assert_eq!(server["value"].as_f64().unwrap(), (after - before) / (open - open_before));
    let status = std::fs::read_to_string(format!("/proc/{}/status", demo.pid())).unwrap();
    let rss_kb: f64 =
        status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let now = rss_kb * 1024.0;
    assert!(
        before > now / 4.0 && before < now * 4.0 && after > now / 4.0,
        "readings {before}, {after} vs the server's {now} now"
    );
    // The report's p95 is the p95 of the echo rows (linear interpolation).
    let mut sorted = echoes.clone();
    sorted.sort_by(f64::total_cmp);
    let pos = 0.95 * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let p95 = sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let observed = report["criteria"][0]["observed"].as_f64().unwrap();
    assert!((observed - p95).abs() < 1e-6, "report {observed} vs rows {p95}");
    assert_eq!(report["criteria"][1]["observed"].as_f64(), Some(1.0));
}

#[test]
fn nothing_listening_is_a_failed_stage_that_says_so_and_does_not_hang() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let sb = Sandbox::new();
    let started = std::time::Instant::now();
    let (code, dir, _) = sb.run_plan(&plan(&format!(
        "url = \"ws://127.0.0.1:{port}/ws\"\nconnections = 5\nduration = \"1s\"\n\
         reconnect = {{ attempts = 2, backoff = \"50ms\", max_backoff = \"100ms\" }}"
    )));
    assert_eq!(code, 1);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let evs = events(&dir);
    let connects = of_kind(&evs, "ws_connect");
    // One try and two retries per connection, each refused.
    assert_eq!(connects.len(), 15, "{connects:?}");
    assert!(connects.iter().all(|c| c["ok"] == false && c["error_kind"] == "connect"), "{connects:?}");
    assert_eq!(summary(&evs, "failed"), 5.0);
    let m = manifest(&dir);
    assert!(m["stages"][0]["message"].as_str().unwrap_or_default().contains("none of the 5 connections opened"), "{m}");
}

#[test]
fn an_http_endpoint_that_is_not_a_websocket_is_a_handshake_error() {
    let demo = Demo::start(&["--latency-scale", "0"]);
    let sb = Sandbox::new();
    let (code, dir, _) = sb.run_plan(&plan(&format!(
        "url = \"{}/atlas/health\"\nconnections = 2\nduration = \"500ms\"",
        demo.url.replace("http://", "ws://")
    )));
    assert_eq!(code, 1);
    let evs = events(&dir);
    let c = of_kind(&evs, "ws_connect");
    assert!(
        c.iter().all(|c| c["error_kind"] == "handshake" && c["error"].as_str().unwrap().contains("instead of 101")),
        "{c:?}"
    );
}

#[test]
fn a_wss_url_or_a_drop_after_the_end_is_refused_where_it_is_written() {
    let sb = Sandbox::new();
    sb.write("w.toml", &plan("url = \"wss://127.0.0.1:1/ws\"\nconnections = 1\nduration = \"1s\""));
    let r = sb.run(&["validate", "w.toml"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("not supported yet") && r.stderr.contains("w.toml:"), "{}", r.stderr);
    sb.write(
        "w.toml",
        &plan("url = \"ws://127.0.0.1:1/ws\"\nconnections = 1\nduration = \"1s\"\ndrop = { at = \"5s\", url = \"http://127.0.0.1:1/x\" }"),
    );
    let r = sb.run(&["validate", "w.toml"]);
    assert!(r.stderr.contains("would never happen"), "{}", r.stderr);
}

#[test]
fn the_dashboard_plans_quick_profile_checks_every_criterion_and_its_figures_match_the_rows() {
    // Every criterion gets data; the latency ones are what the plan measures (they pass on an
    // idle machine, but the test suite loads both cores), the rest must pass.
    let sb = Sandbox::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let path = crate::support::repo().join("plans").join("dashboard-1000.toml");
    let sets = [
        format!("url=ws://127.0.0.1:{port}/ws?push=1000&every_ms=500"),
        format!("poll_url=http://127.0.0.1:{port}"),
        format!("drop_url=http://127.0.0.1:{port}/admin/drop-ws"),
    ];
    let mut args = vec!["run", path.to_str().unwrap(), "--profile", "quick", "-q"];
    for s in &sets {
        args.extend(["--set", s.as_str()]);
    }
    let r = sb.run(&args);
    assert!(r.code == 0 || r.code == 1, "{}", r.stderr);
    let dir = sb.path().join(r.run_dir());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let criteria = report["criteria"].as_array().unwrap();
    assert_eq!(criteria.len(), 11);
    let evs = events(&dir);
    for c in criteria {
        let check = c["check"].as_str().unwrap();
        assert_ne!(c["status"], "no_data", "{check} had no data");
        assert!(check.contains("latency_ms") || c["pass"] == true, "{check} failed: {c}");
    }
    let observed = |needle: &str| {
        criteria.iter().find(|c| c["check"].as_str().unwrap().contains(needle)).unwrap()["observed"].as_f64().unwrap()
    };
    let server = of_kind(&evs, "ws_memory").into_iter().find(|m| m["name"] == "server").unwrap()["value"].as_f64();
    assert_eq!(Some(observed("ws_memory")), server);
    assert_eq!(observed("peak_open"), 200.0);
    let back = of_kind(&evs, "ws_reconnect");
    let share = back.iter().filter(|b| b["ok"] == true).count() as f64 / back.len() as f64;
    assert!((observed("ws_reconnect") - share).abs() < 1e-12 && back.len() >= 190, "{} reconnects", back.len());
    assert!(of_kind(&evs, "http").len() > 50, "the polling stage ran beside the connections");
}
