//! The report formats: their names on the command line, template files and output files.

/// A report format; its command-line name is the lowercase variant (`--format md,json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Md,
    Json,
    Junit,
    Html,
}

impl Format {
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
