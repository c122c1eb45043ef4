//! The dashboard against real runs: `planrun dashboard RUN_DIR` serves a finished run's data
//! as JSON, Prometheus text and Server-Sent Events, equal to the analysis and to the events
//! themselves; `planrun run --dashboard` serves a run while it goes, and the page draws its
//! charts and takes updates in headless Chromium (skipped where Chromium is absent).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::browser;
use crate::support::{Reap, Sandbox, events};

/// GET `path` from `addr`; (status, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The first Server-Sent Event's data from `addr`'s `/events`.
fn first_event(addr: &str) -> serde_json::Value {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET /events HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\r\n").unwrap();
    for line in BufReader::new(s).lines() {
        let line = line.unwrap();
        if let Some(data) = line.strip_prefix("data: ") {
            return serde_json::from_str(data).unwrap();
        }
    }
    panic!("no event");
}

/// Start `planrun ARGS` and read the dashboard's address from its stderr.
fn with_dashboard(sb: &Sandbox, args: &[&str]) -> (Child, String) {
    let mut child = sb.cmd(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "planrun ended without a dashboard");
        if let Some(rest) = line.trim().strip_prefix("dashboard: http://") {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in err.lines() {});
    (child, addr)
}

fn plan(seconds: u32) -> String {
    format!(
        "[plan]\nname = \"dash\"\n[[phase]]\nname = \"p\"\n[[phase.stage]]\nname = \"probe\"\ndriver = \"exec\"\n\
         run = \"sleep 0.05\"\nrepeat = {}\ncriteria = ['count(where kind == \"exec\" and ok) >= 5', 'p95(latency_ms where kind == \"exec\") < 10s']\n",
        seconds * 15
    )
}

#[test]
fn a_finished_run_is_served_as_json_prometheus_and_events_equal_to_its_analysis() {
    let sb = Sandbox::new();
    sb.write("d.toml", &plan(1));
    let r = sb.run(&["run", "d.toml", "--quiet"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dir = sb.path().join(r.run_dir());
    let (child, addr) = with_dashboard(&sb, &["dashboard", dir.to_str().unwrap(), "--addr", "127.0.0.1:0"]);
    let _reap = Reap(vec![child]);
    let (code, body) = get(&addr, "/api/stats");
    assert_eq!(code, 200);
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(stats["criteria"], report["criteria"]);
    // (Float sums may differ in their last digit: polars adds in parallel.)
    for k in ["count", "ok", "failed"] {
        assert_eq!(stats["metrics"]["stages"][0][k], report["metrics"]["stages"][0][k], "{k}");
    }
    assert_eq!(stats["charts"], report["charts"]);
    // Prometheus: the events per stage, as the log has them.
    let (code, text) = get(&addr, "/metrics");
    assert_eq!(code, 200);
    let evs = events(&dir);
    let n = evs.iter().filter(|e| e["stage"] == "probe" && e["kind"] != "stage").count();
    assert!(text.contains(&format!("planrun_events_total{{phase=\"p\",stage=\"probe\"}} {n}\n")), "{text}");
    let ok = evs.iter().filter(|e| e["stage"] == "probe" && e["kind"] != "stage" && e["ok"] == true).count();
    assert!(text.contains(&format!("planrun_measured_ok_total{{phase=\"p\",stage=\"probe\"}} {ok}\n")), "{text}");
    assert!(
        text.contains(
            "planrun_criterion_pass{check=\"count(where kind == \\\"exec\\\" and ok) >= 5\",scope=\"p/probe\",status=\"pass\"} 1"
        ),
        "{text}"
    );
    // Every line is a comment or `name{labels} number`.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let v = l.rsplit_once(' ').unwrap().1;
        assert!(v.parse::<f64>().is_ok(), "{l}");
    }
    // The event stream's first message is the page's data: the charts as the report has them.
    let first = first_event(&addr);
    assert_eq!(first["charts"], report["charts"]);
    assert_eq!(first["criteria"], report["criteria"]);
    // A page elsewhere that rebinds a name to 127.0.0.1 is refused.
    let mut raw = TcpStream::connect(&addr).unwrap();
    write!(raw, "GET /api/stats HTTP/1.1\r\nhost: attacker.example\r\nconnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = raw.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // The page is report.html in live mode.
    let (code, page) = get(&addr, "/");
    assert_eq!(code, 200);
    assert!(page.contains("PLANRUN_LIVE = true") && page.contains("id=\"charts\""));
}

#[test]
fn a_running_run_is_watched_live_and_its_page_draws_and_updates_in_a_browser() {
    let sb = Sandbox::new();
    // Long enough to outlast the test; it is interrupted at the end.
    sb.write("d.toml", &plan(60));
    let (child, addr) = with_dashboard(&sb, &["run", "d.toml", "--quiet", "--dashboard=127.0.0.1:0"]);
    let mut procs = Reap(vec![child]);
    // The charts grow while the run goes (they are kept as the events come; the rest of the
    // analysis is redone only every few seconds).
    let count = |body: &str| -> Option<u64> {
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        let w = v["charts"]["width_s"].as_f64()?;
        let measured: f64 = v["charts"]["stages"]
            .as_array()?
            .iter()
            .flat_map(|s| s["throughput"].as_array().cloned().unwrap_or_default())
            .filter_map(|x| x.as_f64())
            .sum::<f64>()
            * w;
        Some(measured.round() as u64)
    };
    let until = Instant::now() + Duration::from_secs(20);
    let first = loop {
        let (code, body) = get(&addr, "/api/stats");
        if code == 200
            && let Some(n) = count(&body).filter(|n| *n > 2)
        {
            break n;
        }
        assert!(Instant::now() < until, "no data from the running run: {code} {body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_millis(2500));
    let (_, body) = get(&addr, "/api/stats");
    let later = count(&body).unwrap();
    assert!(later > first, "the live data did not grow: {first} then {later}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["run"]["status"], "running", "{}", status["run"]);
    if let Some(chromium) = browser::chromium() {
        let shot = browser::screenshots().join("dashboard.png");
        // Two updates from the event stream, then the page stops listening (so the browser's
        // virtual time, which waits for the network, can run out).
        let (dom, log) = browser::open(&chromium, &format!("http://{addr}/?updates=2"), &shot, 2500);
        assert_eq!(browser::script_errors(&log), Vec::<&str>::new());
        assert!(!dom.contains("data-errors="), "a script error on the page");
        let drawn = browser::attr(&dom, "charts", "data-drawn");
        assert!(drawn.is_some() && drawn == browser::attr(&dom, "charts", "data-expected"), "{dom}");
        assert_ne!(drawn.as_deref(), Some("0"));
        assert!(dom.contains("data-updates=\"2\""), "the page took no updates from the event stream");
        assert!(
            std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false),
            "no screenshot at {}",
            shot.display()
        );
    } else {
        eprintln!("SKIPPED the browser half: no chromium on PATH (scripts/test.sh installs it)");
    }
    // Ctrl-C ends the run as usual, the dashboard with it.
    let run = procs.0.remove(0);
    let _ = std::process::Command::new("kill").args(["-INT", &run.id().to_string()]).status();
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
}
