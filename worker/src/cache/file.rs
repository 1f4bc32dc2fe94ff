//! The on-disk format of one cached prefix, checked end to end so that a truncated, corrupt or
//! foreign file is refused rather than loaded:
//!
//! ```text
//! "MBKV" | format u32 | key length u32 | key | token count u32 | tokens (i32 each)
//!        | state length u64 | state | SHA-256 of everything before it (32 bytes)
//! ```
//!
//! Integers are little-endian. The key names the model file, the context settings and the build
//! that wrote the state; a reader asks for its own key and refuses any other.

use llama_cpp_2::token::LlamaToken;
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};

const MAGIC: &[u8; 4] = b"MBKV";
const FORMAT: u32 = 1;
/// Bounds on what a header may claim, so a corrupt one cannot size an allocation.
const MAX_KEY: u32 = 4096;
const MAX_TOKENS: u32 = 1 << 24;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("not a prompt-cache file")]
    Magic,
    #[error("format {0}, expected {FORMAT}")]
    Format(u32),
    #[error("written for another model, context or build")]
    Key,
    #[error("header out of bounds ({0})")]
    Bounds(&'static str),
    #[error("checksum mismatch")]
    Checksum,
    #[error("truncated or unreadable: {0}")]
    Io(#[from] io::Error),
}

/// A writer that hashes what goes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what comes through it.
struct Verifying<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Writes one entry.
pub fn write_entry<W: Write>(w: W, key: &str, tokens: &[LlamaToken], state: &[u8]) -> io::Result<W> {
    let mut h = Hashing { inner: w, hash: Sha256::new() };
    h.write_all(MAGIC)?;
    h.write_all(&FORMAT.to_le_bytes())?;
    h.write_all(&(key.len() as u32).to_le_bytes())?;
    h.write_all(key.as_bytes())?;
    h.write_all(&(tokens.len() as u32).to_le_bytes())?;
    let mut buf = Vec::with_capacity(tokens.len() * 4);
    for t in tokens {
        buf.extend_from_slice(&t.0.to_le_bytes());
    }
    h.write_all(&buf)?;
    h.write_all(&(state.len() as u64).to_le_bytes())?;
    h.write_all(state)?;
    let digest = h.hash.finalize();
    let mut w = h.inner;
    w.write_all(&digest)?;
    Ok(w)
}

fn u32_of<R: Read>(r: &mut R) -> io::Result<u32> {
    let mut b = [0; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn head<R: Read>(r: &mut R, key: &str) -> Result<Vec<LlamaToken>, FileError> {
    let mut magic = [0; 4];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(FileError::Magic);
    }
    let format = u32_of(r)?;
    if format != FORMAT {
        return Err(FileError::Format(format));
    }
    let key_len = u32_of(r)?;
    if key_len > MAX_KEY {
        return Err(FileError::Bounds("key"));
    }
    let mut k = vec![0; key_len as usize];
    r.read_exact(&mut k)?;
    if k != key.as_bytes() {
        return Err(FileError::Key);
    }
    let n = u32_of(r)?;
    if n > MAX_TOKENS {
        return Err(FileError::Bounds("tokens"));
    }
    let mut raw = vec![0; n as usize * 4];
    r.read_exact(&mut raw)?;
    Ok(raw.chunks_exact(4).map(|c| LlamaToken(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect())
}

/// Reads only the header: the tokens an entry holds, if it was written under `key`. The state
/// and checksum are not read (see [`read_entry`]).
pub fn read_tokens<R: Read>(mut r: R, key: &str) -> Result<Vec<LlamaToken>, FileError> {
    head(&mut r, key)
}

/// Reads and verifies a whole entry of at most `max_len` bytes: its tokens and its state.
pub fn read_entry<R: Read>(r: R, key: &str, max_len: u64) -> Result<(Vec<LlamaToken>, Vec<u8>), FileError> {
    let mut v = Verifying { inner: r, hash: Sha256::new() };
    let tokens = head(&mut v, key)?;
    let mut b = [0; 8];
    v.read_exact(&mut b)?;
    let len = u64::from_le_bytes(b);
    if len > max_len {
        return Err(FileError::Bounds("state"));
    }
    let mut state = vec![0; len as usize];
    v.read_exact(&mut state)?;
    let digest = v.hash.finalize();
    let mut stored = [0; 32];
    v.inner.read_exact(&mut stored)?;
    if stored[..] != digest[..] {
        return Err(FileError::Checksum);
    }
    Ok((tokens, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> (Vec<LlamaToken>, Vec<u8>, Vec<u8>) {
        let tokens: Vec<_> = (0..50).map(LlamaToken).collect();
        let state: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let bytes = write_entry(Vec::new(), "model-a ctx512", &tokens, &state).unwrap();
        (tokens, state, bytes)
    }

    #[test]
    fn round_trip() {
        let (tokens, state, bytes) = entry();
        assert_eq!(read_tokens(&bytes[..], "model-a ctx512").unwrap(), tokens);
        let (t, s) = read_entry(&bytes[..], "model-a ctx512", 1 << 20).unwrap();
        assert_eq!((t, s), (tokens, state));
    }

    #[test]
    fn every_truncation_is_refused() {
        let (_, _, bytes) = entry();
        for cut in [0, 3, 10, 30, 250, bytes.len() - 40, bytes.len() - 1] {
            assert!(read_entry(&bytes[..cut], "model-a ctx512", 1 << 20).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let (_, _, bytes) = entry();
        for at in (0..bytes.len()).step_by(37).chain([bytes.len() - 1]) {
            let mut b = bytes.clone();
            b[at] ^= 0x10;
            assert!(read_entry(&b[..], "model-a ctx512", 1 << 20).is_err(), "flip at {at}");
        }
    }

    #[test]
    fn another_key_or_a_huge_claim_is_refused() {
        let (_, _, bytes) = entry();
        assert!(matches!(read_entry(&bytes[..], "model-b ctx512", 1 << 20), Err(FileError::Key)));
        assert!(matches!(read_tokens(&bytes[..], "model-a ctx1024"), Err(FileError::Key)));
        assert!(matches!(read_entry(&bytes[..], "model-a ctx512", 999), Err(FileError::Bounds("state"))));
        let mut b = bytes.clone();
        b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(read_tokens(&b[..], "model-a ctx512"), Err(FileError::Bounds("key"))));
        assert!(matches!(read_tokens(&b"GGUF...."[..], "k"), Err(FileError::Magic)));
    }
}
