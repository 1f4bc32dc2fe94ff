//! Worker supervision decisions, as pure functions: the lifecycle, the RAM budget, the
//! automatic core spread.

pub mod budget;
pub mod cores;
pub mod lifecycle;
