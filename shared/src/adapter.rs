//! LoRA adapters in the models folder: what an adapter GGUF (`general.type = adapter`,
//! `adapter.type = lora`) says about itself, and which model of the folder is its base.
//!
//! An adapter pairs `NAME.lora_a` and `NAME.lora_b` tensors for weights `NAME` of its base. In
//! ggml order `lora_a` is `[n_in, rank]` and `lora_b` is `[rank, n_out]`; the attention and
//! feed-forward input projections take the hidden state, so their `n_in` is the base's
//! embedding length. That width, the architecture, the blocks touched and, when the converter
//! recorded it, the base model's name decide the base ([`find_base`], a pure function).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::gguf::GgufHeader;
use crate::model_info::ModelInfo;
use crate::naming;
use crate::ModelId;

/// Weights whose input is the hidden state, so their `lora_a` is as wide as the base.
const HIDDEN_INPUTS: [&str; 5] =
    ["attn_q.weight", "attn_k.weight", "attn_v.weight", "ffn_up.weight", "ffn_gate.weight"];

/// A weight's `lora_a` and `lora_b` shapes, as far as they were found.
type Pair<'h> = (Option<&'h [u64]>, Option<&'h [u64]>);

/// One LoRA adapter file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterInfo {
    /// `eden_<family>_<size>_<hash6>` from the adapter's own name and hash.
    pub id: ModelId,
    pub path: PathBuf,
    pub size_bytes: u64,
    /// SHA-256 of the whole file, lowercase hex.
    pub sha256: String,
    /// `general.architecture`: the base's.
    pub architecture: String,
    /// `general.name`, else the file name.
    pub name: String,
    /// `general.base_model.0.name`, when recorded.
    pub base_name: Option<String>,
    /// Width of the hidden state the adapter expects, when it adapts an input projection.
    pub n_embd: Option<u64>,
    /// Blocks it needs: the highest `blk.N` it adapts, plus one.
    pub n_blocks: u64,
    /// Largest rank of its A/B pairs.
    pub rank: u64,
    /// `adapter.lora.alpha`, when set (llama.cpp scales by alpha / rank).
    pub alpha: Option<f64>,
    /// Weights adapted (A/B pairs).
    pub n_pairs: usize,
}

/// How a model that is a base plus an adapter runs: on `base`'s worker, with `adapter` at
/// `scale` (1: as trained; 0: the base alone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraOf {
    pub base: ModelId,
    pub adapter: PathBuf,
    pub scale: f32,
}

impl LoraOf {
    /// The adapter as a request to the base's worker names it.
    pub fn to_use(&self) -> crate::protocol::LoraUse {
        crate::protocol::LoraUse { path: self.adapter.to_string_lossy().into_owned(), scale: self.scale }
    }
}

/// An adapter file a base's worker loads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterFile {
    pub path: PathBuf,
    pub size_bytes: u64,
    /// SHA-256 of the file, lowercase hex (empty for a config adapter outside the folder): a
    /// file replaced under the same path is a change of the base's adapters.
    pub sha256: String,
}

/// Whether the header is an adapter's rather than a model's.
pub fn is_adapter(h: &GgufHeader) -> bool {
    h.str("general.type") == Some("adapter")
}

impl AdapterInfo {
    /// Reads an adapter's header; a reason when it is not a LoRA adapter llama.cpp could load.
    pub fn from_header(h: &GgufHeader, path: PathBuf, size_bytes: u64, sha256: String) -> Result<AdapterInfo, String> {
        match h.str("adapter.type") {
            Some("lora") => {}
            Some(other) => return Err(format!("a {other:?} adapter (only LoRA adapters are served)")),
            None => return Err("an adapter without adapter.type".into()),
        }
        let architecture = h.str("general.architecture").ok_or("an adapter without general.architecture")?.to_string();
        let mut pairs: BTreeMap<&str, Pair<'_>> = BTreeMap::new();
        for t in &h.tensors {
            if let Some(w) = t.name.strip_suffix(".lora_a") {
                pairs.entry(w).or_default().0 = Some(&t.dims);
            } else if let Some(w) = t.name.strip_suffix(".lora_b") {
                pairs.entry(w).or_default().1 = Some(&t.dims);
            }
        }
        if pairs.is_empty() {
            return Err("an adapter with no LoRA tensors".into());
        }
        let (mut rank, mut n_embd, mut n_blocks) = (0, None, 0);
        for (w, pair) in &pairs {
            let (Some(a), Some(b)) = pair else { return Err(format!("{w} has only one of lora_a and lora_b")) };
            let ([n_in, r], [r_b, _]) = (a, b) else { return Err(format!("{w}: lora_a and lora_b must be matrices")) };
            if r != r_b || *r == 0 {
                return Err(format!("{w}: lora_a has rank {r} but lora_b {r_b}"));
            }
            rank = rank.max(*r);
            if HIDDEN_INPUTS.iter().any(|s| w.ends_with(s)) {
                match n_embd {
                    Some(e) if e != *n_in => return Err(format!("{w} takes {n_in} inputs where others take {e}")),
                    _ => n_embd = Some(*n_in),
                }
            }
            if let Some(n) =
                w.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|n| n.parse::<u64>().ok())
            {
                n_blocks = n_blocks.max(n + 1);
            }
        }
        let file_stem =
            path.file_name().map(|f| f.to_string_lossy().trim_end_matches(".gguf").to_string()).unwrap_or_default();
        let parts = naming::name_parts(
            h.str("general.basename"),
            h.str("general.size_label"),
            h.str("general.name"),
            &file_stem,
        );
        Ok(AdapterInfo {
            id: parts.id(&sha256).into(),
            name: h.str("general.name").map(str::to_string).unwrap_or(file_stem),
            base_name: h.str("general.base_model.0.name").map(str::to_string),
            alpha: match h.kv.get("adapter.lora.alpha") {
                Some(crate::gguf::Value::F64(a)) => Some(*a),
                Some(v) => v.as_u64().map(|a| a as f64),
                None => None,
            },
            path,
            size_bytes,
            sha256,
            architecture,
            n_embd,
            n_blocks,
            rank,
            n_pairs: pairs.len(),
        })
    }

    pub fn describe(&self) -> String {
        let width = self.n_embd.map(|e| format!(", {e} wide")).unwrap_or_default();
        format!("architecture {}{width}, {} blocks", self.architecture, self.n_blocks)
    }
}

/// Whether `m` can take adapter `a`: same architecture, same width (when both are known) and
/// at least the blocks it adapts. A model that is itself a base plus an adapter is no base.
pub fn fits(a: &AdapterInfo, m: &ModelInfo) -> bool {
    m.lora.is_none()
        && m.architecture == a.architecture
        && !(a.n_embd.is_some() && m.embedding_length.is_some() && a.n_embd != m.embedding_length)
        && m.block_count.is_none_or(|b| b >= a.n_blocks)
}

/// The base of adapter `a` among `models`: the one model that fits it, or among several that
/// fit, the one its recorded base name names. A reason when there is none, or no telling.
pub fn find_base<'m>(a: &AdapterInfo, models: &'m [ModelInfo]) -> Result<&'m ModelInfo, String> {
    let fitting: Vec<&ModelInfo> = models.iter().filter(|m| fits(a, m)).collect();
    let named = |m: &&&ModelInfo| {
        a.base_name.as_deref().is_some_and(|b| {
            let b = naming::sanitize(b);
            !b.is_empty() && (naming::sanitize(&m.name) == b || m.stem().ends_with(&b) || b.ends_with(m.stem()))
        })
    };
    match fitting.as_slice() {
        [] => Err(format!("no model in the folder fits it ({})", a.describe())),
        [one] => Ok(one),
        several => {
            let by_name: Vec<&&ModelInfo> = several.iter().filter(named).collect();
            match by_name.as_slice() {
                [one] => Ok(one),
                _ => {
                    let ids: Vec<&str> = several.iter().map(|m| m.id.as_str()).collect();
                    Err(format!("it fits several models ({}); name its base in the config", ids.join(", ")))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{TensorInfo, Value};

    fn adapter(tensors: &[(&str, [u64; 2])], base_name: Option<&str>) -> GgufHeader {
        let mut kv: BTreeMap<String, Value> = [
            ("general.type", "adapter"),
            ("adapter.type", "lora"),
            ("general.architecture", "llama"),
            ("general.name", "SmolLM2 135M Pirate"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), Value::Str(v.to_string())))
        .collect();
        kv.insert("adapter.lora.alpha".into(), Value::F64(8.0));
        if let Some(b) = base_name {
            kv.insert("general.base_model.0.name".into(), Value::Str(b.into()));
        }
        let tensors = tensors.iter().map(|(n, d)| TensorInfo { name: n.to_string(), dims: d.to_vec() }).collect();
        GgufHeader { kv, tensors, ..Default::default() }
    }

    fn model(id: &str, name: &str, arch: &str, width: u64, blocks: u64) -> ModelInfo {
        let h = GgufHeader {
            kv: [
                ("general.architecture".to_string(), Value::Str(arch.into())),
                ("general.name".to_string(), Value::Str(name.into())),
                (format!("{arch}.embedding_length"), Value::U64(width)),
                (format!("{arch}.block_count"), Value::U64(blocks)),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let mut m = ModelInfo::from_header(&h, format!("/m/{id}.gguf").into(), 1, "abcdef".into());
        m.id = id.into();
        m
    }

    const SMOL_Q: [(&str, [u64; 2]); 4] = [
        ("blk.0.attn_q.weight.lora_a", [576, 4]),
        ("blk.0.attn_q.weight.lora_b", [4, 576]),
        ("blk.3.ffn_down.weight.lora_a", [1536, 8]),
        ("blk.3.ffn_down.weight.lora_b", [8, 576]),
    ];

    #[test]
    fn an_adapters_shape_is_read_from_its_tensors() {
        let a = AdapterInfo::from_header(&adapter(&SMOL_Q, None), "/m/pirate.gguf".into(), 10, "0123456789".into())
            .unwrap();
        assert_eq!((a.n_embd, a.n_blocks, a.rank, a.n_pairs, a.alpha), (Some(576), 4, 8, 2, Some(8.0)));
        assert_eq!(a.id, "eden_smollm2_135m_012345");
    }

    #[test]
    fn broken_adapters_are_refused_with_a_reason() {
        let one_half = adapter(&SMOL_Q[..1], None);
        let err = AdapterInfo::from_header(&one_half, "/m/x.gguf".into(), 1, "00".into()).unwrap_err();
        assert!(err.contains("only one of"), "{err}");
        let bad_rank =
            adapter(&[("blk.0.attn_q.weight.lora_a", [576, 4]), ("blk.0.attn_q.weight.lora_b", [8, 576])], None);
        assert!(AdapterInfo::from_header(&bad_rank, "/m/x.gguf".into(), 1, "00".into()).unwrap_err().contains("rank"));
        let none = adapter(&[], None);
        assert!(AdapterInfo::from_header(&none, "/m/x.gguf".into(), 1, "00".into()).unwrap_err().contains("no LoRA"));
        let mut other = adapter(&SMOL_Q, None);
        other.kv.insert("adapter.type".into(), Value::Str("control_vector".into()));
        assert!(AdapterInfo::from_header(&other, "/m/x.gguf".into(), 1, "00".into())
            .unwrap_err()
            .contains("only LoRA"));
    }

    #[test]
    fn the_base_is_the_one_model_that_fits_or_the_one_named() {
        let a = AdapterInfo::from_header(&adapter(&SMOL_Q, None), "/m/p.gguf".into(), 1, "00".into()).unwrap();
        let smol = model("eden_smollm2_135m_b179c9", "SmolLM2 135M Instruct", "llama", 576, 30);
        let gemma = model("eden_gemma3_270m_a5fd3b", "Gemma 3 270m", "gemma3", 640, 18);
        let wide = model("eden_llama3_8b_111111", "Llama 3 8B", "llama", 4096, 32);
        let shallow = model("eden_tiny_1m_222222", "Tiny", "llama", 576, 2);
        let all = [gemma.clone(), smol.clone(), wide.clone(), shallow];
        assert_eq!(find_base(&a, &all).unwrap().id, smol.id);
        let err = find_base(&a, &[gemma, wide]).unwrap_err();
        assert!(err.contains("no model in the folder fits it (architecture llama, 576 wide, 4 blocks)"), "{err}");
        // Two that fit: the recorded base name decides, else nobody guesses.
        let twin = model("eden_smollm2_135m_333333", "SmolLM2 135M", "llama", 576, 30);
        let both = [smol.clone(), twin.clone()];
        assert!(find_base(&a, &both).unwrap_err().contains("fits several models"));
        let named = AdapterInfo::from_header(
            &adapter(&SMOL_Q, Some("SmolLM2 135M Instruct")),
            "/m/p.gguf".into(),
            1,
            "00".into(),
        )
        .unwrap();
        assert_eq!(find_base(&named, &both).unwrap().id, smol.id);
    }
}
