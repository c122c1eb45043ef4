//! Resource sampling shared by drivers: every `every`, the host's CPU and memory, the runner's
//! own RSS, and the CPU and RSS of a set of processes — a fleet's agents, or the system under
//! test of an `http` stage (`monitor = { pids, name, cmdline }`). Rows are `sample` events
//! (`name` = `system_cpu`, `system_memory_used`, `runner_rss_bytes`, `{label}_rss_bytes`,
//! `{label}_cpu`; `agent` = the process's id). It owns no schedule of its own: the driver runs
//! it beside its work and drops it when the work ends.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::events::Emitter;
use crate::plan::Dur;

/// Which processes of the system under test to sample, as a plan writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MonitorCfg {
    /// Process ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<u32>,
    /// Process names, matched exactly (`nginx`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub name: Vec<String>,
    /// Text anywhere in the command line (`serve-demo`); planrun itself is never matched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmdline: Vec<String>,
    /// How often to sample, in plan time (default 1 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<Dur>,
}

impl MonitorCfg {
    pub fn interval(&self) -> Duration {
        self.every.map_or(Duration::from_secs(1), |d| d.0)
    }

    /// The processes it names that exist now, as (label, pid): `nginx:1234`.
    fn find(&self, sys: &sysinfo::System, me: Option<sysinfo::Pid>) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for (pid, p) in sys.processes() {
            if Some(*pid) == me || p.thread_kind().is_some() {
                continue;
            }
            let name = p.name().to_string_lossy();
            let by_pid = self.pids.contains(&pid.as_u32());
            let by_name = self.name.iter().any(|n| *n == name);
            let by_cmd = !self.cmdline.is_empty() && {
                let cmd: Vec<String> = p.cmd().iter().map(|a| a.to_string_lossy().into_owned()).collect();
                let line = cmd.join(" ");
                self.cmdline.iter().any(|c| line.contains(c.as_str()))
            };
            if by_pid || by_name || by_cmd {
                out.push((format!("{name}:{}", pid.as_u32()), pid.as_u32()));
            }
        }
        out.sort_by_key(|(_, pid)| *pid);
        out
    }
}

/// Every `every` (plan time): system CPU and memory, the runner's RSS, and each of `procs()`'s
/// RSS and CPU under `{label}_rss_bytes` / `{label}_cpu`. Runs until dropped.
pub async fn sample(
    every: Duration,
    clock: &Clock,
    events: &Emitter,
    label: &str,
    mut procs: impl FnMut(&sysinfo::System) -> Vec<(String, u32)>,
) {
    let Ok(mut sys) = sysinfo::System::new() else { return std::future::pending().await };
    let me = sysinfo::get_current_pid().ok();
    let (rss, cpu) = (format!("{label}_rss_bytes"), format!("{label}_cpu"));
    // CPU use is measured between two refreshes: the first reading of each process is 0, so
    // CPU rows start from the second sample (memory from the first).
    let mut first = true;
    loop {
        sys.refresh_cpu_usage();
        sys.refresh_memory();
        // Command lines are read once per process (they are what `cmdline` matches).
        let what =
            sysinfo::ProcessRefreshKind::nothing().with_memory().with_cpu().with_cmd(sysinfo::UpdateKind::OnlyIfNotSet);
        sys.refresh_processes_specifics(sysinfo::ProcessesToUpdate::All, true, what);
        let e = events;
        if !first {
            e.emit(e.event("sample").name("system_cpu").value(sys.global_cpu_usage() as f64, "percent"));
        }
        e.emit(e.event("sample").name("system_memory_used").value(sys.used_memory() as f64, "bytes"));
        if let Some(p) = me.and_then(|pid| sys.process(pid)) {
            e.emit(e.event("sample").name("runner_rss_bytes").value(p.memory() as f64, "bytes"));
        }
        for (id, pid) in procs(&sys) {
            if let Some(p) = sys.process(sysinfo::Pid::from_u32(pid)) {
                e.emit(e.event("sample").name(rss.as_str()).agent(id.as_str()).value(p.memory() as f64, "bytes"));
                if !first {
                    let v = p.cpu_usage() as f64;
                    e.emit(e.event("sample").name(cpu.as_str()).agent(id.as_str()).value(v, "percent"));
                }
            }
        }
        first = false;
        clock.sleep(every).await;
    }
}

/// Sample the processes `cfg` names (found afresh each time, so a restarted target is followed).
pub async fn sample_targets(cfg: &MonitorCfg, clock: &Clock, events: &Emitter) {
    let me = sysinfo::get_current_pid().ok();
    sample(cfg.interval(), clock, events, "target", |sys| cfg.find(sys, me)).await
}

/// Memory now, read once: the summed RSS of the processes `cfg` names (None when none is
/// found), and this process's own RSS.
pub fn rss_now(cfg: Option<&MonitorCfg>) -> (Option<u64>, Option<u64>) {
    let Ok(mut sys) = sysinfo::System::new() else { return (None, None) };
    let what = sysinfo::ProcessRefreshKind::nothing().with_memory().with_cmd(sysinfo::UpdateKind::OnlyIfNotSet);
    sys.refresh_processes_specifics(sysinfo::ProcessesToUpdate::All, true, what);
    let me = sysinfo::get_current_pid().ok();
    let theirs = cfg.and_then(|c| {
        let found = c.find(&sys, me);
        (!found.is_empty()).then(|| {
            found.iter().filter_map(|(_, pid)| sys.process(sysinfo::Pid::from_u32(*pid))).map(|p| p.memory()).sum()
        })
    });
    (theirs, me.and_then(|pid| sys.process(pid)).map(|p| p.memory()))
}
