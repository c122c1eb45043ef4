//! The `llm` driver end to end, on simulated providers in virtual time, and against scripted
//! OpenAI-compatible servers on loopback.

mod server;

use serde_json::Value;

use super::support::{Sandbox, attrs, events, events_without_ts, manifest, of_kind};
use server::{Reply, Server};

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

#[test]
fn same_seed_same_events_in_virtual_time() {
    let sb = Sandbox::new();
    let (a, dir_a, err) = run(&sb, &plan(GAME), &[]);
    assert_eq!(a, 0, "{err}");
    let (_, dir_b, _) = run(&sb, &plan(GAME), &[]);
    let (ea, eb) = (events_without_ts(&dir_a), events_without_ts(&dir_b));
    assert!(ea.len() > 40);
    assert_eq!(ea, eb, "same seed, different events");
    let (_, dir_c, _) = run(&sb, &plan(GAME), &["--seed", "8"]);
    assert_ne!(ea, events_without_ts(&dir_c), "a different seed changed nothing");
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
    let failed: Vec<_> = calls.iter().filter(|c| c["ok"] == false).collect();
    assert!(!failed.is_empty(), "a 20% failure rate made no failed call");
    assert!(failed.iter().all(|c| attrs(c)["cost_nanos"].as_u64().unwrap_or(0) == 0));
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
    let answered: Vec<f64> = evs
        .iter()
        .filter(|e| e["kind"] == "llm_call" && e["agent"] == "w-2" && e["ok"] == true)
        .map(|e| e["t_ms"].as_f64().unwrap())
        .collect();
    assert!(!answered.is_empty(), "w-2 answered before it was terminated");
    assert!(answered.iter().all(|t| *t <= t_fault), "w-2 answered after its termination at {t_fault}: {answered:?}");
    let rounds = of_kind(&evs, "round");
    assert_eq!(rounds.len(), 10);
    for r in &rounds {
        assert_eq!(r["value"], 3.0, "every round still gets 3 answers: {r}");
    }
    // Rounds that began after the fault hand w-2's prompt to a live worker.
    let later: Vec<_> =
        rounds.iter().filter(|r| r["t_ms"].as_f64().unwrap() - r["latency_ms"].as_f64().unwrap() > t_fault).collect();
    assert!(!later.is_empty(), "no round began after the fault");
    assert!(later.iter().all(|r| attrs(r)["redistributed"] == serde_json::json!(["w-2"])), "{later:?}");
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
    // So did tokens x prices: the resumed stage's cost check covers the whole stage.
    let check = of_kind(&evs, "cost_check");
    let diff = check.last().expect("a cost check")["value"].as_f64().unwrap();
    assert!(diff < 0.01, "ledger and tokens x prices differ by {diff} after resume");
}

/// A plan with one llm stage calling `server` (real clock, scaled 100x down so Retry-After
/// waits take milliseconds; the events still carry plan time).
fn openai_plan(server: &Server, fields: &str) -> String {
    format!(
        r#"
[plan]
name = "openai"
[[phase]]
name = "p"
[[phase.stage]]
name = "real"
driver = "llm"
call_timeout = "10s"
agent = [{{ name = "gpt", provider = "local" }}]
providers.local = {{ kind = "openai", base_url = "{}", model = "test-model", price_in = 2.0, price_out = 8.0 }}
{fields}
"#,
        server.base_url()
    )
}

fn run_scaled(sb: &Sandbox, text: &str) -> super::support::Ran {
    sb.write("p.toml", text);
    sb.run(&["run", "p.toml", "--quiet", "--time-scale", "0.01"])
}

#[test]
fn openai_provider_against_a_local_server_keeps_the_key_secret() {
    let sb = Sandbox::new();
    let server = Server::start(vec![Reply::error("429 Too Many Requests").header("Retry-After", "1"), Reply::answer()]);
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
providers.local = {{ kind = "openai", base_url = "{}", model = "test-model", api_key_env = "PLANRUN_TEST_KEY", price_in = 2.0, price_out = 8.0 }}
"#,
        server.base_url()
    );
    sb.write("p.toml", &text);
    let secret = "sk-test-do-not-write-0123456789";
    let out = sb.cmd(&["run", "p.toml", "--quiet"]).env("PLANRUN_TEST_KEY", secret).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = sb.path().join(String::from_utf8_lossy(&out.stdout).trim());
    let seen = server.seen();
    assert_eq!(seen.len(), 3, "one rate-limited request and two answered: {seen:?}");
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
fn openai_503_keeps_its_http_status_and_its_retry_after() {
    let sb = Sandbox::new();
    let server =
        Server::start(vec![Reply::error("503 Service Unavailable").header("Retry-After", "3"), Reply::answer()]);
    let r = run_scaled(&sb, &openai_plan(&server, r#"retry = { attempts = 2, base = "10ms", cap = "20ms" }"#));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let evs = events(&sb.path().join(r.run_dir()));
    let calls = of_kind(&evs, "llm_call");
    assert_eq!(calls.len(), 2);
    assert_eq!((&calls[0]["status"], &calls[0]["error"]), (&Value::from(503), &Value::from("unavailable")));
    let retries = of_kind(&evs, "retry");
    assert_eq!(retries.len(), 1);
    // Retry-After is the server's real time: 3 s whatever the time scale (0.01 here), which is
    // 300 s of plan time in the event.
    assert_eq!(retries[0]["value"], 300_000.0, "Retry-After: 3 on a 503 honoured");
    let gap = calls[1]["t_ms"].as_f64().unwrap() - calls[0]["t_ms"].as_f64().unwrap();
    assert!(gap >= 3000.0, "waited {gap} ms of real time, not the server's 3 s");
}

#[test]
fn retry_after_garbage_is_ignored_and_an_http_date_honoured() {
    let sb = Sandbox::new();
    let limited = || Reply::error("429 Too Many Requests");
    let server = Server::start(vec![
        limited().header("Retry-After", "-1"),
        limited().header("Retry-After", "NaN"),
        limited().header("Retry-After", "99999999999999999999999"),
        limited().header("Retry-After", "1.5"),
        // Three seconds after the server's own Date: the delay does not depend on our clock.
        limited()
            .header("Date", "Sun, 06 Nov 1994 08:49:37 GMT")
            .header("Retry-After", "Sun, 06 Nov 1994 08:49:40 GMT"),
        Reply::answer(),
    ]);
    let r = run_scaled(&sb, &openai_plan(&server, r#"retry = { attempts = 6, base = "10ms", cap = "20ms" }"#));
    assert_eq!(r.code, 0, "a hostile Retry-After must not end the run: {}", r.stderr);
    let evs = events(&sb.path().join(r.run_dir()));
    let waits: Vec<f64> = of_kind(&evs, "retry").iter().map(|r| r["value"].as_f64().unwrap()).collect();
    assert_eq!(waits.len(), 5, "{waits:?}");
    assert!(waits[..4].iter().all(|w| *w <= 20.0), "garbage Retry-After must fall back to backoff: {waits:?}");
    assert_eq!(waits[4], 300_000.0, "3 s of real time at time scale 0.01: {waits:?}");
}

#[test]
fn a_stage_whose_every_call_got_401_fails_and_its_rows_carry_the_status() {
    let sb = Sandbox::new();
    let server = Server::start(vec![Reply::error("401 Unauthorized")]);
    let r = run_scaled(
        &sb,
        &openai_plan(&server, "pattern = \"sequential\"\nrounds = 3\nretry = { attempts = 3, base = \"10ms\" }"),
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    let dir = sb.path().join(r.run_dir());
    assert_eq!(manifest(&dir)["stages"][0]["status"], "failed");
    let calls = of_kind(&events(&dir), "llm_call").into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(calls.len(), 3, "a 401 is not retried: one row per round");
    assert!(calls.iter().all(|c| c["status"] == 401 && c["ok"] == false), "{calls:?}");
}

#[test]
fn a_stage_against_a_server_answering_only_500s_fails() {
    let sb = Sandbox::new();
    let server = Server::start(vec![Reply::error("500 Internal Server Error")]);
    let r = run_scaled(
        &sb,
        &openai_plan(
            &server,
            "pattern = \"gather\"\nrounds = 2\nretry = { attempts = 2, base = \"10ms\", cap = \"20ms\" }",
        ),
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    let dir = sb.path().join(r.run_dir());
    let stage = &manifest(&dir)["stages"][0];
    assert_eq!(stage["status"], "failed");
    assert!(stage["message"].as_str().unwrap_or_default().contains("no call succeeded"), "{stage}");
    let calls = of_kind(&events(&dir), "llm_call").into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(calls.len(), 4);
    assert!(calls.iter().all(|c| c["status"] == 500), "{calls:?}");
}

/// One provider that always fails, a breaker that opens after two failures and stays open.
const BREAKER_OPENS: &str = r#"
[[phase.stage]]
name = "dead"
driver = "llm"
pattern = "gather"
rounds = 4
retry = { attempts = 4, base = "1s", cap = "2s" }
breaker = { failures = 2, cooldown = "1h" }
agent = [{ name = "a", provider = "down" }]
providers.down = { kind = "simulated", latency = { dist = "fixed", value = "1s" }, failure_rate = 1.0, errors = { rate_limited = 0.0, server_error = 1.0, overloaded = 0.0 }, tokens_in = 10, tokens_out = 10, price_in = 1.0, price_out = 1.0 }
"#;

#[test]
fn a_stage_whose_breaker_opened_in_round_one_fails() {
    let sb = Sandbox::new();
    let (code, dir, err) = run(&sb, &plan(BREAKER_OPENS), &[]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(manifest(&dir)["stages"][0]["status"], "failed");
    let evs = events(&dir);
    let rounds = of_kind(&evs, "round");
    assert_eq!(rounds.len(), 4);
    assert!(rounds.iter().all(|r| r["ok"] == false));
}

#[test]
fn no_retry_wait_once_the_breaker_is_open() {
    let sb = Sandbox::new();
    let (_, dir, _) = run(&sb, &plan(BREAKER_OPENS), &[]);
    let evs = events(&dir);
    let opened = evs.iter().position(|e| e["kind"] == "breaker" && e["name"] == "open").expect("the breaker opened");
    let retries: Vec<usize> = evs.iter().enumerate().filter(|(_, e)| e["kind"] == "retry").map(|(i, _)| i).collect();
    assert_eq!(retries.len(), 1, "one retry between the first and the second failure: {retries:?}");
    assert!(retries.iter().all(|i| *i < opened), "a retry was scheduled after the breaker opened at event {opened}");
}

#[test]
fn min_success_is_the_share_of_calls_that_must_succeed() {
    let stage = |fail: f64, min_success: &str| {
        format!(
            r#"
[[phase.stage]]
name = "coin"
driver = "llm"
pattern = "gather"
rounds = 10
{min_success}
agent = [{{ name = "a", provider = "coin", count = 4 }}]
providers.coin = {{ kind = "simulated", latency = {{ dist = "fixed", value = "1s" }}, failure_rate = {fail}, tokens_in = 10, tokens_out = 10, price_in = 1.0, price_out = 1.0 }}
"#
        )
    };
    let sb = Sandbox::new();
    // Half the calls fail: enough by default (some call succeeded)…
    let (code, _, err) = run(&sb, &plan(&stage(0.5, "")), &[]);
    assert_eq!(code, 0, "{err}");
    // …not when the stage asks for 90%.
    let (code, dir, err) = run(&sb, &plan(&stage(0.5, "min_success = 0.9")), &[]);
    assert_eq!(code, 1, "{err}");
    let stage_row = &manifest(&dir)["stages"][0];
    assert_eq!(stage_row["status"], "failed");
    assert!(stage_row["message"].as_str().unwrap_or_default().contains("min_success"), "{stage_row}");
    // `min_success = 0` is the way to say total failure is what the stage expects.
    let (code, _, err) = run(&sb, &plan(&stage(1.0, "min_success = 0")), &[]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn min_success_outside_zero_to_one_is_a_located_error() {
    let sb = Sandbox::new();
    let stage = "[[phase.stage]]\nname = \"s\"\ndriver = \"llm\"\nmin_success = 1.5\nagent = [{ name = \"a\", provider = \"sim\" }]\n";
    let text = plan(stage);
    let line = text.lines().position(|l| l.starts_with("min_success")).unwrap() + 1;
    sb.write("p.toml", &text);
    let r = sb.run(&["validate", "p.toml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("min_success is a share of the calls, from 0 to 1 (got 1.5)"), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("p.toml:{line}:15")), "the caret is not on the value: {}", r.stderr);
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
