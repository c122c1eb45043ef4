//! `FileTransport`, the built-in transport: a private directory (mode 0700, by default in
//! /dev/shm) with `messages/`, `responses/` and `status/`, atomic writes, and one inotify
//! watcher (through `notify`) on the two directories agents write, backed by a rescan that also
//! serves as the fallback without inotify. Everything read is checked first — symlinks,
//! oversized files, unreadable JSON and input in another agent's name become `Incoming::Bad`,
//! never crashes.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;
use tokio::sync::mpsc;

use super::contract::{Incoming, Transport};
use super::enrollment::Enrollment;
use super::owner::{Owner, claim, owner};
use crate::drivers::BoxFuture;
use crate::drivers::fleet::protocol::{
    ENV_AGENT_TOKEN, ENV_COORD_DIR, MAX_FILE_BYTES, Message, Response, Status, write_atomic,
};

pub struct FileTransport {
    root: PathBuf,
    enrollment: Arc<Enrollment>,
    // Kept alive for as long as the transport: dropping it stops the watching.
    _watcher: Option<Box<dyn Watcher + Send + Sync>>,
    /// Whether inotify watches the directories (else only the rescan finds files).
    pub watching: bool,
    /// What creating it had to do that the user should hear of (a leftover directory taken over).
    pub notes: Vec<String>,
}

fn sub(root: &Path, name: &str) -> PathBuf {
    root.join(name)
}

/// The default place for coordination directories: /dev/shm when it exists (memory-backed, as in
/// the soak test), else the temp dir.
pub fn default_base() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() }
}

impl FileTransport {
    /// Create the directory (taking over one left by a run that is gone, refusing one a live run
    /// or someone else owns unless `clean`), start watching
    /// `responses/` and `status/`, and return what arrives on `rx`.
    pub fn create(root: &Path, clean: bool) -> Result<(FileTransport, mpsc::UnboundedReceiver<Incoming>), String> {
        let mut notes = Vec::new();
        if root.exists() {
            match (clean, owner(root)) {
                (true, _) => {}
                (false, Owner::Gone(pid)) => notes.push(format!(
                    "took over {}, left by a planrun run that is gone (pid {pid}): it is cleared and made anew",
                    root.display()
                )),
                (false, Owner::Running(pid)) => {
                    return Err(format!(
                        "coordination directory {} is in use by a running planrun (pid {pid}); give this stage another `coord_dir`",
                        root.display()
                    ));
                }
                (false, Owner::Unknown) => {
                    return Err(format!(
                        "coordination directory {} already exists and planrun did not make it; remove it or set `clean = true`",
                        root.display()
                    ));
                }
            }
            std::fs::remove_dir_all(root).map_err(|e| format!("cannot clean {}: {e}", root.display()))?;
        }
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true).mode(0o700);
        for d in ["messages", "responses", "status"] {
            b.create(sub(root, d)).map_err(|e| format!("cannot create {}: {e}", sub(root, d).display()))?;
        }
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make {} private: {e}", root.display()))?;
        claim(root).map_err(|e| format!("cannot write {}: {e}", root.join("owner").display()))?;
        let enrollment = Arc::new(Enrollment::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let (watcher, watching) = watch(root, tx.clone(), Arc::clone(&enrollment));
        // Without inotify, scan often; with it, still rescan now and then: the kernel drops
        // events when its queue overflows (a thousand agents can do that), and a dropped event
        // must not strand a response.
        let every = if watching { Duration::from_millis(250) } else { Duration::from_millis(20) };
        poll(root.to_path_buf(), tx, Arc::clone(&enrollment), every);
        Ok((FileTransport { root: root.to_path_buf(), enrollment, _watcher: watcher, watching, notes }, rx))
    }
}

fn watch(
    root: &Path,
    tx: mpsc::UnboundedSender<Incoming>,
    enrollment: Arc<Enrollment>,
) -> (Option<Box<dyn Watcher + Send + Sync>>, bool) {
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        if !matches!(
            ev.kind,
            notify::EventKind::Create(_) | notify::EventKind::Modify(notify::event::ModifyKind::Name(_))
        ) {
            return;
        }
        for p in ev.paths {
            if let Some(inc) = read_file(&p, &enrollment) {
                let _ = tx.send(inc);
            }
        }
    };
    let Ok(mut w) = notify::recommended_watcher(handler) else { return (None, false) };
    for d in ["responses", "status"] {
        if w.watch(&sub(root, d), notify::RecursiveMode::NonRecursive).is_err() {
            return (None, false);
        }
    }
    (Some(Box::new(w)), true)
}

/// Scan the directories every `every` (the fallback without inotify, and a safety net with it).
fn poll(root: PathBuf, tx: mpsc::UnboundedSender<Incoming>, enrollment: Arc<Enrollment>, every: Duration) {
    std::thread::spawn(move || {
        let mut seen: std::collections::HashMap<PathBuf, std::time::SystemTime> = Default::default();
        while !tx.is_closed() {
            for d in ["responses", "status"] {
                let Ok(rd) = std::fs::read_dir(sub(&root, d)) else { return };
                for e in rd.flatten() {
                    let p = e.path();
                    let m = e.metadata().and_then(|m| m.modified()).ok();
                    if m.is_some() && seen.get(&p) == m.as_ref() {
                        continue;
                    }
                    if let Some(m) = m {
                        seen.insert(p.clone(), m);
                    }
                    if let Some(inc) = read_file(&p, &enrollment) {
                        let _ = tx.send(inc);
                    }
                }
            }
            std::thread::sleep(every);
        }
    });
}

fn agent_of(name: &str) -> Option<String> {
    name.split_once("--").map(|(a, _)| a.to_string()).or_else(|| name.strip_suffix(".json").map(str::to_string))
}

/// Read and check one file from `responses/` or `status/`. Responses are removed once read.
fn read_file(p: &Path, enrollment: &Enrollment) -> Option<Incoming> {
    let name = p.file_name()?.to_str()?.to_string();
    if name.starts_with('.') || !name.ends_with(".json") {
        return None; // temp files of atomic writes
    }
    let dir = p.parent()?.file_name()?.to_str()?.to_string();
    let file = || format!("{dir}/{name}");
    let bad = |error: String| Some(Incoming::Bad { file: file(), agent: agent_of(&name), error });
    let meta = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(_) => return None, // gone already (read through another event)
    };
    if meta.file_type().is_symlink() {
        let _ = std::fs::remove_file(p);
        return bad("symlink refused (not followed)".into());
    }
    if !meta.is_file() {
        return bad("not a regular file".into());
    }
    if meta.len() > MAX_FILE_BYTES {
        let _ = std::fs::remove_file(p);
        return bad(format!("file of {} bytes refused (limit {MAX_FILE_BYTES})", meta.len()));
    }
    let inc = if dir == "responses" {
        // Claim the file by renaming it: the watcher and the rescan may both see it, and only
        // the one whose rename succeeds reads it.
        let claimed = p.with_file_name(format!(".claimed-{name}"));
        std::fs::rename(p, &claimed).ok()?;
        let bytes = std::fs::read(&claimed).ok();
        let _ = std::fs::remove_file(&claimed);
        match serde_json::from_slice::<Response>(&bytes?) {
            Ok(r) => Incoming::Response(r),
            Err(e) => return bad(format!("invalid response JSON: {e}")),
        }
    } else {
        let bytes = std::fs::read(p).ok()?;
        match serde_json::from_slice::<Status>(&bytes) {
            Ok(s) => Incoming::Status(s),
            Err(e) => return bad(format!("invalid status JSON: {e}")),
        }
    };
    Some(enrollment.screen(inc, file))
}

impl Transport for FileTransport {
    fn enroll(&self, agent_id: &str) -> Vec<(&'static str, String)> {
        let token = self.enrollment.admit(agent_id);
        vec![(ENV_COORD_DIR, self.root.display().to_string()), (ENV_AGENT_TOKEN, token)]
    }

    fn send<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, std::io::Result<()>> {
        // A small file in a local directory (memory-backed by default): writing it inline costs
        // less than handing it to a blocking thread.
        Box::pin(async move {
            let bytes = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
            write_atomic(&sub(&self.root, "messages"), &format!("{}.json", msg.message_id), &bytes)
        })
    }

    fn retire(&self, message_id: &str) {
        let _ = std::fs::remove_file(sub(&self.root, "messages").join(format!("{message_id}.json")));
    }

    fn lost(&self) -> Option<String> {
        (!sub(&self.root, "messages").is_dir()).then(|| {
            format!(
                "the coordination directory {} was removed while the fleet ran (by another process?)",
                self.root.display()
            )
        })
    }

    fn doorbell(&self) -> bool {
        true
    }

    fn release<'a>(&'a self, agent_id: &'a str) -> BoxFuture<'a, usize> {
        Box::pin(async move {
            let dir = sub(&self.root, "status");
            let status = dir.join(format!("{agent_id}.json"));
            let _ = std::fs::remove_file(&status);
            // A heartbeat the agent was writing when it was killed: `.ID.json.PID.tmp`.
            let partial = format!(".{agent_id}.json.");
            let mut left = usize::from(status.exists());
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy().starts_with(&partial) {
                    let _ = std::fs::remove_file(e.path());
                    left += usize::from(e.path().exists());
                }
            }
            left
        })
    }

    fn close(&self, keep: bool) -> BoxFuture<'_, usize> {
        Box::pin(async move {
            if keep {
                return ["messages", "responses", "status"]
                    .iter()
                    .filter_map(|d| std::fs::read_dir(sub(&self.root, d)).ok())
                    .map(|rd| rd.count())
                    .sum();
            }
            if self.root.exists() {
                let _ = std::fs::remove_dir_all(&self.root);
            }
            usize::from(self.root.exists())
        })
    }
}
