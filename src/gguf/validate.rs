//! Checks that need the whole header: where each tensor's data lies in the
//! file, and the metadata llama.cpp sizes allocations by or indexes its
//! vocabulary with.

use super::error::{printable, GgufError};
use super::value::{Array, Value};
use super::{
    GgufFile, TensorInfo, MAX_BLOCK_COUNT, MAX_EMBEDDING_LENGTH, MAX_TOKEN_LENGTH, MAX_VOCAB_SIZE,
};

const TOKENS_KEY: &str = "tokenizer.ggml.tokens";
const TOKEN_TYPE_KEY: &str = "tokenizer.ggml.token_type";
const SCORES_KEY: &str = "tokenizer.ggml.scores";
const TOKEN_EMBEDDING_TENSOR: &str = "token_embd.weight";

/// Special token ids llama.cpp looks up in the vocabulary.
const SPECIAL_TOKEN_KEYS: [&str; 6] = [
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.seperator_token_id",
];

/// `tokenizer.ggml.token_type` of a byte-fallback token (`<0x0A>`).
const BYTE_TOKEN_TYPE: i32 = 6;

/// Every tensor's data is aligned, inside the file, apart from the others,
/// and packed in list order as llama.cpp's loader requires.
pub fn check_tensor_layout(file: &GgufFile) -> Result<(), GgufError> {
    for tensor in &file.tensors {
        if tensor.offset % file.alignment != 0 {
            return Err(GgufError::MisalignedTensor {
                name: printable(&tensor.name),
                offset: tensor.offset,
                alignment: file.alignment,
            });
        }
    }
    check_tensors_inside_file(file)?;
    check_no_overlap(&file.tensors)?;
    check_packed_in_order(file)
}

/// The truncation check: the furthest tensor end must lie within the file.
fn check_tensors_inside_file(file: &GgufFile) -> Result<(), GgufError> {
    let mut furthest_end = file.data_offset;
    for tensor in &file.tensors {
        let end = tensor
            .offset
            .checked_add(tensor.byte_size())
            .and_then(|end| end.checked_add(file.data_offset))
            .ok_or_else(|| GgufError::TensorOffsetOverflow {
                name: printable(&tensor.name),
                offset: tensor.offset,
            })?;
        furthest_end = furthest_end.max(end);
    }
    if furthest_end > file.file_size {
        return Err(GgufError::Truncated {
            expected: furthest_end,
            found: file.file_size,
        });
    }
    Ok(())
}

fn check_no_overlap(tensors: &[TensorInfo]) -> Result<(), GgufError> {
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
    by_offset.sort_by_key(|tensor| tensor.offset);
    for pair in by_offset.windows(2) {
        let (first, second) = (pair[0], pair[1]);
        // Ends were checked for overflow against the file size.
        if first.offset.saturating_add(first.byte_size()) > second.offset {
            return Err(GgufError::OverlappingTensors {
                first: printable(&first.name),
                second: printable(&second.name),
            });
        }
    }
    Ok(())
}

/// llama.cpp (`gguf_init_from_reader`) wants each offset to equal the sum of
/// the padded sizes of the tensors listed before it.
fn check_packed_in_order(file: &GgufFile) -> Result<(), GgufError> {
    let mut expected = 0u64;
    for tensor in &file.tensors {
        if tensor.offset != expected {
            return Err(GgufError::UnexpectedTensorOffset {
                name: printable(&tensor.name),
                offset: tensor.offset,
                expected,
            });
        }
        expected = align_up(expected.saturating_add(tensor.byte_size()), file.alignment);
    }
    Ok(())
}

/// `value` rounded up to a multiple of `alignment` (saturating).
pub fn align_up(value: u64, alignment: u64) -> u64 {
    let alignment = alignment.max(1);
    value.div_ceil(alignment).saturating_mul(alignment)
}

/// Metadata that would make llama.cpp index out of bounds or allocate by a
/// number the file made up.
pub fn check_metadata(file: &GgufFile) -> Result<(), GgufError> {
    if let Some(value) = file.get("general.architecture") {
        if value.as_str().is_none() {
            return Err(wrong_type("general.architecture", "a string", value));
        }
    }
    check_vocabulary(file)?;
    check_model_shape(file)?;
    check_split(file)
}

fn check_vocabulary(file: &GgufFile) -> Result<(), GgufError> {
    let vocab_size_key = file.architecture().map(|arch| format!("{arch}.vocab_size"));
    let declared_vocab_size = match &vocab_size_key {
        Some(key) => unsigned(file, key)?,
        None => None,
    };
    let Some(tokens_value) = file.get(TOKENS_KEY) else {
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
    let tokens = tokens_value
        .as_array()
        .and_then(Array::as_strings)
        .ok_or_else(|| wrong_type(TOKENS_KEY, "an array of strings", tokens_value))?;
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
        .find(|(_, (text, &token_type))| token_type == BYTE_TOKEN_TYPE && !is_byte_token(text));
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
    }
    Ok(())
}

/// Shape metadata must agree with the tensors (T-A8); the context length is
/// olm's to choose, but must fit the `u32` llama.cpp reads it into.
fn check_model_shape(file: &GgufFile) -> Result<(), GgufError> {
    let Some(arch) = file.architecture() else {
        return Ok(());
    };
    check_block_count(file, &format!("{arch}.block_count"))?;
    check_embedding_length(file, &format!("{arch}.embedding_length"))?;
    let context_key = format!("{arch}.context_length");
    if let Some(context_length) = unsigned(file, &context_key)? {
        let limit = u64::from(u32::MAX);
        if context_length > limit {
            return Err(GgufError::ValueTooLarge {
                key: printable(&context_key),
                value: context_length,
                limit,
            });
        }
    }
    Ok(())
}

fn check_block_count(file: &GgufFile, key: &str) -> Result<(), GgufError> {
    let Some(block_count) = unsigned(file, key)? else {
        return Ok(());
    };
    if block_count > MAX_BLOCK_COUNT {
        return Err(GgufError::ValueTooLarge {
            key: printable(key),
            value: block_count,
            limit: MAX_BLOCK_COUNT,
        });
    }
    // A split file's first part may hold none of the layers.
    if file.tensors.is_empty() || file.split_count() > 1 {
        return Ok(());
    }
    let layers = layer_count(&file.tensors);
    if block_count > layers {
        return Err(GgufError::BlockCountMismatch {
            key: printable(key),
            block_count,
            layers,
        });
    }
    Ok(())
}

/// One more than the highest `N` in a `blk.N.` tensor name.
fn layer_count(tensors: &[TensorInfo]) -> u64 {
    tensors
        .iter()
        .filter_map(|tensor| {
            let rest = tensor.name.strip_prefix("blk.")?;
            let (number, _) = rest.split_once('.')?;
            number.parse::<u64>().ok()
        })
        .max()
        .map_or(0, |highest| highest.saturating_add(1))
}

fn check_embedding_length(file: &GgufFile, key: &str) -> Result<(), GgufError> {
    let Some(embedding_length) = unsigned(file, key)? else {
        return Ok(());
    };
    if embedding_length > MAX_EMBEDDING_LENGTH {
        return Err(GgufError::ValueTooLarge {
            key: printable(key),
            value: embedding_length,
            limit: MAX_EMBEDDING_LENGTH,
        });
    }
    let row = file
        .tensor(TOKEN_EMBEDDING_TENSOR)
        .and_then(|tensor| tensor.dimensions.first().copied());
    match row {
        Some(row) if row != embedding_length => Err(GgufError::EmbeddingLengthMismatch {
            key: printable(key),
            embedding_length,
            row,
        }),
        _ => Ok(()),
    }
}

/// A split file names its part (`split.no`, from 0) and the number of parts.
fn check_split(file: &GgufFile) -> Result<(), GgufError> {
    let Some(count) = unsigned(file, "split.count")? else {
        return Ok(());
    };
    let index = unsigned(file, "split.no")?.unwrap_or(0);
    if count == 0 || index >= count {
        return Err(GgufError::InvalidSplit { index, count });
    }
    Ok(())
}

/// The value under `key` as a non-negative integer of any width, if present.
fn unsigned(file: &GgufFile, key: &str) -> Result<Option<u64>, GgufError> {
    file.get(key)
        .map(|value| {
            value
                .as_u64()
                .ok_or_else(|| wrong_type(key, "a non-negative integer", value))
        })
        .transpose()
}

fn wrong_type(key: &str, expected: &'static str, found: &Value) -> GgufError {
    GgufError::WrongType {
        key: printable(key),
        expected,
        found: found.describe(),
    }
}
