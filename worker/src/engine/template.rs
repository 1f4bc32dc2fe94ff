//! Chat prompts: the GGUF's own Jinja `tokenizer.chat_template`, rendered the way llama-server
//! renders it by default (`--jinja`), or a named built-in template for models without one.

use minijinja::value::Kwargs;
use minijinja::{context, Environment, Error, ErrorKind, Value};
use model_bucket_shared::protocol::ChatMessage;

use super::{pyjson, tool_prompt};

/// Built-in templates for `--chat-template NAME`.
const NAMED: &[(&str, &str)] = &[
    (
        "chatml",
        "{% for m in messages %}{{ '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}{% endfor %}\
         {% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    ),
    (
        "gemma",
        "{{ bos_token }}{% for m in messages %}{% set role = 'model' if m.role == 'assistant' else 'user' %}\
         {{ '<start_of_turn>' + role + '\n' + m.content | trim + '<end_of_turn>\n' }}{% endfor %}\
         {% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}",
    ),
    (
        "llama3",
        "{{ bos_token }}{% for m in messages %}\
         {{ '<|start_header_id|>' + m.role + '<|end_header_id|>\n\n' + m.content | trim + '<|eot_id|>' }}{% endfor %}\
         {% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
    ),
];

/// The source of a named built-in template.
pub fn named(name: &str) -> Option<&'static str> {
    NAMED.iter().find(|(n, _)| *n == name).map(|(_, src)| *src)
}

/// The most instructions one rendering may run. A template is code from the model file, which
/// may come from anywhere: its loops are bounded by this, not by trust. Real templates use a few
/// hundred per message; this leaves room for tens of thousands of messages.
pub const TEMPLATE_FUEL: u64 = 50_000_000;

/// The most text one rendering may write, in bytes: far more than any context holds.
pub const MAX_PROMPT_BYTES: usize = 64 << 20;

/// Rendered text, refused past `cap` bytes.
struct Capped {
    buf: Vec<u8>,
    cap: usize,
    over: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + b.len() > self.cap {
            self.over = true;
            return Err(std::io::Error::other("the rendered prompt is too large"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A compiled chat template with the model's special tokens.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
    /// Whether the tokenizer adds BOS itself: then a BOS the template writes is dropped, as
    /// llama-server does, so the prompt does not start with two.
    strip_bos: bool,
    /// Whether the template renders a `tools` list itself; otherwise tools are described by
    /// the generic tool prompt ([`tool_prompt`]).
    supports_tools: bool,
}

impl ChatTemplate {
    /// Compiles `source`. `bos`/`eos` are the text of the model's BOS and EOS tokens.
    pub fn new(source: String, bos: String, eos: String, strip_bos: bool) -> Result<ChatTemplate, String> {
        let mut env = Environment::new();
        // Hugging Face renders chat templates with these two on; so does llama.cpp.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(TEMPLATE_FUEL));
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        // Python's `json.dumps`, as Hugging Face's `tojson` is (minijinja's own writes compact,
        // HTML-escaped JSON).
        env.add_filter("tojson", |v: Value, args: Kwargs| -> Result<Value, Error> {
            let indent: Option<usize> = args.get("indent")?;
            let json = serde_json::to_value(&v).map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
            Ok(Value::from_safe_string(pyjson::dumps(&json, indent)))
        });
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |fmt: String| -> String {
            // Templates use it to print today's date; a fixed clock keeps prompts reproducible
            // within a day and needs no time-zone database.
            let days = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() / 86_400)
                .unwrap_or(0) as i64;
            let (y, m, d) = civil_from_days(days);
            const MONTHS: [&str; 12] = [
                "January",
                "February",
                "March",
                "April",
                "May",
                "June",
                "July",
                "August",
                "September",
                "October",
                "November",
                "December",
            ];
            fmt.replace("%Y", &y.to_string())
                .replace("%m", &format!("{m:02}"))
                .replace("%d", &format!("{d:02}"))
                .replace("%B", MONTHS[(m - 1) as usize])
                .replace("%b", &MONTHS[(m - 1) as usize][..3])
        });
        let supports_tools = source.contains("tools");
        env.add_template_owned("chat", source).map_err(|e| format!("invalid chat template: {e}"))?;
        Ok(ChatTemplate { env, bos, eos, strip_bos, supports_tools })
    }

    /// Renders `messages` with the assistant's generation prompt appended. `tools` is the
    /// OpenAI tools list (a JSON array): given to the template as `tools`, or, for a template
    /// that does not render tools, described in a system message by the generic tool prompt.
    pub fn render(&self, messages: &[ChatMessage], tools: Option<&serde_json::Value>) -> Result<String, String> {
        let generic;
        let (messages, tools) = match tools {
            Some(t) if !self.supports_tools => {
                generic = tool_prompt::rewrite(messages, t);
                (generic.as_slice(), None)
            }
            other => (messages, other),
        };
        let msgs: Vec<_> = messages.iter().map(message).collect();
        let tmpl = self.env.get_template("chat").map_err(|e| e.to_string())?;
        let mut out = Capped { buf: Vec::new(), cap: MAX_PROMPT_BYTES, over: false };
        let rendered = tmpl.render_captured_to(
            context! {
                messages => msgs,
                tools => tools.map(Value::from_serialize),
                add_generation_prompt => true,
                bos_token => self.bos,
                eos_token => self.eos,
            },
            &mut out,
        );
        match rendered {
            Ok(_) => {}
            Err(_) if out.over => {
                return Err(format!(
                    "the chat template wrote more than {} MiB for these messages: a template that \
                     writes that much is broken or hostile",
                    MAX_PROMPT_BYTES >> 20
                ))
            }
            Err(e) if e.kind() == ErrorKind::OutOfFuel => {
                return Err(format!(
                    "the chat template ran more than {TEMPLATE_FUEL} steps for these messages (its \
                     loops are too large): a template that runs that long is broken or hostile"
                ))
            }
            Err(e) => return Err(format!("chat template failed: {e}")),
        }
        let out = String::from_utf8(out.buf).map_err(|_| "the chat template wrote invalid UTF-8".to_string())?;
        match out.strip_prefix(self.bos.as_str()) {
            Some(rest) if self.strip_bos && !self.bos.is_empty() => Ok(rest.to_string()),
            _ => Ok(out),
        }
    }
}

/// A message as chat templates read it (Hugging Face's convention): tool calls carry their
/// arguments as an object when they parse as JSON, as templates that print them with `tojson`
/// expect.
fn message(m: &ChatMessage) -> Value {
    let calls: Vec<_> = m
        .tool_calls
        .iter()
        .map(|c| {
            let args = tool_prompt::arguments(&c.arguments);
            context! {
                id => c.id,
                type => "function",
                function => context! { name => c.name, arguments => Value::from_serialize(&args) },
            }
        })
        .collect();
    let mut fields = vec![("role", Value::from(m.role.as_str())), ("content", Value::from(m.content.as_str()))];
    if !calls.is_empty() {
        fields.push(("tool_calls", Value::from(calls)));
    }
    if let Some(id) = &m.tool_call_id {
        fields.push(("tool_call_id", Value::from(id.as_str())));
    }
    if let Some(name) = &m.name {
        fields.push(("name", Value::from(name.as_str())));
    }
    Value::from_iter(fields)
}

/// Days since 1970-01-01 → (year, month 1-12, day 1-31), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn user(text: &str) -> Vec<ChatMessage> {
        vec![ChatMessage::new("user", text)]
    }

    #[test]
    fn smollm2_adds_its_default_system_prompt() {
        let t = ChatTemplate::new(SMOLLM2.into(), "<|im_start|>".into(), "<|im_end|>".into(), false).unwrap();
        assert_eq!(
            t.render(&user("Hi"), None).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn named_templates_render() {
        let g = ChatTemplate::new(named("gemma").unwrap().into(), "<bos>".into(), "<eos>".into(), true).unwrap();
        assert_eq!(
            g.render(&user(" Hi "), None).unwrap(),
            "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
        );
        let c = ChatTemplate::new(named("chatml").unwrap().into(), "".into(), "".into(), false).unwrap();
        assert_eq!(c.render(&user("Hi"), None).unwrap(), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
        assert!(named("nope").is_none());
    }

    #[test]
    fn template_errors_are_reported_not_panics() {
        let t =
            ChatTemplate::new("{{ raise_exception('no system role') }}".into(), "".into(), "".into(), false).unwrap();
        assert!(t.render(&user("x"), None).unwrap_err().contains("no system role"));
        assert!(ChatTemplate::new("{% for %}".into(), "".into(), "".into(), false).is_err());
        let py =
            ChatTemplate::new("{{ messages[0].content.strip().upper() }}".into(), "".into(), "".into(), false).unwrap();
        assert_eq!(py.render(&user("  hi "), None).unwrap(), "HI");
    }

    #[test]
    fn a_template_that_loops_or_writes_without_end_is_stopped_with_a_clear_error() {
        // A hostile model file's template: nested loops of 10^10 steps, then 10^10 bytes.
        let loops = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let t = ChatTemplate::new(loops.into(), "".into(), "".into(), false).unwrap();
        let e = t.render(&user("x"), None).unwrap_err();
        assert!(e.contains("steps") && e.contains("hostile"), "{e}");
        let writes = "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}";
        let t = ChatTemplate::new(writes.into(), "".into(), "".into(), false).unwrap();
        let e = t.render(&user("x"), None).unwrap_err();
        assert!(e.contains("MiB"), "{e}");
        // A long real conversation stays far inside both.
        let t = ChatTemplate::new(named("chatml").unwrap().into(), "".into(), "".into(), false).unwrap();
        let long: Vec<ChatMessage> = (0..5000).flat_map(|_| user("a message of a long conversation")).collect();
        assert!(t.render(&long, None).is_ok());
    }

    #[test]
    fn tools_reach_a_template_that_renders_them() {
        let src = "{% if tools %}<tools>{% for t in tools %}{{ t.function.name }};{% endfor %}</tools>{% endif %}\
                   {% for m in messages %}{{ m.role }}:{{ m.content }}{% for c in m.tool_calls or [] %}\
                   <call id={{ c.id }}>{{ c.function.name }} {{ c.function.arguments | tojson }}</call>{% endfor %}\
                   {% if m.tool_call_id %}({{ m.tool_call_id }}){% endif %}|{% endfor %}";
        let t = ChatTemplate::new(src.into(), "".into(), "".into(), false).unwrap();
        let tools = serde_json::json!([{ "type": "function", "function": { "name": "get_weather" } }]);
        let msgs = vec![
            ChatMessage::new("user", "Weather?"),
            ChatMessage {
                role: "assistant".into(),
                tool_calls: vec![model_bucket_shared::protocol::ToolCall {
                    id: "call_1".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"city":"Oslo"}"#.into(),
                }],
                ..Default::default()
            },
            ChatMessage {
                role: "tool".into(),
                content: "5C".into(),
                tool_call_id: Some("call_1".into()),
                ..Default::default()
            },
        ];
        let out = t.render(&msgs, Some(&tools)).unwrap();
        assert_eq!(
            out,
            r#"<tools>get_weather;</tools>user:Weather?|assistant:<call id=call_1>get_weather {"city": "Oslo"}</call>|tool:5C(call_1)|"#
        );
        // Without tools the template sees none.
        assert_eq!(t.render(&msgs[..1], None).unwrap(), "user:Weather?|");
    }

    #[test]
    fn tojson_writes_as_python_does_keeping_key_order() {
        let t = ChatTemplate::new(
            "{{ tools | tojson }}|{{ tools[0] | tojson(indent=1) }}|{{ messages[0].content | tojson }}".into(),
            "".into(),
            "".into(),
            false,
        )
        .unwrap();
        let tools =
            serde_json::json!([{ "type": "function", "function": { "name": "f", "description": "a<b & 'c'" } }]);
        assert_eq!(
            t.render(&user("é"), Some(&tools)).unwrap(),
            "[{\"type\": \"function\", \"function\": {\"name\": \"f\", \"description\": \"a<b & 'c'\"}}]|\
             {\n \"type\": \"function\",\n \"function\": {\n  \"name\": \"f\",\n  \"description\": \"a<b & 'c'\"\n }\n}|\"é\""
        );
    }

    #[test]
    fn a_template_without_tools_gets_the_generic_prompt() {
        let t = ChatTemplate::new(named("chatml").unwrap().into(), "".into(), "".into(), false).unwrap();
        let tools = serde_json::json!([{ "type": "function", "function": { "name": "get_weather" } }]);
        let out = t.render(&user("Weather?"), Some(&tools)).unwrap();
        assert!(out.starts_with("<|im_start|>system\nYou can call these tools"), "{out}");
        assert!(out.contains(r#"{"name":"get_weather""#), "{out}");
        assert!(out.ends_with("<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\n"), "{out}");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_418), (2025, 11, 26));
    }
}
