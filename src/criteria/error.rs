//! The one error the criteria language reports: what is wrong, where inside the criterion string
//! (byte offsets, so `validate` can place the caret at file:line:col), and what to write instead.
//! Lexer and parser both produce it; rendering it as a diagnostic is `validate`'s job.

use std::ops::Range;

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    pub message: String,
    /// Byte range inside the criterion string.
    pub at: Range<usize>,
    pub help: Option<String>,
}

impl ParseError {
    pub fn new(message: impl Into<String>, at: Range<usize>) -> ParseError {
        ParseError { message: message.into(), at, help: None }
    }

    pub fn help(mut self, help: impl Into<String>) -> ParseError {
        self.help = Some(help.into());
        self
    }
}
