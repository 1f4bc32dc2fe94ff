//! Models made of a base and a LoRA adapter: each adapter of the folder under its own ID, and
//! each config entry with `base` and `lora` under its name. Such a model is listed with its
//! base's capabilities and runs on the base's worker; the base's `adapters` names every adapter
//! file that worker loads.

use std::path::{Path, PathBuf};

use crate::adapter::{self, AdapterFile, AdapterInfo, LoraOf};
use crate::catalog::{Catalog, Skipped};
use crate::config::{Config, LoraEntry};
use crate::gguf;
use crate::model_info::ModelInfo;
use crate::ModelId;

impl Catalog {
    /// Matches each adapter of the folder to its base. One with a base becomes a model of its
    /// own (at scale 1); one without is skipped with the reason. All stay in `adapters`.
    pub(crate) fn attach_folder_adapters(&mut self, found: Vec<AdapterInfo>) {
        for a in found {
            let base = adapter::find_base(&a, &self.models).map(|m| m.id.clone());
            match &base {
                Ok(id) if self.models.iter().any(|m| m.id == a.id) => {
                    let reason = format!("a LoRA adapter for {id} whose ID {} is another model's", a.id);
                    self.skip(&a.path, reason);
                }
                Ok(id) => {
                    tracing::info!(path = %a.path.display(), adapter = %a.id, base = %id, "LoRA adapter");
                    let model = self.with_adapter(id, a.id.clone(), &a, 1.0);
                    self.models.push(model);
                }
                Err(why) => self.skip(&a.path, format!("a LoRA adapter whose base is not in the folder: {why}")),
            }
            self.adapters.push((a, base));
        }
        self.models.sort_by(|a, b| a.id.cmp(&b.id));
    }

    /// Adds the config's `base` + `lora` models, named by their entry, with the entry's `ids`
    /// as aliases. Runs once aliases are assigned, so `base` may be any name of the base. An
    /// entry whose base or adapter is unusable is skipped with the reason.
    pub(crate) fn attach_config_loras(&mut self, config: &Config) {
        for (name, mc) in &config.models {
            let (Some(base_name), [entry]) = (&mc.base, mc.lora.as_slice()) else { continue };
            let path = absolute(&self.dir, &entry.path);
            let base = match self.resolve(base_name) {
                Some(b) if b.lora.is_none() => b.clone(),
                Some(b) => {
                    self.skip(&path, format!("models.{name}: its base {} is itself a base plus an adapter", b.id));
                    continue;
                }
                None => {
                    self.skip(&path, format!("models.{name}: its base {base_name:?} is not in the folder"));
                    continue;
                }
            };
            if self.resolve(name).is_some() {
                self.skip(&path, format!("models.{name}: that name is already a model's"));
                continue;
            }
            let a = match read_adapter(&path, entry) {
                Ok(a) if adapter::fits(&a, &base) => a,
                Ok(a) => {
                    let reason = format!("models.{name}: the adapter ({}) does not fit {}", a.describe(), base.id);
                    self.skip(&path, reason);
                    continue;
                }
                Err(why) => {
                    self.skip(&path, format!("models.{name}: {why}"));
                    continue;
                }
            };
            let mut model = self.with_adapter(&base.id, ModelId::from(name.as_str()), &a, entry.scale);
            model.aliases = mc.ids.iter().filter(|id| self.resolve(id).is_none()).cloned().collect();
            tracing::info!(model = %name, base = %base.id, adapter = %path.display(), "base + LoRA model from the config");
            self.models.push(model);
        }
        self.models.sort_by(|a, b| a.id.cmp(&b.id));
    }

    /// The model `id` made of base `base_id` (in `models`) and adapter `a` at `scale`; the base
    /// is told to load the adapter.
    fn with_adapter(&mut self, base_id: &ModelId, id: ModelId, a: &AdapterInfo, scale: f32) -> ModelInfo {
        let base = self.models.iter_mut().find(|m| &m.id == base_id).expect("the base is in the catalog");
        if !base.adapters.iter().any(|f| f.path == a.path) {
            base.adapters.push(AdapterFile {
                path: a.path.clone(),
                size_bytes: a.size_bytes,
                sha256: a.sha256.clone(),
            });
        }
        ModelInfo {
            id,
            aliases: Vec::new(),
            path: a.path.clone(),
            size_bytes: a.size_bytes,
            sha256: a.sha256.clone(),
            name: a.name.clone(),
            lora: Some(LoraOf { base: base.id.clone(), adapter: a.path.clone(), scale }),
            adapters: Vec::new(),
            ..base.clone()
        }
    }

    fn skip(&mut self, path: &Path, reason: String) {
        tracing::warn!(path = %path.display(), %reason, "adapter not served");
        self.skipped.push(Skipped { path: path.to_path_buf(), reason });
    }
}

/// `p`, relative to the models folder unless absolute.
fn absolute(dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// Reads a config adapter's header. Its file need not be in the folder, so it is not hashed
/// (the model's ID is the entry's name): its size and modification time stand for its content.
fn read_adapter(path: &Path, entry: &LoraEntry) -> Result<AdapterInfo, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read adapter {}: {e}", entry.path.display()))?;
    let st = crate::index::stamp(&meta);
    let (size, mtime) = (st.size, st.mtime_ns);
    let h = gguf::read_header(path).map_err(|e| format!("adapter {}: {e}", entry.path.display()))?;
    if !adapter::is_adapter(&h) {
        return Err(format!("{} is a model, not an adapter", entry.path.display()));
    }
    AdapterInfo::from_header(&h, path.to_path_buf(), size, format!("stamp {size} {mtime}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{GgufHeader, Value};

    fn model(id: &str, name: &str) -> ModelInfo {
        let kv = [
            ("general.architecture", Value::Str("llama".into())),
            ("general.name", Value::Str(name.into())),
            ("llama.embedding_length", Value::U64(576)),
            ("llama.block_count", Value::U64(30)),
        ];
        let h = GgufHeader { kv: kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect(), ..Default::default() };
        let mut m = ModelInfo::from_header(&h, format!("/m/{id}.gguf").into(), 100, "ab".into());
        m.id = id.into();
        m
    }

    fn adapter(id: &str, file: &str) -> AdapterInfo {
        AdapterInfo {
            id: id.into(),
            path: format!("/m/{file}").into(),
            size_bytes: 7,
            sha256: "cd".into(),
            architecture: "llama".into(),
            name: "Pirate".into(),
            base_name: None,
            n_embd: Some(576),
            n_blocks: 4,
            rank: 4,
            alpha: None,
            n_pairs: 4,
        }
    }

    #[test]
    fn an_adapter_becomes_a_model_on_its_base_and_the_base_keeps_its_alias() {
        let mut cat = Catalog {
            dir: "/m".into(),
            models: vec![model("eden_smollm2_135m_b179c9", "SmolLM2")],
            ..Default::default()
        };
        cat.attach_folder_adapters(vec![
            adapter("eden_smollm2_135m_0a0a0a", "pirate.gguf"),
            adapter("eden_smollm2_135m_0b0b0b", "poet.gguf"),
        ]);
        cat.assign_aliases(&Config::default(), &Default::default());
        let base = cat.resolve("eden_smollm2_135m").unwrap();
        assert_eq!(base.id, "eden_smollm2_135m_b179c9", "the base keeps the hashless alias");
        let paths: Vec<_> = base.adapters.iter().map(|a| a.path.to_str().unwrap()).collect();
        assert_eq!(paths, ["/m/pirate.gguf", "/m/poet.gguf"]);
        let pirate = cat.resolve("pirate.gguf").unwrap();
        assert_eq!(pirate.id, "eden_smollm2_135m_0a0a0a");
        let lora = pirate.lora.as_ref().unwrap();
        assert_eq!((lora.base.as_str(), lora.scale), ("eden_smollm2_135m_b179c9", 1.0));
        assert_eq!((pirate.size_bytes, pirate.architecture.as_str()), (7, "llama"));
        assert!(pirate.adapters.is_empty() && pirate.aliases.is_empty());
        assert_eq!(cat.adapters.len(), 2);
    }

    #[test]
    fn an_adapter_without_base_or_with_a_taken_id_is_skipped() {
        let mut cat = Catalog {
            dir: "/m".into(),
            models: vec![model("eden_smollm2_135m_b179c9", "SmolLM2")],
            ..Default::default()
        };
        let mut wide = adapter("eden_x_1b_010101", "wide.gguf");
        wide.n_embd = Some(4096);
        cat.attach_folder_adapters(vec![wide, adapter("eden_smollm2_135m_b179c9", "same-id.gguf")]);
        assert_eq!(cat.models.len(), 1);
        assert!(cat.skipped[0].reason.contains("base is not in the folder"), "{:?}", cat.skipped);
        assert!(cat.skipped[1].reason.contains("is another model's"), "{:?}", cat.skipped);
        assert!(cat.models[0].adapters.is_empty());
    }

    #[test]
    fn a_config_entry_with_a_missing_adapter_or_base_is_skipped() {
        let mut cat = Catalog {
            dir: "/m".into(),
            models: vec![model("eden_smollm2_135m_b179c9", "SmolLM2")],
            ..Default::default()
        };
        cat.assign_aliases(&Config::default(), &Default::default());
        let config = Config::parse(
            "[models.pirate]\nbase = \"eden_smollm2_135m\"\nlora = [{ path = \"nope.gguf\" }]\n\
             [models.lost]\nbase = \"eden_gone\"\nlora = [{ path = \"x.gguf\" }]\n",
        )
        .unwrap();
        cat.attach_config_loras(&config);
        assert_eq!(cat.models.len(), 1);
        let reasons: Vec<_> = cat.skipped.iter().map(|s| s.reason.as_str()).collect();
        assert!(reasons.iter().any(|r| r.contains("models.pirate: cannot read adapter nope.gguf")), "{reasons:?}");
        assert!(
            reasons.iter().any(|r| r.contains("models.lost: its base \"eden_gone\" is not in the folder")),
            "{reasons:?}"
        );
    }
}
