//! Small bridges between polars frames and the report's plain data: rows as JSON maps (what
//! templates see), and reading a single scalar out of a one-row frame.

use polars::prelude::*;
use serde_json::{Map, Value};

pub type Row = Map<String, Value>;

fn any_to_json(v: AnyValue<'_>) -> Value {
    match v {
        AnyValue::Null => Value::Null,
        AnyValue::Boolean(b) => Value::Bool(b),
        AnyValue::String(s) => Value::String(s.to_string()),
        AnyValue::StringOwned(s) => Value::String(s.to_string()),
        AnyValue::Categorical(c, map) => map.cat_to_str(c).map_or(Value::Null, |s| Value::String(s.into())),
        AnyValue::CategoricalOwned(c, map) => map.cat_to_str(c).map_or(Value::Null, |s| Value::String(s.into())),
        AnyValue::UInt8(n) => n.into(),
        AnyValue::UInt16(n) => n.into(),
        AnyValue::UInt32(n) => n.into(),
        AnyValue::UInt64(n) => n.into(),
        AnyValue::Int8(n) => n.into(),
        AnyValue::Int16(n) => n.into(),
        AnyValue::Int32(n) => n.into(),
        AnyValue::Int64(n) => n.into(),
        AnyValue::Float32(f) => num(f as f64),
        AnyValue::Float64(f) => num(f),
        AnyValue::Datetime(us, _, _) => Value::String(crate::events::event::ts_format::format(us)),
        other => Value::String(other.to_string()),
    }
}

/// A float as JSON; NaN and infinities (no data) become null.
pub fn num(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

pub fn rows(df: &DataFrame) -> Vec<Row> {
    let cols = df.columns();
    (0..df.height())
        .map(|i| {
            cols.iter().map(|c| (c.name().to_string(), c.get(i).map(any_to_json).unwrap_or(Value::Null))).collect()
        })
        .collect()
}

/// Column `name` of row 0 as f64 (None for null, NaN or a missing column).
pub fn scalar(df: &DataFrame, name: &str) -> Option<f64> {
    let c = df.column(name).ok()?;
    let v = c.get(0).ok()?;
    let f = match v {
        AnyValue::Float64(f) => f,
        AnyValue::Float32(f) => f as f64,
        AnyValue::UInt32(n) => n as f64,
        AnyValue::UInt64(n) => n as f64,
        AnyValue::Int64(n) => n as f64,
        AnyValue::Int32(n) => n as f64,
        _ => return None,
    };
    f.is_finite().then_some(f)
}

pub fn get_f64(row: &Row, key: &str) -> Option<f64> {
    row.get(key).and_then(Value::as_f64).filter(|f| f.is_finite())
}

pub fn get_str<'a>(row: &'a Row, key: &str) -> &'a str {
    row.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Collect with polars' streaming engine: parallel scans and fast hash group-bys (its in-memory
/// engine groups string and multi-column keys several times slower).
pub fn stream(lf: LazyFrame) -> PolarsResult<DataFrame> {
    // One query, one sink: the result is always `Single`.
    Ok(lf.collect_with_engine(Engine::Streaming)?.unwrap_single())
}
