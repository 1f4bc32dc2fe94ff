//! Stable model IDs: `eden_<family>_<size>_<hash6>`.
//!
//! The family and size come from the GGUF metadata (`general.basename` + `general.size_label`,
//! falling back to `general.name`, then the file name); the hash is the first 6 hex digits of the
//! SHA-256 of the whole file. The ID therefore survives renames and restarts and changes only
//! when the content does. IDs are lowercase `[a-z0-9_]`.

/// Leading words that name a publisher rather than a model ("Meta-Llama-3" is "llama3").
const PUBLISHERS: &[&str] = &[
    "meta",
    "mistralai",
    "google",
    "microsoft",
    "nvidia",
    "ibm",
    "tiiuae",
    "huggingfacetb",
    "thebloke",
    "unsloth",
    "bartowski",
    "lmstudio",
    "openai",
];

/// Words that describe a fine-tune or a file format, never a family.
const NOT_FAMILY: &[&str] =
    &["instruct", "chat", "it", "base", "gguf", "hf", "rlhf", "sft", "dpo", "preview", "latest"];

/// The parts an ID is made from, before the hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameParts {
    /// e.g. `llama3`, `deepseek_coder`.
    pub family: String,
    /// e.g. `8b`, `6_7b`, `135m`; `None` when nothing names a size.
    pub size: Option<String>,
    /// The size as written, e.g. `8B`, `6.7B`, `135M`.
    pub size_label: Option<String>,
}

impl NameParts {
    /// The ID without its hash: `eden_<family>[_<size>]`. This is also the model's alias.
    pub fn stem(&self) -> String {
        match &self.size {
            Some(size) => format!("eden_{}_{}", self.family, size),
            None => format!("eden_{}", self.family),
        }
    }

    /// The full ID: the stem plus the first 6 hex digits of `sha256_hex`.
    pub fn id(&self, sha256_hex: &str) -> String {
        let h: String = sha256_hex.chars().take(6).collect::<String>().to_ascii_lowercase();
        format!("{}_{}", self.stem(), h)
    }
}

/// Derives family and size from what the GGUF says, in order of preference.
///
/// `basename` and `size_label` are `general.basename` / `general.size_label`; `name` is
/// `general.name`; `file_stem` is the file name without `.gguf`.
pub fn name_parts(basename: Option<&str>, size_label: Option<&str>, name: Option<&str>, file_stem: &str) -> NameParts {
    let label = size_label.map(str::trim).filter(|s| !sanitize(s).is_empty());
    let parts = |family: String, found: Option<&str>| {
        let raw = label.or(found);
        NameParts { family, size: raw.map(sanitize), size_label: raw.map(str::to_uppercase) }
    };
    if let Some(base) = basename.filter(|b| !b.trim().is_empty()) {
        let (family, size) = split_name(base);
        if !family.is_empty() {
            return parts(family, size);
        }
    }
    for candidate in [name, Some(strip_quant(file_stem))].into_iter().flatten() {
        let (family, size) = split_name(without_publisher_prefix(candidate));
        if !family.is_empty() {
            return parts(family, size);
        }
    }
    parts("model".into(), None)
}

/// Lowercases and maps every run of characters outside `[a-z0-9]` to one `_`.
pub fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

/// `org_model-name` and `org/model-name` carry the publisher before the separator.
fn without_publisher_prefix(name: &str) -> &str {
    if let Some((_, rest)) = name.rsplit_once('/') {
        return rest;
    }
    match name.split_once('_') {
        Some((_, rest)) if rest.contains(['-', ' ']) => rest,
        _ => name,
    }
}

/// Drops a trailing quantization such as `.Q4_1`, `-q4_k_m` or `.f16` from a file stem.
fn strip_quant(stem: &str) -> &str {
    let lower = stem.to_ascii_lowercase();
    for (i, c) in lower.char_indices().rev() {
        if c == '.' || c == '-' {
            let tail = &lower[i + 1..];
            let is_quant = tail.starts_with('q') && tail[1..].starts_with(|c: char| c.is_ascii_digit())
                || tail.starts_with("iq")
                || ["f16", "f32", "bf16"].contains(&tail);
            if is_quant {
                return &stem[..i];
            }
        }
    }
    stem
}

/// `7b`, `135M`, `6.7b`, `8x7B`, `1.5T`: a parameter count.
fn is_size_token(t: &str) -> bool {
    let t = t.to_ascii_lowercase();
    let Some(body) = t.strip_suffix(['k', 'm', 'b', 't']) else { return false };
    let body = match body.split_once('x') {
        Some((experts, per)) if !experts.is_empty() && experts.bytes().all(|b| b.is_ascii_digit()) => per,
        _ => body,
    };
    !body.is_empty()
        && body.starts_with(|c: char| c.is_ascii_digit())
        && body.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// A bare version number such as `3` or `2.5` that belongs to the word before it.
fn is_version(t: &str) -> bool {
    !t.is_empty() && t.starts_with(|c: char| c.is_ascii_digit()) && t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// Splits a model name into family and size: the family is everything before the first size
/// word, without publishers and fine-tune words, with bare version numbers glued to the word
/// before them (`gemma-3` is `gemma3`).
fn split_name(name: &str) -> (String, Option<&str>) {
    let tokens: Vec<&str> = name.split(['-', '_', ' ']).filter(|t| !t.is_empty()).collect();
    let mut words: Vec<String> = Vec::new();
    let mut size = None;
    for t in tokens {
        if is_size_token(t) {
            size = Some(t);
            break;
        }
        let lower = t.to_ascii_lowercase();
        if is_version(&lower) {
            match words.last_mut() {
                Some(last) => last.push_str(&lower),
                None => words.push(lower),
            }
        } else if lower.starts_with('v') && is_version(&lower[1..]) {
            // "v0.2": a release, not part of the family.
        } else {
            words.push(lower);
        }
    }
    while words.len() > 1 && PUBLISHERS.contains(&words[0].as_str()) {
        words.remove(0);
    }
    words.retain(|w| !NOT_FAMILY.contains(&w.as_str()));
    (sanitize(&words.join("_")), size)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "a3f2c1deadbeef";

    fn id(basename: Option<&str>, size: Option<&str>, name: Option<&str>, file: &str) -> String {
        name_parts(basename, size, name, file).id(H)
    }

    #[test]
    fn smollm2_from_basename() {
        assert_eq!(
            id(Some("smollm2"), Some("135M"), Some("Smollm2 135M 8k Lc100K Mix1 Ep2"), "x"),
            "eden_smollm2_135m_a3f2c1"
        );
        assert_eq!(id(Some("SmolLM2"), Some("135M"), None, "x"), "eden_smollm2_135m_a3f2c1");
    }

    #[test]
    fn gemma3_glues_version() {
        assert_eq!(id(Some("gemma-3"), Some("270M"), None, "x"), "eden_gemma3_270m_a3f2c1");
    }

    #[test]
    fn mistral_from_name_with_publisher() {
        assert_eq!(id(None, None, Some("mistralai_mistral-7b-instruct-v0.2"), "x"), "eden_mistral_7b_a3f2c1");
    }

    #[test]
    fn deepseek_coder_from_name() {
        assert_eq!(
            id(None, None, Some("deepseek-ai_deepseek-coder-6.7b-instruct"), "x"),
            "eden_deepseek_coder_6_7b_a3f2c1"
        );
    }

    #[test]
    fn llama3_drops_publisher() {
        assert_eq!(id(Some("Meta-Llama-3"), Some("8B"), None, "x"), "eden_llama3_8b_a3f2c1");
    }

    #[test]
    fn falls_back_to_file_name() {
        assert_eq!(id(None, None, None, "SmolLM2-135M-Instruct.Q4_1"), "eden_smollm2_135m_a3f2c1");
        assert_eq!(id(None, None, None, "mistral-7b-instruct-v0.2.Q4_K_M"), "eden_mistral_7b_a3f2c1");
        assert_eq!(id(None, None, None, "Qwen2.5-7B-Instruct-q4_k_m"), "eden_qwen2_5_7b_a3f2c1");
        assert_eq!(id(None, None, None, "Mixtral-8x7B-v0.1.Q4_0"), "eden_mixtral_8x7b_a3f2c1");
        assert_eq!(id(None, None, None, "weird"), "eden_weird_a3f2c1");
        assert_eq!(id(None, None, Some(""), "---"), "eden_model_a3f2c1");
    }

    #[test]
    fn ids_are_lowercase_alnum_underscore() {
        for (b, s, n, f) in [
            (Some("Ünïcode Mödel"), Some("1.5B"), None, "x"),
            (None, None, Some("a/b/c d.e"), "f"),
            (Some("  "), None, None, "...Q4_0"),
        ] {
            let id = id(b, s, n, f);
            assert!(id.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'), "{id}");
            assert!(!id.contains("__"), "{id}");
        }
    }

    #[test]
    fn stem_is_the_alias() {
        let p = name_parts(Some("smollm2"), Some("135M"), None, "x");
        assert_eq!(p.stem(), "eden_smollm2_135m");
    }
}
