//! Diagnostics a person can act on: one error type for everything that can be wrong with a plan
//! or its invocation, rendered as `file:line:col` with a caret snippet (miette's graphical
//! reporter). It owns rendering and span bookkeeping; it does not decide *what* is wrong — the
//! plan loader, the criteria parser and the CLI build `Diag`s and hand them here.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};

/// A byte range in a source file.
pub type Span = Range<usize>;

/// The text of one input file, shared by every diagnostic that points into it.
#[derive(Clone, Debug)]
pub struct Source {
    pub name: Arc<str>,
    pub text: Arc<str>,
}

impl Source {
    pub fn new(name: impl Into<Arc<str>>, text: impl Into<Arc<str>>) -> Self {
        Source { name: name.into(), text: text.into() }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One problem, optionally located in a source file.
#[derive(Clone, Debug)]
pub struct Diag {
    pub message: String,
    pub label: Option<String>,
    pub help: Option<String>,
    pub span: Option<Span>,
    pub source: Option<Source>,
}

impl Diag {
    pub fn new(message: impl Into<String>) -> Self {
        Diag { message: message.into(), label: None, help: None, span: None, source: None }
    }

    pub fn at(mut self, source: &Source, span: Span) -> Self {
        self.source = Some(source.clone());
        self.span = Some(span);
        self
    }

    pub fn with_span(mut self, span: Span) -> Self {
        self.span = Some(span);
        self
    }

    pub fn in_source(mut self, source: &Source) -> Self {
        if self.source.is_none() {
            self.source = Some(source.clone());
        }
        self
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// `file:line:col` of the span's start, when the diagnostic is located.
    pub fn location(&self) -> Option<String> {
        let (src, span) = (self.source.as_ref()?, self.span.as_ref()?);
        let (line, col) = src.line_col(span.start);
        Some(format!("{}:{line}:{col}", src.name))
    }

    /// Render with a caret snippet under a `--> file:line:col` header; `color` for terminals.
    pub fn render(&self, color: bool) -> String {
        let theme = if color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
        let handler = GraphicalReportHandler::new_themed(theme).with_width(100).with_context_lines(1);
        let named = match (&self.source, &self.span) {
            (Some(src), Some(_)) => Some(NamedSource::new(&src.name, src.text.to_string())),
            _ => None,
        };
        let mut out = String::new();
        if handler.render_report(&mut out, &Rendered { diag: self, named }).is_err() {
            out = format!("error: {self}\n");
        }
        out
    }
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location() {
            Some(loc) => write!(f, "{loc}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Diag {}

/// Adapter that lets miette render a `Diag`.
struct Rendered<'a> {
    diag: &'a Diag,
    named: Option<NamedSource<String>>,
}

impl fmt::Debug for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl std::error::Error for Rendered<'_> {}

impl Diagnostic for Rendered<'_> {
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diag.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.named.as_ref().map(|n| n as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.named.as_ref()?;
        let span = self.diag.span.clone()?;
        let len = span.end.saturating_sub(span.start);
        let text = self.diag.label.clone().unwrap_or_else(|| "here".into());
        Some(Box::new(std::iter::once(LabeledSpan::new(Some(text), span.start, len))))
    }
}

/// Several diagnostics at once (a plan can have more than one problem).
#[derive(Clone, Debug, Default)]
pub struct Diags(pub Vec<Diag>);

impl Diags {
    pub fn render(&self, color: bool) -> String {
        let mut out = String::new();
        for d in &self.0 {
            out.push_str(&d.render(color));
        }
        let n = self.0.len();
        if n > 1 {
            out.push_str(&format!("{n} problems found\n"));
        }
        out
    }
}

impl From<Diag> for Diags {
    fn from(d: Diag) -> Self {
        Diags(vec![d])
    }
}

impl fmt::Display for Diags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diags {}

/// The closest candidate to `word`, for "did you mean" hints.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_lines_and_chars() {
        let src = Source::new("x", "ab\ncdé f\n");
        assert_eq!(src.line_col(0), (1, 1));
        assert_eq!(src.line_col(3), (2, 1));
        assert_eq!(src.line_col(8), (2, 5)); // after "cdé " (é is 2 bytes)
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(did_you_mean("duraton", ["duration", "timeout"]), Some("duration"));
        assert_eq!(did_you_mean("zzz", ["duration", "timeout"]), None);
    }
}
