//! What building and using llama.cpp's tokenizers costs for a vocabulary,
//! and the vocabularies they never finish with. A vocabulary that is valid
//! token by token can still make llama.cpp, while it loads (src/llama-vocab.cpp):
//!
//! - allocate without bound: the BPE piece cache (`cache_token_to_piece`)
//!   writes a token's whole text again for each of its characters that is
//!   not one of GPT-2's 256 byte characters (`llama_decode_text`), so a
//!   40 KB token takes gigabytes;
//! - take days: PLaMo-2 (`llm_tokenizer_plamo2::build`) stores every suffix
//!   of every token and rebuilds every prefix of every suffix;
//! - overflow the stack: the tries of Unigram and RWKV (`naive_trie`)
//!   recurse once per byte of a token, to insert it and to free it;
//! - loop forever: RWKV's tokenizer (`llm_tokenizer_rwkv_session`) starts
//!   over from the beginning of the text when a walk down its trie matches
//!   no whole token, and it tokenizes "\n" while loading;
//! - throw out of `llama_tokenize`, which aborts the process: Unigram's
//!   normalizer (`normalize_prefix`) walks the precompiled charsmap by
//!   offsets the file gives, throwing at one that points outside it;
//! - take time that grows with the cube of a prompt's word: WordPiece
//!   (`llm_tokenizer_wpm_session::tokenize`) tries every length up to its
//!   longest token at each byte of a word, copying and hashing each
//!   candidate, so one 64 KB token makes an 8,000-byte word take 6 s and a
//!   32,000-byte one minutes, out of reach of cancellation.
//!
//! Owns those bounds, per tokenizer. Token strings are judged as llama.cpp
//! reads them: C strings, which end at the first NUL
//! ([`as_c_string`]). Found by an audit in the manner of the outside
//! attack (2026-11-30).

use std::collections::HashSet;

use super::error::{printable, GgufError};

/// Most bytes the BPE piece cache may take: about 20 times what the largest
/// published vocabularies need (262,144 tokens: about 3 MB).
pub const MAX_PIECE_CACHE_BYTES: u64 = 64 << 20;

/// Longest token a trie tokenizer (Unigram, RWKV) may hold: each byte is a
/// level of recursion, in the loader's thread. Published vocabularies stay
/// under 200 bytes.
pub const MAX_TRIE_TOKEN_LENGTH: u64 = 1024;

/// Longest WordPiece token: each byte of a prompt's word costs up to half
/// its square in bytes copied and hashed (32 KiB at this bound). Published
/// WordPiece vocabularies (BERT's `vocab.txt`, with the converter's
/// 3-byte phantom space) stay under 64 bytes.
pub const MAX_WORDPIECE_TOKEN_LENGTH: u64 = 256;

/// PLaMo-2's build: distinct suffixes (a published vocabulary of 100,000
/// tokens has about half a million), characters stored in them, and
/// characters copied while rebuilding the prefixes of every suffix.
const MAX_PLAMO2_SUFFIXES: u64 = 1 << 20;
const MAX_PLAMO2_SUFFIX_CHARACTERS: u64 = 1 << 26;
const MAX_PLAMO2_PREFIX_CHARACTERS: u64 = 1 << 31;

/// `text` as llama.cpp reads it from the file (`gguf_get_arr_str` returns a
/// C string): up to the first NUL.
pub fn as_c_string(text: &str) -> &str {
    // A plain byte loop: a vocabulary asks this of every token and merge
    // (~100,000 strings of a few bytes), where `str::find(char)` and even
    // `memchr` cost several times more in their set-up than in the search.
    match text.bytes().position(|byte| byte == 0) {
        Some(end) => &text[..end],
        None => text,
    }
}

fn unusable(tokenizer: &str, reason: String) -> GgufError {
    GgufError::UnusableVocabulary {
        tokenizer: printable(tokenizer),
        reason: reason.into(),
    }
}

/// Whether `llama_decode_text` turns `c` into one byte: GPT-2's
/// byte-to-unicode table maps the printable Latin-1 characters to
/// themselves and the other 68 bytes to U+0100..U+0143.
fn is_gpt2_byte_character(c: char) -> bool {
    matches!(u32::from(c), 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF | 0x100..=0x143)
}

/// The bytes `llama_decode_text` makes of `token`: one per byte
/// character, and "[UNK_BYTE_0x" + hex + the whole token + "]" per other.
fn decoded_length(token: &str) -> u64 {
    let token = as_c_string(token);
    token
        .chars()
        .map(|c| {
            if is_gpt2_byte_character(c) {
                1
            } else {
                let hex = 2 * c.len_utf8() as u64;
                "[UNK_BYTE_0x]".len() as u64 + hex + token.len() as u64
            }
        })
        .sum()
}

/// The BPE piece cache llama.cpp fills for every token at load time fits
/// [`MAX_PIECE_CACHE_BYTES`].
pub fn check_piece_cache(tokens: &[String], tokenizer: &str) -> Result<(), GgufError> {
    let mut total = 0u64;
    for (index, token) in tokens.iter().enumerate() {
        total = total.saturating_add(decoded_length(token));
        if total > MAX_PIECE_CACHE_BYTES {
            return Err(unusable(
                tokenizer,
                format!(
                    "its decoded token texts would take more than {} MiB by token {index} \
                     (tokens full of characters outside GPT-2's byte alphabet)",
                    MAX_PIECE_CACHE_BYTES >> 20
                ),
            ));
        }
    }
    Ok(())
}

/// Every token a trie holds is at most [`MAX_TRIE_TOKEN_LENGTH`] bytes.
fn check_trie_depth(
    tokens: impl Iterator<Item = (usize, usize)>,
    tokenizer: &str,
) -> Result<(), GgufError> {
    for (index, length) in tokens {
        if length as u64 > MAX_TRIE_TOKEN_LENGTH {
            return Err(unusable(
                tokenizer,
                format!(
                    "token {index} is {length} bytes long, and its trie recurses once per byte \
                     (limit {MAX_TRIE_TOKEN_LENGTH})"
                ),
            ));
        }
    }
    Ok(())
}

/// Unigram inserts tokens into a recursive trie.
pub fn check_unigram_tokens(tokens: &[String], tokenizer: &str) -> Result<(), GgufError> {
    check_trie_depth(
        tokens
            .iter()
            .enumerate()
            .map(|(index, token)| (index, as_c_string(token).len())),
        tokenizer,
    )
}

/// WordPiece matches the longest token at each byte of a word, trying
/// every length up to `max_token_len`: each token is at most
/// [`MAX_WORDPIECE_TOKEN_LENGTH`] bytes.
pub fn check_wordpiece_tokens(tokens: &[String], tokenizer: &str) -> Result<(), GgufError> {
    let too_long = tokens
        .iter()
        .enumerate()
        .map(|(index, token)| (index, as_c_string(token).len()))
        .find(|&(_, length)| length as u64 > MAX_WORDPIECE_TOKEN_LENGTH);
    match too_long {
        Some((index, length)) => Err(unusable(
            tokenizer,
            format!(
                "token {index} is {length} bytes long, and WordPiece tries every length up to \
                 its longest token at each byte of a word (limit {MAX_WORDPIECE_TOKEN_LENGTH})"
            ),
        )),
        None => Ok(()),
    }
}

/// `llama_unescape_rwkv_token`: `\t`, `\n`, `\r`, `\xHH` and `\c` escapes,
/// with its arithmetic on signed `char`s and wrapping `uint8_t`s.
fn unescape_rwkv(token: &str) -> Vec<u8> {
    let mut output = Vec::with_capacity(token.len());
    let (mut escaping, mut hex_remaining, mut hex_value) = (false, 0u8, 0u8);
    for &c in as_c_string(token).as_bytes() {
        if hex_remaining != 0 {
            // `c >= 'a'` is false for bytes above 0x7F (a negative `char`).
            let digit = if (b'a'..0x80).contains(&c) {
                c - b'a' + 10
            } else {
                c.wrapping_sub(b'0')
            };
            hex_value = (hex_value << 4).wrapping_add(digit);
            hex_remaining -= 1;
            if hex_remaining == 0 {
                output.push(hex_value);
                hex_value = 0;
            }
        } else if escaping {
            match c {
                b't' => output.push(b'\t'),
                b'n' => output.push(b'\n'),
                b'r' => output.push(b'\r'),
                b'x' => hex_remaining = 2,
                other => output.push(other),
            }
            escaping = false;
        } else if c == b'\\' {
            escaping = true;
        } else {
            output.push(c);
        }
    }
    output
}

/// RWKV's tokenizer matches the longest token at each position and, when
/// the walk matches none, starts over at position 0 forever; a byte no
/// token starts with becomes the unknown token, which RWKV does not have
/// (id -1). With every single byte a token, each walk matches at least
/// one byte. Its trie also recurses once per byte of a token.
pub fn check_rwkv_tokens(tokens: &[String], tokenizer: &str) -> Result<(), GgufError> {
    let unescaped: Vec<Vec<u8>> = tokens.iter().map(|token| unescape_rwkv(token)).collect();
    check_trie_depth(
        unescaped
            .iter()
            .enumerate()
            .map(|(index, bytes)| (index, bytes.len())),
        tokenizer,
    )?;
    let mut single = [false; 256];
    for bytes in &unescaped {
        if let [byte] = bytes[..] {
            single[usize::from(byte)] = true;
        }
    }
    match single.iter().position(|&present| !present) {
        Some(byte) => Err(unusable(
            tokenizer,
            format!(
                "no token is the single byte 0x{byte:02X}, and llama.cpp's RWKV tokenizer \
                 never finishes a text it cannot match byte by byte"
            ),
        )),
        None => Ok(()),
    }
}

/// PLaMo-2's build work, in characters (code points), within bounds.
pub fn check_plamo2_work(tokens: &[String], tokenizer: &str) -> Result<(), GgufError> {
    let (mut suffixes, mut suffix_characters, mut prefix_characters) = (0u64, 0u64, 0u64);
    for token in tokens {
        let length = as_c_string(token).chars().count() as u64;
        suffixes = suffixes.saturating_add(length);
        // Suffixes of lengths 1..length: length * (length + 1) / 2 characters.
        let stored = length.saturating_mul(length.saturating_add(1)) / 2;
        suffix_characters = suffix_characters.saturating_add(stored);
        // Each suffix of length s rebuilds its s prefixes: about s * s / 2.
        let rebuilt = stored.saturating_mul(length.saturating_add(2)) / 3;
        prefix_characters = prefix_characters.saturating_add(rebuilt);
    }
    for (what, amount, limit) in [
        ("suffixes", suffixes, MAX_PLAMO2_SUFFIXES),
        (
            "characters of suffixes",
            suffix_characters,
            MAX_PLAMO2_SUFFIX_CHARACTERS,
        ),
        (
            "characters of prefixes",
            prefix_characters,
            MAX_PLAMO2_PREFIX_CHARACTERS,
        ),
    ] {
        if amount > limit {
            return Err(unusable(
                tokenizer,
                format!(
                    "building it takes {amount} {what} (limit {limit}): its tokens are too long"
                ),
            ));
        }
    }
    Ok(())
}

/// The XOR-compressed double array (XCDA) of a Unigram charsmap, read as
/// `llm_tokenizer_ugm_session::xcda_array_view` reads it.
struct Xcda<'a> {
    units: &'a [u8],
}

impl Xcda<'_> {
    fn len(&self) -> u64 {
        self.units.len() as u64 / 4
    }

    fn node(&self, index: u32) -> Option<u32> {
        let start = usize::try_from(index).ok()?.checked_mul(4)?;
        let bytes = self.units.get(start..start.checked_add(4)?)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?))
    }

    fn base(node: u32) -> u32 {
        (node >> 10) << ((node & (1 << 9)) >> 6)
    }

    fn lcheck(node: u32) -> u32 {
        node & ((1 << 31) | 0xFF)
    }

    fn is_leaf(node: u32) -> bool {
        (node >> 8) & 1 == 1
    }

    fn value(node: u32) -> u32 {
        node & ((1 << 31) - 1)
    }
}

/// Every walk `normalize_prefix` can take through the charsmap, for any
/// input, stays inside it: each node a byte can lead to exists, and each
/// replacement a leaf names starts inside the replacement strings and ends
/// with a NUL there. `bytes` is the whole charsmap (size header, XCDA,
/// strings), whose header [`super::vocab`] checked.
pub fn check_charsmap_walks(bytes: &[u8]) -> Result<(), GgufError> {
    let bad = |reason| GgufError::BadCharsmap { reason };
    let Some((header, rest)) = bytes.split_first_chunk::<4>() else {
        return Err(bad("it is shorter than its 4-byte size header"));
    };
    let blob_size = u32::from_le_bytes(*header) as usize;
    let (Some(units), Some(strings)) = (rest.get(..blob_size), rest.get(blob_size..)) else {
        return Err(bad("its size header points past its end"));
    };
    let xcda = Xcda { units };
    if xcda.len() == 0 {
        // llama.cpp does not walk an empty array.
        return Ok(());
    }
    let Some(root) = xcda.node(0) else {
        return Err(bad("its array has no root"));
    };
    let start = Xcda::base(root);
    let mut seen = HashSet::from([start]);
    let mut pending = vec![start];
    while let Some(state) = pending.pop() {
        for byte in 1..=255u32 {
            let index = state ^ byte;
            let Some(node) = xcda.node(index) else {
                return Err(bad("a byte of some input leads outside its array"));
            };
            if Xcda::lcheck(node) != byte {
                continue;
            }
            let next = index ^ Xcda::base(node);
            if Xcda::is_leaf(node) {
                let Some(leaf) = xcda.node(next) else {
                    return Err(bad("a match points outside its array"));
                };
                let offset = Xcda::value(leaf) as usize;
                let Some(replacement) = strings.get(offset..) else {
                    return Err(bad("a replacement starts outside its strings"));
                };
                if !replacement.contains(&0) {
                    return Err(bad("a replacement string has no terminating NUL"));
                }
            }
            if seen.insert(next) {
                pending.push(next);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|text| (*text).to_owned()).collect()
    }

    #[test]
    fn c_strings_end_at_the_first_nul() {
        assert_eq!(as_c_string("ab\0cd"), "ab");
        assert_eq!(as_c_string("\0"), "");
        assert_eq!(as_c_string("abc"), "abc");
    }

    #[test]
    fn gpt2_byte_characters_decode_to_one_byte_and_others_to_the_whole_token() {
        assert_eq!(decoded_length("Ġhello"), 6);
        // A space is not a byte character: "[UNK_BYTE_0x" "20" "a b" "]".
        assert_eq!(decoded_length("a b"), 1 + (13 + 2 + 3) + 1);
    }

    #[test]
    fn a_piece_cache_that_grows_with_the_square_of_a_token_is_refused() {
        let long = " ".repeat(40_000);
        assert!(check_piece_cache(&[long], "gpt2").is_err());
        let ordinary = strings(&["Ġthe", "hello", "<|im_end|>", "ĊĊ"]);
        assert!(check_piece_cache(&ordinary, "gpt2").is_ok());
    }

    #[test]
    fn rwkv_escapes_unescape_as_llama_cpp_does() {
        assert_eq!(unescape_rwkv("a\\n\\x41\\\\"), b"a\nA\\");
        assert_eq!(unescape_rwkv("\\xff"), [0xFF]);
    }

    #[test]
    fn rwkv_needs_every_single_byte_and_short_tokens() {
        let mut tokens: Vec<String> = (0..=255u8).map(|byte| format!("\\x{byte:02x}")).collect();
        tokens.push("hello".to_owned());
        assert!(check_rwkv_tokens(&tokens, "rwkv").is_ok());
        let mut missing_newline = tokens.clone();
        missing_newline[10] = "\\n\\nZZ".to_owned();
        assert!(check_rwkv_tokens(&missing_newline, "rwkv").is_err());
        let mut too_long = tokens;
        too_long.push("x".repeat(2000));
        assert!(check_rwkv_tokens(&too_long, "rwkv").is_err());
    }

    #[test]
    fn wordpiece_tokens_are_short() {
        let ordinary = strings(&["[UNK]", "\u{2581}hello", "ing", "\u{2581}\u{4e00}"]);
        assert!(check_wordpiece_tokens(&ordinary, "bert").is_ok());
        let longest = "a".repeat(MAX_WORDPIECE_TOKEN_LENGTH as usize);
        assert!(check_wordpiece_tokens(std::slice::from_ref(&longest), "bert").is_ok());
        let error = check_wordpiece_tokens(&[format!("{longest}a")], "bert").unwrap_err();
        assert!(
            error.to_string().contains("token 0 is 257 bytes long"),
            "{error}"
        );
        // Judged as llama.cpp reads it: up to the first NUL.
        assert!(check_wordpiece_tokens(&[format!("a\0{longest}")], "bert").is_ok());
    }

    #[test]
    fn plamo2_work_grows_with_the_cube_of_a_token() {
        assert!(check_plamo2_work(&strings(&["こんにちは", "hello"]), "plamo2").is_ok());
        assert!(check_plamo2_work(&["a".repeat(4096)], "plamo2").is_err());
    }

    /// A charsmap that maps the byte 'a' to "b": root base 256, node
    /// 256 ^ 'a' with lcheck 'a' and leaf set, whose base leads to a node
    /// holding the replacement's offset.
    fn charsmap(replacement_offset: u32, strings: &[u8]) -> Vec<u8> {
        let mut units = vec![0u32; 1024];
        let root_base = 256u32;
        units[0] = root_base << 10;
        let matched = root_base ^ u32::from(b'a');
        let leaf = 512u32;
        // base(matched) = matched ^ leaf, so that matched ^ base = leaf.
        units[matched as usize] = ((matched ^ leaf) << 10) | (1 << 8) | u32::from(b'a');
        units[leaf as usize] = replacement_offset;
        let mut bytes = ((units.len() * 4) as u32).to_le_bytes().to_vec();
        for unit in units {
            bytes.extend_from_slice(&unit.to_le_bytes());
        }
        bytes.extend_from_slice(strings);
        bytes
    }

    #[test]
    fn charsmap_walks_stay_inside_it() {
        assert!(check_charsmap_walks(&charsmap(0, b"b\0")).is_ok());
        // The replacement has no NUL.
        assert!(check_charsmap_walks(&charsmap(0, b"bb")).is_err());
        // It starts past the strings.
        assert!(check_charsmap_walks(&charsmap(9, b"b\0")).is_err());
        // A root whose children lie past the array.
        let mut outside = charsmap(0, b"b\0");
        outside[4..8].copy_from_slice(&(4096u32 << 10).to_le_bytes());
        assert!(check_charsmap_walks(&outside).is_err());
    }
}
