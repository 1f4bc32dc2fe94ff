//! Any request body: parsing, then the validation that turns an OpenAI request into a worker
//! request, return a request or an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model_bucket::http::openai::request::{self as openai, ChatRequest, CompletionRequest};
use model_bucket_shared::protocol::{Prompt, RequestId};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<ChatRequest>(data) {
        if let Ok(messages) = openai::chat_messages(&req.messages) {
            let _ = openai::to_generate(RequestId(1), Prompt::Chat(messages), &req.common);
        }
    }
    if let Ok(req) = serde_json::from_slice::<CompletionRequest>(data) {
        if let Ok(prompt) = openai::completion_prompt(&req.prompt) {
            let _ = openai::to_generate(RequestId(1), Prompt::Text(prompt), &req.common);
        }
    }
});
