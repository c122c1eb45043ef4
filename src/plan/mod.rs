//! Plans: two syntaxes (TOML, KDL v2) lowered to one spanned tree (`node`), vars and profiles
//! applied (`vars`), load-time templates resolved (`template`), then deserialized into the typed
//! model (`model`) with errors at file:line:col (`de`). `load` runs those passes in order; a
//! phase may `include` another plan's phase (`include`).

pub mod de;
pub mod duration;
pub mod include;
pub mod kdl_scan;
pub mod limits;
pub mod load;
pub mod model;
pub mod node;
pub mod read;
pub mod select;
pub mod spanned;
pub mod template;
pub mod vars;

pub use duration::Dur;
pub use load::{Catalog, LoadOptions, Raw, load_file, load_file_with, load_str};
pub use model::{ClockKind, ConfidenceRule, Criterion, FieldError, Phase, Plan, RawDriver, Scope, Stage, StageDriver};
pub use select::{SelectError, Selector};
pub use spanned::Spanned;
