//! Whether the stage did its work: the `min_success` rule. A *call* here is one prompt to one
//! agent in one round, whatever it took (cache, retries, failover); it succeeded when it got an
//! answer. It failed when it ended in an error or was cut off by its round's gather timeout.
//! Calls the orchestration itself stopped — refused by the budget, or ended because a fault
//! terminated the agent or the stage was cancelled — are neither: nobody asked them to succeed.
//!
//! The stage fails when the share of succeeded calls is below `min_success`; without
//! `min_success` it fails when calls were made and none succeeded. `min_success = 0` accepts
//! total failure (a stage that exists to show it).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use super::provider::{CallError, Reply};

/// The stage's calls so far (kept in checkpoints, so a resumed stage judges the whole stage).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub succeeded: u64,
    /// Failed calls by their last error's kind (the `error` column).
    pub failed: BTreeMap<String, u64>,
}

impl Tally {
    /// Count a finished call.
    pub fn record(&mut self, result: &Result<Reply, CallError>) {
        match result {
            Ok(_) => self.succeeded += 1,
            Err(e) if e.ends_call() => {}
            Err(e) => self.failure(e.kind()),
        }
    }

    /// Count a failed call by its error kind.
    pub fn failure(&mut self, kind: &str) {
        match self.failed.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                self.failed.insert(kind.to_string(), 1);
            }
        }
    }

    pub fn failures(&self) -> u64 {
        self.failed.values().sum()
    }

    /// Ok, or why the stage failed.
    pub fn verdict(&self, min_success: Option<f64>) -> Result<(), String> {
        let total = self.succeeded + self.failures();
        if total == 0 {
            return Ok(());
        }
        let share = self.succeeded as f64 / total as f64;
        match min_success {
            None if self.succeeded == 0 => Err(format!(
                "no call succeeded ({} failed: {}); set `min_success = 0` if this stage expects that",
                total,
                self.breakdown()
            )),
            Some(min) if share < min => Err(format!(
                "{} of {total} calls succeeded ({:.1}%), below min_success = {min} (failed: {})",
                self.succeeded,
                share * 100.0,
                self.breakdown()
            )),
            _ => Ok(()),
        }
    }

    /// "30 server_error, 2 circuit_open", most frequent first.
    fn breakdown(&self) -> String {
        let mut kinds: Vec<(&String, &u64)> = self.failed.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut out = String::new();
        for (i, (kind, n)) in kinds.iter().enumerate() {
            let _ = write!(out, "{}{n} {kind}", if i > 0 { ", " } else { "" });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(succeeded: u64, failed: &[(&str, u64)]) -> Tally {
        Tally { succeeded, failed: failed.iter().map(|(k, n)| (k.to_string(), *n)).collect() }
    }

    #[test]
    fn without_min_success_a_stage_needs_one_success() {
        let none = tally(0, &[("server_error", 30), ("circuit_open", 10)]);
        let err = none.verdict(None).unwrap_err();
        assert!(err.starts_with("no call succeeded (40 failed: 30 server_error, 10 circuit_open)"), "{err}");
        assert_eq!(tally(1, &[("server_error", 99)]).verdict(None), Ok(()));
        assert_eq!(tally(0, &[]).verdict(None), Ok(()), "no call made, none failed");
    }

    #[test]
    fn min_success_is_a_share_of_the_calls() {
        let half = tally(5, &[("timeout (gather)", 5)]);
        assert_eq!(half.verdict(Some(0.5)), Ok(()));
        let err = half.verdict(Some(0.9)).unwrap_err();
        assert!(err.contains("5 of 10 calls succeeded (50.0%), below min_success = 0.9"), "{err}");
        assert_eq!(tally(0, &[("client_error", 3)]).verdict(Some(0.0)), Ok(()), "0 accepts total failure");
        assert_eq!(tally(3, &[]).verdict(Some(1.0)), Ok(()));
    }

    #[test]
    fn calls_the_orchestration_stopped_are_not_counted() {
        let mut t = Tally::default();
        t.record(&Err(CallError::BudgetExceeded));
        t.record(&Err(CallError::Terminated));
        assert_eq!(t, Tally::default());
        t.record(&Err(CallError::Status { code: 401, retry_after: None }));
        t.record(&Ok(Reply { text: String::new(), tokens_in: 1, tokens_out: 1 }));
        assert_eq!(t, tally(1, &[("client_error", 1)]));
    }
}
