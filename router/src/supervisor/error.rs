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
    #[error("model {model} is waiting for other models to load; retry shortly")]
    Queued { model: ModelId },
    #[error("model {model} is waiting for other workers to free memory; retry shortly")]
    Evicting { model: ModelId },
    /// Sizes in bytes.
    #[error(
        "model {model} needs about {} but the RAM budget is {}; raise --ram-budget or lower its ctx/parallel",
        human(*need),
        human(*budget)
    )]
    TooLarge { model: ModelId, need: u64, budget: u64 },
    /// Sizes in bytes; `busy`: what workers that are serving hold.
    #[error(
        "not enough memory for model {model} (needs about {}; budget {}, {} held by workers that are serving); retry later",
        human(*need),
        human(*budget),
        human(*busy)
    )]
    NoMemory { model: ModelId, need: u64, budget: u64, busy: u64 },
}
