//! A cheap pass over KDL text before the `kdl` parser sees it. That parser recurses once per
//! nested block and once per token inside a `/* … */` comment, so a deeply nested or comment-
//! heavy file would overflow the stack — an abort, not an error. This pass walks the text once,
//! knowing just enough KDL v2 (strings, raw strings, comments) to tell real braces from quoted
//! ones, and
//! - refuses a block nested deeper than [`MAX_DEPTH`], pointing at its `{`;
//! - refuses an unterminated `/*`, pointing at it;
//! - blanks every block comment to spaces of the same byte length. A comment is whitespace in
//!   KDL, so the document means the same, and every byte offset — so every diagnostic's
//!   line:col — is unchanged, while the parser never recurses through a comment.
//!
//! It owns nothing else: syntax errors are still the parser's to report.

use std::borrow::Cow;
use std::ops::Range;

use super::limits::MAX_DEPTH;
use crate::diag::{Diag, Source};

/// The text to hand to the KDL parser (block comments blanked), or the first nesting problem.
pub fn prepare(src: &Source) -> Result<Cow<'_, str>, Diag> {
    let b = src.text.as_bytes();
    let mut comments: Vec<Range<usize>> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        i = match b[i] {
            b'"' => skip_quoted(b, i),
            b'#' => skip_raw(b, i),
            b'/' if b.get(i + 1) == Some(&b'/') => skip_line(b, i),
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = skip_block_comment(b, i).ok_or_else(|| {
                    Diag::new("unterminated block comment")
                        .at(src, i..i + 2)
                        .label("this `/*` has no `*/`")
                        .help("close it with `*/` (block comments nest: each `/*` inside needs its own `*/`)")
                })?;
                comments.push(i..end);
                end
            }
            b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(too_deep(src, i..i + 1));
                }
                i + 1
            }
            b'}' => {
                depth = depth.saturating_sub(1);
                i + 1
            }
            _ => i + 1,
        };
    }
    if comments.is_empty() {
        return Ok(Cow::Borrowed(&src.text));
    }
    let mut out = src.text.as_bytes().to_vec();
    for c in comments {
        out[c].fill(b' ');
    }
    // Whole characters were replaced by ASCII spaces, so the text is still UTF-8.
    Ok(Cow::Owned(String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())))
}

/// The error for a table, list or block nested past the limit (both syntaxes use it).
pub fn too_deep(src: &Source, span: Range<usize>) -> Diag {
    Diag::new(format!("nested more than {MAX_DEPTH} levels deep"))
        .at(src, span)
        .label("too deep")
        .help("plans nest a few levels; flatten this (or is a closing bracket missing?)")
}

/// KDL's newlines: CR, LF, VT, FF, NEL, LS, PS (CRLF is a CR then an LF).
fn newline_len(b: &[u8], i: usize) -> Option<usize> {
    match b[i] {
        b'\r' | b'\n' | 0x0B | 0x0C => Some(1),
        0xC2 if b.get(i + 1) == Some(&0x85) => Some(2),
        0xE2 if b.get(i + 1) == Some(&0x80) && matches!(b.get(i + 2), Some(0xA8 | 0xA9)) => Some(3),
        _ => None,
    }
}

fn is_space_or_newline(b: &[u8], i: usize) -> bool {
    // ASCII blanks are enough here: a wider Unicode space after `\` only means the scan sees
    // the escape end one character early, which cannot hide a brace.
    matches!(b[i], b' ' | b'\t') || newline_len(b, i).is_some()
}

/// Past a `//` comment: to the next newline (kept) or the end.
fn skip_line(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && newline_len(b, i).is_none() {
        i += 1;
    }
    i
}

/// Past a `/* … */` comment starting at `i`, nested comments included; `None` if unterminated.
/// The same leftmost rule as the parser: at each position `*/` closes, `/*` opens.
fn skip_block_comment(b: &[u8], mut i: usize) -> Option<usize> {
    let mut open = 0usize;
    while i < b.len() {
        if b[i..].starts_with(b"/*") {
            open += 1;
            i += 2;
        } else if b[i..].starts_with(b"*/") {
            open -= 1;
            i += 2;
            if open == 0 {
                return Some(i);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// Past a `"…"` or `"""…"""` string starting at `i`. A single-line string also ends at a
/// newline (where the parser reports it unterminated).
fn skip_quoted(b: &[u8], i: usize) -> usize {
    let multi = b[i..].starts_with(b"\"\"\"");
    let mut j = if multi { i + 3 } else { i + 1 };
    while j < b.len() {
        match b[j] {
            b'\\' => {
                j += 1;
                if j < b.len() && is_space_or_newline(b, j) {
                    // A whitespace escape: `\` then any run of spaces and newlines.
                    while j < b.len() && is_space_or_newline(b, j) {
                        j += newline_len(b, j).unwrap_or(1);
                    }
                } else {
                    j += 1;
                }
            }
            b'"' if !multi => return j + 1,
            b'"' if b[j..].starts_with(b"\"\"\"") => return j + 3,
            _ if !multi && newline_len(b, j).is_some() => return j,
            _ => j += 1,
        }
    }
    b.len()
}

/// Past a raw string `#"…"#` / `##"""…"""##` starting at `i`, or past a lone `#` (a keyword
/// such as `#true` follows).
fn skip_raw(b: &[u8], i: usize) -> usize {
    let hashes = b[i..].iter().take_while(|&&c| c == b'#').count();
    let open = i + hashes;
    if b.get(open) != Some(&b'"') {
        return open;
    }
    let multi = b[open..].starts_with(b"\"\"\"");
    let mut close = if multi { b"\"\"\"".to_vec() } else { b"\"".to_vec() };
    close.extend(std::iter::repeat_n(b'#', hashes));
    let mut j = if multi { open + 3 } else { open + 1 };
    while j < b.len() {
        if b[j..].starts_with(&close) {
            return j + close.len();
        }
        if !multi && newline_len(b, j).is_some() {
            return j;
        }
        j += 1;
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str) -> Result<String, Diag> {
        prepare(&Source::new("t.kdl", text)).map(|c| c.into_owned())
    }

    #[test]
    fn blanks_block_comments_keeping_every_offset() {
        let text = "a 1 /* x /* é */ { */ 2\nb { c /**/ 3 }\n";
        let out = scan(text).unwrap();
        assert_eq!(out.len(), text.len());
        let blank = " ".repeat("/* x /* é */ { */".len());
        assert_eq!(out, format!("a 1 {blank} 2\nb {{ c {} 3 }}\n", "    "));
    }

    #[test]
    fn braces_in_strings_and_comments_do_not_nest() {
        let deep = "{".repeat(MAX_DEPTH + 1);
        for text in [
            format!("a \"{deep}\""),
            format!("a #\"{deep}\"#"),
            format!("a ##\"\"\"\n\"#{deep}\n\"\"\"##"),
            format!("a \"\"\"\n\"{deep}\"\n\"\"\""),
            format!("a \"\\\"{deep}\""),
            format!("// {deep}\na 1"),
            format!("/* {deep} */ a 1"),
            format!("a \"x\\   \n  {deep}\""),
        ] {
            assert!(scan(&text).is_ok(), "{text}");
        }
    }

    #[test]
    fn too_deep_points_at_the_first_brace_past_the_limit() {
        let text = format!("plan name=\"x\"\n{}{}", "a {".repeat(MAX_DEPTH + 5), "}".repeat(MAX_DEPTH + 5));
        let e = scan(&text).unwrap_err();
        assert!(e.message.contains("nested more than 64 levels deep"), "{}", e.message);
        let at = 14 + 3 * MAX_DEPTH + 2;
        assert_eq!(e.span, Some(at..at + 1));
        let ok = format!("{}{}", "a {".repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        assert!(scan(&ok).is_ok());
    }

    #[test]
    fn a_brace_after_an_unterminated_string_still_counts() {
        // The string ends at the newline, as the parser sees it.
        let text = format!("a \"open\n{}", "b {".repeat(MAX_DEPTH + 1));
        assert!(scan(&text).is_err());
    }

    #[test]
    fn unterminated_block_comment_is_located() {
        let e = scan("a 1\n/* /* */\nb 2\n").unwrap_err();
        assert_eq!(e.message, "unterminated block comment");
        assert_eq!(e.span, Some(4..6));
    }
}
