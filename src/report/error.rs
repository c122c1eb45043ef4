//! What can go wrong turning report data into files: a template that cannot be read, does not
//! parse or fails to render, a JSON template that yields invalid JSON, and an output file that
//! cannot be written. Each message names the template or the path.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("template syntax settings: {0}")]
    Syntax(minijinja::Error),
    #[error("cannot read template {}: {source}", path.display())]
    ReadTemplate { path: PathBuf, source: std::io::Error },
    /// `origin` is the override's path, or `templates/NAME (built in)`.
    #[error("template {origin}: {source}")]
    Template { origin: String, source: minijinja::Error },
    #[error("rendering {template}: {source:#}")]
    Render { template: &'static str, source: minijinja::Error },
    #[error("{template} produced invalid JSON: {source}")]
    InvalidJson { template: &'static str, source: serde_json::Error },
    #[error("cannot create {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}
