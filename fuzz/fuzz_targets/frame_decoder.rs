//! Any bytes from a peer: the frame reader and the tokio codec return frames or errors, never
//! panic, and never allocate past the frame limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model_bucket_shared::protocol::frame::{read_frame, FrameCodec};
use model_bucket_shared::protocol::{FromWorker, ToWorker};
use bytes::BytesMut;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut r = std::io::Cursor::new(data);
    let mut buf = Vec::new();
    while let Ok(Some(_)) = read_frame::<ToWorker>(&mut r, &mut buf) {}
    let mut r = std::io::Cursor::new(data);
    while let Ok(Some(_)) = read_frame::<FromWorker>(&mut r, &mut buf) {}
    let mut codec = FrameCodec::<FromWorker, ToWorker>::default();
    let mut bytes = BytesMut::from(data);
    while let Ok(Some(_)) = codec.decode(&mut bytes) {}
});
