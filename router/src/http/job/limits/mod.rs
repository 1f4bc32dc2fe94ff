//! Bounds on what a constraint may ask of the worker, checked before it gets there. A JSON
//! schema is turned into a grammar and a grammar compiled and applied by llama.cpp, in calls
//! that cannot be interrupted; llama.cpp's converter is cubic in an object's optional
//! properties, its grammar parser copies a literal once per repetition and recurses once per
//! bracket, and its matcher keeps a parse stack per way of matching (see [`shape`]). These
//! limits keep each well under a second and a few MiB, far above what real schemas and grammars
//! use; the worker's sampling budget bounds whatever gets past them. Pure functions.

mod gbnf;
mod pattern;
mod shape;

use serde_json::Value;

/// The longest grammar or schema text, in bytes, as it is sent to the worker.
pub const MAX_CONSTRAINT_BYTES: usize = model_bucket_shared::protocol::MAX_CONSTRAINT_BYTES;
/// JSON values in one schema.
pub const MAX_SCHEMA_NODES: usize = 4096;
/// Properties of one object schema.
pub const MAX_PROPERTIES: usize = 128;
/// Nesting of a schema or of a grammar's brackets.
pub const MAX_DEPTH: usize = 32;
/// The largest repetition count (`{m,n}`) in a grammar.
pub const MAX_REPEAT: u64 = 256;
/// The longest GBNF grammar, in bytes.
pub const MAX_GRAMMAR_BYTES: usize = 16 * 1024;

/// Checks a schema's shape (its text length is checked on the text sent, see [`text`]).
pub fn schema(v: &Value) -> Result<(), String> {
    let mut nodes = 0;
    walk(v, 0, &mut nodes)
}

fn walk(v: &Value, depth: usize, nodes: &mut usize) -> Result<(), String> {
    *nodes += 1;
    if *nodes > MAX_SCHEMA_NODES {
        return Err(format!("the JSON schema has more than {MAX_SCHEMA_NODES} values"));
    }
    if depth > MAX_DEPTH {
        return Err(format!("the JSON schema nests deeper than {MAX_DEPTH} levels"));
    }
    match v {
        Value::Array(items) => items.iter().try_for_each(|x| walk(x, depth + 1, nodes)),
        Value::Object(o) => {
            if let Some(Value::String(p)) = o.get("pattern") {
                let what =
                    |e: String| format!("the JSON schema's pattern {:?}: {e}", p.chars().take(64).collect::<String>());
                shape::check(&pattern::rules(p).map_err(what)?).map_err(what)?;
            }
            if let Some(Value::Object(p)) = o.get("properties") {
                if p.len() > MAX_PROPERTIES {
                    return Err(format!(
                        "an object in the JSON schema has {} properties; at most {MAX_PROPERTIES} are allowed",
                        p.len()
                    ));
                }
            }
            o.values().try_for_each(|x| walk(x, depth + 1, nodes))
        }
        _ => Ok(()),
    }
}

/// Checks the length of a constraint's text as sent to the worker.
pub fn text(t: &str, what: &str) -> Result<(), String> {
    if t.len() > MAX_CONSTRAINT_BYTES {
        return Err(format!("the {what} is {} bytes; at most {MAX_CONSTRAINT_BYTES} are allowed", t.len()));
    }
    Ok(())
}

/// Checks a GBNF grammar's size, bracket nesting and repetition counts.
pub fn grammar(g: &str) -> Result<(), String> {
    if g.len() > MAX_GRAMMAR_BYTES {
        return Err(format!("the grammar is {} bytes; at most {MAX_GRAMMAR_BYTES} are allowed", g.len()));
    }
    let mut depth = 0usize;
    let mut chars = g.chars();
    while let Some(c) = chars.next() {
        match c {
            // Literals, character classes and tokens: skip to their end, escapes included (as
            // the shape's reader does, see [`gbnf`]).
            '"' | '[' | '<' => {
                let close = match c {
                    '"' => '"',
                    '[' => ']',
                    _ => '>',
                };
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == close {
                        break;
                    }
                }
            }
            // As llama.cpp reads it, a comment ends at `\n` or `\r`.
            '#' => {
                for d in chars.by_ref() {
                    if d == '\n' || d == '\r' {
                        break;
                    }
                }
            }
            '(' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!("the grammar nests brackets deeper than {MAX_DEPTH} levels"));
                }
            }
            ')' => depth = depth.saturating_sub(1),
            '{' => {
                let body: String = chars.by_ref().take_while(|&d| d != '}').collect();
                for n in body.split(',') {
                    let n = n.trim();
                    if !n.is_empty() && n.parse::<u64>().map_or(true, |n| n > MAX_REPEAT) {
                        return Err(format!("a repetition count in the grammar is above {MAX_REPEAT}: {{{body}}}"));
                    }
                }
            }
            _ => {}
        }
    }
    shape::check(&gbnf::rules(g)?).map_err(|e| format!("the grammar: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ordinary_schemas_pass() {
        let s = json!({"type": "object", "properties": {"name": {"type": "string", "maxLength": 40},
            "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["name"]});
        assert!(schema(&s).is_ok());
    }

    #[test]
    fn wide_deep_or_huge_schemas_fail() {
        let wide: serde_json::Map<String, Value> = (0..129).map(|i| (format!("p{i}"), json!({}))).collect();
        assert!(schema(&json!({"type": "object", "properties": wide})).unwrap_err().contains("properties"));
        let mut deep = json!({"type": "string"});
        for _ in 0..40 {
            deep = json!({"type": "array", "items": deep});
        }
        assert!(schema(&deep).unwrap_err().contains("deeper"));
        let huge = Value::Array((0..5000).map(|i| json!(i)).collect());
        assert!(schema(&json!({"enum": huge})).unwrap_err().contains("values"));
        assert!(text(&"x".repeat(MAX_CONSTRAINT_BYTES + 1), "JSON schema").is_err());
    }

    #[test]
    fn the_limits_are_what_the_readme_states() {
        // "a JSON schema of 64 KiB or a grammar of 16 KiB"
        assert_eq!((MAX_CONSTRAINT_BYTES, MAX_GRAMMAR_BYTES), (64 << 10, 16 << 10));
    }

    #[test]
    fn grammars_are_bounded() {
        assert!(grammar(r#"root ::= ("yes" | "no") "." [a-z]{1,3} "{999}" # {999}"#).is_ok());
        assert!(grammar(r#"root ::= "a"{1000}"#).unwrap_err().contains("repetition"));
        assert!(grammar(r#"root ::= "a"{2,9999}"#).is_err());
        assert!(grammar(r#"root ::= "a"{x}"#).is_err());
        let nested = format!("root ::= {}\"a\"{}", "(".repeat(40), ")".repeat(40));
        assert!(grammar(&nested).unwrap_err().contains("brackets"));
        assert!(grammar(&"x".repeat(MAX_GRAMMAR_BYTES + 1)).is_err());
        // A comment ends at `\r` too: a count after it is read.
        assert!(grammar("root ::= \"a\" # c\r\"b\"{1999}").unwrap_err().contains("repetition"));
        // The two payloads that held a model for everyone.
        assert!(grammar("root ::= x \"!\"\nx ::= (\"a\" x x)?").unwrap_err().contains("twice"));
        let s = serde_json::json!({"type": "string", "pattern": "^((a?){0,44}){0,44}$"});
        assert!(schema(&s).unwrap_err().contains("empty string"));
        assert!(schema(&serde_json::json!({"type": "string", "pattern": "^([a-z]+\\.)*$"})).is_ok());
        // Brackets inside literals and classes do not count.
        assert!(grammar(&format!("root ::= \"{}\" [(]", "(".repeat(100))).is_ok());
    }
}
