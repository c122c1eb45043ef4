//! Analysis: read a run directory (`load`: Parquet by lazy scan, or the JSONL when the Parquet
//! is missing or stale) once into memory (`data`), compute metrics (`metrics`, typed rows in
//! `metric_rows`), evaluate the plan's criteria compiled to polars (`evaluate`, `compile`),
//! decide the verdict and confidence (`verdict`), derive findings (`findings`), compare with a
//! baseline (`baseline`), run the SQL tables (`sql`), compute Locust's CSV tables (`locust`), the charts' series (`charts`) and the benchmark
//! table (`bench`), and assemble the report data
//! (`report_data`); `pipeline` orders the steps and `error` says what went wrong. Rendering
//! that data is `crate::report`'s job.

pub mod baseline;
pub mod bench;
pub mod charts;
pub mod compile;
pub mod data;
pub mod error;
pub mod evaluate;
pub mod findings;
pub mod frame;
pub mod history;
pub mod load;
pub mod locust;
pub mod metric_rows;
pub mod metrics;
pub mod pipeline;
pub mod report_data;
pub mod sql;
pub mod verdict;

pub use error::AnalyzeError;
pub use evaluate::evaluate;
pub use load::{Run, find_runs, load_run};
pub use pipeline::{AnalyzeOptions, DEFAULT_THRESHOLD, DEFAULT_TOLERANCE, analyze, comparison_row};
