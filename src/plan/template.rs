//! Load-time minijinja over vars: a string that is exactly one `{{ expr }}` takes the
//! expression's *typed* value (`"{{ vars.rounds }}"` becomes the integer), any other string with
//! template syntax is rendered to a string. Undefined names are errors at the string's span.
//! Keys holding run-time templates (`prompt`, `template`, `*_template`) are left for their
//! driver, which renders them with per-round context.

use minijinja::{Environment, UndefinedBehavior, Value};

use super::node::{Node, NodeKind};
use crate::diag::{Diag, Source};

pub struct Resolver<'a> {
    env: Environment<'a>,
    ctx: Value,
    names: String,
}

/// Keys whose string values are templates rendered later, at run time, by the driver.
pub fn is_runtime_template_key(key: &str) -> bool {
    key == "prompt" || key == "template" || key.ends_with("_template")
}

impl Resolver<'_> {
    pub fn new(vars: &serde_json::Map<String, serde_json::Value>) -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let ctx = Value::from(minijinja::value::Serde(serde_json::json!({ "vars": vars })));
        let names = vars.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
        Resolver { env, ctx, names }
    }

    pub fn resolve(&self, node: &mut Node, src: &Source, diags: &mut Vec<Diag>) {
        match &mut node.kind {
            NodeKind::Str(s) if s.contains("{{") || s.contains("{%") => match self.eval(s) {
                Ok(v) => *node = Node::from_json(&v, &node.span),
                Err(e) => diags.push(
                    Diag::new(format!("template error: {}", e.detail().unwrap_or(&e.to_string())))
                        .at(src, node.span.clone())
                        .help(if self.names.is_empty() {
                            "templates see `vars.NAME`; this plan declares no vars".to_string()
                        } else {
                            format!("templates see `vars.NAME`; declared vars: {}", self.names)
                        }),
                ),
            },
            NodeKind::List(items) => items.iter_mut().for_each(|n| self.resolve(n, src, diags)),
            NodeKind::Table(t) => {
                for e in t.entries.iter_mut().filter(|e| !is_runtime_template_key(&e.key)) {
                    self.resolve(&mut e.value, src, diags);
                }
            }
            _ => {}
        }
    }

    fn eval(&self, s: &str) -> Result<serde_json::Value, minijinja::Error> {
        let t = s.trim();
        let single = t.starts_with("{{") && t.ends_with("}}") && t.matches("{{").count() == 1;
        if single {
            let inner = t[2..t.len() - 2].trim();
            let expr = self.env.compile_expression(inner)?;
            let v = expr.eval(&self.ctx)?;
            if v.is_undefined() {
                return Err(minijinja::Error::new(
                    minijinja::ErrorKind::UndefinedError,
                    format!("`{inner}` is undefined"),
                ));
            }
            return serde_json::to_value(&v)
                .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::BadSerialization, e.to_string()));
        }
        Ok(serde_json::Value::String(self.env.render_str(s, &self.ctx)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::node::from_toml;
    use serde_json::json;

    #[test]
    fn single_expressions_keep_their_type() {
        let vars = json!({"rounds": 10, "who": "ops"});
        let r = Resolver::new(vars.as_object().unwrap());
        let src = Source::new(
            "t.toml",
            "a = \"{{ vars.rounds }}\"\nb = \"x-{{ vars.who }}\"\nc = \"{{ vars.rounds * 2 }}\"\nprompt = \"{{ round }}\"\n",
        );
        let mut n = from_toml(&src).unwrap();
        let mut diags = vec![];
        r.resolve(&mut n, &src, &mut diags);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(n.to_json(), json!({"a": 10, "b": "x-ops", "c": 20, "prompt": "{{ round }}"}));
    }

    #[test]
    fn undefined_var_is_an_error_at_the_string() {
        let r = Resolver::new(json!({}).as_object().unwrap());
        let src = Source::new("t.toml", "a = \"{{ vars.nope }}\"\n");
        let mut n = from_toml(&src).unwrap();
        let mut diags = vec![];
        r.resolve(&mut n, &src, &mut diags);
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].span, Some(4..21)); // the quoted string
    }
}
