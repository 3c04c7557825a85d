//! Crash-safe file writes: a fresh temp file in the same directory,
//! `sync_all`, rename over the target (replacing a link there, never
//! writing through it), then `sync_all` on the directory. Callers confine
//! the directory to the store first.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Write `bytes` to `path` so that a crash leaves either the old or the new file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let directory = match path.parent() {
        // A bare file name lives in the current directory.
        Some(parent) if parent.as_os_str().is_empty() => Path::new("."),
        Some(parent) => parent,
        None => return Err(std::io::Error::other("path has no parent")),
    };
    fs::create_dir_all(directory)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("path has no file name"))?;
    let temp = directory.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        // A fresh file: a link planted under the temp name is removed, never written through.
        match fs::remove_file(&temp) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        sync_directory(directory)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Make a rename or unlink in `directory` durable.
pub fn sync_directory(directory: &Path) -> std::io::Result<()> {
    File::open(directory)?.sync_all()
}

/// Rename `from` to `to` and make it durable.
pub fn rename_durable(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::rename(from, to)?;
    match to.parent() {
        Some(directory) => sync_directory(directory),
        None => Ok(()),
    }
}

/// For paths a user names (not the store's own files, where a planted
/// FIFO is replaced): a rename replaces whatever is at `path`, so a device,
/// a FIFO or a folder there is refused, not replaced (chat's `/save
/// /dev/null` as root turned the device into a file). A link is replaced,
/// never written through.
pub fn refuse_non_regular_target(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(metadata) if !metadata.is_file() && !metadata.file_type().is_symlink() => {
            Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "it exists and is not a regular file; not replacing it",
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_planted_under_the_temp_name_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::write(&outside, b"keep").unwrap();
        let target = dir.path().join("store/file.json");
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        let temp = target
            .parent()
            .unwrap()
            .join(format!(".file.json.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&outside, &temp).unwrap();
        write_atomic(&target, b"new").unwrap();
        assert_eq!(fs::read(&outside).unwrap(), b"keep");
        assert_eq!(fs::read(&target).unwrap(), b"new");
        // A link at the target itself is replaced, not written through.
        fs::remove_file(&target).unwrap();
        std::os::unix::fs::symlink(&outside, &target).unwrap();
        write_atomic(&target, b"newer").unwrap();
        assert_eq!(fs::read(&outside).unwrap(), b"keep");
        assert!(!fs::symlink_metadata(&target)
            .unwrap()
            .file_type()
            .is_symlink());
    }
}
