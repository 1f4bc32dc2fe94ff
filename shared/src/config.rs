//! The TOML config file: per-model settings and custom IDs.
//!
//! ```toml
//! models_dir = "/srv/models"
//!
//! [models.eden_smollm2_135m]      # a full ID, an alias or a file name
//! ids = ["fast", "intent-parser"]  # extra names that resolve to this model
//! ctx = 4096                       # context size in tokens
//! threads = 2
//! parallel = 4                     # concurrent sequences (slots)
//! cpus = "0-1"                     # cores to pin the worker to
//! gpus = [0]
//! gpu_layers = 99
//! ttl_secs = 600                   # unload after this long idle
//! chat_template = "chatml"         # a template name or file, for models without one
//! priority = "high"                # its requests go before normal and low ones for memory
//! resident = true                  # loaded at start and never evicted
//!
//! [models.pirate]                  # a model of its own: a base plus a LoRA adapter
//! base = "eden_smollm2_135m"
//! lora = [{ path = "adapters/pirate.gguf", scale = 0.8 }]  # relative to the models folder
//!
//! [tasks]                          # `model: "task:thinking"` (or just `"thinking"`) picks the
//! thinking = ["eden_llama3_8b", "eden_smollm2_135m", "upstream:gpt-4o-mini"]  # first that can serve
//! memory = { models = ["eden_smollm2_135m"], priority = "low" }  # a chain with a priority
//!
//! [upstream]                       # opt-in remote fallback for `upstream:` chain entries
//! url = "https://api.example.com/v1"
//! api_key_env = "UPSTREAM_API_KEY"
//! ```

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// The whole config file. Unknown keys are an error so that a typo is not silently ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The models folder; the command line and `EDEN_MODELS_DIR` take precedence.
    pub models_dir: Option<PathBuf>,
    /// Per-model settings, keyed by full ID, alias, custom ID or file name.
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
    /// Task name → models to try in order (a name, or `upstream:MODEL` for the remote fallback),
    /// with an optional priority.
    #[serde(default)]
    pub tasks: BTreeMap<String, Task>,
    /// A remote OpenAI-compatible server for `upstream:` entries; nothing is sent anywhere
    /// unless this is set and a task names it.
    pub upstream: Option<Upstream>,
    /// Other Model Bucket nodes (`http://host:port`): a request for a model this node lacks
    /// goes to the one that has it. `serve --peer` adds more.
    #[serde(default)]
    pub peers: Vec<String>,
    /// `NAME:PORT` resolved every few seconds to all its addresses, each a peer (a Kubernetes
    /// headless Service).
    pub peers_dns: Option<String>,
    /// The environment variable holding the API key the peers want.
    pub peer_api_key_env: Option<String>,
}

/// The remote fallback.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Base URL of an OpenAI-compatible API, with its `/v1`.
    pub url: String,
    /// The environment variable holding its API key, if it needs one.
    pub api_key_env: Option<String>,
}

/// How soon a request gets memory when models wait for it: a higher class goes first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
}

impl Priority {
    pub fn name(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }
}

/// A task: its chain, written as a list, or a table with the chain and a priority.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Task {
    Chain(Vec<String>),
    Table(TaskTable),
}

/// A task written as a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskTable {
    pub models: Vec<String>,
    pub priority: Option<Priority>,
}

impl Task {
    /// The models to try, in order.
    pub fn chain(&self) -> &[String] {
        match self {
            Task::Chain(c) | Task::Table(TaskTable { models: c, .. }) => c,
        }
    }

    /// The priority its requests have, if it sets one (else their model's).
    pub fn priority(&self) -> Option<Priority> {
        match self {
            Task::Chain(_) => None,
            Task::Table(t) => t.priority,
        }
    }
}

/// The prefix of task chain entries that go to the upstream.
pub const UPSTREAM_PREFIX: &str = "upstream:";

/// Settings for one model. Every field is optional; absent means the server's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Extra IDs that resolve to this model.
    #[serde(default)]
    pub ids: Vec<String>,
    /// Context size in tokens.
    pub ctx: Option<u32>,
    /// Threads for decoding and prompt processing.
    pub threads: Option<u32>,
    /// Concurrent sequences (slots).
    pub parallel: Option<u32>,
    /// CPU cores to pin the worker to, e.g. `"0-3,8"`.
    pub cpus: Option<String>,
    /// GPU indices for the worker.
    pub gpus: Option<Vec<u32>>,
    /// Layers to offload to the GPU.
    pub gpu_layers: Option<u32>,
    /// Idle time before the worker is unloaded, in seconds.
    pub ttl_secs: Option<u64>,
    /// A chat template name or file for models whose GGUF has none.
    pub chat_template: Option<String>,
    /// Host memory for prompt prefixes pushed out of the slots, in MiB (0: none; default: as
    /// much as the slots' own KV cache).
    pub prompt_cache_mib: Option<u64>,
    /// Makes the entry's name a model of its own: this base (a name in the folder) with the
    /// adapters of `lora`, served by the base's worker.
    pub base: Option<String>,
    /// The adapters applied for this model (with `base`). One for now: the worker applies one
    /// adapter per request.
    #[serde(default)]
    pub lora: Vec<LoraEntry>,
    /// How soon its requests get memory when models wait for it (a task's own wins).
    pub priority: Option<Priority>,
    /// Loaded at start and never evicted; it counts against the budget all the time.
    pub resident: Option<bool>,
    /// Speculation (default `ngram`: generating sequences propose what followed their recent
    /// tokens before); `off` saves the memory of the proposals' logits.
    pub speculative: Option<Speculative>,
}

/// How a model's worker speculates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speculative {
    Off,
    #[default]
    Ngram,
}

/// One adapter of a config model: a LoRA GGUF and the scale it is applied with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraEntry {
    /// The adapter file; relative paths are relative to the models folder.
    pub path: PathBuf,
    /// 1: as trained; 0: not at all.
    #[serde(default = "one")]
    pub scale: f32,
}

fn one() -> f32 {
    1.0
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Config::parse(&text).map_err(|message| ConfigError::Parse { path: path.into(), message })
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        for (key, m) in &config.models {
            for id in &m.ids {
                if !crate::model_id::valid_custom_id(id) {
                    return Err(format!("models.{key}: custom ID {id:?} must be 1-128 characters of [A-Za-z0-9._:-]"));
                }
            }
        }
        for (key, m) in &config.models {
            match (&m.base, m.lora.as_slice()) {
                (None, []) => {}
                (None, _) => return Err(format!("models.{key}: lora needs a base")),
                (Some(_), []) => return Err(format!("models.{key}: base needs a lora list")),
                (Some(_), [one]) => {
                    if !crate::model_id::valid_custom_id(key) {
                        return Err(format!(
                            "models.{key}: a base + lora model's name is its ID: 1-128 characters of [A-Za-z0-9._:-]"
                        ));
                    }
                    let most = crate::protocol::MAX_LORA_SCALE;
                    if one.scale.is_nan() || one.scale.abs() > most {
                        return Err(format!("models.{key}: the lora scale must be between -{most} and {most}"));
                    }
                }
                (Some(_), _) => {
                    return Err(format!(
                        "models.{key}: one adapter per model for now (the worker applies one adapter per request)"
                    ))
                }
            }
        }
        for (task, t) in &config.tasks {
            let chain = t.chain();
            if !crate::model_id::valid_custom_id(task) {
                return Err(format!("tasks.{task}: a task name must be 1-128 characters of [A-Za-z0-9._:-]"));
            }
            if chain.is_empty() {
                return Err(format!("tasks.{task}: the chain is empty"));
            }
            if chain.iter().any(|m| m.starts_with(UPSTREAM_PREFIX)) && config.upstream.is_none() {
                return Err(format!("tasks.{task} names an upstream model but there is no [upstream] section"));
            }
        }
        for p in &config.peers {
            if !(p.starts_with("http://") || p.starts_with("https://")) {
                return Err(format!("peers: {p:?} must start with http:// or https://"));
            }
        }
        if let Some(d) = &config.peers_dns {
            if !d.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) {
                return Err(format!("peers_dns {d:?} must be NAME:PORT"));
            }
        }
        if let Some(u) = &config.upstream {
            if !(u.url.starts_with("http://") || u.url.starts_with("https://")) {
                return Err(format!("upstream.url {:?} must start with http:// or https://", u.url));
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_models_and_rejects_typos() {
        let c = Config::parse("[models.eden_smollm2_135m]\nids = [\"fast\"]\nctx = 2048\ncpus = \"0-1\"\n").unwrap();
        let m = &c.models["eden_smollm2_135m"];
        assert_eq!(m.ids, vec!["fast"]);
        assert_eq!(m.ctx, Some(2048));
        assert!(Config::parse("[models.x]\nctxx = 1\n").unwrap_err().contains("ctxx"));
        assert!(Config::parse("[models.x]\nids = [\"has space\"]\n").is_err());
    }

    #[test]
    fn tasks_and_upstream() {
        let c = Config::parse(
            "[tasks]\nthinking = [\"a\", \"upstream:big\"]\n[upstream]\nurl = \"http://x/v1\"\napi_key_env = \"K\"\n",
        )
        .unwrap();
        assert_eq!(c.tasks["thinking"].chain(), ["a", "upstream:big"]);
        assert_eq!(c.tasks["thinking"].priority(), None);
        assert_eq!(c.upstream.unwrap().api_key_env.as_deref(), Some("K"));
        let c = Config::parse("[tasks]\nmemory = { models = [\"a\"], priority = \"low\" }\n").unwrap();
        assert_eq!(
            (c.tasks["memory"].chain(), c.tasks["memory"].priority()),
            (&["a".to_string()][..], Some(Priority::Low))
        );
        assert!(Config::parse("[tasks]\nmemory = { models = [\"a\"], priority = \"urgent\" }\n").is_err());
        assert!(Config::parse("[tasks]\nmemory = { models = [] }\n").unwrap_err().contains("empty"));
        let c = Config::parse("[models.a]\npriority = \"high\"\nresident = true\n").unwrap();
        assert_eq!((c.models["a"].priority, c.models["a"].resident), (Some(Priority::High), Some(true)));
        assert!(Priority::High > Priority::Normal && Priority::Normal > Priority::Low);
        assert!(Config::parse("[tasks]\nthinking = [\"upstream:big\"]\n").unwrap_err().contains("no [upstream]"));
        assert!(Config::parse("[tasks]\nthinking = []\n").unwrap_err().contains("empty"));
        assert!(Config::parse("[upstream]\nurl = \"ftp://x\"\n").is_err());
    }

    #[test]
    fn base_and_lora_make_a_model() {
        let c = Config::parse(
            "[models.pirate]\nbase = \"eden_smollm2_135m\"\nlora = [{ path = \"p.gguf\", scale = 0.5 }]\n",
        )
        .unwrap();
        assert_eq!(c.models["pirate"].lora, vec![LoraEntry { path: "p.gguf".into(), scale: 0.5 }]);
        let c = Config::parse("[models.p]\nbase = \"b\"\nlora = [{ path = \"p.gguf\" }]\n").unwrap();
        assert_eq!(c.models["p"].lora[0].scale, 1.0);
        for bad in [
            "[models.p]\nlora = [{ path = \"p.gguf\" }]\n",
            "[models.p]\nbase = \"b\"\n",
            "[models.p]\nbase = \"b\"\nlora = [{ path = \"a.gguf\" }, { path = \"b.gguf\" }]\n",
            "[models.p]\nbase = \"b\"\nlora = [{ path = \"a.gguf\", scale = nan }]\n",
            "[models.\"has space\"]\nbase = \"b\"\nlora = [{ path = \"a.gguf\" }]\n",
        ] {
            assert!(Config::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_example_config_parses() {
        let c = Config::parse(include_str!("../../deploy/model-bucket.example.toml")).unwrap();
        assert_eq!(c.models["eden_smollm2_135m"].ttl_secs, Some(600));
    }
}
