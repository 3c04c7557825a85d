//! Keeping the store inside itself. olm's home and the Hugging Face cache
//! are each a [`Root`], resolved once (the root itself may be a symlink: the
//! user chose where it lives). Every path the store reads, hashes, lists,
//! links or deletes under a root is resolved first, following each symlink
//! on the way as the kernel would, and must lie strictly inside that root.
//! A symlink whose target leaves the root is an [`Escape`]: reported with
//! the link and where it leads, never followed.
//!
//! Files are opened, and entries deleted, through directory handles opened
//! one component at a time without following symlinks (`openat` with
//! `O_NOFOLLOW`), so a folder swapped for a link between the check and the
//! act is refused instead of followed. Deleting removes the entry itself (a
//! link, never what it points to).
//!
//! Escapes travel as `io::Error`s whose payload is the [`Escape`]
//! ([`escape_of`] finds it), so every caller's "cannot read PATH: ..." error
//! carries them without a second error type.
//!
//! Owns: path resolution and the no-follow file operations of the store.
//! Must not touch: what the paths mean (`hfcache`, `manifest`, `mod.rs`).

use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// The kernel's limit on symlinks followed while resolving one path.
const MAX_LINKS: usize = 40;

/// A symlink inside the store that leads out of where it may lead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Escape {
    /// Out of olm's home or out of the Hugging Face cache.
    #[error("{} is a symlink that leads outside the store: {}", link.display(), target.display())]
    OutsideStore { link: PathBuf, target: PathBuf },
    /// A snapshot file that links anywhere but its own repo's `blobs/`.
    #[error(
        "{} is a symlink that leads outside the store's blobs of its repo: {}",
        link.display(),
        target.display()
    )]
    OutsideBlobs { link: PathBuf, target: PathBuf },
}

impl Escape {
    /// The symlink at fault.
    pub fn link(&self) -> &Path {
        match self {
            Escape::OutsideStore { link, .. } | Escape::OutsideBlobs { link, .. } => link,
        }
    }

    /// Where it leads.
    pub fn target(&self) -> &Path {
        match self {
            Escape::OutsideStore { target, .. } | Escape::OutsideBlobs { target, .. } => target,
        }
    }
}

impl From<Escape> for io::Error {
    fn from(escape: Escape) -> Self {
        io::Error::other(escape)
    }
}

/// The [`Escape`] an I/O error carries, if it is one.
pub fn escape_of(error: &io::Error) -> Option<&Escape> {
    error.get_ref()?.downcast_ref::<Escape>()
}

/// A folder the store keeps to: olm's home or the Hugging Face cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    /// Absolute, every symlink resolved (parts that do not exist yet kept).
    path: PathBuf,
}

impl Root {
    /// The root at `path`, resolved now (it need not exist yet).
    pub fn new(path: &Path) -> Self {
        let absolute = super::absolute(path.to_path_buf());
        let path = follow(&absolute, None).unwrap_or(absolute);
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.path.join(relative)
    }

    /// Where `path` (under this root) leads, every symlink on the way
    /// followed; an [`Escape`] if one of them leaves the root or the path
    /// is not strictly inside it. A path that does not exist (yet) is fine:
    /// its missing tail is kept as it is.
    pub fn resolve(&self, path: &Path) -> io::Result<PathBuf> {
        let resolved = follow(path, Some(&self.path))?;
        if !self.strictly_inside(&resolved) {
            return Err(Escape::OutsideStore {
                link: path.to_owned(),
                target: resolved,
            }
            .into());
        }
        Ok(resolved)
    }

    /// Whether `resolved` lies strictly inside the root.
    pub fn strictly_inside(&self, resolved: &Path) -> bool {
        resolved != self.path && resolved.starts_with(&self.path)
    }

    /// Open `path` for reading: it must resolve inside the root and be a
    /// regular file (never a FIFO or device, which could block or never end).
    pub fn open_file(&self, path: &Path) -> io::Result<File> {
        let resolved = self.resolve(path)?;
        self.open_resolved(&resolved)
    }

    /// Open a path [`Root::resolve`] returned, component by component
    /// without following symlinks; a regular file only.
    pub fn open_resolved(&self, resolved: &Path) -> io::Result<File> {
        let (directory, name) = self.parent_handle(resolved)?;
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
        let file = File::from(openat(&directory, name, flags)?);
        if !file.metadata()?.is_file() {
            return Err(io::Error::other(format!(
                "{} is not a regular file",
                resolved.display()
            )));
        }
        Ok(file)
    }

    /// Create the folder `directory` (and its parents) unless a symlink on
    /// the way leads outside the root; returns where it is.
    pub fn create_dir_all(&self, directory: &Path) -> io::Result<PathBuf> {
        let resolved = self.resolve(directory)?;
        fs::create_dir_all(&resolved)?;
        // Created as real folders; check again in case one was swapped meanwhile.
        self.resolve(directory)
    }

    /// Remove the entry at `path` itself (a file or a link, never what a
    /// link points to). Its folder must resolve inside the root. `Ok(false)`
    /// when there was nothing to remove.
    pub fn remove_entry(&self, path: &Path) -> io::Result<bool> {
        self.unlink(path, 0)
    }

    /// Remove the folder at `path` if it is empty. `Ok(false)` when it is
    /// missing or not empty.
    pub fn remove_empty_dir(&self, path: &Path) -> io::Result<bool> {
        match self.unlink(path, libc::AT_REMOVEDIR) {
            Err(error)
                if matches!(
                    error.raw_os_error(),
                    Some(libc::ENOTEMPTY | libc::EEXIST | libc::ENOTDIR)
                ) =>
            {
                Ok(false)
            }
            other => other,
        }
    }

    fn unlink(&self, path: &Path, flags: libc::c_int) -> io::Result<bool> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(io::Error::other("path has no parent"));
        };
        let parent = follow(parent, Some(&self.path))?;
        if !parent.starts_with(&self.path) {
            return Err(Escape::OutsideStore {
                link: path.parent().unwrap_or(path).to_owned(),
                target: parent,
            }
            .into());
        }
        let directory = match self.directory_handle(&parent) {
            Ok(directory) => directory,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(error) => return Err(error),
        };
        let name = c_name(name)?;
        // SAFETY: `directory` is an open descriptor and `name` a valid C string.
        let result = unsafe { libc::unlinkat(directory.as_raw_fd(), name.as_ptr(), flags) };
        if result == 0 {
            return Ok(true);
        }
        match io::Error::last_os_error() {
            error if error.kind() == io::ErrorKind::NotFound => Ok(false),
            error => Err(error),
        }
    }

    /// The folder of a resolved path (opened without following links) and
    /// the path's last component.
    fn parent_handle<'a>(&self, resolved: &'a Path) -> io::Result<(OwnedFd, &'a OsStr)> {
        let (Some(parent), Some(name)) = (resolved.parent(), resolved.file_name()) else {
            return Err(io::Error::other("path has no parent"));
        };
        Ok((self.directory_handle(parent)?, name))
    }

    /// Open the resolved folder `directory` (the root or inside it) from
    /// the root down, refusing any component that is a symlink now.
    fn directory_handle(&self, directory: &Path) -> io::Result<OwnedFd> {
        let relative = directory
            .strip_prefix(&self.path)
            .map_err(|_| Escape::OutsideStore {
                link: directory.to_owned(),
                target: directory.to_owned(),
            })?;
        let root = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&self.path)?;
        let mut handle = OwnedFd::from(root);
        for component in relative.components() {
            let Component::Normal(name) = component else {
                return Err(io::Error::other("unexpected component in a resolved path"));
            };
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            handle = openat(&handle, name, flags)?;
        }
        Ok(handle)
    }
}

fn c_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::other("a file name holds a NUL byte"))
}

fn openat(directory: &OwnedFd, name: &OsStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    let name = c_name(name)?;
    // SAFETY: `directory` is an open descriptor and `name` a valid C string;
    // the returned descriptor, when valid, is owned by nobody else.
    let descriptor = unsafe { libc::openat(directory.as_raw_fd(), name.as_ptr(), flags) };
    if descriptor < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `descriptor` was just returned by openat and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(descriptor) })
}

/// One step of resolving a path.
enum Step {
    Name(OsString),
    Parent,
    /// The target of the symlink at this (resolved) place has been walked.
    LinkEnd(PathBuf),
}

/// Where the absolute `path` leads, following symlinks as the kernel does
/// (at most [`MAX_LINKS`]); once a component is missing, the rest is taken
/// as written. With a `root`, a symlink inside it whose target ends outside
/// it is an [`Escape`] (the innermost such link is named).
fn follow(path: &Path, root: Option<&Path>) -> io::Result<PathBuf> {
    if !path.is_absolute() {
        return Err(io::Error::other(format!(
            "{} is not an absolute path",
            path.display()
        )));
    }
    let mut pending = Vec::new();
    push_components(&mut pending, path);
    let mut resolved = PathBuf::from("/");
    let mut exists = true;
    let mut links = 0;
    while let Some(step) = pending.pop() {
        match step {
            Step::Parent => {
                resolved.pop();
            }
            Step::LinkEnd(link) => {
                if let Some(root) = root {
                    if link.starts_with(root) && !resolved.starts_with(root) {
                        return Err(Escape::OutsideStore {
                            link,
                            target: resolved,
                        }
                        .into());
                    }
                }
            }
            Step::Name(name) => {
                let next = resolved.join(&name);
                if exists {
                    match fs::symlink_metadata(&next) {
                        Ok(metadata) if metadata.file_type().is_symlink() => {
                            links += 1;
                            if links > MAX_LINKS {
                                return Err(io::Error::from_raw_os_error(libc::ELOOP));
                            }
                            let target = fs::read_link(&next)?;
                            pending.push(Step::LinkEnd(next));
                            if target.is_absolute() {
                                resolved = PathBuf::from("/");
                            }
                            push_components(&mut pending, &target);
                            continue;
                        }
                        Ok(_) => {}
                        Err(error)
                            if error.kind() == io::ErrorKind::NotFound
                                || error.raw_os_error() == Some(libc::ENOTDIR) =>
                        {
                            exists = false;
                        }
                        Err(error) => return Err(error),
                    }
                }
                resolved = next;
            }
        }
    }
    Ok(resolved)
}

/// Push `path`'s components so that the first is popped first.
fn push_components(pending: &mut Vec<Step>, path: &Path) {
    for component in path.components().rev() {
        match component {
            Component::Normal(name) => pending.push(Step::Name(name.to_owned())),
            Component::ParentDir => pending.push(Step::Parent),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    struct Setup {
        _dir: tempfile::TempDir,
        root: Root,
        outside: PathBuf,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(dir.path()).unwrap();
        fs::create_dir_all(base.join("root/a/b")).unwrap();
        fs::create_dir_all(base.join("outside")).unwrap();
        fs::write(base.join("outside/secret"), b"secret").unwrap();
        fs::write(base.join("root/a/b/file"), b"inside").unwrap();
        Setup {
            root: Root::new(&base.join("root")),
            outside: base.join("outside"),
            _dir: dir,
        }
    }

    #[test]
    fn plain_paths_resolve_to_themselves_and_missing_tails_are_kept() {
        let setup = setup();
        let file = setup.root.join("a/b/file");
        assert_eq!(setup.root.resolve(&file).unwrap(), file);
        let missing = setup.root.join("a/new/deeper/x");
        assert_eq!(setup.root.resolve(&missing).unwrap(), missing);
        assert!(
            setup.root.resolve(setup.root.path()).is_err(),
            "not strictly inside"
        );
    }

    #[test]
    fn a_folder_link_out_is_an_escape_naming_the_link() {
        let setup = setup();
        symlink(&setup.outside, setup.root.join("a/out")).unwrap();
        let error = setup
            .root
            .resolve(&setup.root.join("a/out/secret"))
            .unwrap_err();
        let escape = escape_of(&error).expect("an escape");
        assert_eq!(escape.link(), setup.root.join("a/out"));
        assert_eq!(escape.target(), setup.outside);
        assert!(error
            .to_string()
            .contains("is a symlink that leads outside the store"));
        // Also when the path under the link does not exist.
        assert!(escape_of(
            &setup
                .root
                .resolve(&setup.root.join("a/out/none/x"))
                .unwrap_err()
        )
        .is_some());
        assert!(setup
            .root
            .open_file(&setup.root.join("a/out/secret"))
            .is_err());
    }

    #[test]
    fn relative_and_dangling_links_out_are_escapes_too() {
        let setup = setup();
        symlink("../../../outside/secret", setup.root.join("a/b/rel")).unwrap();
        symlink("../../../outside/not-yet", setup.root.join("a/b/dangling")).unwrap();
        symlink("/", setup.root.join("a/b/slash")).unwrap();
        for name in ["rel", "dangling", "slash"] {
            let error = setup
                .root
                .resolve(&setup.root.join("a/b").join(name))
                .unwrap_err();
            assert!(escape_of(&error).is_some(), "{name}: {error}");
        }
    }

    #[test]
    fn links_that_stay_inside_are_followed() {
        let setup = setup();
        symlink("b/file", setup.root.join("a/inner")).unwrap();
        let resolved = setup.root.resolve(&setup.root.join("a/inner")).unwrap();
        assert_eq!(resolved, setup.root.join("a/b/file"));
        let mut text = String::new();
        setup
            .root
            .open_file(&setup.root.join("a/inner"))
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "inside");
    }

    #[test]
    fn the_innermost_link_that_leaves_is_named() {
        let setup = setup();
        symlink(setup.outside.join("secret"), setup.root.join("a/b/blob")).unwrap();
        symlink("b/blob", setup.root.join("a/snap")).unwrap();
        let error = setup.root.resolve(&setup.root.join("a/snap")).unwrap_err();
        assert_eq!(
            escape_of(&error).unwrap().link(),
            setup.root.join("a/b/blob")
        );
    }

    #[test]
    fn loops_are_an_error_not_a_hang() {
        let setup = setup();
        symlink("loop2", setup.root.join("a/loop1")).unwrap();
        symlink("loop1", setup.root.join("a/loop2")).unwrap();
        let error = setup.root.resolve(&setup.root.join("a/loop1")).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ELOOP));
    }

    #[test]
    fn removing_a_link_removes_the_link_never_its_target() {
        let setup = setup();
        let link = setup.root.join("a/b/link");
        symlink(setup.outside.join("secret"), &link).unwrap();
        assert!(setup.root.remove_entry(&link).unwrap());
        assert!(link.symlink_metadata().is_err());
        assert_eq!(fs::read(setup.outside.join("secret")).unwrap(), b"secret");
        assert!(!setup.root.remove_entry(&link).unwrap(), "already gone");
    }

    #[test]
    fn nothing_is_removed_through_a_folder_link_out() {
        let setup = setup();
        symlink(&setup.outside, setup.root.join("a/out")).unwrap();
        let error = setup
            .root
            .remove_entry(&setup.root.join("a/out/secret"))
            .unwrap_err();
        assert!(escape_of(&error).is_some());
        assert!(setup.outside.join("secret").exists());
        assert!(setup
            .root
            .remove_empty_dir(&setup.root.join("a/out/x"))
            .is_err());
        assert!(setup
            .root
            .create_dir_all(&setup.root.join("a/out/new"))
            .is_err());
        assert!(!setup.outside.join("new").exists());
    }

    #[test]
    fn non_regular_files_are_not_opened() {
        let setup = setup();
        let fifo = setup.root.join("a/fifo");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !status.is_ok_and(|status| status.success()) {
            return;
        }
        assert!(setup.root.open_file(&fifo).is_err(), "refused, not blocked");
        assert!(setup.root.open_file(&setup.root.join("a")).is_err());
    }

    #[test]
    fn only_empty_folders_are_removed() {
        let setup = setup();
        assert!(!setup.root.remove_empty_dir(&setup.root.join("a")).unwrap());
        fs::create_dir(setup.root.join("a/empty")).unwrap();
        assert!(setup
            .root
            .remove_empty_dir(&setup.root.join("a/empty"))
            .unwrap());
    }

    #[test]
    fn a_root_that_is_a_link_is_resolved_once() {
        let setup = setup();
        let base = setup.outside.parent().unwrap();
        symlink(setup.root.path(), base.join("alias")).unwrap();
        let root = Root::new(&base.join("alias"));
        assert_eq!(root.path(), setup.root.path());
    }
}
