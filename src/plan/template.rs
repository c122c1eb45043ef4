//! Load-time minijinja over vars: a string that is exactly one `{{ expr }}` takes the
//! expression's *typed* value (`"{{ vars.rounds }}"` becomes the integer), any other string with
//! template syntax is rendered to a string. Undefined names are errors at the string's span.
//! Keys holding run-time templates (`prompt`, `template`, `*_template`), and strings that read
//! a run-time name (`user`, `session`, `iteration`: `RUNTIME_NAMES`), are left for their
//! driver, which renders them with per-round or per-request context. All of a plan's templates share one
//! budget of instructions and output (`limits`), so none can run without end or fill memory.

use std::io;

use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};

use super::limits::{MAX_TEMPLATE_OUTPUT, MAX_TEMPLATES_OUTPUT, TEMPLATE_FUEL, human_bytes};
use super::node::{Node, NodeKind};
use crate::diag::{Diag, Source};

/// After this many failed templates the rest are left unevaluated: the plan is already
/// refused, and a failing template's fuel cannot be counted against the plan's budget.
const MAX_TEMPLATE_ERRORS: usize = crate::diag::SHOWN_DIAGS;

/// The name a lone `{{ expr }}` is stored under to read its typed value back.
const VALUE: &str = "__planrun_value";

/// Resolves a plan's load-time templates within one budget: [`TEMPLATE_FUEL`] instructions and
/// [`MAX_TEMPLATES_OUTPUT`] bytes for the whole plan, at most [`MAX_TEMPLATE_OUTPUT`] bytes for
/// one string. A loop that would run for hours, or a template that renders gigabytes, is a
/// located error instead.
pub struct Resolver<'a> {
    env: Environment<'a>,
    ctx: Value,
    names: String,
    fuel: u64,
    output: usize,
    errors: usize,
}

/// Keys whose string values are templates rendered later, at run time, by the driver.
pub fn is_runtime_template_key(key: &str) -> bool {
    key == "prompt" || key == "template" || key.ends_with("_template")
}

/// Names only a driver knows, at run time (an `http` user, its session, its iteration): a
/// string whose template reads one of them is left for its driver, which renders it per
/// request with `vars` as well.
pub const RUNTIME_NAMES: &[&str] = &["user", "session", "iteration"];

fn uses_runtime_names(env: &Environment<'_>, s: &str) -> bool {
    env.template_from_str(s)
        .map(|t| t.undeclared_variables(false).iter().any(|n| RUNTIME_NAMES.contains(&n.as_str())))
        .unwrap_or(false)
}

/// Why one template failed.
enum Failure {
    Template(minijinja::Error),
    OutOfFuel,
    TooLong(usize),
}

impl Resolver<'_> {
    pub fn new(vars: &serde_json::Map<String, serde_json::Value>) -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        guard_sized_filters(&mut env);
        let ctx = Value::from(minijinja::value::Serde(serde_json::json!({ "vars": vars })));
        let names = vars.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
        Resolver { env, ctx, names, fuel: TEMPLATE_FUEL, output: MAX_TEMPLATES_OUTPUT, errors: 0 }
    }

    pub fn resolve(&mut self, node: &mut Node, src: &Source, diags: &mut Vec<Diag>) {
        match &mut node.kind {
            NodeKind::Str(s) if s.contains("{{") || s.contains("{%") => {
                if self.errors >= MAX_TEMPLATE_ERRORS || uses_runtime_names(&self.env, s) {
                    return;
                }
                match self.eval(s) {
                    Ok(v) => *node = Node::from_json(&v, &node.span),
                    Err(f) => {
                        self.errors += 1;
                        diags.push(self.diag(f).at(src, node.span.clone()));
                    }
                }
            }
            NodeKind::List(items) => items.iter_mut().for_each(|n| self.resolve(n, src, diags)),
            NodeKind::Table(t) => {
                for e in t.entries.iter_mut().filter(|e| !is_runtime_template_key(&e.key)) {
                    self.resolve(&mut e.value, src, diags);
                }
            }
            _ => {}
        }
    }

    fn diag(&self, f: Failure) -> Diag {
        match f {
            Failure::Template(e) => Diag::new(format!("template error: {}", e.detail().unwrap_or(&e.to_string())))
                .help(if self.names.is_empty() {
                    "templates see `vars.NAME`; this plan declares no vars".to_string()
                } else {
                    format!("templates see `vars.NAME`; declared vars: {}", self.names)
                }),
            Failure::OutOfFuel => Diag::new(format!(
                "template takes too long: the plan's templates may run {TEMPLATE_FUEL} instructions in all"
            ))
            .help("load-time templates fill in fields from vars; compute big things outside the plan"),
            Failure::TooLong(limit) => {
                Diag::new(format!("template renders more than {}", human_bytes(limit))).help(format!(
                    "one template may render {}, all of a plan's {}",
                    human_bytes(MAX_TEMPLATE_OUTPUT),
                    human_bytes(MAX_TEMPLATES_OUTPUT)
                ))
            }
        }
    }

    fn eval(&mut self, s: &str) -> Result<serde_json::Value, Failure> {
        if self.fuel == 0 {
            return Err(Failure::OutOfFuel);
        }
        let t = s.trim();
        let single = t.starts_with("{{") && t.ends_with("}}") && t.matches("{{").count() == 1;
        // A lone expression is evaluated as `{% set %}` so that it runs under the same fuel as
        // a template and its typed value can be read back from the template's state.
        let inner = if single { t[2..t.len() - 2].trim() } else { "" };
        let source = if single {
            self.env.compile_expression(inner).map_err(Failure::Template)?;
            format!("{{% set {VALUE} = {inner} %}}")
        } else {
            s.to_string()
        };
        let limit = MAX_TEMPLATE_OUTPUT.min(self.output);
        self.env.set_fuel(Some(self.fuel));
        let template = self.env.template_from_str(&source).map_err(Failure::Template)?;
        let mut out = Capped { buf: Vec::new(), limit, over: false };
        let captured = match template.render_captured_to(&self.ctx, &mut out) {
            Ok(c) => c,
            Err(_) if out.over => return Err(Failure::TooLong(limit)),
            Err(e) if e.kind() == ErrorKind::OutOfFuel => {
                self.fuel = 0;
                return Err(Failure::OutOfFuel);
            }
            Err(e) => return Err(Failure::Template(e)),
        };
        let state = captured.state();
        let used = state.fuel_levels().map_or(0, |(used, _)| used);
        self.fuel = self.fuel.saturating_sub(used.max(1));
        self.output = self.output.saturating_sub(out.buf.len());
        if !single {
            return Ok(serde_json::Value::String(String::from_utf8_lossy(&out.buf).into_owned()));
        }
        let v = state.lookup(VALUE).unwrap_or_default();
        if v.is_undefined() {
            return Err(Failure::Template(minijinja::Error::new(
                ErrorKind::UndefinedError,
                format!("`{inner}` is undefined"),
            )));
        }
        // A typed value is held to the same size limit as rendered text, measured by writing
        // it out (which stops at the limit) before it is converted.
        let bad =
            |e: serde_json::Error| Failure::Template(minijinja::Error::new(ErrorKind::BadSerialization, e.to_string()));
        if v.as_str().is_some_and(|s| s.len() > limit) {
            return Err(Failure::TooLong(limit));
        }
        let mut sized = Capped { buf: Vec::new(), limit, over: false };
        if let Err(e) = serde_json::to_writer(&mut sized, &v) {
            return Err(if sized.over { Failure::TooLong(limit) } else { bad(e) });
        }
        self.output = self.output.saturating_sub(sized.buf.len());
        serde_json::to_value(&v).map_err(bad)
    }
}

/// The largest size a load-time template may ask of `indent`, `tojson(indent=…)` and a
/// `format` width. These filters allocate what they are told to, so a few extra digits
/// (`indent(9999999999)`) would abort planrun on a failed allocation instead of being an error.
const MAX_FILTER_SIZE: usize = 9999;

/// The most slices `slice` may make: as many items as minijinja's `range` gives.
const MAX_SLICES: usize = 100_000;

fn too_big(filter: &str, limit: usize) -> minijinja::Error {
    minijinja::Error::new(ErrorKind::InvalidOperation, format!("{filter}: sizes above {limit} are refused in a plan"))
}

/// Replace the builtin filters that take a size with ones that check it first.
fn guard_sized_filters(env: &mut Environment<'_>) {
    use minijinja::filters;
    use minijinja::value::{Kwargs, Rest, StringInput, ValueOrKwargs};
    env.add_filter(
        "indent",
        |v: StringInput<'_>, width: Option<usize>, first: Option<bool>, blank: Option<bool>, kwargs: Kwargs| {
            let w = match width {
                Some(w) => Some(w),
                None => kwargs.get::<Option<usize>>("width")?,
            };
            if w.is_some_and(|w| w > MAX_FILTER_SIZE) {
                return Err(too_big("indent", MAX_FILTER_SIZE));
            }
            filters::indent(v, width, first, blank, kwargs)
        },
    );
    env.add_filter("tojson", |v: &Value, indent: Option<Value>, kwargs: Kwargs| {
        let i = match &indent {
            Some(i) => Some(i.clone()),
            None => kwargs.get::<Option<Value>>("indent")?,
        };
        if i.and_then(|i| i.as_usize()).is_some_and(|i| i > MAX_FILTER_SIZE) {
            return Err(too_big("tojson", MAX_FILTER_SIZE));
        }
        filters::tojson(v, indent, kwargs)
    });
    env.add_filter("slice", |state: &minijinja::State<'_, '_>, v: Value, count: usize, fill: Option<Value>| {
        if count > MAX_SLICES {
            return Err(too_big("slice", MAX_SLICES));
        }
        filters::slice(state, v, count, fill)
    });
    env.add_filter("format", |state: &mut minijinja::State<'_, '_>, f: &Value, args: Rest<ValueOrKwargs>| {
        // A width or precision is a run of digits in the format string; five or more digits
        // is past the limit (literal text rarely has such numbers, and can be an argument).
        let longest = f.as_str().map_or(0, |s| s.split(|c: char| !c.is_ascii_digit()).map(str::len).max().unwrap_or(0));
        if longest > MAX_FILTER_SIZE.to_string().len() {
            return Err(too_big("format", MAX_FILTER_SIZE));
        }
        filters::format(state, f, args)
    });
}

/// A sink that refuses to grow past `limit` bytes: rendering stops at the first write over it.
struct Capped {
    buf: Vec<u8>,
    limit: usize,
    over: bool,
}

impl io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            self.over = true;
            return Err(io::Error::other("template output limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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
        let mut r = Resolver::new(vars.as_object().unwrap());
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
        let mut r = Resolver::new(json!({}).as_object().unwrap());
        let src = Source::new("t.toml", "a = \"{{ vars.nope }}\"\n");
        let mut n = from_toml(&src).unwrap();
        let mut diags = vec![];
        r.resolve(&mut n, &src, &mut diags);
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].span, Some(4..21)); // the quoted string
    }

    fn resolve_all(texts: &[&str]) -> Vec<Diag> {
        let mut r = Resolver::new(json!({}).as_object().unwrap());
        let toml: String = texts.iter().enumerate().map(|(i, t)| format!("k{i} = \"{t}\"\n")).collect();
        let src = Source::new("t.toml", toml);
        let mut n = from_toml(&src).unwrap();
        let mut diags = vec![];
        r.resolve(&mut n, &src, &mut diags);
        diags
    }

    #[test]
    fn a_runaway_loop_runs_out_of_fuel_at_its_string() {
        let d = resolve_all(&["{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"]);
        assert_eq!(d.len(), 1);
        assert!(d[0].message.starts_with("template takes too long"), "{}", d[0].message);
        assert_eq!(d[0].span, Some(5..88));
    }

    #[test]
    fn output_is_capped_for_text_and_typed_values() {
        for t in
            ["{{ 'x' * 2000000 }}", "x{{ 'x' * 2000000 }}", "{% for i in range(3000) %}{{ 'x' * 1000 }}{% endfor %}"]
        {
            let d = resolve_all(&[t]);
            assert_eq!(d.len(), 1, "{t}");
            assert_eq!(d[0].message, "template renders more than 1 MiB", "{t}");
        }
        assert!(resolve_all(&["{{ 'x' * 1000000 }}"]).is_empty());
    }

    #[test]
    fn the_fuel_is_one_budget_for_the_whole_plan() {
        // Each string alone is well within the budget; together they are not.
        let one = "{% for i in range(50000) %}{% endfor %}";
        assert!(resolve_all(&[one]).is_empty());
        let d = resolve_all(&[one; 40]);
        assert!(!d.is_empty() && d.iter().all(|d| d.message.starts_with("template takes too long")), "{d:?}");
    }

    #[test]
    fn filters_that_allocate_a_given_size_refuse_huge_ones() {
        for t in [
            "{{ 'a'|indent(9999999999) }}",
            "{{ 'a'|indent(width=9999999999) }}",
            "{{ [1]|tojson(indent=9999999999) }}",
            "{{ [1]|slice(9999999999999)|length }}",
            "{{ '%999999999999s'|format(1) }}",
        ] {
            let d = resolve_all(&[t]);
            assert_eq!(d.len(), 1, "{t}");
            assert!(d[0].message.contains("are refused in a plan"), "{t}: {}", d[0].message);
        }
        for t in [
            "{{ 'a\\nb'|indent(2) }}",
            "{{ [1]|tojson(indent=2) }}",
            "{{ [1, 2]|slice(2)|list }}",
            "{{ '%5s'|format(1) }}",
        ] {
            assert!(resolve_all(&[t]).is_empty(), "{t}");
        }
    }
}
