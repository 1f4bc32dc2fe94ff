//! Command-line interface. `--help` text comes from these doc comments.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Model Bucket: a local OpenAI-compatible server for a folder of GGUF models.
#[derive(Debug, Parser)]
#[command(name = "model-bucket", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the models are and how they are configured; shared by every command.
#[derive(Debug, Clone, Args)]
pub struct BucketArgs {
    /// The models folder (default: `$EDEN_MODELS_DIR`, else the config's `models_dir`, else
    /// `~/EDEN/models`).
    #[arg(long, env = "EDEN_MODELS_DIR", global = true)]
    pub models_dir: Option<PathBuf>,
    /// A TOML config file with per-model settings and custom IDs.
    #[arg(long, env = "EDEN_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

/// `serve` settings. Every flag has an `EDEN_*` environment variable.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on. Loopback by default: nothing outside this machine can connect.
    #[arg(long, env = "EDEN_HOST", default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Port to listen on.
    #[arg(long, env = "EDEN_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Concurrent requests per model (slots of each worker), unless the config says otherwise.
    #[arg(long, env = "EDEN_PARALLEL", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallel: u32,
    /// Context per request in tokens (default: the model's, at most 4096).
    #[arg(long, env = "EDEN_CTX", value_parser = clap::value_parser!(u32).range(16..))]
    pub ctx: Option<u32>,
    /// Threads per worker (default: every core).
    #[arg(long, env = "EDEN_THREADS", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// Requests that may wait for a free slot of one model; past that, 429 with Retry-After.
    #[arg(long, env = "EDEN_MAX_QUEUE", default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=65536))]
    pub max_queue: u32,
    /// Seconds of a worker's helper threads one request may use: rendering its chat template,
    /// compiling its grammar or JSON schema, and sampling under it. Past them the request ends
    /// with an error; other requests of the model never wait on this work.
    #[arg(long, env = "EDEN_MAX_SAMPLING_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub max_sampling_seconds: u64,
    /// Seconds a client may take to send a request's headers before its connection is closed
    /// (idle and trickling sockets cannot pile up).
    #[arg(long, env = "EDEN_HEADER_TIMEOUT", default_value_t = 10)]
    pub header_timeout: u64,
    /// Seconds a client may take to send a request's body once its headers came; past them it
    /// gets 408 (a trickled body holds a connection and a handler).
    #[arg(long, env = "EDEN_BODY_TIMEOUT", default_value_t = crate::http::json::BodyTimeout::DEFAULT.0.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_timeout: u64,
    /// Client connections open at once (at most what the file limit allows); more wait.
    #[arg(long, env = "EDEN_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Requests one client (its API key, else its address) may have in flight; past that, 429
    /// with Retry-After (0: no limit).
    #[arg(long, env = "EDEN_MAX_CLIENT_REQUESTS", default_value_t = 0)]
    pub max_client_requests: usize,
    /// Largest request body, in bytes.
    #[arg(long, env = "EDEN_BODY_LIMIT", default_value_t = 8 << 20)]
    pub body_limit: usize,
    /// Longest a worker may take to load a model, in seconds.
    #[arg(long, env = "EDEN_LOAD_TIMEOUT", default_value_t = 300)]
    pub load_timeout: u64,
    /// Longest a request waits for a load in progress, or for a worker restarting after a crash
    /// (counted from its arrival), before a 503 with Retry-After, in seconds.
    #[arg(long, env = "EDEN_LOAD_WAIT", default_value_t = 120)]
    pub load_wait: u64,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT, or when their worker is
    /// unloaded or restarted.
    #[arg(long, env = "EDEN_SHUTDOWN_GRACE", default_value_t = 30)]
    pub shutdown_grace: u64,
    /// The most memory all workers together may use: bytes or a size such as `512MiB`, `8GiB`
    /// (default: three quarters of the machine's memory, or of the cgroup limit). Idle workers
    /// are evicted, least recently used first, to make room.
    #[arg(long, env = "EDEN_RAM_BUDGET")]
    pub ram_budget: Option<String>,
    /// Unload a worker after this many idle seconds (0: never); a model's `ttl_secs` wins.
    #[arg(long, env = "EDEN_IDLE_TTL", default_value_t = 0)]
    pub idle_ttl: u64,
    /// Longest a request waits for its model to get memory and start, in seconds, before a 503
    /// (the OpenAI SDKs' own request timeout is 600 s). `--evict-wait` is its old name.
    #[arg(long, env = "EDEN_QUEUE_TIMEOUT", visible_alias = "evict-wait", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub queue_timeout: u64,
    /// The least time, in seconds, a model swapped in keeps its memory while models of its
    /// priority wait for it; a turn lasts at least twice what its swap took in any case. A
    /// request that waited twice the turn goes first.
    #[arg(long, env = "EDEN_QUANTUM", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub quantum: u64,
    /// Who gets memory next when models do not all fit: `turns` (priorities, turns, fewest
    /// swaps) or `fifo` (arrival order, a swap whenever another model is asked for).
    #[arg(long, env = "EDEN_SCHED", value_enum, default_value_t = crate::supervisor::turn::Sched::Turns)]
    pub sched: crate::supervisor::turn::Sched,
    /// Crashes within `--crash-window` seconds that mark a model failed (until a reload).
    #[arg(long, env = "EDEN_CRASH_LIMIT", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub crash_limit: u32,
    /// The window, in seconds, in which `--crash-limit` crashes fail a model.
    #[arg(long, env = "EDEN_CRASH_WINDOW", default_value_t = 120)]
    pub crash_window: u64,
    /// Require this API key (`Authorization: Bearer KEY`) on every endpoint but `/health`.
    #[arg(long, env = "EDEN_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Read the API key from this file (its first line).
    #[arg(long, env = "EDEN_API_KEY_FILE", conflicts_with = "api_key")]
    pub api_key_file: Option<std::path::PathBuf>,
    /// Require this key (instead of the API key) on `/admin/*`: loading, unloading, pulling,
    /// rescanning and restarting.
    #[arg(long, env = "EDEN_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Allow browser pages from this origin (repeatable; `*` for any) to call the API.
    #[arg(long = "cors-origin", env = "EDEN_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// On a loopback address, also accept requests whose `Host` header names this host
    /// (repeatable); any other name than a loopback one gets 403 (DNS rebinding).
    #[arg(long = "allowed-host", env = "EDEN_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Listen on a non-loopback address without an API key (refused otherwise).
    #[arg(long, env = "EDEN_INSECURE_NO_KEY")]
    pub insecure_no_key: bool,
    /// Host memory each worker keeps for KV states of prompt prefixes pushed out of its slots:
    /// bytes or a size such as `256MiB`, `0` to turn it off (default: as much as its slots' own
    /// KV cache). Counted in the worker's memory estimate. A model's `prompt_cache_mib` wins.
    #[arg(long, env = "EDEN_PROMPT_CACHE")]
    pub prompt_cache: Option<String>,
    /// Folder where workers keep prompt prefixes between runs (evictions, restarts, unloads),
    /// one subfolder per model file, context and build (default: `~/.cache/model-bucket/kv`).
    #[arg(long, env = "EDEN_KV_CACHE_DIR")]
    pub kv_cache_dir: Option<std::path::PathBuf>,
    /// The most `--kv-cache-dir` may hold: bytes or a size such as `4GiB`; `0` turns the disk
    /// cache off. Least recently used prefixes are removed first.
    #[arg(long, env = "EDEN_KV_CACHE_MAX", default_value = "4GiB")]
    pub kv_cache_max: String,
    /// Also serve the API on this port of the same address, for clients that assume Ollama's
    /// (`11434`); off by default.
    #[arg(long, env = "EDEN_OLLAMA_PORT")]
    pub ollama_port: Option<u16>,
    /// Folder where stored Responses (`store`, the default) are kept, so that
    /// `previous_response_id` continues them after a restart; private to the server's user
    /// (default: `~/.cache/model-bucket/responses`).
    #[arg(long, env = "EDEN_RESPONSES_DIR")]
    pub responses_dir: Option<std::path::PathBuf>,
    /// The most `--responses-dir` may hold: bytes or a size such as `512MiB`; oldest removed
    /// first, and none kept past 30 days. `0` keeps stored responses in memory only.
    #[arg(long, env = "EDEN_RESPONSES_MAX", default_value = "1GiB")]
    pub responses_max: String,
    /// Do not watch the models folder or the config file (SIGHUP or `POST /admin/rescan` still
    /// rescan and reload).
    #[arg(long, env = "EDEN_NO_WATCH")]
    pub no_watch: bool,
    /// Another Model Bucket node (`http://host:port`, repeatable): requests for models this
    /// node lacks go to the node that has them. Adds to the config's `peers`.
    #[arg(long = "peer", env = "EDEN_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// `NAME:PORT` resolved at every poll to all its addresses, each a peer (overrides the
    /// config's `peers_dns`).
    #[arg(long, env = "EDEN_PEERS_DNS")]
    pub peers_dns: Option<String>,
    /// The DNS server (`IP:PORT`) that resolves `--peers-dns` (default: the system's).
    #[arg(long, env = "EDEN_PEERS_DNS_SERVER")]
    pub peers_dns_server: Option<std::net::SocketAddr>,
    /// Milliseconds between polls of the peers' models.
    #[arg(long, env = "EDEN_PEER_POLL_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub peer_poll_ms: u64,
}

/// Where a running server is, for `ps`, `load` and `unload`.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The server's base URL.
    #[arg(long, env = "EDEN_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The server's API key, if it needs one.
    #[arg(long, env = "EDEN_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The server's admin key, if it has one (sent instead of the API key).
    #[arg(long, env = "EDEN_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
}

// Parsed once at start: the size of the serve arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve every model in the folder through the OpenAI-compatible API.
    Serve {
        #[command(flatten)]
        serve: ServeArgs,
        #[command(flatten)]
        bucket: BucketArgs,
    },
    /// List the models in the folder.
    List {
        /// Print a JSON array of model objects (with `--all`: `{"models": [...], "skipped": [...]}`).
        #[arg(long)]
        json: bool,
        /// Also show files that are skipped, with the reason.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        bucket: BucketArgs,
    },
    /// Show one model: its ID, aliases, capabilities, context length, file.
    Info {
        /// Full ID, alias, custom ID or file name.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        bucket: BucketArgs,
    },
    /// Run a worker for one model and stream the answer to a prompt to stdout (no server
    /// needed). The prompt goes through the model's chat template when it has one.
    Generate {
        /// Full ID, alias, custom ID or file name.
        id: String,
        /// The prompt (a user message, or raw text with `--raw` or for models without a chat
        /// template).
        prompt: String,
        /// Generated tokens at most.
        #[arg(long, default_value_t = 1024)]
        max_tokens: u32,
        /// Sampling temperature; 0 is greedy (the same text every time).
        #[arg(long, default_value_t = 0.8)]
        temperature: f32,
        /// Random seed for sampling.
        #[arg(long)]
        seed: Option<u32>,
        /// Send the prompt as is, without the chat template.
        #[arg(long)]
        raw: bool,
        /// Context size in tokens (default: the config's, else the model's up to 4096).
        #[arg(long)]
        ctx: Option<u32>,
        /// Threads (default: the config's, else every core).
        #[arg(long)]
        threads: Option<u32>,
        /// Print token counts and speed to stderr at the end.
        #[arg(long)]
        stats: bool,
        #[command(flatten)]
        bucket: BucketArgs,
    },
    /// Show the workers of a running server: state, pid, cores, memory, slots, restarts.
    Ps {
        /// Print the server's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Load a model on a running server and wait until it is ready.
    Load {
        /// Full ID, alias, custom ID or file name.
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Unload a model on a running server (its in-flight requests finish first).
    Unload {
        /// Full ID, alias, custom ID or file name.
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Download a GGUF model from the Hugging Face hub into the models folder (resumable,
    /// checked against the hub's SHA-256). `NAME` is `owner/repo` or a name from `recommend`.
    /// `HF_TOKEN` authorizes gated repos; `EDEN_HF_ENDPOINT` points at a mirror.
    Pull {
        /// `owner/repo`, or a recommended model's name (e.g. `mistral-7b`).
        name: String,
        /// The file in the repo (default: asked on a terminal, else the preferred quantization).
        file: Option<String>,
        /// Branch, tag or commit.
        #[arg(long, default_value = "main")]
        revision: String,
        /// Take the default file without asking.
        #[arg(long, short)]
        yes: bool,
        /// Print the new model as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        bucket: BucketArgs,
    },
    /// List the recommended models `pull NAME` knows, with sizes and whether each fits this
    /// machine's memory.
    Recommend,
    /// Put a GGUF file into the models folder (hard link when on the same filesystem, else a
    /// copy) and show the model it becomes.
    Add {
        /// The GGUF file.
        path: PathBuf,
        /// An extra ID for the model, kept in the folder.
        #[arg(long = "id")]
        custom_id: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        bucket: BucketArgs,
    },
}
