//! Framing: a 4-byte little-endian payload length, then a `bincode` 2 payload. The only file
//! that names bincode.
//!
//! A frame longer than [`MAX_FRAME_BYTES`] is refused before anything is allocated, and decoding
//! is bounded by the same limit, so garbage input ends in a [`FrameError`], never a panic or a
//! large allocation.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{self, Read, Write};

/// Largest payload accepted, in bytes (16 MiB).
pub const MAX_FRAME_BYTES: usize = 16 << 20;
/// Bytes of the length prefix.
pub const HEADER_BYTES: usize = 4;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME_BYTES>()
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("undecodable frame: {0}")]
    Decode(String),
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Appends one frame holding `msg` to `out`.
pub fn encode_into<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    bincode::serde::encode_into_std_write(msg, out, config()).map_err(|e| FrameError::Encode(e.to_string()))?;
    let len = out.len() - start - HEADER_BYTES;
    if len > MAX_FRAME_BYTES {
        out.truncate(start);
        return Err(FrameError::TooLarge(len));
    }
    out[start..start + HEADER_BYTES].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Decodes one payload (without its length prefix). Trailing bytes are an error.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (msg, used) =
        bincode::serde::decode_from_slice(payload, config()).map_err(|e| FrameError::Decode(e.to_string()))?;
    if used != payload.len() {
        return Err(FrameError::Decode(format!("{} trailing bytes", payload.len() - used)));
    }
    Ok(msg)
}

/// Payload length announced by a frame header, checked against the limit.
pub fn payload_len(header: [u8; HEADER_BYTES]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Writes one frame (blocking); `buf` is scratch space reused between calls.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T, buf: &mut Vec<u8>) -> Result<(), FrameError> {
    buf.clear();
    encode_into(msg, buf)?;
    w.write_all(buf)?;
    Ok(())
}

/// Reads one frame (blocking). `Ok(None)` is a clean end of stream between frames; `buf` is
/// scratch space reused between calls.
pub fn read_frame<T: DeserializeOwned>(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<Option<T>, FrameError> {
    let mut header = [0u8; HEADER_BYTES];
    let mut got = 0;
    while got < HEADER_BYTES {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = payload_len(header)?;
    buf.clear();
    // Grow with the bytes that arrive, not with what the header claims: a peer that announces
    // 16 MiB and sends 10 bytes costs 10 bytes.
    let n = r.take(len as u64).read_to_end(buf)?;
    if n < len {
        return Err(FrameError::Truncated);
    }
    decode_payload(buf).map(Some)
}

/// One stream shared by a reader thread and a writer thread: the I/O goes through `&S`, which
/// local sockets (like `TcpStream`) implement.
pub struct SharedStream<S>(pub std::sync::Arc<S>);

impl<S> Clone for SharedStream<S> {
    fn clone(&self) -> Self {
        SharedStream(self.0.clone())
    }
}

impl<S> Read for SharedStream<S>
where
    for<'a> &'a S: Read,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl<S> Write for SharedStream<S>
where
    for<'a> &'a S: Write,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self.0).flush()
    }
}

/// A `tokio-util` codec for the same frames, for async peers.
pub struct FrameCodec<In, Out> {
    _marker: std::marker::PhantomData<fn(Out) -> In>,
}

impl<In, Out> Default for FrameCodec<In, Out> {
    fn default() -> Self {
        FrameCodec { _marker: std::marker::PhantomData }
    }
}

impl<In: DeserializeOwned, Out> tokio_util::codec::Decoder for FrameCodec<In, Out> {
    type Item = In;
    type Error = FrameError;

    fn decode(&mut self, src: &mut bytes::BytesMut) -> Result<Option<In>, FrameError> {
        if src.len() < HEADER_BYTES {
            return Ok(None);
        }
        let len = payload_len(src[..HEADER_BYTES].try_into().expect("4 bytes"))?;
        if src.len() < HEADER_BYTES + len {
            src.reserve(HEADER_BYTES + len - src.len());
            return Ok(None);
        }
        let frame = src.split_to(HEADER_BYTES + len);
        decode_payload(&frame[HEADER_BYTES..]).map(Some)
    }

    fn decode_eof(&mut self, src: &mut bytes::BytesMut) -> Result<Option<In>, FrameError> {
        match self.decode(src)? {
            Some(m) => Ok(Some(m)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated),
        }
    }
}

impl<In, Out: Serialize> tokio_util::codec::Encoder<Out> for FrameCodec<In, Out> {
    type Error = FrameError;

    fn encode(&mut self, msg: Out, dst: &mut bytes::BytesMut) -> Result<(), FrameError> {
        use bytes::BufMut;
        let start = dst.len();
        dst.extend_from_slice(&[0; HEADER_BYTES]);
        let mut w = (&mut *dst).writer();
        bincode::serde::encode_into_std_write(&msg, &mut w, config()).map_err(|e| FrameError::Encode(e.to_string()))?;
        let len = dst.len() - start - HEADER_BYTES;
        if len > MAX_FRAME_BYTES {
            dst.truncate(start);
            return Err(FrameError::TooLarge(len));
        }
        dst[start..start + HEADER_BYTES].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(())
    }
}
