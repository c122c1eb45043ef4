//! The `llm` driver end to end, on simulated providers in virtual time (and one OpenAI-compatible
//! mock server on loopback).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;

use serde_json::Value;

use super::support::{Sandbox, events, manifest};

fn attrs(e: &Value) -> Value {
    e["attrs"].as_str().map(|a| serde_json::from_str(a).unwrap()).unwrap_or(Value::Null)
}

const PROVIDERS: &str = r#"
[defaults.llm.providers.sim]
kind = "simulated"
latency = { dist = "lognormal", median = "5s", p99 = "20s" }
tokens_in = { min = 100, max = 900 }
tokens_out = { min = 50, max = 400 }
price_in = 3.0
price_out = 15.0
"#;

fn plan(stages: &str) -> String {
    format!("[plan]\nname = \"llm\"\nclock = \"virtual\"\nseed = 7\n{PROVIDERS}\n[[phase]]\nname = \"p\"\n{stages}")
}

fn run(sb: &Sandbox, text: &str, extra: &[&str]) -> (i32, std::path::PathBuf, String) {
    sb.write("p.toml", text);
    let mut args = vec!["run", "p.toml", "--quiet"];
    args.extend_from_slice(extra);
    let r = sb.run(&args);
    let dir = sb.path().join(r.run_dir());
    (r.code, dir, r.stderr)
}

fn of_kind<'a>(evs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    evs.iter().filter(|e| e["kind"] == kind).collect()
}

const GAME: &str = r#"
[[phase.stage]]
name = "game"
driver = "llm"
pattern = "rounds"
rounds = 8
gather_timeout = "15s"
min_responses = 2
retry = { attempts = 3, base = "1s", cap = "10s" }
agent = [{ name = "p", role = "player", provider = "sim", count = 4 }]
providers.sim = { kind = "simulated", latency = { dist = "lognormal", median = "5s", p99 = "20s" }, failure_rate = 0.2, tokens_in = { min = 100, max = 900 }, tokens_out = { min = 50, max = 400 }, price_in = 3.0, price_out = 15.0 }
"#;

fn without_ts(dir: &Path) -> Vec<Value> {
    events(dir)
        .into_iter()
        .map(|mut e| {
            e.as_object_mut().unwrap().remove("ts");
            e
        })
        .collect()
}

#[test]
fn same_seed_same_events_in_virtual_time() {
    let sb = Sandbox::new();
    let (a, dir_a, err) = run(&sb, &plan(GAME), &[]);
    assert_eq!(a, 0, "{err}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (_, dir_b, _) = run(&sb, &plan(GAME), &[]);
    let (ea, eb) = (without_ts(&dir_a), without_ts(&dir_b));
    assert!(ea.len() > 40);
    assert_eq!(ea, eb, "same seed, different events");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (_, dir_c, _) = run(&sb, &plan(GAME), &["--seed", "8"]);
    assert_ne!(ea, without_ts(&dir_c), "a different seed changed nothing");
    // Virtual time: minutes of plan time passed.
    let last = ea.last().unwrap()["t_ms"].as_f64().unwrap();
    assert!(last > 60_000.0, "{last}");
}

#[test]
fn ledger_is_exact_and_matches_tokens_times_prices() {
    let sb = Sandbox::new();
    let (code, dir, err) = run(&sb, &plan(GAME), &[]);
    assert_eq!(code, 0, "{err}");
    let evs = events(&dir);
    let calls = of_kind(&evs, "llm_call");
    let nanos: u64 = calls.iter().map(|c| attrs(c)["cost_nanos"].as_u64().unwrap_or(0)).sum();
    let ledger = of_kind(&evs, "ledger")[0];
    assert_eq!(attrs(ledger)["cost_nanos"].as_u64().unwrap(), nanos, "ledger != sum of call costs");
    let by_tokens: f64 = calls
        .iter()
        .filter(|c| c["ok"] == true)
        .map(|c| c["tokens_in"].as_f64().unwrap() * 3.0 / 1e6 + c["tokens_out"].as_f64().unwrap() * 15.0 / 1e6)
        .sum();
    let ledger_usd = nanos as f64 / 1e9;
    assert!((ledger_usd - by_tokens).abs() / by_tokens < 0.01, "{ledger_usd} vs {by_tokens}");
    // Failed calls cost nothing; retries were made.
    assert!(calls.iter().filter(|c| c["ok"] == false).all(|c| attrs(c)["cost_nanos"].as_u64().unwrap_or(0) == 0));
    assert!(!of_kind(&evs, "retry").is_empty());
}

#[test]
fn budget_stops_calls_before_it_is_exceeded() {
    let sb = Sandbox::new();
    let stage = r#"
[[phase.stage]]
name = "spend"
driver = "llm"
pattern = "gather"
rounds = 200
budget_usd = 0.5
agent = [{ name = "p", provider = "sim", count = 5 }]
"#;
    let (code, dir, err) = run(&sb, &plan(stage), &[]);
    assert_eq!(code, 0, "{err}");
    let evs = events(&dir);
    let spent: f64 = of_kind(&evs, "llm_call").iter().filter_map(|c| c["cost_usd"].as_f64()).sum();
    assert!(spent <= 0.5 + 1e-9, "spent {spent}");
    assert!(spent > 0.4, "stopped far too early: {spent}");
    assert_eq!(of_kind(&evs, "budget_exceeded").len(), 1);
    assert!(of_kind(&evs, "round").len() < 200);
    assert_eq!(manifest(&dir)["stages"][0]["status"], "budget_exceeded");
}

#[test]
fn gather_proceeds_on_partial_results_and_cuts_laggards() {
    let sb = Sandbox::new();
    let stage = r#"
[[phase.stage]]
name = "gather"
driver = "llm"
pattern = "gather"
rounds = 3
gather_timeout = "15s"
min_responses = 2
agent = [
  { name = "fast", provider = "fast", count = 2 },
  { name = "never", provider = "hangs" },
]
providers.fast = { kind = "simulated", latency = { dist = "fixed", value = "2s" }, tokens_in = 10, tokens_out = 10, price_in = 1.0, price_out = 1.0 }
providers.hangs = { kind = "simulated", latency = { dist = "fixed", value = "1s" }, timeout_rate = 1.0, tokens_in = 10, tokens_out = 10, price_in = 1.0, price_out = 1.0 }
"#;
    let (code, dir, err) = run(&sb, &plan(stage), &[]);
    assert_eq!(code, 0, "{err}");
    let evs = events(&dir);
    let rounds = of_kind(&evs, "round");
    assert_eq!(rounds.len(), 3);
    for r in &rounds {
        assert_eq!(r["ok"], true);
        assert_eq!(r["value"], 2.0);
        assert_eq!(r["latency_ms"], 15000.0, "a round waits exactly the gather timeout");
        assert_eq!(attrs(r)["partial"], true);
    }
    let cut = evs.iter().filter(|e| e["error"] == "timeout (gather)" && e["agent"] == "never").count();
    assert_eq!(cut, 3);
}

#[test]
fn retry_after_is_honoured_and_breaker_fails_over() {
    let sb = Sandbox::new();
    let stage = r#"
[[phase.stage]]
name = "flaky"
driver = "llm"
pattern = "gather"
rounds = 6
retry = { attempts = 2, base = "100ms", cap = "1s" }
breaker = { failures = 3, cooldown = "10m" }
agent = [{ name = "a", provider = ["down", "backup"] }]
providers.down = { kind = "simulated", latency = { dist = "fixed", value = "1s" }, failure_rate = 1.0, errors = { rate_limited = 1.0, server_error = 0.0, overloaded = 0.0 }, retry_after = "7s", tokens_in = 10, tokens_out = 10, price_in = 1.0, price_out = 1.0 }
providers.backup = { kind = "simulated", latency = { dist = "fixed", value = "1s" }, tokens_in = 10, tokens_out = 10, price_in = 1.0, price_out = 1.0 }
"#;
    let (code, dir, err) = run(&sb, &plan(stage), &[]);
    assert_eq!(code, 0, "{err}");
    let evs = events(&dir);
    let retries = of_kind(&evs, "retry");
    assert!(!retries.is_empty());
    assert!(retries.iter().all(|r| r["value"] == 7000.0 && r["name"] == "rate_limited"), "{retries:?}");
    let opened: Vec<_> = of_kind(&evs, "breaker").into_iter().filter(|b| b["name"] == "open").collect();
    assert_eq!(opened.len(), 1);
    assert!(of_kind(&evs, "failover").len() >= 6);
    // Once open, the breaker short-circuits the dead provider: calls go straight to the backup.
    assert!(evs.iter().any(|e| e["error"] == "circuit_open"));
    assert!(of_kind(&evs, "round").iter().all(|r| r["ok"] == true));
}

#[test]
fn cache_hits_never_count_as_latency() {
    let sb = Sandbox::new();
    let stage = r#"
[[phase.stage]]
name = "cached"
driver = "llm"
pattern = "gather"
rounds = 3
cache = "normalized"
prompt = "Same   question every round"
agent = [{ name = "a", provider = "sim", count = 2 }]
"#;
    let (code, dir, err) = run(&sb, &plan(stage), &[]);
    assert_eq!(code, 0, "{err}");
    let evs = events(&dir);
    let hits: Vec<_> = evs.iter().filter(|e| e["name"] == "cache_hit").collect();
    // Both agents ask at once in round 1 and both miss (no request coalescing); then all hit.
    assert_eq!(hits.len(), 4);
    assert!(
        hits.iter().all(|h| h.get("latency_ms").is_none() && attrs(h)["original_latency_ms"].as_f64().unwrap() > 0.0)
    );
    assert!(hits.iter().all(|h| h["cost_usd"] == 0.0));
}

#[test]
fn terminated_agent_work_is_redistributed() {
    let sb = Sandbox::new();
    let stage = r#"
[[phase.stage]]
name = "scale"
driver = "llm"
pattern = "gather"
rounds = 10
on_terminate = "redistribute"
agent = [{ name = "w", role = "worker", provider = "sim", count = 3 }]
fault = [{ at = "30s", terminate = "w-2" }]
"#;
    let (code, dir, err) = run(&sb, &plan(stage), &[]);
    assert_eq!(code, 0, "{err}");
    let evs = events(&dir);
    let fault = of_kind(&evs, "fault")[0];
    let t_fault = fault["t_ms"].as_f64().unwrap();
    assert!(
        evs.iter()
            .filter(|e| e["kind"] == "llm_call" && e["agent"] == "w-2" && e["ok"] == true)
            .all(|e| e["t_ms"].as_f64().unwrap() <= t_fault)
    );
    for r in of_kind(&evs, "round") {
        assert_eq!(r["value"], 3.0, "every round still gets 3 answers: {r}");
    }
}

#[test]
fn suspend_after_then_resume_continues_mid_stage() {
    let sb = Sandbox::new();
    let stage = r#"
[[phase.stage]]
name = "long"
driver = "llm"
pattern = "rounds"
rounds = 12
checkpoint_every = 3
agent = [{ name = "p", provider = "sim", count = 3 }]
"#;
    let (code, dir, err) = run(&sb, &plan(stage), &["--suspend-after", "1m"]);
    assert_eq!(code, 130, "{err}");
    let m = manifest(&dir);
    assert_eq!(m["status"], "interrupted");
    assert!(m["stages"][0]["checkpoint"]["state"]["next_round"].as_u64().unwrap() < 12);
    let r = sb.run(&["resume", dir.to_str().unwrap(), "--quiet"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let evs = events(&dir);
    let mut rounds: Vec<u64> = of_kind(&evs, "round").iter().map(|r| attrs(r)["round"].as_u64().unwrap()).collect();
    rounds.sort();
    assert_eq!(rounds, (1..=12).collect::<Vec<_>>(), "each round exactly once across suspend and resume");
    let seqs: Vec<u64> = evs.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..evs.len() as u64).collect::<Vec<_>>());
    assert_eq!(evs.iter().filter(|e| e["kind"] == "stage" && e["name"] == "start").count(), 1);
    // The ledger carried over: the final ledger equals every call's cost.
    let nanos: u64 = of_kind(&evs, "llm_call").iter().map(|c| attrs(c)["cost_nanos"].as_u64().unwrap_or(0)).sum();
    let ledger = of_kind(&evs, "ledger");
    assert_eq!(attrs(ledger.last().unwrap())["cost_nanos"].as_u64().unwrap(), nanos);
}

/// A one-thread OpenAI-compatible server on loopback: the first request is rate limited, the
/// rest answer with usage. Returns the port and a handle yielding the Authorization headers seen.
fn mock_openai(answers: usize) -> (u16, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let mut auth = Vec::new();
        for (i, stream) in listener.incoming().take(answers + 1).enumerate() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let l = line.to_ascii_lowercase();
                if let Some(v) = l.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if let Some(v) = line.strip_prefix("authorization:").or_else(|| line.strip_prefix("Authorization:")) {
                    auth.push(v.trim().to_string());
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let (status, extra, json) = if i == 0 {
                ("429 Too Many Requests", "Retry-After: 1\r\n", "{}".to_string())
            } else {
                ("200 OK", "", r#"{"choices":[{"message":{"content":"cooperate"}}],"usage":{"prompt_tokens":120,"completion_tokens":30}}"#.to_string())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
                json.len()
            );
            stream.write_all(resp.as_bytes()).unwrap();
        }
        auth
    });
    (port, handle)
}

#[test]
fn openai_provider_against_a_local_server_keeps_the_key_secret() {
    let sb = Sandbox::new();
    let (port, server) = mock_openai(2);
    let text = format!(
        r#"
[plan]
name = "openai"
[[phase]]
name = "p"
[[phase.stage]]
name = "real"
driver = "llm"
pattern = "sequential"
rounds = 2
call_timeout = "10s"
retry = {{ attempts = 2, base = "10ms", cap = "2s" }}
agent = [{{ name = "gpt", provider = "local" }}]
providers.local = {{ kind = "openai", base_url = "http://127.0.0.1:{port}/v1", model = "test-model", api_key_env = "PLANRUN_TEST_KEY", price_in = 2.0, price_out = 8.0 }}
"#
    );
    sb.write("p.toml", &text);
    let secret = "sk-test-do-not-write-0123456789";
    let out = sb.cmd(&["run", "p.toml", "--quiet"]).env("PLANRUN_TEST_KEY", secret).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = sb.path().join(String::from_utf8_lossy(&out.stdout).trim());
    let seen = server.join().unwrap();
    assert!(seen.iter().all(|a| a == &format!("Bearer {secret}")), "{seen:?}");
    let evs = events(&dir);
    let calls = of_kind(&evs, "llm_call");
    assert_eq!(calls[0]["error"], "rate_limited");
    assert_eq!(calls[0]["status"], 429);
    let retry = of_kind(&evs, "retry")[0];
    assert_eq!(retry["value"], 1000.0, "Retry-After: 1 honoured");
    let ok: Vec<_> = calls.iter().filter(|c| c["ok"] == true).collect();
    assert_eq!(ok.len(), 2);
    assert_eq!((ok[0]["tokens_in"].as_i64(), ok[0]["tokens_out"].as_i64()), (Some(120), Some(30)));
    assert!((ok[0]["cost_usd"].as_f64().unwrap() - (120.0 * 2.0 + 30.0 * 8.0) / 1e6).abs() < 1e-12);
    for f in std::fs::read_dir(&dir).unwrap() {
        let p = f.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(secret), "the API key leaked into {}", p.display());
    }
    // The virtual clock refuses a stage that calls a real endpoint.
    let r = sb.run(&["run", "p.toml", "--quiet", "--clock", "virtual"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("real (llm)"), "{}", r.stderr);
}

#[test]
fn ksi_campaign_passes_in_seconds() {
    let sb = Sandbox::new();
    let plan = super::support::repo().join("plans/ksi-10-day.toml");
    let r = sb.run(&["run", plan.to_str().unwrap(), "--quiet", "--set", "rounds=20"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dir = sb.path().join(r.run_dir());
    let rep: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(rep["verdict"]["label"], "PASS", "{}", rep["verdict"]);
    assert_eq!(rep["stages"].as_array().unwrap().iter().filter(|s| s["status"] == "budget_exceeded").count(), 1);
}
