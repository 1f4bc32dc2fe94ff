//! Which file of a repo to pull when none is named.

use super::RepoFile;

/// Quantizations in the order they are preferred: the usual size/quality sweet spot first.
const PREFERRED: &[&str] =
    &["q4_k_m", "q4_k_s", "q5_k_m", "q4_0", "q5_k_s", "iq4_xs", "q6_k", "q8_0", "q3_k_m", "q4_1"];

/// Whether `path` is a whole model file: a `.gguf`, not a projector or a split part.
pub fn is_model_file(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let name = lower.rsplit('/').next().unwrap_or(&lower);
    name.ends_with(".gguf") && !name.contains("mmproj") && !is_split_part(name)
}

/// `model-00001-of-00003.gguf`.
fn is_split_part(name: &str) -> bool {
    name.trim_end_matches(".gguf").rsplit_once("-of-").is_some_and(|(head, tail)| {
        tail.len() == 5 && tail.bytes().all(|b| b.is_ascii_digit()) && head.len() >= 6 && {
            let n = &head[head.len() - 5..];
            n.bytes().all(|b| b.is_ascii_digit()) && head.as_bytes()[head.len() - 6] == b'-'
        }
    })
}

/// The quantization tag of a file name (`Q4_K_M`), if it has a known one.
fn quant_rank(path: &str) -> Option<usize> {
    let lower = path.to_ascii_lowercase();
    let name = lower.rsplit('/').next().unwrap_or(&lower).trim_end_matches(".gguf");
    // Split on the separators names use around the tag: `model.Q4_K_M`, `model-q4_k_m`.
    let tags: Vec<&str> = name.split(['.', '-']).collect();
    PREFERRED.iter().position(|q| tags.contains(q))
}

/// The file to pull by default: the most preferred quantization, else the smallest model file.
pub fn default_choice(files: &[RepoFile]) -> Option<&RepoFile> {
    let models: Vec<&RepoFile> = files.iter().filter(|f| is_model_file(&f.path)).collect();
    models
        .iter()
        .filter_map(|f| quant_rank(&f.path).map(|r| (r, f.size, *f)))
        .min_by_key(|(r, size, _)| (*r, *size))
        .map(|(_, _, f)| f)
        .or_else(|| models.iter().min_by_key(|f| f.size).copied())
}

/// The model files of a listing, for messages.
pub fn gguf_names(files: &[RepoFile]) -> String {
    let names: Vec<&str> = files.iter().filter(|f| is_model_file(&f.path)).map(|f| f.path.as_str()).collect();
    if names.is_empty() {
        "no .gguf files".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str, size: u64) -> RepoFile {
        RepoFile { path: path.into(), size, sha256: None }
    }

    #[test]
    fn prefers_q4_k_m() {
        let files = vec![
            f("README.md", 1),
            f("mistral-7b-instruct-v0.2.Q2_K.gguf", 3),
            f("mistral-7b-instruct-v0.2.Q8_0.gguf", 8),
            f("mistral-7b-instruct-v0.2.Q4_K_M.gguf", 4),
            f("mistral-7b-instruct-v0.2.Q4_K_S.gguf", 4),
        ];
        assert_eq!(default_choice(&files).unwrap().path, "mistral-7b-instruct-v0.2.Q4_K_M.gguf");
        let files = vec![f("Qwen2.5-7B-Instruct-Q8_0.gguf", 8), f("Qwen2.5-7B-Instruct-Q5_K_M.gguf", 5)];
        assert_eq!(default_choice(&files).unwrap().path, "Qwen2.5-7B-Instruct-Q5_K_M.gguf");
    }

    #[test]
    fn falls_back_to_the_smallest_and_skips_non_models() {
        let files = vec![f("a-weird.gguf", 9), f("b-odd.gguf", 5), f("mmproj-f16.gguf", 1), f("x.bin", 0)];
        assert_eq!(default_choice(&files).unwrap().path, "b-odd.gguf");
        assert!(default_choice(&[f("README.md", 1)]).is_none());
    }

    #[test]
    fn split_parts_are_not_whole_models() {
        assert!(!is_model_file("qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf"));
        assert!(is_model_file("Q4/model-q4_k_m.gguf"));
        assert!(is_model_file("gemma-3-270m-q4_k_m.gguf"));
        assert!(!is_model_file("mmproj-model-f16.gguf"));
    }
}
