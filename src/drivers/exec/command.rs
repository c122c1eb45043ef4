//! One execution of an `exec` stage's command: spawn it in its own process group (told to die
//! with the runner), keep the tails of stdout/stderr, end it with TERM then KILL on a timeout
//! or Ctrl-C, and emit one `exec` event with its duration, exit code and output tails.

use std::collections::VecDeque;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::config::Exec;
use crate::drivers::context::RUN_DIR_ENV;
use crate::drivers::{Outcome, StageContext, Status};
use crate::events::Event;
use crate::plan::Dur;

const TAIL_CAP_BYTES: usize = 16 * 1024;
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Keeps the last bytes of a stream.
async fn tail_of(mut r: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut keep: VecDeque<u8> = VecDeque::with_capacity(TAIL_CAP_BYTES);
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                keep.extend(&buf[..n]);
                let excess = keep.len().saturating_sub(TAIL_CAP_BYTES);
                keep.drain(..excess);
            }
        }
    }
    keep.into()
}

/// `planrun-metric NAME VALUE [UNIT]` lines a command printed (in the kept tail of its stdout):
/// each becomes a `metric` row, so a build can report its package size.
fn metric_lines(stdout: &[u8]) -> Vec<(String, f64, Option<String>)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            if w.next()? != "planrun-metric" {
                return None;
            }
            let name = w.next()?.to_string();
            let value = w.next()?.parse::<f64>().ok().filter(|v| v.is_finite())?;
            let unit = w.next().map(str::to_string);
            w.next().is_none().then_some((name, value, unit))
        })
        .collect()
}

fn last_lines(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn signal_group(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group we created for the child.
    unsafe {
        libc::kill(-(pid as i32), sig);
    }
}

impl Exec {
    pub(super) async fn execute(&self, ctx: &StageContext) -> Outcome {
        let (program, args) = self.program();
        let mut cmd = Command::new(&program);
        let run_dir = std::path::absolute(&ctx.run_dir).unwrap_or_else(|_| ctx.run_dir.clone());
        cmd.args(&args)
            .env(RUN_DIR_ENV, run_dir)
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd.process_group(0);
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to KILL the child when
        // the runner thread that spawned it dies, so no command outlives a killed runner.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let started = ctx.clock.now();
        let t0 = ctx.clock.elapsed_ms();
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("cannot start `{program}`: {e}");
                ctx.events.emit(ctx.events.event("exec").name(ctx.stage.as_str()).ok(false).error(msg.clone()).attrs(
                    serde_json::json!({
                        "command": self.shown(), "iteration": ctx.iteration,
                    }),
                ));
                return Outcome::with(Status::Error, msg);
            }
        };
        let pid = child.id().unwrap_or(0);
        let out = tokio::spawn(tail_of(child.stdout.take().expect("stdout is piped")));
        let err = tokio::spawn(tail_of(child.stderr.take().expect("stderr is piped")));

        let limit = self.command_timeout.map(|d| d.0);
        let deadline = async {
            match limit {
                Some(d) => ctx.clock.sleep(d).await,
                None => std::future::pending().await,
            }
        };
        enum End {
            Exited(std::io::Result<std::process::ExitStatus>),
            TimedOut,
            Cancelled,
        }
        let end = tokio::select! {
            s = child.wait() => End::Exited(s),
            _ = deadline => End::TimedOut,
            _ = ctx.cancel.cancelled() => End::Cancelled,
        };
        let exit = match &end {
            End::Exited(s) => s.as_ref().ok().copied(),
            End::TimedOut | End::Cancelled => {
                signal_group(pid, libc::SIGTERM);
                let graceful = tokio::select! {
                    s = child.wait() => Some(s.ok()),
                    _ = ctx.clock.sleep_unscaled(KILL_GRACE) => None,
                };
                match graceful {
                    Some(s) => s,
                    None => {
                        signal_group(pid, libc::SIGKILL);
                        child.wait().await.ok()
                    }
                }
            }
        };
        let latency = ctx.clock.now().duration_since(started);
        let stdout = out.await.unwrap_or_default();
        let stderr = err.await.unwrap_or_default();
        let code = exit.and_then(|s| s.code());
        let signal = exit.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s));

        let (status, error) = match (&end, code) {
            (End::Cancelled, _) => (Status::Interrupted, Some("interrupted".to_string())),
            (End::TimedOut, _) => {
                (Status::TimedOut, Some(format!("timed out after {}", Dur(limit.unwrap_or_default()))))
            }
            (End::Exited(_), Some(c)) if c == self.expect_exit => (Status::Passed, None),
            (End::Exited(_), Some(c)) => {
                (Status::Failed, Some(format!("exit code {c} (expected {})", self.expect_exit)))
            }
            (End::Exited(_), None) => (Status::Failed, Some(format!("killed by signal {}", signal.unwrap_or(0)))),
        };
        let mut ev =
            ctx.events.event("exec").name(ctx.stage.as_str()).ok(status == Status::Passed).latency(latency).attrs(
                serde_json::json!({
                    "command": self.shown(),
                    "pid": pid,
                    "signal": signal,
                    "iteration": ctx.iteration,
                    "started_ms": t0,
                    "stdout_tail": last_lines(&stdout, self.tail_lines),
                    "stderr_tail": last_lines(&stderr, self.tail_lines),
                }),
            );
        if let Some(c) = code {
            ev = ev.status(c as i64);
        }
        if let Some(e) = &error {
            ev = ev.error(e.clone());
        }
        ctx.events.emit(ev);
        for (name, value, unit) in metric_lines(&stdout) {
            let mut ev = ctx.events.event("metric").name(name);
            ev = match unit {
                Some(u) => ev.value(value, u),
                None => Event { value: Some(value), ..ev },
            };
            ctx.events.emit(ev.attrs(serde_json::json!({ "iteration": ctx.iteration })));
        }
        Outcome { status, message: error.map(|e| format!("`{}`: {e}", self.shown())) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_metric_lines_and_nothing_else() {
        let out = b"building\nplanrun-metric package_bytes 18874368 bytes\nplanrun-metric files 12\nplanrun-metric bad x\nplanrun-metric a 1 b extra\n";
        assert_eq!(
            metric_lines(out),
            vec![("package_bytes".into(), 18874368.0, Some("bytes".into())), ("files".into(), 12.0, None)]
        );
    }

    #[test]
    fn keeps_last_lines() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines(b"", 2), "");
    }
}
