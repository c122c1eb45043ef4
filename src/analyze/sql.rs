//! User-extensible tables: each `analysis/*.sql` file is a polars SQL query over the tables
//! `events` and `stages`, and becomes a named table in the reports. The shipped queries are
//! compiled into the binary; users add theirs with `--analysis DIR` or the plan's
//! `analysis.queries`. A bad query is reported with its file and polars' message, and the rest
//! of the report still renders.

use std::path::{Path, PathBuf};

use polars::prelude::*;
use polars::sql::SQLContext;
use serde::Serialize;

use super::error::AnalyzeError;
use super::frame::{Row, rows};
use crate::rundir::Manifest;

/// Shipped queries: (name, SQL).
pub const SHIPPED: &[(&str, &str)] = &[
    ("stage_summary", include_str!("../../analysis/stage_summary.sql")),
    ("slowest_agents", include_str!("../../analysis/slowest_agents.sql")),
    ("error_kinds", include_str!("../../analysis/error_kinds.sql")),
];

const MAX_ROWS: usize = 50;

/// One SQL query: the table's name, where the query came from, and its text.
#[derive(Clone, Debug)]
pub struct Query {
    pub name: String,
    /// The file, or `analysis/NAME.sql (built in)`.
    pub source: String,
    pub sql: String,
}

#[derive(Debug, Serialize)]
pub struct Table {
    pub name: String,
    pub source: String,
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
    pub truncated: bool,
    pub error: Option<String>,
}

/// The SQL queries of a run: the shipped ones, then those in `dirs` (`--analysis`) and the plan's
/// `files` (a later query of the same name replaces an earlier one).
pub fn queries(dirs: &[PathBuf], files: &[String]) -> Result<Vec<Query>, AnalyzeError> {
    let mut queries: Vec<Query> = SHIPPED
        .iter()
        .map(|(n, s)| Query { name: n.to_string(), source: format!("analysis/{n}.sql (built in)"), sql: s.to_string() })
        .collect();
    let mut extra_files = Vec::new();
    for d in dirs {
        extra_files.extend(from_dir(d)?);
    }
    for q in files {
        let p = PathBuf::from(q);
        let name = p.file_stem().and_then(|s| s.to_str()).unwrap_or("query").to_string();
        extra_files.push((name, p));
    }
    for (name, path) in extra_files {
        let source = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(sql) => {
                queries.retain(|q| q.name != name);
                queries.push(Query { name, source, sql });
            }
            Err(e) => queries.push(Query { name, source, sql: format!("-- unreadable: {e}") }),
        }
    }
    Ok(queries)
}

/// Query files from a directory, sorted by name.
pub fn from_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>, AnalyzeError> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|source| AnalyzeError::AnalysisDir { path: dir.to_path_buf(), source })?;
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) == Some("sql") {
            let name = p.file_stem().and_then(|s| s.to_str()).unwrap_or("query").to_string();
            out.push((name, p));
        }
    }
    out.sort();
    Ok(out)
}

/// The event columns that SQL queries may read: every column whose name appears in a query as a
/// word, or all of them when a query selects `*` (other than in `COUNT(*)`).
pub fn columns(queries: &[Query], schema: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for Query { sql, .. } in queries {
        let star = sql.split_whitespace().collect::<String>().replace("(*)", "").contains('*');
        let words: Vec<&str> = sql.split(|c: char| !(c.is_alphanumeric() || c == '_')).collect();
        for c in schema {
            if (star || words.iter().any(|w| w.eq_ignore_ascii_case(c))) && !out.contains(c) {
                out.push(c.clone());
            }
        }
    }
    out
}

/// The `stages` table queries see: one row per stage the manifest records.
pub fn stages_table(m: &Manifest) -> PolarsResult<DataFrame> {
    df!(
        "phase" => m.stages.iter().map(|s| s.phase.as_str()).collect::<Vec<_>>(),
        "stage" => m.stages.iter().map(|s| s.stage.as_str()).collect::<Vec<_>>(),
        "driver" => m.stages.iter().map(|s| s.driver.as_str()).collect::<Vec<_>>(),
        "status" => m.stages.iter().map(|s| s.status.as_str()).collect::<Vec<_>>(),
        "t_start_ms" => m.stages.iter().map(|s| s.t_start_ms).collect::<Vec<_>>(),
        "t_end_ms" => m.stages.iter().map(|s| s.t_end_ms).collect::<Vec<_>>(),
        "events" => m.stages.iter().map(|s| s.events).collect::<Vec<_>>(),
    )
}

pub fn run_all(events: &LazyFrame, stages: &DataFrame, queries: &[Query]) -> Vec<Table> {
    let mut ctx = SQLContext::new();
    ctx.register("events", events.clone());
    ctx.register("stages", stages.clone().lazy());
    queries
        .iter()
        .map(|Query { name, source, sql }| {
            match ctx.execute(sql).and_then(|lf| super::frame::stream(lf.limit(MAX_ROWS as u32 + 1))) {
                Ok(df) => {
                    let truncated = df.height() > MAX_ROWS;
                    let df = df.head(Some(MAX_ROWS));
                    Table {
                        name: name.clone(),
                        source: source.clone(),
                        columns: df.get_column_names().iter().map(|c| c.to_string()).collect(),
                        rows: rows(&df),
                        truncated,
                        error: None,
                    }
                }
                Err(e) => Table {
                    name: name.clone(),
                    source: source.clone(),
                    columns: vec![],
                    rows: vec![],
                    truncated: false,
                    error: Some(e.to_string()),
                },
            }
        })
        .collect()
}
