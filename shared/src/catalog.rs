//! The catalog: every GGUF model in the models folder, by ID.
//!
//! A scan reads each `*.gguf` file's header (never its tensors), hashes new or changed files
//! (remembered in the [`HashIndex`]), skips bad files with a reason, folds files with identical
//! content into one model, and assigns aliases: the ID without its hash when exactly one model
//! has it, plus custom IDs from the config and from `add --id`.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use crate::adapter::{self, AdapterInfo};
use crate::config::Config;
use crate::gguf;
use crate::hash::{sha256_file, Progress};
use crate::index::{stamp, HashIndex};
use crate::model_info::ModelInfo;
use crate::state_file::{write_atomic, FolderLock};

/// Custom IDs given with `add --id`, kept in the models folder: SHA-256 → IDs.
pub const CUSTOM_IDS_FILE: &str = ".model-bucket-ids.json";

/// A file that is not served, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read models folder {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
}

/// The models of one folder.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub dir: PathBuf,
    /// Sorted by ID.
    pub models: Vec<ModelInfo>,
    /// Files that are not served, with the reason.
    pub skipped: Vec<Skipped>,
    /// Files changed too recently to be read (still being written); a later scan takes them.
    pub pending: Vec<PathBuf>,
    /// LoRA adapters of the folder, each with its base model's ID or why it has none. One with
    /// a base is also a model (see [`crate::lora_catalog`]); one without is also in `skipped`.
    pub adapters: Vec<(AdapterInfo, Result<crate::ModelId, String>)>,
}

/// What one `.gguf` file turned out to be.
enum Found {
    Model(ModelInfo),
    Adapter(AdapterInfo),
}

/// How a scan reports a file it is hashing: `(file, bytes done, bytes total)`.
pub type HashProgress<'a> = &'a mut dyn FnMut(&Path, u64, u64);

pub use crate::model_id::valid_custom_id;

/// Reads the `add --id` names of a models folder: SHA-256 → IDs. A missing file is none; a
/// corrupt one is an error naming it (it is never silently replaced).
pub fn read_custom_ids(dir: &Path) -> std::io::Result<BTreeMap<String, Vec<String>>> {
    let path = dir.join(CUSTOM_IDS_FILE);
    match fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is corrupt ({e}); fix it or remove it (its custom IDs are lost then)", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e),
    }
}

/// The custom IDs for a scan: a corrupt file is reported in the log and counts as none.
pub fn load_custom_ids(dir: &Path) -> BTreeMap<String, Vec<String>> {
    read_custom_ids(dir).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "custom IDs not read");
        BTreeMap::new()
    })
}

/// Records `id` as a custom ID of the model whose content hashes to `sha256`, under the
/// folder's lock (concurrent `add`s keep every ID).
pub fn add_custom_id(dir: &Path, sha256: &str, id: &str) -> std::io::Result<()> {
    let _lock = FolderLock::acquire(dir)?;
    let mut ids = read_custom_ids(dir)?;
    let list = ids.entry(sha256.to_string()).or_default();
    if !list.iter().any(|i| i == id) {
        list.push(id.to_string());
    }
    write_atomic(&dir.join(CUSTOM_IDS_FILE), &serde_json::to_vec_pretty(&ids).map_err(std::io::Error::other)?)
}

impl Catalog {
    /// Scans `dir`. Only a folder that cannot be listed is an error; every bad file is skipped.
    pub fn scan(dir: &Path, config: &Config, progress: Option<HashProgress<'_>>) -> Result<Catalog, CatalogError> {
        Catalog::scan_settled(dir, config, progress, std::time::Duration::ZERO)
    }

    /// Like [`Catalog::scan`], but a file modified less than `settle` ago is left in
    /// `pending` instead of being read: a copy in progress is never hashed half-written.
    pub fn scan_settled(
        dir: &Path,
        config: &Config,
        mut progress: Option<HashProgress<'_>>,
        settle: std::time::Duration,
    ) -> Result<Catalog, CatalogError> {
        let entries = fs::read_dir(dir).map_err(|source| CatalogError::Dir { path: dir.into(), source })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
            .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect();
        paths.sort();

        let mut index = HashIndex::load(dir);
        let mut cat = Catalog { dir: dir.to_path_buf(), ..Default::default() };
        let mut by_hash: HashMap<String, PathBuf> = HashMap::new();
        let mut adapters: Vec<AdapterInfo> = Vec::new();
        for path in paths {
            // A file hashed already in exactly this state (a pull records it, as does any scan)
            // is complete however recent it is.
            if !settle.is_zero() && changed_within(&path, settle) && !index.knows(&path) {
                cat.pending.push(path);
                continue;
            }
            match read_one(&path, &mut index, &mut progress) {
                Ok(Found::Adapter(a)) => adapters.push(a),
                Ok(Found::Model(info)) => {
                    if let Some(first) = by_hash.get(&info.sha256) {
                        cat.skipped.push(Skipped { path, reason: format!("same content as {}", first.display()) });
                        continue;
                    }
                    by_hash.insert(info.sha256.clone(), path);
                    cat.models.push(info);
                }
                Err(reason) => {
                    tracing::warn!(path = %path.display(), %reason, "skipping model file");
                    cat.skipped.push(Skipped { path, reason });
                }
            }
        }
        let names: std::collections::HashSet<String> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        index.retain(&|k| names.contains(k));
        index.save();

        cat.models.sort_by(|a, b| a.id.cmp(&b.id));
        cat.attach_folder_adapters(adapters);
        cat.assign_aliases(config, &load_custom_ids(dir));
        cat.attach_config_loras(config);
        Ok(cat)
    }

    /// Gives each model its hashless alias (when unique) and its custom IDs. A custom ID that
    /// is already some model's name is ignored with a warning. A base keeps its hashless alias
    /// when an adapter's ID has the same stem; the adapter then has none.
    pub(crate) fn assign_aliases(&mut self, config: &Config, custom: &BTreeMap<String, Vec<String>>) {
        let (mut stems, mut base_stems): (HashMap<String, usize>, HashMap<String, usize>) = Default::default();
        for m in &self.models {
            *stems.entry(m.stem().to_string()).or_default() += 1;
            if m.lora.is_none() {
                *base_stems.entry(m.stem().to_string()).or_default() += 1;
            }
        }
        for m in &mut self.models {
            m.aliases.clear();
            let counts = if m.lora.is_none() { &base_stems } else { &stems };
            if counts[m.stem()] == 1 {
                m.aliases.push(m.stem().to_string());
            }
        }
        let mut wanted: Vec<(usize, String)> = Vec::new();
        // Entries with a base are models of their own, added after this.
        for (key, mc) in config.models.iter().filter(|(_, mc)| mc.base.is_none()) {
            match self.position(key) {
                Some(i) => wanted.extend(mc.ids.iter().map(|id| (i, id.clone()))),
                None => tracing::warn!(model = %key, "config names a model that is not in the folder"),
            }
        }
        for (sha, ids) in custom {
            if let Some(i) = self.models.iter().position(|m| &m.sha256 == sha) {
                wanted.extend(ids.iter().filter(|id| valid_custom_id(id)).map(|id| (i, id.clone())));
            }
        }
        for (i, id) in wanted {
            match self.position(&id) {
                Some(j) if j == i => {}
                Some(j) => {
                    tracing::warn!(custom_id = %id, taken_by = %self.models[j].id, "custom ID ignored: already taken")
                }
                None => self.models[i].aliases.push(id),
            }
        }
    }

    fn position(&self, name: &str) -> Option<usize> {
        let exact = |m: &ModelInfo| m.id == name || m.aliases.iter().any(|a| a == name);
        if let Some(i) = self.models.iter().position(exact) {
            return Some(i);
        }
        let loose = |m: &ModelInfo| {
            m.id.eq_ignore_ascii_case(name)
                || m.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
                || m.path.file_name().is_some_and(|f| f.to_string_lossy() == name)
                || m.path.file_stem().is_some_and(|f| f.to_string_lossy() == name)
        };
        let mut hits = self.models.iter().enumerate().filter(|(_, m)| loose(m)).map(|(i, _)| i);
        match (hits.next(), hits.next()) {
            (Some(i), None) => Some(i),
            _ => None,
        }
    }

    /// The settings `config` gives the model `id` (under any name that resolves to it), or the
    /// defaults when it names none.
    pub fn model_config(&self, config: &Config, id: &str) -> crate::ModelConfig {
        // An entry with a base is its own model's, never another's.
        config
            .models
            .iter()
            .filter(|(k, v)| v.base.is_none() || k.as_str() == id)
            .find(|(k, _)| self.resolve(k).is_some_and(|m| m.id == id))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    /// The model whose worker serves `m`: `m` itself, or for a base plus an adapter its base
    /// (`None` when the base has left the folder).
    pub fn worker_of<'c>(&'c self, m: &'c ModelInfo) -> Option<&'c ModelInfo> {
        match &m.lora {
            None => Some(m),
            Some(l) => self.models.iter().find(|b| b.id == l.base),
        }
    }

    /// The models a name could mean when it means more than one and so resolves to none (a
    /// hashless alias two files share, a file name in two places): their IDs. Empty when the
    /// name resolves or means no model here.
    pub fn ambiguous(&self, name: &str) -> Vec<&str> {
        if self.position(name).is_some() {
            return Vec::new();
        }
        let hits: Vec<&str> = self
            .models
            .iter()
            .filter(|m| {
                m.stem().eq_ignore_ascii_case(name)
                    || m.id.eq_ignore_ascii_case(name)
                    || m.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
                    || m.path.file_name().is_some_and(|f| f.to_string_lossy() == name)
                    || m.path.file_stem().is_some_and(|f| f.to_string_lossy() == name)
            })
            .map(|m| m.id.as_str())
            .collect();
        if hits.len() >= 2 {
            hits
        } else {
            Vec::new()
        }
    }

    /// Finds a model by full ID, alias or custom ID (exact first, then case-insensitive), or by
    /// file name when only one model has it.
    pub fn resolve(&self, name: &str) -> Option<&ModelInfo> {
        self.position(name).map(|i| &self.models[i])
    }
}

/// Whether `path` was modified less than `d` ago (a file that cannot be stat'ed was not).
fn changed_within(path: &Path, d: std::time::Duration) -> bool {
    fs::metadata(path).and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().map_or(true, |age| age < d))
}

/// Reads one file into a [`ModelInfo`], or says why it cannot be served.
fn read_one(path: &Path, index: &mut HashIndex, progress: &mut Option<HashProgress<'_>>) -> Result<Found, String> {
    let meta = fs::metadata(path).map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let header = gguf::read_header(path).map_err(|e| e.to_string())?;
    if header.str("general.architecture").is_none() {
        return Err("GGUF has no general.architecture".into());
    }
    let st = stamp(&meta);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let sha = match index.get(&name, &st) {
        Some(sha) => sha.to_string(),
        None => {
            let mut report;
            let cb: Option<Progress<'_>> = match progress.as_mut() {
                Some(p) => {
                    report = move |done, total| p(path, done, total);
                    Some(&mut report)
                }
                None => None,
            };
            let sha = sha256_file(path, cb).map_err(|e| format!("cannot read: {e}"))?;
            index.put(&name, &st, &sha);
            sha
        }
    };
    if adapter::is_adapter(&header) {
        return AdapterInfo::from_header(&header, path.to_path_buf(), st.size, sha).map(Found::Adapter);
    }
    Ok(Found::Model(ModelInfo::from_header(&header, path.to_path_buf(), st.size, sha)))
}

#[cfg(test)]
mod custom_id_tests {
    use super::*;

    #[test]
    fn concurrent_adds_keep_every_id() {
        let dir = tempfile::tempdir().unwrap();
        std::thread::scope(|s| {
            for t in 0..6 {
                let dir = dir.path();
                s.spawn(move || {
                    for k in 0..10 {
                        add_custom_id(dir, &format!("sha{}", k % 3), &format!("id-{t}-{k}")).unwrap();
                    }
                });
            }
        });
        let ids = read_custom_ids(dir.path()).unwrap();
        assert_eq!(ids.values().map(Vec::len).sum::<usize>(), 60);
    }

    #[test]
    fn a_corrupt_file_is_reported_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CUSTOM_IDS_FILE);
        fs::write(&path, b"{ not json").unwrap();
        let e = add_custom_id(dir.path(), "sha", "fast").unwrap_err();
        assert!(e.to_string().contains("corrupt"), "{e}");
        assert_eq!(fs::read(&path).unwrap(), b"{ not json");
        assert!(load_custom_ids(dir.path()).is_empty());
    }
}
