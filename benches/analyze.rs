//! `just bench-analyze`: generate a 10-million-event run, time `planrun analyze` on it, and time
//! the same metrics computed with pandas from its Parquet, in the same run. Target: analyze in
//! under 15 s on 2 cores and at least 5× faster than pandas. The two run alternately,
//! `BENCH_RUNS` times each (default 3), and the medians are compared.
//!
//! Usage: cargo bench --bench analyze -- [EVENTS]   (needs python3 with pandas + pyarrow)

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use planrun::events::event::Event;
use planrun::events::parquet::{schema, to_frame};
use polars::prelude::*;

const PLAN: &str = r#"
[plan]
name = "bench"
criteria = [
  "success_rate >= 0.95",
  "error_rate < 0.05",
  "timeout_rate < 0.02",
  "sum(cost_usd) <= vars.budget_usd",
  'count(where kind == "crash") == 0',
]

[vars]
budget_usd = 100000.0

[[phase]]
name = "baseline"
criteria = ['p99(latency_ms where kind == "response" or kind == "spawn") < 5s']

[[phase.stage]]
name = "spawn"
driver = "sleep"
duration = "1h"
criteria = ['p95(latency_ms where name == "spawn") < 200ms', 'mean(latency_ms where name == "spawn") < 100ms']

[[phase.stage]]
name = "soak"
driver = "sleep"
duration = "1h"
criteria = [
  'growth(value where name == "rss_bytes") < 0.10',
  'cov(latency_ms where kind == "cycle") < 1.0',
  'rate(where kind == "response") > 10',
]

[[phase]]
name = "load"
criteria = ['p99(latency_ms where kind == "call") < 30s']

[[phase.stage]]
name = "burst"
driver = "sleep"
duration = "1h"
criteria = ['p999(latency_ms where kind == "response" and agent in ["agent-1", "agent-2"]) < 10s', "throughput > 100"]

[[phase.stage]]
name = "llm"
driver = "sleep"
duration = "1h"
criteria = ['p(99.5, latency_ms where kind == "call" and ok) < 30s', "sum(tokens_out) > 0"]
"#;

/// Deterministic pseudo-random numbers (splitmix64): no dependency on rand's stream stability.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn generate(dir: &Path, total: u64) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("plan.resolved.toml"), PLAN).unwrap();
    let stages = [("baseline", "spawn"), ("baseline", "soak"), ("load", "burst"), ("load", "llm")];
    let per = total / stages.len() as u64;
    let hour = 3_600_000.0;
    let manifest = serde_json::json!({
        "planrun_version": "bench", "plan": {"name": "bench", "path": "bench", "sha256": "0"},
        "profile": null, "vars": {"budget_usd": 100000.0}, "args": [], "seed": 1, "time_scale": 1.0,
        "clock": "virtual", "host": {"os": "bench", "kernel": "", "hostname": "", "cpus": 2, "memory_bytes": 0},
        "status": "completed", "started_at": "2026-11-22T00:00:00.000Z", "ended_at": "2026-11-22T04:00:00.000Z",
        "stages": stages.iter().enumerate().map(|(i, (p, s))| serde_json::json!({
            "phase": p, "stage": s, "driver": "sleep", "status": "passed",
            "t_start_ms": i as f64 * hour, "t_end_ms": (i + 1) as f64 * hour, "events": per
        })).collect::<Vec<_>>(),
        "checkpoint": {"next_step": 4, "position": {"next_seq": total, "offset": 0}, "t_ms": 4.0 * hour}
    });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();

    let agents: Vec<Arc<str>> = (0..1000).map(|i| Arc::from(format!("agent-{i}"))).collect();
    let (phases, stage_names): (Vec<Arc<str>>, Vec<Arc<str>>) =
        stages.iter().map(|(p, s)| (Arc::from(*p), Arc::from(*s))).unzip();
    let driver: Arc<str> = "sleep".into();
    let file = std::fs::File::create(dir.join("events.parquet")).unwrap();
    let mut writer =
        ParquetWriter::new(file).with_compression(ParquetCompression::Zstd(None)).batched(&schema()).unwrap();
    let mut rng = Rng(42);
    let mut seq = 0u64;
    let mut batch = Vec::with_capacity(1 << 20);
    for (si, _) in stages.iter().enumerate() {
        let t0 = si as f64 * hour;
        for i in 0..per {
            let t_ms = t0 + hour * i as f64 / per as f64;
            let u = rng.unit();
            let mut ev = Event {
                seq,
                t_ms,
                ts: 1_795_000_000_000_000 + (t_ms * 1000.0) as i64,
                phase: phases[si].clone(),
                stage: stage_names[si].clone(),
                driver: driver.clone(),
                agent: Some(agents[(rng.next() % 1000) as usize].clone()),
                ..Event::default()
            };
            // A log-normal-ish latency: exp of a sum of uniforms.
            let lat = (3.0 + (rng.unit() + rng.unit() + rng.unit() - 1.5) * 1.2).exp();
            match (si, i % 10) {
                (0, _) => {
                    ev.kind = "spawn".into();
                    ev.name = Some("spawn".into());
                    ev.ok = Some(u > 0.01);
                    ev.latency_ms = Some(lat);
                }
                (1, 0) => {
                    ev.kind = "sample".into();
                    ev.name = Some("rss_bytes".into());
                    ev.value = Some(5e7 * (1.0 + 0.03 * i as f64 / per as f64) + rng.unit() * 1e6);
                    ev.unit = Some("bytes".into());
                }
                (1, 1) => {
                    ev.kind = "cycle".into();
                    ev.name = Some("cycle".into());
                    ev.ok = Some(true);
                    ev.latency_ms = Some(lat * 10.0);
                }
                (3, _) => {
                    ev.kind = "call".into();
                    ev.name = Some("completion".into());
                    ev.ok = Some(u > 0.02);
                    ev.latency_ms = Some(lat * 100.0);
                    ev.tokens_in = Some(200 + (rng.next() % 800) as i64);
                    ev.tokens_out = Some(50 + (rng.next() % 300) as i64);
                    ev.cost_usd = Some(0.0001 + rng.unit() * 0.001);
                }
                _ => {
                    ev.kind = "response".into();
                    ev.name = Some("ping".into());
                    ev.ok = Some(u > 0.015);
                    ev.latency_ms = Some(lat);
                }
            }
            if ev.ok == Some(false) {
                ev.error = Some(if u < 0.004 { "timeout".into() } else { "HTTP 503".into() });
            }
            batch.push(ev);
            seq += 1;
            if batch.len() == batch.capacity() {
                writer.write_batch(&to_frame(&batch).unwrap()).unwrap();
                batch.clear();
            }
        }
    }
    if !batch.is_empty() {
        writer.write_batch(&to_frame(&batch).unwrap()).unwrap();
    }
    writer.finish().unwrap();
}

fn main() {
    let total: u64 =
        std::env::args().skip(1).find(|a| !a.starts_with("--")).and_then(|s| s.parse().ok()).unwrap_or(10_000_000);
    // BENCH_KEEP=DIR keeps the generated run for inspection.
    let root = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("BENCH_KEEP").map_or_else(|| root.path().join("bench-run"), std::path::PathBuf::from);
    let t = Instant::now();
    generate(&dir, total);
    let size = std::fs::metadata(dir.join("events.parquet")).map(|m| m.len()).unwrap_or(0);
    println!(
        "generated {total} events ({:.0} MiB parquet) in {:.1} s",
        size as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );

    // On this VM memory a process touches for the first time after an idle spell is slow to fault
    // in (the host reclaims freed pages), so whichever tool runs first pays more. Run the two
    // alternately, BENCH_RUNS times each (default 3), and compare medians.
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(3).max(1);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pandas_metrics.py");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 1..=runs {
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_planrun")).arg("analyze").arg(&dir).output().unwrap();
        let s = t.elapsed().as_secs_f64();
        if !matches!(out.status.code(), Some(0 | 1)) {
            panic!("planrun analyze failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        ours.push(s);
        println!(
            "run {i}: planrun analyze {s:.2} s  ({})",
            String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or("")
        );

        let t = Instant::now();
        let out = Command::new("python3").arg(&script).arg(&dir).output();
        let s = t.elapsed().as_secs_f64();
        match out {
            Ok(o) if o.status.success() => {
                theirs.push(s);
                println!("run {i}: pandas (same metrics) {s:.2} s  ({})", String::from_utf8_lossy(&o.stdout).trim());
            }
            Ok(o) => {
                println!("pandas run failed (is pandas + pyarrow installed?): {}", String::from_utf8_lossy(&o.stderr));
                break;
            }
            Err(e) => {
                println!("could not run python3: {e}");
                break;
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ours = median(&mut ours);
    println!("planrun analyze: {ours:.2} s (median of {runs})");
    if !theirs.is_empty() {
        let n = theirs.len();
        let theirs = median(&mut theirs);
        println!("pandas (same metrics): {theirs:.2} s (median of {n})");
        println!("planrun is {:.1}x faster than pandas", theirs / ours);
    }
}
