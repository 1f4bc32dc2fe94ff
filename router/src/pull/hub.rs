//! The hub's HTTP API: `GET /api/models/{repo}/tree/{revision}` lists a repo's files (with size
//! and, for LFS files, SHA-256); `GET /{repo}/resolve/{revision}/{file}` serves a file, with
//! `Range` for resuming.

use serde::Deserialize;
use std::io::Read;
use std::time::Duration;

use super::PullError;

/// The public hub; `EDEN_HF_ENDPOINT` points elsewhere (a mirror, or a test server).
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// One file of a repo.
#[derive(Debug, Clone, PartialEq)]
pub struct RepoFile {
    pub path: String,
    pub size: u64,
    /// From the LFS pointer, when the hub gives one.
    pub sha256: Option<String>,
}

#[derive(Deserialize)]
struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    oid: String,
    size: u64,
}

pub struct Hub {
    pub endpoint: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// An open download: the body from `offset` on.
pub struct Body {
    pub reader: Box<dyn Read + Send>,
    /// Where the body starts in the file: the offset asked for, or 0 when the server ignored
    /// the range.
    pub offset: u64,
}

impl Hub {
    pub fn new(endpoint: &str, token: Option<String>) -> Hub {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(Duration::from_secs(60))
            .user_agent(concat!("model-bucket/", env!("CARGO_PKG_VERSION")))
            .build();
        Hub { endpoint: endpoint.trim_end_matches('/').to_string(), token: token.filter(|t| !t.is_empty()), agent }
    }

    /// The hub from `EDEN_HF_ENDPOINT` and `HF_TOKEN`.
    pub fn from_env() -> Hub {
        let endpoint = std::env::var("EDEN_HF_ENDPOINT").unwrap_or_else(|_| DEFAULT_ENDPOINT.to_string());
        Hub::new(&endpoint, std::env::var("HF_TOKEN").ok())
    }

    fn get(&self, url: &str) -> ureq::Request {
        let req = self.agent.get(url);
        match &self.token {
            Some(t) => req.set("Authorization", &format!("Bearer {t}")),
            None => req,
        }
    }

    fn fail(&self, e: ureq::Error, url: &str, repo: &str, what: &str) -> PullError {
        match e {
            ureq::Error::Status(401 | 403, _) => PullError::Unauthorized { repo: repo.to_string() },
            ureq::Error::Status(404, _) => PullError::NotFound { what: what.to_string() },
            ureq::Error::Status(status, resp) => {
                let message = resp.into_string().unwrap_or_default().chars().take(300).collect();
                PullError::Http { status, url: url.to_string(), message }
            }
            ureq::Error::Transport(t) => PullError::Network { endpoint: self.endpoint.clone(), message: t.to_string() },
        }
    }

    /// Every file of `repo` at `revision`, in subfolders too.
    pub fn list(&self, repo: &str, revision: &str) -> Result<Vec<RepoFile>, PullError> {
        let url = format!("{}/api/models/{repo}/tree/{revision}?recursive=true", self.endpoint);
        let resp = self.get(&url).call().map_err(|e| self.fail(e, &url, repo, &format!("repo {repo}")))?;
        let entries: Vec<TreeEntry> = resp.into_json().map_err(|e| PullError::Http {
            status: 200,
            url: url.clone(),
            message: format!("unexpected listing: {e}"),
        })?;
        Ok(entries
            .into_iter()
            .filter(|e| e.kind == "file")
            .map(|e| match e.lfs {
                Some(lfs) => RepoFile { path: e.path, size: lfs.size, sha256: Some(lfs.oid) },
                None => RepoFile { path: e.path, size: e.size, sha256: None },
            })
            .collect())
    }

    /// Opens `file` from byte `offset` on.
    pub fn open(&self, repo: &str, revision: &str, file: &str, offset: u64) -> Result<Body, PullError> {
        let url = format!("{}/{repo}/resolve/{revision}/{file}", self.endpoint);
        let mut req = self.get(&url);
        if offset > 0 {
            req = req.set("Range", &format!("bytes={offset}-"));
        }
        let resp = req.call().map_err(|e| self.fail(e, &url, repo, &format!("file {file} in {repo}")))?;
        let offset = if resp.status() == 206 { offset } else { 0 };
        Ok(Body { reader: Box::new(resp.into_reader()), offset })
    }
}
