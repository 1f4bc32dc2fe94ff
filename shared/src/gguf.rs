//! A bounded reader for the GGUF header and key-value section.
//!
//! Only the header and the metadata are read, never tensor data; tensor infos (names and
//! shapes) only for adapters (`general.type = adapter`), which have few. Every length
//! read from the file is checked against the bytes that remain before anything is allocated,
//! so a corrupt or hostile file costs at most a few small allocations and ends in a
//! [`GgufError`], never a panic.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::Path;

/// `"GGUF"` read as a little-endian u32.
const MAGIC: [u8; 4] = *b"GGUF";
/// Longest key accepted, in bytes (the spec caps keys at 65535).
const MAX_KEY_LEN: u64 = 65_535;
/// Longest string value kept in memory, in bytes. Longer strings are skipped and recorded as
/// [`Value::Skipped`]; chat templates are a few KiB, so nothing useful is lost.
const MAX_KEPT_STRING: u64 = 1 << 20;
/// Arrays of strings with at most this many elements are kept (e.g. `general.tags`); larger
/// ones (tokenizer vocabularies) are skipped.
const MAX_KEPT_ARRAY: u64 = 64;
/// Most dimensions a tensor has (ggml's limit).
const MAX_DIMS: u32 = 4;
/// Longest tensor name accepted, in bytes (ggml's own limit is 64).
const MAX_TENSOR_NAME: u64 = 256;
/// Most key-values a header may have: real models have a few dozen, a hostile header millions.
const MAX_KV: u64 = 4096;
/// Most bytes of string values kept from one header, all keys together; past it strings are
/// skipped like over-long ones.
const MAX_KEPT_TOTAL: u64 = 8 << 20;

/// Whether the catalog has a use for key `key`: the general facts, the architecture's numbers,
/// the chat template and adapter facts. The tokenizer's arrays and anything else are skipped.
fn wanted(key: &str) -> bool {
    !key.starts_with("tokenizer.")
        || matches!(key, "tokenizer.chat_template" | "tokenizer.ggml.model" | "tokenizer.ggml.tokens")
}

/// The smallest encoding of one tensor info (name length, a 1-byte name, dimension count, one
/// dimension, type, offset).
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 1 + 4 + 8 + 4 + 8;
/// The smallest encoding of one key-value (8-byte key length, 1-byte key, 4-byte type, 1-byte
/// value), used to reject counts that the file cannot possibly hold.
const MIN_KV_BYTES: u64 = 14;

/// Why a file is not a readable GGUF model.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read file: {0}")]
    Io(#[from] io::Error),
    #[error("empty file (0 bytes)")]
    Empty,
    // The bytes themselves are never echoed: a caller may not read the file.
    #[error("not a GGUF file (it does not start with \"GGUF\")")]
    BadMagic([u8; 4]),
    #[error("unsupported GGUF version {0} (2 and 3 are supported)")]
    Version(u32),
    #[error("truncated: {0}")]
    Truncated(String),
    #[error("corrupt header: {0}")]
    Corrupt(String),
}

/// One metadata value. Scalars are kept as they are; large arrays and very long strings are
/// summarised so that reading a header never costs more than a few MiB.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(String),
    /// A small array of strings (at most 64 elements).
    StrArray(Vec<String>),
    /// An array that was not kept: element type code and length.
    Array {
        elem_type: u32,
        len: u64,
    },
    /// A string longer than 1 MiB that was skipped; its length in bytes.
    Skipped(u64),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U64(v) => Some(v),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }
}

/// One tensor's name and shape (ggml order: the first dimension varies fastest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
}

/// The parsed header of a GGUF file.
#[derive(Debug, Clone, Default)]
pub struct GgufHeader {
    pub version: u32,
    pub tensor_count: u64,
    /// All key-values, by key.
    pub kv: BTreeMap<String, Value>,
    /// The tensors' names and shapes: read for adapters only, empty otherwise.
    pub tensors: Vec<TensorInfo>,
}

impl GgufHeader {
    pub fn str(&self, key: &str) -> Option<&str> {
        self.kv.get(key).and_then(Value::as_str)
    }

    pub fn u64(&self, key: &str) -> Option<u64> {
        self.kv.get(key).and_then(Value::as_u64)
    }

    pub fn has(&self, key: &str) -> bool {
        self.kv.contains_key(key)
    }
}

/// Reads the header of the GGUF file at `path`.
pub fn read_header(path: &Path) -> Result<GgufHeader, GgufError> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    read_header_from(file, len)
}

/// Reads a GGUF header from `src`, whose total length is `len` bytes.
pub fn read_header_from<R: Read + Seek>(src: R, len: u64) -> Result<GgufHeader, GgufError> {
    if len == 0 {
        return Err(GgufError::Empty);
    }
    let mut r = Bounded { src: BufReader::with_capacity(64 * 1024, src), pos: 0, len, kept: 0 };
    let mut magic = [0u8; 4];
    r.exact(&mut magic, "magic")?;
    if magic != MAGIC {
        return Err(GgufError::BadMagic(magic));
    }
    let version = r.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::Version(version));
    }
    let tensor_count = r.u64("tensor count")?;
    let kv_count = r.u64("key-value count")?;
    if kv_count > r.remaining() / MIN_KV_BYTES {
        return Err(GgufError::Corrupt(format!("{kv_count} key-values cannot fit in a {len}-byte file")));
    }
    if kv_count > MAX_KV {
        return Err(GgufError::Corrupt(format!("{kv_count} key-values; at most {MAX_KV} are read")));
    }
    let mut kv = BTreeMap::new();
    for i in 0..kv_count {
        let key_len = r.u64("key length")?;
        if key_len == 0 || key_len > MAX_KEY_LEN {
            return Err(GgufError::Corrupt(format!("key {i} has length {key_len}")));
        }
        let key = r.string(key_len, "key")?;
        let ty = r.u32("value type")?;
        let value = r.value(ty, &key)?;
        if wanted(&key) {
            kv.insert(key, value);
        }
    }
    let mut h = GgufHeader { version, tensor_count, kv, tensors: Vec::new() };
    if h.str("general.type") == Some("adapter") {
        if tensor_count > r.remaining() / MIN_TENSOR_INFO_BYTES {
            return Err(GgufError::Corrupt(format!("{tensor_count} tensors cannot fit in a {len}-byte file")));
        }
        h.tensors.reserve(tensor_count as usize);
        for i in 0..tensor_count {
            h.tensors.push(r.tensor_info(i)?);
        }
    }
    Ok(h)
}

/// A reader that knows how many bytes remain and refuses lengths beyond them.
struct Bounded<R> {
    /// Buffered so that skipping over the many small strings of a vocabulary costs no syscalls.
    src: BufReader<R>,
    pos: u64,
    len: u64,
    /// String bytes kept so far (see [`MAX_KEPT_TOTAL`]).
    kept: u64,
}

impl<R: Read + Seek> Bounded<R> {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn need(&self, n: u64, what: &str) -> Result<(), GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated(format!(
                "{what} needs {n} bytes at offset {}, file is {} bytes",
                self.pos, self.len
            )));
        }
        Ok(())
    }

    fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), GgufError> {
        self.need(buf.len() as u64, what)?;
        self.src.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => GgufError::Truncated(format!("{what}: end of file")),
            _ => GgufError::Io(e),
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), GgufError> {
        self.need(n, what)?;
        self.src.seek_relative(n as i64)?;
        self.pos += n;
        Ok(())
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        let mut b = [0u8; 4];
        self.exact(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        let mut b = [0u8; 8];
        self.exact(&mut b, what)?;
        Ok(u64::from_le_bytes(b))
    }

    fn string(&mut self, n: u64, what: &str) -> Result<String, GgufError> {
        self.need(n, what)?;
        let mut buf = vec![0u8; n as usize];
        self.exact(&mut buf, what)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Reads tensor info `i`: name, dimensions, then type and data offset (not kept).
    fn tensor_info(&mut self, i: u64) -> Result<TensorInfo, GgufError> {
        let n = self.u64("tensor name length")?;
        if n == 0 || n > MAX_TENSOR_NAME {
            return Err(GgufError::Corrupt(format!("tensor {i} has a name of {n} bytes")));
        }
        let name = self.string(n, "tensor name")?;
        let n_dims = self.u32("tensor dimensions")?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::Corrupt(format!("tensor {name:?} has {n_dims} dimensions")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64("tensor dimension")?);
        }
        self.skip(4 + 8, "tensor type and offset")?;
        Ok(TensorInfo { name, dims })
    }

    /// Reads a length-prefixed string value, skipping it when longer than the kept limit.
    fn str_value(&mut self, key: &str) -> Result<Value, GgufError> {
        let n = self.u64(key)?;
        if n > MAX_KEPT_STRING || self.kept + n > MAX_KEPT_TOTAL {
            self.skip(n, key)?;
            return Ok(Value::Skipped(n));
        }
        self.kept += n;
        Ok(Value::Str(self.string(n, key)?))
    }

    fn value(&mut self, ty: u32, key: &str) -> Result<Value, GgufError> {
        let mut b8 = [0u8; 8];
        Ok(match ty {
            0 | 1 | 7 => {
                self.exact(&mut b8[..1], key)?;
                match ty {
                    0 => Value::U64(b8[0] as u64),
                    1 => Value::I64(b8[0] as i8 as i64),
                    _ => Value::Bool(b8[0] != 0),
                }
            }
            2 | 3 => {
                self.exact(&mut b8[..2], key)?;
                let v = u16::from_le_bytes([b8[0], b8[1]]);
                if ty == 2 {
                    Value::U64(v as u64)
                } else {
                    Value::I64(v as i16 as i64)
                }
            }
            4..=6 => {
                let v = self.u32(key)?;
                match ty {
                    4 => Value::U64(v as u64),
                    5 => Value::I64(v as i32 as i64),
                    _ => Value::F64(f32::from_bits(v) as f64),
                }
            }
            8 => self.str_value(key)?,
            9 => self.array(key)?,
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(self.u64(key)? as i64),
            12 => Value::F64(f64::from_bits(self.u64(key)?)),
            other => return Err(GgufError::Corrupt(format!("key {key:?} has unknown type {other}"))),
        })
    }

    fn array(&mut self, key: &str) -> Result<Value, GgufError> {
        let elem_type = self.u32(key)?;
        let len = self.u64(key)?;
        let fixed = match elem_type {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            8 => None,
            other => return Err(GgufError::Corrupt(format!("array {key:?} has unsupported element type {other}"))),
        };
        if let Some(size) = fixed {
            let bytes = len
                .checked_mul(size)
                .ok_or_else(|| GgufError::Corrupt(format!("array {key:?} claims {len} elements")))?;
            self.skip(bytes, key)?;
            return Ok(Value::Array { elem_type, len });
        }
        // Strings: every element costs at least its 8-byte length.
        if len > self.remaining() / 8 {
            return Err(GgufError::Corrupt(format!("array {key:?} claims {len} strings, more than the file can hold")));
        }
        if len <= MAX_KEPT_ARRAY {
            let mut items = Vec::with_capacity(len as usize);
            for _ in 0..len {
                match self.str_value(key)? {
                    Value::Str(s) => items.push(s),
                    _ => return Ok(Value::Array { elem_type, len }),
                }
            }
            return Ok(Value::StrArray(items));
        }
        for _ in 0..len {
            let n = self.u64(key)?;
            self.skip(n, key)?;
        }
        Ok(Value::Array { elem_type, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Builds a GGUF header in memory: version 3, the given key-values (already encoded).
    pub(crate) fn build(kv_count: u64, body: &[u8]) -> Vec<u8> {
        let mut v = b"GGUF".to_vec();
        v.extend(3u32.to_le_bytes());
        v.extend(0u64.to_le_bytes());
        v.extend(kv_count.to_le_bytes());
        v.extend(body);
        v
    }

    fn kv_str(key: &str, val: &str) -> Vec<u8> {
        let mut v = (key.len() as u64).to_le_bytes().to_vec();
        v.extend(key.as_bytes());
        v.extend(8u32.to_le_bytes());
        v.extend((val.len() as u64).to_le_bytes());
        v.extend(val.as_bytes());
        v
    }

    fn parse(bytes: &[u8]) -> Result<GgufHeader, GgufError> {
        read_header_from(Cursor::new(bytes), bytes.len() as u64)
    }

    #[test]
    fn reads_strings_and_ints() {
        let mut body = kv_str("general.architecture", "llama");
        body.extend((20u64).to_le_bytes());
        body.extend(b"llama.context_length");
        body.extend(4u32.to_le_bytes());
        body.extend(8192u32.to_le_bytes());
        let h = parse(&build(2, &body)).unwrap();
        assert_eq!(h.str("general.architecture"), Some("llama"));
        assert_eq!(h.u64("llama.context_length"), Some(8192));
    }

    #[test]
    fn a_key_value_bomb_is_refused_and_kept_strings_are_bounded_in_all() {
        let body: Vec<u8> = (0..MAX_KV + 1).flat_map(|i| kv_str(&format!("k{i}"), "v")).collect();
        let e = parse(&build(MAX_KV + 1, &body)).unwrap_err();
        assert!(e.to_string().contains("at most 4096"), "{e}");
        // Ten strings of 1 MiB: eight are kept, then the total is reached.
        let big = "x".repeat(1 << 20);
        let body: Vec<u8> = (0..10).flat_map(|i| kv_str(&format!("general.k{i}"), &big)).collect();
        let h = parse(&build(10, &body)).unwrap();
        let kept = (0..10).filter(|i| h.str(&format!("general.k{i}")).is_some()).count();
        assert_eq!(kept, 8);
        // What the catalog never reads is not kept at all.
        let mut body = kv_str("tokenizer.ggml.merges_note", "x");
        body.extend(kv_str("tokenizer.chat_template", "{{ x }}"));
        let h = parse(&build(2, &body)).unwrap();
        assert!(!h.has("tokenizer.ggml.merges_note") && h.has("tokenizer.chat_template"));
    }

    #[test]
    fn rejects_empty_and_bad_magic() {
        assert!(matches!(parse(b""), Err(GgufError::Empty)));
        assert!(matches!(parse(b"GGML0000000000000000"), Err(GgufError::BadMagic(_))));
        // The first bytes of a file that is not a model are not told to the caller.
        let e = parse(b"SECRET-KEY=0123456789").unwrap_err().to_string();
        assert!(!e.contains("53") && !e.contains("SECR") && !e.contains("83"), "{e}");
        assert!(matches!(parse(b"GG"), Err(GgufError::Truncated(_))));
    }

    #[test]
    fn rejects_absurd_counts_without_allocating() {
        // 2^60 key-values.
        assert!(matches!(parse(&build(1 << 60, &[])), Err(GgufError::Corrupt(_))));
        // A string value claiming 2^50 bytes.
        let mut body = 3u64.to_le_bytes().to_vec();
        body.extend(b"abc");
        body.extend(8u32.to_le_bytes());
        body.extend((1u64 << 50).to_le_bytes());
        assert!(matches!(parse(&build(1, &body)), Err(GgufError::Truncated(_))));
        // A key claiming 2^50 bytes.
        let body = (1u64 << 50).to_le_bytes().to_vec();
        assert!(matches!(parse(&build(1, &body)), Err(GgufError::Corrupt(_))));
        // An array of 2^62 u64s.
        let mut body = 1u64.to_le_bytes().to_vec();
        body.extend(b"a");
        body.extend(9u32.to_le_bytes());
        body.extend(10u32.to_le_bytes());
        body.extend((1u64 << 62).to_le_bytes());
        assert!(parse(&build(1, &body)).is_err());
        // An array of 2^60 strings.
        let mut body = 1u64.to_le_bytes().to_vec();
        body.extend(b"a");
        body.extend(9u32.to_le_bytes());
        body.extend(8u32.to_le_bytes());
        body.extend((1u64 << 60).to_le_bytes());
        assert!(matches!(parse(&build(1, &body)), Err(GgufError::Corrupt(_))));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let mut body = kv_str("general.name", "x");
        body.extend(kv_str("tokenizer.chat_template", "{{ messages }}"));
        let full = build(2, &body);
        assert!(parse(&full).is_ok());
        for cut in 0..full.len() {
            assert!(parse(&full[..cut]).is_err(), "prefix of {cut} bytes parsed");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        // A tiny deterministic generator keeps the test dependency-free and repeatable.
        let mut s: u64 = 0x9e3779b97f4a7c15;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut body = kv_str("general.name", "x");
        body.extend(kv_str("general.basename", "y"));
        let good = build(2, &body);
        for _ in 0..20_000 {
            let mut b = good.clone();
            for _ in 0..(next() % 4 + 1) {
                let i = (next() as usize) % b.len();
                b[i] = next() as u8;
            }
            let _ = parse(&b);
        }
    }

    /// An adapter header with `tensor_count` claimed and the tensor infos in `tensors`.
    fn adapter(tensor_count: u64, tensors: &[u8]) -> Vec<u8> {
        let mut v = build(1, &kv_str("general.type", "adapter"));
        v[8..16].copy_from_slice(&tensor_count.to_le_bytes());
        v.extend(tensors);
        v
    }

    fn tensor(name: &str, dims: &[u64]) -> Vec<u8> {
        let mut v = (name.len() as u64).to_le_bytes().to_vec();
        v.extend(name.as_bytes());
        v.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            v.extend(d.to_le_bytes());
        }
        v.extend(0u32.to_le_bytes());
        v.extend(0u64.to_le_bytes());
        v
    }

    #[test]
    fn adapters_tensor_shapes_are_read_and_bounded() {
        let mut t = tensor("blk.0.attn_q.weight.lora_a", &[576, 4]);
        t.extend(tensor("blk.0.attn_q.weight.lora_b", &[4, 576]));
        let h = parse(&adapter(2, &t)).unwrap();
        assert_eq!(h.tensors.len(), 2);
        assert_eq!(h.tensors[1], TensorInfo { name: "blk.0.attn_q.weight.lora_b".into(), dims: vec![4, 576] });
        assert!(matches!(parse(&adapter(u64::MAX, &t)), Err(GgufError::Corrupt(_))), "a count the file cannot hold");
        assert!(matches!(parse(&adapter(3, &t)), Err(GgufError::Truncated(_))));
        let five_dims = tensor("x", &[1, 1, 1, 1, 1]);
        assert!(matches!(parse(&adapter(1, &five_dims)), Err(GgufError::Corrupt(_))));
        // A model's tensor infos are not read.
        assert!(parse(&build(1, &kv_str("general.type", "model"))).unwrap().tensors.is_empty());
    }
}
