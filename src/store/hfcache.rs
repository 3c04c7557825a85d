//! The Hugging Face cache layout (`models--owner--repo/{blobs,snapshots,refs}`
//! and `.locks`), shared with huggingface_hub and other tools, so a file is
//! stored once. Every part of a path built here was validated first, and
//! every path read, listed, linked or removed here is confined to the cache
//! (see `confine`): a snapshot file may only be a link into its own repo's
//! `blobs/`, and no folder of a repo may lead out of the cache.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::confine::{escape_of, Escape, Root};
use super::names::{check_repo_file_name, is_commit, is_sha256};
use super::reference::RepoId;
use super::StoreError;

/// The most bytes read from `refs/<revision>` (a 40-character commit).
const MAX_REF_BYTES: u64 = 4096;

/// Paths inside one repo's cache folder.
#[derive(Debug, Clone)]
pub struct RepoCache {
    pub root: PathBuf,
    lock_root: PathBuf,
    cache: Root,
}

impl RepoCache {
    /// The repo's folder in the cache at `cache` (resolved now).
    pub fn new(cache: &Path, repo: &RepoId) -> Self {
        Self::in_root(&Root::new(cache), repo)
    }

    /// The repo's folder in an already resolved cache root.
    pub(super) fn in_root(cache: &Root, repo: &RepoId) -> Self {
        Self {
            root: cache.join(repo.cache_folder()),
            lock_root: cache.join(".locks").join(repo.cache_folder()),
            cache: cache.clone(),
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

    /// Where a download of the blob with this sha256 writes: `blobs/<sha256>`
    /// through `blobs/<sha256>.incomplete`, under `.locks/.../<sha256>.lock`.
    pub fn download_paths(&self, sha256: &str) -> super::DownloadPaths {
        super::DownloadPaths {
            root: self.cache.clone(),
            target: self.blob(sha256),
            partial: self.partial(sha256),
            locks: vec![self.lock(sha256)],
            named_by_hash: true,
        }
    }

    /// `snapshots/<commit>/<file name>`; an empty name is the snapshot folder.
    pub fn snapshot_file(&self, commit: &str, name: &str) -> PathBuf {
        debug_assert!(is_commit(commit) && (name.is_empty() || check_repo_file_name(name).is_ok()));
        self.snapshot_folder(commit).join(name)
    }

    /// `snapshots/<commit>`.
    pub fn snapshot_folder(&self, commit: &str) -> PathBuf {
        debug_assert!(is_commit(commit));
        self.root.join("snapshots").join(commit)
    }

    /// `refs/<revision>`.
    pub fn reference(&self, revision: &str) -> PathBuf {
        self.root.join("refs").join(revision)
    }

    /// The cache root this repo lives in.
    pub fn cache(&self) -> &Root {
        &self.cache
    }

    /// The commit `refs/main` points at, if it is a valid commit (and
    /// `refs/main` lies inside the cache).
    pub fn main_commit(&self) -> Option<String> {
        let file = self.cache.open_file(&self.reference("main")).ok()?;
        let mut text = String::new();
        file.take(MAX_REF_BYTES).read_to_string(&mut text).ok()?;
        let commit = text.trim();
        is_commit(commit).then(|| commit.to_owned())
    }

    /// Refuse a repo whose folders (the repo, `blobs`, `snapshots`, `refs`,
    /// its `.locks` folder) or whose entries in `blobs`, `refs` and `.locks`
    /// lead outside the cache. Folders that do not exist yet are fine.
    pub fn check(&self) -> Result<(), StoreError> {
        let folders = [
            self.root.clone(),
            self.root.join("blobs"),
            self.root.join("snapshots"),
            self.root.join("refs"),
            self.lock_root.clone(),
        ];
        for folder in &folders {
            let resolved = self
                .cache
                .resolve(folder)
                .map_err(StoreError::io("cannot use", folder))?;
            if folder == &self.root || folder.ends_with("snapshots") {
                continue;
            }
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
        Ok(())
    }

    /// Where the snapshot file `path` leads: a link must resolve into this
    /// repo's `blobs/`, a plain file must lie inside the cache. Otherwise an
    /// [`Escape`] (as an `io::Error`).
    pub fn resolve_snapshot_file(&self, path: &Path) -> io::Result<PathBuf> {
        let resolved = self.cache.resolve(path)?;
        let is_link = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        if is_link {
            let blobs = self.cache.resolve(&self.root.join("blobs"))?;
            if resolved == blobs || !resolved.starts_with(&blobs) {
                return Err(Escape::OutsideBlobs {
                    link: path.to_owned(),
                    target: resolved,
                }
                .into());
            }
        }
        Ok(resolved)
    }

    /// Make `snapshots/<commit>/<name>` a relative symlink to `blobs/<sha256>`
    /// (replacing an old link), as huggingface_hub does. Refused when a
    /// folder on the way, or the blob, leads outside the cache.
    pub fn link_snapshot(&self, commit: &str, name: &str, sha256: &str) -> io::Result<PathBuf> {
        let link = self.snapshot_file(commit, name);
        let directory = link
            .parent()
            .ok_or_else(|| io::Error::other("snapshot path has no parent"))?;
        self.cache.resolve(&self.blob(sha256))?;
        let resolved_directory = self.cache.create_dir_all(directory)?;
        let depth = name.matches('/').count() + 2;
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(sha256);
        let temp = resolved_directory.join(format!(".{}.{}.link", sha256, std::process::id()));
        self.cache.remove_entry(&temp)?;
        std::os::unix::fs::symlink(&target, &temp)?;
        let file_name = link
            .file_name()
            .ok_or_else(|| io::Error::other("snapshot path has no file name"))?;
        if let Err(error) =
            super::atomic::rename_durable(&temp, &resolved_directory.join(file_name))
        {
            let _ = self.cache.remove_entry(&temp);
            return Err(error);
        }
        if let Err(error) = self.resolve_snapshot_file(&link) {
            let _ = self.cache.remove_entry(&link);
            return Err(error);
        }
        Ok(link)
    }

    /// Remove the entry at `path` (a file or link in this repo), never what
    /// a link points to; its folder must lie inside the cache.
    pub fn remove_entry(&self, path: &Path) -> io::Result<bool> {
        self.cache.remove_entry(path)
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

/// Every `.gguf` file in snapshots of the HF cache (two levels of folders
/// at most) that lies inside the cache; links that lead out are skipped.
pub fn scan(cache: &Path) -> Vec<CachedFile> {
    scan_root(&Root::new(cache)).0
}

/// Every `.gguf` file in snapshots of the HF cache, and the paths skipped
/// because they lead outside the cache (or a snapshot link outside its
/// repo's `blobs/`).
pub fn scan_root(cache: &Root) -> (Vec<CachedFile>, Vec<StoreError>) {
    let mut scan = Scan::default();
    let Ok(entries) = fs::read_dir(cache.path()) else {
        return (scan.found, scan.escapes);
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
        scan.repo(&RepoCache::in_root(cache, &repo), &repo);
    }
    scan.found
        .sort_by(|a, b| (&a.repo, &a.name).cmp(&(&b.repo, &b.name)));
    (scan.found, scan.escapes)
}

/// What [`scan_root`] gathers.
#[derive(Default)]
struct Scan {
    found: Vec<CachedFile>,
    escapes: Vec<StoreError>,
}

impl Scan {
    /// Keep `result` when it lies inside; note an escape, skip other errors.
    fn inside<T>(&mut self, path: &Path, result: io::Result<T>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                if escape_of(&error).is_some() {
                    self.escapes.push(StoreError::io("cannot use", path)(error));
                }
                None
            }
        }
    }

    /// The `.gguf` files of every snapshot of one repo.
    fn repo(&mut self, cache: &RepoCache, repo: &RepoId) {
        let snapshots = cache.root.join("snapshots");
        let Some(resolved) = self.inside(&snapshots, cache.cache.resolve(&snapshots)) else {
            return;
        };
        let Ok(entries) = fs::read_dir(resolved) else {
            return;
        };
        for entry in entries.flatten() {
            let commit = entry.file_name().to_string_lossy().into_owned();
            if is_commit(&commit) {
                let folder = snapshots.join(&commit);
                let snapshot = Snapshot {
                    cache,
                    repo,
                    commit: &commit,
                };
                self.folder(&snapshot, &folder, "", 0);
            }
        }
    }

    fn folder(&mut self, snapshot: &Snapshot<'_>, directory: &Path, prefix: &str, depth: usize) {
        let resolved = snapshot.cache.cache.resolve(directory);
        let Some(resolved) = self.inside(directory, resolved) else {
            return;
        };
        let Ok(entries) = fs::read_dir(resolved) else {
            return;
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let name = format!("{prefix}{file_name}");
            let path = directory.join(entry.file_name());
            let is_link = entry.file_type().is_ok_and(|kind| kind.is_symlink());
            if is_link && !file_name.to_ascii_lowercase().ends_with(".gguf") {
                continue;
            }
            let resolved = snapshot.cache.resolve_snapshot_file(&path);
            let Some(resolved) = self.inside(&path, resolved) else {
                continue;
            };
            let Ok(metadata) = fs::symlink_metadata(&resolved) else {
                continue;
            };
            if metadata.is_dir() && !is_link && depth < 2 {
                self.folder(snapshot, &path, &format!("{name}/"), depth + 1);
            } else if metadata.is_file()
                && file_name.to_ascii_lowercase().ends_with(".gguf")
                && check_repo_file_name(&name).is_ok()
            {
                self.found.push(CachedFile {
                    repo: snapshot.repo.clone(),
                    commit: snapshot.commit.to_owned(),
                    name,
                    path,
                    size: metadata.len(),
                });
            }
        }
    }
}

/// The snapshot being scanned.
struct Snapshot<'a> {
    cache: &'a RepoCache,
    repo: &'a RepoId,
    commit: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const SHA: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    struct Setup {
        _dir: tempfile::TempDir,
        cache: RepoCache,
        outside: PathBuf,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(dir.path()).unwrap();
        let outside = base.join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("keep"), b"keep").unwrap();
        let repo = RepoId::parse("owner/repo").unwrap();
        let cache = RepoCache::new(&base.join("hub"), &repo);
        fs::create_dir_all(cache.root.join("blobs")).unwrap();
        fs::write(cache.blob(SHA), b"gguf bytes").unwrap();
        Setup {
            _dir: dir,
            cache,
            outside,
        }
    }

    fn is_escape(error: &StoreError) -> bool {
        error.escape().is_some()
    }

    #[test]
    fn the_normal_layout_links_checks_and_scans() {
        let setup = setup();
        let cache = &setup.cache;
        cache.check().unwrap();
        let link = cache
            .link_snapshot(COMMIT, "model-Q4_K_M.gguf", SHA)
            .unwrap();
        assert_eq!(
            fs::read_link(&link).unwrap(),
            Path::new("../../blobs").join(SHA)
        );
        assert_eq!(cache.resolve_snapshot_file(&link).unwrap(), cache.blob(SHA));
        let nested = cache
            .link_snapshot(COMMIT, "sub/model-Q8_0.gguf", SHA)
            .unwrap();
        assert_eq!(
            cache.resolve_snapshot_file(&nested).unwrap(),
            cache.blob(SHA)
        );
        fs::create_dir_all(cache.root.join("refs")).unwrap();
        fs::write(cache.reference("main"), COMMIT).unwrap();
        assert_eq!(cache.main_commit().as_deref(), Some(COMMIT));
        let (found, escapes) = scan_root(cache.cache());
        assert!(escapes.is_empty());
        assert_eq!(found.len(), 2);
    }

    #[test]
    fn repo_folders_that_lead_out_are_refused_before_a_pull_writes() {
        for folder in ["blobs", "snapshots", "refs"] {
            let setup = setup();
            let path = setup.cache.root.join(folder);
            let _ = fs::remove_dir_all(&path);
            symlink(&setup.outside, &path).unwrap();
            let error = setup.cache.check().unwrap_err();
            assert!(is_escape(&error), "{folder}: {error}");
        }
        let setup = setup();
        let locks = setup.cache.lock(SHA);
        fs::create_dir_all(locks.parent().unwrap().parent().unwrap()).unwrap();
        symlink(&setup.outside, locks.parent().unwrap()).unwrap();
        assert!(is_escape(&setup.cache.check().unwrap_err()), ".locks");
    }

    #[test]
    fn partial_and_lock_files_linked_out_are_refused() {
        let setup = setup();
        symlink(setup.outside.join("keep"), setup.cache.partial(SHA)).unwrap();
        assert!(is_escape(&setup.cache.check().unwrap_err()), "partial");
        let setup = self::setup();
        let lock = setup.cache.lock(SHA);
        fs::create_dir_all(lock.parent().unwrap()).unwrap();
        symlink(setup.outside.join("keep"), &lock).unwrap();
        assert!(is_escape(&setup.cache.check().unwrap_err()), "lock");
    }

    #[test]
    fn link_snapshot_refuses_a_snapshot_folder_or_blob_that_leads_out() {
        let setup = setup();
        let snapshots = setup.cache.root.join("snapshots");
        symlink(&setup.outside, &snapshots).unwrap();
        let error = setup
            .cache
            .link_snapshot(COMMIT, "m.gguf", SHA)
            .unwrap_err();
        assert!(escape_of(&error).is_some(), "{error}");
        assert_eq!(
            fs::read_dir(&setup.outside).unwrap().count(),
            1,
            "nothing created outside"
        );

        let setup = self::setup();
        fs::remove_file(setup.cache.blob(SHA)).unwrap();
        symlink(setup.outside.join("keep"), setup.cache.blob(SHA)).unwrap();
        let error = setup
            .cache
            .link_snapshot(COMMIT, "m.gguf", SHA)
            .unwrap_err();
        assert!(escape_of(&error).is_some(), "{error}");
    }

    #[test]
    fn snapshot_links_anywhere_but_their_own_blobs_are_refused() {
        let setup = setup();
        let folder = setup.cache.snapshot_folder(COMMIT);
        fs::create_dir_all(&folder).unwrap();
        // Into the cache, but not into this repo's blobs.
        let other = setup.cache.cache().join("models--other--repo/blobs");
        fs::create_dir_all(&other).unwrap();
        fs::write(other.join(SHA), b"other").unwrap();
        let link = folder.join("a.gguf");
        symlink(format!("../../../models--other--repo/blobs/{SHA}"), &link).unwrap();
        let error = setup.cache.resolve_snapshot_file(&link).unwrap_err();
        assert!(
            matches!(escape_of(&error), Some(Escape::OutsideBlobs { .. })),
            "{error}"
        );
        // Out of the cache.
        let out = folder.join("b.gguf");
        symlink(setup.outside.join("keep"), &out).unwrap();
        let error = setup.cache.resolve_snapshot_file(&out).unwrap_err();
        assert!(
            matches!(escape_of(&error), Some(Escape::OutsideStore { .. })),
            "{error}"
        );
        // A scan lists neither.
        let (found, escapes) = scan_root(setup.cache.cache());
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(escapes.len(), 2);
    }

    #[test]
    fn refs_main_linked_out_is_not_read() {
        let setup = setup();
        fs::write(setup.outside.join("main"), COMMIT).unwrap();
        fs::create_dir_all(setup.cache.root.join("refs")).unwrap();
        symlink(setup.outside.join("main"), setup.cache.reference("main")).unwrap();
        assert_eq!(setup.cache.main_commit(), None);
    }
}
