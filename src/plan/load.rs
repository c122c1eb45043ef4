//! The loading passes, in order: read → lower to a spanned tree → declare vars → apply the
//! profile and `--set` → resolve load-time templates → deserialize the model and each stage's
//! driver config → cross-checks (duplicate names). Problems are collected, not stopped at, so
//! `planrun validate` shows every one it can find at once.

use std::collections::HashMap;
use std::path::Path;

use super::de::{DeError, from_node};
use super::duration::Dur;
use super::limits::{MAX_DURATION, MAX_DURATION_TEXT};
use super::model::{
    AnalysisConfig, FieldError, Meta, Phase, Plan, RawDriver, STAGE_COMMON_KEYS, Stage, StageCommon, StageDriver,
};
use super::node::{self, Entry, Node, NodeKind, Table};
use super::read;
use super::template::Resolver;
use super::vars;
use crate::diag::{Diag, Diags, Source, did_you_mean};

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub profile: Option<String>,
    pub sets: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syntax {
    Toml,
    Kdl,
}

impl Syntax {
    pub fn from_path(path: &Path) -> Option<Syntax> {
        match path.extension()?.to_str()? {
            "toml" => Some(Syntax::Toml),
            "kdl" => Some(Syntax::Kdl),
            _ => None,
        }
    }
}

/// The drivers a plan's stages may name, and how each one's fields become its config. The
/// driver registry (`crate::drivers::Registry`) is one; `Raw`, which keeps every stage's
/// fields as written, is the other (for reading a run's `plan.resolved.toml`).
pub trait Catalog {
    type Driver: StageDriver + Clone;

    /// The driver names, for "did you mean" help.
    fn names(&self) -> Vec<&'static str>;

    /// The driver called `name`, configured from `fields`; `None` for an unknown name.
    fn parse(&self, name: &str, fields: &Node) -> Option<Result<Self::Driver, DeError>>;
}

/// Any driver name; fields kept as written.
pub struct Raw;

impl Catalog for Raw {
    type Driver = RawDriver;

    fn names(&self) -> Vec<&'static str> {
        Vec::new()
    }

    fn parse(&self, _name: &str, fields: &Node) -> Option<Result<RawDriver, DeError>> {
        Some(Ok(RawDriver::new(fields)))
    }
}

const TOP_KEYS: &[&str] = &["plan", "vars", "profile", "defaults", "phase", "analysis"];
const PHASE_KEYS: &[&str] = &["name", "label", "description", "criteria", "stage", "include"];

/// Load a plan file with its driver fields left as written; the returned `Source` is kept for
/// later diagnostics (criteria checks).
pub fn load_file(path: &Path, opts: &LoadOptions) -> Result<(Plan, Source), Diags> {
    load_file_with(path, opts, &Raw)
}

/// Load a plan file, giving each stage's fields to its driver from `catalog`.
pub fn load_file_with<C: Catalog>(
    path: &Path,
    opts: &LoadOptions,
    catalog: &C,
) -> Result<(Plan<C::Driver>, Source), Diags> {
    let name = path.display().to_string();
    let syntax = Syntax::from_path(path)
        .ok_or_else(|| Diag::new(format!("{name}: unknown plan syntax")).help("plan files end in .toml or .kdl"))?;
    let src = read::read_plan(path)?;
    let plan = super::include::entered(path, || load_source(&src, syntax, opts, catalog))?;
    Ok((plan, src))
}

pub fn load_str<C: Catalog>(
    name: &str,
    text: &str,
    syntax: Syntax,
    opts: &LoadOptions,
    catalog: &C,
) -> Result<Plan<C::Driver>, Diags> {
    load_source(&Source::new(name, text), syntax, opts, catalog)
}

fn de_diag(e: DeError, src: &Source) -> Diag {
    e.into_diag().in_source(src)
}

pub fn load_source<C: Catalog>(
    src: &Source,
    syntax: Syntax,
    opts: &LoadOptions,
    catalog: &C,
) -> Result<Plan<C::Driver>, Diags> {
    read::too_big(&src.name, src.text.len() as u64).map_err(|d| d.in_source(src))?;
    let root = match syntax {
        Syntax::Toml => node::from_toml(src)?,
        Syntax::Kdl => node::from_kdl(src)?,
    };
    let mut diags = Vec::new();
    let Some(top) = root.as_table() else {
        return Err(Diag::new("a plan must be a table").at(src, root.span.clone()).into());
    };
    for e in &top.entries {
        if !TOP_KEYS.contains(&e.key.as_str()) {
            let mut d = Diag::new(format!("unknown top-level key `{}`", e.key)).at(src, e.key_span.clone());
            d = match did_you_mean(&e.key, TOP_KEYS.iter().copied()) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.help(format!("a plan has: {}", TOP_KEYS.join(", "))),
            };
            diags.push(d);
        }
    }

    // Vars, then the chosen profile, then --set.
    let mut vars = match top.get("vars") {
        Some(e) => match e.value.as_table() {
            Some(t) => vars::declare(t, src, &mut diags),
            None => {
                diags.push(Diag::new("`vars` must be a table").at(src, e.value.span.clone()));
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    let profiles = top.get("profile").map(|e| vars::profiles(&e.value, src, &mut diags)).unwrap_or_default();
    let profile_names: Vec<String> = profiles.iter().map(|(n, _)| n.clone()).collect();
    if let Some(want) = &opts.profile {
        match profiles.iter().find(|(n, _)| n == want) {
            Some((_, overlay)) => vars::apply_profile(&mut vars, overlay, src, &mut diags),
            None => {
                let mut d = Diag::new(format!("unknown profile `{want}`"));
                d = match (did_you_mean(want, profile_names.iter().map(String::as_str)), profile_names.is_empty()) {
                    (_, true) => d.help("this plan declares no profiles"),
                    (Some(s), _) => d.help(format!("did you mean `{s}`? profiles: {}", profile_names.join(", "))),
                    (None, _) => d.help(format!("profiles: {}", profile_names.join(", "))),
                };
                return Err(d.into());
            }
        }
    }
    if let Err(d) = vars::apply_sets(&mut vars, &opts.sets) {
        return Err(d.into());
    }
    if !diags.is_empty() {
        return Err(Diags(diags));
    }

    // Load-time templates see the final vars.
    let var_map: serde_json::Map<String, serde_json::Value> =
        vars.iter().map(|(n, v)| (n.clone(), v.value.clone())).collect();
    let mut resolver = Resolver::new(&var_map);
    let mut resolved = Table::default();
    for e in &top.entries {
        let mut e = e.clone();
        if matches!(e.key.as_str(), "plan" | "phase" | "analysis" | "defaults") {
            resolver.resolve(&mut e.value, src, &mut diags);
        }
        resolved.entries.push(e);
    }
    if !diags.is_empty() {
        // A string whose template failed would only fail again as the wrong type.
        return Err(Diags(diags));
    }

    let meta = match resolved.get("plan") {
        Some(e) => from_node::<Meta>(&e.value).map_err(|err| diags.push(de_diag(err, src))).ok(),
        None => {
            diags.push(
                Diag::new("missing `[plan]` table").at(src, 0..0).help("add `[plan]` with at least `name = \"...\"`"),
            );
            None
        }
    };
    let analysis = match resolved.get("analysis") {
        Some(e) => {
            from_node::<AnalysisConfig>(&e.value).map_err(|err| diags.push(de_diag(err, src))).unwrap_or_default()
        }
        None => AnalysisConfig::default(),
    };
    let defaults = match resolved.get("defaults") {
        Some(e) => match e.value.as_table() {
            Some(t) => t.clone(),
            None => {
                diags.push(Diag::new("`defaults` must be a table of driver names").at(src, e.value.span.clone()));
                Table::default()
            }
        },
        None => Table::default(),
    };
    let phases = match resolved.get("phase") {
        Some(e) => items(&e.value).iter().filter_map(|n| phase(n, &defaults, src, catalog, &mut diags)).collect(),
        None => Vec::new(),
    };
    if let Some(meta) = &meta {
        if phases.is_empty() && diags.is_empty() {
            let at = resolved.get("plan").map_or(0..0, |e| e.key_span.clone());
            diags.push(
                Diag::new(format!("plan `{}` has no phases", meta.name))
                    .at(src, at)
                    .help("add at least one `[[phase]]` with a `[[phase.stage]]`"),
            );
        }
    }
    check_unique_names(&resolved, src, &mut diags);

    match meta {
        Some(meta) if diags.is_empty() => {
            let plan = Plan { meta, vars, profiles: profile_names, profile: opts.profile.clone(), phases, analysis };
            let total = plan.expected_duration();
            if total >= MAX_DURATION {
                let at = resolved.get("phase").map_or(0..0, |e| e.key_span.clone());
                return Err(Diag::new(format!("the plan's stages take {} in all", Dur(total)))
                    .at(src, at)
                    .help(format!("a plan runs for less than {MAX_DURATION_TEXT}"))
                    .into());
            }
            Ok(plan)
        }
        _ => Err(Diags(diags)),
    }
}

/// One-or-many: a list's items, or the node itself.
fn items(n: &Node) -> &[Node] {
    match &n.kind {
        NodeKind::List(items) => items,
        _ => std::slice::from_ref(n),
    }
}

fn split(table: &Table, keys: &[&str]) -> (Table, Table) {
    let (a, b): (Vec<Entry>, Vec<Entry>) = table.entries.iter().cloned().partition(|e| keys.contains(&e.key.as_str()));
    (Table { entries: a }, Table { entries: b })
}

fn phase<C: Catalog>(
    n: &Node,
    defaults: &Table,
    src: &Source,
    catalog: &C,
    diags: &mut Vec<Diag>,
) -> Option<Phase<C::Driver>> {
    let Some(t) = n.as_table() else {
        diags.push(Diag::new(format!("a phase must be a table, found {}", n.type_name())).at(src, n.span.clone()));
        return None;
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Head {
        name: String,
        #[serde(default)]
        label: Option<String>,
        #[serde(default)]
        description: Option<String>,
        #[serde(default)]
        criteria: Vec<super::Criterion>,
    }
    let (stage_part, head_part) = split(t, &["stage", "include"]);
    let head = match from_node::<Head>(&Node::new(n.span.clone(), NodeKind::Table(head_part))) {
        Ok(h) => h,
        Err(e) => {
            diags.push(de_diag(e.widen_unknown_key(PHASE_KEYS), src));
            return None;
        }
    };
    if let Some(inc) = stage_part.get("include") {
        // The included phase's stages, then any of this phase's own.
        let own: Vec<Stage<C::Driver>> = match stage_part.get("stage") {
            Some(e) => items(&e.value).iter().filter_map(|s| stage(s, defaults, src, catalog, diags)).collect(),
            None => Vec::new(),
        };
        let head = super::include::Head {
            name: head.name,
            label: head.label,
            description: head.description,
            criteria: head.criteria,
        };
        let mut p = super::include::phase(head, &inc.value, src, catalog, diags)?;
        for s in own {
            if p.stages.iter().any(|x| x.common.name == s.common.name) {
                diags.push(
                    Diag::new(format!("stage name `{}` is already a stage of the included phase", s.common.name))
                        .at(src, n.span.clone()),
                );
                return None;
            }
            p.stages.push(s);
        }
        return Some(p);
    }
    let stages: Vec<Stage<C::Driver>> = match stage_part.get("stage") {
        Some(e) => items(&e.value).iter().filter_map(|s| stage(s, defaults, src, catalog, diags)).collect(),
        None => {
            diags.push(Diag::new(format!("phase `{}` has no stages", head.name)).at(src, n.span.clone()));
            Vec::new()
        }
    };
    Some(Phase { name: head.name, label: head.label, description: head.description, criteria: head.criteria, stages })
}

/// `defaults.DRIVER` under a stage's own driver fields: tables merge key by key (the stage's
/// keys win), anything else the stage sets replaces the default.
fn merge_defaults(base: &Table, over: Table) -> Table {
    let mut out = base.clone();
    // Indexed, so a stage and a default with many keys merge in linear time.
    let mut index: HashMap<String, usize> = out.entries.iter().enumerate().map(|(i, e)| (e.key.clone(), i)).collect();
    for e in over.entries {
        let Some(&at) = index.get(&e.key) else {
            index.insert(e.key.clone(), out.entries.len());
            out.entries.push(e);
            continue;
        };
        let existing = &mut out.entries[at];
        match (&existing.value.kind, &e.value.kind) {
            (NodeKind::Table(base), NodeKind::Table(t)) => {
                let merged = merge_defaults(base, t.clone());
                existing.value = Node::new(e.value.span.clone(), NodeKind::Table(merged));
            }
            _ => *existing = e,
        }
    }
    out
}

fn stage<C: Catalog>(
    n: &Node,
    defaults: &Table,
    src: &Source,
    catalog: &C,
    diags: &mut Vec<Diag>,
) -> Option<Stage<C::Driver>> {
    let Some(t) = n.as_table() else {
        diags.push(Diag::new(format!("a stage must be a table, found {}", n.type_name())).at(src, n.span.clone()));
        return None;
    };
    let (common_part, driver_part) = split(t, STAGE_COMMON_KEYS);
    let common = match from_node::<StageCommon>(&Node::new(n.span.clone(), NodeKind::Table(common_part))) {
        Ok(c) => c,
        Err(e) => {
            diags.push(de_diag(e, src));
            return None;
        }
    };
    let name = common.driver.value.as_str();
    let driver_part = match defaults.get(name).and_then(|e| e.value.as_table()) {
        Some(d) => merge_defaults(d, driver_part),
        None => driver_part,
    };
    let fields = Node::new(n.span.clone(), NodeKind::Table(driver_part));
    let Some(parsed) = catalog.parse(name, &fields) else {
        let names = catalog.names();
        let driver_span = common.driver.span.clone().unwrap_or(n.span.clone());
        let mut d = Diag::new(format!("unknown driver `{name}`")).at(src, driver_span);
        d = match did_you_mean(name, names.iter().copied()) {
            Some(s) => d.help(format!("did you mean `{s}`? drivers: {}", names.join(", "))),
            None => d.help(format!("drivers: {}", names.join(", "))),
        };
        diags.push(d);
        return None;
    };
    if let Err(d) = check_stage_time(&common, t, src) {
        diags.push(d);
        return None;
    }
    match parsed {
        Ok(driver) => match driver.check(&common) {
            Ok(()) => Some(Stage { common, driver }),
            Err(e) => {
                diags.push(field_diag(&e, &common, n, src));
                None
            }
        },
        Err(e) => {
            let mut d = de_diag(e.widen_unknown_key(STAGE_COMMON_KEYS), src);
            d.message = format!("stage `{}` ({name} driver): {}", common.name, d.message);
            diags.push(d);
            None
        }
    }
}

/// A stage's duration times its repeats, plus its pauses, must stay under [`MAX_DURATION`]
/// (each duration already does): checked, so a huge `repeat` is an error, not an overflow.
fn check_stage_time(common: &StageCommon, t: &Table, src: &Source) -> Result<(), Diag> {
    let one = common.duration.map(|d| d.0).unwrap_or_default();
    let pause = common.pause.map(|d| d.0).unwrap_or_default();
    let n = common.repeat.max(1);
    let total = one.checked_mul(n).zip(pause.checked_mul(n - 1)).and_then(|(a, b)| a.checked_add(b));
    if total.is_some_and(|t| t < MAX_DURATION) {
        return Ok(());
    }
    let at = ["repeat", "duration", "pause"].iter().find_map(|k| t.get(k)).map_or(0..0, |e| e.value.span.clone());
    let took = total.map_or_else(|| "more than can be counted".to_string(), |t| Dur(t).to_string());
    Err(Diag::new(format!("stage `{}` takes {took} with its repeats and pauses", common.name))
        .at(src, at)
        .help(format!("a stage runs for less than {MAX_DURATION_TEXT}")))
}

/// A driver's complaint about one of its fields, pointing at the value under the error's key
/// path (as far down the path as the stage's table goes; the whole stage for an empty path).
fn field_diag(e: &FieldError, common: &StageCommon, stage: &Node, src: &Source) -> Diag {
    let mut at = stage;
    for key in &e.key {
        let next = match &at.kind {
            NodeKind::Table(t) => t.get(key).map(|e| &e.value),
            NodeKind::List(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        match next {
            Some(n) => at = n,
            None => break,
        }
    }
    Diag::new(format!("stage `{}`: {}", common.name, e.message)).at(src, at.span.clone())
}

/// Phase names are unique in a plan, stage names unique in a phase: resume and reports key on them.
fn check_unique_names(top: &Table, src: &Source, diags: &mut Vec<Diag>) {
    let Some(phases) = top.get("phase") else { return };
    let name_of = |n: &Node| {
        n.as_table()
            .and_then(|t| t.get("name"))
            .map(|e| (e.value.as_str().unwrap_or("").to_string(), e.value.span.clone()))
    };
    let mut seen_phases = std::collections::HashSet::new();
    for p in items(&phases.value) {
        if let Some((name, span)) = name_of(p) {
            if !seen_phases.insert(name.clone()) {
                diags.push(
                    Diag::new(format!("phase name `{name}` is used twice"))
                        .at(src, span)
                        .help("phase names must be unique in a plan"),
                );
            }
        }
        let Some(stages) = p.as_table().and_then(|t| t.get("stage")) else { continue };
        let mut seen = std::collections::HashSet::new();
        for s in items(&stages.value) {
            if let Some((name, span)) = name_of(s) {
                if !seen.insert(name.clone()) {
                    diags.push(Diag::new(format!("stage name `{name}` is used twice in this phase")).at(src, span));
                }
            }
        }
    }
}
