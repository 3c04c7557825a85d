//! olm's own GGUF reader and validator. It reads a model file's header,
//! metadata and tensor table (never the weights, never through mmap) and
//! refuses, with a typed [`GgufError`], anything that could make llama.cpp
//! crash, abort, run out of memory or read past the end of the file: every
//! model goes through [`inspect`] (or [`check_model`]) before llama.cpp sees
//! it. The container checks follow llama.cpp's `ggml/src/gguf.cpp`, stricter
//! where it is lenient; the value checks follow what llama.cpp's loader,
//! vocabulary and ggml's operators assert on (see [`hparams`], [`vocab`],
//! [`tensor_types`], [`split`]).
//!
//! Two levels:
//! - [`parse`] reads one file from any reader and checks the container and
//!   every value that is present (a key that is there must make sense).
//! - [`inspect`] / [`check_model`] open a file on disk and also require what
//!   llama.cpp needs to run the model: an architecture it knows, the keys
//!   and tensors it reads, a tokenizer olm can use, and every part of a
//!   split set, each checked and shown to belong to the same model.
//!
//! Owns: the GGUF format, the ggml type table ([`GgmlType`]), the rules
//! above, the [`CheckedModel`] proof type, a small writer for tests and
//! fuzzing ([`writer`]), a structure-aware mutator ([`mutate`]) and the
//! hostile sample files of the test plan ([`samples`]).
//! Uses std and thiserror only: no llama.cpp and no other olm module, so the
//! fuzz crate can include this directory's source as is.

mod arch;
mod arch_asserts;
mod checked;
mod error;
mod hparams;
mod keys;
pub mod mutate;
mod reader;
pub mod samples;
mod split;
mod tensor_shapes;
mod tensor_types;
mod tokenizer_work;
mod types;
mod validate;
mod value;
mod vocab;
pub mod writer;

#[cfg(test)]
pub(crate) mod tests;

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

pub use arch::{Coverage, COVERED_ARCHITECTURES};
pub use checked::{check_model, CheckedModel};
pub use error::GgufError;
pub use types::{file_type_name, GgmlType};
pub use value::{Array, Value, ValueType};

/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Largest accepted `general.alignment` (llama.cpp accepts any power of two).
pub const MAX_ALIGNMENT: u64 = 1 << 20;
/// Longest metadata string (llama.cpp allows 1 GiB).
pub const MAX_STRING_LENGTH: u64 = 16 << 20;
/// Longest metadata key, as the GGUF specification has it.
pub const MAX_KEY_LENGTH: u64 = (1 << 16) - 1;
/// Most elements in one metadata array (llama.cpp allows 2^30).
pub const MAX_ARRAY_LENGTH: u64 = 16 << 20;
/// Most memory all metadata may take once read.
pub const MAX_METADATA_BYTES: u64 = 128 << 20;
/// Most metadata entries in one file.
pub const MAX_METADATA_COUNT: u64 = 1 << 16;
/// Most tensors in one file.
pub const MAX_TENSOR_COUNT: u64 = 1 << 18;
/// Longest tensor name: ggml keeps names in a 64-byte buffer with a NUL.
pub const MAX_TENSOR_NAME_LENGTH: u64 = 63;
/// Most dimensions of a tensor (`GGML_MAX_DIMS`).
pub const MAX_DIMENSIONS: u32 = 4;
/// Longest single token in `tokenizer.ggml.tokens`.
pub const MAX_TOKEN_LENGTH: u64 = 64 << 10;
/// Most tokens in a vocabulary (the largest today have about 262k).
pub const MAX_VOCAB_SIZE: u64 = 4 << 20;
/// Largest `{arch}.block_count`: `LLAMA_MAX_LAYERS` (llama-hparams.h), which
/// llama.cpp asserts in `llama_model_base::load_hparams`
/// (`GGML_ASSERT(hparams.n_layer_all > 0 && hparams.n_layer_all <= LLAMA_MAX_LAYERS)`).
pub const MAX_BLOCK_COUNT: u64 = 512;
/// Largest `{arch}.embedding_length` (the widest models today use about 16k).
pub const MAX_EMBEDDING_LENGTH: u64 = 1 << 20;

/// Most parts in a split model. llama.cpp reads `split.count` as a `u16`;
/// olm opens and reads every part's header before loading, so it bounds the
/// count to keep that check within its time budget (the largest published
/// models come in a few dozen parts).
pub const MAX_SPLIT_COUNT: u64 = 1024;
/// Most metadata memory all parts after the first may take together (they
/// normally hold three `split.*` keys): with [`MAX_METADATA_BYTES`] for the
/// first part this bounds the memory and time of checking a split set.
pub const MAX_SPLIT_METADATA_BYTES: u64 = 64 << 20;

/// What one [`parse`] may read: the metadata memory and tensor count.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub metadata_bytes: u64,
    pub tensor_count: u64,
}

impl Limits {
    /// The limits of a single file.
    pub const FILE: Limits = Limits {
        metadata_bytes: MAX_METADATA_BYTES,
        tensor_count: MAX_TENSOR_COUNT,
    };
}

/// A metadata string whose bytes were not valid UTF-8: its value holds
/// U+FFFD in their place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NonUtf8String {
    pub key: String,
    /// The first bad element, when the value is an array of strings.
    pub index: Option<u64>,
}

/// A validated GGUF file's header, metadata and tensor table.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufFile {
    /// Format version: 2 or 3.
    pub version: u32,
    /// Alignment of tensor data: `general.alignment`, or 32.
    pub alignment: u64,
    /// Where tensor data starts, from the beginning of the file.
    pub data_offset: u64,
    /// Length of the file in bytes.
    pub file_size: u64,
    /// Metadata in file order; keys are unique.
    pub metadata: Vec<(String, Value)>,
    /// Where metadata strings were not valid UTF-8 (at most one entry per key).
    pub non_utf8: Vec<NonUtf8String>,
    /// Tensor descriptors in file order; names are unique.
    pub tensors: Vec<TensorInfo>,
}

/// One tensor's descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// `ne[0..n]`: the row length first, 1 to 4 entries, none zero.
    pub dimensions: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Where the data starts, from [`GgufFile::data_offset`].
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements (validated to fit an `i64`).
    pub fn element_count(&self) -> u64 {
        reader::element_count(&self.dimensions).unwrap_or(u64::MAX)
    }

    /// Bytes of data (validated to fit a `u64`).
    pub fn byte_size(&self) -> u64 {
        self.ggml_type
            .byte_size(self.element_count())
            .unwrap_or(u64::MAX)
    }
}

/// Reads and validates the GGUF model at `path` as llama.cpp will load it:
/// header, metadata and tensor table, all tensor data inside the file, the
/// values llama.cpp asserts on, what it needs to run the model, and every
/// part of a split set. Reads only headers, without mmap; memory and time
/// stay bounded by olm's limits. The first part's header on success;
/// [`check_model`] also gives the parts.
pub fn inspect(path: &Path) -> Result<GgufFile, GgufError> {
    check_model(path).map(CheckedModel::into_header)
}

/// Reads and validates a GGUF file of `file_len` bytes from `reader`, from its
/// start: the container and every value present. Not whether llama.cpp can
/// run it: [`inspect`] for a model file on disk.
pub fn parse(reader: impl Read + Seek, file_len: u64) -> Result<GgufFile, GgufError> {
    parse_with_limits(reader, file_len, &Limits::FILE)
}

/// [`parse`], then what llama.cpp needs to run the model in this one file
/// (its architecture, keys, tokenizer and tensors; split parts are not
/// opened): what [`inspect`] checks on a file that is not split, for
/// in-memory data.
pub fn parse_model(reader: impl Read + Seek, file_len: u64) -> Result<GgufFile, GgufError> {
    let file = parse(reader, file_len)?;
    validate::check_runnable(&file)?;
    validate::check_tensor_set(&file, &file.tensors)?;
    Ok(file)
}

pub(crate) fn parse_with_limits(
    mut reader: impl Read + Seek,
    file_len: u64,
    limits: &Limits,
) -> Result<GgufFile, GgufError> {
    reader
        .seek(SeekFrom::Start(0))
        .map_err(|source| GgufError::Read { offset: 0, source })?;
    let mut source = reader::Source::new(BufReader::with_capacity(64 << 10, reader), file_len);
    let header = reader::read_header(&mut source, limits)?;
    let reader::Metadata {
        entries: metadata,
        non_utf8,
    } = reader::read_metadata(&mut source, header.metadata_count, limits)?;
    let alignment = alignment(&metadata)?;
    let tensors = reader::read_tensor_infos(&mut source, header.tensor_count)?;
    let data_offset = if tensors.is_empty() {
        source.position()
    } else {
        validate::align_up(source.position(), alignment)
    };
    if data_offset > file_len {
        return Err(GgufError::Truncated {
            expected: data_offset,
            found: file_len,
        });
    }
    let file = GgufFile {
        version: header.version,
        alignment,
        data_offset,
        file_size: file_len,
        metadata,
        non_utf8,
        tensors,
    };
    validate::check_tensor_layout(&file)?;
    validate::check_metadata(&file)?;
    Ok(file)
}

/// `general.alignment`: a `u32` power of two up to [`MAX_ALIGNMENT`], or the default.
fn alignment(metadata: &[(String, Value)]) -> Result<u64, GgufError> {
    let Some((key, value)) = metadata.iter().find(|(key, _)| key == "general.alignment") else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let Value::U32(alignment) = *value else {
        return Err(GgufError::WrongType {
            key: key.clone(),
            expected: "u32",
            found: value.describe(),
        });
    };
    if !alignment.is_power_of_two() || u64::from(alignment) > MAX_ALIGNMENT {
        return Err(GgufError::InvalidAlignment { alignment });
    }
    Ok(u64::from(alignment))
}

impl GgufFile {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata
            .iter()
            .find(|(candidate, _)| candidate == key)
            .map(|(_, value)| value)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// A non-negative integer of any width.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    pub fn get_array(&self, key: &str) -> Option<&Array> {
        self.get(key)?.as_array()
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|tensor| tensor.name == name)
    }

    /// `general.architecture`: "llama", "gemma3", …
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// `general.name`.
    pub fn name(&self) -> Option<&str> {
        self.get_str("general.name")
    }

    /// `general.license`.
    pub fn license(&self) -> Option<&str> {
        self.get_str("general.license")
    }

    /// `tokenizer.chat_template`.
    pub fn chat_template(&self) -> Option<&str> {
        self.get_str("tokenizer.chat_template")
    }

    /// `{arch}.context_length`: the context the model was trained for
    /// (validated to fit a `u32`; olm sizes its own context).
    pub fn context_length(&self) -> Option<u64> {
        self.arch_u64("context_length")
    }

    /// `{arch}.embedding_length`.
    pub fn embedding_length(&self) -> Option<u64> {
        self.arch_u64("embedding_length")
    }

    /// `{arch}.block_count`: the number of layers.
    pub fn block_count(&self) -> Option<u64> {
        self.arch_u64("block_count")
    }

    fn arch_u64(&self, field: &str) -> Option<u64> {
        let key = format!("{}.{field}", self.architecture()?);
        self.get_u64(&key)
    }

    /// Number of tokens in `tokenizer.ggml.tokens`.
    pub fn vocab_size(&self) -> Option<u64> {
        let tokens = self.get_array("tokenizer.ggml.tokens")?.as_strings()?;
        Some(tokens.len() as u64)
    }

    /// `general.file_type`: the `llama_ftype` number.
    pub fn file_type(&self) -> Option<u64> {
        self.get_u64("general.file_type")
    }

    /// `general.file_type` by name: "Q4_K_M", "Q4_1", "F16", …
    pub fn file_type_name(&self) -> Option<String> {
        file_type_name(self.file_type()?).map(str::to_owned)
    }

    /// Parts in a split model (`split.count`); 1 when not split. [`parse`]
    /// checks this part only; [`inspect`] opens and checks the others.
    pub fn split_count(&self) -> u64 {
        self.get_u64("split.count").unwrap_or(1)
    }

    /// Where the string (or array of strings) under `key` was not valid
    /// UTF-8 in the file, if anywhere: the first bad element of an array.
    pub fn first_non_utf8(&self, key: &str) -> Option<&NonUtf8String> {
        self.non_utf8.iter().find(|bad| bad.key == key)
    }

    /// Sum of all tensors' element counts.
    pub fn parameter_count(&self) -> u64 {
        self.tensors.iter().fold(0, |total, tensor| {
            total.saturating_add(tensor.element_count())
        })
    }

    /// Sum of all tensors' data sizes in bytes.
    pub fn tensor_data_size(&self) -> u64 {
        self.tensors
            .iter()
            .fold(0, |total, tensor| total.saturating_add(tensor.byte_size()))
    }
}
