//! What `olm rm` and `olm verify` do to the store: remove a name and the
//! files no other name uses, and re-hash stored files against their
//! manifests. Both stay inside the store: a removal deletes entries (a link
//! itself, never what it points to) and notes every link out of the store it
//! met in [`Removal::left`]; verify reports such links as
//! [`Problem::Outside`] and never reads through them.
//! Must not touch: the terminal (the commands print what these return).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::confine::{escape_of, Escape, Root};
use super::manifest::{self, Manifest, ManifestFile};
use super::{
    sha256_reader, split, sync_directory, HubKind, ModelRef, RepoCache, Store, StoreError,
};

/// What is wrong with one stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Missing, of another size or hash, or not a regular file.
    Changed(String),
    /// A symlink on the way leads outside the store; olm did not follow it.
    Outside(Escape),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Changed(reason) => formatter.write_str(reason),
            Problem::Outside(escape) => write!(formatter, "{escape}"),
        }
    }
}

/// Result of checking one stored file against its manifest.
#[derive(Debug, Clone)]
pub struct FileCheck {
    pub model: String,
    pub path: PathBuf,
    /// `None` when the file matches; otherwise what is wrong.
    pub problem: Option<Problem>,
}

/// What [`Store::remove`] did.
#[derive(Debug, Clone, Default)]
pub struct Removal {
    /// Files (or links in their place) deleted.
    pub removed: Vec<PathBuf>,
    /// Links leading outside the store: nothing was deleted through them
    /// (a link that was itself a stored file is in `removed`).
    pub left: Vec<Escape>,
}

impl Removal {
    /// Note a link out of the store (once, however often it was met).
    fn leave(&mut self, escape: &Escape) {
        if !self.left.contains(escape) {
            self.left.push(escape.clone());
        }
    }
}

impl Store {
    /// Remove a stored name, and each of its blobs no other name refers to.
    /// Only entries inside the store are removed (a link itself, never what
    /// it points to); the links out of the store that kept olm from
    /// touching something are in [`Removal::left`].
    pub fn remove(&self, manifest: &Manifest) -> Result<Removal, StoreError> {
        self.remove_manifest(&ModelRef::parse_name(&manifest.name)?)?;
        self.remove_unused(manifest)
    }

    /// Remove the manifest of `reference` only: for one that cannot be read
    /// (damaged, forged, too large), the name goes and its files, which the
    /// manifest no longer says, stay for `olm verify` to report. Only the
    /// manifest inside the store is touched. Returns its path.
    pub fn remove_manifest(&self, reference: &ModelRef) -> Result<PathBuf, StoreError> {
        let Some(path) = manifest::manifest_path(&self.manifests(), reference) else {
            return Err(StoreError::NotInStore(reference.to_string()));
        };
        let (directory, _) = split(&path)?;
        let resolved_directory = self
            .home
            .resolve(directory)
            .map_err(StoreError::io("cannot remove", &path))?;
        self.home
            .remove_entry(&path)
            .map_err(StoreError::io("cannot remove", &path))?;
        let _ = sync_directory(&resolved_directory);
        self.remove_empty_folders(directory);
        Ok(path)
    }

    /// Remove the blobs of `manifest` (a name already removed or replaced)
    /// that no stored name refers to now, with their snapshot links unless
    /// a stored name uses the same link. Returns the blobs removed.
    pub fn remove_unused_files(&self, manifest: &Manifest) -> Result<Vec<PathBuf>, StoreError> {
        self.remove_unused(manifest).map(|removal| removal.removed)
    }

    /// [`Store::remove_unused_files`], also saying which links out of the
    /// store kept it from removing something.
    pub fn remove_unused(&self, manifest: &Manifest) -> Result<Removal, StoreError> {
        let (others, _) = self.manifests_all();
        let mut removal = Removal::default();
        for file in &manifest.files {
            let blob = self.blob_path(manifest, file);
            let shared = others
                .iter()
                .any(|other| other.files.iter().any(|f| self.blob_path(other, f) == blob));
            if shared {
                continue;
            }
            // A Hugging Face model's snapshot link goes with its blob; a
            // ModelScope file is its own blob (that layout has no links).
            if let (Some(repo), HubKind::HuggingFace) = (manifest.repo(), manifest.hub) {
                let link = self.file_path(manifest, file);
                let link_in_use = others
                    .iter()
                    .any(|other| other.files.iter().any(|f| self.file_path(other, f) == link));
                if !link_in_use {
                    remove_snapshot_link(&self.repo_cache(&repo), &link, &mut removal)?;
                }
            }
            remove_blob(self.blob_root(manifest), &blob, &mut removal)?;
        }
        Ok(removal)
    }

    /// Remove the empty manifest folders from `directory` up to `manifests/`.
    fn remove_empty_folders(&self, mut directory: &Path) {
        let stop = self.manifests();
        while directory != stop && directory.starts_with(&stop) {
            if !self.home.remove_empty_dir(directory).unwrap_or(false) {
                return;
            }
            match directory.parent() {
                Some(parent) => directory = parent,
                None => return,
            }
        }
    }

    /// Re-hash a stored model's files against its manifest. A file that
    /// leads outside the store is reported, never read; for hub models the
    /// snapshot file (what `olm run` loads) must also link to the blob checked.
    pub fn verify(&self, manifest: &Manifest) -> Vec<FileCheck> {
        manifest
            .files
            .iter()
            .map(|file| {
                let path = self.blob_path(manifest, file);
                FileCheck {
                    model: manifest.name.clone(),
                    problem: self.check_file(manifest, file, &path),
                    path,
                }
            })
            .collect()
    }

    fn check_file(&self, manifest: &Manifest, file: &ManifestFile, blob: &Path) -> Option<Problem> {
        let outside = |error: &io::Error| escape_of(error).cloned().map(Problem::Outside);
        // What `olm run` loads: the snapshot file (hub) or the blob (local).
        let loaded_path = self.file_path(manifest, file);
        let loaded = match self.resolve_file(manifest, file) {
            Ok(loaded) => loaded,
            Err(error) => {
                return Some(outside(&error).unwrap_or_else(|| {
                    Problem::Changed(format!("cannot read {}: {error}", loaded_path.display()))
                }))
            }
        };
        let root = self.blob_root(manifest);
        let resolved_blob = match root.resolve(blob) {
            Ok(resolved) => resolved,
            Err(error) => {
                return Some(
                    outside(&error)
                        .unwrap_or_else(|| Problem::Changed(format!("cannot read: {error}"))),
                )
            }
        };
        if let Some(problem) = check_blob(root, &resolved_blob, file) {
            return Some(Problem::Changed(problem));
        }
        if fs::symlink_metadata(&loaded).is_err() {
            return Some(Problem::Changed(format!(
                "{} is missing",
                loaded_path.display()
            )));
        }
        let is_link = fs::symlink_metadata(&loaded_path)
            .is_ok_and(|metadata| metadata.file_type().is_symlink());
        if is_link && loaded != resolved_blob {
            return Some(Problem::Changed(format!(
                "{} links to {}, not to this blob",
                loaded_path.display(),
                loaded.display()
            )));
        }
        None
    }
}

/// Remove a snapshot link (never a plain file, which another tool may own);
/// a link that itself leads out is removed and noted.
fn remove_snapshot_link(
    cache: &RepoCache,
    link: &Path,
    removal: &mut Removal,
) -> Result<(), StoreError> {
    let (directory, file_name) = split(link)?;
    let directory = match cache.cache().resolve(directory) {
        Ok(directory) => directory,
        Err(error) => return note_escape(error, link, removal),
    };
    let is_link = fs::symlink_metadata(directory.join(file_name))
        .is_ok_and(|metadata| metadata.file_type().is_symlink());
    if !is_link {
        return Ok(());
    }
    if let Err(error) = cache.resolve_snapshot_file(link) {
        if let Some(escape) = escape_of(&error) {
            removal.leave(escape);
        }
    }
    match cache.remove_entry(link) {
        Ok(_) => Ok(()),
        Err(error) => note_escape(error, link, removal),
    }
}

/// Remove a blob entry (a link in its place: the link only, noted when it
/// led out); nothing under a folder that leads out.
fn remove_blob(root: &Root, blob: &Path, removal: &mut Removal) -> Result<(), StoreError> {
    if let Err(error) = root.resolve(blob) {
        if let Some(escape) = escape_of(&error) {
            removal.leave(escape);
            if escape.link() != blob {
                return Ok(());
            }
        }
    }
    match root.remove_entry(blob) {
        Ok(true) => removal.removed.push(blob.to_owned()),
        Ok(false) => {}
        Err(error) => return note_escape(error, blob, removal),
    }
    Ok(())
}

/// An escape met while removing is noted and stops nothing; other errors do.
fn note_escape(error: io::Error, path: &Path, removal: &mut Removal) -> Result<(), StoreError> {
    match escape_of(&error) {
        Some(escape) => {
            removal.leave(escape);
            Ok(())
        }
        None => Err(StoreError::io("cannot remove", path)(error)),
    }
}

/// Check a resolved blob inside `root`: a regular file (not a link) of the
/// manifest's size and sha256, read without following links.
fn check_blob(root: &Root, path: &Path, file: &ManifestFile) -> Option<String> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) => return Some(format!("cannot read: {error}")),
    };
    if !metadata.file_type().is_file() {
        return Some("is not a regular file (a symlink or folder replaced it)".into());
    }
    if metadata.len() != file.size {
        return Some(format!(
            "size is {} bytes, expected {}",
            metadata.len(),
            file.size
        ));
    }
    match root.open_resolved(path).and_then(sha256_reader) {
        Ok(sha256) if sha256 == file.sha256 => None,
        Ok(sha256) => Some(format!("sha256 is {sha256}, expected {}", file.sha256)),
        Err(error) => Some(format!("cannot read: {error}")),
    }
}
