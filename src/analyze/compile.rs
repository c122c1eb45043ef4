//! Criteria → polars expressions. Each criterion becomes two scalar expressions over the events
//! frame — its observed value and its support (how many rows it saw) — so every criterion of a
//! run is evaluated by one `select`, in one pass, with no per-row Rust code.
//!
//! Rows of kind `stage` (the runner's lifecycle markers) are never data for criteria or metrics;
//! they only delimit a scope's time window for `rate` and `throughput`.

use polars::prelude::*;

use crate::criteria::{Agg, Check, Cmp, Filter, Lhs, Lit, Named};
use crate::events::BENCH_RUN;

/// Rows that are measurements (not the runner's stage markers).
pub fn data_mask() -> Expr {
    col("kind").neq(lit("stage"))
}

/// Rows whose `error` says they timed out: it contains "timeout" or "timed out" (also
/// capitalized). Literal matches rather than lower-casing every message: 5× cheaper on 10M rows.
pub fn timeout_mask() -> Expr {
    ["timeout", "Timeout", "TIMEOUT", "timed out", "Timed out"]
        .into_iter()
        .map(|pat| col("error").str().contains_literal(lit(pat)))
        .reduce(Expr::or)
        .unwrap_or(lit(false))
        .fill_null(lit(false))
}

fn lit_expr(l: &Lit) -> Expr {
    match l {
        Lit::Str(s) => lit(s.as_str()),
        Lit::Num(n) => lit(*n),
        Lit::Bool(b) => lit(*b),
        Lit::Null => lit(NULL),
    }
}

pub fn filter_expr(f: &Filter) -> Expr {
    match f {
        Filter::And(a, b) => filter_expr(a).and(filter_expr(b)),
        Filter::Or(a, b) => filter_expr(a).or(filter_expr(b)),
        Filter::Not(a) => filter_expr(a).not(),
        Filter::Truthy(field) => col(field.as_str()).eq(lit(true)),
        Filter::Cmp { field, op, lit: Lit::Null } => match op {
            Cmp::Ne => col(field.as_str()).is_not_null(),
            _ => col(field.as_str()).is_null(),
        },
        Filter::Cmp { field, op, lit: l } => {
            let c = col(field.as_str());
            // Key columns are categorical in memory: order them as strings.
            let c =
                if matches!(l, Lit::Str(_)) && !matches!(op, Cmp::Eq | Cmp::Ne) { c.cast(DataType::String) } else { c };
            let v = lit_expr(l);
            match op {
                Cmp::Lt => c.lt(v),
                Cmp::Le => c.lt_eq(v),
                Cmp::Gt => c.gt(v),
                Cmp::Ge => c.gt_eq(v),
                Cmp::Eq => c.eq(v),
                Cmp::Ne => c.neq(v),
            }
        }
        Filter::In { field, list } => {
            let c = col(field.as_str());
            // A chain of equalities: lists are short, and this needs no extra polars feature.
            list.iter().map(|l| c.clone().eq(lit_expr(l))).reduce(|a, b| a.or(b)).unwrap_or(lit(false))
        }
    }
    .fill_null(lit(false))
}

/// Seconds spanned by a scope's rows (stage markers included): the window for rates.
pub fn window_secs(scope: &Expr) -> Expr {
    let t = col("t_ms").filter(scope.clone());
    (t.clone().max() - t.min()).cast(DataType::Float64) / lit(1000.0)
}

/// The least-squares line of `y` against `t_ms` over `mask`: its slope per ms, and a function
/// giving its value at a time.
fn line(y: Expr, mask: &Expr) -> (Expr, impl Fn(Expr) -> Expr) {
    let x = col("t_ms").cast(DataType::Float64).filter(mask.clone());
    let y = y.cast(DataType::Float64).filter(mask.clone());
    let xc = x.clone() - x.clone().mean();
    let yc = y.clone() - y.clone().mean();
    let slope = (xc.clone() * yc).sum() / (xc.clone() * xc).sum();
    let (mean_x, mean_y, b) = (x.mean(), y.mean(), slope.clone());
    (slope, move |t: Expr| mean_y.clone() + b.clone() * (t - mean_x.clone()))
}

/// `growth` with a warm-up (docs/criteria.md, "growth and warm-up"): the line is fitted to the
/// rows at or after `t_first + warmup * (t_last - t_first)`, and the figure is that line's change
/// over the whole span relative to the magnitude of its value at `t_first`. `run::abort` computes
/// the same figure from running sums.
///
/// `steady` is the rows the line is fitted to (`steady_mask`), as an expression or, better, as a
/// column computed beforehand: the fit names it a dozen times, and the expression holds two
/// aggregations over the whole frame, which polars would otherwise evaluate for every mention.
/// `relative = false` is `change`: the same line's change in the field's own unit.
pub fn growth(y: Expr, mask: &Expr, steady: &Expr, relative: bool) -> Expr {
    let x = col("t_ms").cast(DataType::Float64).filter(mask.clone());
    let (first, last) = (x.clone().min(), x.max());
    let (slope, at) = line(y, steady);
    let change = slope * (last - first.clone());
    if relative { change / at(first).abs() } else { change }
}

/// The rows `growth` fits its line to: those of `mask` at or after the warm-up cutoff.
pub fn steady_mask(mask: &Expr, warmup: f64) -> Expr {
    if warmup <= 0.0 {
        return mask.clone();
    }
    let t = col("t_ms").cast(DataType::Float64);
    let x = t.clone().filter(mask.clone());
    let (first, last) = (x.clone().min(), x.max());
    let cutoff = first.clone() + lit(warmup) * (last - first);
    mask.clone().and(t.gt_eq(cutoff))
}

/// The event columns a criterion's expressions read (besides the ones metrics always load).
pub fn columns(check: &Check) -> Vec<String> {
    fn walk(f: &Filter, out: &mut Vec<String>) {
        match f {
            Filter::And(a, b) | Filter::Or(a, b) => {
                walk(a, out);
                walk(b, out);
            }
            Filter::Not(a) => walk(a, out),
            Filter::Cmp { field, .. } | Filter::In { field, .. } | Filter::Truthy(field) => out.push(field.clone()),
        }
    }
    let mut out = Vec::new();
    if let Lhs::Ratio { .. } = &check.lhs {
        out.extend(["latency_ms", "name", "ok"].map(String::from));
    }
    if let Lhs::Agg { agg, field, filter } = &check.lhs {
        out.push(match (field, agg) {
            (Some(f), _) => f.clone(),
            (None, Agg::Growth { .. } | Agg::Slope) => "value".into(),
            (None, _) => "seq".into(),
        });
        if let Some(f) = filter {
            walk(f, &mut out);
        }
    }
    out
}

/// The observed-value and support expressions for one criterion over the rows `sm` selects (its
/// scope, `Frame::scope_mask`). They read the in-memory `metrics::Frame`, whose flag columns
/// `_data` (not a stage marker) and `_timeout` (`timeout_mask`) are computed once per row.
pub fn compile(check: &Check, sm: Expr) -> (Expr, Expr) {
    let (value, support, _) = compile_staged(check, sm, None);
    (value, support)
}

/// `compile`, with the per-row mask a `growth` with a warm-up fits its line to computed once: with
/// `aux = Some(name)` that mask is returned as a third expression aliased `name`, to be added as
/// a column before the value is evaluated (the value reads it as `col(name)`). Same figures as
/// `compile`: the column holds exactly what the inline mask evaluates to.
pub fn compile_staged(check: &Check, sm: Expr, aux: Option<&str>) -> (Expr, Expr, Option<Expr>) {
    let data = col("_data");
    let scope_rows = sm.clone().cast(DataType::UInt32).sum().cast(DataType::Float64);
    let mut staged = None;
    let (value, support) = match &check.lhs {
        Lhs::Named(named) => {
            let measured = sm.clone().and(data.clone()).and(col("ok").is_not_null());
            let n = measured.clone().cast(DataType::UInt32).sum().cast(DataType::Float64);
            let ok = col("ok").cast(DataType::Float64).filter(measured.clone());
            match named {
                Named::SuccessRate => (ok.mean(), n),
                Named::ErrorRate => (lit(1.0) - ok.mean(), n),
                Named::TimeoutRate => (col("_timeout").cast(DataType::Float64).filter(measured).mean(), n),
                Named::Throughput => (n.clone() / window_secs(&sm), n),
                Named::Crashes => {
                    let crashes = sm.clone().and(col("kind").eq(lit("crash")));
                    (crashes.cast(DataType::UInt32).sum().cast(DataType::Float64), scope_rows)
                }
            }
        }
        Lhs::Ratio { num, den } => {
            let runs = |name: &str| {
                let m = sm.clone().and(data.clone()).and(col("kind").eq(lit(BENCH_RUN))).and(col("name").eq(lit(name)));
                let m = m.and(col("ok").eq(lit(true))).and(col("latency_ms").is_not_null()).fill_null(lit(false));
                let n = m.clone().cast(DataType::UInt32).sum().cast(DataType::Float64);
                (col("latency_ms").cast(DataType::Float64).filter(m).mean(), n)
            };
            let ((a, na), (b, nb)) = (runs(num), runs(den));
            let support = when(na.clone().lt(nb.clone())).then(na).otherwise(nb);
            (a / b, support)
        }
        Lhs::Agg { agg, field, filter } => {
            let mut mask = sm.clone().and(data);
            if let Some(f) = filter {
                mask = mask.and(filter_expr(f));
            }
            if let Some(f) = field {
                mask = mask.and(col(f.as_str()).is_not_null());
            }
            let matched = mask.clone().cast(DataType::UInt32).sum().cast(DataType::Float64);
            let y = || col(field.as_deref().unwrap_or("seq")).cast(DataType::Float64).filter(mask.clone());
            match agg {
                Agg::Count => (matched, scope_rows),
                Agg::Rate => (matched / window_secs(&sm), scope_rows),
                Agg::Sum => (y().sum(), matched),
                Agg::Mean => (y().mean(), matched),
                Agg::Min => (y().min(), matched),
                Agg::Max => (y().max(), matched),
                Agg::Stddev => (y().std(1), matched),
                // Below the floor, the spread is measured against the floor (docs/criteria.md).
                Agg::Cov { floor } if *floor > 0.0 => {
                    let mean = y().mean();
                    let at_least = when(mean.clone().lt(lit(*floor))).then(lit(*floor)).otherwise(mean);
                    (y().std(1) / at_least, matched)
                }
                Agg::Cov { .. } => (y().std(1) / y().mean(), matched),
                Agg::Quantile(q) => (y().quantile(lit(*q), QuantileMethod::Linear), matched),
                Agg::Tail(q) => (y().quantile(lit(*q), QuantileMethod::Linear) / y().mean(), matched),
                Agg::Growth { warmup, relative } => {
                    let steady = steady_mask(&mask, *warmup);
                    let steady = match aux {
                        Some(name) if *warmup > 0.0 => {
                            staged = Some(steady.alias(name));
                            col(name)
                        }
                        _ => steady,
                    };
                    (growth(col(field.as_deref().unwrap_or("value")), &mask, &steady, *relative), matched)
                }
                Agg::Slope => {
                    let (slope, _) = line(col(field.as_deref().unwrap_or("value")), &mask);
                    (slope * lit(1000.0), matched)
                }
            }
        }
    };
    (value, support, staged)
}
