//! What each fuzz target (`fuzz/fuzz_targets/`) runs on its input, here so that the targets and
//! the replay of their seeds (`fuzz/seeds/TARGET/*`, below, in every test run) run the same
//! code. Each returns normally for any input: a panic is the bug a fuzzer looks for.

use model_bucket_shared::gguf::read_header_from;
use model_bucket_shared::protocol::frame::{read_frame, FrameCodec};
use model_bucket_shared::protocol::{FromWorker, Prompt, RequestId, ToWorker};
use model_bucket_shared::ModelInfo;
use tokio_util::codec::Decoder;

use crate::http::openai::request::{self as openai, ChatRequest, CompletionRequest};

/// Any request body: parsing, then the validation that turns an OpenAI request into a worker
/// request, end in a request or an error.
pub fn request_json(data: &[u8]) {
    if let Ok(req) = serde_json::from_slice::<ChatRequest>(data) {
        if let Ok(messages) = openai::chat_messages(&req.messages) {
            let _ = openai::to_generate(RequestId(1), Prompt::Chat(messages), &req.common);
        }
    }
    if let Ok(req) = serde_json::from_slice::<CompletionRequest>(data) {
        if let Ok(prompts) = openai::completion_prompts(&req.prompt) {
            for p in prompts {
                let _ = openai::to_generate(RequestId(1), p, &req.common);
            }
        }
    }
}

/// Any file: the GGUF header reader returns a header or an error, within what the bytes could
/// hold, and what the catalog derives from a header copes with any values in it.
pub fn gguf_header(data: &[u8]) {
    if let Ok(h) = read_header_from(std::io::Cursor::new(data), data.len() as u64) {
        let _ = ModelInfo::from_header(&h, "/m/fuzz.gguf".into(), data.len() as u64, "00".repeat(32));
    }
}

/// Any bytes from a peer: the frame reader and the tokio codec return frames or errors, never
/// past the frame limit.
pub fn frame_decoder(data: &[u8]) {
    let mut r = std::io::Cursor::new(data);
    let mut buf = Vec::new();
    while let Ok(Some(_)) = read_frame::<ToWorker>(&mut r, &mut buf) {}
    let mut r = std::io::Cursor::new(data);
    while let Ok(Some(_)) = read_frame::<FromWorker>(&mut r, &mut buf) {}
    let mut codec = FrameCodec::<FromWorker, ToWorker>::default();
    let mut bytes = tokio_util::bytes::BytesMut::from(data);
    while let Ok(Some(_)) = codec.decode(&mut bytes) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Runs `f` on every seed of `target`, and on each cut short and with a byte flipped.
    fn replay(target: &str, f: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds").join(target);
        let seeds: Vec<_> =
            std::fs::read_dir(&dir).unwrap().flatten().map(|e| std::fs::read(e.path()).unwrap()).collect();
        assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
        for seed in seeds {
            f(&seed);
            for cut in [0, 1, seed.len() / 2, seed.len().saturating_sub(1)] {
                f(&seed[..cut]);
            }
            for at in (0..seed.len()).step_by(seed.len() / 64 + 1) {
                let mut m = seed.clone();
                m[at] ^= 0xff;
                f(&m);
            }
        }
    }

    #[test]
    fn request_json_seeds_replay() {
        replay("request_json", request_json);
    }

    #[test]
    fn gguf_header_seeds_replay() {
        replay("gguf_header", gguf_header);
    }

    #[test]
    fn frame_decoder_seeds_replay() {
        replay("frame_decoder", frame_decoder);
    }
}
