//! The report formats: their names on the command line, template files and output files.

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
