//! One timed execution of a command, through the launcher (`launch`): the launcher times it from just before the spawn to `wait4`'s return (what
//! hyperfine times) and reports the kernel's accounting of exactly that child — user and system
//! CPU time, peak RSS. Output goes to temporary files, not pipes, so a chatty command cannot
//! block on a full pipe; the tail of stderr and, when an op count is wanted, stdout are read
//! back after the exit.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::NamedTempFile;

use super::launch::SUBCOMMAND;

/// How much of a run's output is read back.
const STDERR_TAIL: u64 = 4 * 1024;
const STDOUT_CAP: u64 = 1024 * 1024;

/// The lean executable beside `planrun` the launcher runs as.
pub const LEAN: &str = "planrun-agent";

/// Which program runs the launcher.
#[derive(Clone, Debug)]
pub struct Launcher {
    pub program: PathBuf,
    /// Set when the lean binary is missing and planrun itself launches (a higher RSS floor).
    pub fallback_note: Option<String>,
}

impl Launcher {
    /// `planrun-agent` beside this executable, else this executable.
    pub fn find() -> Result<Launcher, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find the planrun binary: {e}"))?;
        Ok(Launcher::beside(&exe))
    }

    pub fn beside(planrun: &Path) -> Launcher {
        let lean = planrun.with_file_name(LEAN);
        if lean.is_file() {
            Launcher { program: lean, fallback_note: None }
        } else {
            Launcher {
                program: planrun.to_path_buf(),
                fallback_note: Some(format!(
                    "{LEAN} not found at {}; benchmarked commands are started from planrun itself, so their peak RSS \
                     has a higher floor (the launcher's own pages). Build it with `cargo build --release --bins`",
                    lean.display()
                )),
            }
        }
    }
}

/// What to run (where its output goes is `Outputs`).
pub struct Spec<'a> {
    pub program: &'a str,
    pub args: &'a [String],
    pub env: &'a std::collections::BTreeMap<String, String>,
    pub cwd: Option<&'a str>,
}

/// One run's figures, from the kernel.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    pub pid: u32,
    pub wall: Duration,
    pub user: Duration,
    pub sys: Duration,
    /// Peak resident set size in bytes (`ru_maxrss`, which Linux gives in KiB).
    pub max_rss: u64,
    pub exit: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr_tail: String,
}

/// Temporary files a run's output goes to.
pub struct Outputs {
    stdout: Option<NamedTempFile>,
    stderr: NamedTempFile,
}

impl Outputs {
    pub fn new(capture_stdout: bool) -> std::io::Result<Outputs> {
        Ok(Outputs {
            stdout: if capture_stdout { Some(NamedTempFile::new()?) } else { None },
            stderr: NamedTempFile::new()?,
        })
    }
}

fn read_tail(f: &mut File, keep: u64) -> String {
    let len = f.seek(SeekFrom::End(0)).unwrap_or(0);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(len.saturating_sub(keep))).is_ok() {
        let _ = f.take(keep).read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A started run: the launcher, reading its report.
pub struct Running {
    launcher: std::process::Child,
    report: BufReader<std::process::ChildStdout>,
    /// The launcher's pid.
    pub pid: u32,
}

/// Start the command through the launcher.
pub fn spawn(launcher: &Launcher, spec: &Spec, out: &Outputs) -> Result<Running, String> {
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let mut cmd = Command::new(&launcher.program);
    cmd.arg(SUBCOMMAND)
        .arg(out.stdout.as_ref().map_or_else(|| "-".to_string(), |f| path(f.path())))
        .arg(path(out.stderr.path()))
        .arg(spec.cwd.unwrap_or("-"))
        .arg("--")
        .arg(spec.program)
        .args(spec.args)
        .envs(spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child =
        cmd.spawn().map_err(|e| format!("cannot start the launcher {}: {e}", launcher.program.display()))?;
    let Some(stdout) = child.stdout.take() else {
        return Err("the launcher's stdout is not piped".into());
    };
    let pid = child.id();
    Ok(Running { launcher: child, report: BufReader::new(stdout), pid })
}

/// Wait for a started run (blocking), and read its figures.
pub fn wait(mut run: Running, out: &mut Outputs) -> Result<Measured, String> {
    let mut line = String::new();
    let _ = run.report.read_line(&mut line);
    let _ = run.launcher.wait();
    if let Some(why) = line.trim_end().strip_prefix("error ") {
        return Err(why.to_string());
    }
    let f: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok());
    let opt = |i: usize| f.get(i).and_then(|s| s.parse::<i32>().ok());
    if f.first() != Some(&"done") || f.len() != 8 {
        return Err(format!("the launcher ended without a report (it said `{}`)", line.trim_end()));
    }
    let stdout = match &mut out.stdout {
        Some(t) => read_tail(t.as_file_mut(), STDOUT_CAP),
        None => String::new(),
    };
    Ok(Measured {
        pid: num(1).unwrap_or(0) as u32,
        wall: Duration::from_nanos(num(2).unwrap_or(0)),
        user: Duration::from_micros(num(3).unwrap_or(0)),
        sys: Duration::from_micros(num(4).unwrap_or(0)),
        max_rss: num(5).unwrap_or(0) * 1024,
        exit: opt(6),
        signal: opt(7),
        stdout,
        stderr_tail: read_tail(out.stderr.as_file_mut(), STDERR_TAIL),
    })
}

/// Signal a launcher (it stops its command on SIGTERM).
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a launcher we started and have not yet reaped.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// The op count in `stdout`: the first group of the pattern's last match, as a number.
pub fn ops_in(stdout: &str, pattern: &regex::Regex) -> Option<f64> {
    pattern
        .captures_iter(stdout)
        .last()
        .and_then(|c| c.get(1))
        .and_then(|m| m.as_str().trim().parse::<f64>().ok())
        .filter(|n| n.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_match_counts() {
        let re = regex::Regex::new(r"ops=(\d+)").unwrap();
        assert_eq!(ops_in("ops=3\nx\nops=12\n", &re), Some(12.0));
        assert_eq!(ops_in("nothing", &re), None);
    }
}
