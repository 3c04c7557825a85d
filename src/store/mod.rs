//! The model store: what the user typed as MODEL, and where its files are.
//!
//! Owns: model references ([`ModelRef`], validated so no name can escape the
//! store), olm's manifests in `OLM_HOME`, the Hugging Face cache layout
//! (shared with other tools), file locks, atomic writes, sha256 of stored
//! files, import of local files, `rm` and `verify`.
//! Uses: `gguf` (a file is validated before it is registered).
//! Must not touch: llama.cpp, the network, the terminal.

mod atomic;
mod hfcache;
mod manifest;
pub mod names;
mod reference;
pub mod space;

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

pub use atomic::{rename_durable, sync_directory, write_atomic};
pub use hfcache::{scan as scan_hf_cache, CachedFile, RepoCache};
pub use manifest::{Manifest, ManifestFile, Source};
pub use reference::{ModelRef, RepoId};

use names::escaped;

/// Why a model reference could not be resolved or the store could not act.
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
    #[error("{} is not a usable model", path.display())]
    InvalidModel {
        path: PathBuf,
        #[source]
        source: crate::gguf::GgufError,
    },
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
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
        move |source| StoreError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }

    /// Whether the disk is full (exit 6).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Io { source, .. } if is_disk_full(source))
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

/// Result of checking one stored file against its manifest.
#[derive(Debug, Clone)]
pub struct FileCheck {
    pub model: String,
    pub path: PathBuf,
    /// `None` when the file matches; otherwise what is wrong.
    pub problem: Option<String>,
}

/// olm's store: `OLM_HOME` and the Hugging Face cache.
#[derive(Debug, Clone)]
pub struct Store {
    home: PathBuf,
    hf_cache: PathBuf,
}

impl Store {
    /// The store at explicit locations.
    pub fn new(home: PathBuf, hf_cache: PathBuf) -> Self {
        Self { home, hf_cache }
    }

    /// The store the environment names (`OLM_HOME`, `HF_HUB_CACHE`, `HF_HOME`).
    pub fn from_env() -> Self {
        Self::new(olm_home(), hf_cache_dir())
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn hf_cache(&self) -> &Path {
        &self.hf_cache
    }

    /// olm's configuration file (user aliases).
    pub fn config_path(&self) -> PathBuf {
        self.home.join("config.toml")
    }

    fn manifests(&self) -> PathBuf {
        self.home.join("manifests")
    }

    /// The cache folder of a repo.
    pub fn repo_cache(&self, repo: &RepoId) -> RepoCache {
        RepoCache::new(&self.hf_cache, repo)
    }

    /// The manifest stored under exactly this name, if any.
    pub fn manifest(&self, reference: &ModelRef) -> Result<Option<Manifest>, StoreError> {
        let Some(path) = manifest::manifest_path(&self.manifests(), reference) else {
            return Ok(None);
        };
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(StoreError::io("cannot read", &path)(error)),
        };
        parse_manifest(&path, &text).map(Some)
    }

    /// Every manifest, sorted by name, and the damaged ones as errors.
    pub fn manifests_all(&self) -> (Vec<Manifest>, Vec<StoreError>) {
        let mut found = Vec::new();
        let mut damaged = Vec::new();
        collect_manifests(&self.manifests(), 0, &mut found, &mut damaged);
        found.sort_by(|a: &Manifest, b| a.name.cmp(&b.name));
        (found, damaged)
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
        write_atomic(&path, &text).map_err(StoreError::io("cannot write", &path))
    }

    /// The files of a stored model, in load order (split sets: part 1 first).
    pub fn files(&self, manifest: &Manifest) -> Vec<PathBuf> {
        manifest
            .files
            .iter()
            .map(|file| self.file_path(manifest, file))
            .collect()
    }

    fn file_path(&self, manifest: &Manifest, file: &ManifestFile) -> PathBuf {
        match &manifest.source {
            Source::Hub { repo, revision } => match RepoId::parse(repo) {
                Ok(repo) => self.repo_cache(&repo).snapshot_file(revision, &file.name),
                Err(_) => PathBuf::new(),
            },
            Source::Local { .. } => self.local_blob(&file.sha256),
        }
    }

    /// Where a file's bytes are: the HF cache blob, or olm's own blob.
    pub fn blob_path(&self, manifest: &Manifest, file: &ManifestFile) -> PathBuf {
        match manifest.repo() {
            Some(repo) => self.repo_cache(&repo).blob(&file.sha256),
            None => self.local_blob(&file.sha256),
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

    /// Resolve MODEL to a file: a path, a store name, or a repo already in the HF cache.
    pub fn resolve(&self, reference: &ModelRef) -> Result<Resolved, StoreError> {
        if let ModelRef::Path(_) = reference {
            return Ok(Resolved {
                path: reference.resolve()?,
                manifest: None,
            });
        }
        if let Some(manifest) = self.find(reference)? {
            let path = self.files(&manifest).into_iter().next().unwrap_or_default();
            if !path.exists() {
                return Err(StoreError::NoSuchFile(path));
            }
            return Ok(Resolved {
                path,
                manifest: Some(manifest),
            });
        }
        if let ModelRef::Repo { repo, quant } = reference {
            if let Some(path) = self.find_in_hf_cache(repo, quant.as_deref()) {
                return Ok(Resolved {
                    path,
                    manifest: None,
                });
            }
        }
        Err(StoreError::NotInStore(reference.to_string()))
    }

    /// A GGUF file of `repo` at `refs/main` in the HF cache whose name carries
    /// `quant` (or the only one when no quant is given); split sets: part 1.
    pub fn find_in_hf_cache(&self, repo: &RepoId, quant: Option<&str>) -> Option<PathBuf> {
        let cache = self.repo_cache(repo);
        let commit = cache.main_commit()?;
        let candidates: Vec<CachedFile> = hfcache::scan(&self.hf_cache)
            .into_iter()
            .filter(|file| &file.repo == repo && file.commit == commit && is_first_part(&file.name))
            .filter(|file| !file.name.to_ascii_lowercase().contains("mmproj"))
            .collect();
        let matching: Vec<&CachedFile> = match quant {
            Some(quant) => candidates
                .iter()
                .filter(|file| quant_in_name(&file.name).as_deref() == Some(quant))
                .collect(),
            None => candidates.iter().collect(),
        };
        (matching.len() == 1).then(|| matching[0].path.clone())
    }

    /// Copy a local `.gguf` file into the store under `name` (after validating it).
    pub fn import(&self, source: &Path, name: &ModelRef) -> Result<Manifest, StoreError> {
        let metadata =
            fs::metadata(source).map_err(|_| StoreError::NoSuchFile(source.to_owned()))?;
        if !metadata.is_file() {
            return Err(StoreError::NoSuchFile(source.to_owned()));
        }
        let info = crate::gguf::inspect(source).map_err(|error| StoreError::InvalidModel {
            path: source.to_owned(),
            source: error,
        })?;
        let sha256 = sha256_file(source).map_err(StoreError::io("cannot read", source))?;
        let blob = self.local_blob(&sha256);
        if !blob_matches(&blob, &sha256) {
            copy_into_store(source, &blob, &sha256)?;
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
        };
        self.save_manifest(&manifest)?;
        Ok(manifest)
    }

    /// Remove a stored name, and each of its blobs no other name refers to.
    /// Returns the blobs removed. Only files inside the store are touched.
    pub fn remove(&self, manifest: &Manifest) -> Result<Vec<PathBuf>, StoreError> {
        let reference = ModelRef::parse_name(&manifest.name)?;
        let Some(path) = manifest::manifest_path(&self.manifests(), &reference) else {
            return Err(StoreError::NotInStore(manifest.name.clone()));
        };
        fs::remove_file(&path).map_err(StoreError::io("cannot remove", &path))?;
        if let Some(directory) = path.parent() {
            let _ = sync_directory(directory);
            remove_empty_folders(directory, &self.manifests());
        }
        self.remove_unused_files(manifest)
    }

    /// Remove the blobs of `manifest` (a name already removed or replaced)
    /// that no stored name refers to now, with their snapshot links unless
    /// a stored name uses the same link. Returns the blobs removed.
    pub fn remove_unused_files(&self, manifest: &Manifest) -> Result<Vec<PathBuf>, StoreError> {
        let (others, _) = self.manifests_all();
        let mut removed = Vec::new();
        for file in &manifest.files {
            let blob = self.blob_path(manifest, file);
            let shared = others
                .iter()
                .any(|other| other.files.iter().any(|f| self.blob_path(other, f) == blob));
            if shared {
                continue;
            }
            if let Source::Hub { .. } = manifest.source {
                let link = self.file_path(manifest, file);
                let link_in_use = others
                    .iter()
                    .any(|other| other.files.iter().any(|f| self.file_path(other, f) == link));
                if !link_in_use
                    && fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink())
                {
                    let _ = fs::remove_file(&link);
                }
            }
            if fs::symlink_metadata(&blob).is_ok() {
                fs::remove_file(&blob).map_err(StoreError::io("cannot remove", &blob))?;
                removed.push(blob);
            }
        }
        Ok(removed)
    }

    /// Re-hash a stored model's files against its manifest.
    pub fn verify(&self, manifest: &Manifest) -> Vec<FileCheck> {
        manifest
            .files
            .iter()
            .map(|file| {
                let path = self.blob_path(manifest, file);
                FileCheck {
                    model: manifest.name.clone(),
                    problem: check_blob(&path, file),
                    path,
                }
            })
            .collect()
    }
}

fn check_blob(path: &Path, file: &ManifestFile) -> Option<String> {
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
    match sha256_file(path) {
        Ok(sha256) if sha256 == file.sha256 => None,
        Ok(sha256) => Some(format!("sha256 is {sha256}, expected {}", file.sha256)),
        Err(error) => Some(format!("cannot read: {error}")),
    }
}

/// Whether a blob exists as a regular file with this sha256.
pub fn blob_matches(path: &Path, sha256: &str) -> bool {
    fs::symlink_metadata(path).is_ok_and(|metadata| metadata.file_type().is_file())
        && sha256_file(path).is_ok_and(|actual| actual == sha256)
}

fn copy_into_store(source: &Path, blob: &Path, sha256: &str) -> Result<(), StoreError> {
    let directory = blob.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(directory).map_err(StoreError::io("cannot create", directory))?;
    let temp = directory.join(format!(".{sha256}.{}.incomplete", std::process::id()));
    let copy = || -> io::Result<()> {
        fs::copy(source, &temp)?;
        File::open(&temp)?.sync_all()?;
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

fn remove_empty_folders(mut directory: &Path, stop: &Path) {
    while directory != stop && directory.starts_with(stop) {
        if fs::remove_dir(directory).is_err() {
            return;
        }
        match directory.parent() {
            Some(parent) => directory = parent,
            None => return,
        }
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

fn collect_manifests(
    directory: &Path,
    depth: usize,
    found: &mut Vec<Manifest>,
    damaged: &mut Vec<StoreError>,
) {
    let Ok(entries) = fs::read_dir(directory) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        if file_type.is_dir() && depth < 2 {
            collect_manifests(&path, depth + 1, found, damaged);
        } else if file_type.is_file() && name.ends_with(".json") && !name.starts_with('.') {
            match fs::read_to_string(&path) {
                Ok(text) => match parse_manifest(&path, &text) {
                    Ok(manifest) => found.push(manifest),
                    Err(error) => damaged.push(error),
                },
                Err(error) => damaged.push(StoreError::io("cannot read", &path)(error)),
            }
        }
    }
}

/// The sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
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

fn olm_home() -> PathBuf {
    if let Some(home) = std::env::var_os(crate::env::OLM_HOME).filter(|value| !value.is_empty()) {
        return absolute(PathBuf::from(home));
    }
    match directories::ProjectDirs::from("", "", "olm") {
        Some(dirs) => dirs.data_dir().to_path_buf(),
        None => absolute(PathBuf::from(".olm")),
    }
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
fn absolute(path: PathBuf) -> PathBuf {
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
        assert!(store.remove(&first).unwrap().is_empty(), "shared blob kept");
        assert!(blob.exists());
        assert!(store.verify(&second)[0].problem.is_none());
        fs::write(&blob, b"abd").unwrap();
        assert!(store.verify(&second)[0].problem.is_some());
        assert_eq!(store.remove(&second).unwrap(), vec![blob.clone()]);
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

    fn sha256_bytes(bytes: &[u8]) -> String {
        to_hex(&Sha256::digest(bytes))
    }
}
