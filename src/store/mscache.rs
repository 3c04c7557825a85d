//! The ModelScope cache layout, shared with the `modelscope` Python client
//! (modelscope-hub 0.5), so a file either tool downloaded is found by the
//! other and stored once:
//!
//! - `{cache}/models/{owner}--{name}/snapshots/{revision}/{path}`: plain
//!   files (no blobs, no links); the revision is the one asked for
//!   (`master` unless another is named), not a commit;
//! - the layouts of clients before 1.38, which the client still uses when
//!   such a folder exists and is not empty: `{cache}/models/{owner}/{name}`
//!   and `{cache}/hub/models/{owner}/{name}`, with every `.` of the name
//!   written `___`. olm picks the same folder by the same rule.
//!
//! olm keeps its partial downloads where the client never looks
//! (`{cache}/.olm/partial/<sha256>.incomplete`, sparse while parallel parts
//! arrive) and locks both its own `{cache}/.olm/locks/<sha256>.lock` and the
//! client's per-file lock `{cache}/.lock/file_<digest>.lock`, so olm and the
//! client never download the same file at once.
//!
//! Every path read, listed, written or removed here is confined to the
//! cache (`confine`): a folder or file that leads outside it is an
//! [`Escape`], never followed.
//! Must not touch: the network, the Hugging Face layout (`hfcache`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::confine::{escape_of, Root};
use super::names::{check_repo_file_name, is_revision, is_sha256};
use super::reference::RepoId;
use super::{to_hex, DownloadPaths, StoreError};

/// The revision pulled when none is named, as the client's default.
pub const DEFAULT_REVISION: &str = "master";

/// Folder of olm's own files inside the cache (partials, locks).
const OLM_FOLDER: &str = ".olm";
/// The client's temporary download folder, never a model.
const CLIENT_TEMP_FOLDER: &str = "._____temp";

/// Paths of one repo in the ModelScope cache.
#[derive(Debug, Clone)]
pub struct MsRepoCache {
    cache: Root,
    repo: RepoId,
}

impl MsRepoCache {
    /// The repo in the (already resolved) cache root.
    pub fn new(cache: &Root, repo: &RepoId) -> Self {
        Self {
            cache: cache.clone(),
            repo: repo.clone(),
        }
    }

    /// The cache root this repo lives in.
    pub fn cache(&self) -> &Root {
        &self.cache
    }

    /// `models/{owner}--{name}`: the current layout's repo folder.
    pub fn repo_folder(&self) -> PathBuf {
        self.cache
            .join("models")
            .join(format!("{}--{}", self.repo.owner, self.repo.name))
    }

    /// The folders of older clients, in the order the client tries them.
    fn legacy_folders(&self) -> [PathBuf; 2] {
        let name = self.repo.name.replace('.', "___");
        [
            self.cache.join("models").join(&self.repo.owner).join(&name),
            self.cache
                .join("hub")
                .join("models")
                .join(&self.repo.owner)
                .join(&name),
        ]
    }

    /// The legacy folder the client would use: the first that exists and
    /// is not empty. One that leads outside the cache is not read: it is
    /// returned as it is, so that [`MsRepoCache::check`] refuses it.
    pub fn legacy_folder(&self) -> Option<PathBuf> {
        self.legacy_folders()
            .into_iter()
            .find(|folder| match self.cache.resolve(folder) {
                Ok(resolved) => {
                    fs::read_dir(resolved).is_ok_and(|mut entries| entries.next().is_some())
                }
                Err(error) => escape_of(&error).is_some(),
            })
    }

    /// The folder the files of `revision` live in: a legacy folder when the
    /// client would use one, else `snapshots/{revision}`. `revision` must
    /// be validated ([`is_revision`]).
    pub fn snapshot_folder(&self, revision: &str) -> PathBuf {
        debug_assert!(is_revision(revision));
        self.legacy_folder()
            .unwrap_or_else(|| self.repo_folder().join("snapshots").join(revision))
    }

    /// Where file `name` of `revision` lives (validated name and revision).
    pub fn file(&self, revision: &str, name: &str) -> PathBuf {
        debug_assert!(check_repo_file_name(name).is_ok());
        self.snapshot_folder(revision).join(name)
    }

    /// olm's partial download of the file with this sha256.
    pub fn partial(&self, sha256: &str) -> PathBuf {
        debug_assert!(is_sha256(sha256));
        self.cache
            .join(OLM_FOLDER)
            .join("partial")
            .join(format!("{sha256}.incomplete"))
    }

    /// olm's lock on the file with this sha256.
    pub fn olm_lock(&self, sha256: &str) -> PathBuf {
        debug_assert!(is_sha256(sha256));
        self.cache
            .join(OLM_FOLDER)
            .join("locks")
            .join(format!("{sha256}.lock"))
    }

    /// The client's lock on file `name` of this model repo: the sha256 of
    /// its lock key (modelscope-hub's `DownloadManager._lock_path`).
    pub fn client_lock(&self, name: &str) -> PathBuf {
        let key = format!(
            "modelscope-hub-download-lock-v2\0file\0model\0{}\0{name}",
            self.repo
        );
        let digest = to_hex(&Sha256::digest(key.as_bytes()));
        self.cache.join(".lock").join(format!("file_{digest}.lock"))
    }

    /// Where a download of `name` (at `revision`, with this sha256) writes:
    /// the file itself, olm's partial, and both locks (the client's first).
    pub fn download_paths(&self, revision: &str, name: &str, sha256: &str) -> DownloadPaths {
        DownloadPaths {
            root: self.cache.clone(),
            target: self.file(revision, name),
            partial: self.partial(sha256),
            locks: vec![self.client_lock(name), self.olm_lock(sha256)],
            named_by_hash: false,
        }
    }

    /// Refuse to write file `name` of `revision` when a folder on the way
    /// (the repo and snapshot folders, the file's own folder, olm's partial
    /// and lock folders, the client's lock folder) or an entry of the
    /// partial and lock folders leads outside the cache. Folders that do not
    /// exist yet are fine.
    pub fn check(&self, revision: &str, name: &str) -> Result<(), StoreError> {
        let file = self.file(revision, name);
        let mut folders = vec![
            self.repo_folder(),
            self.cache.join(OLM_FOLDER),
            self.cache.join(".lock"),
        ];
        if let Some(parent) = file.parent() {
            folders.push(parent.to_owned());
        }
        let entries_checked = [
            self.cache.join(OLM_FOLDER).join("partial"),
            self.cache.join(OLM_FOLDER).join("locks"),
            self.cache.join(".lock"),
        ];
        for folder in folders.iter().chain(&entries_checked) {
            self.cache
                .resolve(folder)
                .map_err(StoreError::io("cannot use", folder))?;
        }
        for folder in &entries_checked {
            let Ok(resolved) = self.cache.resolve(folder) else {
                continue;
            };
            let Ok(entries) = fs::read_dir(&resolved) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|kind| kind.is_symlink()) {
                    let path = folder.join(entry.file_name());
                    self.cache
                        .resolve(&path)
                        .map_err(StoreError::io("cannot use", &path))?;
                }
            }
        }
        // The file itself may be a link (another tool's layout): it must
        // stay inside the cache; a pull replaces it, never writes through it.
        self.cache
            .resolve(&file)
            .map_err(StoreError::io("cannot use", &file))?;
        Ok(())
    }
}

/// A `.gguf` file found in the ModelScope cache (pulled by olm or the client).
#[derive(Debug, Clone)]
pub struct MsCachedFile {
    pub repo: RepoId,
    /// The snapshot folder's revision; `None` in a legacy folder.
    pub revision: Option<String>,
    /// Path inside the repo.
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
}

/// Every `.gguf` file in the ModelScope cache (current and legacy layouts,
/// two levels of folders inside a snapshot at most) that lies inside the
/// cache, and the paths skipped because they lead outside it.
pub fn scan_root(cache: &Root) -> (Vec<MsCachedFile>, Vec<StoreError>) {
    let mut scan = Scan::default();
    let models = cache.join("models");
    for (folder, name) in scan.entries(cache, &models) {
        if name.starts_with('.') {
            continue;
        }
        match name.split_once("--") {
            Some((owner, repo_name)) => {
                let Ok(repo) = RepoId::parse(&format!("{owner}/{repo_name}")) else {
                    continue;
                };
                let snapshots = folder.join("snapshots");
                for (snapshot, revision) in scan.entries(cache, &snapshots) {
                    if is_revision(&revision) {
                        scan.files(cache, &repo, Some(&revision), &snapshot, "", 0);
                    }
                }
            }
            None => scan.legacy_owner(cache, &folder, &name),
        }
    }
    let legacy_models = cache.join("hub").join("models");
    for (folder, owner) in scan.entries(cache, &legacy_models) {
        scan.legacy_owner(cache, &folder, &owner);
    }
    scan.found
        .sort_by(|a, b| (&a.repo, &a.name).cmp(&(&b.repo, &b.name)));
    (scan.found, scan.escapes)
}

/// What [`scan_root`] gathers.
#[derive(Default)]
struct Scan {
    found: Vec<MsCachedFile>,
    escapes: Vec<StoreError>,
}

impl Scan {
    /// The entries of `folder` (confined) as (path under the cache, name).
    fn entries(&mut self, cache: &Root, folder: &Path) -> Vec<(PathBuf, String)> {
        let resolved = match cache.resolve(folder) {
            Ok(resolved) => resolved,
            Err(error) => {
                self.note(folder, error);
                return Vec::new();
            }
        };
        let Ok(entries) = fs::read_dir(resolved) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                (folder.join(entry.file_name()), name)
            })
            .collect()
    }

    fn note(&mut self, path: &Path, error: io::Error) {
        if escape_of(&error).is_some() {
            self.escapes.push(StoreError::io("cannot use", path)(error));
        }
    }

    /// Legacy repos of one owner: `{owner}/{name with ___}`.
    fn legacy_owner(&mut self, cache: &Root, folder: &Path, owner: &str) {
        if owner.starts_with('.') {
            return;
        }
        for (repo_folder, stored_name) in self.entries(cache, folder) {
            let name = stored_name.replace("___", ".");
            let Ok(repo) = RepoId::parse(&format!("{owner}/{name}")) else {
                continue;
            };
            self.files(cache, &repo, None, &repo_folder, "", 0);
        }
    }

    fn files(
        &mut self,
        cache: &Root,
        repo: &RepoId,
        revision: Option<&str>,
        directory: &Path,
        prefix: &str,
        depth: usize,
    ) {
        for (path, file_name) in self.entries(cache, directory) {
            if file_name.starts_with('.') || file_name == CLIENT_TEMP_FOLDER {
                continue;
            }
            let name = format!("{prefix}{file_name}");
            let resolved = match cache.resolve(&path) {
                Ok(resolved) => resolved,
                Err(error) => {
                    self.note(&path, error);
                    continue;
                }
            };
            let Ok(metadata) = fs::symlink_metadata(&resolved) else {
                continue;
            };
            if metadata.is_dir() && depth < 2 {
                self.files(cache, repo, revision, &path, &format!("{name}/"), depth + 1);
            } else if metadata.is_file()
                && file_name.to_ascii_lowercase().ends_with(".gguf")
                && check_repo_file_name(&name).is_ok()
            {
                self.found.push(MsCachedFile {
                    repo: repo.clone(),
                    revision: revision.map(str::to_owned),
                    name,
                    path,
                    size: metadata.len(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const SHA: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

    struct Setup {
        _dir: tempfile::TempDir,
        root: Root,
        outside: PathBuf,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(dir.path()).unwrap();
        let outside = base.join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("keep"), b"keep").unwrap();
        Setup {
            root: Root::new(&base.join("ms")),
            outside,
            _dir: dir,
        }
    }

    fn repo() -> RepoId {
        RepoId::parse("Qwen/Qwen2.5-0.5B-Instruct-GGUF").unwrap()
    }

    #[test]
    fn the_current_layout_is_the_clients() {
        let setup = setup();
        let cache = MsRepoCache::new(&setup.root, &repo());
        assert_eq!(
            cache.file("master", "q8/model-q8_0.gguf"),
            setup.root.join(
                "models/Qwen--Qwen2.5-0.5B-Instruct-GGUF/snapshots/master/q8/model-q8_0.gguf"
            )
        );
        // What modelscope-hub 0.5.1's `DownloadManager._lock_path` returns
        // for this repo and file (computed with the real client).
        assert_eq!(
            cache.client_lock("a.gguf"),
            setup.root.join(
                ".lock/file_a8069975ad5a96848b8684fca8bc11d22c67499b62e803f34938c968d2519bb1.lock"
            )
        );
        let paths = cache.download_paths("master", "a.gguf", SHA);
        assert!(paths.partial.starts_with(setup.root.join(".olm/partial")));
        assert_eq!(paths.locks.len(), 2);
    }

    #[test]
    fn a_non_empty_legacy_folder_is_used_as_the_client_uses_it() {
        let setup = setup();
        let cache = MsRepoCache::new(&setup.root, &repo());
        let legacy = setup
            .root
            .join("hub/models/Qwen/Qwen2___5-0___5B-Instruct-GGUF");
        fs::create_dir_all(&legacy).unwrap();
        assert_eq!(cache.legacy_folder(), None, "an empty one is not");
        fs::write(legacy.join("model-q4_k_m.gguf"), b"GGUF").unwrap();
        assert_eq!(cache.file("master", "x.gguf"), legacy.join("x.gguf"));
        let (found, escapes) = scan_root(&setup.root);
        assert!(escapes.is_empty());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].repo, repo());
        assert_eq!(found[0].revision, None);
        // The newer legacy place wins over the older one.
        let newer = setup
            .root
            .join("models/Qwen/Qwen2___5-0___5B-Instruct-GGUF");
        fs::create_dir_all(&newer).unwrap();
        fs::write(newer.join("y.gguf"), b"GGUF").unwrap();
        assert_eq!(cache.file("master", "x.gguf"), newer.join("x.gguf"));
    }

    #[test]
    fn a_legacy_folder_that_leads_out_is_refused_not_read() {
        let setup = setup();
        let cache = MsRepoCache::new(&setup.root, &repo());
        let owner = setup.root.join("models/Qwen");
        fs::create_dir_all(&owner).unwrap();
        symlink(&setup.outside, owner.join("Qwen2___5-0___5B-Instruct-GGUF")).unwrap();
        let error = cache.check("master", "x.gguf").unwrap_err();
        assert!(error.escape().is_some(), "{error}");
        let (found, escapes) = scan_root(&setup.root);
        assert!(found.is_empty());
        assert_eq!(escapes.len(), 1, "{escapes:?}");
    }

    #[test]
    fn scans_find_gguf_files_and_skip_links_out_and_temporaries() {
        let setup = setup();
        let cache = MsRepoCache::new(&setup.root, &repo());
        let snapshot = cache.snapshot_folder("master");
        fs::create_dir_all(snapshot.join("sub")).unwrap();
        fs::write(snapshot.join("a-q4_k_m.gguf"), b"GGUF").unwrap();
        fs::write(snapshot.join("sub/b-q8_0.gguf"), b"GGUF").unwrap();
        fs::write(snapshot.join("a-q4_k_m.gguf.incomplete"), b"GG").unwrap();
        fs::write(snapshot.join("README.md"), b"hi").unwrap();
        symlink(setup.outside.join("keep"), snapshot.join("out.gguf")).unwrap();
        let (found, escapes) = scan_root(&setup.root);
        let names: Vec<&str> = found.iter().map(|file| file.name.as_str()).collect();
        assert_eq!(names, ["a-q4_k_m.gguf", "sub/b-q8_0.gguf"]);
        assert_eq!(found[0].revision.as_deref(), Some("master"));
        assert_eq!(escapes.len(), 1, "{escapes:?}");
    }

    #[test]
    fn folders_and_partials_that_lead_out_are_refused_before_a_pull_writes() {
        let setup = setup();
        let cache = MsRepoCache::new(&setup.root, &repo());
        cache.check("master", "a.gguf").unwrap();
        let snapshots = cache.repo_folder().join("snapshots");
        fs::create_dir_all(cache.repo_folder()).unwrap();
        symlink(&setup.outside, &snapshots).unwrap();
        let error = cache.check("master", "a.gguf").unwrap_err();
        assert!(error.escape().is_some(), "{error}");
        fs::remove_file(&snapshots).unwrap();

        let partial = cache.partial(SHA);
        fs::create_dir_all(partial.parent().unwrap()).unwrap();
        symlink(setup.outside.join("keep"), &partial).unwrap();
        let error = cache.check("master", "a.gguf").unwrap_err();
        assert!(error.escape().is_some(), "{error}");
        fs::remove_file(&partial).unwrap();

        let lock = cache.client_lock("a.gguf");
        fs::create_dir_all(lock.parent().unwrap()).unwrap();
        symlink(setup.outside.join("new"), &lock).unwrap();
        assert!(cache
            .check("master", "a.gguf")
            .unwrap_err()
            .escape()
            .is_some());
        assert!(!setup.outside.join("new").exists());
    }
}
