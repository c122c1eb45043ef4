//! `just bench-llm`: 10,000 concurrent simulated LLM agents making 1,000,000 calls in virtual
//! time. Prints wall time, calls/s and the runner's peak RSS. Target: within 60 s, RSS < 1 GB.
//!
//! Usage: cargo bench --bench llm -- [AGENTS] [ROUNDS]

use std::process::Command;
use std::time::Instant;

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let agents = args.first().copied().unwrap_or(10_000);
    let rounds = args.get(1).copied().unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let plan = format!(
        r#"
[plan]
name = "llm-scale"
clock = "virtual"
seed = 1

[[phase]]
name = "scale"

[[phase.stage]]
name = "swarm"
driver = "llm"
pattern = "gather"
rounds = {rounds}
gather_timeout = "60s"
prompt = "go"
agent = [{{ name = "a", provider = "sim", count = {agents} }}]
providers.sim = {{ kind = "simulated", latency = {{ dist = "lognormal", median = "5s", p99 = "25s" }}, failure_rate = 0.02, tokens_in = {{ min = 100, max = 900 }}, tokens_out = {{ min = 50, max = 400 }}, price_in = 3.0, price_out = 15.0 }}
"#
    );
    let path = dir.path().join("scale.toml");
    std::fs::write(&path, plan).unwrap();
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_planrun"))
        .args(["run", path.to_str().unwrap(), "--quiet", "--no-analyze", "--out"])
        .arg(dir.path().join("results"))
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // SAFETY: getrusage writes into the struct we pass; RUSAGE_CHILDREN covers the finished run.
    let rss_kb = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u.ru_maxrss
    };
    let run_dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let events = std::fs::read_to_string(std::path::Path::new(&run_dir).join("events.jsonl")).unwrap_or_default();
    let calls = events.lines().filter(|l| l.contains("\"kind\":\"llm_call\"")).count();
    println!(
        "llm: {agents} agents x {rounds} rounds: {calls} calls in {secs:.1} s ({:.0} calls/s), peak RSS {:.0} MiB",
        calls as f64 / secs,
        rss_kb as f64 / 1024.0
    );
}
