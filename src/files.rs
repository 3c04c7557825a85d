//! Reading files olm did not write itself (a `--schema` file, a chat
//! template, a transcript for `/load`, a config file): a regular file only,
//! and never more than a stated number of bytes.
//!
//! Owns: the one way to read such a file. Opening never blocks (a FIFO named
//! as a schema is refused, not waited on), the type is checked on the open
//! file (no window between a check and the open), and a file that grows
//! while it is read is cut at the bound and refused.
//!
//! Must not touch: anything but std; callers add their own context.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The message names the I/O error itself (not also as a `source`,
    /// which would print it twice in an error chain).
    #[error("cannot read {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("{} is larger than the limit of {}", path.display(), crate::human::size(*limit))]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{} is not UTF-8 text", path.display())]
    NotText { path: PathBuf },
}

impl ReadError {
    /// What went wrong, without the path (for a caller that names the file
    /// itself).
    pub fn reason(&self) -> String {
        match self {
            ReadError::Io { error, .. } => error.to_string(),
            ReadError::NotAFile { .. } => "not a regular file".to_owned(),
            ReadError::TooLarge { limit, .. } => {
                format!("larger than the limit of {}", crate::human::size(*limit))
            }
            ReadError::NotText { .. } => "not UTF-8 text".to_owned(),
        }
    }
}

/// The bytes of the regular file at `path`, refused when it holds more than
/// `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let io_error = |error| ReadError::Io {
        path: path.to_owned(),
        error,
    };
    let file = open_without_blocking(path).map_err(io_error)?;
    let metadata = file.metadata().map_err(io_error)?;
    if !metadata.is_file() {
        return Err(ReadError::NotAFile {
            path: path.to_owned(),
        });
    }
    if metadata.len() > limit {
        return Err(ReadError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    Ok(bytes)
}

/// [`read_bounded`] for text: invalid UTF-8 is refused, not replaced.
pub fn read_text_bounded(path: &Path, limit: u64) -> Result<String, ReadError> {
    String::from_utf8(read_bounded(path, limit)?).map_err(|_| ReadError::NotText {
        path: path.to_owned(),
    })
}

/// Opens for reading with `O_NONBLOCK`, so that opening a FIFO with no
/// writer returns at once instead of waiting; for a regular file the flag
/// changes nothing.
fn open_without_blocking(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// A FIFO at `path`, for tests of reads and writes that must not block on one.
#[cfg(test)]
pub(crate) fn make_fifo_for_tests(path: &std::path::Path) {
    let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL in path");
    // SAFETY: mkfifo gets a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0, "mkfifo");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_file_is_read_whole() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("schema.json");
        std::fs::write(&path, b"{}").unwrap();
        assert_eq!(read_text_bounded(&path, 2).unwrap(), "{}");
        assert!(matches!(
            read_bounded(&path, 1),
            Err(ReadError::TooLarge { limit: 1, .. })
        ));
    }

    #[test]
    fn a_fifo_is_refused_without_waiting() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("fifo");
        make_fifo_for_tests(&path);
        let started = std::time::Instant::now();
        assert!(matches!(
            read_bounded(&path, 1 << 20),
            Err(ReadError::NotAFile { .. })
        ));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn devices_and_directories_are_refused() {
        for path in ["/dev/zero", "/"] {
            assert!(
                matches!(
                    read_bounded(Path::new(path), 1 << 20),
                    Err(ReadError::NotAFile { .. })
                ),
                "{path}"
            );
        }
    }

    #[test]
    fn invalid_utf8_is_not_text() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("template.jinja");
        std::fs::write(&path, b"\xff\xfe").unwrap();
        assert!(matches!(
            read_text_bounded(&path, 16),
            Err(ReadError::NotText { .. })
        ));
    }
}
