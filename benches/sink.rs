//! `just bench-sink`: push 10 million events through the event sink into events.jsonl and
//! print events/s and the process's peak RSS. Target: ≥ 1,000,000 events/s on 2 cores, with
//! peak RSS independent of the event count (the sink streams; nothing accumulates).
//!
//! Usage: cargo bench --bench sink -- [EVENTS] [PRODUCERS]

use std::sync::Arc;
use std::time::Instant;

use planrun::events::event::Event;
use planrun::events::sink::{EventSink, Position};

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let total: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(10_000_000);
    let producers: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    let (sink, handle) = EventSink::open(&path, Position::default()).expect("open sink");

    let phase: Arc<str> = "load".into();
    let stage: Arc<str> = "burst".into();
    let driver: Arc<str> = "bench".into();
    let agents: Vec<Arc<str>> = (0..50).map(|i| Arc::from(format!("agent-{i}"))).collect();
    let rss_before = peak_rss_mib();
    let start = Instant::now();
    std::thread::scope(|s| {
        for p in 0..producers {
            let sink = sink.clone();
            let (phase, stage, driver, agents) = (phase.clone(), stage.clone(), driver.clone(), &agents);
            s.spawn(move || {
                let n = total / producers + u64::from(p < total % producers);
                for i in 0..n {
                    // A realistic row: context, a name, an agent, ok, a latency and a value.
                    sink.send(&Event {
                        t_ms: i as f64 * 0.01,
                        ts: 1_795_000_000_000_000 + i as i64,
                        phase: phase.clone(),
                        stage: stage.clone(),
                        driver: driver.clone(),
                        kind: "response".into(),
                        name: Some("ping".into()),
                        agent: Some(agents[(i % 50) as usize].clone()),
                        ok: Some(true),
                        latency_ms: Some(1.0 + (i % 97) as f64 * 0.125),
                        value: Some(52_428_800.0),
                        unit: Some("bytes".into()),
                        ..Event::default()
                    });
                }
            });
        }
    });
    let stats = handle.close().expect("sink");
    drop(sink);
    let secs = start.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    assert_eq!(stats.events, total, "events lost");
    println!("sink: {total} events from {producers} producer(s) in {secs:.2} s");
    println!(
        "  throughput: {:.0} events/s ({:.0} MiB/s of JSONL)",
        total as f64 / secs,
        bytes as f64 / secs / 1048576.0
    );
    println!("  peak RSS:   {:.1} MiB (before the run: {:.1} MiB)", peak_rss_mib(), rss_before);
}
