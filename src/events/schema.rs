//! The event schema, declared once. `event_schema!` takes the `Event` struct as written (its
//! fields, their Rust types and serde attributes, each tagged with a column kind) and emits the
//! struct plus everything that must agree with it: `COLUMNS` (name, kind, nullability, in file
//! order), the Parquet data type of each kind, and `Event::cell`/`Event::reader` to read any column
//! by name or position. The JSONL form is the struct's serde form; the Parquet schema and
//! frames (`parquet`), the criteria's column names (`crate::criteria`) and the live abort
//! aggregates (`crate::run::abort`) all read `COLUMNS` and `cell`. Adding a column is one line
//! in `event.rs` plus its row in docs/events.md (a test checks the docs list every column).

use std::borrow::Cow;
use std::sync::Arc;

/// What a column holds: its Parquet type and how criteria may use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Unsigned 64-bit integer (`seq`).
    U64,
    /// 64-bit float.
    F64,
    /// Signed 64-bit integer.
    I64,
    /// UTC wall-clock time in microseconds since the Unix epoch; RFC 3339 text in JSONL.
    Time,
    Bool,
    Str,
}

/// One column of the schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    /// False for the columns every event has.
    pub nullable: bool,
}

/// One event's value in one column, borrowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cell<'a> {
    U64(Option<u64>),
    F64(Option<f64>),
    I64(Option<i64>),
    Time(Option<i64>),
    Bool(Option<bool>),
    Str(Option<&'a str>),
}

impl Cell<'_> {
    pub fn is_null(&self) -> bool {
        match self {
            Cell::U64(v) => v.is_none(),
            Cell::F64(v) => v.is_none(),
            Cell::I64(v) | Cell::Time(v) => v.is_none(),
            Cell::Bool(v) => v.is_none(),
            Cell::Str(v) => v.is_none(),
        }
    }

    /// The value as a number, for numeric columns (`Time` is not a number criteria compare).
    pub fn number(&self) -> Option<f64> {
        match *self {
            Cell::U64(v) => v.map(|n| n as f64),
            Cell::F64(v) => v,
            Cell::I64(v) => v.map(|n| n as f64),
            _ => None,
        }
    }
}

/// How a Rust field type reads as a cell of each kind it may be declared with. Implemented for
/// the handful of types the schema uses; a column declared with a kind its type cannot hold is
/// a compile error.
pub trait AsCell<K> {
    fn as_cell(&self) -> Cell<'_>;
}

/// Marker types naming the kinds at the type level, for `AsCell`.
pub mod kinds {
    pub struct U64;
    pub struct F64;
    pub struct I64;
    pub struct Time;
    pub struct Bool;
    pub struct Str;
}

macro_rules! as_cell {
    ($kind:ident, $ty:ty, |$v:ident| $e:expr) => {
        impl AsCell<kinds::$kind> for $ty {
            fn as_cell(&self) -> Cell<'_> {
                let $v = self;
                Cell::$kind($e)
            }
        }
    };
}

as_cell!(U64, u64, |v| Some(*v));
as_cell!(F64, f64, |v| Some(*v));
as_cell!(F64, Option<f64>, |v| *v);
as_cell!(I64, Option<i64>, |v| *v);
as_cell!(Time, i64, |v| Some(*v));
as_cell!(Bool, Option<bool>, |v| *v);
as_cell!(Str, Arc<str>, |v| Some(&**v));
as_cell!(Str, Cow<'static, str>, |v| Some(v.as_ref()));
as_cell!(Str, Option<Arc<str>>, |v| v.as_deref());
as_cell!(Str, Option<Cow<'static, str>>, |v| v.as_deref());
as_cell!(Str, Option<String>, |v| v.as_deref());

/// Reads one column of an event.
pub type Reader<E> = for<'a> fn(&'a E) -> Cell<'a>;

/// True for the field types that may be absent.
pub trait Nullable {
    const NULLABLE: bool;
}

impl<T> Nullable for Option<T> {
    const NULLABLE: bool = true;
}

macro_rules! not_null {
    ($($ty:ty),*) => { $(impl Nullable for $ty { const NULLABLE: bool = false; })* };
}
not_null!(u64, f64, i64, Arc<str>, Cow<'static, str>);

/// Declare the event struct and derive the schema from it. Each field is written
/// `pub NAME: TYPE => KIND` (KIND one of `Kind`'s variants), with its serde attributes above it.
macro_rules! event_schema {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                pub $field:ident : $ty:ty => $kind:ident
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $(
                $(#[$fmeta])*
                pub $field: $ty,
            )*
        }

        /// Every column, in file order.
        pub const COLUMNS: &[$crate::events::schema::Column] = &[
            $(
                $crate::events::schema::Column {
                    name: stringify!($field),
                    kind: $crate::events::schema::Kind::$kind,
                    nullable: <$ty as $crate::events::schema::Nullable>::NULLABLE,
                },
            )*
        ];

        impl $name {
            /// The value of column `name`, or `None` for a name that is not a column.
            pub fn cell(&self, name: &str) -> Option<$crate::events::schema::Cell<'_>> {
                use $crate::events::schema::{AsCell, kinds};
                match name {
                    $( stringify!($field) => Some(AsCell::<kinds::$kind>::as_cell(&self.$field)), )*
                    _ => None,
                }
            }

            /// How to read the column at `index` in `COLUMNS` from any event (look it up once,
            /// then call it per event).
            pub fn reader(index: usize) -> Option<$crate::events::schema::Reader<$name>> {
                use $crate::events::schema::{AsCell, Cell, kinds};
                $(
                    fn $field(e: &$name) -> Cell<'_> {
                        AsCell::<kinds::$kind>::as_cell(&e.$field)
                    }
                )*
                let readers: &[$crate::events::schema::Reader<$name>] = &[ $( $field, )* ];
                readers.get(index).copied()
            }
        }
    };
}

pub(crate) use event_schema;

/// The column called `name`.
pub fn column(name: &str) -> Option<&'static Column> {
    super::event::COLUMNS.iter().find(|c| c.name == name)
}
