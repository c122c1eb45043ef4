//! The criteria language, shared by the runner (live `abort = true` checks) and the analysis
//! (the verdict). Text flows `lexer` (tokens with byte spans) → `parser` (type-checked `Check`)
//! → `ast` (what a criterion is); `error` is the located `ParseError` both report; `validate`
//! says what a criterion means against its plan (load-time checks located inside the criterion
//! string, thresholds with vars resolved). Evaluating criteria is not this module's business:
//! the analysis compiles them to polars (`analyze::compile`), the runner folds them live
//! (`run::abort`), both by the semantics in `docs/criteria.md`.

pub mod ast;
pub mod error;
mod lexer;
pub mod parser;
pub mod validate;

pub use ast::{Agg, Check, Cmp, DEFAULT_WARMUP, FieldKind, Filter, Lhs, Lit, Named, Rhs, field_kind, fields};
pub use error::ParseError;
pub use parser::parse;
pub use validate::{check_criteria, threshold, var_number};
