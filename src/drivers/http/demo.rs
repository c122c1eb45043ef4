//! `demo = { … }` on an `http` stage: the stage starts its own target, `planrun serve-demo`,
//! as a child process on the stage's first host address before the load, and stops it (TERM,
//! then KILL) when the stage ends — so a plan runs on a machine with nothing else installed.
//! The child is told to die with the runner, and its pid joins the stage's `monitor`.

use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::target::Target;
use crate::plan::Dur;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DemoCfg {
    /// Start it (default); `false` leaves the target to whoever runs the plan.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// Multiply the demo's latencies by this (0: answer at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_scale: Option<f64>,
    /// Share of non-health requests answered 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// Freeze every response for `freeze_for` at the end of each such period (real time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_every: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_for: Option<Dur>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// The running demo server; stopped when dropped.
pub struct Demo {
    child: Child,
    pub pid: u32,
}

fn secs(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

impl Demo {
    pub async fn start(cfg: &DemoCfg, host: &Target, seed: u64) -> Result<Demo, String> {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find the planrun binary to start serve-demo: {e}"))?;
        let addr = format!("{}:{}", host.host, host.port);
        let mut cmd = Command::new(&exe);
        cmd.arg("serve-demo").args(["--addr", &addr, "--seed", &seed.to_string()]);
        if let Some(s) = cfg.latency_scale {
            cmd.args(["--latency-scale", &s.to_string()]);
        }
        if let Some(e) = cfg.error_rate {
            cmd.args(["--error-rate", &e.to_string()]);
        }
        if let Some(f) = cfg.freeze_every {
            cmd.args(["--freeze-every", &secs(f.0)]);
        }
        if let Some(f) = cfg.freeze_for {
            cmd.args(["--freeze-for", &secs(f.0)]);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; it asks the kernel to KILL the demo server when
        // the runner thread that spawned it dies, so it never outlives a killed runner.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| format!("cannot start {} serve-demo: {e}", exe.display()))?;
        let pid = child.id().unwrap_or(0);
        let mut out = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        let mut err = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
        let ready = tokio::time::timeout(Duration::from_secs(20), async {
            let mut err_open = true;
            loop {
                tokio::select! {
                    line = out.next_line() => match line {
                        Ok(Some(l)) if l.starts_with("listening on") => return Ok(()),
                        Ok(Some(_)) => {}
                        _ => break,
                    },
                    line = err.next_line(), if err_open => match line {
                        Ok(Some(l)) => return Err(l),
                        _ => err_open = false,
                    },
                }
            }
            Err("it exited before listening".to_string())
        })
        .await;
        match ready {
            Ok(Ok(())) => {
                // Keep draining its output so it never blocks on a full pipe.
                tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
                tokio::spawn(async move { while let Ok(Some(_)) = err.next_line().await {} });
                Ok(Demo { child, pid })
            }
            Ok(Err(why)) => Err(format!("serve-demo on {addr} did not start: {why}")),
            Err(_) => Err(format!("serve-demo on {addr} did not start listening within 20 s")),
        }
    }

    /// TERM, then KILL after a grace period.
    pub async fn stop(mut self) {
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(3), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}
