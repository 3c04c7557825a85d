//! The model store: what the user typed as MODEL, and where its files are.
//!
//! Owns: model references ([`ModelRef`], validated so no name can escape the
//! store), olm's home directory ([`olm_home`]) and its manifests, the
//! Hugging Face and ModelScope cache layouts (shared with other tools), file
//! locks, atomic writes, sha256 of stored files, import of local files, `rm`
//! and `verify`. The store never acts outside itself: every path it reads,
//! hashes, lists, links or deletes is confined to olm's home or one of the
//! caches (`confine`).
//! Uses: `gguf` (a file is validated before it is registered).
//! Must not touch: llama.cpp, the network, the terminal.

mod atomic;
pub mod bundle;
mod confine;
mod hfcache;
mod manifest;
mod mscache;
pub mod names;
mod reference;
pub mod space;
mod upkeep;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

pub use atomic::{refuse_non_regular_target, rename_durable, sync_directory, write_atomic};
pub use confine::{escape_of, Escape, Root};
pub use hfcache::{scan as scan_hf_cache, CachedFile, RepoCache};
pub use manifest::{Manifest, ManifestFile, Source};
pub use mscache::{
    scan_root as scan_modelscope_cache, MsCachedFile, MsRepoCache,
    DEFAULT_REVISION as MODELSCOPE_REVISION,
};
pub use reference::{HubKind, ModelRef, RepoId};
pub use upkeep::{FileCheck, Problem, Removal};

use names::escaped;

/// The most bytes read from one manifest file.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// Why a model reference could not be resolved or the store could not act.
///
/// A path that leads outside the store is a [`StoreError::Io`] whose
/// error carries the [`Escape`] ([`StoreError::escape`]).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("model reference is empty")]
    EmptyReference,
    #[error("invalid model reference \"{reference}\": {reason}")]
    InvalidReference {
        reference: String,
        reason: &'static str,
    },
    #[error("no such file: {}", .0.display())]
    NoSuchFile(PathBuf),
    #[error("model '{0}' is not in the store")]
    NotInStore(String),
    #[error("manifest {} is damaged: {reason}", path.display())]
    CorruptManifest { path: PathBuf, reason: String },
    #[error("{} is one part of a split model; only single-file models can be imported", .0.display())]
    SplitImport(PathBuf),
    #[error("{} is not a usable model", path.display())]
    InvalidModel {
        path: PathBuf,
        #[source]
        source: crate::gguf::GgufError,
    },
    /// The message names the I/O error itself (it is not also a `source`,
    /// which would print it twice in an error chain).
    #[error("{action} {}: {error}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },
}

impl StoreError {
    /// An invalid reference; the text is shown escaped.
    pub fn invalid(reference: &str, reason: &'static str) -> Self {
        StoreError::InvalidReference {
            reference: escaped(reference),
            reason,
        }
    }

    fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Self + 'a {
        move |error| StoreError::Io {
            action,
            path: path.to_owned(),
            error,
        }
    }

    /// Whether the disk is full (exit 6).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Io { error, .. } if is_disk_full(error))
    }

    /// The symlink leading outside the store that stopped the store, if any.
    pub fn escape(&self) -> Option<&Escape> {
        match self {
            StoreError::Io { error, .. } => escape_of(error),
            _ => None,
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            StoreError::EmptyReference | StoreError::InvalidReference { .. } => Some(
                "give a name (qwen-7b, qwen-7b:q8_0), a repo (owner/repo[:QUANT]) or a path to a .gguf file".into(),
            ),
            StoreError::NoSuchFile(_) => None,
            StoreError::NotInStore(name) => Some(format!("run `olm pull {name}` first, or give a path to a .gguf file")),
            StoreError::CorruptManifest { .. } => Some("remove it with `olm rm` and pull the model again".into()),
            StoreError::InvalidModel { .. } => None,
            StoreError::SplitImport(path) => Some(format!(
                "run it by its path instead: olm run {}",
                path.display()
            )),
            StoreError::Io { .. } if self.escape().is_some() => Some(
                "olm does not follow links out of its store; remove the link, then `olm rm` the model and pull it again".into(),
            ),
            StoreError::Io { .. } if self.is_disk_full() => Some("free some disk space and try again".into()),
            StoreError::Io { .. } => None,
        }
    }
}

/// Whether an I/O error means the disk is full.
pub fn is_disk_full(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::StorageFull || error.raw_os_error() == Some(libc::ENOSPC)
}

/// A resolved model: the file to load and, for stored models, the manifest.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub path: PathBuf,
    pub manifest: Option<Manifest>,
}

/// olm's home directory: `OLM_HOME` if set and not empty, else the platform
/// data directory (`~/.local/share/olm` on Linux), made absolute so that
/// runs from different folders share one store. The one definition: chat
/// keeps its history here too.
pub fn olm_home() -> PathBuf {
    if let Some(home) = std::env::var_os(crate::env::OLM_HOME).filter(|value| !value.is_empty()) {
        return absolute(PathBuf::from(home));
    }
    match directories::ProjectDirs::from("", "", "olm") {
        Some(dirs) => dirs.data_dir().to_path_buf(),
        None => absolute(PathBuf::from(".olm")),
    }
}

/// Where a download writes: the finished file, its partial file, and the
/// locks held while writing (taken in this order), all inside `root`.
#[derive(Debug, Clone)]
pub struct DownloadPaths {
    pub root: Root,
    /// The finished, verified file (`blobs/<sha256>`, or the ModelScope
    /// snapshot file); it appears only by a rename.
    pub target: PathBuf,
    pub partial: PathBuf,
    pub locks: Vec<PathBuf>,
    /// The target's name is its sha256 (a Hugging Face blob): a file there
    /// that does not match is damaged and goes at once. Otherwise (a
    /// ModelScope file, named by its path) it may be the verified previous
    /// version, replaced only once the new one is verified.
    pub named_by_hash: bool,
}

/// olm's store: `OLM_HOME`, the Hugging Face cache and the ModelScope
/// cache, each a [`Root`] the store does not leave.
#[derive(Debug, Clone)]
pub struct Store {
    home: Root,
    hf_cache: Root,
    ms_cache: Root,
}

impl Store {
    /// The store at explicit locations (each resolved once, now); the
    /// ModelScope cache is the one the environment names.
    pub fn new(home: PathBuf, hf_cache: PathBuf) -> Self {
        Self {
            home: Root::new(&home),
            hf_cache: Root::new(&hf_cache),
            ms_cache: Root::new(&modelscope_cache_dir()),
        }
    }

    /// The same store with the ModelScope cache at `ms_cache`.
    pub fn with_modelscope_cache(mut self, ms_cache: PathBuf) -> Self {
        self.ms_cache = Root::new(&ms_cache);
        self
    }

    /// The store the environment names (`OLM_HOME`, `HF_HUB_CACHE`,
    /// `HF_HOME`, `MODELSCOPE_CACHE`).
    pub fn from_env() -> Self {
        Self::new(olm_home(), hf_cache_dir())
    }

    /// olm's home, resolved.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// The Hugging Face cache, resolved.
    pub fn hf_cache(&self) -> &Path {
        self.hf_cache.path()
    }

    /// The ModelScope cache, resolved.
    pub fn modelscope_cache(&self) -> &Path {
        self.ms_cache.path()
    }

    /// The cache a hub's files go to.
    pub fn cache_of(&self, hub: HubKind) -> &Path {
        match hub {
            HubKind::HuggingFace => self.hf_cache(),
            HubKind::ModelScope => self.modelscope_cache(),
        }
    }

    /// A repo in the ModelScope cache (paths only; see [`MsRepoCache::check`]).
    pub fn ms_repo_cache(&self, repo: &RepoId) -> MsRepoCache {
        MsRepoCache::new(&self.ms_cache, repo)
    }

    /// Every GGUF file in the ModelScope cache, and the ones skipped because
    /// they lead outside the store.
    pub fn ms_cached_files(&self) -> (Vec<MsCachedFile>, Vec<StoreError>) {
        mscache::scan_root(&self.ms_cache)
    }

    /// olm's configuration file (user aliases).
    pub fn config_path(&self) -> PathBuf {
        self.home.join("config.toml")
    }

    fn manifests(&self) -> PathBuf {
        self.home.join("manifests")
    }

    /// The cache folder of a repo (paths only; see [`Store::checked_repo_cache`]).
    pub fn repo_cache(&self, repo: &RepoId) -> RepoCache {
        RepoCache::in_root(&self.hf_cache, repo)
    }

    /// The cache folder of a repo, refused when one of its folders (or an
    /// entry of `blobs`, `refs` or its lock folder) leads outside the cache.
    /// Check this before writing into the repo (a pull).
    pub fn checked_repo_cache(&self, repo: &RepoId) -> Result<RepoCache, StoreError> {
        let cache = self.repo_cache(repo);
        cache.check()?;
        Ok(cache)
    }

    /// Every GGUF file in the HF cache, and the ones skipped because they
    /// lead outside the store.
    pub fn cached_files(&self) -> (Vec<CachedFile>, Vec<StoreError>) {
        hfcache::scan_root(&self.hf_cache)
    }

    /// The manifest stored under exactly this name, if any.
    pub fn manifest(&self, reference: &ModelRef) -> Result<Option<Manifest>, StoreError> {
        let Some(path) = manifest::manifest_path(&self.manifests(), reference) else {
            return Ok(None);
        };
        let text = match self.read_manifest_text(&path) {
            Ok(text) => text,
            Err(StoreError::Io { error, .. }) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(None)
            }
            Err(error) => return Err(error),
        };
        parse_manifest(&path, &text).map(Some)
    }

    /// A manifest's text, read inside olm's home only, at most 1 MiB.
    fn read_manifest_text(&self, path: &Path) -> Result<String, StoreError> {
        let file = self
            .home
            .open_file(path)
            .map_err(StoreError::io("cannot read", path))?;
        let mut text = String::new();
        file.take(MAX_MANIFEST_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(StoreError::io("cannot read", path))?;
        if text.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(StoreError::CorruptManifest {
                path: path.to_owned(),
                reason: "larger than 1 MiB".into(),
            });
        }
        Ok(text)
    }

    /// Every manifest, sorted by name, and the damaged ones as errors (a
    /// manifest or folder that leads outside the store is one).
    pub fn manifests_all(&self) -> (Vec<Manifest>, Vec<StoreError>) {
        let mut found = Vec::new();
        let mut damaged = Vec::new();
        self.collect_manifests(&self.manifests(), 0, &mut found, &mut damaged);
        found.sort_by(|a: &Manifest, b| a.name.cmp(&b.name));
        (found, damaged)
    }

    fn collect_manifests(
        &self,
        directory: &Path,
        depth: usize,
        found: &mut Vec<Manifest>,
        damaged: &mut Vec<StoreError>,
    ) {
        let resolved = match self.home.resolve(directory) {
            Ok(resolved) => resolved,
            Err(error) => {
                damaged.push(StoreError::io("cannot read", directory)(error));
                return;
            }
        };
        let Ok(entries) = fs::read_dir(&resolved) else {
            return;
        };
        for entry in entries.flatten() {
            let path = directory.join(entry.file_name());
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(mut file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_symlink() {
                match self.home.resolve(&path) {
                    Ok(target) => match fs::metadata(&target) {
                        Ok(metadata) => file_type = metadata.file_type(),
                        Err(_) => continue,
                    },
                    Err(error) => {
                        damaged.push(StoreError::io("cannot read", &path)(error));
                        continue;
                    }
                }
            }
            if file_type.is_dir() && depth < 2 {
                self.collect_manifests(&path, depth + 1, found, damaged);
            } else if file_type.is_file() && name.ends_with(".json") && !name.starts_with('.') {
                match self
                    .read_manifest_text(&path)
                    .and_then(|text| parse_manifest(&path, &text))
                {
                    Ok(manifest) => found.push(manifest),
                    Err(error) => damaged.push(error),
                }
            }
        }
    }

    /// Write a manifest atomically; it becomes visible last, after its files.
    pub fn save_manifest(&self, manifest: &Manifest) -> Result<(), StoreError> {
        let reference = ModelRef::parse_name(&manifest.name)?;
        let Some(path) = manifest::manifest_path(&self.manifests(), &reference) else {
            return Err(StoreError::invalid(&manifest.name, "not a store name"));
        };
        manifest.validate(&path)?;
        let text = serde_json::to_vec_pretty(manifest)
            .map_err(|error| StoreError::io("cannot encode", &path)(io::Error::other(error)))?;
        let (directory, file_name) = split(&path)?;
        let directory = self
            .home
            .create_dir_all(directory)
            .map_err(StoreError::io("cannot write", &path))?;
        write_atomic(&directory.join(file_name), &text)
            .map_err(StoreError::io("cannot write", &path))
    }

    /// The files of a stored model, in load order (split sets: part 1
    /// first), as paths under the store; nothing is checked or followed.
    pub fn files(&self, manifest: &Manifest) -> Vec<PathBuf> {
        manifest
            .files
            .iter()
            .map(|file| self.file_path(manifest, file))
            .collect()
    }

    fn file_path(&self, manifest: &Manifest, file: &ManifestFile) -> PathBuf {
        match &manifest.source {
            Source::Hub { repo, revision } => match (RepoId::parse(repo), manifest.hub) {
                (Ok(repo), HubKind::HuggingFace) => {
                    self.repo_cache(&repo).snapshot_file(revision, &file.name)
                }
                (Ok(repo), HubKind::ModelScope) => {
                    self.ms_repo_cache(&repo).file(revision, &file.name)
                }
                (Err(_), _) => PathBuf::new(),
            },
            Source::Local { .. } => self.local_blob(&file.sha256),
        }
    }

    /// Where a model file leads, confined: a Hugging Face snapshot file must
    /// link into its repo's `blobs/`, a ModelScope file must lie in the
    /// ModelScope cache, an imported blob in olm's home.
    fn resolve_file(&self, manifest: &Manifest, file: &ManifestFile) -> io::Result<PathBuf> {
        let path = self.file_path(manifest, file);
        match (manifest.repo(), manifest.hub) {
            (Some(repo), HubKind::HuggingFace) => {
                self.repo_cache(&repo).resolve_snapshot_file(&path)
            }
            (Some(_), HubKind::ModelScope) => self.ms_cache.resolve(&path),
            (None, _) => self.home.resolve(&path),
        }
    }

    /// Where a file's bytes are: the HF cache blob, the ModelScope cache
    /// file itself (that layout has no blobs), or olm's own blob.
    pub fn blob_path(&self, manifest: &Manifest, file: &ManifestFile) -> PathBuf {
        match (manifest.repo(), manifest.hub) {
            (Some(repo), HubKind::HuggingFace) => self.repo_cache(&repo).blob(&file.sha256),
            (Some(_), HubKind::ModelScope) => self.file_path(manifest, file),
            (None, _) => self.local_blob(&file.sha256),
        }
    }

    /// The root a stored model's blobs live in.
    fn blob_root(&self, manifest: &Manifest) -> &Root {
        match (&manifest.source, manifest.hub) {
            (Source::Hub { .. }, HubKind::HuggingFace) => &self.hf_cache,
            (Source::Hub { .. }, HubKind::ModelScope) => &self.ms_cache,
            (Source::Local { .. }, _) => &self.home,
        }
    }

    fn local_blob(&self, sha256: &str) -> PathBuf {
        self.home.join("blobs").join(format!("sha256-{sha256}"))
    }

    /// The store name a reference means: the exact name, else the only tag of
    /// that name, else the untagged entry whose quant is the tag asked for.
    pub fn find(&self, reference: &ModelRef) -> Result<Option<Manifest>, StoreError> {
        if let Some(manifest) = self.manifest(reference)? {
            return Ok(Some(manifest));
        }
        let (all, _) = self.manifests_all();
        let base = reference.base();
        let same_base: Vec<&Manifest> = all
            .iter()
            .filter(|manifest| {
                ModelRef::parse_name(&manifest.name).is_ok_and(|parsed| parsed.base() == base)
            })
            .collect();
        let found = match reference.tag() {
            None if same_base.len() == 1 => Some(same_base[0].clone()),
            Some(tag) => same_base
                .iter()
                .find(|manifest| manifest.quant.as_deref() == Some(tag))
                .map(|m| (*m).clone()),
            None => None,
        };
        Ok(found)
    }

    /// Resolve MODEL to a file: a path, a store name, or a repo already in
    /// a hub cache (the one the reference names; both for a plain
    /// `owner/repo`, Hugging Face first). A stored file that leads outside
    /// the store is an error.
    pub fn resolve(&self, reference: &ModelRef) -> Result<Resolved, StoreError> {
        if let ModelRef::Path(_) = reference {
            return Ok(Resolved {
                path: reference.resolve()?,
                manifest: None,
            });
        }
        if let Some(manifest) = self.find(reference)? {
            let mut first = None;
            for file in &manifest.files {
                let path = self.file_path(&manifest, file);
                let resolved = self
                    .resolve_file(&manifest, file)
                    .map_err(StoreError::io("cannot use", &path))?;
                first.get_or_insert((path, resolved));
            }
            let Some((path, resolved)) = first else {
                return Err(StoreError::NotInStore(manifest.name.clone()));
            };
            if !resolved.exists() {
                return Err(StoreError::NoSuchFile(path));
            }
            return Ok(Resolved {
                path,
                manifest: Some(manifest),
            });
        }
        if let ModelRef::Repo { repo, quant, hub } = reference {
            if hub.is_none_or(|hub| hub == HubKind::HuggingFace) {
                if let Some(path) = self.find_in_hf_cache_checked(repo, quant.as_deref())? {
                    return Ok(Resolved {
                        path,
                        manifest: None,
                    });
                }
            }
            if hub.is_none_or(|hub| hub == HubKind::ModelScope) {
                if let Some(found) = self.find_in_ms_cache_checked(repo, quant.as_deref())? {
                    return Ok(Resolved {
                        path: found.path,
                        manifest: None,
                    });
                }
            }
        }
        Err(StoreError::NotInStore(reference.to_string()))
    }

    /// A GGUF file of `repo` at `refs/main` in the HF cache whose name carries
    /// `quant` (or the only one when no quant is given); split sets: part 1.
    /// `None` also when the repo leads outside the cache.
    pub fn find_in_hf_cache(&self, repo: &RepoId, quant: Option<&str>) -> Option<PathBuf> {
        self.find_in_hf_cache_checked(repo, quant).ok().flatten()
    }

    /// [`Store::find_in_hf_cache`], with an error when the repo's folders or
    /// a file it would pick lead outside the cache.
    pub fn find_in_hf_cache_checked(
        &self,
        repo: &RepoId,
        quant: Option<&str>,
    ) -> Result<Option<PathBuf>, StoreError> {
        let cache = self.checked_repo_cache(repo)?;
        let Some(commit) = cache.main_commit() else {
            return Ok(None);
        };
        let wanted = |name: &str| {
            is_first_part(name)
                && !name.to_ascii_lowercase().contains("mmproj")
                && quant.is_none_or(|quant| quant_in_name(name).as_deref() == Some(quant))
        };
        let (found, escapes) = self.cached_files();
        let snapshot = cache.root.join("snapshots").join(&commit);
        let escaping = escapes.into_iter().find(|error| {
            error.escape().is_some_and(|escape| {
                let link = escape.link();
                link.starts_with(&snapshot)
                    && (link == snapshot
                        || link
                            .file_name()
                            .is_some_and(|name| wanted(&name.to_string_lossy())))
            })
        });
        if let Some(error) = escaping {
            return Err(error);
        }
        let matching: Vec<CachedFile> = found
            .into_iter()
            .filter(|file| &file.repo == repo && file.commit == commit && wanted(&file.name))
            .collect();
        Ok((matching.len() == 1).then(|| matching[0].path.clone()))
    }

    /// A GGUF file of `repo` in the ModelScope cache whose name carries
    /// `quant` (or the only one when no quant is given), in the folder the
    /// client would use for `master`; split sets: part 1. An error when a
    /// file it would pick leads outside the cache.
    pub fn find_in_ms_cache_checked(
        &self,
        repo: &RepoId,
        quant: Option<&str>,
    ) -> Result<Option<MsCachedFile>, StoreError> {
        let wanted = |name: &str| {
            is_first_part(name)
                && !name.to_ascii_lowercase().contains("mmproj")
                && quant.is_none_or(|quant| quant_in_name(name).as_deref() == Some(quant))
        };
        let folder = self
            .ms_repo_cache(repo)
            .snapshot_folder(mscache::DEFAULT_REVISION);
        let (found, escapes) = self.ms_cached_files();
        let escaping = escapes.into_iter().find(|error| {
            error.escape().is_some_and(|escape| {
                let link = escape.link();
                link.starts_with(&folder)
                    && (link == folder
                        || link
                            .file_name()
                            .is_some_and(|name| wanted(&name.to_string_lossy())))
            })
        });
        if let Some(error) = escaping {
            return Err(error);
        }
        let matching: Vec<MsCachedFile> = found
            .into_iter()
            .filter(|file| {
                &file.repo == repo && file.path.starts_with(&folder) && wanted(&file.name)
            })
            .collect();
        Ok((matching.len() == 1).then(|| matching[0].clone()))
    }

    /// Copy a local `.gguf` file into the store under `name` (after validating it).
    pub fn import(&self, source: &Path, name: &ModelRef) -> Result<Manifest, StoreError> {
        let metadata =
            fs::metadata(source).map_err(|_| StoreError::NoSuchFile(source.to_owned()))?;
        // A FIFO, a device or a folder is refused by the check below, as
        // `show` and `run` refuse it ("not a regular file", exit 5).
        let info = crate::gguf::inspect(source).map_err(|error| StoreError::InvalidModel {
            path: source.to_owned(),
            source: error,
        })?;
        if info.split_count() > 1 {
            // Imported files are stored by hash; llama.cpp finds the other
            // parts of a split model by file name, next to the first.
            return Err(StoreError::SplitImport(source.to_owned()));
        }
        let sha256 = sha256_file(source).map_err(StoreError::io("cannot read", source))?;
        let blob = self.local_blob(&sha256);
        let (directory, file_name) = split(&blob)?;
        let directory = self
            .home
            .create_dir_all(directory)
            .map_err(StoreError::io("cannot write", &blob))?;
        let resolved = directory.join(file_name);
        if !blob_matches(&resolved, &sha256) {
            copy_into_store(source, &resolved, &sha256)?;
        }
        let original = fs::canonicalize(source).unwrap_or_else(|_| source.to_owned());
        let file_name = source
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let manifest = Manifest {
            name: name.to_string(),
            source: Source::Local { original },
            quant: info.file_type_name(),
            files: vec![ManifestFile {
                name: file_name,
                sha256,
                size: metadata.len(),
            }],
            pulled_at: now(),
            hub: HubKind::default(),
        };
        self.save_manifest(&manifest)?;
        Ok(manifest)
    }
}

/// A path's folder and file name.
fn split(path: &Path) -> Result<(&Path, &std::ffi::OsStr), StoreError> {
    match (path.parent(), path.file_name()) {
        (Some(directory), Some(name)) => Ok((directory, name)),
        _ => Err(StoreError::io("cannot use", path)(io::Error::other(
            "path has no parent",
        ))),
    }
}

/// Whether a blob exists as a regular file with this sha256.
pub fn blob_matches(path: &Path, sha256: &str) -> bool {
    fs::symlink_metadata(path).is_ok_and(|metadata| metadata.file_type().is_file())
        && sha256_file(path).is_ok_and(|actual| actual == sha256)
}

/// Copy `source` to the resolved `blob` through a fresh temp file (created
/// anew, so a link planted under its name is never written through).
fn copy_into_store(source: &Path, blob: &Path, sha256: &str) -> Result<(), StoreError> {
    let directory = blob.parent().unwrap_or(Path::new("."));
    let temp = directory.join(format!(".{sha256}.{}.incomplete", std::process::id()));
    let copy = || -> io::Result<()> {
        remove_if_present(&temp)?;
        let mut output = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        io::copy(&mut File::open(source)?, &mut output)?;
        output.sync_all()?;
        drop(output);
        if sha256_file(&temp)? != sha256 {
            return Err(io::Error::other("the file changed while it was copied"));
        }
        rename_durable(&temp, blob)
    };
    copy().map_err(|error| {
        let _ = fs::remove_file(&temp);
        StoreError::io("cannot copy into the store", blob)(error)
    })
}

/// Remove `path` itself if it exists (a link: the link).
fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

fn parse_manifest(path: &Path, text: &str) -> Result<Manifest, StoreError> {
    let manifest: Manifest =
        serde_json::from_str(text).map_err(|error| StoreError::CorruptManifest {
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
    manifest.validate(path)?;
    Ok(manifest)
}

/// The sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    sha256_reader(File::open(path)?)
}

/// The sha256 of everything `reader` gives, as lowercase hex.
pub fn sha256_reader(mut file: impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(to_hex(&hasher.finalize()))
}

/// Lowercase hex of bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// Whether a GGUF file name is a whole file or the first part of a split set.
pub fn is_first_part(name: &str) -> bool {
    match split_part(name) {
        Some((part, _)) => part == 1,
        None => true,
    }
}

/// `(part, count)` of a split GGUF name `...-00001-of-00003.gguf`.
pub fn split_part(name: &str) -> Option<(u32, u32)> {
    let stem = name.strip_suffix(".gguf")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (_, part) = rest.rsplit_once('-')?;
    if part.len() != 5 || count.len() != 5 {
        return None;
    }
    Some((part.parse().ok()?, count.parse().ok()?))
}

/// The quant a GGUF file name carries (`Q4_K_M`, `IQ3_XS`, `F16`, `BF16`), uppercase.
pub fn quant_in_name(name: &str) -> Option<String> {
    let file_name = name.rsplit('/').next().unwrap_or(name);
    let stem = file_name
        .strip_suffix(".gguf")
        .or_else(|| file_name.strip_suffix(".GGUF"))?;
    let stem = match split_part(file_name) {
        Some(_) => stem.rsplitn(4, '-').nth(3).unwrap_or(stem),
        None => stem,
    };
    stem.rsplit(['-', '.'])
        .map(str::to_ascii_uppercase)
        .find(|token| looks_like_quant(token))
}

fn looks_like_quant(token: &str) -> bool {
    if matches!(token, "F16" | "BF16" | "F32" | "MXFP4" | "MXFP4_MOE") {
        return true;
    }
    let rest = token.strip_prefix('I').unwrap_or(token);
    let mut chars = rest.chars();
    chars.next() == Some('Q')
        && chars.next().is_some_and(|c| c.is_ascii_digit())
        && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The ModelScope cache: `MODELSCOPE_CACHE`, else `~/.cache/modelscope`
/// (where the `modelscope` client keeps it).
fn modelscope_cache_dir() -> PathBuf {
    if let Some(cache) =
        std::env::var_os(crate::env::MODELSCOPE_CACHE).filter(|value| !value.is_empty())
    {
        return absolute(PathBuf::from(cache));
    }
    let cache = directories::BaseDirs::new()
        .map(|dirs| dirs.home_dir().join(".cache"))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    absolute(cache.join("modelscope"))
}

fn hf_cache_dir() -> PathBuf {
    if let Some(cache) =
        std::env::var_os(crate::env::HF_HUB_CACHE).filter(|value| !value.is_empty())
    {
        return absolute(PathBuf::from(cache));
    }
    if let Some(home) = std::env::var_os(crate::env::HF_HOME).filter(|value| !value.is_empty()) {
        return absolute(PathBuf::from(home).join("hub"));
    }
    let cache = directories::BaseDirs::new()
        .map(|dirs| dirs.home_dir().join(".cache"))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    absolute(cache.join("huggingface").join("hub"))
}

/// A relative path made absolute against the working directory, so that runs
/// from different folders share one store.
pub(crate) fn absolute(path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        return path;
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(&path))
        .unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quants_are_read_from_file_names() {
        assert_eq!(
            quant_in_name("qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf").as_deref(),
            Some("Q4_K_M")
        );
        assert_eq!(
            quant_in_name("Llama-3.2-3B-Instruct-Q5_K_M.gguf").as_deref(),
            Some("Q5_K_M")
        );
        assert_eq!(
            quant_in_name("SmolLM2-135M-Instruct.Q4_1.gguf").as_deref(),
            Some("Q4_1")
        );
        assert_eq!(
            quant_in_name("Q8_0/Model-Q8_0-00002-of-00002.gguf").as_deref(),
            Some("Q8_0")
        );
        assert_eq!(
            quant_in_name("gemma-3-1b-it-BF16.gguf").as_deref(),
            Some("BF16")
        );
        assert_eq!(
            quant_in_name("model-IQ3_XS.gguf").as_deref(),
            Some("IQ3_XS")
        );
        assert_eq!(quant_in_name("Qwen3-8B.gguf"), None);
    }

    #[test]
    fn split_names() {
        assert_eq!(split_part("a-q4_k_m-00001-of-00002.gguf"), Some((1, 2)));
        assert!(is_first_part("a.gguf"));
        assert!(!is_first_part("a-00002-of-00002.gguf"));
    }

    fn sample_manifest(name: &str, sha: &str) -> Manifest {
        Manifest {
            name: name.into(),
            source: Source::Local {
                original: "/x.gguf".into(),
            },
            quant: Some("Q4_1".into()),
            files: vec![ManifestFile {
                name: "x.gguf".into(),
                sha256: sha.into(),
                size: 3,
            }],
            pulled_at: 0,
            hub: HubKind::default(),
        }
    }

    #[test]
    fn manifests_round_trip_and_shared_blobs_survive_rm() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("home"), dir.path().join("hub"));
        let sha = sha256_bytes(b"abc");
        let blob = store.local_blob(&sha);
        fs::create_dir_all(blob.parent().unwrap()).unwrap();
        fs::write(&blob, b"abc").unwrap();
        let first = sample_manifest("first", &sha);
        let second = sample_manifest("second:V2", &sha);
        store.save_manifest(&first).unwrap();
        store.save_manifest(&second).unwrap();
        assert_eq!(store.manifests_all().0.len(), 2);
        let found = store
            .find(&ModelRef::parse_name("second").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(found, second);
        assert!(
            store.remove(&first).unwrap().removed.is_empty(),
            "shared blob kept"
        );
        assert!(blob.exists());
        assert!(store.verify(&second)[0].problem.is_none());
        fs::write(&blob, b"abd").unwrap();
        assert!(store.verify(&second)[0].problem.is_some());
        assert_eq!(store.remove(&second).unwrap().removed, vec![blob.clone()]);
        assert!(!blob.exists());
        assert!(!dir.path().join("home/manifests/first").exists());
    }

    #[test]
    fn damaged_manifests_are_reported_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("home"), dir.path().join("hub"));
        let path = dir.path().join("home/manifests/evil/_.json");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut evil = sample_manifest("evil", &"a".repeat(64));
        evil.source = Source::Hub {
            repo: "a/b".into(),
            revision: "../../x".into(),
        };
        fs::write(&path, serde_json::to_string(&evil).unwrap()).unwrap();
        let (found, damaged) = store.manifests_all();
        assert!(found.is_empty());
        assert_eq!(damaged.len(), 1);
    }

    #[test]
    fn copying_into_the_store_never_writes_through_a_planted_temp_link() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::write(&outside, b"keep").unwrap();
        let source = dir.path().join("source.bin");
        fs::write(&source, b"abc").unwrap();
        let sha = sha256_bytes(b"abc");
        let blob = dir.path().join("blobs").join(format!("sha256-{sha}"));
        fs::create_dir_all(blob.parent().unwrap()).unwrap();
        let temp = blob
            .parent()
            .unwrap()
            .join(format!(".{sha}.{}.incomplete", std::process::id()));
        std::os::unix::fs::symlink(&outside, &temp).unwrap();
        copy_into_store(&source, &blob, &sha).unwrap();
        assert_eq!(fs::read(&outside).unwrap(), b"keep");
        assert_eq!(fs::read(&blob).unwrap(), b"abc");
    }

    #[test]
    fn remove_deletes_nothing_through_a_blobs_folder_that_leads_out() {
        let dir = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(dir.path()).unwrap();
        let store = Store::new(base.join("home"), base.join("hub"));
        let sha = sha256_bytes(b"abc");
        let outside = base.join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join(format!("sha256-{sha}")), b"abc").unwrap();
        fs::create_dir_all(store.home()).unwrap();
        std::os::unix::fs::symlink(&outside, store.home().join("blobs")).unwrap();
        let manifest = sample_manifest("evil", &sha);
        store.save_manifest(&manifest).unwrap();
        let check = &store.verify(&manifest)[0];
        assert!(
            matches!(check.problem, Some(Problem::Outside(_))),
            "{check:?}"
        );
        let removal = store.remove(&manifest).unwrap();
        assert!(removal.removed.is_empty());
        assert_eq!(removal.left.len(), 1);
        assert_eq!(removal.left[0].link(), store.home().join("blobs"));
        assert!(outside.join(format!("sha256-{sha}")).exists());
        assert!(store.manifests_all().0.is_empty(), "the name is gone");
    }

    #[test]
    fn verify_reports_a_snapshot_link_that_loops_or_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(dir.path()).unwrap();
        let store = Store::new(base.join("home"), base.join("hub"));
        let sha = sha256_bytes(b"abc");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let repo = RepoId::parse("owner/repo").unwrap();
        let cache = store.repo_cache(&repo);
        fs::create_dir_all(cache.root.join("blobs")).unwrap();
        fs::write(cache.blob(&sha), b"abc").unwrap();
        cache.link_snapshot(commit, "x.gguf", &sha).unwrap();
        let mut manifest = sample_manifest("owner/repo:Q4_1", &sha);
        manifest.source = Source::Hub {
            repo: "owner/repo".into(),
            revision: commit.into(),
        };
        assert_eq!(store.verify(&manifest)[0].problem, None);
        let link = cache.snapshot_file(commit, "x.gguf");
        fs::remove_file(&link).unwrap();
        let missing = store.verify(&manifest)[0].problem.clone();
        assert!(
            matches!(&missing, Some(Problem::Changed(text)) if text.contains("missing")),
            "{missing:?}"
        );
        std::os::unix::fs::symlink("x.gguf", &link).unwrap();
        let looping = store.verify(&manifest)[0].problem.clone();
        assert!(matches!(looping, Some(Problem::Changed(_))), "{looping:?}");
    }

    fn sha256_bytes(bytes: &[u8]) -> String {
        to_hex(&Sha256::digest(bytes))
    }
}
