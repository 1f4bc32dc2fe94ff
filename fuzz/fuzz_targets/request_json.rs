//! Any request body: parsing and validation into a worker request end in a request or an error.
//! The body is `model_bucket::fuzzing::request_json`, whose seeds also replay in every test run.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| model_bucket::fuzzing::request_json(data));
