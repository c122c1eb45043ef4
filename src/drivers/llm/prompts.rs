//! Prompt templates: each agent's minijinja template, compiled once per stage, rendered with
//! `vars`, `round` (1-based), `agent`, `role` and `previous` (the last round's answers).

use super::roster::Agent;

pub struct Prompts {
    env: minijinja::Environment<'static>,
    vars: minijinja::Value,
}

impl Prompts {
    /// Compile every agent's template (templates are named by their source).
    pub fn new<'t>(
        templates: impl Iterator<Item = &'t str>,
        vars: &serde_json::Map<String, serde_json::Value>,
    ) -> Prompts {
        let mut sources: Vec<&str> = templates.collect();
        sources.sort_unstable();
        sources.dedup();
        let mut env = minijinja::Environment::new();
        for t in sources {
            // A template that does not compile renders as the error (the plan check refuses
            // such plans; this keeps a run going if one slips through).
            let _ = env.add_template_owned(t.to_string(), t.to_string());
        }
        Prompts { env, vars: minijinja::Value::from(minijinja::value::Serde(vars)) }
    }

    /// Render an agent's prompt. `previous` is built once per round: cloning the answers into
    /// every call's context made a 10,000-agent round quadratic.
    pub fn render(&self, agent: &Agent, round: u32, previous: &minijinja::Value) -> String {
        let ctx = minijinja::context! {
            vars => self.vars.clone(),
            round => round + 1,
            agent => &*agent.name,
            role => &*agent.role,
            previous => previous.clone(),
        };
        self.env
            .get_template(&agent.template)
            .and_then(|t| t.render(ctx))
            .unwrap_or_else(|e| format!("(prompt template failed: {e})"))
    }
}
