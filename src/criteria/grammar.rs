//! The criteria language: `AGG(FIELD [where FILTER]) OP VALUE` or `NAMED_METRIC OP VALUE`,
//! parsed into an AST with byte offsets so errors point inside the criterion string. Grammar and
//! semantics are documented in `docs/criteria.md`; compilation to polars is in `compile`.

use std::fmt;
use std::ops::Range;

/// Columns criteria can name, with their kind (for type checks).
pub const FIELDS: &[(&str, FieldKind)] = &[
    ("seq", FieldKind::Num),
    ("t_ms", FieldKind::Num),
    ("phase", FieldKind::Str),
    ("stage", FieldKind::Str),
    ("driver", FieldKind::Str),
    ("kind", FieldKind::Str),
    ("name", FieldKind::Str),
    ("agent", FieldKind::Str),
    ("ok", FieldKind::Bool),
    ("latency_ms", FieldKind::Num),
    ("value", FieldKind::Num),
    ("unit", FieldKind::Str),
    ("error", FieldKind::Str),
    ("bytes", FieldKind::Num),
    ("tokens_in", FieldKind::Num),
    ("tokens_out", FieldKind::Num),
    ("cost_usd", FieldKind::Num),
    ("status", FieldKind::Num),
    ("attrs", FieldKind::Str),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    Num,
    Str,
    Bool,
}

pub fn field_kind(name: &str) -> Option<FieldKind> {
    FIELDS.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
}

#[derive(Clone, Debug, PartialEq)]
pub enum Agg {
    Count,
    Sum,
    Mean,
    Min,
    Max,
    Stddev,
    Cov,
    /// Quantile in 0..=1.
    Quantile(f64),
    Rate,
    Growth,
    Slope,
}

pub const AGGS: &[&str] = &[
    "count", "sum", "mean", "min", "max", "stddev", "cov", "p50", "p90", "p95", "p99", "p999", "p", "rate", "growth",
    "slope",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Named {
    SuccessRate,
    ErrorRate,
    TimeoutRate,
    Throughput,
    Crashes,
}

pub const NAMED: &[&str] = &["success_rate", "error_rate", "timeout_rate", "throughput", "crashes"];

impl Named {
    fn parse(s: &str) -> Option<Named> {
        Some(match s {
            "success_rate" => Named::SuccessRate,
            "error_rate" => Named::ErrorRate,
            "timeout_rate" => Named::TimeoutRate,
            "throughput" => Named::Throughput,
            "crashes" => Named::Crashes,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Cmp {
    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
            Cmp::Eq => (a - b).abs() <= f64::EPSILON * a.abs().max(b.abs()).max(1.0),
            Cmp::Ne => a != b,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Cmp {
        field: String,
        op: Cmp,
        lit: Lit,
    },
    In {
        field: String,
        list: Vec<Lit>,
    },
    /// A bare boolean column: `ok`.
    Truthy(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Lhs {
    Agg { agg: Agg, field: Option<String>, filter: Option<Filter> },
    Named(Named),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Rhs {
    Num(f64),
    /// A duration, compared in milliseconds.
    Ms(f64),
    Var(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub lhs: Lhs,
    pub op: Cmp,
    pub rhs: Rhs,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParseError {
    pub message: String,
    pub at: Range<usize>,
    pub help: Option<String>,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Num(f64),
    Str(String),
    /// A number with a duration unit, in ms.
    Dur(f64),
    Op(Cmp),
    LParen,
    RParen,
    LBrack,
    RBrack,
    Comma,
    Dot,
    Percent,
    End,
}

fn lex(src: &str) -> Result<Vec<(Tok, Range<usize>)>, ParseError> {
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
                let op = match (c, two) {
                    (b'<', true) => Cmp::Le,
                    (b'<', false) => Cmp::Lt,
                    (b'>', true) => Cmp::Ge,
                    (b'>', false) => Cmp::Gt,
                    (b'=', true) => Cmp::Eq,
                    (b'!', true) => Cmp::Ne,
                    _ => {
                        return Err(ParseError {
                            message: format!("unexpected `{}`", c as char),
                            at: i..i + 1,
                            help: Some("comparisons are <, <=, >, >=, ==, !=".into()),
                        });
                    }
                };
                i += if two { 2 } else { 1 };
                out.push((Tok::Op(op), start..i));
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
                    return Err(ParseError { message: "unterminated string".into(), at: start..b.len(), help: None });
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
                let n: f64 = text.parse().map_err(|_| ParseError {
                    message: format!("bad number `{text}`"),
                    at: start..num_end,
                    help: None,
                })?;
                if i > num_end {
                    // Fractions are fine here (`1.5s`), so the unit is applied by hand.
                    let unit = &src[num_end..i];
                    let Some(factor) = unit_ms(unit) else {
                        return Err(ParseError {
                            message: format!("unknown duration unit `{unit}`"),
                            at: num_end..i,
                            help: Some("units: us, ms, s, m, h, d (e.g. 200ms, 1.5s, 5m)".into()),
                        });
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
                return Err(ParseError {
                    message: format!("unexpected `{}`", src[i..].chars().next().unwrap_or(' ')),
                    at: i..i + 1,
                    help: None,
                });
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

struct Parser {
    toks: Vec<(Tok, Range<usize>)>,
    pos: usize,
}

fn suggest(word: &str, list: &[&'static str]) -> Option<String> {
    crate::diag::did_you_mean(word, list.iter().copied()).map(|s| format!("did you mean `{s}`?"))
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }

    fn span(&self) -> Range<usize> {
        self.toks[self.pos].1.clone()
    }

    fn next(&mut self) -> (Tok, Range<usize>) {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn err<T>(&self, message: impl Into<String>, help: Option<String>) -> Result<T, ParseError> {
        Err(ParseError { message: message.into(), at: self.span(), help })
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<(), ParseError> {
        if *self.peek() == want {
            self.next();
            Ok(())
        } else {
            self.err(format!("expected {what}"), None)
        }
    }

    fn field(&mut self) -> Result<String, ParseError> {
        let (t, at) = self.next();
        match t {
            Tok::Ident(f) if field_kind(&f).is_some() => Ok(f),
            Tok::Ident(f) => {
                let names: Vec<&'static str> = FIELDS.iter().map(|(n, _)| *n).collect();
                Err(ParseError {
                    message: format!("unknown field `{f}`"),
                    at,
                    help: suggest(&f, &names).or_else(|| Some(format!("fields: {}", names.join(", ")))),
                })
            }
            _ => Err(ParseError { message: "expected a field name".into(), at, help: None }),
        }
    }

    fn check(&mut self) -> Result<Check, ParseError> {
        let (t, at) = self.next();
        let Tok::Ident(word) = t else {
            return Err(ParseError {
                message: "a criterion starts with an aggregate like `p95(...)` or a metric like `success_rate`".into(),
                at,
                help: None,
            });
        };
        let lhs = if let Some(named) = Named::parse(&word) {
            Lhs::Named(named)
        } else {
            let agg = match word.as_str() {
                "count" => Agg::Count,
                "sum" => Agg::Sum,
                "mean" | "avg" => Agg::Mean,
                "min" => Agg::Min,
                "max" => Agg::Max,
                "stddev" => Agg::Stddev,
                "cov" => Agg::Cov,
                "rate" => Agg::Rate,
                "growth" => Agg::Growth,
                "slope" => Agg::Slope,
                "p50" => Agg::Quantile(0.50),
                "p75" => Agg::Quantile(0.75),
                "p90" => Agg::Quantile(0.90),
                "p95" => Agg::Quantile(0.95),
                "p99" => Agg::Quantile(0.99),
                "p999" => Agg::Quantile(0.999),
                "p" => Agg::Quantile(f64::NAN),
                _ => {
                    let mut all: Vec<&'static str> = AGGS.to_vec();
                    all.extend_from_slice(NAMED);
                    return Err(ParseError {
                        message: format!("unknown aggregate or metric `{word}`"),
                        at,
                        help: suggest(&word, &all).or_else(|| {
                            Some(format!("aggregates: {}; metrics: {}", AGGS.join(", "), NAMED.join(", ")))
                        }),
                    });
                }
            };
            self.expect(Tok::LParen, "`(` after the aggregate")?;
            let agg = if let Agg::Quantile(q) = agg
                && q.is_nan()
            {
                // p(Q, FIELD ...): Q in percent.
                let (t, at) = self.next();
                let Tok::Num(q) = t else {
                    return Err(ParseError {
                        message: "p(Q, FIELD) takes a percentile first, e.g. p(99.5, latency_ms)".into(),
                        at,
                        help: None,
                    });
                };
                if !(0.0..=100.0).contains(&q) {
                    return Err(ParseError {
                        message: format!("percentile {q} is not between 0 and 100"),
                        at,
                        help: None,
                    });
                }
                self.expect(Tok::Comma, "`,` after the percentile")?;
                Agg::Quantile(q / 100.0)
            } else {
                agg
            };
            let field = match self.peek() {
                Tok::Ident(w) if w == "where" => None,
                Tok::RParen => None,
                _ => Some(self.field()?),
            };
            if field.is_none() && agg != Agg::Count && agg != Agg::Rate {
                return self.err(format!("`{word}` needs a field, e.g. {word}(latency_ms)"), None);
            }
            if let Some(f) = &field
                && agg != Agg::Count
                && field_kind(f) == Some(FieldKind::Str)
            {
                return Err(ParseError {
                    message: format!("`{word}` needs a numeric field; `{f}` is text"),
                    at: self.toks[self.pos - 1].1.clone(),
                    help: None,
                });
            }
            let filter = if matches!(self.peek(), Tok::Ident(w) if w == "where") {
                self.next();
                Some(self.or()?)
            } else {
                None
            };
            self.expect(Tok::RParen, "`)`")?;
            Lhs::Agg { agg, field, filter }
        };
        let (t, at) = self.next();
        let Tok::Op(op) = t else {
            return Err(ParseError { message: "expected a comparison (<, <=, >, >=, ==, !=)".into(), at, help: None });
        };
        let rhs = self.rhs()?;
        if *self.peek() != Tok::End {
            return self.err("unexpected text after the criterion", None);
        }
        Ok(Check { lhs, op, rhs })
    }

    fn rhs(&mut self) -> Result<Rhs, ParseError> {
        let (t, at) = self.next();
        Ok(match t {
            Tok::Num(n) if *self.peek() == Tok::Percent => {
                self.next();
                Rhs::Num(n / 100.0)
            }
            Tok::Num(n) => Rhs::Num(n),
            Tok::Dur(ms) => Rhs::Ms(ms),
            Tok::Ident(v) if v == "vars" => {
                self.expect(Tok::Dot, "`.` after vars")?;
                match self.next() {
                    (Tok::Ident(name), _) => Rhs::Var(name),
                    (_, at) => {
                        return Err(ParseError { message: "expected a var name after `vars.`".into(), at, help: None });
                    }
                }
            }
            _ => {
                return Err(ParseError {
                    message: "expected a number, a duration (200ms) or vars.NAME".into(),
                    at,
                    help: None,
                });
            }
        })
    }

    fn or(&mut self) -> Result<Filter, ParseError> {
        let mut left = self.and()?;
        while matches!(self.peek(), Tok::Ident(w) if w == "or") {
            self.next();
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, ParseError> {
        let mut left = self.not()?;
        while matches!(self.peek(), Tok::Ident(w) if w == "and") {
            self.next();
            left = Filter::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Filter, ParseError> {
        if matches!(self.peek(), Tok::Ident(w) if w == "not") {
            self.next();
            return Ok(Filter::Not(Box::new(self.not()?)));
        }
        if *self.peek() == Tok::LParen {
            self.next();
            let f = self.or()?;
            self.expect(Tok::RParen, "`)`")?;
            return Ok(f);
        }
        let field_at = self.span();
        let field = self.field()?;
        let kind = field_kind(&field).unwrap_or(FieldKind::Str);
        match self.peek().clone() {
            Tok::Op(op) => {
                self.next();
                let (t, at) = self.next();
                let lit = match t {
                    Tok::Str(s) => Lit::Str(s),
                    Tok::Num(n) => Lit::Num(n),
                    Tok::Dur(ms) => Lit::Num(ms),
                    Tok::Ident(w) if w == "true" || w == "false" => Lit::Bool(w == "true"),
                    Tok::Ident(w) if w == "null" => Lit::Null,
                    _ => {
                        return Err(ParseError {
                            message: "expected a value: \"text\", a number, true/false or null".into(),
                            at,
                            help: None,
                        });
                    }
                };
                check_lit(&field, kind, &lit, &at)?;
                if matches!(lit, Lit::Str(_) | Lit::Bool(_) | Lit::Null) && !matches!(op, Cmp::Eq | Cmp::Ne) {
                    return Err(ParseError {
                        message: format!("`{}` only compares numbers", op.as_str()),
                        at,
                        help: None,
                    });
                }
                Ok(Filter::Cmp { field, op, lit })
            }
            Tok::Ident(w) if w == "in" => {
                self.next();
                self.expect(Tok::LBrack, "`[` after in")?;
                let mut list = Vec::new();
                loop {
                    let (t, at) = self.next();
                    let lit = match t {
                        Tok::Str(s) => Lit::Str(s),
                        Tok::Num(n) => Lit::Num(n),
                        Tok::RBrack if list.is_empty() => break,
                        _ => return Err(ParseError { message: "expected a value in the list".into(), at, help: None }),
                    };
                    check_lit(&field, kind, &lit, &at)?;
                    list.push(lit);
                    match self.next() {
                        (Tok::Comma, _) => continue,
                        (Tok::RBrack, _) => break,
                        (_, at) => return Err(ParseError { message: "expected `,` or `]`".into(), at, help: None }),
                    }
                }
                Ok(Filter::In { field, list })
            }
            _ if kind == FieldKind::Bool => Ok(Filter::Truthy(field)),
            _ => Err(ParseError {
                message: format!("expected a comparison after `{field}`"),
                at: field_at,
                help: Some("e.g. name == \"spawn\", status >= 500, agent in [\"a\", \"b\"]".into()),
            }),
        }
    }
}

fn check_lit(field: &str, kind: FieldKind, lit: &Lit, at: &Range<usize>) -> Result<(), ParseError> {
    let ok = matches!(
        (kind, lit),
        (_, Lit::Null)
            | (FieldKind::Num, Lit::Num(_))
            | (FieldKind::Str, Lit::Str(_))
            | (FieldKind::Bool, Lit::Bool(_))
    );
    if ok {
        return Ok(());
    }
    let want = match kind {
        FieldKind::Num => "a number",
        FieldKind::Str => "a quoted string",
        FieldKind::Bool => "true or false",
    };
    Err(ParseError { message: format!("`{field}` is compared with {want}"), at: at.clone(), help: None })
}

pub fn parse(src: &str) -> Result<Check, ParseError> {
    let toks = lex(src)?;
    Parser { toks, pos: 0 }.check()
}

impl fmt::Display for Lit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lit::Str(s) => write!(f, "{s:?}"),
            Lit::Num(n) => write!(f, "{n}"),
            Lit::Bool(b) => write!(f, "{b}"),
            Lit::Null => f.write_str("null"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_criteria_parse() {
        for c in [
            r#"growth(value where name == "rss_bytes") < 0.10"#,
            r#"cov(latency_ms where kind == "cycle") < 0.20"#,
            r#"count(where kind == "crash") == 0"#,
            "success_rate >= 0.95",
            r#"p95(latency_ms where name == "spawn") < 200ms"#,
            "sum(cost_usd) <= vars.budget_usd",
            r#"p(99.9, latency_ms where status >= 500 and (agent in ["a", "b"] or not ok)) < 2s"#,
            "error_rate < 1%",
        ] {
            parse(c).unwrap_or_else(|e| panic!("{c}: {e:?}"));
        }
    }

    #[test]
    fn structure_and_units() {
        let c = parse(r#"p95(latency_ms where name == "spawn") < 200ms"#).unwrap();
        assert_eq!(c.op, Cmp::Lt);
        assert_eq!(c.rhs, Rhs::Ms(200.0));
        let Lhs::Agg { agg, field, filter } = c.lhs else { panic!() };
        assert_eq!(agg, Agg::Quantile(0.95));
        assert_eq!(field.as_deref(), Some("latency_ms"));
        assert_eq!(filter, Some(Filter::Cmp { field: "name".into(), op: Cmp::Eq, lit: Lit::Str("spawn".into()) }));
        assert_eq!(parse("error_rate < 1%").unwrap().rhs, Rhs::Num(0.01));
        assert_eq!(parse("p99(latency_ms) < 1.5s").unwrap().rhs, Rhs::Ms(1500.0));
        assert!(parse("p99(latency_ms) < 3fortnights").is_err());
    }

    #[test]
    fn errors_point_inside_the_string() {
        let e = parse("p95(latncy_ms) < 2s").unwrap_err();
        assert_eq!(e.at, 4..13);
        assert_eq!(e.help.as_deref(), Some("did you mean `latency_ms`?"));
        let e = parse("p96(latency_ms) < 2s").unwrap_err();
        assert_eq!(e.at, 0..3);
        let e = parse(r#"count(where status == "500") == 0"#).unwrap_err();
        assert!(e.message.contains("compared with a number"), "{e:?}");
        assert!(parse("mean(agent) > 1").is_err());
        assert!(parse("success_rate >= 0.95 extra").is_err());
    }
}
