//! Criteria evaluation: every criterion of the run's plan compiled to polars (`compile`) and
//! evaluated in one pass over the events in memory, each with its observed value, threshold,
//! support and status. It does not decide the verdict (`verdict` does).

use polars::prelude::*;

use super::compile;
use super::data;
use super::error::AnalyzeError;
use super::frame;
use super::load::Run;
use super::report_data::{CriterionResult, CriterionStatus, Level};
use crate::criteria::{self, Check, Cmp, ParseError, Rhs, threshold};
use crate::plan::Scope;

/// A criterion's number for people: whole above 1000, up to 3 decimals above 1, up to 4 below,
/// trailing zeros dropped; never `-0` (a tiny negative rounds to plain `0`).
fn fmt_num(v: f64) -> String {
    let a = v.abs();
    let s = if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.3}").trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.4}").trim_end_matches('0').trim_end_matches('.').to_string()
    };
    if s == "-0" { "0".into() } else { s }
}

/// Evaluate every criterion of the run's plan in one polars pass over the events in memory.
pub fn evaluate(run: &Run, frame: &data::Frame) -> Result<Vec<CriterionResult>, AnalyzeError> {
    let all = run.plan.criteria();
    let mut parsed: Vec<(Scope, &crate::plan::Criterion, Result<Check, ParseError>)> = Vec::new();
    let mut exprs = Vec::new();
    // Per-row masks some criteria read several times, computed once as columns (`compile_staged`).
    let mut staged = Vec::new();
    for (i, (scope, c)) in all.into_iter().enumerate() {
        match criteria::parse(&c.check.value) {
            Ok(check) => {
                let (value, support, aux) =
                    compile::compile_staged(&check, frame.scope_mask(&scope), Some(&format!("_steady{i}")));
                staged.extend(aux);
                exprs.push(value.cast(DataType::Float64).alias(format!("v{i}")));
                exprs.push(support.cast(DataType::Float64).alias(format!("n{i}")));
                parsed.push((scope, c, Ok(check)));
            }
            Err(e) => parsed.push((scope, c, Err(e))),
        }
    }
    let df = if exprs.is_empty() {
        DataFrame::empty()
    } else {
        let lf = frame.df.clone().lazy();
        let lf = if staged.is_empty() { lf } else { lf.with_columns(staged) };
        frame::stream(lf.select(exprs))?
    };
    let mut out = Vec::new();
    for (i, (scope, c, check)) in parsed.into_iter().enumerate() {
        let level = match &scope {
            Scope::Plan => Level::Plan,
            Scope::Phase(_) => Level::Phase,
            Scope::Stage(..) => Level::Stage,
        };
        let mut r = CriterionResult {
            check: c.check.value.clone(),
            scope: scope.to_string(),
            level,
            status: CriterionStatus::Fail,
            pass: false,
            observed: None,
            observed_text: "—".into(),
            op: String::new(),
            threshold: None,
            threshold_text: "—".into(),
            support: 0.0,
            margin: None,
            optional: c.optional,
            abort: c.abort,
            weight: c.weight,
            message: None,
        };
        let check = match check {
            Ok(ch) => ch,
            Err(e) => {
                r.message = Some(format!("does not parse: {}", e.message));
                out.push(r);
                continue;
            }
        };
        r.op = check.op.as_str().into();
        let threshold = threshold(&check, &run.plan);
        // Durations (written, or a duration var) compare in milliseconds.
        let unit_ms = match &check.rhs {
            Rhs::Ms(_) => true,
            Rhs::Var(v) => run.plan.var(v).is_some_and(|x| x.value.is_string()),
            Rhs::Num(_) => false,
        };
        r.threshold = threshold;
        r.threshold_text = match (threshold, unit_ms) {
            (Some(t), true) => format!("{} ms", fmt_num(t)),
            (Some(t), false) => fmt_num(t),
            (None, _) => "?".into(),
        };
        let observed = frame::scalar(&df, &format!("v{i}"));
        r.support = frame::scalar(&df, &format!("n{i}")).unwrap_or(0.0);
        r.observed = observed;
        // Support is the matched rows, or for counts and rates the scope's rows: a count of zero
        // in a scope that has events is data; an empty scope is not.
        let no_data = observed.is_none() || r.support == 0.0;
        match (no_data, threshold) {
            (_, None) => {
                r.message = Some("the var it compares with is missing".into());
            }
            (true, _) => {
                r.status = if c.optional { CriterionStatus::Skipped } else { CriterionStatus::NoData };
                r.pass = c.optional;
                r.message = Some("no matching events in scope".into());
            }
            (false, Some(t)) => {
                let v = observed.unwrap_or(f64::NAN);
                r.observed_text = if unit_ms { format!("{} ms", fmt_num(v)) } else { fmt_num(v) };
                r.pass = check.op.holds(v, t);
                r.status = if r.pass { CriterionStatus::Pass } else { CriterionStatus::Fail };
                if r.pass && t != 0.0 && matches!(check.op, Cmp::Lt | Cmp::Le | Cmp::Gt | Cmp::Ge) {
                    r.margin = Some(((t - v) / t).abs());
                }
            }
        }
        out.push(r);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::fmt_num;

    #[test]
    fn numbers_read_well_and_never_as_negative_zero() {
        assert_eq!(fmt_num(190.5), "190.5");
        assert_eq!(fmt_num(1234.56), "1235");
        assert_eq!(fmt_num(0.07905694), "0.0791");
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(-0.0), "0");
        assert_eq!(fmt_num(-0.00001), "0");
        assert_eq!(fmt_num(-0.25), "-0.25");
    }
}
