//! Worker supervision decisions, as pure functions and one pure state machine: the lifecycle
//! of one model's worker, the RAM budget, the automatic core spread, and the [`machine`] that
//! holds every model's state and decides with them.

pub mod budget;
pub mod cores;
pub mod error;
pub mod lifecycle;
pub mod machine;
pub mod turn;
