//! Tokens → `Check`: `AGG(FIELD [where FILTER] [, OPTION = VALUE]...) OP VALUE` or
//! `NAMED_METRIC OP VALUE`, with type checks (a text field is never averaged or compared with
//! `<`) and errors that point at the offending token and suggest the near name. The grammar is
//! documented in `docs/criteria.md`.

use std::ops::Range;

use super::ast::{AGGS, Agg, Check, Cmp, FieldKind, Filter, Lhs, Lit, NAMED, Named, Rhs, field_kind, fields};
use super::error::ParseError;
use super::lexer::{Spanned, Tok, lex};

/// Parse one criterion.
pub fn parse(src: &str) -> Result<Check, ParseError> {
    let toks = lex(src)?;
    Parser { toks, pos: 0, depth: 0, terms: 0 }.check()
}

struct Parser {
    /// Always ends with `Tok::End`, which `next` never moves past.
    toks: Vec<Spanned>,
    pos: usize,
    /// How deep in `not` and parentheses the filter is now, and how many comparisons it has:
    /// both bounded, so parsing and every later walk of the filter (the analysis, the live abort
    /// checks) recurse a bounded number of times.
    depth: usize,
    terms: usize,
}

/// Deepest nesting of `not` and parentheses a filter may have.
const MAX_DEPTH: usize = 32;
/// Most comparisons one filter may join with `and`/`or`.
const MAX_TERMS: usize = 256;

fn suggest(word: &str, list: &[&'static str]) -> Option<String> {
    crate::diag::did_you_mean(word, list.iter().copied()).map(|s| format!("did you mean `{s}`?"))
}

/// An aggregate by name; `p` (the percentile is its first argument) is `None`.
fn aggregate(word: &str) -> Option<Option<Agg>> {
    Some(Some(match word {
        "count" => Agg::Count,
        "sum" => Agg::Sum,
        "mean" | "avg" => Agg::Mean,
        "min" => Agg::Min,
        "max" => Agg::Max,
        "stddev" => Agg::Stddev,
        "cov" => Agg::COV,
        "rate" => Agg::Rate,
        "growth" => Agg::GROWTH,
        "change" => Agg::CHANGE,
        "slope" => Agg::Slope,
        "p50" => Agg::Quantile(0.50),
        "p75" => Agg::Quantile(0.75),
        "p90" => Agg::Quantile(0.90),
        "p95" => Agg::Quantile(0.95),
        "p99" => Agg::Quantile(0.99),
        "p999" => Agg::Quantile(0.999),
        "p" | "tail" => return Some(None),
        _ => return None,
    }))
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }

    fn peek_word(&self, word: &str) -> bool {
        matches!(self.peek(), Tok::Ident(w) if w == word)
    }

    fn span(&self) -> Range<usize> {
        self.toks[self.pos].1.clone()
    }

    fn next(&mut self) -> Spanned {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError::new(message, self.span()))
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<(), ParseError> {
        if *self.peek() == want {
            self.next();
            Ok(())
        } else {
            self.err(format!("expected {what}"))
        }
    }

    fn field(&mut self) -> Result<(String, Range<usize>), ParseError> {
        let (t, at) = self.next();
        match t {
            Tok::Ident(f) if field_kind(&f).is_some() => Ok((f, at)),
            Tok::Ident(f) => {
                let names: Vec<&'static str> = fields().iter().map(|(n, _)| *n).collect();
                let help = suggest(&f, &names).unwrap_or_else(|| format!("fields: {}", names.join(", ")));
                Err(ParseError::new(format!("unknown field `{f}`"), at).help(help))
            }
            _ => Err(ParseError::new("expected a field name", at)),
        }
    }

    fn check(&mut self) -> Result<Check, ParseError> {
        let (t, at) = self.next();
        let Tok::Ident(word) = t else {
            return Err(ParseError::new(
                "a criterion starts with an aggregate like `p95(...)` or a metric like `success_rate`",
                at,
            ));
        };
        let lhs = match Named::from_name(&word) {
            Some(named) => Lhs::Named(named),
            None if word == "ratio" => self.ratio()?,
            None => self.aggregate_call(&word, at)?,
        };
        let (t, at) = self.next();
        let Tok::Op(op) = t else {
            return Err(ParseError::new("expected a comparison (<, <=, >, >=, ==, !=)", at));
        };
        let rhs = self.rhs()?;
        if *self.peek() != Tok::End {
            return self.err("unexpected text after the criterion");
        }
        Ok(Check { lhs, op, rhs })
    }

    /// `AGG(FIELD [where FILTER] [, OPTION = VALUE]...)`, the aggregate's name already read.
    fn aggregate_call(&mut self, word: &str, word_at: Range<usize>) -> Result<Lhs, ParseError> {
        let Some(agg) = aggregate(word) else {
            let mut all: Vec<&'static str> = AGGS.to_vec();
            all.extend_from_slice(NAMED);
            let help = suggest(word, &all)
                .unwrap_or_else(|| format!("aggregates: {}; metrics: {}", AGGS.join(", "), NAMED.join(", ")));
            return Err(ParseError::new(format!("unknown aggregate or metric `{word}`"), word_at).help(help));
        };
        self.expect(Tok::LParen, "`(` after the aggregate")?;
        let mut agg = match agg {
            Some(agg) => agg,
            None if word == "tail" => match self.percentile()? {
                Agg::Quantile(q) => Agg::Tail(q),
                other => other,
            },
            None => self.percentile()?,
        };
        let field = match self.peek() {
            Tok::Ident(w) if w == "where" => None,
            Tok::RParen | Tok::Comma => None,
            _ => Some(self.field()?),
        };
        if field.is_none() && agg != Agg::Count && agg != Agg::Rate {
            return self.err(format!("`{word}` needs a field, e.g. {word}(latency_ms)"));
        }
        if let Some((f, at)) = &field
            && agg != Agg::Count
            && field_kind(f) == Some(FieldKind::Str)
        {
            return Err(ParseError::new(format!("`{word}` needs a numeric field; `{f}` is text"), at.clone()));
        }
        let filter = if self.peek_word("where") {
            self.next();
            Some(self.or()?)
        } else {
            None
        };
        let mut seen: Vec<String> = Vec::new();
        while *self.peek() == Tok::Comma {
            self.next();
            let (name, at) = self.option(word, &mut agg)?;
            if seen.contains(&name) {
                return Err(ParseError::new(format!("`{name}` is given twice"), at));
            }
            seen.push(name);
        }
        self.expect(Tok::RParen, "`)`")?;
        Ok(Lhs::Agg { agg, field: field.map(|(f, _)| f), filter })
    }

    /// `ratio(A, B)`, its name already read: two bench command names, bare or quoted.
    fn ratio(&mut self) -> Result<Lhs, ParseError> {
        self.expect(Tok::LParen, "`(` after `ratio`")?;
        let name = |p: &mut Parser| match p.next() {
            (Tok::Ident(s) | Tok::Str(s), _) => Ok(s),
            (_, at) => {
                Err(ParseError::new("ratio(A, B) takes two bench command names, e.g. ratio(baseline, candidate)", at))
            }
        };
        let num = name(self)?;
        self.expect(Tok::Comma, "`,` between the two command names")?;
        let den = name(self)?;
        if num == den {
            return self.err(format!("ratio of `{num}` to itself is always 1"));
        }
        self.expect(Tok::RParen, "`)`")?;
        Ok(Lhs::Ratio { num, den })
    }

    /// `p(Q, ...`: the percentile, in percent, and its comma.
    fn percentile(&mut self) -> Result<Agg, ParseError> {
        let (t, at) = self.next();
        let Tok::Num(q) = t else {
            return Err(ParseError::new(
                "p(Q, FIELD) and tail(Q, FIELD) take a percentile first, e.g. p(99.5, latency_ms)",
                at,
            ));
        };
        if !(0.0..=100.0).contains(&q) {
            return Err(ParseError::new(format!("percentile {q} is not between 0 and 100"), at));
        }
        self.expect(Tok::Comma, "`,` after the percentile")?;
        Ok(Agg::Quantile(q / 100.0))
    }

    /// One `NAME = VALUE` option of the aggregate `word`, set on `agg`. Returns the option's name.
    fn option(&mut self, word: &str, agg: &mut Agg) -> Result<(String, Range<usize>), ParseError> {
        let (t, at) = self.next();
        let Tok::Ident(name) = t else {
            return Err(ParseError::new("expected an option, e.g. `warmup = 30%`, or `)`", at));
        };
        let allowed: &[&'static str] = match agg {
            Agg::Growth { .. } => &["warmup"],
            Agg::Cov { .. } => &["floor"],
            _ => &[],
        };
        if !allowed.contains(&name.as_str()) {
            let help = match allowed {
                [] => "options: `warmup` (growth, change), `floor` (cov)".to_string(),
                _ => suggest(&name, allowed).unwrap_or_else(|| format!("`{word}` takes: {}", allowed.join(", "))),
            };
            let message = match allowed {
                [] => format!("`{word}` takes no options"),
                _ => format!("unknown option `{name}` for `{word}`"),
            };
            return Err(ParseError::new(message, at).help(help));
        }
        if *self.peek() != Tok::Assign {
            return self.err(format!("expected `=` after `{name}`"));
        }
        self.next();
        let (t, value_at) = self.next();
        let percent = matches!(t, Tok::Num(_)) && *self.peek() == Tok::Percent;
        if percent {
            self.next();
        }
        match (agg, t) {
            (Agg::Growth { warmup, .. }, Tok::Num(n)) => {
                let share = if percent { n / 100.0 } else { n };
                if !(0.0..1.0).contains(&share) {
                    return Err(ParseError::new(
                        "`warmup` is the share of the series' time span to leave out: 0% up to (not including) 100%",
                        value_at,
                    ));
                }
                *warmup = share;
            }
            (Agg::Cov { floor }, Tok::Num(n) | Tok::Dur(n)) if !percent && n >= 0.0 => *floor = n,
            (Agg::Growth { .. }, _) => {
                return Err(ParseError::new("`warmup` takes a share, e.g. `warmup = 30%`", value_at));
            }
            _ => {
                return Err(ParseError::new(
                    "`floor` takes a value in the field's unit, e.g. `floor = 250ms` for latency_ms",
                    value_at,
                ));
            }
        }
        Ok((name, at))
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
                    (_, at) => return Err(ParseError::new("expected a var name after `vars.`", at)),
                }
            }
            _ => return Err(ParseError::new("expected a number, a duration (200ms) or vars.NAME", at)),
        })
    }

    fn or(&mut self) -> Result<Filter, ParseError> {
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.next();
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, ParseError> {
        let mut left = self.not()?;
        while self.peek_word("and") {
            self.next();
            left = Filter::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Filter, ParseError> {
        let nested = self.peek_word("not") || *self.peek() == Tok::LParen;
        if nested {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                let at = self.toks[self.pos].1.clone();
                return Err(ParseError::new(format!("filter nested more than {MAX_DEPTH} deep"), at));
            }
            let f = if self.peek_word("not") {
                self.next();
                self.not().map(|f| Filter::Not(Box::new(f)))
            } else {
                self.next();
                self.or().and_then(|f| self.expect(Tok::RParen, "`)`").map(|_| f))
            };
            self.depth -= 1;
            return f;
        }
        self.terms += 1;
        if self.terms > MAX_TERMS {
            let at = self.toks[self.pos].1.clone();
            return Err(ParseError::new(format!("a filter may join at most {MAX_TERMS} comparisons"), at));
        }
        let (field, field_at) = self.field()?;
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
                    _ => return Err(ParseError::new("expected a value: \"text\", a number, true/false or null", at)),
                };
                check_lit(&field, kind, &lit, &at)?;
                if matches!(lit, Lit::Str(_) | Lit::Bool(_) | Lit::Null) && !matches!(op, Cmp::Eq | Cmp::Ne) {
                    return Err(ParseError::new(format!("`{}` only compares numbers", op.as_str()), at));
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
                        _ => return Err(ParseError::new("expected a value in the list", at)),
                    };
                    check_lit(&field, kind, &lit, &at)?;
                    list.push(lit);
                    match self.next() {
                        (Tok::Comma, _) => continue,
                        (Tok::RBrack, _) => break,
                        (_, at) => return Err(ParseError::new("expected `,` or `]`", at)),
                    }
                }
                Ok(Filter::In { field, list })
            }
            Tok::Assign => {
                Err(ParseError::new(format!("`=` is not a comparison; did you mean `{field} ==`?"), self.span()))
            }
            _ if kind == FieldKind::Bool => Ok(Filter::Truthy(field)),
            _ => Err(ParseError::new(format!("expected a comparison after `{field}`"), field_at)
                .help("e.g. name == \"spawn\", status >= 500, agent in [\"a\", \"b\"]")),
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
    Err(ParseError::new(format!("`{field}` is compared with {want}"), at.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_or_long_filters_are_errors_not_stack_overflows() {
        // 3,000 parentheses or `not`s overflowed the stack (the process aborted).
        let deep = format!("count(where {}ok{}) == 0", "(".repeat(3000), ")".repeat(3000));
        let e = parse(&deep).unwrap_err();
        assert!(e.to_string().contains("nested more than 32 deep"), "{e}");
        let nots = format!("count(where {}ok) == 0", "not ".repeat(3000));
        assert!(parse(&nots).unwrap_err().to_string().contains("nested more than 32 deep"));
        let long = format!("count(where {}) == 0", vec!["ok"; 3000].join(" and "));
        assert!(parse(&long).unwrap_err().to_string().contains("at most 256 comparisons"));
        // Reasonable filters still parse.
        let fine = format!("count(where {}ok{}) == 0", "(".repeat(30), ")".repeat(30));
        assert!(parse(&fine).is_ok());
    }

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
            "p75(latency_ms) < 1s",
        ] {
            parse(c).unwrap_or_else(|e| panic!("{c}: {e:?}"));
        }
    }

    #[test]
    fn structure_and_units() {
        let c = parse(r#"p95(latency_ms where name == "spawn") < 200ms"#).unwrap();
        assert_eq!(c.op, Cmp::Lt);
        assert_eq!(c.rhs, Rhs::Ms(200.0));
        let Lhs::Agg { agg, field, filter } = c.lhs else { panic!("not an aggregate: {:?}", c.lhs) };
        assert_eq!(agg, Agg::Quantile(0.95));
        assert_eq!(field.as_deref(), Some("latency_ms"));
        assert_eq!(filter, Some(Filter::Cmp { field: "name".into(), op: Cmp::Eq, lit: Lit::Str("spawn".into()) }));
        assert_eq!(parse("error_rate < 1%").unwrap().rhs, Rhs::Num(0.01));
        assert_eq!(parse("p99(latency_ms) < 1.5s").unwrap().rhs, Rhs::Ms(1500.0));
        assert!(parse("p99(latency_ms) < 3fortnights").is_err());
    }

    fn agg(src: &str) -> Agg {
        match parse(src).unwrap_or_else(|e| panic!("{src}: {e:?}")).lhs {
            Lhs::Agg { agg, .. } => agg,
            lhs => panic!("not an aggregate: {lhs:?}"),
        }
    }

    #[test]
    fn options_set_warmup_and_floor() {
        assert_eq!(agg("growth(value) < 0.1"), Agg::GROWTH);
        assert_eq!(
            agg(r#"growth(value where name == "x", warmup = 40%) < 0.1"#),
            Agg::Growth { warmup: 0.4, relative: true }
        );
        assert_eq!(agg("growth(value, warmup = 0) < 0.1"), Agg::Growth { warmup: 0.0, relative: true });
        assert_eq!(agg("tail(95, latency_ms) < 2"), Agg::Tail(0.95));
        assert_eq!(agg("change(value, warmup = 10%) < 1e8"), Agg::Growth { warmup: 0.1, relative: false });
        assert_eq!(agg(r#"cov(latency_ms where kind == "cycle", floor = 250ms) < 0.2"#), Agg::Cov { floor: 250.0 });
        assert_eq!(agg("cov(value, floor = 3) < 0.2"), Agg::Cov { floor: 3.0 });
        assert_eq!(agg("cov(value) < 0.2"), Agg::Cov { floor: 0.0 });
    }

    #[test]
    fn bad_options_are_located() {
        let src = "growth(value, warmup = 100%) < 0.1";
        assert_eq!(parse(src).unwrap_err().at, 23..26);
        let e = parse("growth(value, warmpu = 10%) < 0.1").unwrap_err();
        assert_eq!((e.at, e.help.as_deref()), (14..20, Some("did you mean `warmup`?")));
        let e = parse("p95(latency_ms, floor = 1ms) < 0.1").unwrap_err();
        assert_eq!(e.message, "`p95` takes no options");
        assert!(parse("cov(latency_ms, floor = 1ms, floor = 2ms) < 0.2").unwrap_err().message.contains("twice"));
        assert!(parse("cov(latency_ms, floor = 10%) < 0.2").is_err());
        assert!(parse("cov(latency_ms, floor 1ms) < 0.2").is_err());
        assert!(parse("growth(value, warmup = 5m) < 0.2").is_err());
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
        let e = parse(r#"count(where name = "spawn") == 0"#).unwrap_err();
        assert_eq!((e.at, e.message.as_str()), (17..18, "`=` is not a comparison; did you mean `name ==`?"));
        assert!(parse("mean(agent) > 1").is_err());
        assert!(parse("success_rate >= 0.95 extra").is_err());
    }
}
