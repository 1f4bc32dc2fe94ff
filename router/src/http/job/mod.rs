//! The one internal job every dialect's generation request becomes: which prompts, which kind
//! of answer, which tools. [`route`] takes it to a model (local, a task chain's candidate, the
//! upstream server or a peer), [`fanout`] runs it there through [`call`]s on the worker.
//! The pieces it shares across dialects live here too: limits on constraints, LoRA choice and
//! tool plans.

use model_bucket_shared::protocol::Prompt;

use crate::http::openai::respond::Kind;
use tools::ToolPlan;

pub(crate) mod call;
pub(crate) mod fanout;
pub mod ids;
pub mod limits;
pub mod lora;
pub mod peer;
pub mod pieces;
pub mod route;
pub mod served;
pub mod tools;
pub mod translated;
pub mod upstream;

/// What a request asks to generate, validated.
#[derive(Clone)]
pub struct Job {
    pub kind: Kind,
    /// One per prompt; chat has one.
    pub prompts: Vec<Prompt>,
    pub tools: Option<ToolPlan>,
    /// Only count the prompt's tokens (see [`translated::count`]).
    pub count_only: bool,
}
