//! `events.parquet`: the same rows as `events.jsonl`, with typed columns (ints, floats, bools,
//! a UTC timestamp) instead of text. Built by streaming the JSONL in batches into a batched
//! Parquet writer, so memory stays bounded by the batch size, not the run length. The same
//! column builder turns JSONL into a DataFrame for analysis of runs that have no Parquet.

use std::path::Path;

use polars::prelude::*;

use super::event::{COLUMNS, Event};
use super::jsonl::{ReadReport, read_batches};
use super::schema::{Cell, Column, Kind};
use polars::prelude::Column as Column_;

const BATCH: usize = 256 * 1024;

fn dtype(kind: Kind) -> DataType {
    match kind {
        Kind::U64 => DataType::UInt64,
        Kind::F64 => DataType::Float64,
        Kind::I64 => DataType::Int64,
        Kind::Time => DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)),
        Kind::Bool => DataType::Boolean,
        Kind::Str => DataType::String,
    }
}

/// The schema of `events.parquet`, in column order: `COLUMNS` with each kind's Parquet type.
pub fn schema() -> Schema {
    Schema::from_iter(COLUMNS.iter().map(|c| Field::new(c.name.into(), dtype(c.kind))))
}

/// One column of a batch, typed by its kind.
fn column(index: usize, col: &Column, evs: &[Event]) -> PolarsResult<Column_> {
    let read = Event::reader(index).ok_or_else(|| polars_err!(ColumnNotFound: "{}", col.name))?;
    let name = col.name.into();
    macro_rules! collect {
        ($variant:ident, $t:ty) => {
            evs.iter()
                .map(|e| match read(e) {
                    Cell::$variant(v) => v,
                    _ => None,
                })
                .collect::<Vec<Option<$t>>>()
        };
    }
    let series = match col.kind {
        Kind::U64 => Series::new(name, collect!(U64, u64)),
        Kind::F64 => Series::new(name, collect!(F64, f64)),
        Kind::I64 => Series::new(name, collect!(I64, i64)),
        Kind::Bool => Series::new(name, collect!(Bool, bool)),
        Kind::Str => Series::new(name, collect!(Str, &str)),
        Kind::Time => Series::new(name, collect!(Time, i64)).cast(&dtype(Kind::Time))?,
    };
    Ok(Column_::from(series))
}

/// Turn a batch of events into a typed DataFrame.
pub fn to_frame(evs: &[Event]) -> PolarsResult<DataFrame> {
    let cols = COLUMNS.iter().enumerate().map(|(i, c)| column(i, c, evs)).collect::<PolarsResult<Vec<_>>>()?;
    DataFrame::new(evs.len(), cols)
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Read(#[from] super::jsonl::ReadError),
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
}

/// Write `parquet` from `jsonl`, streaming. The file appears under its name only when complete;
/// on any failure no partial file is left behind.
pub fn jsonl_to_parquet(jsonl: &Path, parquet: &Path) -> Result<ReadReport, ConvertError> {
    let tmp = parquet.with_extension("parquet.tmp");
    let result = write_parquet(jsonl, parquet, &tmp);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_parquet(jsonl: &Path, parquet: &Path, tmp: &Path) -> Result<ReadReport, ConvertError> {
    let werr = |reason: String| ConvertError::Write { path: parquet.display().to_string(), reason };
    let file = std::fs::File::create(tmp).map_err(|e| werr(e.to_string()))?;
    let mut writer = ParquetWriter::new(file)
        .with_compression(ParquetCompression::Zstd(None))
        .batched(&schema())
        .map_err(|e| werr(e.to_string()))?;
    let report = read_batches(jsonl, BATCH, |evs| {
        let df = to_frame(&evs).map_err(|e| e.to_string())?;
        writer.write_batch(&df).map_err(|e| format!("cannot write {}: {e}", parquet.display()))
    })?;
    writer.finish().map_err(|e| werr(e.to_string()))?;
    std::fs::rename(tmp, parquet).map_err(|e| werr(e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventSink;
    use crate::events::sink::Position;
    use rand::{Rng, SeedableRng};

    /// Floats survive JSONL → Parquet bit for bit: the JSONL holds each float's shortest
    /// round-trip text, and the converter must parse it back exactly.
    #[test]
    fn floats_are_bit_identical_in_jsonl_and_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let (jsonl, pq) = (dir.path().join("events.jsonl"), dir.path().join("events.parquet"));
        let (sink, handle) = EventSink::open(&jsonl, Position::default()).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut want = Vec::new();
        for i in 0..20_000 {
            // Costs and latencies as drivers make them, and arbitrary finite doubles.
            let v = match i % 3 {
                0 => rng.random_range(0.0..1.0) * 0.003,
                1 => rng.random_range(0.0..5000.0),
                _ => loop {
                    let f = f64::from_bits(rng.random());
                    if f.is_finite() {
                        break f;
                    }
                },
            };
            want.push(v);
            sink.send(&Event { kind: "x".into(), value: Some(v), cost_usd: Some(v), ..Event::default() });
        }
        handle.close().unwrap();
        jsonl_to_parquet(&jsonl, &pq).unwrap();
        let df = ParquetReader::new(std::fs::File::open(&pq).unwrap()).finish().unwrap();
        for col in ["value", "cost_usd"] {
            let got: Vec<u64> = df.column(col).unwrap().f64().unwrap().into_no_null_iter().map(f64::to_bits).collect();
            let differ = got.iter().zip(&want).filter(|(g, w)| **g != w.to_bits()).count();
            assert_eq!(differ, 0, "{differ} of {} `{col}` cells differ from the JSONL text", want.len());
        }
    }
}
