//! The ops endpoints under `/admin/`: workers, load and unload, rescan, restart, metrics,
//! adding a file, pulling, and the watch streams of events and logs.

mod add;
pub mod events;
pub(crate) mod logs;
pub mod ops;
pub mod pull;

pub use add::add;
