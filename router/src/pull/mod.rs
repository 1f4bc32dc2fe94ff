//! Pulling GGUF files from a Hugging Face-style hub into the bucket: listing a repo's files,
//! picking a default quantization, the built-in list of recommended models, and a resumable,
//! verified download that only ever shows the finished file under its real name.

pub mod active;
pub mod download;
pub mod error;
pub mod hub;
pub mod pick;
pub mod recommend;

pub use active::{ActivePulls, PullTicket};
pub use download::{fetch, Progress, Target};
pub use error::PullError;
pub use hub::{Hub, RepoFile};

/// What to pull: `repo` (+ `file`), or a recommended model's name.
#[derive(Debug, Clone)]
pub struct Request {
    pub repo: String,
    pub file: Option<String>,
    pub revision: String,
}

impl Request {
    /// Reads `name_or_repo [file]`: `owner/repo` is a repo; anything else must be a recommended
    /// model's name, which brings its repo and file.
    pub fn parse(name_or_repo: &str, file: Option<&str>, revision: &str) -> Result<Request, PullError> {
        if name_or_repo.contains('/') {
            return Ok(Request {
                repo: name_or_repo.into(),
                file: file.map(str::to_string),
                revision: revision.into(),
            });
        }
        match recommend::find(name_or_repo) {
            Some(r) => Ok(Request {
                repo: r.repo.into(),
                file: Some(file.unwrap_or(r.file).to_string()),
                revision: revision.into(),
            }),
            None => Err(PullError::UnknownName {
                name: name_or_repo.into(),
                known: recommend::LIST.iter().map(|r| r.name).collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// Finds the file to pull in the repo's listing: the one asked for, else the default pick.
    pub fn target(&self, files: &[RepoFile]) -> Result<Target, PullError> {
        let chosen = match &self.file {
            Some(name) => files.iter().find(|f| &f.path == name).ok_or_else(|| PullError::NotFound {
                what: format!("file {name} in {} (it has: {})", self.repo, pick::gguf_names(files)),
            })?,
            None => pick::default_choice(files)
                .ok_or_else(|| PullError::NotFound { what: format!("any .gguf file in {}", self.repo) })?,
        };
        let name = chosen.path.rsplit('/').next().unwrap_or(&chosen.path);
        if !name.ends_with(".gguf") || name.starts_with('.') || name.contains('\\') {
            return Err(PullError::NotGguf { file: chosen.path.clone() });
        }
        Ok(Target {
            repo: self.repo.clone(),
            revision: self.revision.clone(),
            file: chosen.path.clone(),
            size: chosen.size,
            sha256: chosen.sha256.clone(),
        })
    }
}
