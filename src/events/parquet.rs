//! `events.parquet`: the same rows as `events.jsonl`, with typed columns (ints, floats, bools,
//! a UTC timestamp) instead of text. Built by streaming the JSONL in batches into a batched
//! Parquet writer, so memory stays bounded by the batch size, not the run length. The same
//! column builder turns JSONL into a DataFrame for analysis of runs that have no Parquet.

use std::path::Path;

use polars::prelude::*;

use super::event::Event;
use super::jsonl::{ReadReport, read_batches};

const BATCH: usize = 256 * 1024;

/// The schema of `events.parquet`, in column order. Documented in docs/events.md.
pub fn schema() -> Schema {
    let s = |n: &str| Field::new(n.into(), DataType::String);
    Schema::from_iter([
        Field::new("seq".into(), DataType::UInt64),
        Field::new("t_ms".into(), DataType::Float64),
        Field::new("ts".into(), DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))),
        s("phase"),
        s("stage"),
        s("driver"),
        s("kind"),
        s("name"),
        s("agent"),
        Field::new("ok".into(), DataType::Boolean),
        Field::new("latency_ms".into(), DataType::Float64),
        Field::new("value".into(), DataType::Float64),
        s("unit"),
        s("error"),
        Field::new("bytes".into(), DataType::Int64),
        Field::new("tokens_in".into(), DataType::Int64),
        Field::new("tokens_out".into(), DataType::Int64),
        Field::new("cost_usd".into(), DataType::Float64),
        Field::new("status".into(), DataType::Int64),
        s("attrs"),
    ])
}

/// Turn a batch of events into a typed DataFrame.
pub fn to_frame(evs: &[Event]) -> PolarsResult<DataFrame> {
    fn col<T, P>(name: &str, v: T) -> Column
    where
        Series: NamedFrom<T, P>,
        P: ?Sized,
    {
        Column::from(Series::new(name.into(), v))
    }
    let opt_str = |f: fn(&Event) -> Option<&str>| evs.iter().map(f).collect::<Vec<Option<&str>>>();
    let cols = vec![
        col("seq", evs.iter().map(|e| e.seq).collect::<Vec<u64>>()),
        col("t_ms", evs.iter().map(|e| e.t_ms).collect::<Vec<f64>>()),
        col("ts", evs.iter().map(|e| e.ts).collect::<Vec<i64>>())
            .cast(&DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)))?,
        col("phase", opt_str(|e| Some(&e.phase))),
        col("stage", opt_str(|e| Some(&e.stage))),
        col("driver", opt_str(|e| Some(&e.driver))),
        col("kind", opt_str(|e| Some(&e.kind))),
        col("name", opt_str(|e| e.name.as_deref())),
        col("agent", opt_str(|e| e.agent.as_deref())),
        col("ok", evs.iter().map(|e| e.ok).collect::<Vec<Option<bool>>>()),
        col("latency_ms", evs.iter().map(|e| e.latency_ms).collect::<Vec<Option<f64>>>()),
        col("value", evs.iter().map(|e| e.value).collect::<Vec<Option<f64>>>()),
        col("unit", opt_str(|e| e.unit.as_deref())),
        col("error", opt_str(|e| e.error.as_deref())),
        col("bytes", evs.iter().map(|e| e.bytes).collect::<Vec<Option<i64>>>()),
        col("tokens_in", evs.iter().map(|e| e.tokens_in).collect::<Vec<Option<i64>>>()),
        col("tokens_out", evs.iter().map(|e| e.tokens_out).collect::<Vec<Option<i64>>>()),
        col("cost_usd", evs.iter().map(|e| e.cost_usd).collect::<Vec<Option<f64>>>()),
        col("status", evs.iter().map(|e| e.status).collect::<Vec<Option<i64>>>()),
        col("attrs", opt_str(|e| e.attrs.as_deref())),
    ];
    DataFrame::new(evs.len(), cols)
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Read(#[from] super::jsonl::ReadError),
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
}

/// Write `parquet` from `jsonl`, streaming. The file appears under its name only when complete.
pub fn jsonl_to_parquet(jsonl: &Path, parquet: &Path) -> Result<ReadReport, ConvertError> {
    let werr = |reason: String| ConvertError::Write { path: parquet.display().to_string(), reason };
    let tmp = parquet.with_extension("parquet.tmp");
    let file = std::fs::File::create(&tmp).map_err(|e| werr(e.to_string()))?;
    let mut writer = ParquetWriter::new(file)
        .with_compression(ParquetCompression::Zstd(None))
        .batched(&schema())
        .map_err(|e| werr(e.to_string()))?;
    let report = read_batches(jsonl, BATCH, |evs| {
        let df = to_frame(&evs).map_err(|e| e.to_string())?;
        writer.write_batch(&df).map_err(|e| e.to_string())
    })?;
    writer.finish().map_err(|e| werr(e.to_string()))?;
    std::fs::rename(&tmp, parquet).map_err(|e| werr(e.to_string()))?;
    Ok(report)
}

/// Read a whole JSONL log into one DataFrame (for analysis when the Parquet is missing).
pub fn jsonl_to_frame(jsonl: &Path) -> Result<(DataFrame, ReadReport), ConvertError> {
    let mut frames = Vec::new();
    let report = read_batches(jsonl, BATCH, |evs| {
        frames.push(to_frame(&evs).map_err(|e| e.to_string())?);
        Ok(())
    })?;
    let mut df = DataFrame::empty_with_schema(&schema());
    for f in frames {
        df.vstack_mut(&f)
            .map_err(|e| ConvertError::Write { path: jsonl.display().to_string(), reason: e.to_string() })?;
    }
    Ok((df, report))
}
