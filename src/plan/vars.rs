//! Typed plan vars, profile overlays and `--set` overrides. A var's type is declared
//! (`{ type = "duration", default = "5m" }`) or inferred from its value (`agents = 50` is an
//! int, `interval = "5m"` a duration); overrides are checked against that type, and unknown
//! names are errors that list the valid ones.

use serde_json::Value as J;

use super::duration::Dur;
use super::node::{Node, NodeKind, Table};
use crate::diag::{Diag, Source, did_you_mean};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarType {
    String,
    Int,
    Float,
    Bool,
    Duration,
    List,
}

impl VarType {
    const ALL: &'static [&'static str] = &["string", "int", "float", "bool", "duration", "list"];

    fn parse(s: &str) -> Option<VarType> {
        Some(match s {
            "string" => VarType::String,
            "int" => VarType::Int,
            "float" => VarType::Float,
            "bool" => VarType::Bool,
            "duration" => VarType::Duration,
            "list" => VarType::List,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            VarType::String => "string",
            VarType::Int => "int",
            VarType::Float => "float",
            VarType::Bool => "bool",
            VarType::Duration => "duration",
            VarType::List => "list",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Var {
    pub ty: VarType,
    /// The value as plain data; durations stay as their string (`"5m"`).
    pub value: J,
    pub description: Option<String>,
}

impl Var {
    /// Resolved form for `plan.resolved.toml`: explicit type, so it reloads identically.
    pub fn to_json(&self) -> J {
        let mut o = serde_json::json!({ "type": self.ty.name(), "default": self.value });
        if let Some(d) = &self.description {
            o["description"] = J::String(d.clone());
        }
        o
    }
}

fn infer(node: &Node) -> Option<VarType> {
    Some(match &node.kind {
        NodeKind::Str(s) if Dur::looks_like(s) => VarType::Duration,
        NodeKind::Str(_) => VarType::String,
        NodeKind::Int(_) => VarType::Int,
        NodeKind::Float(_) => VarType::Float,
        NodeKind::Bool(_) => VarType::Bool,
        NodeKind::List(_) => VarType::List,
        NodeKind::Null | NodeKind::Table(_) => return None,
    })
}

/// Check a node against a type and return its plain value.
fn coerce(ty: VarType, node: &Node) -> Result<J, String> {
    let bad = || format!("expected {} value, found {}", ty.name(), node.type_name());
    Ok(match (ty, &node.kind) {
        (VarType::String, NodeKind::Str(s)) => J::String(s.clone()),
        (VarType::Int, NodeKind::Int(i)) => J::from(*i),
        (VarType::Float, NodeKind::Float(f)) => J::from(*f),
        (VarType::Float, NodeKind::Int(i)) => J::from(*i as f64),
        (VarType::Bool, NodeKind::Bool(b)) => J::Bool(*b),
        (VarType::Duration, NodeKind::Str(s)) => {
            Dur::parse(s)?;
            J::String(s.clone())
        }
        (VarType::List, NodeKind::List(_)) => node.to_json(),
        _ => return Err(bad()),
    })
}

/// Parse a `--set` value by the var's type.
pub fn coerce_str(ty: VarType, s: &str) -> Result<J, String> {
    Ok(match ty {
        VarType::String => J::String(s.to_string()),
        VarType::Int => J::from(s.trim().parse::<i64>().map_err(|_| format!("expected an int, got \"{s}\""))?),
        VarType::Float => J::from(s.trim().parse::<f64>().map_err(|_| format!("expected a float, got \"{s}\""))?),
        VarType::Bool => J::Bool(match s.trim() {
            "true" | "yes" | "on" | "1" => true,
            "false" | "no" | "off" | "0" => false,
            _ => return Err(format!("expected true or false, got \"{s}\"")),
        }),
        VarType::Duration => {
            Dur::parse(s)?;
            J::String(s.trim().to_string())
        }
        VarType::List => match serde_json::from_str::<J>(s) {
            Ok(J::Array(a)) => J::Array(a),
            _ => J::Array(s.split(',').map(|x| J::String(x.trim().to_string())).filter(|x| x != "").collect()),
        },
    })
}

/// Read the `[vars]` table.
pub fn declare(table: &Table, src: &Source, diags: &mut Vec<Diag>) -> Vec<(String, Var)> {
    let mut out = Vec::new();
    for e in &table.entries {
        let (ty, value_node, description) = match &e.value.kind {
            NodeKind::Table(t) => {
                let ty_node = t.get("type");
                let Some(default) = t.get("default") else {
                    diags.push(
                        Diag::new(format!("var `{}` declares no `default`", e.key))
                            .at(src, e.key_span.clone())
                            .help("write e.g. `{ type = \"duration\", default = \"5m\" }`"),
                    );
                    continue;
                };
                for k in t.entries.iter().filter(|k| !["type", "default", "description"].contains(&k.key.as_str())) {
                    let mut d =
                        Diag::new(format!("unknown key `{}` in var `{}`", k.key, e.key)).at(src, k.key_span.clone());
                    if let Some(s) = did_you_mean(&k.key, ["type", "default", "description"]) {
                        d = d.help(format!("did you mean `{s}`?"));
                    }
                    diags.push(d);
                }
                let ty = match ty_node {
                    Some(tn) => match tn.value.as_str().and_then(VarType::parse) {
                        Some(ty) => ty,
                        None => {
                            diags.push(
                                Diag::new(format!("unknown var type {}", tn.value))
                                    .at(src, tn.value.span.clone())
                                    .help(format!("types: {}", VarType::ALL.join(", "))),
                            );
                            continue;
                        }
                    },
                    None => match infer(&default.value) {
                        Some(t) => t,
                        None => {
                            diags.push(Diag::new("cannot infer this var's type").at(src, default.value.span.clone()));
                            continue;
                        }
                    },
                };
                let description = t.get("description").and_then(|d| d.value.as_str()).map(str::to_string);
                (ty, &default.value, description)
            }
            _ => match infer(&e.value) {
                Some(ty) => (ty, &e.value, None),
                None => {
                    diags.push(Diag::new(format!("var `{}` has no value", e.key)).at(src, e.value.span.clone()));
                    continue;
                }
            },
        };
        match coerce(ty, value_node) {
            Ok(value) => out.push((e.key.clone(), Var { ty, value, description })),
            Err(msg) => diags.push(Diag::new(format!("var `{}`: {msg}", e.key)).at(src, value_node.span.clone())),
        }
    }
    out
}

fn unknown_var(name: &str, vars: &[(String, Var)]) -> (String, String) {
    let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    let help = match did_you_mean(name, names.iter().copied()) {
        Some(s) => format!("did you mean `{s}`? valid vars: {}", names.join(", ")),
        None if names.is_empty() => "this plan declares no vars".to_string(),
        None => format!("valid vars: {}", names.join(", ")),
    };
    (format!("unknown var `{name}`"), help)
}

/// Named profiles as written: a table of tables in TOML (`[profile.quick]`); in KDL one or more
/// `profile "quick" { ... }` nodes, which lower to tables carrying `name`.
pub fn profiles(node: &Node, src: &Source, diags: &mut Vec<Diag>) -> Vec<(String, Table)> {
    let named = |n: &Node| -> Option<(String, Table)> {
        let t = n.as_table()?;
        let name = t.get("name")?.value.as_str()?.to_string();
        let mut rest = t.clone();
        rest.remove("name");
        Some((name, rest))
    };
    match &node.kind {
        NodeKind::List(items) => items
            .iter()
            .filter_map(|n| {
                let p = named(n);
                if p.is_none() {
                    diags.push(Diag::new("a profile needs a name").at(src, n.span.clone()));
                }
                p
            })
            .collect(),
        NodeKind::Table(t) if t.get("name").is_some_and(|e| e.value.as_str().is_some()) => {
            named(node).into_iter().collect()
        }
        NodeKind::Table(t) => t
            .entries
            .iter()
            .filter_map(|e| match e.value.as_table() {
                Some(body) => Some((e.key.clone(), body.clone())),
                None => {
                    diags.push(
                        Diag::new(format!("profile `{}` must be a table of var overrides", e.key))
                            .at(src, e.value.span.clone()),
                    );
                    None
                }
            })
            .collect(),
        _ => {
            diags.push(Diag::new("`profile` must be a table of named profiles").at(src, node.span.clone()));
            Vec::new()
        }
    }
}

/// Apply one profile's overrides.
pub fn apply_profile(vars: &mut [(String, Var)], overlay: &Table, src: &Source, diags: &mut Vec<Diag>) {
    // Indexed, so a profile over many vars applies in linear time.
    let index: std::collections::HashMap<String, usize> =
        vars.iter().enumerate().map(|(i, (n, _))| (n.clone(), i)).collect();
    for e in &overlay.entries {
        let Some(&at) = index.get(&e.key) else {
            if diags.len() >= crate::diag::SHOWN_DIAGS {
                // Past what is shown: do not spend a suggestion search on each of thousands.
                diags.push(Diag::new(format!("profile sets unknown var `{}`", e.key)).at(src, e.key_span.clone()));
                continue;
            }
            let (msg, help) = unknown_var(&e.key, vars);
            diags.push(Diag::new(format!("profile sets {msg}")).at(src, e.key_span.clone()).help(help));
            continue;
        };
        let var = &mut vars[at].1;
        match coerce(var.ty, &e.value) {
            Ok(v) => var.value = v,
            Err(msg) => diags.push(Diag::new(format!("var `{}`: {msg}", e.key)).at(src, e.value.span.clone())),
        }
    }
}

/// Apply `--set key=value` overrides (strings from the command line).
pub fn apply_sets(vars: &mut [(String, Var)], sets: &[(String, String)]) -> Result<(), Diag> {
    for (k, v) in sets {
        let Some((_, var)) = vars.iter_mut().find(|(n, _)| n == k) else {
            let (msg, help) = unknown_var(k, vars);
            return Err(Diag::new(format!("--set {k}={v}: {msg}")).help(help));
        };
        var.value = coerce_str(var.ty, v)
            .map_err(|m| Diag::new(format!("--set {k}={v}: var `{k}` is {}: {m}", var.ty.name())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::node::from_toml;

    #[test]
    fn infers_and_declares_types() {
        let src = Source::new("v.toml", "a = 1\nb = \"8h\"\nc = \"hello\"\nd = { type = \"float\", default = 2 }\n");
        let n = from_toml(&src).unwrap();
        let mut diags = vec![];
        let vars = declare(n.as_table().unwrap(), &src, &mut diags);
        assert!(diags.is_empty());
        let tys: Vec<_> = vars.iter().map(|(_, v)| v.ty).collect();
        assert_eq!(tys, [VarType::Int, VarType::Duration, VarType::String, VarType::Float]);
        assert_eq!(vars[3].1.value, serde_json::json!(2.0));
    }

    #[test]
    fn set_is_typed_and_unknown_names_list_valid_ones() {
        let mut vars = vec![("agents".to_string(), Var { ty: VarType::Int, value: J::from(5), description: None })];
        apply_sets(&mut vars, &[("agents".into(), "7".into())]).unwrap();
        assert_eq!(vars[0].1.value, J::from(7));
        let e = apply_sets(&mut vars, &[("agents".into(), "many".into())]).unwrap_err();
        assert!(e.message.contains("expected an int"), "{}", e.message);
        let e = apply_sets(&mut vars, &[("agnets".into(), "1".into())]).unwrap_err();
        assert_eq!(e.help.as_deref(), Some("did you mean `agents`? valid vars: agents"));
    }
}
