//! The vocabulary as llama.cpp builds it (`llama_vocab::impl::load` and the
//! tokenizers in src/llama-vocab.cpp). A vocabulary it cannot build aborts
//! the process while loading (duplicate token strings trip
//! `GGML_ASSERT(id_to_token.size() == token_to_id.size())`), and one it
//! builds but cannot use aborts on the first prompt: SentencePiece falls
//! back to byte tokens with `token_to_id.at("<0xHH>")`, which throws out of
//! `llama_tokenize`; a tokenizer that adds BOS/EOS/SEP asserts the token
//! exists (Gemma 4's byte pairs have no default ids to fall back on); one
//! that emits the unknown token (WordPiece, Unigram) without having one
//! hands out id -1, which the next lookup throws on; a WordPiece byte
//! token hits `GGML_ABORT` in `token_to_byte`.
//!
//! [`check`] applies to what a file has; [`check_required`] adds what a
//! model cannot run without (a tokenizer olm can use and its token list).

use super::error::{printable, GgufError};
use super::keys::{self, wrong_type};
use super::tokenizer_work::{self, as_c_string};
use super::value::{Array, Value};
use super::writer::token_type;
use super::{GgufFile, MAX_TOKEN_LENGTH, MAX_VOCAB_SIZE};

pub const MODEL_KEY: &str = "tokenizer.ggml.model";
pub const PRE_KEY: &str = "tokenizer.ggml.pre";
pub const TOKENS_KEY: &str = "tokenizer.ggml.tokens";
pub const TOKEN_TYPE_KEY: &str = "tokenizer.ggml.token_type";
pub const SCORES_KEY: &str = "tokenizer.ggml.scores";
pub const MERGES_KEY: &str = "tokenizer.ggml.merges";
const CHARSMAP_KEY: &str = "tokenizer.ggml.precompiled_charsmap";
const BOS_KEY: &str = "tokenizer.ggml.bos_token_id";
const EOS_KEY: &str = "tokenizer.ggml.eos_token_id";
const SEP_KEY: &str = "tokenizer.ggml.seperator_token_id";
const UNKNOWN_KEY: &str = "tokenizer.ggml.unknown_token_id";
const TOKEN_TYPE_COUNT_KEY: &str = "tokenizer.ggml.token_type_count";
const SUPPRESS_TOKENS_KEY: &str = "tokenizer.ggml.suppress_tokens";
/// Read for per-token attributes (Phi-3's strip flags).
const NAME_KEY: &str = "general.name";

/// Special token ids llama.cpp looks up in the vocabulary (`special_token_types`
/// in `llama_vocab::impl::load`), each read with `get_key<uint32_t>`.
const SPECIAL_TOKEN_KEYS: [&str; 18] = [
    BOS_KEY,
    EOS_KEY,
    UNKNOWN_KEY,
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.padding_token_id",
    SEP_KEY,
    "tokenizer.ggml.eom_token_id",
    "tokenizer.ggml.cls_token_id",
    "tokenizer.ggml.mask_token_id",
    "tokenizer.ggml.fim_pre_token_id",
    "tokenizer.ggml.fim_suf_token_id",
    "tokenizer.ggml.fim_mid_token_id",
    "tokenizer.ggml.fim_pad_token_id",
    "tokenizer.ggml.fim_rep_token_id",
    "tokenizer.ggml.fim_sep_token_id",
    "tokenizer.ggml.prefix_token_id",
    "tokenizer.ggml.suffix_token_id",
    "tokenizer.ggml.middle_token_id",
];

/// Flags read with `get_key<bool>`.
const BOOL_KEYS: [&str; 7] = [
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token",
    "tokenizer.ggml.add_sep_token",
    "tokenizer.ggml.add_space_prefix",
    "tokenizer.ggml.remove_extra_whitespaces",
    "tokenizer.ggml.normalizer.lowercase",
    "tokenizer.ggml.normalizer.strip_accents",
];

/// The token list llama.cpp builds: what `tokenizer.ggml.model` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tokenizer {
    /// `llama`: SentencePiece (`LLAMA_VOCAB_TYPE_SPM`).
    SentencePiece,
    /// `gpt2`, `hybriddna`, `whitespace`, `gemma4`: byte-level BPE.
    BytePairs,
    /// `bert`: WordPiece (`LLAMA_VOCAB_TYPE_WPM`).
    WordPiece,
    /// `t5`: Unigram (`LLAMA_VOCAB_TYPE_UGM`).
    Unigram,
    /// `rwkv`: a trie of escaped byte strings.
    Rwkv,
    /// `plamo2`.
    Plamo2,
}

impl Tokenizer {
    /// The tokenizer `tokenizer.ggml.model` names, or why olm refuses it.
    fn from_model(model: &str) -> Result<Self, GgufError> {
        let refuse = |reason| GgufError::UnsupportedTokenizer {
            tokenizer: printable(model),
            reason,
        };
        Ok(match model {
            "llama" => Tokenizer::SentencePiece,
            "gpt2" | "hybriddna" | "whitespace" | "gemma4" => Tokenizer::BytePairs,
            "bert" => Tokenizer::WordPiece,
            "t5" => Tokenizer::Unigram,
            "rwkv" => Tokenizer::Rwkv,
            "plamo2" => Tokenizer::Plamo2,
            // llama.cpp's `tokenize` asserts `type != LLAMA_VOCAB_TYPE_NONE`.
            "none" | "no_vocab" => {
                return Err(refuse(
                    "the model has no vocabulary to tokenize a prompt with",
                ))
            }
            // LLAMA_VOCAB_TYPE_TEST turns tokens into hexadecimal ids, for llama.cpp's tests.
            "test" => return Err(refuse("it is llama.cpp's test tokenizer")),
            // `llama_vocab::impl::load` throws "unknown tokenizer".
            _ => return Err(refuse("llama.cpp does not know it")),
        })
    }

    /// The special ids llama.cpp sets for `model` before it reads the
    /// file's own keys (the tokenizer's branch of `llama_vocab::impl::load`).
    /// Gemma 4's byte pairs have none: it expects every id in the file.
    fn default_ids(self, model: &str) -> DefaultIds {
        let ids = |bos, eos, unknown, separator| DefaultIds {
            bos,
            eos,
            unknown,
            separator,
        };
        match self {
            Tokenizer::SentencePiece | Tokenizer::Plamo2 => ids(Some(1), Some(2), Some(0), None),
            Tokenizer::BytePairs if model == "gemma4" => ids(None, None, None, None),
            Tokenizer::BytePairs => ids(Some(11), Some(11), None, None),
            Tokenizer::WordPiece => ids(Some(101), None, Some(100), Some(102)),
            Tokenizer::Unigram => ids(None, Some(1), Some(2), None),
            Tokenizer::Rwkv => ids(None, None, None, None),
        }
    }

    /// Whether tokenizing can emit the unknown token: WordPiece for a word
    /// it cannot spell from its tokens, Unigram for a character none of its
    /// tokens holds. Without one, llama.cpp emits id -1, and the first call
    /// that looks the token up (`llama_vocab_get_attr`: `id_to_token.at`)
    /// throws out of the FFI and aborts the process.
    fn emits_unknown(self) -> bool {
        matches!(self, Tokenizer::WordPiece | Tokenizer::Unigram)
    }
}

/// Special token ids before the file's own keys; `None` is
/// `LLAMA_TOKEN_NULL`. llama.cpp drops a default outside the vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DefaultIds {
    bos: Option<u64>,
    eos: Option<u64>,
    unknown: Option<u64>,
    separator: Option<u64>,
}

/// BPE pre-tokenizers llama.cpp knows (`tokenizer_pre ==` in
/// `llama_vocab::impl::load`; an empty one means "default"). Any other
/// name makes it throw "unknown pre-tokenizer type".
#[rustfmt::skip]
const KNOWN_PRE_TOKENIZERS: [&str; 92] = [
    "default", "minicpm5", "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
    "midm-2.0", "lfm2", "jina-v5-nano", "deepseek-llm", "deepseek-coder", "deepseek-v3",
    "spark2_5", "youtu", "falcon", "mpt", "starcoder", "gpt-2", "phi-2", "jina-es", "jina-de",
    "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum", "modern-bert", "jais-2",
    "gemma4", "granite-embed-multi-311m", "mmbert", "sarvam-moe", "jina-v1-en", "jina-v2-code",
    "roberta-bpe", "whitespace", "refact", "command-r", "qwen2", "deepseek-r1-qwen", "kormo",
    "f2llmv2", "qwen35", "stablelm2", "olmo", "dbrx", "smaug-bpe", "poro-chat", "chatglm-bpe",
    "glm4", "glm5", "viking", "jais", "tekken", "smollm", "codeshell", "bloom", "gpt3-finnish",
    "exaone", "exaone4", "exaone-moe", "chameleon", "minerva-7b", "megrez", "gpt-4o", "llama4",
    "kanana2", "talkie", "granite-embed-multi-97m", "tiny_aya", "cohere2moe", "superbpe",
    "trillion", "granite-docling", "bailingmoe", "bailingmoe2", "llada-moe", "seed-coder",
    "hunyuan", "hunyuan-dense", "hy_v4", "joyai-llm", "kimi-k2", "ufakzeka", "grok-2", "afmoe",
    "laguna", "minimax-m2", "solar-open", "mellum2",
];

/// BPE pre-tokenizers after which llama.cpp adds a BOS token by default
/// (`add_bos = true` in their branch of `llama_vocab::impl::load`; `gemma4`
/// forces it).
const PRE_TOKENIZERS_ADDING_BOS: [&str; 12] = [
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
    "tekken",
    "chameleon",
    "gemma4",
];

/// The vocabulary a file has: the checks olm always made (sizes, side
/// arrays, byte tokens, special ids in range), then what llama.cpp needs to
/// build and use it for the tokenizer the file names.
pub fn check(file: &GgufFile) -> Result<(), GgufError> {
    check_sizes_and_ids(file)?;
    check_key_types(file)?;
    let Some(tokens) = tokens(file)? else {
        return Ok(());
    };
    if tokens.is_empty() {
        return Err(GgufError::EmptyVocabulary);
    }
    let tokenizer = match keys::str_value(file, MODEL_KEY)? {
        Some(model) => Some(Tokenizer::from_model(model)?),
        None => None,
    };
    // RWKV's tokens too: llama.cpp's converter writes them escaped
    // (`repr` of the bytes), and olm judges them by their exact bytes.
    check_utf8(file, TOKENS_KEY)?;
    check_unique(tokens)?;
    check_scores(file)?;
    let Some(tokenizer) = tokenizer else {
        return Ok(());
    };
    check_tokenizer_specifics(file, tokens, tokenizer)?;
    check_added_special_tokens(file, tokens.len() as u64, tokenizer)
}

/// What a model cannot run without: `tokenizer.ggml.model` (read with
/// `get_key` and no default) and, for it, a token list (llama.cpp throws
/// "cannot find tokenizer vocab in model file").
pub fn check_required(file: &GgufFile) -> Result<(), GgufError> {
    for key in [MODEL_KEY, TOKENS_KEY] {
        if file.get(key).is_none() {
            return Err(GgufError::MissingKey {
                key: key.to_owned(),
                needed_by: "llama.cpp's vocabulary".to_owned(),
            });
        }
    }
    Ok(())
}

/// `tokenizer.ggml.tokens` as strings, if present.
fn tokens(file: &GgufFile) -> Result<Option<&[String]>, GgufError> {
    file.get(TOKENS_KEY)
        .map(|value| {
            value
                .as_array()
                .and_then(Array::as_strings)
                .ok_or_else(|| wrong_type(TOKENS_KEY, "an array of strings", value))
        })
        .transpose()
}

/// Sizes, side arrays, byte tokens and special ids (T-A6).
fn check_sizes_and_ids(file: &GgufFile) -> Result<(), GgufError> {
    let vocab_size_key = file.architecture().map(|arch| format!("{arch}.vocab_size"));
    let declared_vocab_size = match &vocab_size_key {
        Some(key) => keys::unsigned(file, key)?,
        None => None,
    };
    let Some(tokens) = tokens(file)? else {
        // No token list: llama.cpp makes `vocab_size` dummy tokens.
        if let (Some(key), Some(declared)) = (&vocab_size_key, declared_vocab_size) {
            if declared > MAX_VOCAB_SIZE {
                return Err(GgufError::ValueTooLarge {
                    key: printable(key),
                    value: declared,
                    limit: MAX_VOCAB_SIZE,
                });
            }
        }
        return Ok(());
    };
    let vocab_size = tokens.len() as u64;
    if vocab_size > MAX_VOCAB_SIZE {
        return Err(GgufError::ArrayTooLong {
            key: TOKENS_KEY.to_owned(),
            length: vocab_size,
            limit: MAX_VOCAB_SIZE,
        });
    }
    if let (Some(key), Some(declared)) = (&vocab_size_key, declared_vocab_size) {
        if declared > vocab_size {
            return Err(GgufError::VocabSizeMismatch {
                key: printable(key),
                declared,
                tokens: vocab_size,
            });
        }
    }
    check_token_lengths(tokens)?;
    let token_types = parallel_array(file, TOKEN_TYPE_KEY, vocab_size, |array| {
        matches!(array, Array::I32(_))
    })?;
    parallel_array(file, SCORES_KEY, vocab_size, |array| {
        matches!(array, Array::F32(_) | Array::I32(_))
    })?;
    if let Some(Array::I32(token_types)) = token_types {
        check_byte_tokens(tokens, token_types)?;
    }
    check_special_tokens(file, vocab_size)
}

fn check_token_lengths(tokens: &[String]) -> Result<(), GgufError> {
    match tokens
        .iter()
        .enumerate()
        .find(|(_, token)| token.len() as u64 > MAX_TOKEN_LENGTH)
    {
        Some((index, token)) => Err(GgufError::TokenTooLong {
            index: index as u64,
            length: token.len() as u64,
            limit: MAX_TOKEN_LENGTH,
        }),
        None => Ok(()),
    }
}

/// An array with one entry per token, of a type `accepts`, if present.
fn parallel_array<'a>(
    file: &'a GgufFile,
    key: &str,
    vocab_size: u64,
    accepts: impl Fn(&Array) -> bool,
) -> Result<Option<&'a Array>, GgufError> {
    let Some(value) = file.get(key) else {
        return Ok(None);
    };
    let array = value
        .as_array()
        .filter(|array| accepts(array))
        .ok_or_else(|| wrong_type(key, "an array of one number per token", value))?;
    if array.len() as u64 != vocab_size {
        return Err(GgufError::VocabLengthMismatch {
            key: key.to_owned(),
            length: array.len() as u64,
            vocab_size,
        });
    }
    Ok(Some(array))
}

/// llama.cpp decodes byte tokens by slicing their text ("<0x0A>"[3..5]).
fn check_byte_tokens(tokens: &[String], token_types: &[i32]) -> Result<(), GgufError> {
    let bad_token = tokens
        .iter()
        .zip(token_types)
        .enumerate()
        .find(|(_, (text, &kind))| kind == token_type::BYTE && !is_byte_token(text));
    match bad_token {
        Some((index, (text, _))) => Err(GgufError::BadByteToken {
            index: index as u64,
            text: printable(text),
        }),
        None => Ok(()),
    }
}

fn is_byte_token(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 6
        && bytes.starts_with(b"<0x")
        && bytes[3].is_ascii_hexdigit()
        && bytes[4].is_ascii_hexdigit()
        && bytes[5] == b'>'
}

/// Each special id in range, and stored as the `u32` llama.cpp reads it as.
fn check_special_tokens(file: &GgufFile, vocab_size: u64) -> Result<(), GgufError> {
    for key in SPECIAL_TOKEN_KEYS {
        let Some(value) = file.get(key) else {
            continue;
        };
        let id = value
            .as_integer()
            .ok_or_else(|| wrong_type(key, "an integer", value))?;
        if id < 0 || id >= i128::from(vocab_size) {
            return Err(GgufError::TokenIdOutOfRange {
                key: key.to_owned(),
                id,
                vocab_size,
            });
        }
        keys::u32_value(file, key)?;
    }
    Ok(())
}

/// The other keys `llama_vocab::impl::load` reads, in the types it reads
/// them as (`get_key` throws "key has wrong type" for any other, and the
/// model fails to load after `show` passed it).
fn check_key_types(file: &GgufFile) -> Result<(), GgufError> {
    for key in BOOL_KEYS {
        keys::bool_value(file, key)?;
    }
    keys::str_value(file, PRE_KEY)?;
    keys::str_value(file, NAME_KEY)?;
    keys::u32_value(file, TOKEN_TYPE_COUNT_KEY)?;
    match file.get(SUPPRESS_TOKENS_KEY) {
        None | Some(Value::Array(Array::I32(_))) => Ok(()),
        Some(other) => Err(wrong_type(
            SUPPRESS_TOKENS_KEY,
            "an array of i32 token ids",
            other,
        )),
    }
}

/// A string key (or string array) must have been valid UTF-8 in the file.
fn check_utf8(file: &GgufFile, key: &str) -> Result<(), GgufError> {
    match file.first_non_utf8(key) {
        Some(bad) => Err(GgufError::StringNotUtf8 {
            key: printable(key),
            index: bad.index,
        }),
        None => Ok(()),
    }
}

/// Unique token strings, compared as llama.cpp stores them: read as C
/// strings (cut at the first NUL), and an empty one becomes
/// "[EMPTY_<index>]" before it goes into `token_to_id`. The
/// duplicate reported is the first a forward scan meets, with the earliest
/// token of the same text. A small open-addressing table of indices keeps
/// a quarter of a million tokens well within the time budget, even in a
/// debug build (std's generic hash map and sort are slow unoptimized).
fn check_unique(tokens: &[String]) -> Result<(), GgufError> {
    let empty_names: Vec<String> = tokens
        .iter()
        .enumerate()
        .filter(|(_, token)| as_c_string(token).is_empty())
        .map(|(index, _)| format!("[EMPTY_{index}]"))
        .collect();
    let mut empty_names = empty_names.iter();
    let texts: Vec<&[u8]> = tokens
        .iter()
        .map(|token| as_c_string(token))
        .map(|token| match token.is_empty() {
            true => empty_names.next().map_or(&b""[..], |name| name.as_bytes()),
            false => token.as_bytes(),
        })
        .collect();
    // At most half full: a free slot is always found.
    let mask = (texts.len() * 2).next_power_of_two().max(2) - 1;
    let mut slots = vec![u32::MAX; mask + 1];
    for (index, text) in texts.iter().enumerate() {
        let mut slot = fnv1a(text) as usize & mask;
        loop {
            let occupant = slots[slot];
            if occupant == u32::MAX {
                // Indices fit in u32: the vocabulary is at most MAX_VOCAB_SIZE.
                slots[slot] = index as u32;
                break;
            }
            if texts[occupant as usize] == *text {
                return Err(GgufError::DuplicateToken {
                    index: index as u64,
                    first: u64::from(occupant),
                    text: printable(&String::from_utf8_lossy(text)),
                });
            }
            slot = (slot + 1) & mask;
        }
    }
    Ok(())
}

/// The 64-bit FNV-1a hash of `bytes`.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xCBF2_9CE4_8422_2325u64;
    for &byte in bytes {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01B3);
    }
    hash
}

/// Float scores must be numbers: SentencePiece and Unigram order merges by
/// them in a priority queue, which a NaN leaves without a strict order.
fn check_scores(file: &GgufFile) -> Result<(), GgufError> {
    if let Some(Value::Array(Array::F32(scores))) = file.get(SCORES_KEY) {
        if let Some((index, &value)) = scores.iter().enumerate().find(|(_, score)| score.is_nan()) {
            return Err(GgufError::BadScore {
                key: SCORES_KEY.to_owned(),
                index: index as u64,
                value,
            });
        }
    }
    Ok(())
}

fn check_tokenizer_specifics(
    file: &GgufFile,
    tokens: &[String],
    tokenizer: Tokenizer,
) -> Result<(), GgufError> {
    let model = keys::str_value(file, MODEL_KEY)?.unwrap_or_default();
    match tokenizer {
        Tokenizer::SentencePiece => check_byte_fallback(tokens, model),
        Tokenizer::WordPiece => {
            check_no_byte_tokens(file, tokens, model)?;
            tokenizer_work::check_wordpiece_tokens(tokens, model)
        }
        Tokenizer::BytePairs => {
            check_pre_tokenizer(file)?;
            check_merges(file, model)?;
            tokenizer_work::check_piece_cache(tokens, model)
        }
        Tokenizer::Unigram => {
            check_charsmap(file)?;
            tokenizer_work::check_unigram_tokens(tokens, model)
        }
        Tokenizer::Rwkv => tokenizer_work::check_rwkv_tokens(tokens, model),
        Tokenizer::Plamo2 => tokenizer_work::check_plamo2_work(tokens, model),
    }
}

/// SentencePiece tokenizes text it has no token for byte by byte
/// (`llm_tokenizer_spm_session::resegment` → `llama_vocab::byte_to_token`):
/// "<0xHH>", or for ASCII the character itself, must be a token, or
/// `token_to_id.at` throws out of `llama_tokenize` and the process aborts.
fn check_byte_fallback(tokens: &[String], model: &str) -> Result<(), GgufError> {
    let mut found = [false; 256];
    for token in tokens {
        if let Some(byte) = fallback_byte(token) {
            found[usize::from(byte)] = true;
        }
    }
    match found.iter().position(|&present| !present) {
        Some(byte) => Err(GgufError::MissingByteToken {
            byte: byte as u8,
            tokenizer: printable(model),
        }),
        None => Ok(()),
    }
}

/// The byte `llama_vocab::byte_to_token` finds `token` for: "<0xHH>" with
/// upper-case hex digits (it formats the name so), or a one-character
/// ASCII string.
fn fallback_byte(token: &str) -> Option<u8> {
    match token.as_bytes() {
        // `byte_to_token` looks the byte up as a C string: NUL is "".
        [byte] if byte.is_ascii() && *byte != 0 => Some(*byte),
        [b'<', b'0', b'x', high, low, b'>'] => {
            let digit = |digit: u8| match digit {
                b'0'..=b'9' => Some(digit - b'0'),
                b'A'..=b'F' => Some(digit - b'A' + 10),
                _ => None,
            };
            Some(digit(*high)? << 4 | digit(*low)?)
        }
        _ => None,
    }
}
/// WordPiece has no byte tokens: `llama_vocab::impl::token_to_byte` aborts
/// for it, and llama.cpp calls it for every byte-typed token while it builds
/// its token-to-piece cache at load time.
fn check_no_byte_tokens(file: &GgufFile, tokens: &[String], model: &str) -> Result<(), GgufError> {
    let Some(Value::Array(Array::I32(types))) = file.get(TOKEN_TYPE_KEY) else {
        return Ok(());
    };
    match types.iter().position(|&kind| kind == token_type::BYTE) {
        Some(index) => Err(GgufError::ByteTokenNotAllowed {
            index: index as u64,
            text: printable(tokens.get(index).map_or("", String::as_str)),
            tokenizer: printable(model),
        }),
        None => Ok(()),
    }
}

fn check_pre_tokenizer(file: &GgufFile) -> Result<(), GgufError> {
    match keys::str_value(file, PRE_KEY)? {
        Some(pre) if !pre.is_empty() && !KNOWN_PRE_TOKENIZERS.contains(&pre) => {
            Err(GgufError::UnknownKeyValue {
                key: PRE_KEY.to_owned(),
                value: printable(pre).into(),
                allowed: "a pre-tokenizer llama.cpp knows (see llama-vocab.cpp)",
            })
        }
        _ => Ok(()),
    }
}

/// BPE merges: present (llama.cpp throws "cannot find tokenizer merges";
/// only the `kimi-k2` pre-tokenizer goes without), an array of UTF-8
/// strings, each "left right" with a space after a non-empty left part
/// (llama.cpp splits at `word.find(' ', 1)`).
fn check_merges(file: &GgufFile, model: &str) -> Result<(), GgufError> {
    let Some(value) = file.get(MERGES_KEY) else {
        let pre = keys::str_value(file, PRE_KEY)?.unwrap_or_default();
        if pre == "kimi-k2" && model != "gemma4" {
            return Ok(());
        }
        return Err(GgufError::MissingMerges {
            tokenizer: printable(model),
        });
    };
    let merges = value
        .as_array()
        .and_then(Array::as_strings)
        .ok_or_else(|| wrong_type(MERGES_KEY, "an array of strings", value))?;
    check_utf8(file, MERGES_KEY)?;
    let malformed = merges
        .iter()
        .enumerate()
        .find(|(_, merge)| !is_well_formed_merge(merge));
    match malformed {
        Some((index, merge)) => Err(GgufError::BadMerge {
            index: index as u64,
            text: printable(merge),
        }),
        None => Ok(()),
    }
}

/// "left right": a space after the first byte, with something after it,
/// before any NUL (llama.cpp reads the merge as a C string).
fn is_well_formed_merge(merge: &str) -> bool {
    let bytes = as_c_string(merge).as_bytes();
    bytes
        .iter()
        .skip(1)
        .position(|&byte| byte == b' ')
        .is_some_and(|space| space + 2 < bytes.len())
}

/// Unigram's precompiled normalizer: what `llama_vocab::impl::load` checks
/// before it parses it (a `u8`/`i8` array with a 4-byte size header whose
/// blob fits after it), then every walk the normalizer can take through it.
fn check_charsmap(file: &GgufFile) -> Result<(), GgufError> {
    let bytes: Vec<u8> = match file.get(CHARSMAP_KEY) {
        None => return Ok(()),
        Some(Value::Array(Array::U8(bytes))) => bytes.clone(),
        Some(Value::Array(Array::I8(bytes))) => bytes.iter().map(|&byte| byte as u8).collect(),
        Some(other) => return Err(wrong_type(CHARSMAP_KEY, "an array of u8", other)),
    };
    let Some(header) = bytes.first_chunk::<4>() else {
        return Err(GgufError::BadCharsmap {
            reason: "it is shorter than its 4-byte size header",
        });
    };
    let blob_size = u64::from(u32::from_le_bytes(*header));
    if blob_size + 4 >= bytes.len() as u64 {
        return Err(GgufError::BadCharsmap {
            reason: "its size header points past its end",
        });
    }
    tokenizer_work::check_charsmap_walks(&bytes)
}

/// A tokenizer that adds BOS, EOS or (WordPiece) SEP to every prompt
/// asserts the token exists (`GGML_ASSERT(special_bos_id != LLAMA_TOKEN_NULL)`
/// in `llama_vocab::impl::tokenize` and `llm_tokenizer_bpe_session::append_bos`),
/// and one that emits the unknown token needs it too
/// ([`Tokenizer::emits_unknown`]). The id comes from the file, or is the
/// tokenizer's default when that is inside the vocabulary; llama.cpp drops
/// a default that is not.
fn check_added_special_tokens(
    file: &GgufFile,
    vocab_size: u64,
    tokenizer: Tokenizer,
) -> Result<(), GgufError> {
    let model = keys::str_value(file, MODEL_KEY)?.unwrap_or_default();
    let pre = keys::str_value(file, PRE_KEY)?.unwrap_or_default();
    let defaults = tokenizer.default_ids(model);
    let adds = |key: &str, default: bool| -> Result<bool, GgufError> {
        Ok(keys::bool_value(file, key)?.unwrap_or(default))
    };
    let bos_by_default = match tokenizer {
        Tokenizer::SentencePiece | Tokenizer::WordPiece => true,
        Tokenizer::BytePairs => PRE_TOKENIZERS_ADDING_BOS.contains(&pre) || model == "gemma4",
        _ => false,
    };
    let mut adds_bos = adds("tokenizer.ggml.add_bos_token", bos_by_default)?;
    if model == "gemma4" || pre == "gemma4" {
        // llama.cpp overrides add_bos to true for Gemma 4.
        adds_bos = true;
    }
    let adds_eos = adds(
        "tokenizer.ggml.add_eos_token",
        tokenizer == Tokenizer::Unigram,
    )?;
    let needed = [
        // WordPiece adds BOS and SEP whenever special tokens are added.
        (
            adds_bos || tokenizer == Tokenizer::WordPiece,
            "BOS",
            BOS_KEY,
            defaults.bos,
        ),
        (
            adds_eos && tokenizer != Tokenizer::WordPiece && tokenizer != Tokenizer::Rwkv,
            "EOS",
            EOS_KEY,
            defaults.eos,
        ),
        (
            tokenizer == Tokenizer::WordPiece,
            "SEP",
            SEP_KEY,
            defaults.separator,
        ),
        (
            tokenizer.emits_unknown(),
            "UNK",
            UNKNOWN_KEY,
            defaults.unknown,
        ),
    ];
    for (is_added, token, key, default) in needed {
        if !is_added || file.get(key).is_some() {
            // A present id was checked to be in range.
            continue;
        }
        match default {
            Some(id) if id < vocab_size => {}
            Some(id) => {
                return Err(GgufError::MissingSpecialToken {
                    tokenizer: printable(model),
                    token,
                    reason: format!(
                        "'{key}' is missing and its default id {id} is outside the vocabulary of {vocab_size} tokens"
                    )
                    .into(),
                })
            }
            None => {
                return Err(GgufError::MissingSpecialToken {
                    tokenizer: printable(model),
                    token,
                    reason: format!("'{key}' is missing").into(),
                })
            }
        }
    }
    Ok(())
}
