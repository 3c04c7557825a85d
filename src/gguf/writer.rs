//! A small GGUF writer for tests, seed corpora and the fuzz round-trip. It
//! writes what it is told, valid or not, so tests can build hostile files;
//! tensor data is written as zeros. Not for writing models.

use super::validate::align_up;
use super::{GgmlType, GgufFile, Value, DEFAULT_ALIGNMENT, MAX_ALIGNMENT};

/// Most tensor data [`GgufBuilder::to_bytes`] writes: a hostile descriptor
/// that claims more gets a short (truncated) file instead of an allocation
/// that size.
pub const MAX_GENERATED_DATA: u64 = 64 << 20;

/// A tensor descriptor as written: any type id, any shape, any offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dimensions: Vec<u64>,
    pub type_id: u32,
    /// Offset from the start of tensor data; `None` packs the tensor right
    /// after the previous one, aligned.
    pub offset: Option<u64>,
}

impl TensorSpec {
    /// Bytes of data, or 0 for an unknown type or an overflowing shape.
    fn byte_size(&self) -> u64 {
        let elements = self
            .dimensions
            .iter()
            .try_fold(1u64, |product, &size| product.checked_mul(size));
        GgmlType::from_id(self.type_id)
            .zip(elements)
            .and_then(|(ggml_type, elements)| ggml_type.byte_size(elements))
            .unwrap_or(0)
    }
}

/// Builds a GGUF file in memory.
#[derive(Clone, Debug)]
pub struct GgufBuilder {
    version: u32,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorSpec>,
    data_len: Option<u64>,
}

impl Default for GgufBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufBuilder {
    /// An empty version 3 file.
    pub fn new() -> Self {
        Self {
            version: 3,
            metadata: Vec::new(),
            tensors: Vec::new(),
            data_len: None,
        }
    }

    /// The same header, metadata and tensor table as `file`.
    pub fn from_file(file: &GgufFile) -> Self {
        let tensors = file
            .tensors
            .iter()
            .map(|tensor| TensorSpec {
                name: tensor.name.clone(),
                dimensions: tensor.dimensions.clone(),
                type_id: tensor.ggml_type.id(),
                offset: Some(tensor.offset),
            })
            .collect();
        Self {
            version: file.version,
            metadata: file.metadata.clone(),
            tensors,
            data_len: None,
        }
    }

    pub fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// Adds a metadata entry (duplicates are kept, in order).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// Replaces the value of every entry named `key`, or adds one.
    pub fn set_metadata(mut self, key: &str, value: impl Into<Value>) -> Self {
        let value = value.into();
        let mut found = false;
        for (existing_key, existing_value) in &mut self.metadata {
            if existing_key == key {
                *existing_value = value.clone();
                found = true;
            }
        }
        if !found {
            self.metadata.push((key.to_owned(), value));
        }
        self
    }

    /// Removes every entry named `key`.
    pub fn remove_metadata(mut self, key: &str) -> Self {
        self.metadata
            .retain(|(existing_key, _)| existing_key != key);
        self
    }

    /// Adds a tensor packed after the previous one.
    pub fn tensor(self, name: impl Into<String>, ggml_type: GgmlType, dimensions: &[u64]) -> Self {
        self.tensor_spec(TensorSpec {
            name: name.into(),
            dimensions: dimensions.to_vec(),
            type_id: ggml_type.id(),
            offset: None,
        })
    }

    /// Writes exactly `data_len` bytes of tensor data instead of enough for
    /// every tensor: for descriptors that claim more than a test should write.
    pub fn data_len(mut self, data_len: u64) -> Self {
        self.data_len = Some(data_len);
        self
    }

    pub fn tensor_spec(mut self, spec: TensorSpec) -> Self {
        self.tensors.push(spec);
        self
    }

    /// Changes the tensor named `name` (no-op when there is none).
    pub fn edit_tensor(mut self, name: &str, edit: impl FnOnce(&mut TensorSpec)) -> Self {
        if let Some(spec) = self.tensors.iter_mut().find(|spec| spec.name == name) {
            edit(spec);
        }
        self
    }

    /// `general.alignment` when the reader would accept it, else the default.
    fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find_map(|(key, value)| match value {
                Value::U32(alignment)
                    if key == "general.alignment"
                        && alignment.is_power_of_two()
                        && u64::from(*alignment) <= MAX_ALIGNMENT =>
                {
                    Some(u64::from(*alignment))
                }
                _ => None,
            })
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// Tensor offsets with packed tensors placed, in list order.
    fn placed_offsets(&self) -> Vec<u64> {
        let alignment = self.alignment();
        let mut next = 0u64;
        self.tensors
            .iter()
            .map(|spec| {
                let offset = spec.offset.unwrap_or_else(|| align_up(next, alignment));
                next = offset.saturating_add(spec.byte_size());
                offset
            })
            .collect()
    }

    /// The file's bytes. Data is zeros up to the furthest tensor end (or
    /// [`data_len`](Self::data_len) bytes, at most [`MAX_GENERATED_DATA`]),
    /// with no padding after it, so cutting one byte off truncates the last
    /// tensor.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = RawGguf::header(
            self.version,
            self.tensors.len() as u64,
            self.metadata.len() as u64,
        );
        for (key, value) in &self.metadata {
            out = out.string(key).u32(value.value_type().id()).value(value);
        }
        let offsets = self.placed_offsets();
        for (spec, offset) in self.tensors.iter().zip(&offsets) {
            out = out.string(&spec.name).u32(spec.dimensions.len() as u32);
            for &size in &spec.dimensions {
                out = out.u64(size);
            }
            out = out.u32(spec.type_id).u64(*offset);
        }
        let mut bytes = out.into_bytes();
        if !self.tensors.is_empty() {
            let data_offset = align_up(bytes.len() as u64, self.alignment());
            let data_end = self.data_len.unwrap_or_else(|| {
                self.tensors
                    .iter()
                    .zip(&offsets)
                    .map(|(spec, offset)| offset.saturating_add(spec.byte_size()))
                    .max()
                    .unwrap_or(0)
            });
            let data_end = data_end.min(MAX_GENERATED_DATA);
            let file_len = data_offset.saturating_add(data_end);
            bytes.resize(usize::try_from(file_len).unwrap_or(usize::MAX), 0);
        }
        bytes
    }
}

/// Little-endian GGUF primitives, for files no builder would make.
#[derive(Clone, Debug, Default)]
pub struct RawGguf {
    bytes: Vec<u8>,
}

impl RawGguf {
    pub fn new() -> Self {
        Self::default()
    }

    /// Magic, version and the two counts.
    pub fn header(version: u32, tensor_count: u64, metadata_count: u64) -> Self {
        Self::new()
            .bytes(b"GGUF")
            .u32(version)
            .u64(tensor_count)
            .u64(metadata_count)
    }

    pub fn bytes(mut self, bytes: &[u8]) -> Self {
        self.bytes.extend_from_slice(bytes);
        self
    }

    pub fn u32(self, value: u32) -> Self {
        self.bytes(&value.to_le_bytes())
    }

    pub fn u64(self, value: u64) -> Self {
        self.bytes(&value.to_le_bytes())
    }

    /// A length-prefixed string.
    pub fn string(self, text: &str) -> Self {
        self.string_bytes(text.as_bytes())
    }

    pub fn string_bytes(self, bytes: &[u8]) -> Self {
        self.u64(bytes.len() as u64).bytes(bytes)
    }

    /// A metadata value without its type id (the caller wrote that).
    pub fn value(mut self, value: &Value) -> Self {
        let out = &mut self.bytes;
        match value {
            Value::U8(value) => out.extend(value.to_le_bytes()),
            Value::I8(value) => out.extend(value.to_le_bytes()),
            Value::U16(value) => out.extend(value.to_le_bytes()),
            Value::I16(value) => out.extend(value.to_le_bytes()),
            Value::U32(value) => out.extend(value.to_le_bytes()),
            Value::I32(value) => out.extend(value.to_le_bytes()),
            Value::F32(value) => out.extend(value.to_le_bytes()),
            Value::Bool(value) => out.push(u8::from(*value)),
            Value::String(text) => push_string(out, text),
            Value::U64(value) => out.extend(value.to_le_bytes()),
            Value::I64(value) => out.extend(value.to_le_bytes()),
            Value::F64(value) => out.extend(value.to_le_bytes()),
            Value::Array(array) => push_array(out, array),
        }
        self
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

fn push_string(out: &mut Vec<u8>, text: &str) {
    out.extend((text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn push_array(out: &mut Vec<u8>, array: &super::Array) {
    use super::Array;
    out.extend(array.element_type().id().to_le_bytes());
    out.extend((array.len() as u64).to_le_bytes());
    match array {
        Array::U8(values) => out.extend(values),
        Array::I8(values) => values
            .iter()
            .for_each(|value| out.extend(value.to_le_bytes())),
        Array::U16(values) => values
            .iter()
            .for_each(|value| out.extend(value.to_le_bytes())),
        Array::I16(values) => values
            .iter()
            .for_each(|value| out.extend(value.to_le_bytes())),
        Array::U32(values) => values
            .iter()
            .for_each(|value| out.extend(value.to_le_bytes())),
        Array::I32(values) => values
            .iter()
            .for_each(|value| out.extend(value.to_le_bytes())),
        Array::F32(values) => values
            .iter()
            .for_each(|value| out.extend(value.to_le_bytes())),
        Array::Bool(values) => values.iter().for_each(|&value| out.push(u8::from(value))),
        Array::String(values) => values.iter().for_each(|text| push_string(out, text)),
        Array::U64(values) => values
            .iter()
            .for_each(|value| out.extend(value.to_le_bytes())),
        Array::I64(values) => values
            .iter()
            .for_each(|value| out.extend(value.to_le_bytes())),
        Array::F64(values) => values
            .iter()
            .for_each(|value| out.extend(value.to_le_bytes())),
    }
}

/// A small valid llama-architecture model: a 5-token vocabulary, two layers,
/// Q4_0 weights. The base most hostile samples are made from.
pub fn tiny_model() -> GgufBuilder {
    const EMBEDDING: u64 = 32;
    GgufBuilder::new()
        .metadata("general.architecture", "llama")
        .metadata("general.name", "tiny")
        .metadata("general.license", "mit")
        .metadata("general.file_type", 2u32)
        .metadata("llama.context_length", 128u32)
        .metadata("llama.embedding_length", EMBEDDING as u32)
        .metadata("llama.block_count", 2u32)
        .metadata("tokenizer.ggml.model", "llama")
        .metadata(
            "tokenizer.ggml.tokens",
            vec!["<unk>", "<s>", "</s>", "<0x0A>", "a"],
        )
        .metadata("tokenizer.ggml.token_type", vec![2i32, 3, 3, 6, 1])
        .metadata("tokenizer.ggml.scores", vec![0f32; 5])
        .metadata("tokenizer.ggml.bos_token_id", 1u32)
        .metadata("tokenizer.ggml.eos_token_id", 2u32)
        .metadata("tokenizer.ggml.unknown_token_id", 0u32)
        .metadata(
            "tokenizer.chat_template",
            "{% for m in messages %}{{ m.content }}{% endfor %}",
        )
        .tensor("token_embd.weight", GgmlType::F32, &[EMBEDDING, 5])
        .tensor(
            "blk.0.attn_q.weight",
            GgmlType::Q4_0,
            &[EMBEDDING, EMBEDDING],
        )
        .tensor(
            "blk.1.attn_q.weight",
            GgmlType::Q4_0,
            &[EMBEDDING, EMBEDDING],
        )
        .tensor("output_norm.weight", GgmlType::F32, &[EMBEDDING])
}
