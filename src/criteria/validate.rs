//! What a plan's criteria mean against the plan itself: every criterion parsed at load time with
//! errors located inside its string (`check_criteria`), and a criterion's threshold in the units
//! it is evaluated in, vars resolved (`threshold`). Shared by the runner's live abort checks and
//! the analysis.

use super::ast::{Check, Lhs, Rhs};
use super::parser::parse;
use crate::diag::{Diag, Source, did_you_mean};
use crate::plan::{Plan, Scope, StageDriver};

/// Parse every criterion of a plan: errors at file:line:col inside the criterion string.
pub fn check_criteria<D: StageDriver>(plan: &Plan<D>, src: &Source) -> Vec<Diag> {
    let mut out = Vec::new();
    for (scope, c) in plan.criteria() {
        // A criterion of an included plan is located in that plan's file.
        let src = c.origin.0.as_ref().unwrap_or(src);
        let text = &c.check.value;
        let at = |r: std::ops::Range<usize>| -> std::ops::Range<usize> {
            let Some(span) = &c.check.span else { return 0..0 };
            // Point inside the string when it is written plainly between quotes.
            if src.text.get(span.start + 1..span.end - 1) == Some(text.as_str()) {
                span.start + 1 + r.start..span.start + 1 + r.end.max(r.start + 1)
            } else {
                span.clone()
            }
        };
        if c.abort && !matches!(scope, Scope::Stage(..)) {
            out.push(
                Diag::new("`abort = true` belongs on a stage's criteria: it stops the stage that violates it")
                    .at(src, c.check.span.clone().unwrap_or(0..0)),
            );
        }
        match parse(text) {
            Ok(check) => {
                if let Some(why) = ratio_problem(&check, &scope, plan) {
                    out.push(Diag::new(why).at(src, at(0..text.len())));
                }
                if let Rhs::Var(v) = &check.rhs {
                    match plan.var(v) {
                        None => {
                            let names: Vec<&str> = plan.vars.iter().map(|(n, _)| n.as_str()).collect();
                            let help = match did_you_mean(v, names.iter().copied()) {
                                _ if names.is_empty() => "this plan declares no vars".to_string(),
                                Some(s) => format!("did you mean `{s}`? vars: {}", names.join(", ")),
                                None => format!("vars: {}", names.join(", ")),
                            };
                            out.push(
                                Diag::new(format!("criterion uses unknown var `{v}`"))
                                    .at(src, at(0..text.len()))
                                    .help(help),
                            )
                        }
                        Some(var) if var_number(&var.value).is_none() => out.push(
                            Diag::new(format!("criterion compares with var `{v}`, which is not a number or duration"))
                                .at(src, at(0..text.len())),
                        ),
                        _ => {}
                    }
                }
            }
            Err(e) => {
                let mut d = Diag::new(format!("bad criterion: {}", e.message)).at(src, at(e.at.clone()));
                if let Some(h) = e.help {
                    d = d.help(h);
                }
                out.push(d);
            }
        }
    }
    out
}

/// What is wrong with a `ratio(A, B)`, if anything: it reads one bench stage's runs, so it
/// belongs on that stage's criteria, and names two of its commands.
fn ratio_problem<D: StageDriver>(check: &Check, scope: &Scope, plan: &Plan<D>) -> Option<String> {
    let Lhs::Ratio { num, den } = &check.lhs else { return None };
    let Scope::Stage(phase, stage) = scope else {
        return Some("ratio(A, B) compares one bench stage's commands: put it in that stage's criteria".into());
    };
    let st = plan.phases.iter().find(|p| &p.name == phase)?.stages.iter().find(|s| &s.common.name == stage)?;
    let config = st.driver.config();
    let Some(cmds) = config.get("commands").and_then(|c| c.as_array()) else {
        return Some(format!(
            "ratio(A, B) compares a bench stage's commands; stage `{stage}` is a `{}` stage",
            st.common.driver.value
        ));
    };
    let names: Vec<&str> = cmds.iter().filter_map(|c| c.get("name")?.as_str()).collect();
    let unknown = [num, den].into_iter().find(|n| !names.contains(&n.as_str()))?;
    let help =
        did_you_mean(unknown, names.iter().copied()).map(|s| format!("did you mean `{s}`? ")).unwrap_or_default();
    Some(format!("ratio names `{unknown}`, which is not a command of this stage; {help}commands: {}", names.join(", ")))
}

/// A var as a number for criteria: numbers as is, durations in ms.
pub fn var_number(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => crate::plan::Dur::parse(s).ok().map(|d| d.0.as_secs_f64() * 1000.0),
        _ => None,
    }
}

/// A criterion's threshold in the units it is evaluated in (durations in ms, vars resolved).
pub fn threshold<D: StageDriver>(check: &Check, plan: &Plan<D>) -> Option<f64> {
    match &check.rhs {
        Rhs::Num(n) => Some(*n),
        Rhs::Ms(ms) => Some(*ms),
        Rhs::Var(v) => plan.var(v).and_then(|x| var_number(&x.value)),
    }
}
