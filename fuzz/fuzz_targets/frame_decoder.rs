//! Any bytes from a peer: the frame reader and codec return frames or errors, never past the frame limit.
//! The body is `model_bucket::fuzzing::frame_decoder`, whose seeds also replay in every test run.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| model_bucket::fuzzing::frame_decoder(data));
