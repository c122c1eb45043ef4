//! Reports from minijinja templates in `templates/` (compiled into the binary; `--templates DIR`
//! overrides any of them by file name). It owns the template environment, the formatting
//! filters templates use (`num`, `pct`, `ms`, `md`, …), the JSON check on `report.json`, and
//! writing the files. What goes into the data is `crate::analyze`'s business.

use std::path::{Path, PathBuf};

use minijinja::{Environment, Value};

use crate::analyze::report_data::Report;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Md,
    Json,
    Junit,
    Html,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s.trim() {
            "md" | "markdown" => Format::Md,
            "json" => Format::Json,
            "junit" | "xml" => Format::Junit,
            "html" => Format::Html,
            _ => return None,
        })
    }

    pub fn template(self) -> &'static str {
        match self {
            Format::Md => "report.md.j2",
            Format::Json => "report.json.j2",
            Format::Junit => "junit.xml.j2",
            Format::Html => "report.html.j2",
        }
    }

    pub fn output(self) -> &'static str {
        match self {
            Format::Md => "report.md",
            Format::Json => "report.json",
            Format::Junit => "junit.xml",
            Format::Html => "report.html",
        }
    }
}

pub const DEFAULT_FORMATS: &[Format] = &[Format::Md, Format::Json, Format::Junit];

const BUILT_IN: &[(&str, &str)] = &[
    ("report.md.j2", include_str!("../../templates/report.md.j2")),
    ("report.json.j2", include_str!("../../templates/report.json.j2")),
    ("junit.xml.j2", include_str!("../../templates/junit.xml.j2")),
    ("report.html.j2", include_str!("../../templates/report.html.j2")),
];

fn as_f64(v: &Value) -> Option<f64> {
    if v.is_none() || v.is_undefined() {
        return None;
    }
    f64::try_from(v.clone()).ok().filter(|f| f.is_finite())
}

/// `x | num(2)`: fixed decimals; `—` for missing.
fn num(v: Value, digits: Option<usize>) -> String {
    match as_f64(&v) {
        Some(f) => {
            let d = digits.unwrap_or(2);
            if f.fract() == 0.0 && f.abs() < 1e15 && digits.is_none() { format!("{f:.0}") } else { format!("{f:.d$}") }
        }
        None => "—".into(),
    }
}

/// `0.953 | pct` → `95.3%`.
fn pct(v: Value) -> String {
    as_f64(&v).map_or("—".into(), |f| format!("{:.1}%", f * 100.0))
}

/// `0.12 | signed_pct` → `+12.0%`.
fn signed_pct(v: Value) -> String {
    as_f64(&v).map_or("—".into(), |f| format!("{:+.1}%", f * 100.0))
}

/// Milliseconds for people: `850 ms`, `12.4 s`, `3.2 min`, `2.5 h`, `1.3 d`.
fn ms(v: Value) -> String {
    let Some(f) = as_f64(&v) else { return "—".into() };
    match f {
        f if f < 1000.0 => format!("{f:.1} ms"),
        f if f < 60_000.0 => format!("{:.2} s", f / 1000.0),
        f if f < 3_600_000.0 => format!("{:.1} min", f / 60_000.0),
        f if f < 86_400_000.0 => format!("{:.2} h", f / 3_600_000.0),
        f => format!("{:.2} d", f / 86_400_000.0),
    }
}

/// Text safe inside a Markdown table cell; `md(120)` also shortens it to 120 characters.
fn md(v: Value, max: Option<usize>) -> String {
    let s = if v.is_none() || v.is_undefined() { String::new() } else { v.to_string() };
    let mut s = s.replace('|', "\\|").replace('\n', " ");
    if let Some(n) = max
        && s.chars().count() > n
    {
        s = s.chars().take(n.saturating_sub(1)).collect::<String>() + "…";
    }
    s
}

/// A SQL result cell: numbers compact, text table-safe.
fn cell(v: Value) -> String {
    if v.is_none() || v.is_undefined() {
        return String::new();
    }
    if let Some(f) = as_f64(&v) {
        if f.fract() == 0.0 && f.abs() < 1e15 {
            return format!("{f:.0}");
        }
        return format!("{f:.3}");
    }
    md(v, None)
}

pub struct Renderer {
    env: Environment<'static>,
}

impl Renderer {
    /// Built-in templates, with any file of the same name in `overrides` taking their place.
    pub fn new(overrides: Option<&Path>) -> Result<Renderer, String> {
        let mut env = Environment::new();
        // Templates trim whitespace explicitly with `{%-`; only keep their final newline.
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .map_err(|e| e.to_string())?;
        env.set_syntax(syntax);
        for (name, text) in BUILT_IN {
            let custom = overrides.map(|d| d.join(name)).filter(|p| p.exists());
            let source = match &custom {
                Some(p) => {
                    std::fs::read_to_string(p).map_err(|e| format!("cannot read template {}: {e}", p.display()))?
                }
                None => text.to_string(),
            };
            env.add_template_owned(name.to_string(), source).map_err(|e| {
                let origin =
                    custom.as_ref().map_or_else(|| format!("templates/{name} (built in)"), |p| p.display().to_string());
                format!("template {origin}: {e}")
            })?;
        }
        env.add_filter("num", num);
        env.add_filter("pct", pct);
        env.add_filter("signed_pct", signed_pct);
        env.add_filter("ms", ms);
        env.add_filter("md", md);
        env.add_filter("cell", cell);
        Ok(Renderer { env })
    }

    pub fn render(&self, format: Format, report: &Report) -> Result<String, String> {
        let data = Value::from(minijinja::value::Serde(report));
        let tmpl = self.env.get_template(format.template()).map_err(|e| e.to_string())?;
        // The JSON template also gets the whole tree as `report`.
        let ctx = minijinja::context! { report => data.clone(), ..data };
        let out = tmpl.render(ctx).map_err(|e| format!("rendering {}: {e:#}", format.template()))?;
        if format == Format::Json {
            serde_json::from_str::<serde_json::Value>(&out)
                .map_err(|e| format!("{} produced invalid JSON: {e}", format.template()))?;
        }
        Ok(out)
    }

    /// Render each format into `dir`; returns the files written.
    pub fn write_all(&self, report: &Report, formats: &[Format], dir: &Path) -> Result<Vec<PathBuf>, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut written = Vec::new();
        for f in formats {
            let text = self.render(*f, report)?;
            let path = dir.join(f.output());
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text)
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            written.push(path);
        }
        Ok(written)
    }
}
