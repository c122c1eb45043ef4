//! A run directory on disk: the one place its file names are spelled, creating a new one,
//! telling one apart from other directories, and reading and writing `manifest.json`
//! (atomically: temp file, fsync, rename, so a crash leaves the last good manifest).

use std::io;
use std::path::{Path, PathBuf};

use super::manifest::Manifest;

pub const EVENTS_JSONL: &str = "events.jsonl";
pub const EVENTS_PARQUET: &str = "events.parquet";
pub const MANIFEST: &str = "manifest.json";
pub const PLAN_RESOLVED: &str = "plan.resolved.toml";
pub const RUN_LOG: &str = "run.log";

#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error("{path}: no such run directory")]
    Missing { path: String },
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path} is not a planrun manifest: {reason}")]
    NotAManifest { path: String, reason: String },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: io::Error },
    #[error("cannot create {path}: {source}")]
    Create { path: String, source: io::Error },
    #[error("too many runs named {name} in {dir}")]
    TooMany { name: String, dir: String },
}

/// A run directory: `events.jsonl`, `events.parquet`, `manifest.json`, `plan.resolved.toml`,
/// `run.log`, and the reports an analysis writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// An existing (or about to exist) run directory at `path`.
    pub fn at(path: impl Into<PathBuf>) -> RunDir {
        RunDir { path: path.into() }
    }

    /// A new run directory under `out`, named after the plan and the UTC time.
    pub fn create(out: &Path, plan_name: &str) -> Result<RunDir, RunDirError> {
        let create = |p: &Path, source| RunDirError::Create { path: p.display().to_string(), source };
        std::fs::create_dir_all(out).map_err(|e| create(out, e))?;
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        let base = format!("{}-{stamp}", sanitize(plan_name));
        for n in 0..1000 {
            let name = if n == 0 { base.clone() } else { format!("{base}-{n}") };
            let dir = out.join(name);
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(RunDir::at(dir)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(create(&dir, e)),
            }
        }
        Err(RunDirError::TooMany { name: base, dir: out.display().to_string() })
    }

    /// True when `path` holds a run (it has a manifest).
    pub fn is_run(path: &Path) -> bool {
        path.join(MANIFEST).is_file()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn events_jsonl(&self) -> PathBuf {
        self.path.join(EVENTS_JSONL)
    }

    pub fn events_parquet(&self) -> PathBuf {
        self.path.join(EVENTS_PARQUET)
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.path.join(MANIFEST)
    }

    pub fn plan_resolved(&self) -> PathBuf {
        self.path.join(PLAN_RESOLVED)
    }

    pub fn run_log(&self) -> PathBuf {
        self.path.join(RUN_LOG)
    }

    /// Where `resume` sets aside the events of the step it redoes (the Nth resume).
    pub fn discarded(&self, resume: u32) -> PathBuf {
        self.path.join(format!("events.discarded-{resume}.jsonl"))
    }

    pub fn read_manifest(&self) -> Result<Manifest, RunDirError> {
        let p = self.manifest_path();
        let path = p.display().to_string();
        if !self.path.is_dir() {
            return Err(RunDirError::Missing { path: self.path.display().to_string() });
        }
        let text = std::fs::read_to_string(&p).map_err(|source| RunDirError::Read { path: path.clone(), source })?;
        serde_json::from_str(&text).map_err(|e| RunDirError::NotAManifest { path, reason: e.to_string() })
    }

    /// Replace `manifest.json` atomically.
    pub fn write_manifest(&self, m: &Manifest) -> Result<(), RunDirError> {
        let target = self.manifest_path();
        let tmp = self.path.join(format!("{MANIFEST}.tmp"));
        let write = |source| RunDirError::Write { path: target.display().to_string(), source };
        let text = serde_json::to_string_pretty(m).map_err(|e| write(io::Error::other(e)))?;
        let result = (|| {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &target)
        })();
        if result.is_err() {
            // A full disk leaves no empty temp file behind.
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(write)
    }
}

fn sanitize(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
    if s.is_empty() { "plan".into() } else { s }
}
