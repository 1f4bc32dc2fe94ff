//! Where a job ended up: on a local model (its calls streaming, or their answers collected),
//! or answered by a peer or the upstream server in OpenAI's shape.

use axum::response::Response;
use model_bucket_shared::protocol::{DoneInfo, TokenLogprob};

use crate::http::error::ApiError;
use crate::http::job::call::{gone, Call};
use crate::http::openai::respond::Kind;
use crate::worker::Event;

/// A routed job.
pub enum Served {
    /// Running on a model of this node.
    Local(Started),
    /// Answered elsewhere (a peer, the upstream server), in OpenAI's shape.
    Remote(Response),
}

/// What a local job's calls produce: streamed, each call with its first event (never an
/// error); unstreamed, every choice's answer, collected before the job counts as served (so a
/// worker that fails midway passes the request to the next candidate of its chain).
pub enum Output {
    Streaming(Vec<(Call, Event)>),
    Finished(Vec<Finished>),
}

/// A job served on a local model: one call per choice (prompts × `n`).
pub struct Started {
    pub kind: Kind,
    /// The model's ID.
    pub model: String,
    /// Names of the tools offered, when the answer is to be read for calls.
    pub tools: Option<Vec<String>>,
    /// Choices per prompt.
    pub n: usize,
    pub output: Output,
    /// Log-probabilities were asked for.
    pub logprobs: bool,
    /// A streamed OpenAI answer ends with a usage chunk.
    pub include_usage: bool,
}

/// What one choice produced, once it ended.
pub struct Finished {
    pub text: String,
    /// One per generated token, when asked for.
    pub logprobs: Option<Vec<TokenLogprob>>,
    pub done: Box<DoneInfo>,
}

/// Waits for every call to end; the first failure fails the whole.
pub async fn collect(calls: Vec<(Call, Event)>, logprobs: bool) -> Result<Vec<Finished>, ApiError> {
    let each = calls.into_iter().map(|(mut call, first)| async move {
        let mut text = String::new();
        let mut lps = logprobs.then(Vec::new);
        let mut event = first;
        loop {
            match event {
                Event::Tokens { text: t, logprobs: mut l, .. } => {
                    text.push_str(&t);
                    if let Some(all) = lps.as_mut() {
                        all.append(&mut l);
                    }
                }
                Event::Done(done) => return Ok(Finished { text, logprobs: lps, done }),
                Event::Error { kind, message } => return Err(ApiError::from_worker(kind, message)),
                Event::Gone => return Err(gone()),
                Event::Embeddings { .. } => return Err(ApiError::internal("the worker answered with embeddings")),
            }
            event = call.next().await;
        }
    });
    futures::future::try_join_all(each).await
}
