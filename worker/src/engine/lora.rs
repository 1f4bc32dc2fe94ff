//! LoRA adapters per request. The worker loads its adapters (`--lora`) with the model; each
//! request names the ones it wants with their scales. llama.cpp applies adapters to a whole
//! context, not per sequence, so one decode step runs the sequences of one adapter set only:
//! the sets with work take turns of [`TURN_STEPS`] steps each ([`next_set`]); a change of set
//! makes llama.cpp plan its compute graphs again, which costs about as much as a small step, so
//! turns of one step would spend a third of the time on that. A slot's cells are reused only by
//! a request of the set that computed them.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaLoraAdapter;
use model_bucket_shared::protocol::{ErrorKind, LoraUse, MAX_LORA_SCALE};
use std::path::Path;

/// The adapters a sequence runs with: one adapter (index into the worker's list) at a non-zero
/// scale (its bits, so that sets compare exactly), or none, the base alone.
///
/// Invariant: the scale is never 0 (a zero scale is the base, as in llama.cpp).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AdapterSet(Option<(u32, u32)>);

impl AdapterSet {
    pub const BASE: AdapterSet = AdapterSet(None);

    /// The set `uses` asks for among the worker's adapters (`loaded`, by path; `failed`: those
    /// llama.cpp refused, with why). Entries at scale 0 are dropped; more than one other is
    /// refused (one adapter per request for now).
    pub fn resolve(
        uses: &[LoraUse],
        loaded: &[String],
        failed: &[(String, String)],
    ) -> Result<AdapterSet, (ErrorKind, String)> {
        let mut set = AdapterSet::BASE;
        for u in uses {
            if u.scale.is_nan() || u.scale.abs() > MAX_LORA_SCALE {
                let m = format!("a LoRA scale must be between -{MAX_LORA_SCALE} and {MAX_LORA_SCALE}");
                return Err((ErrorKind::BadRequest, m));
            }
            let name = Path::new(&u.path).file_name().map(|f| f.to_string_lossy()).unwrap_or_default();
            let Some(i) = loaded.iter().position(|p| *p == u.path) else {
                let m = match failed.iter().find(|(p, _)| *p == u.path) {
                    Some((_, why)) => format!("the LoRA adapter {name} could not be loaded: {why}"),
                    None => format!(
                        "this worker has not loaded the LoRA adapter {name} yet (it restarts to load new adapters); retry shortly"
                    ),
                };
                return Err((ErrorKind::Internal, m));
            };
            if u.scale == 0.0 {
                continue;
            }
            if set != AdapterSet::BASE {
                return Err((ErrorKind::BadRequest, "one LoRA adapter per request: give the others scale 0".into()));
            }
            set = AdapterSet(Some((i as u32, u.scale.to_bits())));
        }
        Ok(set)
    }

    /// The adapter's index and scale, or none for the base.
    pub fn get(self) -> Option<(usize, f32)> {
        self.0.map(|(i, s)| (i as usize, f32::from_bits(s)))
    }
}

/// Decode steps a set keeps the context while others wait.
pub const TURN_STEPS: u32 = 8;

/// The set the next decode step runs, given the sets that have work (`ready`), the set of the
/// last step and how many steps in a row it has had (`run`): the same set until its turn of
/// [`TURN_STEPS`] is over (or it has no work), then the first set after it in their order,
/// wrapping around; `None` when nothing has work. Every set with work gets a turn within as
/// many turns as there are sets.
pub fn next_set(ready: impl IntoIterator<Item = AdapterSet>, last: AdapterSet, run: u32) -> Option<AdapterSet> {
    let (mut after, mut first, mut last_ready) = (None::<AdapterSet>, None::<AdapterSet>, false);
    for s in ready {
        last_ready |= s == last;
        first = Some(first.map_or(s, |f| f.min(s)));
        if s > last {
            after = Some(after.map_or(s, |a| a.min(s)));
        }
    }
    if last_ready && run < TURN_STEPS {
        return Some(last);
    }
    // `last` itself runs again only when it is the one set with work.
    after.or(first)
}

/// Makes `ctx` run with `set` (llama.cpp does nothing when it already does).
pub fn apply(ctx: &mut LlamaContext<'_>, adapters: &mut [LlamaLoraAdapter], set: AdapterSet) -> Result<(), String> {
    let result = match set.get() {
        Some((i, scale)) => ctx.lora_adapter_set(&mut adapters[i], scale).map_err(|e| e.to_string()),
        None => match adapters.first_mut() {
            Some(any) => ctx.lora_adapter_remove(any).map_err(|e| e.to_string()),
            None => Ok(()),
        },
    };
    result.map_err(|e| format!("llama.cpp could not apply the LoRA adapter: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(i: u32, scale: f32) -> AdapterSet {
        AdapterSet(Some((i, scale.to_bits())))
    }

    #[test]
    fn sets_with_work_take_turns() {
        let (base, a, b) = (AdapterSet::BASE, set(0, 1.0), set(1, 0.5));
        let end = TURN_STEPS;
        assert_eq!(next_set([], base, 0), None);
        assert_eq!(next_set([base, base], base, end + 5), Some(base), "one set runs every step");
        assert_eq!(next_set([a, base], base, 3), Some(base), "a turn goes on");
        assert_eq!(next_set([a, base], base, end), Some(a), "then the next set's");
        assert_eq!(next_set([a, base], a, end), Some(base), "wraps around");
        assert_eq!(next_set([a], base, 1), Some(a), "a set without work ends its turn");
        // Steps in order: each set with work gets its whole turn, in order.
        let (mut last, mut run) = (base, 0);
        let mut ran = Vec::new();
        for _ in 0..3 * end {
            let next = next_set([b, a, base, a], last, run).unwrap();
            run = if next == last { run + 1 } else { 1 };
            last = next;
            ran.push(last);
        }
        let turns: Vec<AdapterSet> = ran.chunks(end as usize).map(|c| c[0]).collect();
        assert!(ran.chunks(end as usize).all(|c| c.iter().all(|s| *s == c[0])), "{ran:?}");
        assert_eq!(turns, [base, a, b], "the set of the last step finishes its turn first");
    }

    #[test]
    fn requests_name_loaded_adapters_by_path() {
        let loaded = vec!["/m/pirate.gguf".to_string(), "/m/poet.gguf".to_string()];
        let failed = vec![("/m/bad.gguf".to_string(), "tensor blk.0.attn_q.weight has the wrong shape".to_string())];
        let u = |p: &str, scale| LoraUse { path: p.into(), scale };
        let resolve = |uses: &[LoraUse]| AdapterSet::resolve(uses, &loaded, &failed);
        let message = |uses: &[LoraUse]| resolve(uses).unwrap_err().1;
        assert_eq!(resolve(&[]), Ok(AdapterSet::BASE));
        assert_eq!(resolve(&[u("/m/poet.gguf", 0.5)]), Ok(set(1, 0.5)));
        assert_eq!(resolve(&[u("/m/poet.gguf", 0.0)]), Ok(AdapterSet::BASE), "scale 0 is the base");
        assert_eq!(resolve(&[u("/m/pirate.gguf", 1.0), u("/m/poet.gguf", 0.0)]), Ok(set(0, 1.0)));
        assert!(message(&[u("/m/pirate.gguf", 1.0), u("/m/poet.gguf", 1.0)]).contains("one LoRA adapter"));
        assert!(message(&[u("/m/other.gguf", 1.0)]).contains("not loaded the LoRA adapter other.gguf"));
        assert!(message(&[u("/m/bad.gguf", 1.0)]).contains("bad.gguf could not be loaded: tensor blk.0"));
        assert!(message(&[u("/m/poet.gguf", f32::NAN)]).contains("between"));
        assert!(message(&[u("/m/poet.gguf", 1e30)]).contains("between"));
        assert_eq!(set(1, 0.5).get(), Some((1, 0.5)));
    }
}
