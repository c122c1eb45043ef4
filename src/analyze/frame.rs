//! Small bridges between polars frames and the report's plain data: rows as JSON maps (the SQL
//! tables, whose columns are the user's), typed reads of cells by column name (`Cells`, what the
//! typed metric rows use), and reading a single scalar out of a one-row frame.

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
        AnyValue::Datetime(us, _, _) => Value::String(crate::events::ts_format::format(us)),
        other => Value::String(other.to_string()),
    }
}

/// A float as JSON; NaN and infinities (no data) become null.
fn num(f: f64) -> Value {
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
    Cells::new(df).f64(name, 0)
}

/// Typed reads of a frame's cells by column name: what the typed metric rows are read with. A
/// missing column, a row out of range or a null reads as None.
pub struct Cells<'a> {
    df: &'a DataFrame,
}

impl<'a> Cells<'a> {
    pub fn new(df: &'a DataFrame) -> Cells<'a> {
        Cells { df }
    }

    fn with<T>(&self, name: &str, i: usize, f: impl FnOnce(AnyValue<'_>) -> Option<T>) -> Option<T> {
        f(self.df.column(name).ok()?.get(i).ok()?)
    }

    /// A finite number (NaN and infinities, which mean no data, read as None).
    pub fn f64(&self, name: &str, i: usize) -> Option<f64> {
        let f = self.with(name, i, |v| {
            Some(match v {
                AnyValue::Float64(f) => f,
                AnyValue::Float32(f) => f as f64,
                AnyValue::UInt32(n) => n as f64,
                AnyValue::UInt64(n) => n as f64,
                AnyValue::Int64(n) => n as f64,
                AnyValue::Int32(n) => n as f64,
                _ => return None,
            })
        })?;
        f.is_finite().then_some(f)
    }

    pub fn u64(&self, name: &str, i: usize) -> Option<u64> {
        self.with(name, i, |v| match v {
            AnyValue::UInt64(n) => Some(n),
            AnyValue::UInt32(n) => Some(n as u64),
            AnyValue::Int64(n) => u64::try_from(n).ok(),
            AnyValue::Int32(n) => u64::try_from(n).ok(),
            _ => None,
        })
    }

    pub fn i64(&self, name: &str, i: usize) -> Option<i64> {
        self.with(name, i, |v| match v {
            AnyValue::Int64(n) => Some(n),
            AnyValue::Int32(n) => Some(n as i64),
            AnyValue::UInt32(n) => Some(n as i64),
            AnyValue::UInt64(n) => i64::try_from(n).ok(),
            _ => None,
        })
    }

    pub fn bool(&self, name: &str, i: usize) -> Option<bool> {
        self.with(name, i, |v| match v {
            AnyValue::Boolean(b) => Some(b),
            _ => None,
        })
    }

    /// Text, categoricals included.
    pub fn str(&self, name: &str, i: usize) -> Option<String> {
        self.with(name, i, |v| match any_to_json(v) {
            Value::Null => None,
            Value::String(s) => Some(s),
            other => Some(other.to_string()),
        })
    }
}

/// Collect with polars' streaming engine: parallel scans and fast hash group-bys (its in-memory
/// engine groups string and multi-column keys several times slower).
pub fn stream(lf: LazyFrame) -> PolarsResult<DataFrame> {
    // One query, one sink: the result is always `Single`.
    Ok(lf.collect_with_engine(Engine::Streaming)?.unwrap_single())
}
