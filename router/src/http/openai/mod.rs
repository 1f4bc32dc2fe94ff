//! The OpenAI dialect: Chat Completions, Completions, Embeddings, Responses and the model list, read into
//! a [`Job`](crate::http::job::Job) and answered in OpenAI's response and stream shapes.

pub mod completions;
pub mod embeddings;
pub mod models;
pub mod request;
pub(crate) mod respond;
pub mod responses;
pub(crate) mod stream;
