//! The formatting filters templates use (`num`, `pct`, `signed_pct`, `ms`, `md`, `cell`): numbers
//! and text made readable, `—` for a missing value. Documented in docs/templates.md.

use minijinja::Value;

fn as_f64(v: &Value) -> Option<f64> {
    if v.is_none() || v.is_undefined() {
        return None;
    }
    f64::try_from(v.clone()).ok().filter(|f| f.is_finite())
}

/// `x | num(2)`: fixed decimals; `—` for missing.
pub fn num(v: Value, digits: Option<usize>) -> String {
    match as_f64(&v) {
        Some(f) => {
            let d = digits.unwrap_or(2);
            if f.fract() == 0.0 && f.abs() < 1e15 && digits.is_none() { format!("{f:.0}") } else { format!("{f:.d$}") }
        }
        None => "—".into(),
    }
}

/// `0.953 | pct` → `95.3%`.
pub fn pct(v: Value) -> String {
    as_f64(&v).map_or("—".into(), |f| format!("{:.1}%", f * 100.0))
}

/// `0.12 | signed_pct` → `+12.0%`.
pub fn signed_pct(v: Value) -> String {
    as_f64(&v).map_or("—".into(), |f| format!("{:+.1}%", f * 100.0))
}

/// Milliseconds for people: `850 ms`, `12.4 s`, `3.2 min`, `2.5 h`, `1.3 d`.
pub fn ms(v: Value) -> String {
    let Some(f) = as_f64(&v) else { return "—".into() };
    match f {
        f if f < 1000.0 => format!("{f:.1} ms"),
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
        if f.fract() == 0.0 && f.abs() < 1e15 {
            return format!("{f:.0}");
        }
        return format!("{f:.3}");
    }
    md(v, None)
}
