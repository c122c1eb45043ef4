//! `include`: a phase whose stages and criteria are another plan's phase, so a suite reuses its
//! plans instead of copying their stages. `[[phase]] name = "redis"` with
//! `include = { plan = "redis-swarms.toml", phase = "swarms", profile = "quick", vars = { … } }`
//! loads that plan (path relative to the including plan's file) with its own vars, profile and
//! `[defaults]`, `vars` applied as `--set` would be, and takes the named phase (or its only one):
//! its stages, its criteria, and — when the plan has just that phase, so the plan's scope is the
//! phase's — its plan-level criteria too. The including phase may add stages of its own after
//! the included ones. The included criteria's `vars.NAME` become the included plan's values. Errors inside the included plan point into that file;
//! a plan that includes itself, directly or not, is an error naming the chain.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::de::from_node;
use super::load::{Catalog, LoadOptions, load_file_with};
use super::model::{Criterion, Origin, Phase};
use super::node::Node;
use crate::diag::{Diag, Source, did_you_mean};

/// How deep includes may nest.
const MAX_DEPTH: usize = 8;

thread_local! {
    /// The files being loaded, outermost first: loading is recursive on one thread.
    static CHAIN: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Include {
    plan: String,
    #[serde(default)]
    phase: Option<String>,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    vars: BTreeMap<String, serde_json::Value>,
}

/// A var's value as `--set` would give it.
fn set_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => items.iter().map(set_text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// `text` (a criterion) with its threshold `vars.NAME` — a var of the included plan — replaced
/// by that var's value (a number as written, a duration in milliseconds, as criteria compare
/// them), so it means in the including plan what it meant in its own, and reads the same from
/// `plan.resolved.toml`. A var may only be a criterion's threshold, the text after its
/// comparison at the end; `vars.x` anywhere else (inside a quoted string) is left alone.
fn with_values(text: &str, vars: &[(String, super::vars::Var)]) -> String {
    static THRESHOLD: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?s)^(.*(?:<=|>=|==|!=|<|>)\s*)vars\.([A-Za-z_][A-Za-z0-9_]*)(\s*)$")
            .expect("a valid regex")
    });
    let Some(c) = THRESHOLD.captures(text) else { return text.to_string() };
    let value = vars.iter().find(|(n, _)| n == &c[2]).map(|(_, v)| &v.value);
    let number = match value {
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => super::Dur::parse(s).ok().map(|d| d.0.as_secs_f64() * 1000.0),
        _ => None,
    };
    // Rust writes an f64 without an exponent (1e-7 as 0.0000001), which the criteria read.
    match number.filter(|n| n.is_finite()) {
        Some(n) => format!("{}{n}{}", &c[1], &c[3]),
        None => text.to_string(),
    }
}

/// Run `f` with `path` pushed on the include chain (so a top-level load knows its own file).
pub(super) fn entered<T>(path: &Path, f: impl FnOnce() -> T) -> T {
    let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    CHAIN.with(|c| c.borrow_mut().push(canon));
    let out = f();
    CHAIN.with(|c| c.borrow_mut().pop());
    out
}

/// What the including phase says of itself.
pub(super) struct Head {
    pub name: String,
    pub label: Option<String>,
    pub description: Option<String>,
    pub criteria: Vec<Criterion>,
}

/// The phase `node` (the `include` entry's value) names, under the including phase's `name`,
/// `label` and `description`.
pub(super) fn phase<C: Catalog>(
    head: Head,
    node: &Node,
    src: &Source,
    catalog: &C,
    diags: &mut Vec<Diag>,
) -> Option<Phase<C::Driver>> {
    let Head { name, label, description, criteria } = head;
    let inc = match from_node::<Include>(node) {
        Ok(i) => i,
        Err(e) => {
            diags.push(e.into_diag().in_source(src));
            return None;
        }
    };
    let at = |d: Diag| d.at(src, node.span.clone());
    let base = Path::new(&*src.name).parent().unwrap_or(Path::new("."));
    let path = base.join(&inc.plan);
    if !path.is_file() {
        diags.push(at(Diag::new(format!("phase `{name}` includes `{}`, which is not a file", path.display()))
            .help("`plan` is a path relative to the including plan's file")));
        return None;
    }
    let canon = path.canonicalize().unwrap_or_else(|_| path.clone());
    let chain = CHAIN.with(|c| c.borrow().clone());
    if chain.contains(&canon) || chain.len() >= MAX_DEPTH {
        let shown: Vec<String> = chain.iter().chain(std::iter::once(&canon)).map(|p| p.display().to_string()).collect();
        let why = if chain.len() >= MAX_DEPTH {
            format!("includes nest more than {MAX_DEPTH} deep")
        } else {
            "a plan includes itself".into()
        };
        diags.push(at(Diag::new(format!("{why}: {}", shown.join(" → ")))));
        return None;
    }
    let opts = LoadOptions {
        // An empty profile is none (so a template can choose one or not).
        profile: inc.profile.clone().filter(|p| !p.is_empty()),
        sets: inc.vars.iter().map(|(k, v)| (k.clone(), set_text(v))).collect(),
    };
    let (plan, inner_src) = match entered(&path, || load_file_with(&path, &opts, catalog)) {
        Ok(p) => p,
        Err(ds) => {
            let n = ds.0.len();
            diags.extend(ds.0.into_iter().map(|d| d.in_source(src)));
            diags.push(at(Diag::new(format!(
                "phase `{name}`: the included plan `{}` has {n} problem(s) (above)",
                inc.plan
            ))));
            return None;
        }
    };
    let names: Vec<&str> = plan.phases.iter().map(|p| p.name.as_str()).collect();
    let pick = match &inc.phase {
        Some(want) => plan.phases.iter().position(|p| &p.name == want).ok_or_else(|| {
            let help = match did_you_mean(want, names.iter().copied()) {
                Some(s) => format!("did you mean `{s}`? phases: {}", names.join(", ")),
                None => format!("phases: {}", names.join(", ")),
            };
            Diag::new(format!("`{}` has no phase `{want}`", inc.plan)).help(help)
        }),
        None if plan.phases.len() == 1 => Ok(0),
        None => Err(Diag::new(format!("`{}` has {} phases: say which with `phase`", inc.plan, names.len()))
            .help(format!("phases: {}", names.join(", ")))),
    };
    let i = match pick {
        Ok(i) => i,
        Err(d) => {
            diags.push(at(d));
            return None;
        }
    };
    let whole = plan.phases.len() == 1;
    let plan_criteria = if whole { plan.meta.criteria.clone() } else { Vec::new() };
    let mut picked = plan.phases.into_iter().nth(i)?;
    let origin = Origin(Some(inner_src));
    let own_vars = |c: &mut Criterion| {
        c.origin = origin.clone();
        c.check.value = with_values(&c.check.value, &plan.vars);
    };
    let mut all = criteria;
    for mut c in plan_criteria.into_iter().chain(std::mem::take(&mut picked.criteria)) {
        own_vars(&mut c);
        all.push(c);
    }
    for s in &mut picked.stages {
        for c in &mut s.common.criteria {
            own_vars(c);
        }
    }
    Some(Phase {
        name,
        label: label.or(picked.label),
        description: description.or(picked.description),
        criteria: all,
        stages: picked.stages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::vars::{Var, VarType};

    fn var(name: &str, value: serde_json::Value) -> (String, Var) {
        (name.into(), Var { ty: VarType::Int, value, description: None })
    }

    #[test]
    fn only_the_threshold_var_becomes_its_value() {
        let vars = [
            var("lim", serde_json::json!(5)),
            var("tiny", serde_json::json!(0.0000001)),
            var("d", serde_json::json!("2s")),
        ];
        assert_eq!(
            with_values(r#"count(where name == "vars.lim") > vars.lim"#, &vars),
            r#"count(where name == "vars.lim") > 5"#
        );
        assert_eq!(with_values("max(value) < vars.tiny", &vars), "max(value) < 0.0000001");
        assert_eq!(with_values("p95(latency_ms) <= vars.d", &vars), "p95(latency_ms) <= 2000");
        assert_eq!(
            with_values("max(value) < vars.other", &vars),
            "max(value) < vars.other",
            "not its var: left for the including plan"
        );
        assert_eq!(with_values("count(where kind == \"x\") == 3", &vars), "count(where kind == \"x\") == 3");
    }
}
