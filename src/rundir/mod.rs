//! The run directory: the one owner of its layout (file names, creating one, finding runs) and
//! of `manifest.json` (what a run was and where it stands). The runner writes through it; the
//! analysis and `resume` read through it. It knows the event log's position type but not how
//! events are written or analysed.

pub mod layout;
pub mod manifest;
pub mod status;

pub use layout::{RunDir, RunDirError};
pub use manifest::{Build, Checkpoint, Host, Manifest, PlanInfo, StageRecord, StageState, now_rfc3339};
pub use status::{RunStatus, StageStatus};
