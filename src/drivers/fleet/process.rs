//! The fleet's processes: starting agents (and restarting them), signalling them for faults,
//! sampling their resources, and the teardown that leaves no process and no file behind. The
//! coordination itself (cycles, heartbeats, protocol) is in the parent module.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;

use super::transport::Transport;
use super::{AgentState, Coordinator, FleetFault, protocol};

const TERM_GRACE: Duration = Duration::from_secs(2);

pub(super) fn signal_of(name: Option<&str>) -> i32 {
    match name.unwrap_or("KILL").trim_start_matches("SIG") {
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        "STOP" => libc::SIGSTOP,
        _ => libc::SIGKILL,
    }
}

pub(super) fn send_signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid this driver spawned.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

pub(super) fn pid_alive(pid: u32) -> bool {
    // A zombie still "exists"; check /proc state so reaped-later children are not counted.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

impl Coordinator<'_> {
    /// Start (or restart) one agent process and watch for its exit.
    pub(super) fn spawn(&self, id: &str) -> Result<(), String> {
        let cfg = self.cfg;
        let hb_ms = self.ctx.clock.scaled(cfg.heartbeat.0).as_millis().max(10) as u64;
        let mut cmd = if cfg.command.is_empty() {
            let exe = std::env::current_exe().map_err(|e| format!("cannot find the planrun binary: {e}"))?;
            // `planrun-agent` beside us starts several times faster than `planrun agent`.
            let lean = exe.with_file_name("planrun-agent");
            let mut c = if lean.is_file() {
                tokio::process::Command::new(lean)
            } else {
                let mut c = tokio::process::Command::new(exe);
                c.arg("agent");
                c
            };
            c.args(["--id", id, "--dir", &self.transport.address(), "--heartbeat-ms", &hb_ms.to_string()]);
            if let Some(m) = cfg.misbehave.as_ref().filter(|m| m.agents.is_empty() || m.agents.iter().any(|a| a == id))
            {
                if let Some(s) = m.slow {
                    c.args(["--slow-ms", &self.ctx.clock.scaled(s.0).as_millis().to_string()]);
                }
                if let Some(b) = m.leak_bytes {
                    c.args(["--leak-bytes", &b.to_string()]);
                }
                if let Some(n) = m.crash_after {
                    c.args(["--crash-after", &n.to_string()]);
                }
                if m.garbage {
                    c.arg("--garbage");
                }
            }
            c
        } else {
            let mut c = tokio::process::Command::new(&cfg.command[0]);
            c.args(&cfg.command[1..]);
            c
        };
        cmd.env("PLANRUN_AGENT_ID", id)
            .env("PLANRUN_COORD_DIR", self.transport.address())
            .env("PLANRUN_HEARTBEAT_MS", hb_ms.to_string())
            .env("PLANRUN_SEED", self.ctx.seed_for(&[id]).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .process_group(0);
        // Agents die with the runner even if it is SIGKILLed. The built-in agent asks for that
        // itself; for other commands it is set between fork and exec (which costs a full fork
        // instead of the cheaper vfork path, so the built-in agent skips it).
        if !cfg.command.is_empty() {
            // SAFETY: prctl is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let spawned_ms = self.now();
        let spawned_wall_ms = protocol::now_ms_f64();
        let mut child = cmd.spawn().map_err(|e| format!("cannot start agent {id}: {e}"))?;
        let pid = child.id();
        {
            let mut s = self.shared();
            let restarts = s.agents.get(id).map_or(0, |a| a.restarts);
            s.agents.insert(
                id.to_string(),
                AgentState {
                    pid,
                    spawned_wall_ms,
                    first_beat: false,
                    last_beat_ms: spawned_ms,
                    alive: true,
                    unresponsive: false,
                    restarts,
                },
            );
        }
        let (shared, changed, events, id) =
            (Arc::clone(&self.shared), Arc::clone(&self.changed), self.ctx.events.clone(), id.to_string());
        tokio::spawn(async move {
            let status = child.wait().await;
            let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
            let tearing_down = s.tearing_down;
            if let Some(a) = s.agents.get_mut(&id).filter(|a| a.pid == pid) {
                a.alive = false;
            }
            drop(s);
            if !tearing_down {
                let mut ev = events.event("crash").agent(id.as_str()).ok(false);
                match status {
                    Ok(st) => {
                        use std::os::unix::process::ExitStatusExt;
                        if let Some(c) = st.code() {
                            ev = ev.status(c as i64).error(format!("exited with code {c}"));
                        } else {
                            ev = ev.error(format!("killed by signal {}", st.signal().unwrap_or(0)));
                        }
                    }
                    Err(e) => ev = ev.error(e.to_string()),
                }
                events.emit(ev);
            }
            changed.notify_waiters();
        });
        Ok(())
    }

    pub(super) async fn faults(&self) {
        let mut faults: Vec<&FleetFault> = self.cfg.faults.iter().collect();
        faults.sort_by_key(|f| f.at);
        let start = self.now();
        for f in faults {
            let at = start + self.ctx.clock.scaled(f.at.0).as_secs_f64() * 1000.0;
            let wait = at - self.now();
            if wait > 0.0 {
                self.ctx.clock.sleep_unscaled(Duration::from_secs_f64(wait / 1000.0)).await;
            }
            let n = f.kill.or(f.pause).unwrap_or(1) as usize;
            let mut chosen: Vec<(String, u32)> = {
                let s = self.shared();
                let alive: Vec<(String, u32)> =
                    s.agents.iter().filter(|(_, a)| a.alive).filter_map(|(id, a)| Some((id.clone(), a.pid?))).collect();
                if f.agents.is_empty() {
                    alive
                } else {
                    alive.into_iter().filter(|(id, _)| f.agents.contains(id)).collect()
                }
            };
            if let Ok(mut rng) = self.rng.lock() {
                chosen.shuffle(&mut *rng);
            }
            chosen.truncate(n);
            chosen.sort();
            let names: Vec<&str> = chosen.iter().map(|(id, _)| id.as_str()).collect();
            if f.pause.is_some() {
                for (_, pid) in &chosen {
                    send_signal(*pid, libc::SIGSTOP);
                }
                self.ctx.events.emit(
                    self.ctx
                        .events
                        .event("fault")
                        .name("pause")
                        .attrs(serde_json::json!({ "agents": names, "for_ms": f.for_.map(|d| d.0.as_millis()) })),
                );
                let (pids, d) = (
                    chosen.iter().map(|(_, p)| *p).collect::<Vec<_>>(),
                    self.ctx.clock.scaled(f.for_.map(|d| d.0).unwrap_or(Duration::from_secs(10))),
                );
                let (events, clock) = (self.ctx.events.clone(), self.ctx.clock.clone());
                tokio::spawn(async move {
                    clock.sleep_unscaled(d).await;
                    for pid in pids {
                        send_signal(pid, libc::SIGCONT);
                    }
                    events.emit(events.event("fault").name("resume"));
                });
            } else {
                let sig = signal_of(f.signal.as_deref());
                for (_, pid) in &chosen {
                    send_signal(*pid, sig);
                }
                self.ctx.events.emit(
                    self.ctx
                        .events
                        .event("fault")
                        .name("kill")
                        .attrs(serde_json::json!({ "agents": names, "signal": f.signal.as_deref().unwrap_or("KILL") })),
                );
            }
        }
        std::future::pending::<()>().await;
    }

    /// Every `sample_interval`: system CPU and memory, the runner's RSS, each agent's RSS and CPU.
    pub(super) async fn sample(&self) {
        let Some(every) = self.cfg.sample_interval else { return std::future::pending().await };
        let Ok(mut sys) = sysinfo::System::new() else { return std::future::pending().await };
        let me = sysinfo::get_current_pid().ok();
        loop {
            sys.refresh_cpu_usage();
            sys.refresh_memory();
            sys.refresh_processes(sysinfo::ProcessesToUpdate::All, true);
            let e = &self.ctx.events;
            e.emit(e.event("sample").name("system_cpu").value(sys.global_cpu_usage() as f64, "percent"));
            e.emit(e.event("sample").name("system_memory_used").value(sys.used_memory() as f64, "bytes"));
            if let Some(p) = me.and_then(|pid| sys.process(pid)) {
                e.emit(e.event("sample").name("runner_rss_bytes").value(p.memory() as f64, "bytes"));
            }
            let agents: Vec<(String, u32)> = self
                .shared()
                .agents
                .iter()
                .filter(|(_, a)| a.alive)
                .filter_map(|(id, a)| Some((id.clone(), a.pid?)))
                .collect();
            for (id, pid) in agents {
                if let Some(p) = sys.process(sysinfo::Pid::from_u32(pid)) {
                    e.emit(
                        e.event("sample").name("agent_rss_bytes").agent(id.as_str()).value(p.memory() as f64, "bytes"),
                    );
                    e.emit(
                        e.event("sample").name("agent_cpu").agent(id.as_str()).value(p.cpu_usage() as f64, "percent"),
                    );
                }
            }
            self.ctx.clock.sleep(every.0).await;
        }
    }

    /// TERM every agent, KILL what is left after a grace period, check nothing survived, and
    /// remove the coordination directory unless `keep`.
    pub(super) async fn teardown(&self) {
        let pids: Vec<u32> = {
            let mut s = self.shared();
            s.tearing_down = true;
            s.agents.values().filter(|a| a.alive).filter_map(|a| a.pid).collect()
        };
        for pid in &pids {
            send_signal(*pid, libc::SIGCONT); // a paused agent cannot act on TERM
            send_signal(*pid, libc::SIGTERM);
        }
        let deadline = self.now() + TERM_GRACE.as_secs_f64() * 1000.0;
        let stopped = self.wait_until(deadline, |s| s.agents.values().all(|a| !a.alive)).await;
        let mut killed = 0;
        if !stopped {
            for a in self.shared().agents.values().filter(|a| a.alive) {
                if let Some(pid) = a.pid {
                    send_signal(pid, libc::SIGKILL);
                    killed += 1;
                }
            }
            let deadline = self.now() + 5000.0;
            self.wait_until(deadline, |s| s.agents.values().all(|a| !a.alive)).await;
        }
        let orphans = pids.iter().filter(|p| pid_alive(**p)).count();
        let files_left = if self.cfg.keep {
            self.transport.leftovers()
        } else {
            let _ = self.transport.cleanup();
            usize::from(std::path::Path::new(&self.transport.address()).exists())
        };
        self.ctx.events.emit(
            self.ctx.events.event("teardown").ok(orphans == 0 && (self.cfg.keep || files_left == 0)).value(orphans as f64, "processes").attrs(
                serde_json::json!({ "agents": pids.len(), "killed_after_grace": killed, "orphans": orphans, "files_left": files_left, "kept": self.cfg.keep }),
            ),
        );
    }
}
