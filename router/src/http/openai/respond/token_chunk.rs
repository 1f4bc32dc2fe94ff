//! The text chunk of one choice of a stream, rendered once around a marker so that each token
//! only escapes its text between a fixed head and tail (no JSON tree per token).

use super::Meta;

/// The bytes of a text chunk before and after its (JSON-escaped) text.
pub struct TokenChunk {
    head: String,
    tail: String,
}

impl TokenChunk {
    pub fn new(meta: &Meta, index: usize) -> TokenChunk {
        const MARK: &str = "\u{0}token\u{0}";
        let full = serde_json::to_string(&meta.text_chunk(index, MARK, None)).expect("a chunk encodes");
        let encoded = serde_json::to_string(MARK).expect("a string encodes");
        let (head, tail) = full.split_once(&encoded).expect("the marker is in the chunk");
        TokenChunk { head: head.to_string(), tail: tail.to_string() }
    }

    /// The chunk for `text`, written into `buf` (reused between tokens).
    pub fn render<'b>(&self, text: &str, buf: &'b mut Vec<u8>) -> &'b str {
        buf.clear();
        buf.extend_from_slice(self.head.as_bytes());
        serde_json::to_writer(&mut *buf, text).expect("writing to a Vec cannot fail");
        buf.extend_from_slice(self.tail.as_bytes());
        std::str::from_utf8(buf).expect("JSON is UTF-8")
    }
}
