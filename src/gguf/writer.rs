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

/// One metadata entry as written: a value, or a type id and raw payload
/// bytes (for what a [`Value`] cannot hold, such as strings that are not
/// valid UTF-8).
#[derive(Clone, Debug, PartialEq)]
enum Entry {
    Value(Value),
    Raw { type_id: u32, payload: Vec<u8> },
}

/// Builds a GGUF file in memory.
#[derive(Clone, Debug)]
pub struct GgufBuilder {
    version: u32,
    metadata: Vec<(String, Entry)>,
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
            metadata: file
                .metadata
                .iter()
                .map(|(key, value)| (key.clone(), Entry::Value(value.clone())))
                .collect(),
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
        self.metadata.push((key.into(), Entry::Value(value.into())));
        self
    }

    /// Replaces the value of every entry named `key`, or adds one.
    pub fn set_metadata(self, key: &str, value: impl Into<Value>) -> Self {
        self.set_entry(key, Entry::Value(value.into()))
    }

    /// Like [`set_metadata`](Self::set_metadata) with a value written as
    /// `type_id` followed by `payload`, byte for byte: for values a
    /// [`Value`] cannot hold (see [`raw_string_array`]).
    pub fn set_raw_metadata(self, key: &str, type_id: u32, payload: Vec<u8>) -> Self {
        self.set_entry(key, Entry::Raw { type_id, payload })
    }

    fn set_entry(mut self, key: &str, entry: Entry) -> Self {
        let mut found = false;
        for (existing_key, existing_entry) in &mut self.metadata {
            if existing_key == key {
                *existing_entry = entry.clone();
                found = true;
            }
        }
        if !found {
            self.metadata.push((key.to_owned(), entry));
        }
        self
    }

    /// The value of the first entry named `key` (`None` for a raw entry).
    pub fn get_metadata(&self, key: &str) -> Option<&Value> {
        self.metadata
            .iter()
            .find(|(existing_key, _)| existing_key == key)
            .and_then(|(_, entry)| match entry {
                Entry::Value(value) => Some(value),
                Entry::Raw { .. } => None,
            })
    }

    /// The metadata keys, in order.
    pub fn metadata_keys(&self) -> Vec<&str> {
        self.metadata.iter().map(|(key, _)| key.as_str()).collect()
    }

    /// The tensor descriptors, in order.
    pub fn tensor_specs(&self) -> &[TensorSpec] {
        &self.tensors
    }

    /// Removes the tensor named `name` (no-op when there is none).
    pub fn remove_tensor(mut self, name: &str) -> Self {
        self.tensors.retain(|spec| spec.name != name);
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
            .find_map(|(key, entry)| match entry {
                Entry::Value(Value::U32(alignment))
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
        for (key, entry) in &self.metadata {
            out = match entry {
                Entry::Value(value) => out.string(key).u32(value.value_type().id()).value(value),
                Entry::Raw { type_id, payload } => out.string(key).u32(*type_id).bytes(payload),
            };
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

/// The payload of an array of strings given as raw bytes (element type,
/// count, then each length-prefixed string), for
/// [`GgufBuilder::set_raw_metadata`] with type id 9 (array).
pub fn raw_string_array<T: AsRef<[u8]>>(items: &[T]) -> Vec<u8> {
    let mut out = RawGguf::new()
        .u32(super::ValueType::String.id())
        .u64(items.len() as u64);
    for item in items {
        out = out.string_bytes(item.as_ref());
    }
    out.into_bytes()
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

/// Shape of [`tiny_model`]: small enough to write hundreds of times in a
/// test, complete enough for llama.cpp to load it and generate.
pub mod tiny {
    /// `llama.embedding_length`: one Q4_0 block per row.
    pub const EMBEDDING: u64 = 32;
    /// `llama.block_count`.
    pub const LAYERS: u64 = 2;
    /// `llama.attention.head_count`.
    pub const HEADS: u64 = 4;
    /// `llama.attention.head_count_kv` (grouped-query attention).
    pub const KV_HEADS: u64 = 2;
    /// Elements per attention head (`EMBEDDING / HEADS`), also the rope dimension count.
    pub const HEAD_DIM: u64 = EMBEDDING / HEADS;
    /// `llama.feed_forward_length`.
    pub const FEED_FORWARD: u64 = 64;
    /// `llama.context_length`.
    pub const CONTEXT: u32 = 128;
    /// Control tokens first (`<unk>`, `<s>`, `</s>`), then the 256 byte
    /// tokens SentencePiece falls back to, then the words.
    pub const SPECIAL_TOKENS: [&str; 3] = ["<unk>", "<s>", "</s>"];
    /// Normal tokens after the byte tokens.
    pub const WORDS: [&str; 6] = ["\u{2581}", "a", "h", "i", "\u{2581}h", "\u{2581}hi"];
    /// Tokens in the vocabulary.
    pub const VOCAB_SIZE: u64 = (SPECIAL_TOKENS.len() + 256 + WORDS.len()) as u64;
    /// Index of the first byte token (`<0x00>`); `<0x0A>` is this + 10.
    pub const FIRST_BYTE_TOKEN: u64 = SPECIAL_TOKENS.len() as u64;
}

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const BYTE: i32 = 6;
}

/// The tokens of [`tiny_model`]: `<unk>`, `<s>`, `</s>`, `<0x00>`…`<0xFF>`, words.
pub fn tiny_tokens() -> Vec<String> {
    let bytes = (0..=255u8).map(|byte| format!("<0x{byte:02X}>"));
    tiny::SPECIAL_TOKENS
        .iter()
        .map(|&token| token.to_owned())
        .chain(bytes)
        .chain(tiny::WORDS.iter().map(|&word| word.to_owned()))
        .collect()
}

/// `tokenizer.ggml.token_type` of [`tiny_tokens`].
pub fn tiny_token_types() -> Vec<i32> {
    let words = tiny::WORDS.len();
    [
        token_type::UNKNOWN,
        token_type::CONTROL,
        token_type::CONTROL,
    ]
    .into_iter()
    .chain(std::iter::repeat_n(token_type::BYTE, 256))
    .chain(std::iter::repeat_n(token_type::NORMAL, words))
    .collect()
}

/// `tokenizer.ggml.scores` of [`tiny_tokens`]: longer words merge first.
fn tiny_scores() -> Vec<f32> {
    let specials_and_bytes = tiny::SPECIAL_TOKENS.len() + 256;
    std::iter::repeat_n(0f32, specials_and_bytes)
        .chain(
            tiny::WORDS
                .iter()
                .map(|word| -10.0 + word.chars().count() as f32),
        )
        .collect()
}

/// A small, complete llama-architecture model: every hyper-parameter and
/// tensor llama.cpp's `llama` loader requires, a SentencePiece ("llama")
/// vocabulary with all 256 byte tokens, Q4_0 matrices and F32 norms. Its
/// weights are zeros, so it loads and generates (nonsense) in milliseconds.
/// The base of most hostile samples and of the mutation tests.
pub fn tiny_model() -> GgufBuilder {
    tiny_model_for(TinyArchitecture::Llama)
}

/// The architectures [`tiny_model_for`] builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TinyArchitecture {
    Llama,
    /// Qwen 2 with a byte-level BPE ("gpt2") tokenizer and merges.
    Qwen2,
    Qwen3,
    Phi3,
    Gemma2,
    Gemma3,
}

impl TinyArchitecture {
    pub const ALL: [TinyArchitecture; 6] = [
        TinyArchitecture::Llama,
        TinyArchitecture::Qwen2,
        TinyArchitecture::Qwen3,
        TinyArchitecture::Phi3,
        TinyArchitecture::Gemma2,
        TinyArchitecture::Gemma3,
    ];

    /// `general.architecture`.
    pub fn name(self) -> &'static str {
        match self {
            TinyArchitecture::Llama => "llama",
            TinyArchitecture::Qwen2 => "qwen2",
            TinyArchitecture::Qwen3 => "qwen3",
            TinyArchitecture::Phi3 => "phi3",
            TinyArchitecture::Gemma2 => "gemma2",
            TinyArchitecture::Gemma3 => "gemma3",
        }
    }

    /// Per-layer norms besides `attn_norm` and `ffn_norm`, each `{EMBEDDING}`
    /// or (query/key norms) `{HEAD_DIM}`, as the architecture's
    /// `load_arch_tensors` requires them.
    fn extra_norms(self) -> &'static [&'static str] {
        match self {
            TinyArchitecture::Llama | TinyArchitecture::Qwen2 | TinyArchitecture::Phi3 => &[],
            TinyArchitecture::Qwen3 => &["attn_q_norm", "attn_k_norm"],
            TinyArchitecture::Gemma2 => &["post_attention_norm", "post_ffw_norm"],
            TinyArchitecture::Gemma3 => &[
                "attn_q_norm",
                "attn_k_norm",
                "post_attention_norm",
                "post_ffw_norm",
            ],
        }
    }
}

/// [`tiny_model`] in another covered architecture: the same sizes, the
/// keys and tensors that architecture's llama.cpp loader requires.
pub fn tiny_model_for(architecture: TinyArchitecture) -> GgufBuilder {
    use tiny::{EMBEDDING, FEED_FORWARD, HEAD_DIM, KV_HEADS};
    let arch = architecture.name();
    let key = |suffix: &str| format!("{arch}.{suffix}");
    let mut builder = GgufBuilder::new()
        .metadata("general.architecture", arch)
        .metadata("general.name", "tiny")
        .metadata("general.license", "mit")
        .metadata("general.file_type", 2u32)
        .metadata(key("context_length"), tiny::CONTEXT)
        .metadata(key("embedding_length"), EMBEDDING as u32)
        .metadata(key("block_count"), tiny::LAYERS as u32)
        .metadata(key("feed_forward_length"), FEED_FORWARD as u32)
        .metadata(key("attention.head_count"), tiny::HEADS as u32)
        .metadata(key("attention.head_count_kv"), KV_HEADS as u32)
        .metadata(key("attention.layer_norm_rms_epsilon"), 1e-5f32)
        .metadata(key("rope.freq_base"), 10_000f32)
        .metadata(key("rope.dimension_count"), HEAD_DIM as u32);
    builder = match architecture {
        TinyArchitecture::Gemma2 | TinyArchitecture::Gemma3 => builder
            .metadata(key("attention.key_length"), HEAD_DIM as u32)
            .metadata(key("attention.value_length"), HEAD_DIM as u32)
            .metadata(key("attention.sliding_window"), 4u32),
        _ => builder,
    };
    builder = if architecture == TinyArchitecture::Qwen2 {
        builder
            .metadata("tokenizer.ggml.model", "gpt2")
            .metadata("tokenizer.ggml.pre", "qwen2")
            .metadata("tokenizer.ggml.tokens", tiny_tokens())
            .metadata(
                "tokenizer.ggml.merges",
                vec!["\u{2581} h", "h i", "\u{2581}h i"],
            )
    } else {
        builder
            .metadata("tokenizer.ggml.model", "llama")
            .metadata("tokenizer.ggml.tokens", tiny_tokens())
            .metadata("tokenizer.ggml.token_type", tiny_token_types())
            .metadata("tokenizer.ggml.scores", tiny_scores())
    };
    builder = builder
        .metadata("tokenizer.ggml.bos_token_id", 1u32)
        .metadata("tokenizer.ggml.eos_token_id", 2u32)
        .metadata("tokenizer.ggml.unknown_token_id", 0u32)
        .metadata(
            "tokenizer.chat_template",
            "{% for m in messages %}{{ m.content }}{% endfor %}",
        )
        .tensor(
            "token_embd.weight",
            GgmlType::F32,
            &[EMBEDDING, tiny::VOCAB_SIZE],
        );
    let kv_width = HEAD_DIM * KV_HEADS;
    for layer in 0..tiny::LAYERS {
        let name = |role: &str| format!("blk.{layer}.{role}.weight");
        builder = builder
            .tensor(name("attn_norm"), GgmlType::F32, &[EMBEDDING])
            .tensor(name("attn_q"), GgmlType::Q4_0, &[EMBEDDING, EMBEDDING])
            .tensor(name("attn_k"), GgmlType::Q4_0, &[EMBEDDING, kv_width])
            .tensor(name("attn_v"), GgmlType::Q4_0, &[EMBEDDING, kv_width])
            .tensor(name("attn_output"), GgmlType::Q4_0, &[EMBEDDING, EMBEDDING])
            .tensor(name("ffn_norm"), GgmlType::F32, &[EMBEDDING]);
        for norm in architecture.extra_norms() {
            let width = if norm.starts_with("attn_") {
                HEAD_DIM
            } else {
                EMBEDDING
            };
            builder = builder.tensor(name(norm), GgmlType::F32, &[width]);
        }
        builder = if architecture == TinyArchitecture::Phi3 {
            // Phi-3 packs the gate and up projections into one `ffn_up`.
            builder.tensor(
                name("ffn_up"),
                GgmlType::Q4_0,
                &[EMBEDDING, 2 * FEED_FORWARD],
            )
        } else {
            builder
                .tensor(name("ffn_gate"), GgmlType::Q4_0, &[EMBEDDING, FEED_FORWARD])
                .tensor(name("ffn_up"), GgmlType::Q4_0, &[EMBEDDING, FEED_FORWARD])
        };
        builder = builder.tensor(name("ffn_down"), GgmlType::Q4_0, &[FEED_FORWARD, EMBEDDING]);
    }
    builder.tensor("output_norm.weight", GgmlType::F32, &[EMBEDDING])
}
