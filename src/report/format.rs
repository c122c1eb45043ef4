//! The report formats: their names on the command line, template files and output files.

/// A report format; its command-line name is the lowercase variant (`--format md,json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Md,
    Json,
    Junit,
    Html,
    /// Locust's `stats.csv`, `stats_history.csv` and `failures.csv`, for the `http` rows.
    LocustCsv,
}

impl Format {
    /// (template, output file) pairs this format writes.
    pub fn files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Format::Md => &[("report.md.j2", "report.md")],
            Format::Json => &[("report.json.j2", "report.json")],
            Format::Junit => &[("junit.xml.j2", "junit.xml")],
            Format::Html => &[("report.html.j2", "report.html")],
            Format::LocustCsv => &[
                ("locust_stats.csv.j2", "stats.csv"),
                ("locust_stats_history.csv.j2", "stats_history.csv"),
                ("locust_failures.csv.j2", "failures.csv"),
            ],
        }
    }
}

pub const DEFAULT_FORMATS: &[Format] = &[Format::Md, Format::Json, Format::Junit];
