//! What a successful answer must look like for its request, checked from the answer alone.
//!
//! Free-text requests of a stress run ban every end-of-generation token and fix `max_tokens`,
//! so the only honest success is `length` with exactly that many tokens: an answer cut short
//! and labelled `stop` (or with fewer tokens) is wrong, not a success. Constrained requests,
//! where a ban could leave the grammar no legal token, must end `stop` with a JSON document.

/// What the answer to one request must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Any finish reason will do (a readiness probe, not a counted request).
    Finished,
    /// `finish_reason: "length"` and exactly this many completion tokens.
    Length(u32),
    /// `finish_reason: "stop"` and a text that parses as a JSON object with these keys.
    JsonObject(&'static [&'static str]),
}

/// The parts of an answer [`check`] looks at, gathered from a whole body or a stream's events.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Answer {
    pub finish_reason: Option<String>,
    /// `usage.completion_tokens`, where the answer carries usage.
    pub completion_tokens: Option<u64>,
    /// The first choice's text (or message content), streamed deltas joined.
    pub text: String,
}

impl Answer {
    /// Folds one JSON object of the answer in: a whole body, or one stream event.
    pub fn add(&mut self, v: &serde_json::Value) {
        if let Some(c) = v["choices"].as_array().and_then(|c| c.first()) {
            for t in [&c["text"], &c["message"]["content"], &c["delta"]["content"]] {
                if let Some(t) = t.as_str() {
                    self.text.push_str(t);
                }
            }
            if let Some(f) = c["finish_reason"].as_str() {
                self.finish_reason = Some(f.to_string());
            }
        }
        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
            self.completion_tokens = Some(n);
        }
    }
}

/// Whether `a` is what `expect` asks for: `Err` says how it is not.
pub fn check(expect: Expect, a: &Answer) -> Result<(), String> {
    let finish = a.finish_reason.as_deref();
    match expect {
        Expect::Finished if finish.is_some() => Ok(()),
        Expect::Finished => Err("no finish reason".into()),
        Expect::Length(n) => match (finish, a.completion_tokens) {
            (Some("length"), Some(t)) if t == u64::from(n) => Ok(()),
            (f, t) => Err(format!("asked for exactly {n} tokens with EOS banned, got finish {f:?} after {t:?} tokens")),
        },
        Expect::JsonObject(keys) => {
            let parsed = serde_json::from_str::<serde_json::Value>(&a.text);
            match (finish, parsed) {
                (Some("stop"), Ok(v)) if keys.iter().all(|k| v.get(k).is_some()) && v.is_object() => Ok(()),
                (f, _) => Err(format!("asked for a JSON object with {keys:?}, got finish {f:?} and {:?}", a.text)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(bodies: &[serde_json::Value]) -> Answer {
        let mut a = Answer::default();
        bodies.iter().for_each(|b| a.add(b));
        a
    }

    #[test]
    fn a_length_answer_needs_exactly_its_tokens() {
        let whole = |f: &str, n: u64| {
            answer(&[json!({"choices":[{"text":"x","finish_reason":f}],"usage":{"completion_tokens":n}})])
        };
        assert_eq!(check(Expect::Length(8), &whole("length", 8)), Ok(()));
        // Cut short and labelled complete: not a success.
        assert!(check(Expect::Length(8), &whole("stop", 3)).is_err());
        assert!(check(Expect::Length(8), &whole("length", 7)).is_err());
        // No usage: nothing proves the count.
        let no_usage = answer(&[json!({"choices":[{"text":"x","finish_reason":"length"}]})]);
        assert!(check(Expect::Length(8), &no_usage).is_err());
    }

    #[test]
    fn stream_events_are_joined() {
        let a = answer(&[
            json!({"choices":[{"delta":{"content":"{\"mood\":"},"finish_reason":null}]}),
            json!({"choices":[{"delta":{"content":"\"calm\"}"},"finish_reason":null}]}),
            json!({"choices":[{"delta":{},"finish_reason":"stop"}]}),
            json!({"choices":[],"usage":{"completion_tokens":6}}),
        ]);
        assert_eq!(a.text, r#"{"mood":"calm"}"#);
        assert_eq!(a.completion_tokens, Some(6));
        assert_eq!(check(Expect::JsonObject(&["mood"]), &a), Ok(()));
        assert!(check(Expect::JsonObject(&["mood", "waves"]), &a).is_err(), "a key missing");
        assert!(check(Expect::Length(6), &a).is_err());
    }

    #[test]
    fn a_json_answer_must_close() {
        let cut = answer(&[json!({"choices":[{"message":{"content":"{\"mood\":\"ca"},"finish_reason":"length"}]})]);
        assert!(check(Expect::JsonObject(&[]), &cut).is_err());
        let not_object = answer(&[json!({"choices":[{"message":{"content":"[1]"},"finish_reason":"stop"}]})]);
        assert!(check(Expect::JsonObject(&[]), &not_object).is_err());
        assert!(check(Expect::Finished, &cut).is_ok());
        assert!(check(Expect::Finished, &Answer::default()).is_err());
    }
}
