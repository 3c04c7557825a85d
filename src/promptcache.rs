//! The prompt cache: KV states of prompt beginnings that `olm run` saved, so
//! that a later run starting with the same tokens (the same instructions,
//! the same piped document) loads them instead of evaluating them again.
//!
//! Owns: the cache folder (`OLM_PROMPT_CACHE`, else `prompts/` in the
//! platform cache folder), its file format, lookup of the longest matching
//! beginning, integrity checks, and the size bound (least recently used
//! entries go first). Pure Rust: the state bytes come from and go to the
//! engine untouched. Must not touch: llama.cpp, the model store.
//!
//! A file is `MAGIC`, a little-endian u32 header length, a JSON header (the
//! key, the token count, the state length, the sha256 of what follows), the
//! tokens as little-endian u32s, then the state. An entry is used only when
//! its key is the caller's key (model, build, settings) and its sha256 and
//! sizes match: a truncated, foreign or altered file is ignored, never
//! handed to llama.cpp.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::env;

const MAGIC: &[u8; 8] = b"OLMKV\x00\x01\n";
/// Longest header read.
const MAX_HEADER_BYTES: u32 = 64 << 10;
/// Most tokens one entry holds (a context longer than any model's).
const MAX_TOKENS: u64 = 1 << 21;
/// Default bound on the cache folder.
const DEFAULT_MAX_MIB: u64 = 4096;
const EXTENSION: &str = "olmkv";

/// One entry's header.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    key: String,
    /// What the entry is about, for `olm cache ls`.
    label: String,
    tokens: u64,
    state_bytes: u64,
    sha256: String,
}

/// An entry found for a prompt: the tokens and state it holds, and how many
/// of its tokens begin the prompt.
#[derive(Debug)]
pub struct Hit {
    pub tokens: Vec<i32>,
    pub state: Vec<u8>,
    pub matched: usize,
}

/// An entry as `olm cache ls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EntryInfo {
    pub label: String,
    pub tokens: u64,
    pub bytes: u64,
    /// Unix seconds of its last use.
    pub last_used: u64,
    pub path: PathBuf,
}

/// The cache folder and its size bound.
#[derive(Debug, Clone)]
pub struct PromptCache {
    dir: PathBuf,
    max_bytes: u64,
}

impl PromptCache {
    pub fn new(dir: PathBuf, max_bytes: u64) -> Self {
        Self { dir, max_bytes }
    }

    /// The cache the environment names: `OLM_PROMPT_CACHE` (a folder), else
    /// `prompts/` in the platform cache folder; bounded by
    /// `OLM_PROMPT_CACHE_MIB` (default 4096).
    pub fn from_env() -> Option<Self> {
        let dir = match std::env::var_os(env::OLM_PROMPT_CACHE) {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => directories::ProjectDirs::from("", "", "olm")?
                .cache_dir()
                .join("prompts"),
        };
        let mib = env::number(env::OLM_PROMPT_CACHE_MIB, DEFAULT_MAX_MIB);
        Some(Self::new(dir, mib.saturating_mul(1 << 20)))
    }

    /// A bound of 0 (`OLM_PROMPT_CACHE_MIB=0`) turns the cache off: `run`
    /// neither reads nor writes it.
    pub fn is_off(&self) -> bool {
        self.max_bytes == 0
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry of `key` whose tokens begin `prompt` the longest way (at
    /// least `min_match` tokens), checked whole; `None` when there is none.
    /// Of entries that match as far, the shortest is read; an entry is
    /// never read for less than half of it (a long document's state is not
    /// loaded for the system prompt it starts with: evaluating that costs
    /// less than reading the whole state). A hit counts as a use (it is
    /// kept longest).
    pub fn find(
        &self,
        key: &str,
        prompt: &[i32],
        min_match: usize,
        bound: StateBound,
    ) -> Option<Hit> {
        let prefix = key_prefix(key);
        let mut best: Option<(usize, usize, PathBuf)> = None;
        for path in self.entries() {
            let matches_key = path
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(&prefix));
            if !matches_key {
                continue;
            }
            let Ok((header, tokens)) = read_tokens(&path) else {
                continue;
            };
            if header.key != key {
                continue;
            }
            let matched = common_prefix(&tokens, prompt);
            let worth_reading = matched >= min_match && matched * 2 >= tokens.len();
            let better = best.as_ref().is_none_or(|(length, size, _)| {
                (matched, std::cmp::Reverse(tokens.len())) > (*length, std::cmp::Reverse(*size))
            });
            if worth_reading && better {
                best = Some((matched, tokens.len(), path));
            }
        }
        let (matched, _, path) = best?;
        let (_, tokens, state) = match read_entry(&path, key, self.max_bytes, bound) {
            Ok(entry) => entry,
            Err(error) => {
                // A damaged or forged entry costs one reading, not one per run.
                if error.kind() == io::ErrorKind::InvalidData {
                    let _ = fs::remove_file(&path);
                }
                return None;
            }
        };
        let _ = touch(&path);
        Some(Hit {
            tokens,
            state,
            matched,
        })
    }

    /// Save the state of `tokens` under `key`, atomically, then drop the
    /// least recently used entries beyond the size bound. An entry larger
    /// than the whole bound is not written.
    pub fn store(&self, key: &str, label: &str, tokens: &[i32], state: &[u8]) -> io::Result<()> {
        let bytes = encode(key, label, tokens, state)?;
        if bytes.len() as u64 > self.max_bytes {
            return Ok(());
        }
        fs::create_dir_all(&self.dir)?;
        let token_bytes: Vec<u8> = tokens
            .iter()
            .flat_map(|token| token.to_le_bytes())
            .collect();
        let name = format!(
            "{}-{}.{EXTENSION}",
            key_prefix(key),
            &hex(&Sha256::digest(&token_bytes))[..16]
        );
        crate::store::write_atomic(&self.dir.join(name), &bytes)?;
        self.evict();
        Ok(())
    }

    /// Every entry, most recently used first.
    pub fn list(&self) -> Vec<EntryInfo> {
        let mut found: Vec<EntryInfo> = self
            .entries()
            .into_iter()
            .filter_map(|path| {
                let (header, _) = read_tokens(&path).ok()?;
                let metadata = fs::symlink_metadata(&path).ok()?;
                Some(EntryInfo {
                    label: header.label,
                    tokens: header.tokens,
                    bytes: metadata.len(),
                    last_used: unix_seconds(metadata.modified().ok()),
                    path,
                })
            })
            .collect();
        found.sort_by_key(|entry| std::cmp::Reverse(entry.last_used));
        found
    }

    /// Remove every entry; returns the bytes freed.
    pub fn clear(&self) -> io::Result<u64> {
        let mut freed = 0;
        for path in self.entries() {
            let size = fs::symlink_metadata(&path).map_or(0, |metadata| metadata.len());
            fs::remove_file(&path)?;
            freed += size;
        }
        Ok(freed)
    }

    /// Regular files with the entry extension directly in the folder (a
    /// link is never followed).
    fn entries(&self) -> Vec<PathBuf> {
        let Ok(read) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        read.flatten()
            .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_file()))
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == EXTENSION))
            .collect()
    }

    /// Remove the least recently used entries until the folder is within
    /// its bound.
    fn evict(&self) {
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = self
            .entries()
            .into_iter()
            .filter_map(|path| {
                let metadata = fs::symlink_metadata(&path).ok()?;
                Some((metadata.modified().ok()?, metadata.len(), path))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|(_, size, _)| size).sum();
        entries.sort_by_key(|(modified, _, _)| *modified);
        for (_, size, path) in entries {
            if total <= self.max_bytes {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                total -= size;
            }
        }
    }
}

/// The most state a model can have for a number of tokens: what a file's
/// header claims is checked against it before anything is read (a sparse
/// entry claiming 3 GiB for 20 tokens was read whole, at every run).
#[derive(Debug, Clone, Copy)]
pub struct StateBound {
    /// Most bytes of state per token.
    pub bytes_per_token: u64,
    /// Most tokens.
    pub max_tokens: u64,
}

/// State a sequence has besides its tokens' keys and values (llama.cpp's
/// headers and cell bookkeeping).
const STATE_OVERHEAD: u64 = 1 << 20;

impl StateBound {
    fn allows(self, tokens: u64, state_bytes: u64) -> bool {
        tokens <= self.max_tokens
            && state_bytes
                <= tokens
                    .saturating_mul(self.bytes_per_token)
                    .saturating_add(STATE_OVERHEAD)
    }
}

/// Write one state to `path` in the cache's format (chat's `/save` keeps
/// a conversation's state beside its transcript this way), atomically.
pub fn write_file(
    path: &Path,
    key: &str,
    label: &str,
    tokens: &[i32],
    state: &[u8],
) -> io::Result<()> {
    crate::store::refuse_non_regular_target(path)?;
    crate::store::write_atomic(path, &encode(key, label, tokens, state)?)
}

/// Read a state [`write_file`] wrote for `key`, checked whole (sizes,
/// sha256, at most `max_bytes`); an error for anything else.
pub fn read_file(
    path: &Path,
    key: &str,
    max_bytes: u64,
    bound: StateBound,
) -> io::Result<(Vec<i32>, Vec<u8>)> {
    let (_, tokens, state) = read_entry(path, key, max_bytes, bound)?;
    Ok((tokens, state))
}

fn encode(key: &str, label: &str, tokens: &[i32], state: &[u8]) -> io::Result<Vec<u8>> {
    let token_bytes: Vec<u8> = tokens
        .iter()
        .flat_map(|token| token.to_le_bytes())
        .collect();
    let mut digest = Sha256::new();
    digest.update(&token_bytes);
    digest.update(state);
    let header = Header {
        key: key.to_owned(),
        label: label.to_owned(),
        tokens: tokens.len() as u64,
        state_bytes: state.len() as u64,
        sha256: hex(&digest.finalize()),
    };
    let header = serde_json::to_vec(&header).map_err(io::Error::other)?;
    let mut bytes =
        Vec::with_capacity(MAGIC.len() + 4 + header.len() + token_bytes.len() + state.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&token_bytes);
    bytes.extend_from_slice(state);
    Ok(bytes)
}

/// Files of one key share a name prefix, so a lookup reads only theirs.
fn key_prefix(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))[..16].to_owned()
}

/// Open an entry for reading: never through a link, never blocking, a
/// regular file only.
fn open_entry(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(file)
}

fn invalid(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.to_owned())
}

/// The header and the tokens of an entry (not its state).
fn read_tokens(path: &Path) -> io::Result<(Header, Vec<i32>)> {
    let mut file = open_entry(path)?;
    let length = file.metadata()?.len();
    let header = read_header(&mut file, length)?;
    let mut token_bytes = vec![0u8; (header.tokens * 4) as usize];
    file.read_exact(&mut token_bytes)?;
    Ok((header, decode_tokens(&token_bytes)))
}

fn read_header(file: &mut File, length: u64) -> io::Result<Header> {
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(invalid("not a prompt cache entry"));
    }
    let mut size = [0u8; 4];
    file.read_exact(&mut size)?;
    let size = u32::from_le_bytes(size);
    if size > MAX_HEADER_BYTES {
        return Err(invalid("header too large"));
    }
    let mut header = vec![0u8; size as usize];
    file.read_exact(&mut header)?;
    let header: Header = serde_json::from_slice(&header).map_err(|_| invalid("bad header"))?;
    let expected = (MAGIC.len() as u64 + 4 + u64::from(size))
        .checked_add(
            header
                .tokens
                .checked_mul(4)
                .ok_or_else(|| invalid("size"))?,
        )
        .and_then(|sum| sum.checked_add(header.state_bytes));
    if header.tokens > MAX_TOKENS || expected != Some(length) {
        return Err(invalid("the sizes do not match the file"));
    }
    Ok(header)
}

/// A whole entry, checked: its key, sizes and sha256.
fn read_entry(
    path: &Path,
    key: &str,
    max_bytes: u64,
    bound: StateBound,
) -> io::Result<(Header, Vec<i32>, Vec<u8>)> {
    let mut file = open_entry(path)?;
    let length = file.metadata()?.len();
    if length > max_bytes {
        return Err(invalid("larger than the cache"));
    }
    let header = read_header(&mut file, length)?;
    if header.key != key {
        return Err(invalid("another model or build"));
    }
    if !bound.allows(header.tokens, header.state_bytes) {
        return Err(invalid("more state than its tokens can have"));
    }
    let mut token_bytes = vec![0u8; (header.tokens * 4) as usize];
    file.read_exact(&mut token_bytes)?;
    let mut state = vec![0u8; header.state_bytes as usize];
    file.read_exact(&mut state)?;
    let mut digest = Sha256::new();
    digest.update(&token_bytes);
    digest.update(&state);
    if hex(&digest.finalize()) != header.sha256 {
        return Err(invalid("the contents changed"));
    }
    let tokens = decode_tokens(&token_bytes);
    Ok((header, tokens, state))
}

fn decode_tokens(bytes: &[u8]) -> Vec<i32> {
    bytes
        .chunks_exact(4)
        .map(|chunk| i32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
        .collect()
}

fn touch(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.set_modified(SystemTime::now())?;
    Ok(())
}

fn common_prefix(a: &[i32], b: &[i32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn unix_seconds(time: Option<SystemTime>) -> u64 {
    time.and_then(|time| time.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |duration| duration.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Tests: write `bytes` over an entry, to tamper with it.
#[cfg(test)]
fn overwrite(path: &Path, bytes: &[u8]) {
    use std::io::Write as _;
    let mut file = File::create(path).unwrap();
    file.write_all(bytes).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: StateBound = StateBound {
        bytes_per_token: 1 << 10,
        max_tokens: 1 << 20,
    };

    fn cache(max: u64) -> (tempfile::TempDir, PromptCache) {
        let dir = tempfile::tempdir().unwrap();
        let cache = PromptCache::new(dir.path().join("prompts"), max);
        (dir, cache)
    }

    #[test]
    fn the_longest_matching_beginning_is_found_and_checked() {
        let (_dir, cache) = cache(1 << 20);
        cache.store("model-a", "a", &[1, 2, 3], b"three").unwrap();
        cache
            .store("model-a", "a", &[1, 2, 3, 4, 5], b"five")
            .unwrap();
        cache
            .store("model-b", "b", &[1, 2, 3, 4, 5, 6], b"other model")
            .unwrap();
        let hit = cache
            .find("model-a", &[1, 2, 3, 4, 5, 9], 2, BOUND)
            .expect("a hit");
        assert_eq!((hit.matched, hit.state.as_slice()), (5, &b"five"[..]));
        // As far as both: the shorter entry is the one read.
        let hit = cache
            .find("model-a", &[1, 2, 3, 7], 2, BOUND)
            .expect("a hit");
        assert_eq!((hit.matched, hit.state.as_slice()), (3, &b"three"[..]));
        assert!(cache.find("model-a", &[9, 9], 1, BOUND).is_none());
        assert!(cache.find("model-c", &[1, 2, 3], 1, BOUND).is_none());
    }

    #[test]
    fn an_entry_is_not_read_for_less_than_half_of_it() {
        let (_dir, cache) = cache(1 << 20);
        let document: Vec<i32> = (1..=10).collect();
        cache.store("model-a", "doc", &document, b"ten").unwrap();
        // The system prompt (the first 4 tokens) of another document.
        assert!(cache.find("model-a", &[1, 2, 3, 4, 99], 2, BOUND).is_none());
        let hit = cache
            .find("model-a", &[1, 2, 3, 4, 5, 99], 2, BOUND)
            .expect("half of it is used");
        assert_eq!(hit.matched, 5);
    }

    #[test]
    fn truncated_foreign_and_altered_entries_are_ignored() {
        let (_dir, cache) = cache(1 << 20);
        cache
            .store("model-a", "a", &[1, 2, 3], b"state bytes")
            .unwrap();
        let path = cache.entries().pop().unwrap();
        let good = fs::read(&path).unwrap();

        overwrite(&path, &good[..good.len() - 1]);
        assert!(
            cache.find("model-a", &[1, 2, 3], 1, BOUND).is_none(),
            "truncated"
        );
        let mut altered = good.clone();
        *altered.last_mut().unwrap() ^= 1;
        overwrite(&path, &altered);
        assert!(
            cache.find("model-a", &[1, 2, 3], 1, BOUND).is_none(),
            "altered"
        );
        overwrite(&path, b"GGUF not a cache entry");
        assert!(
            cache.find("model-a", &[1, 2, 3], 1, BOUND).is_none(),
            "foreign"
        );
        overwrite(&path, &good);
        assert!(
            cache.find("model-a", &[1, 2, 3], 1, BOUND).is_some(),
            "intact again"
        );
    }

    #[test]
    fn the_size_bound_drops_the_least_recently_used() {
        // Room for two entries of this shape, not three.
        let (_probe_dir, probe) = cache(1 << 20);
        probe.store("m", "entry 0", &[1, 1], &[0u8; 40]).unwrap();
        let entry_size = probe.list()[0].bytes;
        let (_dir, cache) = cache(entry_size * 5 / 2);
        for (index, tokens) in [[1, 1], [2, 2], [3, 3]].iter().enumerate() {
            cache
                .store("m", &format!("entry {index}"), tokens, &[0u8; 40])
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            // Use the first entry again: it must outlive the second.
            if index == 1 {
                assert!(cache.find("m", &[1, 1], 1, BOUND).is_some());
            }
        }
        let labels: Vec<String> = cache.list().into_iter().map(|entry| entry.label).collect();
        let total: u64 = cache.list().iter().map(|entry| entry.bytes).sum();
        assert!(total <= entry_size * 5 / 2, "{total} bytes kept");
        assert!(labels.contains(&"entry 2".to_owned()), "{labels:?}");
        assert!(!labels.contains(&"entry 1".to_owned()), "{labels:?}");
        assert_eq!(cache.clear().unwrap(), total);
        assert!(cache.list().is_empty());
    }

    #[test]
    fn an_entry_claiming_more_state_than_its_tokens_allow_is_refused_and_removed() {
        let (_dir, cache) = cache(1 << 30);
        let tight = StateBound {
            bytes_per_token: 1,
            max_tokens: 8,
        };
        let state = vec![0u8; (STATE_OVERHEAD + 100) as usize];
        cache.store("m", "large", &[1, 2, 3], &state).unwrap();
        assert!(cache.find("m", &[1, 2, 3], 1, tight).is_none());
        assert!(cache.list().is_empty(), "removed");
        cache
            .store("m", "long", &(0..9).collect::<Vec<_>>(), b"x")
            .unwrap();
        assert!(cache
            .find("m", &(0..9).collect::<Vec<_>>(), 1, tight)
            .is_none());
        cache.store("m", "fits", &[1, 2], b"xy").unwrap();
        assert!(cache.find("m", &[1, 2], 1, tight).is_some());
    }

    #[test]
    fn an_entry_larger_than_the_bound_is_not_written() {
        let (_dir, cache) = cache(64);
        cache.store("m", "big", &[1], &[0u8; 100]).unwrap();
        assert!(cache.list().is_empty());
    }
}
