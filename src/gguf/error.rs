//! Why a file was refused: one variant per check, carrying the values that
//! failed, each displayed as one lowercase sentence. Names and keys read from
//! the file go through [`printable`] first so a hostile file cannot put
//! terminal escapes or line breaks into olm's output.

use std::io;
use std::path::{Path, PathBuf};

use super::types::GgmlType;
use super::{MAX_ALIGNMENT, MAX_DIMENSIONS};

/// A GGUF file that olm refuses to hand to llama.cpp, or could not read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot open {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },

    #[error("{} is not a regular file", path.display())]
    NotAFile { path: PathBuf },

    #[error("cannot read the file at byte {offset}: {source}")]
    Read { offset: u64, source: io::Error },

    #[error("not a GGUF file: the file is empty")]
    Empty,

    #[error("not a GGUF file: bad magic {}", hex_bytes(.magic))]
    BadMagic { magic: Vec<u8> },

    #[error("file truncated: expected {expected} bytes, found {found}")]
    Truncated { expected: u64, found: u64 },

    #[error("unsupported GGUF version {version} (supported: 2, 3)")]
    UnsupportedVersion { version: u32 },

    #[error("big-endian GGUF files are not supported (the version field reads {version:#010x})")]
    BigEndian { version: u32 },

    #[error("{what} count {count} exceeds what the file can hold (at most {max})")]
    CountExceedsFile {
        what: &'static str,
        count: u64,
        max: u64,
    },

    #[error("{what} count {count} exceeds the limit of {limit}")]
    CountTooLarge {
        what: &'static str,
        count: u64,
        limit: u64,
    },

    #[error("{field}: string length {length} exceeds the file size")]
    StringExceedsFile { field: String, length: u64 },

    #[error("{field}: string length {length} exceeds the limit of {limit} bytes")]
    StringTooLong {
        field: String,
        length: u64,
        limit: u64,
    },

    #[error("metadata key #{index} is empty")]
    EmptyKey { index: u64 },

    #[error("metadata key #{index} is not valid UTF-8")]
    KeyNotUtf8 { index: u64 },

    #[error("duplicate metadata key '{key}'")]
    DuplicateKey { key: String },

    #[error("metadata key '{key}': unknown value type {type_id}")]
    UnknownValueType { key: String, type_id: u32 },

    #[error("metadata key '{key}': arrays of arrays are not supported")]
    NestedArray { key: String },

    #[error("metadata key '{key}': array of {length} elements exceeds the file size")]
    ArrayExceedsFile { key: String, length: u64 },

    #[error("metadata key '{key}': array of {length} elements exceeds the limit of {limit}")]
    ArrayTooLong {
        key: String,
        length: u64,
        limit: u64,
    },

    #[error("metadata needs more than {limit} bytes of memory")]
    MetadataTooLarge { limit: u64 },

    #[error("metadata key '{key}' must be {expected}, found {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },

    #[error("general.alignment {alignment} is invalid: it must be a power of two from 1 to {MAX_ALIGNMENT}")]
    InvalidAlignment { alignment: u32 },

    #[error("tensor #{index} has an empty name")]
    EmptyTensorName { index: u64 },

    #[error("tensor #{index}: name is not valid UTF-8")]
    TensorNameNotUtf8 { index: u64 },

    #[error("tensor '{name}': name is {length} bytes long (limit {limit})")]
    TensorNameTooLong {
        name: String,
        length: u64,
        limit: u64,
    },

    #[error("duplicate tensor name '{name}'")]
    DuplicateTensor { name: String },

    #[error("tensor '{name}' has {dimensions} dimensions (supported: 1 to {MAX_DIMENSIONS})")]
    DimensionCount { name: String, dimensions: u32 },

    #[error("tensor '{name}': dimension {axis} is zero")]
    ZeroDimension { name: String, axis: usize },

    #[error("tensor '{name}': dimension product overflows (shape {shape:?})")]
    ShapeOverflow { name: String, shape: Vec<u64> },

    #[error("tensor '{name}': byte size overflows (shape {shape:?}, type {ggml_type})")]
    ByteSizeOverflow {
        name: String,
        shape: Vec<u64>,
        ggml_type: GgmlType,
    },

    #[error("tensor '{name}' has unsupported ggml type id {type_id}")]
    UnknownTensorType { name: String, type_id: i32 },

    #[error("tensor '{name}': row of {row} elements is not a multiple of the {ggml_type} block size {block_size}")]
    RowNotBlockMultiple {
        name: String,
        ggml_type: GgmlType,
        row: u64,
        block_size: u64,
    },

    #[error(
        "tensor '{name}': data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    MisalignedTensor {
        name: String,
        offset: u64,
        alignment: u64,
    },

    #[error("tensor '{name}': data offset {offset} is beyond any possible file size")]
    TensorOffsetOverflow { name: String, offset: u64 },

    #[error("tensors '{first}' and '{second}' overlap")]
    OverlappingTensors { first: String, second: String },

    #[error("tensor '{name}': data offset {offset} should be {expected} (tensor data must follow the tensor list in order, without gaps)")]
    UnexpectedTensorOffset {
        name: String,
        offset: u64,
        expected: u64,
    },

    #[error("metadata key '{key}': token id {id} is out of range for a vocabulary of {vocab_size} tokens")]
    TokenIdOutOfRange {
        key: String,
        id: i128,
        vocab_size: u64,
    },

    #[error(
        "metadata key '{key}' has {length} entries but the vocabulary has {vocab_size} tokens"
    )]
    VocabLengthMismatch {
        key: String,
        length: u64,
        vocab_size: u64,
    },

    #[error("metadata key '{key}' is {declared} but 'tokenizer.ggml.tokens' has {tokens} tokens")]
    VocabSizeMismatch {
        key: String,
        declared: u64,
        tokens: u64,
    },

    #[error("token {index} is {length} bytes long (limit {limit})")]
    TokenTooLong { index: u64, length: u64, limit: u64 },

    #[error("token {index} '{text}' is marked as a byte token but is not of the form <0xHH>")]
    BadByteToken { index: u64, text: String },

    #[error("metadata key '{key}' is {value}, above the limit of {limit}")]
    ValueTooLarge { key: String, value: u64, limit: u64 },

    #[error("metadata key '{key}' is {block_count} but the file has tensors for {layers} layers")]
    BlockCountMismatch {
        key: String,
        block_count: u64,
        layers: u64,
    },

    #[error("metadata key '{key}' is {embedding_length} but tensor 'token_embd.weight' has rows of {row} elements")]
    EmbeddingLengthMismatch {
        key: String,
        embedding_length: u64,
        row: u64,
    },

    #[error("metadata key 'split.no' is {index} but 'split.count' is {count}")]
    InvalidSplit { index: u64, count: u64 },

    // Hyper-parameters (src/gguf/hparams.rs). Text fields are boxed so the
    // error stays as small as it was (it travels inside StoreError and
    // HubError, which clippy's `result_large_err` watches).
    #[error("metadata key '{key}' is {value}, but it must be {expected}")]
    HyperParameterOutOfRange {
        key: String,
        value: Box<str>,
        expected: Box<str>,
    },

    #[error("metadata key '{key}' is {value}, but it must be {expected} ({reason})")]
    HyperParameterMismatch {
        key: Box<str>,
        value: u64,
        expected: Box<str>,
        reason: &'static str,
    },

    #[error("metadata key '{key}' has {length} entries, but the model has {layers} layers")]
    LayerArrayLength {
        key: String,
        length: u64,
        layers: u64,
    },

    #[error(
        "metadata key '{key}' is '{value}', which llama.cpp does not know (expected {allowed})"
    )]
    UnknownKeyValue {
        key: String,
        value: Box<str>,
        allowed: &'static str,
    },

    #[error("metadata key '{key}' is missing ({needed_by} needs it)")]
    MissingKey { key: String, needed_by: String },

    #[error("architecture '{architecture}' is not supported: {reason}")]
    UnsupportedArchitecture {
        architecture: String,
        reason: &'static str,
    },

    // Vocabulary (src/gguf/vocab.rs).
    #[error("metadata key '{key}'{} is not valid UTF-8", element_suffix(*.index))]
    StringNotUtf8 { key: String, index: Option<u64> },

    #[error("token {index} '{text}' duplicates token {first} (llama.cpp's vocabulary needs unique token strings)")]
    DuplicateToken {
        index: u64,
        first: u64,
        text: String,
    },

    #[error("tokenizer '{tokenizer}' is not supported: {reason}")]
    UnsupportedTokenizer {
        tokenizer: String,
        reason: &'static str,
    },

    #[error("the vocabulary has no byte token <0x{byte:02X}>, which the '{tokenizer}' tokenizer falls back to for text it has no token for")]
    MissingByteToken { byte: u8, tokenizer: String },

    #[error("token {index} '{text}' is marked as a byte token, which the '{tokenizer}' tokenizer cannot decode")]
    ByteTokenNotAllowed {
        index: u64,
        text: String,
        tokenizer: String,
    },

    #[error(
        "the '{tokenizer}' tokenizer adds {} {token} token, but {reason}",
        article(token)
    )]
    MissingSpecialToken {
        tokenizer: String,
        token: &'static str,
        reason: Box<str>,
    },

    #[error("metadata key 'tokenizer.ggml.merges' is missing (the '{tokenizer}' tokenizer needs its BPE merges)")]
    MissingMerges { tokenizer: String },

    #[error("merge {index} '{text}' is not two token strings separated by one space")]
    BadMerge { index: u64, text: String },

    #[error("metadata key '{key}' element {index} is {value}, but scores must be numbers")]
    BadScore { key: String, index: u64, value: f32 },

    #[error("the vocabulary is empty")]
    EmptyVocabulary,

    #[error("metadata key 'tokenizer.ggml.precompiled_charsmap' is malformed: {reason}")]
    BadCharsmap { reason: &'static str },

    #[error("the '{tokenizer}' tokenizer cannot be built safely from this vocabulary: {reason}")]
    UnusableVocabulary { tokenizer: String, reason: Box<str> },

    #[error("tensor '{name}' has {rows} rows but the vocabulary has {vocab_size} tokens")]
    EmbeddingRowsMismatch {
        name: String,
        rows: u64,
        vocab_size: u64,
    },

    // Tensor types (src/gguf/tensor_types.rs).
    #[error("tensor '{name}' has type {ggml_type}, but {} must be {} ({})", rule.role, rule.allowed, rule.reason)]
    TensorTypeNotAllowed {
        name: String,
        ggml_type: GgmlType,
        rule: &'static TypeRule,
    },

    #[error("tensor '{name}' is missing ({architecture} models need it)")]
    MissingTensor { name: String, architecture: String },

    #[error("tensor '{name}' has shape {found:?}, but the model's hyper-parameters make it {expected:?}")]
    TensorShapeMismatch {
        name: String,
        found: Box<[u64]>,
        expected: Box<[u64]>,
    },

    // Split sets (src/gguf/split.rs).
    #[error("{} is part {} of a {count}-part split model: open its first part, {}", path.display(), index + 1, first.display())]
    NotFirstSplitPart {
        path: PathBuf,
        index: u64,
        count: u64,
        first: Box<Path>,
    },

    #[error("{} is the first part of a {count}-part split model, so its name must end in '{suffix}'", path.display())]
    SplitFileName {
        path: PathBuf,
        count: u64,
        suffix: String,
    },

    #[error("split part {part} of {count} ({}): {problem}", path.display())]
    SplitPart {
        part: u64,
        count: u64,
        path: PathBuf,
        problem: Box<GgufError>,
    },

    #[error("split part {part} of {count} ({}) is not part of this model: {difference}", path.display())]
    ForeignSplitPart {
        part: u64,
        count: u64,
        path: Box<Path>,
        /// What differs: "'split.count' is 2, expected 3".
        difference: Box<str>,
    },

    #[error("tensor '{name}' is in split parts {first} and {second}")]
    DuplicateSplitTensor {
        name: String,
        first: u64,
        second: u64,
    },

    #[error("the split model has {found} tensors but 'split.tensors.count' is {declared}")]
    SplitTensorCount { declared: u64, found: u64 },
}

/// " element N" when a string array's element is meant, else "".
/// "an" before a token name read letter by letter from a vowel ("an EOS",
/// "an UNK"), "a" otherwise ("a BOS").
fn article(name: &str) -> &'static str {
    match name.chars().next() {
        Some('A' | 'E' | 'I' | 'O' | 'U') => "an",
        _ => "a",
    }
}

fn element_suffix(index: Option<u64>) -> String {
    index.map_or_else(String::new, |index| format!(" element {index}"))
}

/// What a tensor's role demands of its type, with the reason, for
/// [`GgufError::TensorTypeNotAllowed`] (see `tensor_types.rs`).
#[derive(Debug, PartialEq, Eq)]
pub struct TypeRule {
    /// "a norm, bias or other 1-D tensor".
    pub role: &'static str,
    /// "F32".
    pub allowed: &'static str,
    /// Why: the ggml kernel that has no other type.
    pub reason: &'static str,
}

/// Longest name or key (in characters) quoted in an error message.
const MAX_QUOTED_CHARS: usize = 96;

/// `text` made safe to print on one line: control characters, quotes and
/// backslashes escaped, cut to a readable length.
pub fn printable(text: &str) -> String {
    let mut quoted = String::new();
    for (index, character) in text.chars().enumerate() {
        if index == MAX_QUOTED_CHARS {
            quoted.push('…');
            break;
        }
        quoted.extend(character.escape_debug());
    }
    quoted
}

/// Bytes as space-separated lowercase hex ("46 55 47 47").
fn hex_bytes(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}
