//! JSON written the way Python's `json.dumps(x, ensure_ascii=False)` writes it, for chat
//! templates' `tojson`: Hugging Face renders templates with that filter, so tool lists and call
//! arguments reach the model as it saw them in training (`{"city": "Oslo"}`, keys in their
//! given order, no HTML escaping), as llama.cpp's template engine renders them too.

use serde_json::ser::Formatter;
use std::io::{self, Write};

/// `json.dumps(v, ensure_ascii=False, indent=indent)`.
pub fn dumps(v: &serde_json::Value, indent: Option<usize>) -> String {
    let mut out = Vec::with_capacity(128);
    let f = PyFormatter { indent: indent.map(|n| vec![b' '; n]), level: 0, has_value: false };
    let mut ser = serde_json::Serializer::with_formatter(&mut out, f);
    serde::Serialize::serialize(v, &mut ser).expect("a JSON value serializes");
    String::from_utf8(out).expect("JSON is UTF-8")
}

/// Separators `", "` and `": "` on one line; with an indent, one item per line, `","` at line
/// ends, as Python does.
struct PyFormatter {
    indent: Option<Vec<u8>>,
    level: usize,
    has_value: bool,
}

impl PyFormatter {
    fn newline<W: ?Sized + Write>(&self, w: &mut W) -> io::Result<()> {
        if let Some(unit) = &self.indent {
            w.write_all(b"\n")?;
            for _ in 0..self.level {
                w.write_all(unit)?;
            }
        }
        Ok(())
    }

    fn item<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if !first {
            w.write_all(if self.indent.is_some() { b"," } else { b", " })?;
        }
        self.newline(w)
    }

    fn open<W: ?Sized + Write>(&mut self, w: &mut W, c: &[u8]) -> io::Result<()> {
        self.level += 1;
        self.has_value = false;
        w.write_all(c)
    }

    fn close<W: ?Sized + Write>(&mut self, w: &mut W, c: &[u8]) -> io::Result<()> {
        self.level -= 1;
        if self.has_value {
            self.newline(w)?;
        }
        w.write_all(c)
    }
}

impl Formatter for PyFormatter {
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.open(w, b"[")
    }

    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"]")
    }

    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.item(w, first)
    }

    fn end_array_value<W: ?Sized + Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.open(w, b"{")
    }

    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"}")
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.item(w, first)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::dumps;
    use serde_json::json;

    #[test]
    fn one_line_like_python() {
        let v = json!({"b": 1, "a": [1, 2.5, "x<y>'é"], "e": {}, "f": [], "n": null, "t": true});
        assert_eq!(dumps(&v, None), r#"{"b": 1, "a": [1, 2.5, "x<y>'é"], "e": {}, "f": [], "n": null, "t": true}"#);
        assert_eq!(dumps(&json!("line\n\"q\""), None), r#""line\n\"q\"""#);
    }

    #[test]
    fn indented_like_python() {
        let v = json!({"b": 1, "a": [1, {"c": []}]});
        assert_eq!(dumps(&v, Some(2)), "{\n  \"b\": 1,\n  \"a\": [\n    1,\n    {\n      \"c\": []\n    }\n  ]\n}");
    }
}
