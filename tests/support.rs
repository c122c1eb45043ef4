//! "Run planrun with this plan and expect this": a small builder over the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_planrun")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// The run directory `planrun run` printed.
    pub fn run_dir(&self) -> PathBuf {
        PathBuf::from(
            self.stdout.lines().last().unwrap_or_else(|| panic!("no run dir printed; stderr:\n{}", self.stderr)).trim(),
        )
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox { dir: tempfile::tempdir().expect("tempdir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write plan");
        p
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args).current_dir(self.dir.path()).env("NO_COLOR", "1").stdin(Stdio::null());
        c
    }

    /// Write `text` as f.toml and run it quietly without the analysis: (exit code, run
    /// directory, stderr).
    pub fn run_plan(&self, text: &str) -> (i32, PathBuf, String) {
        self.write("f.toml", text);
        let r = self.run(&["run", "f.toml", "--quiet", "--no-analyze"]);
        let dir = self.path().join(r.run_dir());
        (r.code, dir, r.stderr)
    }

    pub fn run(&self, args: &[&str]) -> Ran {
        let out: Output = self.cmd(args).output().expect("spawn planrun");
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

pub fn events(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .expect("events.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid event line"))
        .collect()
}

/// The events of one `kind`.
pub fn of_kind<'a>(evs: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    evs.iter().filter(|e| e["kind"] == kind).collect()
}

/// An event's `attrs`, parsed (null when it has none).
pub fn attrs(e: &serde_json::Value) -> serde_json::Value {
    e["attrs"].as_str().map(|a| serde_json::from_str(a).unwrap()).unwrap_or(serde_json::Value::Null)
}

pub fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).expect("manifest")).expect("manifest json")
}

/// Events as a rerun of the same seed must reproduce them: everything but the wall-clock `ts`.
pub fn events_without_ts(dir: &Path) -> Vec<serde_json::Value> {
    events(dir)
        .into_iter()
        .map(|mut e| {
            if let Some(o) = e.as_object_mut() {
                o.remove("ts");
            }
            e
        })
        .collect()
}

/// Processes a test started, killed by pid and reaped when it ends — also when an assertion
/// fails first, so none outlives the test.
pub struct Reap(pub Vec<std::process::Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A real `redis-server` on a free loopback port, stopped by its pid when dropped. Its working
/// directory is private, so `--appendonly yes` persists across `restart`.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<std::process::Child>,
}

impl RedisServer {
    /// Start one with no persistence.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// Start one with these extra arguments (`--appendonly yes`, say).
    pub fn start_with(args: &[&str]) -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port();
        let mut s = RedisServer {
            port,
            dir: tempfile::tempdir().expect("tempdir"),
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--dir"])
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install it (`apt-get install -y redis-server`; scripts/test.sh does)")
            });
        self.child = Some(child);
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(std::time::Instant::now() < until, "redis-server on port {} did not answer PING", self.port);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// SIGKILL the server (no chance to save) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kill it and start it again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// `redis-cli` against this server; its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        // A server started with `--requirepass PASS` is asked with it (from the environment,
        // as redis-cli's REDISCLI_AUTH, so it is not on a command line).
        if let Some(i) = self.args.iter().position(|a| a == "--requirepass") {
            cmd.env("REDISCLI_AUTH", &self.args[i + 1]);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Every key of planrun's on the server.
    pub fn planrun_keys(&self) -> Vec<String> {
        self.cli(&["--scan", "--pattern", "planrun:*"]).lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
