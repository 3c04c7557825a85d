//! Bundles: stored models as one file for a machine without a network
//! (`olm export`, `olm import`).
//!
//! A bundle is a tar stream: first `olm-bundle.json` (each model's name,
//! source and revision, and the size and sha256 of every file), then each
//! file once as `files/<sha256>`. Export streams the stored files into it,
//! hashing each on the way. Import trusts nothing in it: every name and file
//! name is validated before anything is written, no name from the bundle ever
//! becomes a path (files are placed by their checked sha256), every file is
//! hashed while it is written to a temporary file beside its final place,
//! and nothing is registered until every file checked out; then the files
//! are moved into place, linked and registered as a pull does, so imported
//! models look exactly like pulled ones.
//!
//! Must not touch: the network, the terminal (callers print).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::names::{check_repo_file_name, escaped, is_commit, is_sha256};
use super::space::free_disk;
use super::HubKind;
use super::{
    is_disk_full, now, rename_durable, to_hex, Manifest, ManifestFile, ModelRef, RepoId, Source,
    Store, StoreError,
};

/// The first entry of every bundle.
pub const MANIFEST_ENTRY: &str = "olm-bundle.json";
/// What `format` says in a bundle's manifest.
const FORMAT: &str = "olm-bundle";
/// The bundle format this olm writes and reads.
const VERSION: u32 = 1;
/// The largest bundle manifest read.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// The most models one bundle may hold.
const MAX_MODELS: usize = 1024;
/// The most files one model may have (split sets).
const MAX_FILES: usize = 1024;
/// Folder of the file entries.
const FILES_DIR: &str = "files/";

/// A bundle's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleManifest {
    pub format: String,
    pub version: u32,
    pub models: Vec<BundleModel>,
}

/// One model of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleModel {
    /// The store name.
    pub name: String,
    pub source: BundleSource,
    pub quant: Option<String>,
    /// Its files, the one to load first (split sets: part 1).
    pub files: Vec<ManifestFile>,
}

/// Where a bundled model came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BundleSource {
    /// A hub repo at a revision: a Hugging Face commit (it lands in the HF
    /// cache) or a ModelScope revision (it lands in the ModelScope cache).
    Hub {
        repo: String,
        revision: String,
        /// Absent in bundles made before ModelScope was a source.
        #[serde(default, skip_serializing_if = "HubKind::is_hugging_face")]
        hub: HubKind,
    },
    /// A local file imported on the exporting machine (it lands in `OLM_HOME/blobs`).
    Local,
}

/// Why an export or import failed.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The bundle is damaged, cut short or hostile: nothing was registered.
    #[error("the bundle is damaged or not an olm bundle: {0}")]
    Damaged(String),
    /// A stored file no longer matches its manifest (export).
    #[error("{} changed since it was stored: {reason}", path.display())]
    Changed { path: PathBuf, reason: String },
    #[error(
        "not enough disk space in {}: {} needed, {} free",
        path.display(),
        crate::human::size(*needed),
        crate::human::size(*free)
    )]
    DiskFull {
        path: PathBuf,
        needed: u64,
        free: u64,
    },
    /// A name the bundle brings is stored already, with other files.
    #[error("model '{0}' is already in the store with other files")]
    Exists(String),
    #[error("{action} {}: {error}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl BundleError {
    fn damaged(reason: impl Into<String>) -> Self {
        BundleError::Damaged(reason.into())
    }

    fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Self + 'a {
        move |error| BundleError::Io {
            action,
            path: path.to_owned(),
            error,
        }
    }

    /// Whether the disk is full (exit 6).
    pub fn is_disk_full(&self) -> bool {
        match self {
            BundleError::DiskFull { .. } => true,
            BundleError::Io { error, .. } => is_disk_full(error),
            BundleError::Store(store) => store.is_disk_full(),
            _ => false,
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            BundleError::Damaged(_) => Some(
                "nothing was imported; export the bundle again and copy it whole (`olm export MODEL -o FILE`)"
                    .into(),
            ),
            BundleError::Changed { .. } => Some(
                "run `olm verify`, then pull the model again with `olm pull NAME --force`".into(),
            ),
            BundleError::DiskFull { .. } => Some("free some disk space and try again".into()),
            BundleError::Exists(_) => {
                Some("pass --force to replace it, or `olm rm` it first".into())
            }
            BundleError::Store(store) => store.hint(),
            BundleError::Io { .. } if self.is_disk_full() => {
                Some("free some disk space and try again".into())
            }
            BundleError::Io { .. } => None,
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub models: usize,
    pub files: usize,
    /// Bytes of model files (the bundle is slightly larger).
    pub bytes: u64,
}

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..read]);
        self.count += read as u64;
        Ok(read)
    }
}

fn hashing<R: Read>(inner: R) -> Hashing<R> {
    Hashing {
        inner,
        hasher: Sha256::new(),
        count: 0,
    }
}

/// A tar header for a regular file entry of `size` bytes.
fn file_header(path: &str, size: u64) -> Result<tar::Header, BundleError> {
    let mut header = tar::Header::new_gnu();
    header.set_path(path).map_err(|error| BundleError::Io {
        action: "cannot name",
        path: PathBuf::from(path),
        error,
    })?;
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    Ok(header)
}

impl BundleManifest {
    /// The manifest of a bundle of `manifests`.
    pub fn of(manifests: &[Manifest]) -> Self {
        let models = manifests
            .iter()
            .map(|manifest| BundleModel {
                name: manifest.name.clone(),
                source: match &manifest.source {
                    Source::Hub { repo, revision } => BundleSource::Hub {
                        repo: repo.clone(),
                        revision: revision.clone(),
                        hub: manifest.hub,
                    },
                    Source::Local { .. } => BundleSource::Local,
                },
                quant: manifest.quant.clone(),
                files: manifest.files.clone(),
            })
            .collect();
        Self {
            format: FORMAT.into(),
            version: VERSION,
            models,
        }
    }

    /// Check every value that could become part of a path or a store entry,
    /// as input from outside; return each distinct file's size by sha256.
    pub fn validate(&self) -> Result<BTreeMap<String, u64>, BundleError> {
        if self.format != FORMAT {
            return Err(BundleError::damaged(format!(
                "format is '{}', not '{FORMAT}'",
                escaped(&self.format)
            )));
        }
        if self.version != VERSION {
            return Err(BundleError::damaged(format!(
                "bundle version {} is not supported (this olm reads version {VERSION})",
                self.version
            )));
        }
        if self.models.is_empty() || self.models.len() > MAX_MODELS {
            return Err(BundleError::damaged("it holds no models, or too many"));
        }
        let mut sizes = BTreeMap::new();
        let mut names = BTreeSet::new();
        for model in &self.models {
            let name = escaped(&model.name);
            let reference = ModelRef::parse_name(&model.name)
                .map_err(|_| BundleError::damaged(format!("invalid model name '{name}'")))?;
            if !names.insert(reference.to_string()) {
                return Err(BundleError::damaged(format!(
                    "model '{name}' appears twice"
                )));
            }
            if model.files.is_empty() || model.files.len() > MAX_FILES {
                return Err(BundleError::damaged(format!(
                    "model '{name}' has no files, or too many"
                )));
            }
            match &model.source {
                BundleSource::Hub {
                    repo,
                    revision,
                    hub,
                } => {
                    RepoId::parse(repo).map_err(|_| {
                        BundleError::damaged(format!(
                            "model '{name}' names an invalid repo '{}'",
                            escaped(repo)
                        ))
                    })?;
                    let valid = match hub {
                        HubKind::HuggingFace => is_commit(revision),
                        HubKind::ModelScope => is_revision_name(revision),
                    };
                    if !valid {
                        return Err(BundleError::damaged(format!(
                            "model '{name}' names an invalid revision '{}'",
                            escaped(revision)
                        )));
                    }
                }
                BundleSource::Local if model.files.len() != 1 => {
                    return Err(BundleError::damaged(format!(
                        "local model '{name}' has more than one file"
                    )));
                }
                BundleSource::Local => {}
            }
            let mut file_names = BTreeSet::new();
            for file in &model.files {
                check_file_name(&file.name).map_err(|reason| {
                    BundleError::damaged(format!(
                        "model '{name}' names the file '{}': {reason}",
                        escaped(&file.name)
                    ))
                })?;
                if !file_names.insert(file.name.as_str()) {
                    return Err(BundleError::damaged(format!(
                        "model '{name}' names the file '{}' twice",
                        escaped(&file.name)
                    )));
                }
                if !is_sha256(&file.sha256) {
                    return Err(BundleError::damaged(format!(
                        "model '{name}' has an invalid sha256 '{}'",
                        escaped(&file.sha256)
                    )));
                }
                if let Some(size) = sizes.insert(file.sha256.clone(), file.size) {
                    if size != file.size {
                        return Err(BundleError::damaged(format!(
                            "file {} has two sizes",
                            file.sha256
                        )));
                    }
                }
            }
        }
        Ok(sizes)
    }
}

/// A file name from a bundle: a repo file name as a hub may send it (no
/// `..`, no absolute path, no backslash, no control characters).
fn check_file_name(name: &str) -> Result<(), &'static str> {
    check_repo_file_name(name)?;
    if name.starts_with('/') || name.split('/').any(|part| part == ".." || part == ".") {
        return Err("a file name may not leave its folder");
    }
    Ok(())
}

impl Store {
    /// Write `manifests` and their files to `out` as one bundle, hashing
    /// every file on the way: a file that no longer matches its manifest
    /// stops the export ([`BundleError::Changed`]).
    pub fn export_bundle(
        &self,
        manifests: &[Manifest],
        out: impl Write,
    ) -> Result<ExportSummary, BundleError> {
        let bundle = BundleManifest::of(manifests);
        bundle.validate()?;
        let mut builder = tar::Builder::new(out);
        let text = serde_json::to_vec_pretty(&bundle).map_err(|error| {
            BundleError::io("cannot encode", Path::new(MANIFEST_ENTRY))(io::Error::other(error))
        })?;
        let header = file_header(MANIFEST_ENTRY, text.len() as u64)?;
        builder
            .append(&header, text.as_slice())
            .map_err(BundleError::io("cannot write", Path::new("the bundle")))?;
        let mut summary = ExportSummary {
            models: manifests.len(),
            ..ExportSummary::default()
        };
        let mut written = BTreeSet::new();
        for manifest in manifests {
            for file in &manifest.files {
                if !written.insert(file.sha256.clone()) {
                    continue;
                }
                self.append_file(&mut builder, manifest, file)?;
                summary.files += 1;
                summary.bytes += file.size;
            }
        }
        let mut out = builder
            .into_inner()
            .map_err(BundleError::io("cannot write", Path::new("the bundle")))?;
        out.flush()
            .map_err(BundleError::io("cannot write", Path::new("the bundle")))?;
        Ok(summary)
    }

    fn append_file<W: Write>(
        &self,
        builder: &mut tar::Builder<W>,
        manifest: &Manifest,
        file: &ManifestFile,
    ) -> Result<(), BundleError> {
        let blob = self.blob_path(manifest, file);
        let changed = |reason: String| BundleError::Changed {
            path: blob.clone(),
            reason,
        };
        // What `olm run` loads must lead to this blob, inside the store.
        self.resolve_file(manifest, file)
            .map_err(|error| changed(error.to_string()))?;
        let root = self.blob_root(manifest);
        let resolved = root
            .resolve(&blob)
            .map_err(|error| changed(error.to_string()))?;
        let metadata =
            fs::symlink_metadata(&resolved).map_err(|error| changed(error.to_string()))?;
        if !metadata.file_type().is_file() {
            return Err(changed("it is not a regular file".into()));
        }
        if metadata.len() != file.size {
            return Err(changed(format!(
                "size is {} bytes, expected {}",
                metadata.len(),
                file.size
            )));
        }
        let opened = root
            .open_resolved(&resolved)
            .map_err(BundleError::io("cannot read", &blob))?;
        let mut reader = hashing(opened.take(file.size));
        let header = file_header(&format!("{FILES_DIR}{}", file.sha256), file.size)?;
        builder
            .append(&header, &mut reader)
            .map_err(|error| match error.kind() {
                io::ErrorKind::BrokenPipe => {
                    BundleError::io("cannot write", Path::new("the bundle"))(error)
                }
                _ => BundleError::io("cannot export", &blob)(error),
            })?;
        if reader.count != file.size {
            return Err(changed(format!(
                "it shrank to {} bytes while it was read",
                reader.count
            )));
        }
        let sha256 = to_hex(&reader.hasher.finalize());
        if sha256 != file.sha256 {
            return Err(changed(format!(
                "sha256 is {sha256}, expected {}",
                file.sha256
            )));
        }
        Ok(())
    }

    /// Read a bundle from `input`, verify all of it, then store and register
    /// its models (as pulled ones). `origin` is recorded as the original of
    /// local models; `force` replaces names stored with other files.
    pub fn import_bundle(
        &self,
        input: impl Read,
        origin: &Path,
        force: bool,
    ) -> Result<Vec<Manifest>, BundleError> {
        let mut archive = tar::Archive::new(input);
        let mut entries = archive
            .entries()
            .map_err(|error| BundleError::damaged(error.to_string()))?;
        let bundle = read_manifest(&mut entries)?;
        let sizes = bundle.validate()?;
        let plan = ImportPlan::new(self, &bundle, origin)?;
        let replaced = plan.conflicts(self, force)?;
        plan.check_space(&sizes)?;
        let mut staged = Staged::default();
        let mut remaining = sizes.clone();
        for entry in entries {
            let mut entry = entry.map_err(|error| BundleError::damaged(error.to_string()))?;
            let path = entry.path_bytes().into_owned();
            let shown = escaped(&String::from_utf8_lossy(&path));
            let sha256 = std::str::from_utf8(&path)
                .ok()
                .and_then(|path| path.strip_prefix(FILES_DIR))
                .filter(|sha| is_sha256(sha))
                .map(str::to_owned)
                .ok_or_else(|| BundleError::damaged(format!("unexpected entry '{shown}'")))?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                return Err(BundleError::damaged(format!(
                    "entry '{shown}' is not a file"
                )));
            }
            let Some(size) = remaining.remove(&sha256) else {
                return Err(BundleError::damaged(format!(
                    "entry '{shown}' is not in its manifest, or appears twice"
                )));
            };
            if entry.size() != size {
                return Err(BundleError::damaged(format!(
                    "file {sha256} is {} bytes, its manifest says {size}",
                    entry.size()
                )));
            }
            staged.receive(self, &plan, &sha256, size, &mut entry)?;
        }
        if let Some((sha256, _)) = remaining.iter().next() {
            return Err(BundleError::damaged(format!(
                "it ends before file {sha256} (cut short?)"
            )));
        }
        plan.check_models(&staged)?;
        let manifests = plan.commit(self, &mut staged)?;
        for old in replaced {
            // Names replaced with --force: their files no one uses now.
            let _ = self.remove_unused(&old);
        }
        Ok(manifests)
    }
}

/// The first entry: the manifest, bounded in size.
fn read_manifest<R: Read>(
    entries: &mut tar::Entries<'_, R>,
) -> Result<BundleManifest, BundleError> {
    let first = entries
        .next()
        .ok_or_else(|| BundleError::damaged("it is empty"))?
        .map_err(|error| BundleError::damaged(error.to_string()))?;
    if first.path_bytes().as_ref() != MANIFEST_ENTRY.as_bytes()
        || first.header().entry_type() != tar::EntryType::Regular
    {
        return Err(BundleError::damaged(format!(
            "its first entry is not {MANIFEST_ENTRY}"
        )));
    }
    if first.size() > MAX_MANIFEST_BYTES {
        return Err(BundleError::damaged(format!(
            "{MANIFEST_ENTRY} is larger than 1 MiB"
        )));
    }
    let mut text = Vec::new();
    first
        .take(MAX_MANIFEST_BYTES)
        .read_to_end(&mut text)
        .map_err(|error| BundleError::damaged(error.to_string()))?;
    serde_json::from_slice(&text)
        .map_err(|error| BundleError::damaged(format!("{MANIFEST_ENTRY}: {error}")))
}

/// The store root a file lands under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Landing {
    /// olm's home (locally imported models).
    Home,
    HfCache,
    MsCache,
}

/// A ModelScope revision a bundle may name: a branch or tag name, never a
/// path (`master`, `v1.0`).
fn is_revision_name(revision: &str) -> bool {
    !revision.is_empty()
        && revision.len() <= 64
        && revision != "."
        && revision != ".."
        && revision
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Where one file of an import goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Destination {
    /// Which of the store's roots the file lands under.
    root: Landing,
    /// The blob's path under the store (not resolved).
    blob: PathBuf,
}

/// The manifests an import will write, and where each file goes.
struct ImportPlan {
    manifests: Vec<Manifest>,
    /// Each sha256's places (a file shared by a hub and a local model has two).
    destinations: BTreeMap<String, Vec<Destination>>,
}

impl ImportPlan {
    fn new(store: &Store, bundle: &BundleManifest, origin: &Path) -> Result<Self, BundleError> {
        let mut manifests = Vec::new();
        let mut destinations: BTreeMap<String, Vec<Destination>> = BTreeMap::new();
        for model in &bundle.models {
            let (source, hub) = match &model.source {
                BundleSource::Hub {
                    repo,
                    revision,
                    hub,
                } => (
                    Source::Hub {
                        repo: repo.clone(),
                        revision: revision.clone(),
                    },
                    *hub,
                ),
                BundleSource::Local => (
                    Source::Local {
                        original: origin.to_owned(),
                    },
                    HubKind::HuggingFace,
                ),
            };
            let manifest = Manifest {
                name: ModelRef::parse_name(&model.name)
                    .map_err(|_| BundleError::damaged("invalid model name"))?
                    .to_string(),
                source,
                quant: model.quant.clone(),
                files: model.files.clone(),
                pulled_at: now(),
                hub,
            };
            manifest
                .validate(Path::new(MANIFEST_ENTRY))
                .map_err(|error| BundleError::damaged(error.to_string()))?;
            if let Some(repo) = manifest.repo() {
                store.checked_repo_cache(&repo)?;
            }
            for file in &manifest.files {
                let destination = Destination {
                    root: match (manifest.repo(), manifest.hub) {
                        (None, _) => Landing::Home,
                        (Some(_), HubKind::HuggingFace) => Landing::HfCache,
                        (Some(_), HubKind::ModelScope) => Landing::MsCache,
                    },
                    blob: store.blob_path(&manifest, file),
                };
                let places = destinations.entry(file.sha256.clone()).or_default();
                if !places.contains(&destination) {
                    places.push(destination);
                }
            }
            manifests.push(manifest);
        }
        Ok(Self {
            manifests,
            destinations,
        })
    }

    fn places(&self, sha256: &str) -> &[Destination] {
        self.destinations.get(sha256).map_or(&[], Vec::as_slice)
    }

    /// Names stored already: the same files are fine; other files need
    /// `force` (and are returned, to clean up after).
    fn conflicts(&self, store: &Store, force: bool) -> Result<Vec<Manifest>, BundleError> {
        let mut replaced = Vec::new();
        for manifest in &self.manifests {
            let reference = ModelRef::parse_name(&manifest.name).map_err(BundleError::Store)?;
            let Some(existing) = store.manifest(&reference)? else {
                continue;
            };
            let same_source = match (&existing.source, &manifest.source) {
                (Source::Hub { .. }, Source::Hub { .. }) => existing.source == manifest.source,
                (Source::Local { .. }, Source::Local { .. }) => true,
                _ => false,
            };
            if same_source && existing.files == manifest.files {
                continue;
            }
            if !force {
                return Err(BundleError::Exists(manifest.name.clone()));
            }
            replaced.push(existing);
        }
        Ok(replaced)
    }

    /// Enough free space on each file system the files go to (exit 6 before
    /// a byte is written).
    fn check_space(&self, sizes: &BTreeMap<String, u64>) -> Result<(), BundleError> {
        use std::os::unix::fs::MetadataExt;
        let mut needed: BTreeMap<u64, (PathBuf, u64)> = BTreeMap::new();
        for (sha256, size) in sizes {
            for place in self.places(sha256) {
                let directory = place.blob.parent().unwrap_or(Path::new("."));
                let existing = existing_ancestor(directory);
                let device = fs::metadata(&existing).map_or(0, |metadata| metadata.dev());
                let slot = needed.entry(device).or_insert((existing, 0));
                slot.1 = slot.1.saturating_add(*size);
            }
        }
        for (path, bytes) in needed.into_values() {
            if let Some(free) = free_disk(&path) {
                if bytes > free {
                    return Err(BundleError::DiskFull {
                        path,
                        needed: bytes,
                        free,
                    });
                }
            }
        }
        Ok(())
    }

    /// The header of each model's first file, checked before anything is
    /// registered (a file with the right hash that is no usable model is
    /// refused too).
    fn check_models(&self, staged: &Staged) -> Result<(), BundleError> {
        for manifest in &self.manifests {
            let Some(first) = manifest.files.first() else {
                continue;
            };
            let Some(file) = staged.files.get(&first.sha256) else {
                continue;
            };
            crate::gguf::inspect(&file.temp).map_err(|error| StoreError::InvalidModel {
                path: PathBuf::from(&first.name),
                source: error,
            })?;
        }
        Ok(())
    }

    /// Move every staged file into place, link hub snapshots and their
    /// `refs/main`, then write the manifests (last, as a pull does).
    fn commit(&self, store: &Store, staged: &mut Staged) -> Result<Vec<Manifest>, BundleError> {
        for (sha256, file) in &staged.files {
            for place in self.places(sha256).iter().skip(1) {
                let other = staged_path(store, place)?;
                fs::copy(&file.temp, &other.0)
                    .and_then(|_| rename_durable(&other.0, &other.1))
                    .map_err(|error| {
                        let _ = fs::remove_file(&other.0);
                        BundleError::io("cannot store", &place.blob)(error)
                    })?;
            }
        }
        for file in std::mem::take(&mut staged.files).into_values() {
            if let Err(error) = rename_durable(&file.temp, &file.destination) {
                let _ = fs::remove_file(&file.temp);
                return Err(BundleError::io("cannot store", &file.destination)(error));
            }
        }
        for manifest in &self.manifests {
            if manifest.hub != HubKind::HuggingFace {
                // ModelScope's cache keeps plain files under their names: in place already.
                continue;
            }
            if let (Some(repo), Source::Hub { revision, .. }) = (manifest.repo(), &manifest.source)
            {
                let cache = store.checked_repo_cache(&repo)?;
                for file in &manifest.files {
                    cache
                        .link_snapshot(revision, &file.name, &file.sha256)
                        .map_err(BundleError::io("cannot link", &cache.root))?;
                }
                let refs = cache.reference("main");
                super::write_atomic(&refs, revision.as_bytes())
                    .map_err(BundleError::io("cannot write", &refs))?;
            }
        }
        for manifest in &self.manifests {
            store.save_manifest(manifest)?;
        }
        Ok(self.manifests.clone())
    }
}

/// A new temporary file's path beside `place`'s blob, and the blob's path,
/// both resolved inside the store (its folder is made if needed).
fn staged_path(store: &Store, place: &Destination) -> Result<(PathBuf, PathBuf), BundleError> {
    let root = match place.root {
        Landing::HfCache => &store.hf_cache,
        Landing::MsCache => &store.ms_cache,
        Landing::Home => &store.home,
    };
    let (directory, name) = super::split(&place.blob)?;
    let resolved = root
        .create_dir_all(directory)
        .map_err(|error| StoreError::Io {
            action: "cannot write",
            path: directory.to_owned(),
            error,
        })?;
    let temp = resolved.join(format!(
        ".{}.{}.import",
        name.to_string_lossy(),
        std::process::id()
    ));
    Ok((temp, resolved.join(name)))
}

/// The nearest folder of `path` (itself included) that exists.
fn existing_ancestor(path: &Path) -> PathBuf {
    let mut current = path;
    loop {
        if current.is_dir() {
            return current.to_path_buf();
        }
        match current.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => current = parent,
            _ => return PathBuf::from("."),
        }
    }
}

/// One verified file in its temporary file, and where it goes.
struct StagedFile {
    temp: PathBuf,
    destination: PathBuf,
}

/// Verified files waiting in temporary files beside their final place;
/// removed if the import stops before [`ImportPlan::commit`].
#[derive(Default)]
struct Staged {
    files: BTreeMap<String, StagedFile>,
}

impl Staged {
    /// Copy one entry into a new temporary file beside its blob (inside the
    /// store), hashing it on the way; keep it only if size and hash match.
    fn receive(
        &mut self,
        store: &Store,
        plan: &ImportPlan,
        sha256: &str,
        size: u64,
        entry: &mut impl Read,
    ) -> Result<(), BundleError> {
        let Some(place) = plan.places(sha256).first() else {
            return Err(BundleError::damaged(format!("file {sha256} has no model")));
        };
        let (temp, destination) = staged_path(store, place)?;
        let _ = fs::remove_file(&temp);
        let mut output = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(BundleError::io("cannot write", &temp))?;
        self.files.insert(
            sha256.to_owned(),
            StagedFile {
                temp: temp.clone(),
                destination,
            },
        );
        let mut reader = hashing(entry.take(size));
        io::copy(&mut reader, &mut output).map_err(|error| {
            if is_disk_full(&error) {
                BundleError::io("cannot write", &temp)(error)
            } else {
                BundleError::damaged(format!("file {sha256} cannot be read: {error}"))
            }
        })?;
        output
            .sync_all()
            .map_err(BundleError::io("cannot write", &temp))?;
        if reader.count != size {
            return Err(BundleError::damaged(format!(
                "file {sha256} ends after {} of {size} bytes (cut short?)",
                reader.count
            )));
        }
        let actual = to_hex(&reader.hasher.finalize());
        if actual != sha256 {
            return Err(BundleError::damaged(format!(
                "file {sha256} has sha256 {actual}: its bytes changed"
            )));
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        for file in self.files.values() {
            let _ = fs::remove_file(&file.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(name: &str, file: &str) -> BundleManifest {
        BundleManifest {
            format: FORMAT.into(),
            version: VERSION,
            models: vec![BundleModel {
                name: name.into(),
                source: BundleSource::Hub {
                    repo: "owner/repo".into(),
                    revision: "a".repeat(40),
                    hub: HubKind::HuggingFace,
                },
                quant: None,
                files: vec![ManifestFile {
                    name: file.into(),
                    sha256: "b".repeat(64),
                    size: 10,
                }],
            }],
        }
    }

    #[test]
    fn a_valid_manifest_lists_its_files() {
        let sizes = bundle("owner/repo:Q4_0", "model.gguf")
            .validate()
            .expect("valid");
        assert_eq!(sizes.get(&"b".repeat(64)), Some(&10));
    }

    #[test]
    fn names_that_are_paths_are_refused() {
        for file in ["../x", "/etc/passwd", "a/../../x", "a\\..\\b", "", "a/./b"] {
            let error = bundle("owner/repo", file).validate().unwrap_err();
            assert!(matches!(error, BundleError::Damaged(_)), "{file}: {error}");
        }
        for name in ["../x", "/abs/x", "owner/../../x", "a:../../x"] {
            let error = bundle(name, "m.gguf").validate().unwrap_err();
            assert!(matches!(error, BundleError::Damaged(_)), "{name}: {error}");
        }
        let mut hostile = bundle("owner/repo", "m.gguf");
        hostile.models[0].source = BundleSource::Hub {
            repo: "../../x".into(),
            revision: "a".repeat(40),
            hub: HubKind::HuggingFace,
        };
        assert!(hostile.validate().is_err());
    }

    #[test]
    fn a_foreign_format_or_version_is_refused() {
        let mut other = bundle("m", "m.gguf");
        other.version = 2;
        assert!(other.validate().is_err());
        other.version = VERSION;
        other.format = "zip".into();
        assert!(other.validate().is_err());
    }
}
