//! The formatting filters templates use (`num`, `pct`, `signed_pct`, `ms`, `md`, `cell`, `csv`): numbers
//! and text made readable, `—` for a missing value. Documented in docs/templates.md.

use minijinja::Value;

fn as_f64(v: &Value) -> Option<f64> {
    if v.is_none() || v.is_undefined() {
        return None;
    }
    f64::try_from(v.clone()).ok().filter(|f| f.is_finite())
}

/// `f` with `d` decimals, never a negative zero: a value that rounds to zero prints unsigned
/// (`-0.001` with two decimals is `0.00`, not `-0.00`).
fn fixed(f: f64, d: usize) -> String {
    let s = format!("{f:.d$}");
    match s.strip_prefix('-') {
        Some(rest) if rest.bytes().all(|b| b == b'0' || b == b'.') => rest.to_string(),
        _ => s,
    }
}

/// `x | num(2)`: fixed decimals; `—` for missing.
pub fn num(v: Value, digits: Option<usize>) -> String {
    match as_f64(&v) {
        Some(f) => {
            let d = digits.unwrap_or(2);
            if f.fract() == 0.0 && f.abs() < 1e15 && digits.is_none() { fixed(f, 0) } else { fixed(f, d) }
        }
        None => "—".into(),
    }
}

/// `0.953 | pct` → `95.3%`.
pub fn pct(v: Value) -> String {
    as_f64(&v).map_or("—".into(), |f| format!("{}%", fixed(f * 100.0, 1)))
}

/// `0.12 | signed_pct` → `+12.0%`.
pub fn signed_pct(v: Value) -> String {
    as_f64(&v).map_or("—".into(), |f| {
        let s = fixed(f * 100.0, 1);
        if s.starts_with('-') { format!("{s}%") } else { format!("+{s}%") }
    })
}

/// Milliseconds for people: `850 ms`, `12.4 s`, `3.2 min`, `2.5 h`, `1.3 d`.
pub fn ms(v: Value) -> String {
    let Some(f) = as_f64(&v) else { return "—".into() };
    match f {
        f if f < 1000.0 => format!("{} ms", fixed(f, 1)),
        f if f < 60_000.0 => format!("{:.2} s", f / 1000.0),
        f if f < 3_600_000.0 => format!("{:.1} min", f / 60_000.0),
        f if f < 86_400_000.0 => format!("{:.2} h", f / 3_600_000.0),
        f => format!("{:.2} d", f / 86_400_000.0),
    }
}

/// Text safe inside a Markdown table cell; `md(120)` also shortens it to 120 characters.
pub fn md(v: Value, max: Option<usize>) -> String {
    let s = if v.is_none() || v.is_undefined() { String::new() } else { v.to_string() };
    let mut s = s.replace('|', "\\|").replace('\n', " ");
    if let Some(n) = max
        && s.chars().count() > n
    {
        s = s.chars().take(n.saturating_sub(1)).collect::<String>() + "…";
    }
    s
}

/// A SQL result cell: numbers compact, text table-safe.
pub fn cell(v: Value) -> String {
    if v.is_none() || v.is_undefined() {
        return String::new();
    }
    if let Some(f) = as_f64(&v) {
        return if f.fract() == 0.0 && f.abs() < 1e15 { fixed(f, 0) } else { fixed(f, 3) };
    }
    md(v, None)
}

/// `x | csv`: one CSV field (RFC 4180 minimal quoting, as Python's csv module writes): text
/// quoted only when it holds a comma, quote or line break; numbers in full; `N/A` for missing,
/// as Locust writes it.
pub fn csv(v: Value) -> String {
    if v.is_none() || v.is_undefined() {
        return "N/A".into();
    }
    if let Some(s) = v.as_str() {
        return if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        };
    }
    match as_f64(&v) {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => fixed(f, 0),
        Some(f) => format!("{}", (f * 1e6).round() / 1e6),
        None => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_never_print_as_negative_zero() {
        let v = Value::from;
        assert_eq!(num(v(-0.0), None), "0");
        assert_eq!(num(v(-0.0), Some(2)), "0.00");
        assert_eq!(num(v(-0.001), Some(2)), "0.00");
        assert_eq!(num(v(-0.5), Some(2)), "-0.50");
        assert_eq!(num(v(0.9534), Some(2)), "0.95");
        assert_eq!(pct(v(-0.0)), "0.0%");
        assert_eq!(signed_pct(v(-0.00001)), "+0.0%");
        assert_eq!(signed_pct(v(0.12)), "+12.0%");
        assert_eq!(signed_pct(v(-0.12)), "-12.0%");
        assert_eq!(ms(v(-0.0)), "0.0 ms");
        assert_eq!(cell(v(-0.0)), "0");
        assert_eq!(cell(v(-0.0001)), "0.000");
        assert_eq!(num(Value::from(()), Some(2)), "—");
    }
}
