//! Diagnostics a person can act on: one error type for everything that can be wrong with a plan
//! or its invocation, rendered as `file:line:col` with a caret snippet (miette's graphical
//! reporter). It owns rendering and span bookkeeping; it does not decide *what* is wrong — the
//! plan loader, the criteria parser and the CLI build `Diag`s and hand them here.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError, SourceCode, SpanContents};

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

/// One problem, optionally located in a source file: at a span in it, or (with no span) at
/// the file as a whole.
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

    /// `file:line:col` of the span's start, or just `file` for a problem with the whole file.
    pub fn location(&self) -> Option<String> {
        let src = self.source.as_ref()?;
        let Some(span) = &self.span else { return Some(src.name.to_string()) };
        let (line, col) = src.line_col(span.start);
        Some(format!("{}:{line}:{col}", src.name))
    }

    /// Render with a caret snippet under a `--> file:line:col` header; `color` for terminals.
    pub fn render(&self, color: bool) -> String {
        let theme = if color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
        let handler = GraphicalReportHandler::new_themed(theme).with_width(100).with_context_lines(1);
        let snippet = match (&self.source, &self.span) {
            (Some(src), Some(span)) => Some(Snippet::new(src, span)),
            _ => None,
        };
        let mut out = String::new();
        if handler.render_report(&mut out, &Rendered { diag: self, snippet }).is_err() {
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
    snippet: Option<Snippet>,
}

impl fmt::Debug for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.diag.source, &self.diag.span) {
            // No snippet to carry the file name: the message does.
            (Some(src), None) => write!(f, "{}: {}", src.name, self.diag.message),
            _ => f.write_str(&self.diag.message),
        }
    }
}

impl std::error::Error for Rendered<'_> {}

impl Diagnostic for Rendered<'_> {
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diag.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.snippet.as_ref().map(|n| n as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.snippet.as_ref()?.span.clone();
        let len = span.end.saturating_sub(span.start);
        let text = self.diag.label.clone().unwrap_or_else(|| "here".into());
        Some(Box::new(std::iter::once(LabeledSpan::new(Some(text), span.start, len))))
    }
}

/// Source lines longer than this many characters are shown as a window of this width.
const SHOWN_COLUMNS: usize = 160;

/// A span longer than this many lines is shown by its first line only.
const SHOWN_SPAN_LINES: usize = 12;

/// What a diagnostic shows of its file: the lines around the span, each at most
/// `SHOWN_COLUMNS` characters wide (a longer line is cut to a window around the span, marked
/// with `…`), reporting the original line numbers and column. miette is never handed the whole
/// file: its renderer cannot draw past column 65,535, and a snippet is all it needs.
struct Snippet {
    name: String,
    /// The lines shown, with the span's line among them.
    text: String,
    /// 0-based number of `text`'s first line in the file.
    first_line: usize,
    /// The label, as a byte range of `text`.
    span: Span,
    /// 0-based line and column (in characters) of the span's start in the file.
    line: usize,
    col: usize,
}

impl Snippet {
    fn new(src: &Source, span: &Span) -> Snippet {
        let text = &*src.text;
        let start = floor_char_boundary(text, span.start.min(text.len()));
        let end = floor_char_boundary(text, span.end.clamp(start, text.len()));
        let (line, col) = src.line_col(start);
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        // One line of context either side, as the renderer is configured.
        let first = text[..line_start.saturating_sub(1)].rfind('\n').map_or(0, |i| i + 1).min(line_start);
        let last_line_end = |from: usize| {
            let after = text[from..].find('\n').map_or(text.len(), |i| from + i);
            if after < text.len() { text[after + 1..].find('\n').map_or(text.len(), |i| after + 1 + i) } else { after }
        };
        let end_with_context = last_line_end(end.max(line_end));
        let fits = |from: usize, to: usize| text[from..to].split('\n').all(|l| l.chars().count() <= SHOWN_COLUMNS);
        let span_lines = text[start..end].matches('\n').count();
        let name = src.name.to_string();
        if span_lines <= SHOWN_SPAN_LINES && fits(first, end_with_context) {
            return Snippet {
                name,
                text: lone_cr_to_space(text[first..end_with_context].to_string()),
                first_line: line - 1 - text[first..line_start].matches('\n').count(),
                span: start - first..end - first,
                line: line - 1,
                col: col - 1,
            };
        }
        // Window the span's line around the span's start (and any other long line shown to the
        // same columns).
        let line_chars = text[line_start..line_end].chars().count();
        let from_col = (col - 1).saturating_sub(SHOWN_COLUMNS / 4).min(line_chars.saturating_sub(SHOWN_COLUMNS));
        let mut out = String::new();
        let mut new_span = 0..0;
        let mut at = first;
        for (i, l) in text[first..last_line_end(line_end)].split('\n').enumerate() {
            if i > 0 {
                out.push('\n');
            }
            // The span's line from the window's start; a short line around it whole.
            let from = if at == line_start || l.chars().count() > SHOWN_COLUMNS { from_col } else { 0 };
            let shown = Cut::new(l, from, SHOWN_COLUMNS);
            if at == line_start {
                let base = out.len() + shown.marker;
                let s = (start - line_start).clamp(shown.from, shown.to);
                let e = (end.min(line_end) - line_start).clamp(s, shown.to);
                new_span = base + s - shown.from..base + e - shown.from;
            }
            out.push_str(&shown.text);
            at += l.len() + 1;
        }
        Snippet {
            name,
            text: lone_cr_to_space(out),
            first_line: line - 1 - text[first..line_start].matches('\n').count(),
            span: new_span,
            line: line - 1,
            col: col - 1,
        }
    }
}

/// A line cut to a window of characters, `…` marking a cut at either end.
struct Cut {
    text: String,
    /// The byte range of the line that was kept.
    from: usize,
    to: usize,
    /// Byte length of the leading `…` (0 when the line is shown from its start).
    marker: usize,
}

impl Cut {
    fn new(line: &str, from_char: usize, width: usize) -> Cut {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let byte = |c: usize| line.char_indices().nth(c).map_or(line.len(), |(b, _)| b);
        let (from, to) = (byte(from_char), byte(from_char + width));
        let marker = if from > 0 { '…'.len_utf8() } else { 0 };
        let mut text = String::with_capacity(to - from + 2 * marker);
        if from > 0 {
            text.push('…');
        }
        text.push_str(&line[from..to]);
        if to < line.len() {
            text.push('…');
        }
        Cut { text, from, to, marker }
    }
}

/// miette also breaks lines at a lone `\r`; the file's line numbers do not. Byte for byte, so
/// offsets hold.
fn lone_cr_to_space(s: String) -> String {
    if !s.contains('\r') {
        return s;
    }
    let mut b = s.into_bytes();
    for i in 0..b.len() {
        if b[i] == b'\r' && b.get(i + 1) != Some(&b'\n') {
            b[i] = b' ';
        }
    }
    String::from_utf8(b).unwrap_or_default()
}

impl SourceCode for Snippet {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let inner = self.text.read_span(span, before, after)?;
        // The header's `file:line:col` comes from the read of the label alone; give it the
        // file's own line and column (in characters, as `Diag::location` counts).
        let (line, column) = if before == 0 && after == 0 && span.offset() == self.span.start {
            (self.line, self.col)
        } else {
            (inner.line() + self.first_line, inner.column())
        };
        Ok(Box::new(Shown {
            name: &self.name,
            data: inner.data(),
            span: *inner.span(),
            line,
            column,
            lines: inner.line_count(),
        }))
    }
}

struct Shown<'a> {
    name: &'a str,
    data: &'a [u8],
    span: miette::SourceSpan,
    line: usize,
    column: usize,
    lines: usize,
}

impl<'a> SpanContents<'a> for Shown<'a> {
    fn data(&self) -> &'a [u8] {
        self.data
    }
    fn span(&self) -> &miette::SourceSpan {
        &self.span
    }
    fn name(&self) -> Option<&str> {
        Some(self.name)
    }
    fn line(&self) -> usize {
        self.line
    }
    fn column(&self) -> usize {
        self.column
    }
    fn line_count(&self) -> usize {
        self.lines
    }
}

/// Several diagnostics at once (a plan can have more than one problem).
#[derive(Clone, Debug, Default)]
pub struct Diags(pub Vec<Diag>);

/// At most this many diagnostics are shown; a broken file can yield thousands, and the first
/// ones are the ones to fix.
pub const SHOWN_DIAGS: usize = 50;

impl Diags {
    pub fn render(&self, color: bool) -> String {
        let mut out = String::new();
        for d in self.0.iter().take(SHOWN_DIAGS) {
            out.push_str(&d.render(color));
        }
        let n = self.0.len();
        if n > SHOWN_DIAGS {
            out.push_str(&format!("… and {} more\n", n - SHOWN_DIAGS));
        }
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
        for (i, d) in self.0.iter().take(SHOWN_DIAGS).enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        if self.0.len() > SHOWN_DIAGS {
            write!(f, "\n… and {} more", self.0.len() - SHOWN_DIAGS)?;
        }
        Ok(())
    }
}

impl std::error::Error for Diags {}

/// The closest candidate to `word`, for "did you mean" hints.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    // No name in a plan is this long, and comparing a huge word to every candidate costs time.
    if word.len() > 100 {
        return None;
    }
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
        assert_eq!(did_you_mean(&"duration".repeat(100), ["duration"]), None);
    }

    #[test]
    fn a_long_line_renders_as_a_window_with_the_true_location() {
        let line = format!("{}é{}", "a".repeat(70_000), "b".repeat(10));
        let src = Source::new("x", format!("first\n{line}\nlast\n"));
        let at = 6 + 70_000; // the é
        let out = Diag::new("m").at(&src, at..at + 2).render(false);
        assert!(out.contains("[x:2:70001]"), "{out}");
        assert!(out.contains("│ …aaaa") && out.contains("aébbbbbbbbbb\n"), "{out}");
        assert!(out.contains("│ first\n") && out.contains("│ last\n"), "{out}");
        assert!(out.lines().all(|l| l.chars().count() < SHOWN_COLUMNS + 20), "{out}");
    }

    #[test]
    fn the_header_counts_characters_and_crlf_lines() {
        let src = Source::new("x", "a = 1\r\nbé = \"z\"\r\nc = 2\r\n");
        let at = src.text.find('"').unwrap();
        let d = Diag::new("m").at(&src, at..at + 3);
        assert_eq!(d.location().as_deref(), Some("x:2:6"));
        let out = d.render(false);
        assert!(out.contains("[x:2:6]") && out.contains(" 2 │ bé = \"z\""), "{out}");
    }

    #[test]
    fn a_problem_with_the_whole_file_names_it() {
        let d = Diag::new("m").in_source(&Source::new("x.toml", "a = 1"));
        assert_eq!(d.location().as_deref(), Some("x.toml"));
        assert!(d.render(false).contains("x.toml: m"));
    }

    #[test]
    fn a_span_over_many_lines_shows_its_first() {
        let text: String = (1..=30).map(|i| format!("line{i}\n")).collect();
        let src = Source::new("x", text.as_str());
        let out = Diag::new("m").at(&src, 6..text.len()).render(false);
        assert!(out.contains("[x:2:1]") && out.contains("line2") && !out.contains("line30"), "{out}");
    }

    #[test]
    fn at_most_fifty_problems_are_shown() {
        let src = Source::new("x", "a\n");
        let many = Diags((0..60).map(|i| Diag::new(format!("p{i}")).at(&src, 0..1)).collect());
        let out = many.render(false);
        assert!(out.contains("p49") && !out.contains("p50") && out.contains("… and 10 more"), "{out}");
        assert!(out.ends_with("60 problems found\n"), "{out}");
    }
}
