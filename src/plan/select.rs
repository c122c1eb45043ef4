//! Running part of a plan: `--only PHASE[/STAGE]` keeps just the named phases or stages,
//! `--skip PHASE[/STAGE]` leaves them out (nextest's filters, k6's `--include-tags`, for plan
//! structure). The selection is applied to the loaded plan before anything runs, so the run
//! directory's `plan.resolved.toml` and `resume` see only what was selected; criteria of
//! phases and stages that were left out go with them.

use std::fmt;
use std::str::FromStr;

use super::model::{Plan, StageDriver};
use crate::diag::did_you_mean;

/// `PHASE` or `PHASE/STAGE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    pub phase: String,
    pub stage: Option<String>,
}

impl FromStr for Selector {
    type Err = String;

    fn from_str(s: &str) -> Result<Selector, String> {
        let (phase, stage) = match s.split_once('/') {
            Some((p, st)) => (p.trim(), Some(st.trim())),
            None => (s.trim(), None),
        };
        if phase.is_empty() || stage.is_some_and(str::is_empty) {
            return Err(format!("expected PHASE or PHASE/STAGE, got \"{s}\""));
        }
        Ok(Selector { phase: phase.to_string(), stage: stage.map(str::to_string) })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.stage {
            Some(s) => write!(f, "{}/{s}", self.phase),
            None => f.write_str(&self.phase),
        }
    }
}

impl Selector {
    fn matches(&self, phase: &str, stage: &str) -> bool {
        self.phase == phase && self.stage.as_deref().is_none_or(|s| s == stage)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectError {
    #[error("`{selector}` names no phase of this plan{help}")]
    UnknownPhase { selector: String, help: String },
    #[error("`{selector}` names no stage of phase `{phase}`{help}")]
    UnknownStage { selector: String, phase: String, help: String },
    #[error("--only and --skip leave no stage to run")]
    Empty,
}

fn help(word: &str, names: &[&str]) -> String {
    match did_you_mean(word, names.iter().copied()) {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => format!(" (it has: {})", names.join(", ")),
    }
}

impl<D: StageDriver> Plan<D> {
    /// The stages `only` selects (all, when it is empty) less those `skip` names.
    pub fn select(mut self, only: &[Selector], skip: &[Selector]) -> Result<Plan<D>, SelectError> {
        for sel in only.iter().chain(skip) {
            let phases: Vec<&str> = self.phases.iter().map(|p| p.name.as_str()).collect();
            let Some(phase) = self.phases.iter().find(|p| p.name == sel.phase) else {
                return Err(SelectError::UnknownPhase { selector: sel.to_string(), help: help(&sel.phase, &phases) });
            };
            if let Some(stage) = &sel.stage {
                let stages: Vec<&str> = phase.stages.iter().map(|s| s.name()).collect();
                if !stages.contains(&stage.as_str()) {
                    return Err(SelectError::UnknownStage {
                        selector: sel.to_string(),
                        phase: phase.name.clone(),
                        help: help(stage, &stages),
                    });
                }
            }
        }
        if only.is_empty() && skip.is_empty() {
            return Ok(self);
        }
        for phase in &mut self.phases {
            let name = phase.name.clone();
            phase.stages.retain(|s| {
                let chosen = only.is_empty() || only.iter().any(|o| o.matches(&name, s.name()));
                chosen && !skip.iter().any(|k| k.matches(&name, s.name()))
            });
        }
        self.phases.retain(|p| !p.stages.is_empty());
        if self.phases.is_empty() {
            return Err(SelectError::Empty);
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::load::{Raw, Syntax, load_str};

    fn plan() -> Plan {
        let text = "[plan]\nname = \"x\"\n\
            [[phase]]\nname = \"a\"\n[[phase.stage]]\nname = \"s1\"\ndriver = \"sleep\"\n[[phase.stage]]\nname = \"s2\"\ndriver = \"sleep\"\n\
            [[phase]]\nname = \"b\"\n[[phase.stage]]\nname = \"s1\"\ndriver = \"sleep\"\n";
        load_str("x.toml", text, Syntax::Toml, &Default::default(), &Raw).unwrap()
    }

    fn names(p: &Plan) -> Vec<String> {
        p.stages().map(|(ph, s)| format!("{}/{}", ph.name, s.name())).collect()
    }

    fn sel(s: &str) -> Selector {
        s.parse().unwrap()
    }

    #[test]
    fn only_and_skip_pick_stages() {
        assert_eq!(names(&plan().select(&[sel("a")], &[]).unwrap()), ["a/s1", "a/s2"]);
        assert_eq!(names(&plan().select(&[sel("a/s2"), sel("b")], &[]).unwrap()), ["a/s2", "b/s1"]);
        assert_eq!(names(&plan().select(&[], &[sel("a/s1")]).unwrap()), ["a/s2", "b/s1"]);
        assert_eq!(names(&plan().select(&[sel("a")], &[sel("a/s1")]).unwrap()), ["a/s2"]);
        assert_eq!(plan().select(&[sel("a")], &[sel("a")]).unwrap_err(), SelectError::Empty);
    }

    #[test]
    fn unknown_names_are_errors_with_help() {
        let e = plan().select(&[sel("c")], &[]).unwrap_err().to_string();
        assert_eq!(e, "`c` names no phase of this plan (it has: a, b)");
        let e = plan().select(&[], &[sel("a/s3")]).unwrap_err().to_string();
        assert_eq!(e, "`a/s3` names no stage of phase `a` (it has: s1, s2)");
        assert!("a/".parse::<Selector>().is_err());
    }
}
