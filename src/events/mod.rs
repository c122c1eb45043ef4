//! Events: the one flat schema every driver writes (`event`), the sink that numbers them and
//! streams them to `events.jsonl` (`sink`), reading that file back, torn tail and all (`jsonl`),
//! and the typed `events.parquet` built from it at the end (`parquet`). The schema is documented
//! in `docs/events.md`; later drivers add kinds, never incompatible columns.

pub mod event;
pub mod jsonl;
pub mod parquet;
pub mod schema;
pub mod sink;

pub use event::ts_format;
pub use event::{BENCH_RUN, COLUMNS, Emitter, Event, Observer};
pub use schema::{Cell, Column, Kind};
pub use sink::{EventSink, Position, SinkError, SinkStats};
