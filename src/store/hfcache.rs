//! The Hugging Face cache layout (`models--owner--repo/{blobs,snapshots,refs}`
//! and `.locks`), shared with huggingface_hub and other tools, so a file is
//! stored once. Every part of a path built here was validated first.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::names::{check_repo_file_name, is_commit, is_sha256};
use super::reference::RepoId;

/// Paths inside one repo's cache folder.
#[derive(Debug, Clone)]
pub struct RepoCache {
    pub root: PathBuf,
    lock_root: PathBuf,
}

impl RepoCache {
    pub fn new(cache: &Path, repo: &RepoId) -> Self {
        Self {
            root: cache.join(repo.cache_folder()),
            lock_root: cache.join(".locks").join(repo.cache_folder()),
        }
    }

    /// `blobs/<sha256>`; `sha256` must be validated hex.
    pub fn blob(&self, sha256: &str) -> PathBuf {
        debug_assert!(is_sha256(sha256));
        self.root.join("blobs").join(sha256)
    }

    /// `blobs/<sha256>.incomplete`: the partial download.
    pub fn partial(&self, sha256: &str) -> PathBuf {
        self.root.join("blobs").join(format!("{sha256}.incomplete"))
    }

    /// `.locks/models--owner--repo/<sha256>.lock`.
    pub fn lock(&self, sha256: &str) -> PathBuf {
        self.lock_root.join(format!("{sha256}.lock"))
    }

    /// `snapshots/<commit>/<file name>`.
    pub fn snapshot_file(&self, commit: &str, name: &str) -> PathBuf {
        debug_assert!(is_commit(commit) && check_repo_file_name(name).is_ok());
        self.root.join("snapshots").join(commit).join(name)
    }

    /// `refs/<revision>`.
    pub fn reference(&self, revision: &str) -> PathBuf {
        self.root.join("refs").join(revision)
    }

    /// The commit `refs/main` points at, if it is a valid commit.
    pub fn main_commit(&self) -> Option<String> {
        let text = fs::read_to_string(self.reference("main")).ok()?;
        let commit = text.trim();
        is_commit(commit).then(|| commit.to_owned())
    }

    /// Make `snapshots/<commit>/<name>` a relative symlink to `blobs/<sha256>`
    /// (replacing an old link), as huggingface_hub does.
    pub fn link_snapshot(&self, commit: &str, name: &str, sha256: &str) -> io::Result<PathBuf> {
        let link = self.snapshot_file(commit, name);
        let directory = link
            .parent()
            .ok_or_else(|| io::Error::other("snapshot path has no parent"))?;
        fs::create_dir_all(directory)?;
        let depth = name.matches('/').count() + 2;
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(sha256);
        let temp = directory.join(format!(".{}.{}.link", sha256, std::process::id()));
        let _ = fs::remove_file(&temp);
        std::os::unix::fs::symlink(&target, &temp)?;
        super::atomic::rename_durable(&temp, &link)?;
        Ok(link)
    }
}

/// A `.gguf` file found in the HF cache (pulled by olm or another tool).
#[derive(Debug, Clone)]
pub struct CachedFile {
    pub repo: RepoId,
    pub commit: String,
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
}

/// Every `.gguf` file in snapshots of the HF cache (two levels of folders at most).
pub fn scan(cache: &Path) -> Vec<CachedFile> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(cache) else {
        return found;
    };
    for entry in entries.flatten() {
        let folder = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = folder.strip_prefix("models--") else {
            continue;
        };
        let Some((owner, name)) = rest.split_once("--") else {
            continue;
        };
        let Ok(repo) = RepoId::parse(&format!("{owner}/{name}")) else {
            continue;
        };
        let Ok(snapshots) = fs::read_dir(entry.path().join("snapshots")) else {
            continue;
        };
        for snapshot in snapshots.flatten() {
            let commit = snapshot.file_name().to_string_lossy().into_owned();
            if is_commit(&commit) {
                collect_gguf(&snapshot.path(), "", 0, &repo, &commit, &mut found);
            }
        }
    }
    found.sort_by(|a, b| (&a.repo, &a.name).cmp(&(&b.repo, &b.name)));
    found
}

fn collect_gguf(
    directory: &Path,
    prefix: &str,
    depth: usize,
    repo: &RepoId,
    commit: &str,
    found: &mut Vec<CachedFile>,
) {
    let Ok(entries) = fs::read_dir(directory) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let name = format!("{prefix}{file_name}");
        let path = entry.path();
        let Ok(metadata) = fs::metadata(&path) else {
            continue;
        };
        if metadata.is_dir() && depth < 2 {
            collect_gguf(&path, &format!("{name}/"), depth + 1, repo, commit, found);
        } else if metadata.is_file()
            && file_name.to_ascii_lowercase().ends_with(".gguf")
            && check_repo_file_name(&name).is_ok()
        {
            found.push(CachedFile {
                repo: repo.clone(),
                commit: commit.to_owned(),
                name,
                path,
                size: metadata.len(),
            });
        }
    }
}
