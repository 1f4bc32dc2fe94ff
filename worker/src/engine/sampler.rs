//! A llama.cpp sampler chain for one request, in llama-server's order:
//! logit bias → penalties → top-k → top-p → min-p → temperature → dist (or greedy).

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;
use model_bucket_shared::protocol::{Constraint, SamplingParams};

use model_bucket_shared::protocol::MAX_CONSTRAINT_BYTES;

/// The grammar sampler for a constraint, or why it cannot be built (a client error).
/// `memo` holds the last schema converted and llama.cpp's grammar for it: requests that repeat a
/// schema (and the choices of one request) convert it once.
pub fn grammar(
    model: &LlamaModel,
    c: &Constraint,
    memo: &mut Option<(String, String)>,
) -> Result<LlamaSampler, String> {
    let (text, what) = match c {
        Constraint::Gbnf(g) => (g, "grammar"),
        Constraint::JsonSchema { schema, .. } => (schema, "JSON schema"),
    };
    if text.len() > MAX_CONSTRAINT_BYTES {
        return Err(format!("the {what} is {} bytes; at most {MAX_CONSTRAINT_BYTES} are allowed", text.len()));
    }
    // The memo keeps llama.cpp's own grammar; each request takes out the whitespace or not.
    let compacted;
    let gbnf = match c {
        Constraint::Gbnf(g) => g.as_str(),
        Constraint::JsonSchema { schema, whitespace } => {
            if memo.as_ref().is_none_or(|(s, _)| s != schema) {
                let g = llama_cpp_2::json_schema_to_grammar(schema).map_err(|_| {
                    "the JSON schema cannot be turned into a grammar: llama.cpp's converter rejected it (check that \
                     it is valid JSON Schema and that every $ref points inside it)"
                        .to_string()
                })?;
                *memo = Some((schema.clone(), g));
            }
            let spaced = memo.as_ref().map(|(_, g)| g.as_str()).expect("set above");
            if *whitespace {
                spaced
            } else {
                compacted = compact(spaced);
                compacted.as_str()
            }
        }
    };
    LlamaSampler::grammar(model, gbnf, "root").map_err(|_| match c {
        Constraint::Gbnf(_) => {
            "the grammar does not parse as GBNF with a `root` rule (llama.cpp's grammar format)".into()
        }
        Constraint::JsonSchema { .. } => "the grammar made from the JSON schema does not compile".into(),
    })
}

/// A grammar from llama.cpp's schema converter with its optional whitespace (the `space`
/// rule it puts after every JSON token) taken out: compact JSON only. Whitespace inside
/// strings is content and stays.
pub fn compact(gbnf: &str) -> String {
    let mut out = String::with_capacity(gbnf.len());
    for line in gbnf.lines() {
        out.push_str(if line.starts_with("space ::=") { "space ::= \"\"" } else { line });
        out.push('\n');
    }
    out
}

/// Checks what llama.cpp would otherwise assert on or silently misuse.
pub fn validate(p: &SamplingParams, n_vocab: i32) -> Result<(), String> {
    p.check().map_err(|(_, why)| why)?;
    for &(tok, _) in &p.logit_bias {
        if tok < 0 || tok >= n_vocab {
            return Err(format!("logit_bias token {tok} is outside the vocabulary (0..{n_vocab})"));
        }
    }
    Ok(())
}

/// Builds the chain. `p` must have passed [`validate`]. The penalties look back at most
/// `n_ctx` tokens (a sequence never holds more), however large a window was asked for: the
/// window sizes an allocation.
pub fn build(p: &SamplingParams, model: &LlamaModel, n_ctx: u32) -> LlamaSampler {
    let n_vocab = model.n_vocab();
    let mut chain = Vec::with_capacity(8);
    if !p.logit_bias.is_empty() {
        let biases: Vec<LlamaLogitBias> =
            p.logit_bias.iter().map(|&(t, b)| LlamaLogitBias::new(LlamaToken(t), b)).collect();
        chain.push(LlamaSampler::logit_bias(n_vocab, &biases));
    }
    if p.repeat_penalty != 1.0 || p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
        chain.push(LlamaSampler::penalties(
            n_vocab,
            p.repeat_last_n.clamp(0, n_ctx.min(i32::MAX as u32) as i32),
            p.repeat_penalty,
            p.frequency_penalty,
            p.presence_penalty,
        ));
    }
    if p.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if p.top_k > 0 {
            chain.push(LlamaSampler::top_k(p.top_k));
        }
        if p.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(p.top_p, 1));
        }
        if p.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(p.min_p, 1));
        }
        chain.push(LlamaSampler::temp(p.temperature));
        // llama.cpp picks a random seed for LLAMA_DEFAULT_SEED (u32::MAX).
        chain.push(LlamaSampler::dist(p.seed.unwrap_or(u32::MAX)));
    }
    LlamaSampler::chain_simple(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_grammars_allow_no_whitespace_between_json_tokens() {
        let schema = r#"{"type":"object","properties":{"tool":{"type":"string"},"n":{"type":"integer"}},"required":["tool","n"]}"#;
        let spaced = llama_cpp_2::json_schema_to_grammar(schema).unwrap();
        let rule = |g: &str| g.lines().find(|l| l.starts_with("space ::=")).map(str::to_string);
        assert!(
            rule(&spaced).is_some_and(|r| r.contains(r#""\n""#)),
            "llama.cpp's converter allows newlines: {spaced}"
        );
        let tight = compact(&spaced);
        assert_eq!(rule(&tight).as_deref(), Some(r#"space ::= """#));
        // Nothing else changes: the object's rule still goes through `space`.
        assert_eq!(spaced.lines().count(), tight.lines().count());
        let changed = spaced.lines().zip(tight.lines()).filter(|(a, b)| a != b).count();
        assert_eq!(changed, 1);
        assert!(tight.contains("space"), "{tight}");
    }
}
