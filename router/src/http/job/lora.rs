//! Which LoRA adapters a request runs with. A model that is a base plus an adapter runs on its
//! base's worker with that adapter at its scale. A request's own `lora` list, as llama-server
//! takes it (`[{"id": 0, "scale": 0.5}]`), replaces that: `id` is the adapter's index among its
//! base's adapters (`adapters` in `/v1/models`) or an adapter model's ID, and adapters it does
//! not name are off.

use model_bucket_shared::adapter::LoraOf;
use model_bucket_shared::protocol::{LoraUse, MAX_LORA_SCALE};
use model_bucket_shared::{Catalog, ModelInfo};
use serde::Deserialize;

use crate::http::error::ApiError;

/// The longest `lora` list a request may send.
pub const MAX_LORA_ENTRIES: usize = 64;

/// One entry of a request's `lora` list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraParam {
    pub id: LoraRef,
    /// 1: as trained; 0: off.
    #[serde(default = "one")]
    pub scale: f32,
}

fn one() -> f32 {
    1.0
}

/// An adapter by index among its base's adapters, or by the ID of its model.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum LoraRef {
    Index(u64),
    Model(String),
}

/// The model whose worker serves `m` (itself, or its base), as `cat` has it.
pub fn worker_of<'c>(cat: &'c Catalog, m: &'c ModelInfo) -> Result<&'c ModelInfo, ApiError> {
    cat.worker_of(m).ok_or_else(|| {
        ApiError::unavailable(format!("the base {} of model {} is no longer in the folder", m.worker_id(), m.id), 5)
    })
}

/// The adapters a request for `m` runs with on `base`'s worker: its `lora` list when it sends
/// one, else `m`'s own adapter, else none. At most one adapter at a non-zero scale.
pub fn uses(
    cat: &Catalog,
    m: &ModelInfo,
    base: &ModelInfo,
    asked: Option<&[LoraParam]>,
) -> Result<Vec<LoraUse>, ApiError> {
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let Some(asked) = asked else {
        return Ok(m.lora.iter().map(LoraOf::to_use).collect());
    };
    if asked.len() > MAX_LORA_ENTRIES {
        return Err(ApiError::bad_param("lora", format!("at most {MAX_LORA_ENTRIES} entries")));
    }
    let mut out = Vec::with_capacity(asked.len());
    for (k, p) in asked.iter().enumerate() {
        if p.scale.is_nan() || p.scale.abs() > MAX_LORA_SCALE {
            let m = format!("lora[{k}].scale must be between -{MAX_LORA_SCALE} and {MAX_LORA_SCALE}");
            return Err(ApiError::bad_param("lora", m));
        }
        let file = match &p.id {
            LoraRef::Index(i) => base.adapters.get(*i as usize).map(|a| &a.path).ok_or_else(|| {
                ApiError::bad_param(
                    "lora",
                    format!("lora[{k}].id {i}: model {} has {} adapters", base.id, base.adapters.len()),
                )
            })?,
            LoraRef::Model(name) => match cat.resolve(name).and_then(|a| a.lora.as_ref()) {
                Some(l) if l.base == base.id => &l.adapter,
                _ => {
                    return Err(ApiError::bad_param(
                        "lora",
                        format!("lora[{k}].id {name:?} is not an adapter of {}", base.id),
                    ))
                }
            },
        };
        out.push(LoraUse { path: path(file), scale: p.scale });
    }
    if out.iter().filter(|u| u.scale != 0.0).count() > 1 {
        return Err(ApiError::bad_param("lora", "one adapter per request: give the others scale 0"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use model_bucket_shared::adapter::{AdapterFile, LoraOf};

    fn catalog() -> Catalog {
        let h = model_bucket_shared::gguf::GgufHeader::default();
        let mut base = ModelInfo::from_header(&h, "/m/smol.gguf".into(), 1, "aa".into());
        base.id = "eden_smol_1m_aaaaaa".into();
        base.adapters = ["/m/pirate.gguf", "/m/poet.gguf"]
            .iter()
            .map(|p| AdapterFile { path: p.into(), size_bytes: 1, sha256: String::new() })
            .collect();
        let adapter = |id: &str, file: &str, scale| {
            let mut a = base.clone();
            a.id = id.into();
            a.adapters.clear();
            a.lora = Some(LoraOf { base: base.id.clone(), adapter: file.into(), scale });
            a
        };
        let models = vec![base.clone(), adapter("pirate", "/m/pirate.gguf", 1.0), adapter("poet", "/m/poet.gguf", 0.5)];
        Catalog { dir: "/m".into(), models, ..Default::default() }
    }

    fn param(id: LoraRef, scale: f32) -> LoraParam {
        LoraParam { id, scale }
    }

    #[test]
    fn a_model_brings_its_adapter_and_a_request_list_replaces_it() {
        let cat = catalog();
        let (base, poet) = (&cat.models[0], &cat.models[2]);
        assert_eq!(worker_of(&cat, poet).unwrap().id, base.id);
        assert!(uses(&cat, base, base, None).unwrap().is_empty());
        let own = uses(&cat, poet, base, None).unwrap();
        assert_eq!((own[0].path.as_str(), own[0].scale), ("/m/poet.gguf", 0.5));
        let asked = [param(LoraRef::Index(0), 0.25), param(LoraRef::Model("poet".into()), 0.0)];
        let list = uses(&cat, poet, base, Some(&asked)).unwrap();
        assert_eq!(
            list.iter().map(|u| (u.path.as_str(), u.scale)).collect::<Vec<_>>(),
            [("/m/pirate.gguf", 0.25), ("/m/poet.gguf", 0.0)]
        );
        assert!(uses(&cat, base, base, Some(&[])).unwrap().is_empty(), "an empty list is the base alone");
    }

    #[test]
    fn bad_lists_are_refused_with_the_entry() {
        let cat = catalog();
        let base = &cat.models[0];
        let err = |asked: &[LoraParam]| uses(&cat, base, base, Some(asked)).unwrap_err().message;
        assert!(
            err(&[param(LoraRef::Index(2), 1.0)]).contains("lora[0].id 2: model eden_smol_1m_aaaaaa has 2 adapters")
        );
        assert!(err(&[param(LoraRef::Model("eden_smol_1m_aaaaaa".into()), 1.0)]).contains("is not an adapter"));
        assert!(err(&[param(LoraRef::Index(0), f32::INFINITY)]).contains("between"));
        assert!(err(&[param(LoraRef::Index(0), 10.5)]).contains("between"));
        assert!(err(&[param(LoraRef::Index(0), 1.0), param(LoraRef::Index(1), 1.0)]).contains("one adapter"));
        assert!(err(&vec![param(LoraRef::Index(0), 0.0); MAX_LORA_ENTRIES + 1]).contains("at most"));
    }
}
