//! The `llm` stage as the runner sees it: `impl Driver for LlmCfg` — its one-line description,
//! whether it is simulated (may run on the virtual clock), the checks the plan loader runs on
//! its fields, and `run`, which hands one iteration to an `Orchestration`.

use super::config::LlmCfg;
use super::orchestration::Orchestration;
use crate::drivers::{BoxFuture, Driver, Outcome, StageContext, config_of};
use crate::plan::model::StageCommon;
use crate::plan::{FieldError, StageDriver};

/// A template that does not compile, as a located error.
fn check_template(source: &str, at: &[&str]) -> Result<(), FieldError> {
    let env = minijinja::Environment::new();
    env.template_from_str(source).map(|_| ()).map_err(|e| FieldError::new(format!("prompt template: {e}")).at(at))
}

impl StageDriver for LlmCfg {
    fn config(&self) -> serde_json::Value {
        config_of(self)
    }

    fn describe(&self) -> String {
        let agents: u32 = self.agents.iter().map(|a| a.count.unwrap_or(1)).sum();
        format!("{:?} of {agents} LLM agents, {} round(s)", self.pattern, self.rounds).to_lowercase()
    }

    fn simulated(&self) -> bool {
        self.providers.values().all(|p| p.is_simulated())
    }

    fn check(&self, _stage: &StageCommon) -> Result<(), FieldError> {
        if self.agents.is_empty() {
            return Err("an llm stage needs at least one `agent`".into());
        }
        for (i, a) in self.agents.iter().enumerate() {
            let at = i.to_string();
            if a.provider.is_empty() {
                return Err(FieldError::new(format!("agent `{}` names no provider", a.name)).at(&["agent", &at]));
            }
            for p in &a.provider {
                if !self.providers.contains_key(p) {
                    let names: Vec<&str> = self.providers.keys().map(String::as_str).collect();
                    let msg =
                        format!("agent `{}` uses unknown provider `{p}` (providers: {})", a.name, names.join(", "));
                    return Err(FieldError::new(msg).at(&["agent", &at, "provider"]));
                }
            }
            if let Some(t) = &a.prompt {
                check_template(t, &["agent", &at, "prompt"])?;
            }
        }
        for (i, f) in self.faults.iter().enumerate() {
            let at = ["fault".to_string(), i.to_string()];
            let kinds =
                [f.terminate.is_some(), f.outage.is_some(), f.fail_rate.is_some()].iter().filter(|x| **x).count();
            if kinds != 1 {
                let msg = format!("fault at {} must have exactly one of terminate, outage, fail_rate", f.at);
                return Err(FieldError::new(msg).at(&at));
            }
            if f.fail_rate.is_some() && f.for_.is_none() {
                return Err(FieldError::new(format!("fail_rate fault at {} needs `for`", f.at)).at(&at));
            }
        }
        if let Some(t) = &self.prompt {
            check_template(t, &["prompt"])?;
        }
        if let Some(m) = self.min_success
            && !(0.0..=1.0).contains(&m)
        {
            let msg = format!("min_success is a share of the calls, from 0 to 1 (got {m})");
            return Err(FieldError::new(msg).at(&["min_success"]));
        }
        Ok(())
    }
}

impl Driver for LlmCfg {
    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Outcome> {
        Box::pin(Orchestration::new(self, ctx).run())
    }
}
