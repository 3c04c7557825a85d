//! olm's manifests: one JSON file per store name under `OLM_HOME/manifests`,
//! recording where the model came from and the sha256 and size of each file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::names::{check_repo_file_name, is_commit, is_revision, is_sha256};
use super::reference::{HubKind, ModelRef, RepoId};
use super::StoreError;

/// Where a model's files came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// A hub repo at a revision: on Hugging Face a commit, the files in the
    /// HF cache; on ModelScope ([`Manifest::hub`]) a revision such as
    /// `master`, the files in the ModelScope cache.
    Hub { repo: String, revision: String },
    /// A local file imported with `olm pull FILE --name`; its copy lives in `OLM_HOME/blobs`.
    Local { original: PathBuf },
}

/// One file of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Name inside the repo (hub) or the original file name (local).
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

/// What olm knows about a store name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The store name, e.g. `qwen-7b`, `qwen-7b:Q8_0`, `owner/repo:Q4_K_M`.
    pub name: String,
    pub source: Source,
    /// The quant, when known (`Q4_K_M`).
    pub quant: Option<String>,
    /// The model's files; the first is the one to load (split sets: part 1).
    pub files: Vec<ManifestFile>,
    /// Seconds since the Unix epoch.
    pub pulled_at: u64,
    /// Which hub a [`Source::Hub`] model came from (absent: Hugging Face,
    /// as in manifests written before ModelScope was a source).
    #[serde(default, skip_serializing_if = "HubKind::is_hugging_face")]
    pub hub: HubKind,
}

impl Manifest {
    /// Check every value that becomes part of a path, as if it came from outside.
    pub fn validate(&self, path: &Path) -> Result<(), StoreError> {
        let corrupt = |reason: &str| StoreError::CorruptManifest {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        ModelRef::parse_name(&self.name).map_err(|_| corrupt("invalid name"))?;
        if let Source::Hub { repo, revision } = &self.source {
            RepoId::parse(repo).map_err(|_| corrupt("invalid repo"))?;
            let valid = match self.hub {
                HubKind::HuggingFace => is_commit(revision),
                HubKind::ModelScope => is_revision(revision),
            };
            if !valid {
                return Err(corrupt("invalid revision"));
            }
        }
        if self.files.is_empty() {
            return Err(corrupt("no files"));
        }
        for file in &self.files {
            if !is_sha256(&file.sha256) {
                return Err(corrupt("invalid sha256"));
            }
            if matches!(self.source, Source::Hub { .. }) {
                check_repo_file_name(&file.name).map_err(corrupt)?;
            }
        }
        Ok(())
    }

    /// Total size of all files in bytes.
    pub fn size(&self) -> u64 {
        self.files
            .iter()
            .fold(0u64, |total, file| total.saturating_add(file.size))
    }

    /// The hub a hub model came from; `None` for an imported file.
    pub fn hub_kind(&self) -> Option<HubKind> {
        match self.source {
            Source::Hub { .. } => Some(self.hub),
            Source::Local { .. } => None,
        }
    }

    /// The repo, for hub models.
    pub fn repo(&self) -> Option<RepoId> {
        match &self.source {
            Source::Hub { repo, .. } => RepoId::parse(repo).ok(),
            Source::Local { .. } => None,
        }
    }
}

/// The manifest file for a store name: `manifests/<base parts>/<TAG or _>.json`.
pub fn manifest_path(manifests: &Path, reference: &ModelRef) -> Option<PathBuf> {
    let mut path = manifests.to_path_buf();
    match reference {
        ModelRef::Path(_) => return None,
        ModelRef::Name { name, .. } => path.push(name),
        ModelRef::Repo { repo, .. } => {
            // The hub is not part of the name: one model, wherever it came from.
            path.push(&repo.owner);
            path.push(&repo.name);
        }
    }
    path.push(format!("{}.json", reference.tag().unwrap_or("_")));
    Some(path)
}
