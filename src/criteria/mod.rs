//! The criteria language, shared by the runner (live `abort = true` checks) and the analysis
//! (the verdict): the grammar and its AST (`grammar`), and what a criterion means against its
//! plan — load-time checks located inside the criterion string, thresholds with vars resolved
//! (`validate`). Compiling criteria to polars is the analysis's business, not this module's.

pub mod grammar;
pub mod validate;

pub use grammar::{Agg, Check, Cmp, FIELDS, FieldKind, Filter, Lhs, Lit, Named, ParseError, Rhs, field_kind, parse};
pub use validate::{check_criteria, threshold, var_number};
