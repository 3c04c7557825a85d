//! olm's own GGUF reader and validator. It reads a model file's header,
//! metadata and tensor table (never the weights, never through mmap) and
//! refuses, with a typed [`GgufError`], anything that could make llama.cpp
//! crash, abort, run out of memory or read past the end of the file: every
//! model goes through [`inspect`] before llama.cpp sees it. The checks follow
//! llama.cpp's `ggml/src/gguf.cpp`, stricter where it is lenient.
//!
//! Owns: the GGUF format ([`parse`], [`inspect`]), the ggml type table
//! ([`GgmlType`]), a small writer for tests and fuzzing ([`writer`]) and
//! the hostile sample files of the test plan ([`samples`]).
//! Uses std and thiserror only: no llama.cpp and no other olm module, so the
//! fuzz crate can include this directory's source as is.

mod checked;
mod error;
mod reader;
pub mod samples;
mod types;
mod validate;
mod value;
pub mod writer;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

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
/// Largest `{arch}.block_count` (the deepest models today have a few hundred layers).
pub const MAX_BLOCK_COUNT: u64 = 65_536;
/// Largest `{arch}.embedding_length` (the widest models today use about 16k).
pub const MAX_EMBEDDING_LENGTH: u64 = 1 << 20;

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

/// Reads and validates the GGUF file at `path`: header, metadata and tensor
/// table, and that all tensor data lies inside the file. Reads only the
/// header part, without mmap; memory stays bounded by olm's limits.
pub fn inspect(path: &Path) -> Result<GgufFile, GgufError> {
    let open_error = |source| GgufError::Open {
        path: path.to_owned(),
        source,
    };
    // Check before opening: opening a FIFO would block.
    if !std::fs::metadata(path).map_err(open_error)?.is_file() {
        return Err(GgufError::NotAFile {
            path: path.to_owned(),
        });
    }
    let file = File::open(path).map_err(open_error)?;
    let metadata = file.metadata().map_err(open_error)?;
    if !metadata.is_file() {
        return Err(GgufError::NotAFile {
            path: path.to_owned(),
        });
    }
    parse(file, metadata.len())
}

/// Reads and validates a GGUF file of `file_len` bytes from `reader`, from its
/// start. [`inspect`] for anything but in-memory data.
pub fn parse(mut reader: impl Read + Seek, file_len: u64) -> Result<GgufFile, GgufError> {
    reader
        .seek(SeekFrom::Start(0))
        .map_err(|source| GgufError::Read { offset: 0, source })?;
    let mut source = reader::Source::new(BufReader::with_capacity(64 << 10, reader), file_len);
    let header = reader::read_header(&mut source)?;
    let metadata = reader::read_metadata(&mut source, header.metadata_count)?;
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

    /// Parts in a split model (`split.count`); 1 when not split. Only this
    /// part is validated: the other files are not opened.
    pub fn split_count(&self) -> u64 {
        self.get_u64("split.count").unwrap_or(1)
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
