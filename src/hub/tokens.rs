//! The hubs' access tokens, found where their own tools keep them:
//!
//! - Hugging Face: `HF_TOKEN`, else the file the Hugging Face CLI's login
//!   writes (`HF_TOKEN_PATH`, else `$HF_HOME/token`, located by `hf-hub`);
//! - ModelScope: `MODELSCOPE_API_TOKEN` (set but empty: no token, as the
//!   client treats it), else the `m_session_id` cookie of the login the
//!   `modelscope` client saved (`$MODELSCOPE_HOME/credentials/cookies`,
//!   default `~/.modelscope`), unless it has expired.
//!
//! The client saves that login as a Python pickle of a cookie jar. olm never
//! unpickles anything: [`pickle_strings`] walks the opcodes as data (strings,
//! numbers and the memo of earlier values) and nothing else, so a hostile
//! file can at worst yield no token. Token files are read only if they are
//! regular files under a size bound.
//! Must not touch: the network, the terminal.

use std::path::PathBuf;

use crate::env;

/// Largest token or cookie file read.
const MAX_TOKEN_FILE_BYTES: u64 = 64 << 10;
/// Most memo slots a pickle may name (a saved login uses a few dozen).
const MAX_MEMO: usize = 1 << 16;

/// The Hugging Face token: `HF_TOKEN`, else the saved login's token file.
pub fn hugging_face() -> Option<String> {
    if let Some(token) = std::env::var(env::HF_TOKEN).ok().and_then(usable) {
        return Some(token);
    }
    let path = std::env::var_os(env::HF_TOKEN_PATH)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(hugging_face_token_file);
    let bytes = crate::files::read_bounded(&path, MAX_TOKEN_FILE_BYTES).ok()?;
    usable(String::from_utf8(bytes).ok()?)
}

/// `$HF_HOME/token` (default `~/.cache/huggingface/token`): where the
/// Hugging Face CLI's login keeps the token, as `hf-hub` locates it.
fn hugging_face_token_file() -> PathBuf {
    let home = std::env::var_os(env::HF_HOME)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            directories::BaseDirs::new()
                .map(|dirs| dirs.home_dir().to_owned())
                .unwrap_or_default()
                .join(".cache")
                .join("huggingface")
        });
    hf_hub::Cache::new(home.join("hub")).token_path()
}

/// The ModelScope token: `MODELSCOPE_API_TOKEN` when set (empty: none),
/// else the saved login's `m_session_id`, unless expired.
pub fn modelscope() -> Option<String> {
    if let Ok(value) = std::env::var(env::MODELSCOPE_API_TOKEN) {
        return usable(value);
    }
    let home = std::env::var_os(env::MODELSCOPE_HOME)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .or_else(|| directories::BaseDirs::new().map(|dirs| dirs.home_dir().join(".modelscope")))?;
    let bytes = crate::files::read_bounded(
        &home.join("credentials").join("cookies"),
        MAX_TOKEN_FILE_BYTES,
    )
    .ok()?;
    saved_session(&bytes, crate::store::now()).and_then(usable)
}

/// A token worth sending: trimmed, not empty, visible ASCII only (anything
/// else cannot be a header value and is not a token).
fn usable(token: String) -> Option<String> {
    let token = token.trim();
    if token.is_empty() {
        return None;
    }
    if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        tracing::warn!("ignoring a hub token with characters a header cannot carry");
        return None;
    }
    Some(token.to_owned())
}

/// A value the pickle walk saw pushed, in order.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text(String),
    Number(i128),
    Other,
}

/// The `m_session_id` cookie's value in the pickled cookie jar `bytes`,
/// unless its `expires` lies before `now` (as the client's `load_token`).
fn saved_session(bytes: &[u8], now: u64) -> Option<String> {
    let values = pickle_strings(bytes)?;
    let text = |index: usize, expected: &str| matches!(values.get(index), Some(Value::Text(text)) if text == expected);
    // A Cookie's attributes are pickled as its __dict__ in order:
    // version, name, value, port, ..., expires, ...
    let start = (0..values.len()).find(|&index| {
        text(index, "name") && text(index + 1, "m_session_id") && text(index + 2, "value")
    })?;
    let Some(Value::Text(token)) = values.get(start + 3) else {
        return None;
    };
    let expires = (start + 4..values.len().saturating_sub(1))
        .take_while(|&index| !text(index, "name"))
        .find(|&index| text(index, "expires"))
        .and_then(|index| match values.get(index + 1) {
            Some(Value::Number(expires)) => Some(*expires),
            _ => None,
        });
    if expires.is_some_and(|expires| expires < i128::from(now)) {
        return None;
    }
    Some(token.clone())
}

/// The values a pickle pushes, in order (strings and integers; anything
/// else as [`Value::Other`]), with memo references resolved. `None` when the
/// bytes are not a pickle this walk understands. Nothing is constructed or
/// called: globals, reductions and builds are only stepped over.
fn pickle_strings(bytes: &[u8]) -> Option<Vec<Value>> {
    let mut reader = Reader { bytes, at: 0 };
    let mut pushed = Vec::new();
    let mut memo: Vec<Value> = Vec::new();
    let mut last = Value::Other;
    loop {
        let opcode = reader.byte()?;
        let value = match opcode {
            b'.' => return Some(pushed),
            // PROTO, FRAME: framing only.
            0x80 => {
                reader.take(1)?;
                continue;
            }
            0x95 => {
                reader.take(8)?;
                continue;
            }
            // SHORT_BINUNICODE, BINUNICODE, BINUNICODE8
            0x8c => {
                let length = usize::from(reader.byte()?);
                Value::Text(reader.text(length)?)
            }
            b'X' => {
                let length = reader.length(4)?;
                Value::Text(reader.text(length)?)
            }
            0x8d => {
                let length = reader.length(8)?;
                Value::Text(reader.text(length)?)
            }
            // SHORT_BINBYTES, BINBYTES, BINBYTES8, SHORT_BINSTRING, BINSTRING, BYTEARRAY8
            b'C' | b'U' => {
                let length = usize::from(reader.byte()?);
                reader.take(length)?;
                Value::Other
            }
            b'B' | b'T' => {
                let length = reader.length(4)?;
                reader.take(length)?;
                Value::Other
            }
            0x8e | 0x96 => {
                let length = reader.length(8)?;
                reader.take(length)?;
                Value::Other
            }
            // BININT1, BININT2, BININT, LONG1, LONG4
            b'K' => Value::Number(i128::from(reader.byte()?)),
            b'M' => Value::Number(reader.unsigned(2)?),
            b'J' => {
                let raw = reader.take(4)?;
                Value::Number(i128::from(i32::from_le_bytes(raw.try_into().ok()?)))
            }
            0x8a => {
                let length = usize::from(reader.byte()?);
                Value::Number(reader.signed(length)?)
            }
            0x8b => {
                let length = reader.length(4)?;
                Value::Number(reader.signed(length)?)
            }
            // BINFLOAT
            b'G' => {
                reader.take(8)?;
                Value::Other
            }
            // Text-line opcodes: INT, LONG, FLOAT, STRING, UNICODE, PERSID.
            b'I' | b'L' | b'F' | b'S' | b'V' | b'P' => {
                reader.line()?;
                Value::Other
            }
            // GLOBAL, INST: module and name lines.
            b'c' | b'i' => {
                reader.line()?;
                reader.line()?;
                Value::Other
            }
            // MEMOIZE, BINPUT, LONG_BINPUT, PUT: remember the last value.
            0x94 => {
                memo.push(last.clone());
                continue;
            }
            b'q' | b'r' | b'p' => {
                let index = match opcode {
                    b'q' => usize::from(reader.byte()?),
                    b'r' => reader.length(4)?,
                    _ => std::str::from_utf8(reader.line()?)
                        .ok()?
                        .trim()
                        .parse()
                        .ok()?,
                };
                if index >= MAX_MEMO {
                    return None;
                }
                if memo.len() <= index {
                    memo.resize(index + 1, Value::Other);
                }
                memo[index] = last.clone();
                continue;
            }
            // BINGET, LONG_BINGET, GET
            b'h' | b'j' | b'g' => {
                let index = match opcode {
                    b'h' => usize::from(reader.byte()?),
                    b'j' => reader.length(4)?,
                    _ => std::str::from_utf8(reader.line()?)
                        .ok()?
                        .trim()
                        .parse()
                        .ok()?,
                };
                memo.get(index)?.clone()
            }
            // EXT1, EXT2, EXT4
            0x82 => {
                reader.take(1)?;
                Value::Other
            }
            0x83 => {
                reader.take(2)?;
                Value::Other
            }
            0x84 => {
                reader.take(4)?;
                Value::Other
            }
            // Opcodes without an argument: containers, marks, none, bools,
            // object building (never run here), stack and buffer operations.
            b'(' | b')' | b']' | b'}' | b'N' | 0x88 | 0x89 | 0x81 | 0x92 | 0x93 | b'R' | b'b'
            | b's' | b'u' | b'a' | b'e' | b't' | 0x85 | 0x86 | 0x87 | 0x8f | 0x90 | 0x91 | b'0'
            | b'1' | b'2' | b'l' | b'd' | b'o' | b'Q' | 0x97 | 0x98 => Value::Other,
            _ => return None,
        };
        last = value.clone();
        pushed.push(value);
        if pushed.len() > 100_000 {
            return None;
        }
    }
}

/// A cursor over the pickle's bytes; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(count)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn unsigned(&mut self, count: usize) -> Option<i128> {
        let raw = self.take(count)?;
        Some(
            raw.iter()
                .rev()
                .fold(0i128, |value, byte| (value << 8) | i128::from(*byte)),
        )
    }

    /// A little-endian two's-complement integer of at most 15 bytes.
    fn signed(&mut self, count: usize) -> Option<i128> {
        if count == 0 {
            return Some(0);
        }
        if count > 15 {
            return None;
        }
        let raw = self.take(count)?;
        let unsigned = raw
            .iter()
            .rev()
            .fold(0i128, |value, byte| (value << 8) | i128::from(*byte));
        let bits = count * 8;
        Some(if raw[count - 1] & 0x80 != 0 {
            unsigned - (1i128 << bits)
        } else {
            unsigned
        })
    }

    /// A length no larger than what is left.
    fn length(&mut self, count: usize) -> Option<usize> {
        let length = usize::try_from(self.unsigned(count)?).ok()?;
        (length <= self.bytes.len() - self.at).then_some(length)
    }

    fn text(&mut self, length: usize) -> Option<String> {
        String::from_utf8(self.take(length)?.to_vec()).ok()
    }

    fn line(&mut self) -> Option<&'a [u8]> {
        let rest = self.bytes.get(self.at..)?;
        let end = rest.iter().position(|&byte| byte == b'\n')?;
        self.at += end + 1;
        Some(&rest[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(text: &str) -> Vec<u8> {
        let mut bytes = vec![0x8c, text.len() as u8];
        bytes.extend_from_slice(text.as_bytes());
        bytes.push(0x94);
        bytes
    }

    /// The shape `modelscope login` writes: a cookie whose name is a memo
    /// reference to an earlier string, then value, ..., expires.
    fn jar(token: &str, expires: i32) -> Vec<u8> {
        let mut bytes = vec![0x80, 4];
        bytes.extend(short("_cookies"));
        bytes.extend(short("m_session_id")); // memo 1
        bytes.extend([b'}', 0x94, b'(']);
        bytes.extend(short("version"));
        bytes.extend([b'K', 0]);
        bytes.extend(short("name"));
        bytes.extend([b'h', 1]);
        bytes.extend(short("value"));
        bytes.extend(short(token));
        bytes.extend(short("expires"));
        bytes.push(b'J');
        bytes.extend(expires.to_le_bytes());
        bytes.extend([b'u', b'b', b'.']);
        bytes
    }

    #[test]
    fn the_saved_session_is_read_without_unpickling() {
        assert_eq!(
            saved_session(&jar("ms-secret", 2_000_000_000), 1_900_000_000).as_deref(),
            Some("ms-secret")
        );
        assert_eq!(
            saved_session(&jar("ms-secret", 1_000), 1_900_000_000),
            None,
            "expired"
        );
    }

    #[test]
    fn damaged_or_foreign_pickles_give_no_token_and_never_panic() {
        let good = jar("ms-secret", 2_000_000_000);
        for cut in 0..good.len() {
            let _ = saved_session(&good[..cut], 0);
        }
        for byte in 0..=255u8 {
            let mut bad = good.clone();
            bad[10] = byte;
            let _ = saved_session(&bad, 0);
        }
        assert_eq!(saved_session(b"not a pickle", 0), None);
        assert_eq!(
            saved_session(&[0x8d, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], 0),
            None
        );
        assert_eq!(saved_session(&[b'j', 0xff, 0xff, 0xff, 0x7f], 0), None);
        // Memo slots far apart cost nothing: refused, not allocated.
        let mut far = vec![0x80, 4, b'N'];
        for _ in 0..1000 {
            far.extend([b'r', 0xff, 0xff, 0xff, 0x7f]);
        }
        assert_eq!(saved_session(&far, 0), None);
    }

    #[test]
    fn tokens_must_fit_a_header() {
        assert_eq!(usable(" abc\n".into()).as_deref(), Some("abc"));
        assert_eq!(usable("a b".into()), None);
        assert_eq!(usable("a\r\nX-Evil: 1".into()), None);
        assert_eq!(usable(String::new()), None);
    }
}
