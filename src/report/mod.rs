//! Reports from minijinja templates in `templates/` (compiled into the binary; `--templates DIR`
//! overrides any of them by file name). It owns the formats (`format`), the template environment
//! and writing the files (`renderer`), what can go wrong (`error`), and the formatting filters
//! templates use (`filters`: `num`, `pct`, `ms`, `md`, …). What goes into the data is
//! `crate::analyze`'s business.

pub mod error;
pub mod filters;
pub mod format;
pub mod renderer;

pub use error::ReportError;
pub use format::{DEFAULT_FORMATS, Format};
pub use renderer::Renderer;
