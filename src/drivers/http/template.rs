//! The request templates of an `http` stage: every path, header and body string that holds
//! `{{ … }}` or `{% … %}` is compiled once when the stage starts and rendered per request with
//! `vars`, `user` (`id`, `n`), `iteration` and `session` (values extracted earlier). Strings
//! without template syntax are sent as written, with no rendering cost. Rendering is fuelled
//! (a runaway loop in a template is an error, not a hang) and undefined names are errors.

use std::borrow::Cow;

use minijinja::{Environment, UndefinedBehavior, Value};

/// Instructions one render may run.
const FUEL: u64 = 100_000;

fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

/// Whether `text` compiles (for `planrun validate`).
pub fn compile_check(text: &str) -> Result<(), String> {
    if !is_template(text) {
        return Ok(());
    }
    Environment::new().template_from_str(text).map(|_| ()).map_err(|e| format!("template error: {e}"))
}

/// A compiled string.
#[derive(Clone, Debug)]
pub enum Tpl {
    Static(String),
    Jinja(String),
}

impl Tpl {
    pub fn is_static(&self) -> bool {
        matches!(self, Tpl::Static(_))
    }
}

pub struct Templates {
    env: Environment<'static>,
    n: usize,
}

impl Default for Templates {
    fn default() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        Templates { env, n: 0 }
    }
}

impl Templates {
    pub fn add(&mut self, text: &str) -> Result<Tpl, String> {
        if !is_template(text) {
            return Ok(Tpl::Static(text.to_string()));
        }
        let name = format!("t{}", self.n);
        self.n += 1;
        self.env.add_template_owned(name.clone(), text.to_string()).map_err(|e| format!("template error: {e}"))?;
        Ok(Tpl::Jinja(name))
    }

    pub fn render<'a>(&self, t: &'a Tpl, ctx: &Value) -> Result<Cow<'a, str>, String> {
        match t {
            Tpl::Static(s) => Ok(Cow::Borrowed(s)),
            Tpl::Jinja(name) => {
                let tmpl = self.env.get_template(name).map_err(|e| e.to_string())?;
                tmpl.render(ctx).map(Cow::Owned).map_err(|e| format!("template error: {e}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_strings_are_static_and_templates_render_with_their_context() {
        let mut t = Templates::default();
        let plain = t.add("/health").unwrap();
        assert!(plain.is_static());
        let tpl = t.add("/chat/{{ session.conv }}?u={{ user.id }}").unwrap();
        let ctx = minijinja::context! { session => minijinja::context!{ conv => "c-9" }, user => minijinja::context!{ id => 3 } };
        assert_eq!(t.render(&tpl, &ctx).unwrap(), "/chat/c-9?u=3");
        let missing = t.render(&tpl, &minijinja::context! { user => minijinja::context!{ id => 3 } }).unwrap_err();
        assert!(missing.contains("undefined"), "{missing}");
    }

    #[test]
    fn a_runaway_template_runs_out_of_fuel() {
        let mut t = Templates::default();
        let tpl = t.add("{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}").unwrap();
        let err = t.render(&tpl, &minijinja::context! {}).unwrap_err();
        assert!(err.contains("fuel"), "{err}");
    }
}
