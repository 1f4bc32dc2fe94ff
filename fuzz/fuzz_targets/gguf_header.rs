//! Any file: the GGUF header reader returns a header or an error, and never allocates more than the bytes could hold.
//! The body is `model_bucket::fuzzing::gguf_header`, whose seeds also replay in every test run.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| model_bucket::fuzzing::gguf_header(data));
