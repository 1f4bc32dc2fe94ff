//! Any file: the GGUF header reader returns a header or an error, never panics, and never
//! allocates more than the bytes it was given could hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model_bucket_shared::gguf::read_header_from;
use model_bucket_shared::ModelInfo;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = read_header_from(std::io::Cursor::new(data), data.len() as u64) {
        // What the catalog derives from a header must cope with any values in it.
        let _ = ModelInfo::from_header(&h, "/m/fuzz.gguf".into(), data.len() as u64, "00".repeat(32));
    }
});
