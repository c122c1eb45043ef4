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
