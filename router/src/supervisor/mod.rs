//! Worker supervision: the lifecycle decisions, as pure functions.

pub mod lifecycle;
