//! The template environment: the built-in templates (compiled into the binary) with any
//! `--templates DIR` file of the same name in their place, the filters registered, rendering one
//! format (with the JSON check on `report.json`) and writing the files atomically.

use std::path::{Path, PathBuf};

use minijinja::{Environment, Value};

use super::error::ReportError;
use super::filters::{cell, csv, md, ms, num, pct, signed_pct};
use super::format::Format;
use crate::analyze::history::History;
use crate::analyze::report_data::Report;

const BUILT_IN: &[(&str, &str)] = &[
    ("report.md.j2", include_str!("../../templates/report.md.j2")),
    ("report.json.j2", include_str!("../../templates/report.json.j2")),
    ("junit.xml.j2", include_str!("../../templates/junit.xml.j2")),
    ("report.html.j2", include_str!("../../templates/report.html.j2")),
    ("locust_stats.csv.j2", include_str!("../../templates/locust_stats.csv.j2")),
    ("locust_stats_history.csv.j2", include_str!("../../templates/locust_stats_history.csv.j2")),
    ("locust_failures.csv.j2", include_str!("../../templates/locust_failures.csv.j2")),
    ("history.md.j2", include_str!("../../templates/history.md.j2")),
    ("history.json.j2", include_str!("../../templates/history.json.j2")),
    ("history.html.j2", include_str!("../../templates/history.html.j2")),
];

/// What report.html inlines, so it opens with no network: the vendored uPlot (vendor/uplot,
/// MIT) and planrun's chart script, shared with the live dashboard.
const UPLOT_JS: &str = include_str!("../../vendor/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../vendor/uplot/uPlot.min.css");
const CHARTS_JS: &str = include_str!("../../templates/charts.js");

pub struct Renderer {
    env: Environment<'static>,
}

impl Renderer {
    /// Built-in templates, with any file of the same name in `overrides` taking their place.
    pub fn new(overrides: Option<&Path>) -> Result<Renderer, ReportError> {
        let mut env = Environment::new();
        // Templates trim whitespace explicitly with `{%-`; only keep their final newline.
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .map_err(ReportError::Syntax)?;
        env.set_syntax(syntax);
        for (name, text) in BUILT_IN {
            let custom = overrides.map(|d| d.join(name)).filter(|p| p.exists());
            let source = match &custom {
                Some(p) => std::fs::read_to_string(p)
                    .map_err(|source| ReportError::ReadTemplate { path: p.clone(), source })?,
                None => text.to_string(),
            };
            env.add_template_owned(name.to_string(), source).map_err(|source| {
                let origin =
                    custom.as_ref().map_or_else(|| format!("templates/{name} (built in)"), |p| p.display().to_string());
                ReportError::Template { origin, source }
            })?;
        }
        env.add_filter("num", num);
        env.add_filter("pct", pct);
        env.add_filter("signed_pct", signed_pct);
        env.add_filter("ms", ms);
        env.add_filter("md", md);
        env.add_filter("cell", cell);
        env.add_filter("csv", csv);
        env.add_global(
            "assets",
            minijinja::context! {
                uplot_js => Value::from_safe_string(UPLOT_JS.to_string()),
                uplot_css => Value::from_safe_string(UPLOT_CSS.to_string()),
                charts_js => Value::from_safe_string(CHARTS_JS.to_string()),
            },
        );
        Ok(Renderer { env })
    }

    pub fn render(&self, template: &'static str, report: &Report) -> Result<String, ReportError> {
        self.render_page(template, report, None)
    }

    /// report.html as the live dashboard serves it: the same page in live mode, with the data
    /// its script draws given (`page_data`, the JSON the dashboard also pushes).
    pub fn render_live(&self, report: &Report, page_data: &str) -> Result<String, ReportError> {
        self.render_page("report.html.j2", report, Some(page_data))
    }

    fn render_page(&self, template: &'static str, report: &Report, live: Option<&str>) -> Result<String, ReportError> {
        let data = Value::from(minijinja::value::Serde(report));
        let tmpl = self.env.get_template(template).map_err(|source| ReportError::Render { template, source })?;
        // The JSON template also gets the whole tree as `report`; a live page its data as pushed
        // (parsed back, so the template writes it with the same escaping as a report's).
        let page_data = live
            .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .unwrap_or_else(|| report.page_data(None));
        let page_data = Value::from(minijinja::value::Serde(page_data));
        let ctx =
            minijinja::context! { report => data.clone(), live => live.is_some(), page_data => page_data, ..data };
        let out = tmpl.render(ctx).map_err(|source| ReportError::Render { template, source })?;
        if template == "report.json.j2" {
            serde_json::from_str::<serde_json::Value>(&out)
                .map_err(|source| ReportError::InvalidJson { template, source })?;
        }
        Ok(out)
    }

    /// A history (`planrun history`) as `history.md`, `history.json` and `history.html`, those of
    /// `formats` it asks for (md, json, html), into `dir`; returns the files written.
    pub fn write_history(&self, h: &History, formats: &[Format], dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
        std::fs::create_dir_all(dir).map_err(|source| ReportError::CreateDir { path: dir.to_path_buf(), source })?;
        let mut written = Vec::new();
        for f in formats {
            let (template, output) = match f {
                Format::Md => ("history.md.j2", "history.md"),
                Format::Json => ("history.json.j2", "history.json"),
                Format::Html => ("history.html.j2", "history.html"),
                _ => continue,
            };
            let data = Value::from(minijinja::value::Serde(h));
            let tmpl = self.env.get_template(template).map_err(|source| ReportError::Render { template, source })?;
            let out = tmpl
                .render(minijinja::context! { history => data.clone(), ..data })
                .map_err(|source| ReportError::Render { template, source })?;
            if *f == Format::Json {
                serde_json::from_str::<serde_json::Value>(&out)
                    .map_err(|source| ReportError::InvalidJson { template, source })?;
            }
            let path = dir.join(output);
            write_atomically(&path, &out).map_err(|source| ReportError::Write { path: path.clone(), source })?;
            written.push(path);
        }
        Ok(written)
    }

    /// Render each format into `dir`; returns the files written.
    pub fn write_all(&self, report: &Report, formats: &[Format], dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
        std::fs::create_dir_all(dir).map_err(|source| ReportError::CreateDir { path: dir.to_path_buf(), source })?;
        let mut written = Vec::new();
        for f in formats {
            for (template, output) in f.files() {
                let text = self.render(template, report)?;
                let path = dir.join(output);
                write_atomically(&path, &text).map_err(|source| ReportError::Write { path: path.clone(), source })?;
                written.push(path);
            }
        }
        Ok(written)
    }
}

/// Write `text` to `path` through a temporary file beside it, renamed into place: a reader
/// never sees half a report, and a failed write (a full disk) leaves no temporary file behind.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let result = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::write_atomically;

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("report.md");
        write_atomically(&ok, "# ok\n").unwrap();
        assert_eq!(std::fs::read_to_string(&ok).unwrap(), "# ok\n");
        // A directory where the report should go: the rename fails after the temp file was written.
        let blocked = dir.path().join("report.json");
        std::fs::create_dir(&blocked).unwrap();
        assert!(write_atomically(&blocked, "{}").is_err());
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    }
}
