//! Shell completion: the registration script `planrun completions SHELL` prints, and the
//! completers behind it that read the plan named on the command line being completed, so
//! `--profile`, `--only` and `--skip` offer that plan's profile, phase and stage names.

use std::ffi::OsStr;
use std::io::Write;
use std::path::PathBuf;

use clap_complete::engine::CompletionCandidate;
use clap_complete::env::{Bash, Elvish, EnvCompleter, Fish, Powershell, Zsh};

use crate::plan::{LoadOptions, Plan, load::Syntax, load_file};

/// The environment variable that turns a `planrun` invocation into a completion request.
const VAR: &str = "COMPLETE";

/// Write the script that registers planrun's completions with `shell`.
pub fn registration(shell: clap_complete::Shell, out: &mut dyn Write) -> std::io::Result<()> {
    let completer: &dyn EnvCompleter = match shell {
        clap_complete::Shell::Bash => &Bash,
        clap_complete::Shell::Elvish => &Elvish,
        clap_complete::Shell::Fish => &Fish,
        clap_complete::Shell::PowerShell => &Powershell,
        clap_complete::Shell::Zsh => &Zsh,
        _ => &Bash,
    };
    completer.write_registration(VAR, "planrun", "planrun", "planrun", out)
}

/// The plan file named on the command line being completed, loaded with its driver fields as
/// written (a plan with errors offers nothing).
fn plan_on_command_line() -> Option<Plan> {
    let path = std::env::args_os().map(PathBuf::from).find(|p| Syntax::from_path(p).is_some() && p.is_file())?;
    load_file(&path, &LoadOptions::default()).ok().map(|(plan, _)| plan)
}

fn matching(current: &OsStr, names: impl IntoIterator<Item = String>) -> Vec<CompletionCandidate> {
    let current = current.to_string_lossy();
    // `--only a,b`: complete the last item, keeping what comes before it.
    let (done, last) = match current.rsplit_once(',') {
        Some((d, l)) => (format!("{d},"), l.to_string()),
        None => (String::new(), current.to_string()),
    };
    names.into_iter().filter(|n| n.starts_with(&last)).map(|n| CompletionCandidate::new(format!("{done}{n}"))).collect()
}

/// `--profile`: the plan's profile names.
pub fn profiles(current: &OsStr) -> Vec<CompletionCandidate> {
    let Some(plan) = plan_on_command_line() else { return Vec::new() };
    matching(current, plan.profiles)
}

/// `--only`, `--skip`: the plan's phases, and each phase's stages as PHASE/STAGE.
pub fn stages(current: &OsStr) -> Vec<CompletionCandidate> {
    let Some(plan) = plan_on_command_line() else { return Vec::new() };
    let mut names = Vec::new();
    for p in &plan.phases {
        names.push(p.name.clone());
        names.extend(p.stages.iter().map(|s| format!("{}/{}", p.name, s.name())));
    }
    matching(current, names)
}
