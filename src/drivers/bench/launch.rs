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
//! the runner is not woken to compete with it for a core. The command leads a process group
//! of its own: on SIGTERM (the runner stopping it, or the runner dying) the launcher TERMs that
//! group and KILLs it after a grace, and after every run it KILLs what the command left there. Arguments:
//! `bench-launch STDOUT STDERR CWD -- PROGRAM ARGS...`, where STDOUT is a file to write the
//! command's stdout to or `-` for none, STDERR a file, and CWD a directory or `-`.

use std::io::Write;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a command told to stop has before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// Set by SIGTERM or SIGINT: the runner wants the command stopped.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// SIGTERM and SIGINT interrupt the wait (no SA_RESTART) and set `STOP`; the runner dying
/// sends SIGTERM too (PR_SET_PDEATHSIG), so no command outlives it. Handlers, unlike ignored
/// signals, are reset in the command by exec.
fn stop_on_term() {
    // SAFETY: installing a handler that only stores to an atomic (async-signal-safe), and
    // asking for a signal on the parent's death; zeroed sigaction is a valid starting value.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_stop as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        if libc::getppid() == 1 {
            STOP.store(true, Ordering::Relaxed);
        }
    }
}

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
        if !std::path::Path::new(cwd).is_dir() {
            let _ = writeln!(out, "error the directory `{cwd}` (cwd) does not exist");
            return 1;
        }
        c.current_dir(cwd);
    }
    // The command leads a process group of its own, so whatever it starts can be stopped with
    // it; the launcher stays outside it. (No pre_exec hook: std then uses posix_spawn.)
    c.process_group(0);
    stop_on_term();
    let started = Instant::now();
    let child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) => {
            let _ = writeln!(out, "error cannot start `{program}`: {e}");
            return 1;
        }
    };
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut stop_deadline: Option<Instant> = None;
    loop {
        let flags = if stop_deadline.is_some() { libc::WNOHANG } else { 0 };
        // SAFETY: wait4 on our own child's pid, with valid pointers to locals.
        let r = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
        if r == pid {
            break;
        }
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            let _ = writeln!(out, "error waiting: {}", std::io::Error::last_os_error());
            return 1;
        }
        if STOP.load(Ordering::Relaxed) {
            match stop_deadline {
                // Told to stop (the runner's Ctrl-C or timeout, or the runner died): TERM the
                // command's group, and KILL it if it is still there after the grace.
                None => {
                    // SAFETY: kill(2) on the process group the command leads.
                    unsafe { libc::kill(-pid, libc::SIGTERM) };
                    stop_deadline = Some(Instant::now() + STOP_GRACE);
                }
                Some(t) if Instant::now() >= t => {
                    // SAFETY: as above.
                    unsafe { libc::kill(-pid, libc::SIGKILL) };
                    stop_deadline = Some(Instant::now() + STOP_GRACE * 10);
                }
                Some(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
    // Whatever the command left running in its group (`server &`) ends with it.
    // SAFETY: kill(2) on the command's process group; ESRCH when it is already empty.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
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
