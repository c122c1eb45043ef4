//! The verdict of a run: each stage's result, outcome and confidence, the run's confidence, and
//! PASS, FAIL or INCOMPLETE with its cause and reasons. It reads criteria results and the
//! manifest; it does not evaluate criteria.

use super::report_data::{Component, CriterionResult, CriterionStatus, Label, StageOutcome, StageResult, Verdict};
use crate::plan::ConfidenceRule;
use crate::rundir::{Manifest, RunStatus, StageStatus};

/// The weighted share of `criteria` that pass, skipped ones excluded; None without any.
pub fn confidence(criteria: &[&CriterionResult]) -> Option<f64> {
    let total = weight(criteria.iter().filter(|c| c.status != CriterionStatus::Skipped));
    (total > 0.0).then(|| weight(criteria.iter().filter(|c| c.status == CriterionStatus::Pass)) / total)
}

/// The summed weight of `criteria`, +0.0 for none: `Iterator::sum` of no floats is -0.0, which
/// a stage whose criteria all fail printed as `-0.00`.
fn weight<'a>(criteria: impl Iterator<Item = &'a &'a CriterionResult>) -> f64 {
    criteria.fold(0.0, |sum, c| sum + c.weight)
}

/// How a stage counts (`StageOutcome`), from its status.
fn outcome(status: StageStatus) -> StageOutcome {
    match status {
        StageStatus::Passed | StageStatus::BudgetExceeded => StageOutcome::Passed,
        StageStatus::Failed | StageStatus::Aborted => StageOutcome::Failed,
        StageStatus::Error | StageStatus::TimedOut | StageStatus::Interrupted => StageOutcome::Error,
        StageStatus::Skipped | StageStatus::Pending => StageOutcome::Skipped,
    }
}

/// Each stage the manifest records, with its own criteria's confidence.
pub fn stage_results(m: &Manifest, criteria: &[CriterionResult]) -> Vec<StageResult> {
    m.stages
        .iter()
        .map(|r| {
            let scope = format!("{}/{}", r.phase, r.stage);
            let mine: Vec<&CriterionResult> = criteria.iter().filter(|c| c.scope == scope).collect();
            StageResult {
                phase: r.phase.clone(),
                stage: r.stage.clone(),
                driver: r.driver.clone(),
                status: r.status,
                ok: r.status.is_success(),
                outcome: outcome(r.status),
                message: r.message.clone(),
                duration_ms: r.t_start_ms.zip(r.t_end_ms).map(|(a, b)| b - a),
                events: r.events,
                confidence: confidence(&mine),
            }
        })
        .collect()
}

/// PASS when the run finished, every criterion passed and every stage did what it was for;
/// otherwise FAIL (INCOMPLETE for a run that did not finish), with one reason per line and the
/// cause in a few words. The confidence is the weighted share of criteria passing (the share of
/// stages passing for a plan without criteria), shown against `threshold`.
pub fn decide(run: &RunStatus, criteria: &[CriterionResult], stages: &[StageResult], threshold: f64) -> Verdict {
    let all: Vec<&CriterionResult> = criteria.iter().collect();
    let stage_share =
        if stages.is_empty() { 1.0 } else { stages.iter().filter(|s| s.ok).count() as f64 / stages.len() as f64 };
    let conf = confidence(&all).unwrap_or(stage_share);
    let mut reasons = Vec::new();
    for c in criteria.iter().filter(|c| !c.pass) {
        let why = match c.status {
            CriterionStatus::NoData => "no data".to_string(),
            _ => format!("observed {}", c.observed_text),
        };
        reasons.push(format!("criterion `{}` ({}) failed: {why}", c.check, c.scope));
    }
    for s in stages.iter().filter(|s| !s.ok) {
        reasons.push(format!(
            "stage {}/{} {}{}",
            s.phase,
            s.stage,
            s.status,
            s.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
        ));
    }
    let incomplete = matches!(run, RunStatus::Interrupted | RunStatus::Running);
    if incomplete {
        reasons.insert(0, format!("the run did not finish ({})", run.as_str()));
    }
    let pass = reasons.is_empty();
    Verdict {
        pass,
        label: if pass {
            Label::Pass
        } else if incomplete {
            Label::Incomplete
        } else {
            Label::Fail
        },
        cause: cause(incomplete.then_some(run), criteria, stages),
        reasons,
        confidence: conf,
        threshold,
        confidence_pass: conf >= threshold,
        criteria_total: criteria.len(),
        criteria_passed: criteria.iter().filter(|c| c.status == CriterionStatus::Pass).count(),
        criteria_failed: criteria.iter().filter(|c| c.status == CriterionStatus::Fail).count(),
        criteria_no_data: criteria.iter().filter(|c| c.status == CriterionStatus::NoData).count(),
        criteria_skipped: criteria.iter().filter(|c| c.status == CriterionStatus::Skipped).count(),
        confidence_rule: ConfidenceRule::Criteria,
        components: components(criteria, stages, threshold),
    }
}

/// Each phase's confidence, in plan order.
pub fn components(criteria: &[CriterionResult], stages: &[StageResult], threshold: f64) -> Vec<Component> {
    let mut phases: Vec<&str> = Vec::new();
    for s in stages {
        if !phases.contains(&s.phase.as_str()) {
            phases.push(&s.phase);
        }
    }
    phases
        .into_iter()
        .map(|p| {
            let inside = |scope: &str| scope == p || scope.strip_prefix(p).is_some_and(|r| r.starts_with('/'));
            let mine: Vec<&CriterionResult> = criteria.iter().filter(|c| inside(&c.scope)).collect();
            let st: Vec<&StageResult> = stages.iter().filter(|s| s.phase == p).collect();
            let share = st.iter().filter(|s| s.ok).count() as f64 / st.len().max(1) as f64;
            // A stage that failed or could not run counts as a failed check of weight 1, so a
            // phase whose work failed cannot score 1.0 on criteria that happened to pass.
            let failed = st.iter().filter(|s| matches!(s.outcome, StageOutcome::Failed | StageOutcome::Error)).count();
            let confidence = match confidence(&mine) {
                Some(c) => {
                    let total =
                        mine.iter().filter(|c| c.status != CriterionStatus::Skipped).map(|c| c.weight).sum::<f64>();
                    c * total / (total + failed as f64)
                }
                None => share,
            };
            Component {
                phase: p.to_string(),
                confidence,
                pass: confidence >= threshold,
                criteria_total: mine.len(),
                criteria_passed: mine.iter().filter(|c| c.status == CriterionStatus::Pass).count(),
            }
        })
        .collect()
}

/// The run's confidence by `[plan] confidence = "phases"`: the mean of the phases'.
pub fn by_phases(v: &mut Verdict) {
    if v.components.is_empty() {
        return;
    }
    v.confidence = v.components.iter().map(|c| c.confidence).sum::<f64>() / v.components.len() as f64;
    v.confidence_pass = v.confidence >= v.threshold;
    v.confidence_rule = ConfidenceRule::Phases;
}

/// Why the run did not pass, in a few words for the verdict line (None when it passed): the run
/// not finishing, the stages that failed or could not run (stages skipped after them are their
/// consequence, named only when nothing else is), and how many criteria failed.
fn cause(unfinished: Option<&RunStatus>, criteria: &[CriterionResult], stages: &[StageResult]) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(status) = unfinished {
        parts.push(format!("the run did not finish ({})", status.as_str()));
    }
    let named = |s: &StageResult| format!("{}/{} {}", s.phase, s.stage, s.status.as_str().replace('_', " "));
    let bad: Vec<String> = stages.iter().filter(|s| !s.ok && s.outcome != StageOutcome::Skipped).map(named).collect();
    match bad.len() {
        0 => {}
        1 => parts.push(format!("stage {}", bad[0])),
        2 => parts.push(format!("stages {}, {}", bad[0], bad[1])),
        n => parts.push(format!("stages {}, {} and {} more", bad[0], bad[1], n - 2)),
    }
    match criteria.iter().filter(|c| !c.pass).count() {
        0 => {}
        1 => parts.push("1 criterion failed".into()),
        n => parts.push(format!("{n} criteria failed")),
    }
    let skipped = stages.iter().filter(|s| !s.ok && s.outcome == StageOutcome::Skipped).count();
    if parts.is_empty() && skipped > 0 {
        parts.push(if skipped == 1 { "1 stage skipped".into() } else { format!("{skipped} stages skipped") });
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::report_data::Level;

    pub(super) fn criterion(scope: &str, status: CriterionStatus, weight: f64) -> CriterionResult {
        CriterionResult {
            check: format!("check in {scope}"),
            scope: scope.into(),
            level: Level::Stage,
            status,
            pass: matches!(status, CriterionStatus::Pass | CriterionStatus::Skipped),
            observed: Some(1.0),
            observed_text: "1".into(),
            op: "<".into(),
            threshold: Some(0.5),
            threshold_text: "0.5".into(),
            support: 1.0,
            margin: None,
            optional: status == CriterionStatus::Skipped,
            abort: false,
            weight,
            message: None,
        }
    }

    #[test]
    fn confidence_is_the_weighted_share_passing_and_never_negative_zero() {
        let fail = criterion("p/s", CriterionStatus::Fail, 1.0);
        let c = confidence(&[&fail]).unwrap();
        assert!(c == 0.0 && c.is_sign_positive(), "{c:?}");
        assert_eq!(format!("{c:.2}"), "0.00");
        let pass = criterion("p/s", CriterionStatus::Pass, 3.0);
        let skipped = criterion("p/s", CriterionStatus::Skipped, 5.0);
        assert_eq!(confidence(&[&fail, &pass, &skipped]), Some(0.75));
        assert_eq!(confidence(&[&skipped]), None);
        assert_eq!(confidence(&[]), None);
    }

    #[test]
    fn stage_outcomes_follow_the_status() {
        use StageOutcome::*;
        let cases = [
            (StageStatus::Passed, Passed),
            (StageStatus::BudgetExceeded, Passed),
            (StageStatus::Failed, Failed),
            (StageStatus::Aborted, Failed),
            (StageStatus::Error, Error),
            (StageStatus::TimedOut, Error),
            (StageStatus::Interrupted, Error),
            (StageStatus::Skipped, Skipped),
            (StageStatus::Pending, Skipped),
        ];
        for (status, want) in cases {
            assert_eq!(outcome(status), want, "{status}");
            // Only a stage that did its job counts as passed.
            assert_eq!(want == Passed, status.is_success(), "{status}");
        }
    }

    fn stage(name: &str, status: StageStatus) -> StageResult {
        StageResult {
            phase: "load".into(),
            stage: name.into(),
            driver: "exec".into(),
            status,
            ok: status.is_success(),
            outcome: outcome(status),
            message: None,
            duration_ms: None,
            events: 0,
            confidence: None,
        }
    }

    #[test]
    fn a_phase_whose_stage_failed_does_not_score_full_marks_on_passing_criteria() {
        let pass = criterion("load/warm", CriterionStatus::Pass, 1.0);
        let stages = [stage("warm", StageStatus::Passed), stage("probe", StageStatus::TimedOut)];
        let c = components(std::slice::from_ref(&pass), &stages, 0.75);
        assert_eq!(c.len(), 1);
        assert!((c[0].confidence - 0.5).abs() < 1e-12, "1 passing criterion, 1 failed stage: {}", c[0].confidence);
        let c = components(std::slice::from_ref(&pass), &stages[..1], 0.75);
        assert_eq!(c[0].confidence, 1.0);
        let c = components(&[], &stages, 0.75);
        assert_eq!(c[0].confidence, 0.5, "without criteria: the share of stages that passed");
    }

    #[test]
    fn the_cause_names_what_failed_not_its_consequences() {
        let done = RunStatus::Failed;
        let pass = criterion("plan", CriterionStatus::Pass, 1.0);
        let fail = criterion("plan", CriterionStatus::Fail, 1.0);
        let no_data = criterion("plan", CriterionStatus::NoData, 1.0);
        let probe = [
            stage("warm", StageStatus::Passed),
            stage("probe", StageStatus::Failed),
            stage("after", StageStatus::Skipped),
        ];
        let v = decide(&done, std::slice::from_ref(&pass), &probe, 0.75);
        assert_eq!((v.label, v.cause.as_deref()), (Label::Fail, Some("stage load/probe failed")));
        assert!(v.confidence_pass, "criteria passed; the stage failed the run");
        let v = decide(&done, &[pass.clone(), fail.clone(), no_data], &probe, 0.75);
        assert_eq!(v.cause.as_deref(), Some("stage load/probe failed; 2 criteria failed"));
        let many = [
            stage("a", StageStatus::Failed),
            stage("b", StageStatus::TimedOut),
            stage("c", StageStatus::Error),
            stage("d", StageStatus::Skipped),
        ];
        let v = decide(&done, &[], &many, 0.75);
        assert_eq!(v.cause.as_deref(), Some("stages load/a failed, load/b timed out and 1 more"));
        let v =
            decide(&RunStatus::Interrupted, std::slice::from_ref(&fail), &[stage("x", StageStatus::Interrupted)], 0.75);
        assert_eq!(v.label, Label::Incomplete);
        assert_eq!(
            v.cause.as_deref(),
            Some("the run did not finish (interrupted); stage load/x interrupted; 1 criterion failed")
        );
        let v = decide(&RunStatus::Completed, std::slice::from_ref(&pass), &[stage("warm", StageStatus::Passed)], 0.75);
        assert_eq!((v.label, v.cause), (Label::Pass, None));
    }
}
