//! The operating-system side of agents: which program to start (`AgentProgram`, with the lean
//! `planrun-agent` preferred and a loud fallback), starting one agent (`Launcher::start`),
//! watching it exit (`Started::exited`), signalling it (`Signal`), checking no process survived
//! (`pid_alive`), and sampling processes' CPU and memory (`sample`). It knows nothing of the
//! protocol or of the coordinator's bookkeeping.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::config::{Fleet, Misbehave};
use super::protocol::{ENV_AGENT_ID, ENV_DOORBELL, ENV_HEARTBEAT_MS, ENV_SEED};
use crate::clock::Clock;

/// The lean agent executable the driver looks for beside `planrun`.
pub const LEAN_AGENT: &str = "planrun-agent";

/// What the fleet starts for each agent.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentProgram {
    /// The built-in agent as its own small executable (starts in a few milliseconds).
    Lean(PathBuf),
    /// The built-in agent as `planrun agent`, when `planrun-agent` is missing: the same agent,
    /// but each start loads the whole planrun binary (about 50x slower to spawn).
    Subcommand { planrun: PathBuf, missing: PathBuf },
    /// The plan's `command`.
    Command(Vec<String>),
}

impl AgentProgram {
    /// The program for `cfg`: its `command`, else the built-in agent beside this executable.
    pub fn for_fleet(cfg: &Fleet) -> Result<AgentProgram, String> {
        if !cfg.command.is_empty() {
            return Ok(AgentProgram::Command(cfg.command.clone()));
        }
        let exe = std::env::current_exe().map_err(|e| format!("cannot find the planrun binary: {e}"))?;
        Ok(AgentProgram::builtin_beside(&exe))
    }

    /// The built-in agent for the planrun executable at `planrun`: `planrun-agent` in the same
    /// directory when it is there, else `planrun agent`.
    pub fn builtin_beside(planrun: &Path) -> AgentProgram {
        let lean = planrun.with_file_name(LEAN_AGENT);
        if lean.is_file() {
            AgentProgram::Lean(lean)
        } else {
            AgentProgram::Subcommand { planrun: planrun.to_path_buf(), missing: lean }
        }
    }

    /// What a person should hear about this choice, if anything.
    pub fn warning(&self) -> Option<String> {
        match self {
            AgentProgram::Subcommand { missing, .. } => Some(format!(
                "{LEAN_AGENT} not found at {}; starting agents as `planrun agent`, which is about 50x slower to \
                 spawn (spawn latencies are not representative). Build it with `cargo build --release --bins` \
                 so it sits beside planrun",
                missing.display()
            )),
            _ => None,
        }
    }
}

/// How a process ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Waiting for it failed.
    Unknown(String),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exited with code {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
            Exit::Unknown(e) => f.write_str(e),
        }
    }
}

/// The signals the fleet sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Kill,
    Term,
    Int,
    Stop,
    Cont,
    /// The doorbell: a message is waiting (sent only to built-in agents that block it).
    Usr1,
}

impl Signal {
    /// A fault's `signal` (`KILL`, `SIGTERM`, …); None for a name the fleet does not send.
    pub fn parse(name: &str) -> Option<Signal> {
        match name.trim_start_matches("SIG") {
            "KILL" => Some(Signal::Kill),
            "TERM" => Some(Signal::Term),
            "INT" => Some(Signal::Int),
            "STOP" => Some(Signal::Stop),
            _ => None,
        }
    }

    fn number(self) -> i32 {
        match self {
            Signal::Kill => libc::SIGKILL,
            Signal::Term => libc::SIGTERM,
            Signal::Int => libc::SIGINT,
            Signal::Stop => libc::SIGSTOP,
            Signal::Cont => libc::SIGCONT,
            Signal::Usr1 => libc::SIGUSR1,
        }
    }

    /// Send this signal to `pid` (a process the fleet started).
    pub fn send(self, pid: u32) {
        // SAFETY: kill(2) has no memory effects; the pid is one this driver spawned.
        unsafe {
            libc::kill(pid as i32, self.number());
        }
    }
}

/// Whether `pid` is still a running process (a zombie, dead but not yet reaped, is not).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

/// Starts agents: one program, the heartbeat and misbehaviour switches every agent shares.
pub struct Launcher {
    program: AgentProgram,
    heartbeat_ms: u64,
    misbehave: Option<Misbehave>,
    /// `misbehave.slow`, scaled to clock time.
    slow_ms: Option<u128>,
}

/// A started agent process. Dropping it kills the process.
pub struct Started {
    pub pid: Option<u32>,
    child: tokio::process::Child,
}

impl Started {
    /// Wait for the process to end.
    pub async fn exited(mut self) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        match self.child.wait().await {
            Ok(st) => match st.code() {
                Some(c) => Exit::Code(c),
                None => Exit::Signal(st.signal().unwrap_or(0)),
            },
            Err(e) => Exit::Unknown(e.to_string()),
        }
    }
}

impl Launcher {
    pub fn new(program: AgentProgram, cfg: &Fleet, clock: &Clock) -> Launcher {
        Launcher {
            program,
            heartbeat_ms: clock.scaled(cfg.heartbeat.0).as_millis().max(10) as u64,
            misbehave: cfg.misbehave.clone(),
            slow_ms: cfg.misbehave.as_ref().and_then(|m| m.slow).map(|s| clock.scaled(s.0).as_millis()),
        }
    }

    pub fn program(&self) -> &AgentProgram {
        &self.program
    }

    /// Whether the agents answer the doorbell (`Signal::Usr1`): only the built-in agent does;
    /// any other program would die of it.
    pub fn doorbell(&self) -> bool {
        !matches!(self.program, AgentProgram::Command(_))
    }

    /// Start agent `id` with the transport's environment `env` and its own `seed`.
    pub fn start(&self, id: &str, env: &[(&'static str, String)], seed: u64) -> Result<Started, String> {
        let mut cmd = match &self.program {
            AgentProgram::Lean(path) => tokio::process::Command::new(path),
            AgentProgram::Subcommand { planrun, .. } => {
                let mut c = tokio::process::Command::new(planrun);
                c.arg("agent");
                c
            }
            AgentProgram::Command(argv) => {
                let mut c = tokio::process::Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }
        };
        if !matches!(self.program, AgentProgram::Command(_)) {
            cmd.args(self.builtin_args(id)).env(ENV_DOORBELL, "true");
        }
        cmd.env(ENV_AGENT_ID, id)
            .env(ENV_HEARTBEAT_MS, self.heartbeat_ms.to_string())
            .env(ENV_SEED, seed.to_string())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .process_group(0);
        // Agents die with the runner even if it is SIGKILLed. The built-in agent asks for that
        // itself; for other commands it is set between fork and exec (which costs a full fork
        // instead of the cheaper vfork path, so the built-in agent skips it).
        if matches!(self.program, AgentProgram::Command(_)) {
            // SAFETY: prctl is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().map_err(|e| format!("cannot start agent {id}: {e}"))?;
        Ok(Started { pid: child.id(), child })
    }

    /// The built-in agent's arguments for agent `id`: its id (so `ps` shows which agent is
    /// which; everything else arrives in the environment) and its misbehaviour switches.
    fn builtin_args(&self, id: &str) -> Vec<String> {
        let mut a = vec!["--id".to_string(), id.to_string()];
        let Some(m) = self.misbehave.as_ref().filter(|m| m.applies_to(id)) else { return a };
        let mut flag = |name: &str, value: Option<String>| {
            a.push(name.to_string());
            a.extend(value);
        };
        if let Some(ms) = self.slow_ms {
            flag("--slow-ms", Some(ms.to_string()));
        }
        if let Some(b) = m.leak_bytes {
            flag("--leak-bytes", Some(b.to_string()));
        }
        if let Some(n) = m.crash_after {
            flag("--crash-after", Some(n.to_string()));
        }
        if m.garbage {
            flag("--garbage", None);
        }
        if m.silent {
            flag("--silent", None);
        }
        if let Some(other) = &m.impersonate {
            flag("--impersonate", Some(other.clone()));
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lean_agent_is_used_when_it_sits_beside_planrun() {
        let dir = tempfile::tempdir().unwrap();
        let planrun = dir.path().join("planrun");
        std::fs::write(&planrun, "").unwrap();
        std::fs::write(dir.path().join(LEAN_AGENT), "").unwrap();
        let p = AgentProgram::builtin_beside(&planrun);
        assert_eq!(p, AgentProgram::Lean(dir.path().join(LEAN_AGENT)));
        assert_eq!(p.warning(), None);
    }

    #[test]
    fn falling_back_to_the_subcommand_says_what_is_missing_and_how_to_build_it() {
        let dir = tempfile::tempdir().unwrap();
        let planrun = dir.path().join("planrun");
        std::fs::write(&planrun, "").unwrap();
        let p = AgentProgram::builtin_beside(&planrun);
        assert!(matches!(&p, AgentProgram::Subcommand { planrun: exe, .. } if *exe == planrun), "{p:?}");
        let w = p.warning().expect("a warning");
        assert!(w.contains(&dir.path().join(LEAN_AGENT).display().to_string()), "{w}");
        assert!(w.contains("cargo build --release --bins"), "{w}");
        assert!(w.contains("`planrun agent`"), "{w}");
    }

    #[test]
    fn misbehaviour_switches_reach_only_the_agents_named() {
        let cfg: Fleet = serde_json::from_value(serde_json::json!({
            "agents": 2,
            "heartbeat": "100ms",
            "misbehave": { "agents": ["agent-1"], "slow": "2s", "silent": true, "impersonate": "agent-2", "crash_after": 4 },
        }))
        .unwrap();
        let l = Launcher::new(AgentProgram::Lean("planrun-agent".into()), &cfg, &Clock::new(0.5, 0.0, false));
        assert_eq!(
            l.builtin_args("agent-1"),
            ["--id", "agent-1", "--slow-ms", "1000", "--crash-after", "4", "--silent", "--impersonate", "agent-2"]
        );
        assert_eq!(l.builtin_args("agent-2"), ["--id", "agent-2"]);
        assert_eq!(l.heartbeat_ms, 50, "scaled by the clock");
    }

    #[test]
    fn signals_are_the_ones_the_fleet_sends() {
        assert_eq!(Signal::parse("KILL"), Some(Signal::Kill));
        assert_eq!(Signal::parse("SIGTERM"), Some(Signal::Term));
        assert_eq!(Signal::parse("HUP"), None);
    }
}
