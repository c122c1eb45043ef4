//! `just bench-fleet`: the fleet driver's speed on this machine.
//! - a 50-agent ping cycle: p50 and p95 of cycle duration (target p50 ≤ 10 ms; the script this
//!   replaces took 12.7 s for a 5-agent cycle);
//! - 1000 agents spawned in batches of 50: mean and p95 spawn latency (target mean ≤ 50 ms);
//! - the runner's CPU use between cycles (target: nothing measurable);
//! - a coordination cycle across those 1000 agents (one ping to each, every response
//!   collected) over files: p50 (target ≤ 100 ms; `just bench-redis` measures it over Redis).
//!
//! Usage: cargo bench --bench fleet -- [AGENTS_FOR_SPAWN]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run_plan(dir: &std::path::Path, name: &str, body: &str) -> (Vec<serde_json::Value>, std::process::Child) {
    let plan = dir.join(format!("{name}.toml"));
    std::fs::write(&plan, format!("[plan]\nname = \"{name}\"\n[[phase]]\nname = \"bench\"\n[[phase.stage]]\nname = \"{name}\"\ndriver = \"fleet\"\n{body}\n")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_planrun"))
        .args(["run", plan.to_str().unwrap(), "--quiet", "--no-analyze", "--out"])
        .arg(dir.join("results"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    (Vec::new(), child)
}

fn finish(child: std::process::Child) -> Vec<serde_json::Value> {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "run failed");
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    std::fs::read_to_string(std::path::Path::new(&dir).join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn pct(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let h = (v.len() - 1) as f64 * q;
    v[h.floor() as usize] + (v[h.ceil() as usize] - v[h.floor() as usize]) * (h - h.floor())
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = s.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
}

fn main() {
    let spawn_agents: u32 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();

    // 50 agents, 20 ping cycles one second apart; the runner's CPU is read across an idle gap.
    let (_, child) = run_plan(
        dir.path(),
        "ping50",
        "agents = 50\ncycles = 20\ninterval = \"1s\"\nmessages = [\"ping\"]\nheartbeat = \"1s\"\nresponse_timeout = \"5s\"",
    );
    let pid = child.id();
    std::thread::sleep(Duration::from_secs(6));
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    std::thread::sleep(Duration::from_secs(10));
    let (secs, ticks) = (t0.elapsed().as_secs_f64(), cpu_ticks(pid) - c0);
    let evs = finish(child);
    let cycles: Vec<f64> =
        evs.iter().filter(|e| e["kind"] == "cycle").filter_map(|e| e["latency_ms"].as_f64()).collect();
    let hz = 100.0; // USER_HZ
    println!(
        "50-agent ping cycle: p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms over {} cycles",
        pct(cycles.clone(), 0.5),
        pct(cycles.clone(), 0.95),
        pct(cycles.clone(), 1.0),
        cycles.len()
    );
    println!(
        "runner CPU while coordinating 50 agents at one ping a second: {:.2}% of one core ({} ticks in {:.1} s)",
        ticks as f64 / hz / secs * 100.0,
        ticks,
        secs
    );

    let (_, child) = run_plan(
        dir.path(),
        "spawn",
        &format!(
            "agents = {spawn_agents}\nbatch_size = 50\ncycles = 5\ninterval = \"2s\"\nmessages = [\"ping\"]\nheartbeat = \"2s\"\nstartup_timeout = \"60s\"\nresponse_timeout = \"30s\""
        ),
    );
    let evs = finish(child);
    let spawns: Vec<f64> =
        evs.iter().filter(|e| e["kind"] == "spawn").filter_map(|e| e["latency_ms"].as_f64()).collect();
    let n = spawns.len();
    let mean = spawns.iter().sum::<f64>() / n.max(1) as f64;
    let first: Vec<f64> = spawns.iter().take(128).copied().collect();
    println!(
        "{spawn_agents} agents in batches of 50: spawn latency mean {mean:.1} ms, p95 {:.1} ms (first 128 agents, which get inotify: mean {:.1} ms)",
        pct(spawns.clone(), 0.95),
        first.iter().sum::<f64>() / first.len().max(1) as f64
    );
    let cycles: Vec<&serde_json::Value> = evs.iter().filter(|e| e["kind"] == "cycle").collect();
    let full: Vec<f64> = cycles.iter().filter(|c| c["value"] == 1.0).filter_map(|c| c["latency_ms"].as_f64()).collect();
    println!(
        "{spawn_agents}-agent coordination cycle over files: p50 {:.1} ms, max {:.1} ms ({} of {} cycles answered by every agent)",
        pct(full.clone(), 0.5),
        pct(full.clone(), 1.0),
        full.len(),
        cycles.len()
    );
}
