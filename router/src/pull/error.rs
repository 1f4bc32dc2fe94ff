//! Why a pull failed, in words a user can act on.

use crate::supervisor::budget::human;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("cannot reach {endpoint}: {message} (no network? set EDEN_HF_ENDPOINT for a mirror)")]
    Network { endpoint: String, message: String },
    #[error("not found: {what}")]
    NotFound { what: String },
    #[error("{repo} needs authorization (gated or private): accept its terms on the hub and set HF_TOKEN")]
    Unauthorized { repo: String },
    #[error("the hub answered {status} for {url}: {message}")]
    Http { status: u16, url: String, message: String },
    #[error("not enough disk space in {dir}: the download needs {} more, {} is free", human(*.need), human(*.free))]
    DiskFull { dir: String, need: u64, free: u64 },
    #[error("checksum mismatch for {file}: expected SHA-256 {expected}, got {got}; the download was removed")]
    Checksum { file: String, expected: String, got: String },
    #[error("size mismatch for {file}: expected {expected} bytes, got {got}; the download was removed")]
    Size { file: String, expected: u64, got: u64 },
    #[error("{path} already exists with other content; move it away first")]
    Exists { path: String },
    #[error("unknown model name {name:?}: use owner/repo, or one of: {known}")]
    UnknownName { name: String, known: String },
    #[error("the download kept failing after {attempts} attempts: {message} (run the same pull again to resume)")]
    Interrupted { attempts: u32, message: String },
    #[error("{file} is not a GGUF file name (it must end in .gguf and not start with a dot)")]
    NotGguf { file: String },
    #[error("{file} is already being pulled")]
    InProgress { file: String },
    #[error("the pull was cancelled: its client left (run it again to resume)")]
    Cancelled,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl PullError {
    /// The HTTP status `/admin/pull` answers with.
    pub fn status(&self) -> u16 {
        match self {
            PullError::NotFound { .. } | PullError::UnknownName { .. } => 404,
            PullError::Unauthorized { .. } => 401,
            PullError::Exists { .. } | PullError::InProgress { .. } => 409,
            PullError::NotGguf { .. } => 400,
            PullError::Cancelled => 499,
            PullError::DiskFull { .. } => 507,
            PullError::Network { .. } | PullError::Http { .. } | PullError::Interrupted { .. } => 502,
            PullError::Checksum { .. } | PullError::Size { .. } => 502,
            PullError::Io(_) => 500,
        }
    }
}
