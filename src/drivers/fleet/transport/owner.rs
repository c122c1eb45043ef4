//! Who owns a coordination directory. `FileTransport` writes `owner` into every directory it
//! creates: the runner's pid and that process's start time (so a reused pid is not taken for
//! the owner). A directory whose owner is gone was left by a killed run: `resume` takes over its
//! own, and a new fleet stage clears such leftovers from the default place, saying so; one whose
//! owner still runs is never touched, and one without an owner file (not made by planrun, or by
//! an older one) is reported, not removed.

use std::path::{Path, PathBuf};

const OWNER: &str = "owner";

/// A process's start time in clock ticks since boot (field 22 of /proc/PID/stat).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after = stat.rsplit_once(')')?.1;
    let state = after.split_whitespace().next()?;
    if state == "Z" {
        return None;
    }
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Mark `root` as this process's.
pub fn claim(root: &Path) -> std::io::Result<()> {
    let me = std::process::id();
    std::fs::write(root.join(OWNER), format!("{me} {}\n", start_time(me).unwrap_or(0)))
}

#[derive(Debug, PartialEq, Eq)]
pub enum Owner {
    /// A live process made it (pid).
    Running(u32),
    /// Made by a planrun process that is gone (pid).
    Gone(u32),
    /// No owner file: not ours to judge.
    Unknown,
}

pub fn owner(root: &Path) -> Owner {
    let Ok(text) = std::fs::read_to_string(root.join(OWNER)) else { return Owner::Unknown };
    let mut parts = text.split_whitespace();
    let (Some(pid), Some(started)) = (parts.next().and_then(|p| p.parse::<u32>().ok()), parts.next()) else {
        return Owner::Unknown;
    };
    let started: u64 = started.parse().unwrap_or(0);
    match start_time(pid) {
        Some(t) if t == started || started == 0 => Owner::Running(pid),
        _ => Owner::Gone(pid),
    }
}

/// Coordination directories under `base` (named `planrun-*`) left by runs that are gone:
/// removed, each with a line saying so; those without an owner file are only reported.
pub fn clear_stale(base: &Path, keep: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(base) else { return Vec::new() };
    let mut notes = Vec::new();
    for e in entries.flatten() {
        let path: PathBuf = e.path();
        let planrun = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("planrun-"));
        if !planrun || path == keep || !path.is_dir() {
            continue;
        }
        match owner(&path) {
            Owner::Gone(pid) => match std::fs::remove_dir_all(&path) {
                Ok(()) => notes.push(format!(
                    "removed {}, a coordination directory left by a planrun run that is gone (pid {pid})",
                    path.display()
                )),
                Err(err) => notes.push(format!("cannot remove stale {} (pid {pid} is gone): {err}", path.display())),
            },
            Owner::Unknown | Owner::Running(_) => {}
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_of_a_dead_process_is_stale_and_ours_is_not() {
        let base = tempfile::tempdir().unwrap();
        let mine = base.path().join("planrun-mine");
        std::fs::create_dir(&mine).unwrap();
        claim(&mine).unwrap();
        assert_eq!(owner(&mine), Owner::Running(std::process::id()));

        // A child that has exited and been reaped: its pid is gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let dead = base.path().join("planrun-dead");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(OWNER), format!("{pid} 12345\n")).unwrap();
        assert_eq!(owner(&dead), Owner::Gone(pid));

        let foreign = base.path().join("planrun-foreign");
        std::fs::create_dir(&foreign).unwrap();
        assert_eq!(owner(&foreign), Owner::Unknown);

        let notes = clear_stale(base.path(), Path::new("/nonexistent"));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(!dead.exists() && mine.exists() && foreign.exists());
    }
}
