//! Fetching one file into a cache, the one transfer path of every hub: lock,
//! resume from the partial file with `Range`, parallel ranged parts for
//! large files, stall detection and retry, sha256 and size verification,
//! then an atomic rename to the target the store chose ([`DownloadPaths`]:
//! a Hugging Face blob or a ModelScope snapshot file).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::api::{Failure, Pace};
use super::{FileHead, Hub, HubError, PullReporter, MAX_ATTEMPTS, MAX_REDIRECTS};
use crate::store::{self, DownloadPaths};

/// Files at least this large are fetched in parallel ranged parts.
pub const PARALLEL_THRESHOLD: u64 = 64 << 20;
/// Bytes between durable checkpoints of a parallel download.
const CHECKPOINT_BYTES: u64 = 4 << 20;
/// Most bytes of a download's state file read (a few segments of JSON).
const MAX_STATE_BYTES: u64 = 1 << 20;
const BUFFER_BYTES: usize = 256 << 10;

/// One byte range of the file and how much of it is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Segment {
    start: u64,
    end: u64,
    done: u64,
}

impl Segment {
    fn remaining(&self) -> u64 {
        self.end - self.start - self.done
    }
}

/// Progress of a parallel download, kept beside the partial file.
#[derive(Debug, Serialize, Deserialize)]
struct PartsState {
    size: u64,
    segments: Vec<Segment>,
}

/// What to do with a blob that is already in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Keep it when its hash matches (the normal pull).
    KeepIfVerified,
    /// Download a fresh copy anyway (`--force`); the old blob is replaced
    /// only once the new one is verified, never deleted before.
    Replace,
}

/// Make `paths.target` hold the file `head` describes, downloading what is
/// missing. A file already there is kept only if it is a regular file whose
/// hash matches (whoever downloaded it: olm or another tool).
pub fn fetch_file(
    hub: &Hub,
    paths: &DownloadPaths,
    name: &str,
    head: &FileHead,
    existing: Existing,
    reporter: &dyn PullReporter,
) -> Result<PathBuf, HubError> {
    let mut locks = Vec::new();
    for lock_path in &paths.locks {
        locks.push(lock(paths, lock_path, name, reporter)?);
    }
    let target = &paths.target;
    if fs::symlink_metadata(target).is_ok() && existing == Existing::KeepIfVerified {
        if store::blob_matches(target, &head.sha256) {
            reporter.start_file(name, head.size, head.size);
            reporter.finish_file(name);
            return Ok(target.clone());
        }
        // A file named by another path may be the previous version: the
        // rename below replaces it once the new one is verified.
        if paths.named_by_hash {
            paths
                .root
                .remove_entry(target)
                .map_err(HubError::io("cannot remove the damaged", target))?;
        }
    }
    download(hub, paths, name, head, reporter)?;
    reporter.verifying(name);
    let partial = &paths.partial;
    verify(partial, name, head)?;
    if let Some(directory) = target.parent() {
        paths
            .root
            .create_dir_all(directory)
            .map_err(HubError::io("cannot create", directory))?;
    }
    store::rename_durable(partial, target).map_err(HubError::io("cannot finalize", target))?;
    reporter.finish_file(name);
    drop(locks);
    Ok(target.clone())
}

/// Exclusive lock on `path`, waiting for another pull (or another tool
/// that locks the same file) to finish.
fn lock(
    paths: &DownloadPaths,
    path: &Path,
    name: &str,
    reporter: &dyn PullReporter,
) -> Result<File, HubError> {
    if let Some(directory) = path.parent() {
        paths
            .root
            .create_dir_all(directory)
            .map_err(HubError::io("cannot create", directory))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(HubError::io("cannot open", path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => {
            reporter.waiting_for_lock(name);
            file.lock().map_err(HubError::io("cannot lock", path))?;
            Ok(file)
        }
        Err(fs::TryLockError::Error(error)) => Err(HubError::io("cannot lock", path)(error)),
    }
}

fn download(
    hub: &Hub,
    paths: &DownloadPaths,
    name: &str,
    head: &FileHead,
    reporter: &dyn PullReporter,
) -> Result<(), HubError> {
    let partial = paths.partial.as_path();
    if let Some(directory) = partial.parent() {
        paths
            .root
            .create_dir_all(directory)
            .map_err(HubError::io("cannot create", directory))?;
    }
    let file = open_partial(paths)?;
    let state_path = state_path(partial);
    let segments = plan(hub, &file, &state_path, head.size)?;
    let already: u64 = segments.iter().map(|segment| segment.done).sum();
    reporter.start_file(name, head.size, already);
    if already == head.size {
        return finish_parts(&file, &state_path, partial);
    }
    let shared = Shared {
        hub,
        file: &file,
        head,
        reporter,
        state_path: &state_path,
        segments: Mutex::new(segments.clone()),
        abort: AtomicBool::new(false),
    };
    let results: Vec<Result<(), HubError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..segments.len())
            .map(|index| {
                let shared = &shared;
                scope.spawn(move || {
                    let result = fetch_segment(shared, index);
                    if result.is_err() {
                        shared.abort.store(true, Ordering::Relaxed);
                    }
                    result
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker.join().unwrap_or(Err(HubError::Network {
                    url: head.url.clone(),
                    message: "a download thread panicked".into(),
                    unreachable: false,
                }))
            })
            .collect()
    });
    // Report the most telling error: anything before a plain interruption.
    let mut errors: Vec<HubError> = results.into_iter().filter_map(Result::err).collect();
    errors.sort_by_key(|error| matches!(error, HubError::Interrupted));
    if let Some(error) = errors.into_iter().next() {
        let _ = file.sync_data();
        return Err(error);
    }
    finish_parts(&file, &state_path, partial)
}

/// The partial file, opened without following a link. Its name is olm's
/// own scratch name: anything there but a regular file (a link planted to
/// another blob, which the download would overwrite; a FIFO or device) is
/// removed, and the download starts over in a fresh file.
fn open_partial(paths: &DownloadPaths) -> Result<File, HubError> {
    let partial = paths.partial.as_path();
    let open = || {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(partial)
            .and_then(|file| match file.metadata()?.is_file() {
                true => Ok(Some(file)),
                false => Ok(None),
            })
    };
    let opened = match open() {
        Ok(Some(file)) => Some(file),
        Ok(None) => None,
        Err(error) if error.raw_os_error() == Some(libc::ELOOP) => None,
        Err(error) => return Err(HubError::io("cannot open", partial)(error)),
    };
    if let Some(file) = opened {
        return Ok(file);
    }
    tracing::warn!(
        "{} is not a regular file; removed, the download starts over",
        partial.display()
    );
    paths
        .root
        .remove_entry(partial)
        .map_err(HubError::io("cannot remove", partial))?;
    let _ = fs::remove_file(state_path(partial));
    match open() {
        Ok(Some(file)) => Ok(file),
        Ok(None) => Err(HubError::io("cannot open", partial)(io::Error::other(
            "not a regular file",
        ))),
        Err(error) => Err(HubError::io("cannot open", partial)(error)),
    }
}

fn finish_parts(file: &File, state_path: &Path, partial: &Path) -> Result<(), HubError> {
    file.sync_all()
        .map_err(HubError::io("cannot write", partial))?;
    match fs::remove_file(state_path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(HubError::io("cannot remove", state_path)(error)),
    }
}

fn state_path(partial: &Path) -> PathBuf {
    let mut name = partial
        .file_name()
        .map(|name| name.to_os_string())
        .unwrap_or_default();
    name.push(".parts");
    partial.with_file_name(name)
}

/// The byte ranges still to fetch: from the parts state of an earlier
/// parallel download, or one range from the partial file's length (a
/// single-stream download writes no state). A state that is there but
/// cannot be used (damaged, from another size, not a file) leaves the
/// partial file's layout unknown: a parallel download leaves holes, so it
/// starts over rather than resuming from its length into a corrupt file.
fn plan(hub: &Hub, file: &File, state_path: &Path, size: u64) -> Result<Vec<Segment>, HubError> {
    if let Some(segments) = read_state(state_path, size) {
        return Ok(segments);
    }
    let layout_unknown = fs::symlink_metadata(state_path).is_ok();
    let mut length = file
        .metadata()
        .map_err(HubError::io("cannot read", state_path))?
        .len();
    if length > size || layout_unknown {
        file.set_len(0)
            .map_err(HubError::io("cannot truncate", state_path))?;
        length = 0;
    }
    if length > 0 || size < PARALLEL_THRESHOLD || hub.connections < 2 {
        return Ok(vec![Segment {
            start: 0,
            end: size,
            done: length,
        }]);
    }
    let count = u64::from(hub.connections);
    let step = size.div_ceil(count);
    let segments: Vec<Segment> = (0..count)
        .map(|index| Segment {
            start: index * step,
            end: ((index + 1) * step).min(size),
            done: 0,
        })
        .filter(|segment| segment.start < segment.end)
        .collect();
    write_state(state_path, size, &segments)?;
    Ok(segments)
}

fn read_state(path: &Path, size: u64) -> Option<Vec<Segment>> {
    // A regular file of olm's own making; anything else (a FIFO, a huge
    // file planted in its place) is no state, and the download starts over.
    let text = crate::files::read_bounded(path, MAX_STATE_BYTES).ok()?;
    let state: PartsState = serde_json::from_slice(&text).ok()?;
    let valid = state.size == size
        && !state.segments.is_empty()
        && state.segments.iter().all(|segment| {
            segment.start < segment.end
                && segment.end <= size
                && segment.done <= segment.end - segment.start
        });
    valid.then_some(state.segments)
}

fn write_state(path: &Path, size: u64, segments: &[Segment]) -> Result<(), HubError> {
    let state = PartsState {
        size,
        segments: segments.to_vec(),
    };
    let bytes = serde_json::to_vec(&state)
        .map_err(|error| HubError::io("cannot encode", path)(io::Error::other(error)))?;
    store::write_atomic(path, &bytes).map_err(HubError::io("cannot write", path))
}

struct Shared<'a> {
    hub: &'a Hub,
    file: &'a File,
    head: &'a FileHead,
    reporter: &'a dyn PullReporter,
    state_path: &'a Path,
    segments: Mutex<Vec<Segment>>,
    abort: AtomicBool,
}

impl Shared<'_> {
    fn segment(&self, index: usize) -> Segment {
        self.segments
            .lock()
            .map(|segments| segments[index])
            .unwrap_or(Segment {
                start: 0,
                end: 0,
                done: 0,
            })
    }

    /// Record progress; for parallel parts, durably (data first, then state).
    fn record(&self, index: usize, done: u64, durable: bool) -> Result<(), HubError> {
        let Ok(mut segments) = self.segments.lock() else {
            return Ok(());
        };
        segments[index].done = done;
        if durable && segments.len() > 1 {
            self.file
                .sync_data()
                .map_err(HubError::io("cannot write", self.state_path))?;
            write_state(self.state_path, self.head.size, &segments)?;
        }
        Ok(())
    }

    fn stopped(&self) -> bool {
        self.abort.load(Ordering::Relaxed) || self.hub.cancelled()
    }
}

/// Fetch one range until it is complete, retrying on transient failures;
/// attempts that made progress do not count against [`MAX_ATTEMPTS`].
fn fetch_segment(shared: &Shared, index: usize) -> Result<(), HubError> {
    let mut failures = 0;
    loop {
        let segment = shared.segment(index);
        if segment.remaining() == 0 {
            return shared.record(index, segment.done, true);
        }
        if shared.stopped() {
            shared.record(index, segment.done, true)?;
            return Err(HubError::Interrupted);
        }
        let before = segment.done;
        // A slow body counts as a failure even when bytes arrived.
        let (error, retry_after, slow) = match fetch_once(shared, index, segment) {
            Ok(()) => continue,
            Err(Failure::Fatal(error)) => return Err(error),
            Err(Failure::Retry(error, retry_after)) => (error, retry_after, false),
            Err(Failure::Slow(error)) => (error, None, true),
        };
        let progressed = !slow && shared.segment(index).done > before;
        failures = if progressed { 1 } else { failures + 1 };
        if matches!(error, HubError::Interrupted) || shared.stopped() {
            shared.record(index, shared.segment(index).done, true)?;
            return Err(HubError::Interrupted);
        }
        if failures >= MAX_ATTEMPTS {
            return Err(error);
        }
        let delay = retry_after.unwrap_or_else(|| shared.hub.backoff(failures));
        shared.reporter.retrying(&error.to_string(), delay);
        shared.hub.sleep(delay)?;
    }
}

/// One ranged GET for the rest of a segment, written at its offset.
fn fetch_once(shared: &Shared, index: usize, segment: Segment) -> Result<(), Failure> {
    let url = &shared.head.url;
    let offset = segment.start + segment.done;
    let whole_file = segment.start == 0 && segment.end == shared.head.size;
    let response = shared
        .hub
        .send_once("GET", url, Some((offset, segment.end)), MAX_REDIRECTS)?;
    let retry = |message: String| {
        Failure::Retry(
            HubError::Network {
                url: url.clone(),
                message,
                unreachable: false,
            },
            None,
        )
    };
    let mut done = segment.done;
    match response.status() {
        206 => {
            let content_range = response.header("content-range").unwrap_or_default();
            if !content_range
                .trim()
                .starts_with(&format!("bytes {offset}-"))
            {
                return Err(retry(format!(
                    "the hub sent Content-Range '{}' for a request from byte {offset}",
                    store::names::escaped(content_range)
                )));
            }
        }
        200 if whole_file => {
            // The server ignored Range: start over rather than append the whole body.
            if done > 0 {
                shared.file.set_len(0).map_err(|error| {
                    Failure::Fatal(HubError::io("cannot truncate", shared.state_path)(error))
                })?;
                shared.reporter.advance(0);
                done = 0;
                shared.record(index, 0, false).map_err(Failure::Fatal)?;
            }
        }
        status => {
            return Err(retry(format!(
                "the hub answered {status} to a ranged request"
            )))
        }
    }
    let expected = segment.end - segment.start - done;
    if let Some(length) = response
        .header("content-length")
        .and_then(|value| value.trim().parse::<u64>().ok())
    {
        if length != expected {
            return Err(retry(format!(
                "the hub sent Content-Length {length}, expected {expected}"
            )));
        }
    }
    let mut reader = response.into_reader().take(expected);
    let mut buffer = vec![0u8; BUFFER_BYTES];
    let mut since_checkpoint = 0;
    let mut pace = Pace::new(shared.hub.stall_timeout);
    while done < segment.end - segment.start {
        if shared.stopped() {
            shared.record(index, done, true).map_err(Failure::Fatal)?;
            return Err(Failure::Retry(HubError::Interrupted, None));
        }
        let read = match reader.read(&mut buffer) {
            Ok(0) => {
                shared.record(index, done, true).map_err(Failure::Fatal)?;
                return Err(retry(format!(
                    "the connection closed after {} of {} bytes",
                    segment.start + done,
                    segment.end
                )));
            }
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                shared.record(index, done, true).map_err(Failure::Fatal)?;
                return Err(retry(error.to_string()));
            }
        };
        shared
            .file
            .write_all_at(&buffer[..read], segment.start + done)
            .map_err(|error| {
                Failure::Fatal(HubError::io("cannot write", shared.state_path)(error))
            })?;
        done += read as u64;
        since_checkpoint += read as u64;
        shared.reporter.advance(read as u64);
        let durable = since_checkpoint >= CHECKPOINT_BYTES;
        if durable {
            since_checkpoint = 0;
        }
        shared
            .record(index, done, durable)
            .map_err(Failure::Fatal)?;
        if let Err(message) = pace.add(read as u64) {
            shared.record(index, done, true).map_err(Failure::Fatal)?;
            return Err(Failure::Slow(HubError::Network {
                url: url.clone(),
                message,
                unreachable: false,
            }));
        }
    }
    Ok(())
}

/// Size and sha256 of the finished partial file against the hub's values;
/// a mismatch removes the partial so the next pull starts fresh.
fn verify(partial: &Path, name: &str, head: &FileHead) -> Result<(), HubError> {
    let size = fs::metadata(partial)
        .map_err(HubError::io("cannot read", partial))?
        .len();
    if size != head.size {
        let _ = fs::remove_file(partial);
        return Err(HubError::SizeMismatch {
            file: name.to_owned(),
            expected: head.size,
            actual: size,
        });
    }
    let actual = store::sha256_file(partial).map_err(HubError::io("cannot read", partial))?;
    if actual != head.sha256 {
        let _ = fs::remove_file(partial);
        return Err(HubError::HashMismatch {
            file: name.to_owned(),
            expected: head.sha256.clone(),
            actual,
        });
    }
    Ok(())
}
