//! Why a request could not get a worker. The supervisor decides these; the HTTP layer maps each
//! to a status and the error envelope.

use model_bucket_shared::ModelId;

use super::budget::human;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("the server is shutting down")]
    ShuttingDown,
    /// `while_waiting`: it failed while this request waited for it (the request saw it happen),
    /// rather than being failed already when the request came.
    #[error("model {model} failed: {reason}")]
    Failed { model: ModelId, reason: String, while_waiting: bool },
    #[error("model {model} is still loading; retry shortly")]
    StillLoading { model: ModelId },
    /// It waited `waited` seconds, its whole `--queue-timeout`, for memory.
    #[error("model {model} did not get memory within {waited} s (--queue-timeout); retry later")]
    Queued { model: ModelId, waited: u64 },
    /// Too many requests already wait for it to start.
    #[error("too many requests already wait for model {model} to start; retry in {retry_after} s")]
    QueueFull { model: ModelId, retry_after: u64 },
    /// The request has somewhere else that serves now, and would wait here.
    #[error("model {model} cannot serve now without waiting")]
    WouldWait { model: ModelId },
    /// Sizes in bytes.
    #[error(
        "model {model} needs about {} but the RAM budget is {}; raise --ram-budget or lower its ctx/parallel",
        human(*need),
        human(*budget)
    )]
    TooLarge { model: ModelId, need: u64, budget: u64 },
    /// Sizes in bytes: `room` is what the pinned models `by` leave of the budget.
    #[error(
        "model {model} needs about {} but the models pinned in memory ({}) leave {} of the RAM budget; raise --ram-budget or unpin one",
        human(*need),
        by.join(", "),
        human(*room)
    )]
    Pinned { model: ModelId, need: u64, room: u64, by: Vec<String> },
}
