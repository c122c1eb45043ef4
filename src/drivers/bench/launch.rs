//! The launcher a bench run is measured through: a small process (`planrun-agent bench-launch`,
//! or `planrun bench-launch` when the lean binary is missing) that starts the command, waits for
//! it with `wait4(2)` and reports the kernel's figures on its stdout. It exists because of how
//! Linux counts peak RSS: a child's `ru_maxrss` includes the memory of the process it was
//! forked (or vforked) from, recorded when it execs — started straight from the runner, an
//! `echo` would read as the runner's 70 MiB. Forked from this launcher, it starts from the
//! launcher's couple of MiB, as under GNU time.
//!
//! Protocol: one line on stdout once the command has ended,
//! `done PID WALL_NS USER_US SYS_US MAXRSS_KIB EXIT SIGNAL` (EXIT or SIGNAL `-` when absent), or
//! `error MESSAGE` when it cannot be started. Nothing is written while the command runs, so
//! the runner is not woken to compete with it for a core. The command stays in the launcher's
//! process group, which the runner made: signalling that group stops both. Arguments:
//! `bench-launch STDOUT STDERR CWD -- PROGRAM ARGS...`, where STDOUT is a file to write the
//! command's stdout to or `-` for none, STDERR a file, and CWD a directory or `-`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

/// The hidden subcommand both binaries answer to.
pub const SUBCOMMAND: &str = "bench-launch";

/// Run the launcher with `args` (what follows the subcommand); returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let mut out = std::io::stdout().lock();
    let Some(sep) = args.iter().position(|a| a == "--") else {
        let _ = writeln!(out, "error usage: {SUBCOMMAND} STDOUT STDERR CWD -- PROGRAM ARGS...");
        return 2;
    };
    let (head, cmd) = (&args[..sep], &args[sep + 1..]);
    let ([stdout, stderr, cwd], [program, rest @ ..]) = (head, cmd) else {
        let _ = writeln!(out, "error usage: {SUBCOMMAND} STDOUT STDERR CWD -- PROGRAM ARGS...");
        return 2;
    };
    let mut c = Command::new(program);
    c.args(rest).stdin(Stdio::null());
    let open = |p: &str| std::fs::OpenOptions::new().write(true).truncate(true).create(true).open(p);
    match stdout.as_str() {
        "-" => {
            c.stdout(Stdio::null());
        }
        p => match open(p) {
            Ok(f) => {
                c.stdout(f);
            }
            Err(e) => {
                let _ = writeln!(out, "error cannot open {p}: {e}");
                return 1;
            }
        },
    }
    match open(stderr) {
        Ok(f) => {
            c.stderr(f);
        }
        Err(e) => {
            let _ = writeln!(out, "error cannot open {stderr}: {e}");
            return 1;
        }
    }
    if cwd != "-" {
        c.current_dir(cwd);
    }
    let started = Instant::now();
    let child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) => {
            let _ = writeln!(out, "error {e}");
            return 1;
        }
    };
    let pid = child.id();
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 on our own child's pid, with valid pointers to locals.
        let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
        if r == pid as libc::pid_t {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            let _ = writeln!(out, "error waiting: {err}");
            return 1;
        }
    }
    let wall = started.elapsed();
    let us = |t: libc::timeval| t.tv_sec.max(0) as u64 * 1_000_000 + t.tv_usec.max(0) as u64;
    let (exit, signal) = if libc::WIFEXITED(status) {
        (libc::WEXITSTATUS(status).to_string(), "-".to_string())
    } else if libc::WIFSIGNALED(status) {
        ("-".to_string(), libc::WTERMSIG(status).to_string())
    } else {
        ("-".to_string(), "-".to_string())
    };
    let _ = writeln!(
        out,
        "done {pid} {} {} {} {} {exit} {signal}",
        wall.as_nanos(),
        us(usage.ru_utime),
        us(usage.ru_stime),
        usage.ru_maxrss.max(0)
    );
    let _ = out.flush();
    0
}
