//! Criterion text → tokens with byte spans: identifiers, numbers, numbers with a duration unit
//! (converted to milliseconds here), quoted strings, comparison operators and punctuation. Knows
//! nothing of what the tokens mean together; that is `parser`'s.

use std::ops::Range;

use super::ast::Cmp;
use super::error::ParseError;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    Num(f64),
    Str(String),
    /// A number with a duration unit, in ms.
    Dur(f64),
    Op(Cmp),
    /// A lone `=`: an aggregate option, `warmup = 30%`.
    Assign,
    LParen,
    RParen,
    LBrack,
    RBrack,
    Comma,
    Dot,
    Percent,
    End,
}

pub(super) type Spanned = (Tok, Range<usize>);

pub(super) fn lex(src: &str) -> Result<Vec<Spanned>, ParseError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let tok = match c {
            b'(' => Tok::LParen,
            b')' => Tok::RParen,
            b'[' => Tok::LBrack,
            b']' => Tok::RBrack,
            b',' => Tok::Comma,
            b'%' => Tok::Percent,
            b'.' if !b.get(i + 1).is_some_and(u8::is_ascii_digit) => Tok::Dot,
            b'<' | b'>' | b'=' | b'!' => {
                let two = b.get(i + 1) == Some(&b'=');
                let tok = match (c, two) {
                    (b'<', true) => Tok::Op(Cmp::Le),
                    (b'<', false) => Tok::Op(Cmp::Lt),
                    (b'>', true) => Tok::Op(Cmp::Ge),
                    (b'>', false) => Tok::Op(Cmp::Gt),
                    (b'=', true) => Tok::Op(Cmp::Eq),
                    (b'=', false) => Tok::Assign,
                    (b'!', true) => Tok::Op(Cmp::Ne),
                    _ => {
                        return Err(ParseError::new(format!("unexpected `{}`", c as char), i..i + 1)
                            .help("comparisons are <, <=, >, >=, ==, !="));
                    }
                };
                i += if two { 2 } else { 1 };
                out.push((tok, start..i));
                continue;
            }
            b'"' | b'\'' => {
                let quote = c;
                i += 1;
                let s0 = i;
                while i < b.len() && b[i] != quote {
                    i += 1;
                }
                if i >= b.len() {
                    return Err(ParseError::new("unterminated string", start..b.len()));
                }
                let s = src[s0..i].to_string();
                i += 1;
                out.push((Tok::Str(s), start..i));
                continue;
            }
            c if c.is_ascii_digit() || c == b'.' || (c == b'-' && b.get(i + 1).is_some_and(|d| d.is_ascii_digit())) => {
                i += 1;
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b'_' || b[i] == b'e') {
                    i += 1;
                }
                let num_end = i;
                while i < b.len() && b[i].is_ascii_alphabetic() {
                    i += 1;
                }
                let text = src[start..num_end].replace('_', "");
                let n: f64 =
                    text.parse().map_err(|_| ParseError::new(format!("bad number `{text}`"), start..num_end))?;
                if i > num_end {
                    // Fractions are fine here (`1.5s`), so the unit is applied by hand.
                    let unit = &src[num_end..i];
                    let Some(factor) = unit_ms(unit) else {
                        return Err(ParseError::new(format!("unknown duration unit `{unit}`"), num_end..i)
                            .help("units: us, ms, s, m, h, d (e.g. 200ms, 1.5s, 5m)"));
                    };
                    out.push((Tok::Dur(n * factor), start..i));
                } else {
                    out.push((Tok::Num(n), start..i));
                }
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push((Tok::Ident(src[start..i].to_string()), start..i));
                continue;
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or(' ');
                return Err(ParseError::new(format!("unexpected `{ch}`"), i..i + ch.len_utf8()));
            }
        };
        i += 1;
        out.push((tok, start..i));
    }
    out.push((Tok::End, b.len()..b.len()));
    Ok(out)
}

/// Milliseconds per unit.
fn unit_ms(unit: &str) -> Option<f64> {
    Some(match unit {
        "ns" => 1e-6,
        "us" | "µs" => 1e-3,
        "ms" => 1.0,
        "s" | "sec" => 1000.0,
        "m" | "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        lex(src).unwrap().into_iter().map(|(t, _)| t).collect()
    }

    #[test]
    fn durations_become_milliseconds_and_lone_equals_is_an_option() {
        assert_eq!(toks("1.5s"), [Tok::Dur(1500.0), Tok::End]);
        assert_eq!(toks("30%"), [Tok::Num(30.0), Tok::Percent, Tok::End]);
        assert_eq!(toks("warmup = 1"), [Tok::Ident("warmup".into()), Tok::Assign, Tok::Num(1.0), Tok::End]);
        assert_eq!(toks("a == 1"), [Tok::Ident("a".into()), Tok::Op(Cmp::Eq), Tok::Num(1.0), Tok::End]);
    }

    #[test]
    fn a_multibyte_stray_character_is_an_error_not_a_panic() {
        let e = lex("p95(latency_ms) < 2s §").unwrap_err();
        assert_eq!(e.at, 21..23);
        assert!(lex("p95(latency_ms) < 3fortnights").is_err());
        assert!(lex("name == \"open").is_err());
    }
}
