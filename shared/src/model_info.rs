//! What the catalog knows about one model file, derived from its GGUF header.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use crate::gguf::{GgufHeader, Value};
use crate::naming::{self, NameParts};

/// What a model can be asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// The GGUF carries a chat template (or the config names one).
    Chat,
    /// A generative model: raw text completion works.
    Completion,
    /// An instruction or chat fine-tune.
    Instruction,
    /// A coder model.
    Code,
    /// An embedding model (no generation).
    Embedding,
}

/// One model in the catalog. Field names are the JSON names of `list --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// `eden_<family>_<size>_<hash6>`; stable across renames and restarts.
    pub id: crate::ModelId,
    /// Other names that resolve to this model: the ID without its hash (when no other model
    /// shares it) and custom IDs from the config or `add --id`.
    pub aliases: Vec<String>,
    pub path: PathBuf,
    /// File size in bytes.
    pub size_bytes: u64,
    /// SHA-256 of the whole file, lowercase hex.
    pub sha256: String,
    /// `general.architecture`, e.g. `llama`, `gemma3`.
    pub architecture: String,
    /// `general.name`, else the file name.
    pub name: String,
    /// `general.size_label` (e.g. `135M`), else the size found in the name.
    pub parameters: Option<String>,
    /// The file type, e.g. `Q4_1`, `Q4_K_M`.
    pub quantization: Option<String>,
    /// Training context length in tokens (`<arch>.context_length`).
    pub context_length: Option<u64>,
    pub has_chat_template: bool,
    pub capabilities: Vec<Capability>,
    /// KV cache per token of context at f16, in bytes (all layers, keys and values); `None`
    /// when the header lacks the attention shape.
    #[serde(default)]
    pub kv_bytes_per_token: Option<u64>,
    /// Vocabulary size (tokens in `tokenizer.ggml.tokens`).
    #[serde(default)]
    pub n_vocab: Option<u64>,
    /// Width of the hidden state (`<arch>.embedding_length`), for matching adapters.
    #[serde(default)]
    pub embedding_length: Option<u64>,
    /// Transformer blocks (`<arch>.block_count`), for matching adapters.
    #[serde(default)]
    pub block_count: Option<u64>,
    /// Set when this model is a base plus a LoRA adapter: it runs on the base's worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<crate::adapter::LoraOf>,
    /// The adapter files this model's worker loads (set on bases), in the order it loads them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adapters: Vec<crate::adapter::AdapterFile>,
}

/// Names of llama.cpp's `llama_ftype` values (`general.file_type`).
pub fn file_type_name(ft: u64) -> Option<&'static str> {
    Some(match ft {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        _ => return None,
    })
}

/// KV bytes per token at f16: layers × (key + value width) × 2, where each width is the KV
/// heads times the head size (`attention.key_length`, else embedding length / heads).
fn kv_bytes_per_token(h: &GgufHeader, arch: &str) -> Option<u64> {
    let get = |k: &str| h.u64(&format!("{arch}.{k}"));
    let layers = get("block_count")?;
    let heads = get("attention.head_count")?.max(1);
    let kv_heads = get("attention.head_count_kv").unwrap_or(heads);
    let head_k = get("attention.key_length").or_else(|| Some(get("embedding_length")? / heads))?;
    let head_v = get("attention.value_length").unwrap_or(head_k);
    Some(layers * kv_heads * (head_k + head_v) * 2)
}

/// Architectures that embed rather than generate.
const EMBEDDING_ARCHS: &[&str] =
    &["bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "t5encoder", "neo-bert", "modern-bert"];

impl ModelInfo {
    /// Builds the model's info from its header, file name, size and content hash.
    pub fn from_header(h: &GgufHeader, path: PathBuf, size_bytes: u64, sha256: String) -> ModelInfo {
        let file_stem =
            path.file_name().map(|f| f.to_string_lossy().trim_end_matches(".gguf").to_string()).unwrap_or_default();
        let parts: NameParts = naming::name_parts(
            h.str("general.basename"),
            h.str("general.size_label"),
            h.str("general.name"),
            &file_stem,
        );
        let architecture = h.str("general.architecture").unwrap_or("unknown").to_string();
        let has_chat_template =
            matches!(h.kv.get("tokenizer.chat_template"), Some(Value::Str(s)) if !s.trim().is_empty());
        let context_length = h.u64(&format!("{architecture}.context_length"));

        // Everything that describes the model in words, for the capability heuristics.
        let mut words = String::new();
        for key in ["general.name", "general.basename", "general.finetune", "general.type"] {
            if let Some(s) = h.str(key) {
                words.push(' ');
                words.push_str(s);
            }
        }
        if let Some(Value::StrArray(tags)) = h.kv.get("general.tags") {
            for t in tags {
                words.push(' ');
                words.push_str(t);
            }
        }
        words.push(' ');
        words.push_str(&file_stem);
        let words = naming::sanitize(&words);
        let tokens: Vec<&str> = words.split('_').collect();

        let embedding =
            EMBEDDING_ARCHS.contains(&architecture.as_str()) || tokens.iter().any(|t| t.starts_with("embed"));
        let mut capabilities = Vec::new();
        if has_chat_template && !embedding {
            capabilities.push(Capability::Chat);
        }
        if !embedding {
            capabilities.push(Capability::Completion);
        }
        if !embedding && tokens.iter().any(|t| matches!(*t, "instruct" | "chat" | "it" | "sft" | "dpo" | "rlhf")) {
            capabilities.push(Capability::Instruction);
        }
        if tokens.iter().any(|t| t.contains("code")) {
            capabilities.push(Capability::Code);
        }
        if embedding {
            capabilities.push(Capability::Embedding);
        }

        let kv_bytes_per_token = kv_bytes_per_token(h, &architecture);
        let n_vocab = match h.kv.get("tokenizer.ggml.tokens") {
            Some(Value::Array { len, .. }) => Some(*len),
            Some(Value::StrArray(v)) => Some(v.len() as u64),
            _ => None,
        };
        let embedding_length = h.u64(&format!("{architecture}.embedding_length"));
        let block_count = h.u64(&format!("{architecture}.block_count"));
        ModelInfo {
            id: parts.id(&sha256).into(),
            aliases: Vec::new(),
            name: h.str("general.name").map(str::to_string).unwrap_or_else(|| file_stem.clone()),
            parameters: parts.size_label.clone(),
            quantization: h.u64("general.file_type").and_then(file_type_name).map(str::to_string),
            path,
            size_bytes,
            sha256,
            architecture,
            context_length,
            has_chat_template,
            capabilities,
            kv_bytes_per_token,
            n_vocab,
            embedding_length,
            block_count,
            lora: None,
            adapters: Vec::new(),
        }
    }

    /// The ID of the model whose worker serves this one: its own, or its base's.
    pub fn worker_id(&self) -> &crate::ModelId {
        self.lora.as_ref().map_or(&self.id, |l| &l.base)
    }

    /// The ID without its hash (`eden_smollm2_135m`).
    pub fn stem(&self) -> &str {
        self.id.rsplit_once('_').map(|(s, _)| s).unwrap_or(&self.id)
    }

    pub fn has(&self, c: Capability) -> bool {
        self.capabilities.contains(&c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kv: &[(&str, Value)]) -> GgufHeader {
        GgufHeader { kv: kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(), ..Default::default() }
    }

    fn s(v: &str) -> Value {
        Value::Str(v.into())
    }

    #[test]
    fn deepseek_coder_is_code_and_instruction() {
        let h = header(&[
            ("general.architecture", s("llama")),
            ("general.name", s("deepseek-ai_deepseek-coder-6.7b-instruct")),
            ("llama.context_length", Value::U64(16384)),
            ("general.file_type", Value::U64(15)),
            ("tokenizer.chat_template", s("{% for m in messages %}{{ m.content }}{% endfor %}")),
        ]);
        let m = ModelInfo::from_header(&h, "/m/x.gguf".into(), 10, "abcdef0123".into());
        assert_eq!(m.id, "eden_deepseek_coder_6_7b_abcdef");
        assert_eq!(m.stem(), "eden_deepseek_coder_6_7b");
        assert_eq!(m.quantization.as_deref(), Some("Q4_K_M"));
        assert_eq!(m.context_length, Some(16384));
        assert_eq!(m.parameters.as_deref(), Some("6.7B"));
        for c in [Capability::Chat, Capability::Completion, Capability::Instruction, Capability::Code] {
            assert!(m.has(c), "{c:?}");
        }
        assert!(!m.has(Capability::Embedding));
        assert_eq!(m.kv_bytes_per_token, None);
    }

    #[test]
    fn kv_size_from_the_attention_shape() {
        // SmolLM2-135M: 30 layers, 9 heads of 64 over 576, 3 KV heads.
        let h = header(&[
            ("general.architecture", s("llama")),
            ("llama.block_count", Value::U64(30)),
            ("llama.embedding_length", Value::U64(576)),
            ("llama.attention.head_count", Value::U64(9)),
            ("llama.attention.head_count_kv", Value::U64(3)),
            ("tokenizer.ggml.tokens", Value::Array { elem_type: 8, len: 49152 }),
        ]);
        let m = ModelInfo::from_header(&h, "/m/s.gguf".into(), 10, "00ff00aa".into());
        assert_eq!(m.kv_bytes_per_token, Some(30 * 3 * 128 * 2));
        assert_eq!(m.n_vocab, Some(49152));
    }

    #[test]
    fn base_model_without_template_has_no_chat() {
        let h = header(&[
            ("general.architecture", s("gemma3")),
            ("general.basename", s("gemma-3")),
            ("general.size_label", s("270M")),
        ]);
        let m = ModelInfo::from_header(&h, "/m/g.gguf".into(), 10, "00ff00aa".into());
        assert_eq!(m.capabilities, vec![Capability::Completion]);
        assert_eq!(m.parameters.as_deref(), Some("270M"));
    }

    #[test]
    fn bert_is_embedding_only() {
        let h = header(&[("general.architecture", s("bert")), ("general.name", s("all-MiniLM-L6-v2"))]);
        let m = ModelInfo::from_header(&h, "/m/e.gguf".into(), 10, "00ff00aa".into());
        assert_eq!(m.capabilities, vec![Capability::Embedding]);
    }
}
