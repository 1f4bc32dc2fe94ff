//! Hostile requests for the live fuzz run: valid chat and completion bodies, mutated as text
//! (cut, spliced, bytes flipped or inserted) or as JSON (a field given another type, an extreme
//! number, a huge or deep value, a field dropped), sent with a few header variants. Seeded and
//! deterministic: a failing case is reproduced by its seed.

use serde_json::{json, Value};

/// A small, fast, seeded generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Case {
    pub path: &'static str,
    /// Extra header lines (each ending in `\r\n`), `Host` included.
    pub headers: String,
    pub body: Vec<u8>,
}

fn seed_body(rng: &mut Rng, model: &str) -> (&'static str, Value) {
    let common = json!({
        "model": model, "max_tokens": 4, "temperature": 0.7, "top_p": 0.9, "top_k": 20, "min_p": 0.05,
        "seed": 7, "stop": ["\n\n"], "presence_penalty": 0.1, "frequency_penalty": 0.1, "repeat_penalty": 1.1,
        "repeat_last_n": 64, "logit_bias": { "2": -100 }, "stream": true, "cache_prompt": true, "n": 1,
        "stream_options": { "include_usage": true },
    });
    let mut v = common.clone();
    if rng.below(2) == 0 {
        v["messages"] = json!([{ "role": "system", "content": "Be brief." }, { "role": "user", "content": [{ "type": "text", "text": "Hi there" }] }]);
        ("/v1/chat/completions", v)
    } else {
        v["prompt"] = json!("Once upon a time");
        ("/v1/completions", v)
    }
}

fn extreme(rng: &mut Rng) -> Value {
    match rng.below(16) {
        0 => json!(-1),
        1 => json!(0),
        2 => json!(2147483647),
        3 => json!(u64::MAX),
        4 => json!(-9.2e18),
        5 => json!(1e308),
        6 => json!(1e-320),
        7 => json!("NaN"),
        8 => Value::Null,
        9 => json!(true),
        10 => json!("x".repeat(1 + rng.below(20000))),
        11 => json!([1, "2", null, { "a": [] }]),
        12 => json!({ "nested": { "deeper": [[[[]]]] } }),
        13 => {
            // Deep, but within what a JSON parser allows.
            let depth = 1 + rng.below(100);
            let s = "[".repeat(depth) + &"]".repeat(depth);
            serde_json::from_str(&s).unwrap_or(Value::Null)
        }
        14 => json!("\u{0}\u{202e}é✓🦀"),
        _ => json!((0..rng.below(3000)).map(|i| i.to_string()).collect::<Vec<_>>()),
    }
}

/// A piece of a grammar or pattern: the atoms, groups and counts whose mixes make llama.cpp's
/// matcher explode, or pass.
fn piece(rng: &mut Rng, depth: usize) -> String {
    let atoms = ["\"a\"", "[a-z]", "[]", "[^]", "\"\"", "x", "<t>", "."];
    let counts = ["", "", "?", "*", "+", "{0,44}", "{1,3}", "{300}", "{2,}"];
    let atom = if depth < 4 && rng.below(3) == 0 {
        let n = 1 + rng.below(3);
        let inner: Vec<String> = (0..n).map(|_| piece(rng, depth + 1)).collect();
        format!("({})", inner.join(if rng.below(2) == 0 { " " } else { " | " }))
    } else {
        rng.pick(&atoms).to_string()
    };
    format!("{atom}{}", rng.pick(&counts))
}

/// A grammar or a JSON schema with a pattern, made of [`piece`]s: constrained sampling under
/// shapes the router refuses or lets through to the worker's helpers.
fn constraint(rng: &mut Rng) -> (&'static str, Value) {
    let body: Vec<String> = (0..1 + rng.below(3)).map(|_| piece(rng, 0)).collect();
    if rng.below(2) == 0 {
        let comment = *rng.pick(&["", "# note\r", "# note\n", "# {1999}\r"]);
        let g = format!("root ::= {comment}{} \"!\"\nx ::= {}", body.join(" "), piece(rng, 1));
        ("grammar", json!(g))
    } else {
        // The same pieces as a regular expression: literals unquoted, tokens dropped.
        let re: String = body.join("").replace('"', "").replace("<t>", "b");
        let schema = json!({ "type": "object", "properties": { "v": { "type": "string", "pattern": format!("^{re}$") } }, "required": ["v"] });
        ("response_format", json!({ "type": "json_schema", "json_schema": { "name": "v", "schema": schema } }))
    }
}

fn mutate_json(rng: &mut Rng, v: &mut Value) {
    let Some(obj) = v.as_object_mut() else { return };
    let keys: Vec<String> = obj.keys().cloned().collect();
    for _ in 0..1 + rng.below(3) {
        match rng.below(7) {
            6 => {
                let (k, c) = constraint(rng);
                obj.insert(k.into(), c);
            }
            0 => {
                let k = rng.pick(&keys).clone();
                obj.remove(&k);
            }
            1 | 2 => {
                let k = rng.pick(&keys).clone();
                obj.insert(k, extreme(rng));
            }
            3 => {
                // A field of a nested object or list.
                let target = rng.pick(&["messages", "stop", "logit_bias", "stream_options", "prompt"]);
                let value = extreme(rng);
                match obj.get_mut(*target) {
                    Some(Value::Array(a)) if !a.is_empty() => {
                        let i = rng.below(a.len());
                        a[i] = value;
                    }
                    Some(Value::Object(o)) => {
                        o.insert("role".into(), value.clone());
                        o.insert(rng.below(1000).to_string(), value);
                    }
                    _ => {
                        obj.insert(target.to_string(), value);
                    }
                }
            }
            4 => {
                let many: Vec<Value> =
                    (0..rng.below(200)).map(|i| json!({ "role": "user", "content": i.to_string() })).collect();
                obj.insert("messages".into(), Value::Array(many));
            }
            _ => {
                let k = format!("unknown_{}", rng.below(100));
                obj.insert(k, extreme(rng));
            }
        }
    }
    // Keep valid requests short: a stream answers as soon as its first token is out.
    if obj.get("stream").is_none_or(Value::is_boolean) {
        obj.insert("stream".into(), json!(true));
    }
}

fn mutate_bytes(rng: &mut Rng, b: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            b.push(b'{');
        }
        let at = rng.below(b.len());
        match rng.below(5) {
            0 => b.truncate(at),
            1 => b[at] ^= 1 << rng.below(8),
            2 => b.insert(at, *rng.pick(&[b'"', b'{', b'}', b'[', b']', b',', b':', b'\\', 0, 0xff, 0xc3])),
            3 => {
                let end = (at + rng.below(40)).min(b.len());
                b.drain(at..end);
            }
            _ => {
                let end = (at + rng.below(40)).min(b.len());
                let piece = b[at..end].to_vec();
                b.splice(at..at, piece);
            }
        }
    }
}

/// The `i`-th case of a run seeded with `seed`, for `model`.
pub fn case(seed: u64, i: u64, model: &str) -> Case {
    let mut rng = Rng::new(seed ^ i.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let (path, mut v) = seed_body(&mut rng, model);
    let body = match rng.below(3) {
        0 => {
            let mut b = serde_json::to_vec(&v).expect("encodes");
            mutate_bytes(&mut rng, &mut b);
            // Still JSON: keep it a stream, as the JSON mutations do.
            match serde_json::from_slice::<Value>(&b) {
                Ok(Value::Object(mut o)) if o.get("stream").is_none_or(Value::is_boolean) => {
                    o.insert("stream".into(), json!(true));
                    serde_json::to_vec(&o).expect("encodes")
                }
                _ => b,
            }
        }
        _ => {
            mutate_json(&mut rng, &mut v);
            serde_json::to_vec(&v).expect("encodes")
        }
    };
    // Most cases test the body; the rest the headers a page or another client may send.
    if rng.below(10) < 7 {
        return Case { path, headers: "Host: localhost\r\nContent-Type: application/json\r\n".into(), body };
    }
    let content_type = *rng.pick(&[
        "Content-Type: application/json\r\n",
        "Content-Type: application/json; charset=utf-8\r\n",
        "",
        "Content-Type: text/plain\r\n",
        "Content-Type: application/x-www-form-urlencoded\r\n",
        "Content-Type: application/jsonx\r\n",
    ]);
    let host = *rng.pick(&["localhost", "127.0.0.1", "[::1]", "evil.example", "localhost.evil.example"]);
    let origin = *rng.pick(&["", "", "", "Origin: http://evil.example\r\n", "Origin: null\r\n"]);
    let extra = *rng.pick(&["", "", "Authorization: Bearer nothing\r\n", "Accept: */*\r\n", "X-Junk: ab\r\n"]);
    Case { path, headers: format!("Host: {host}\r\n{content_type}{origin}{extra}"), body }
}
