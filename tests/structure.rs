//! The code's shape stays as declared: imports follow the pipeline's layers, `mod.rs` files
//! only document and re-export, every module says what it owns, and the event schema's
//! documentation lists every column the schema declares.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::support::repo;

/// The top-level modules, lowest first. A module may import only the modules it lists, and each
/// of those must come earlier in this list (so the layers cannot form a cycle). The pipeline is
/// plan → run → drivers → events; the run directory and the criteria grammar are shared formats
/// below both the runner and the analysis, which reads only them, the plan and the schema.
const LAYERS: &[(&str, &[&str])] = &[
    ("exit", &[]),
    ("diag", &[]),
    ("clock", &[]),
    ("demo", &[]),
    ("events", &["clock"]),
    ("plan", &["diag"]),
    ("criteria", &["diag", "events", "plan"]),
    ("rundir", &["events", "plan"]),
    ("drivers", &["clock", "demo", "diag", "events", "plan"]),
    ("run", &["clock", "criteria", "diag", "drivers", "events", "exit", "plan", "rundir"]),
    ("analyze", &["criteria", "diag", "events", "plan", "rundir"]),
    ("report", &["analyze", "rundir"]),
    ("dashboard", &["analyze", "report"]),
    (
        "cli",
        &[
            "analyze",
            "clock",
            "criteria",
            "dashboard",
            "demo",
            "diag",
            "drivers",
            "events",
            "exit",
            "plan",
            "report",
            "run",
            "rundir",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a source file belongs to (`None` for the crate root and binaries).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" | "bin" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

/// Every `crate::NAME` a file's code (not its comments) names, with the line it is on.
fn crate_refs(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            // `$crate::` in macros is not this crate's import.
            let prefixed = at > 0 && rest.as_bytes()[at - 1] == b'$';
            if !prefixed {
                // `crate::{a, b::c}` names several modules at once.
                let names: Vec<String> = match after.strip_prefix('{') {
                    Some(group) => group
                        .split(['}', ';'])
                        .next()
                        .unwrap_or("")
                        .split(',')
                        .map(|p| p.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect())
                        .collect(),
                    None => {
                        vec![after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()]
                    }
                };
                out.extend(names.into_iter().filter(|n| !n.is_empty() && n != "self").map(|n| (i + 1, n)));
            }
            rest = after;
        }
    }
    out
}

#[test]
fn layers_are_declared_lowest_first() {
    for (i, (name, deps)) in LAYERS.iter().enumerate() {
        for d in *deps {
            let pos = LAYERS.iter().position(|(n, _)| n == d);
            assert!(pos.is_some_and(|p| p < i), "`{name}` may import `{d}`, which is not declared below it");
        }
    }
}

#[test]
fn imports_follow_the_layers() {
    let src = repo().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let allowed: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for f in &files {
        let Some(module) = module_of(&src, f) else { continue };
        let Some(deps) = allowed.get(module.as_str()) else {
            wrong.push(format!("{}: module `{module}` is not declared in LAYERS", f.display()));
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for (line, name) in crate_refs(&text) {
            checked += 1;
            if name != module && !deps.contains(&name.as_str()) {
                wrong.push(format!("{}:{line}: `{module}` imports `crate::{name}`", f.display()));
            }
        }
    }
    assert!(checked > 50, "found only {checked} crate imports; is the scan broken?");
    assert!(wrong.is_empty(), "imports against the declared layers:\n{}", wrong.join("\n"));
}

#[test]
fn the_scan_sees_an_upward_import() {
    // The check above must be able to fail: a driver reaching into the runner is seen.
    let refs = crate_refs(
        "use crate::run::clock::Clock; // crate::analyze in a comment\nlet x = $crate::y;\nuse crate::{drivers, plan::Plan};",
    );
    assert_eq!(refs, vec![(1, "run".to_string()), (3, "drivers".to_string()), (3, "plan".to_string())]);
}

#[test]
fn mod_files_only_document_and_reexport() {
    let src = repo().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for f in files.iter().filter(|f| f.file_name().is_some_and(|n| n == "mod.rs")) {
        let text = std::fs::read_to_string(f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            let plain = t.is_empty()
                || t.starts_with("//")
                || t.starts_with("pub mod ")
                || t.starts_with("mod ")
                || t.starts_with("pub use ")
                || t.starts_with("pub(crate) use ")
                || t.starts_with("use ")
                || t.starts_with("#[cfg(")
                || t.starts_with("pub type ")
                // A `pub use` list continued over several lines.
                || t.ends_with(',')
                || t.ends_with("};")
                || t.starts_with('}');
            if !plain {
                wrong.push(format!("{}:{}: {t}", f.display(), i + 1));
            }
        }
    }
    assert!(wrong.is_empty(), "mod.rs files holding logic:\n{}", wrong.join("\n"));
}

#[test]
fn every_module_says_what_it_owns() {
    let src = repo().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().trim_start().starts_with("//!"))
        .map(|f| f.display().to_string())
        .collect();
    assert!(missing.is_empty(), "files without a `//!` module doc:\n{}", missing.join("\n"));
}

#[test]
fn events_doc_lists_exactly_the_schema_columns() {
    let doc = std::fs::read_to_string(repo().join("docs/events.md")).unwrap();
    // The column table: from its header row to the first line that is not a table row.
    let rows: Vec<&str> =
        doc.lines().skip_while(|l| !l.starts_with("| column |")).skip(2).take_while(|l| l.starts_with('|')).collect();
    let mut documented: Vec<String> = Vec::new();
    for row in &rows {
        let first = row.split('|').nth(1).unwrap_or("");
        documented.extend(first.split(',').map(|n| n.trim().trim_matches('`').to_string()));
    }
    let declared: Vec<String> = planrun::events::COLUMNS.iter().map(|c| c.name.to_string()).collect();
    let mut a = documented.clone();
    let mut b = declared.clone();
    a.sort();
    b.sort();
    assert!(!declared.is_empty());
    assert_eq!(a, b, "docs/events.md's column table and the declared schema differ");
}
