//! The hostile GGUF files of the test plan (T-A1…T-A6, T-A8 and T-G1 in
//! `security-tests.md`), valid ones, and split sets (T-G2), built in memory.
//! Unit tests parse them, integration tests run `olm` on them, and the fuzz
//! seed corpus is written from them. Files that must be large are described
//! by their first bytes and a length: the rest is zeros (a sparse file on
//! disk).

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use super::value::{Array, Value, ValueType};
use super::writer::{
    raw_string_array, tiny, tiny_model, tiny_model_for, tiny_token_types, tiny_tokens, token_type,
    GgufBuilder, RawGguf, TensorSpec, TinyArchitecture,
};
use super::{parse, parse_model, GgmlType, GgufError, GgufFile, MAX_TENSOR_COUNT};

/// Which check refuses a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// [`parse`]: the file itself is malformed or holds a bad value.
    File,
    /// Only [`parse_model`] / [`super::inspect`]: the file is well formed
    /// but llama.cpp could not run it (a missing key or tensor, an
    /// unknown architecture).
    Model,
}

/// One test file.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Short, file-name safe: "a1-bad-magic".
    pub name: &'static str,
    /// The test-plan case it belongs to: "T-A1".
    pub case: &'static str,
    /// The file's first bytes.
    pub bytes: Vec<u8>,
    /// The file's length; bytes past `bytes` are zeros.
    pub file_len: u64,
    /// A phrase the error message contains (empty for valid samples).
    pub expected: String,
    /// Which check refuses it.
    pub level: Level,
}

impl Sample {
    fn new(case: &'static str, name: &'static str, bytes: Vec<u8>, expected: &str) -> Self {
        let file_len = bytes.len() as u64;
        Self {
            name,
            case,
            bytes,
            file_len,
            expected: expected.to_owned(),
            level: Level::File,
        }
    }

    /// The same file, refused only at the model level.
    fn model_level(mut self) -> Self {
        self.level = Level::Model;
        self
    }

    /// The same first bytes in a longer file.
    fn with_len(mut self, file_len: u64) -> Self {
        self.file_len = file_len.max(self.bytes.len() as u64);
        self
    }

    /// Writes the file at `path`; the zeros after `bytes` are left sparse.
    pub fn write_to(&self, path: &Path) -> io::Result<()> {
        let mut file = File::create(path)?;
        file.write_all(&self.bytes)?;
        file.set_len(self.file_len)
    }

    /// Parses the sample from memory. Bytes past `bytes` read as missing,
    /// so only samples whose check fires first give the same error as on disk.
    pub fn parse(&self) -> Result<GgufFile, GgufError> {
        parse(io::Cursor::new(&self.bytes), self.file_len)
    }

    /// Checks the sample from memory as a model, as [`super::inspect`] does
    /// for a file that is not split.
    pub fn check(&self) -> Result<GgufFile, GgufError> {
        parse_model(io::Cursor::new(&self.bytes), self.file_len)
    }
}

/// Every hostile sample; each must be refused.
pub fn hostile() -> Vec<Sample> {
    [
        header(),
        metadata(),
        alignment(),
        tensors(),
        tensor_data(),
        vocabulary(),
        model_shape(),
        hyper_parameters(),
        vocabularies_llama_cpp_cannot_use(),
        tensor_types(),
        model_requirements(),
    ]
    .concat()
}

/// A hostile sample that llama.cpp itself does not refuse cleanly: it
/// aborts the process in `GGML_ASSERT(hparams.n_layer_all > 0 &&
/// hparams.n_layer_all <= LLAMA_MAX_LAYERS)` while loading. olm's validator
/// refuses it first; tests switch that check off to prove that the abort
/// stays inside a server's worker process (T-E5).
pub fn llama_cpp_crasher() -> Sample {
    let mut samples = model_shape();
    let index = samples
        .iter()
        .position(|sample| sample.name == "a8-block-count-100000")
        .unwrap_or(0);
    samples.swap_remove(index)
}

/// Valid files that exercise limits, splits and old versions; each must
/// parse, and those named `valid-tiny*` are complete models that
/// [`Sample::check`] accepts.
pub fn valid() -> Vec<Sample> {
    let valid = |name, builder: GgufBuilder| Sample::new("valid", name, builder.to_bytes(), "");
    let mut samples = vec![
        valid("valid-tiny", tiny_model()),
        valid("valid-version-2", tiny_model().version(2)),
        valid(
            "valid-alignment-64",
            tiny_model().set_metadata("general.alignment", 64u32),
        ),
        // T-A8: a large trained context is olm's to clamp, not an error.
        valid(
            "valid-context-2^31",
            tiny_model().set_metadata("llama.context_length", 1u32 << 31),
        ),
        valid(
            "valid-split-first-part",
            tiny_model()
                .metadata("split.no", 0u16)
                .metadata("split.count", 3u16)
                .metadata("split.tensors.count", 12i32),
        ),
        valid(
            "valid-metadata-only",
            GgufBuilder::new()
                .metadata("general.architecture", "llama")
                .metadata("tokenizer.ggml.tokens", vec!["a", "b"]),
        ),
        valid("valid-empty", GgufBuilder::new()),
    ];
    samples.extend(
        [
            ("valid-tiny-qwen2", TinyArchitecture::Qwen2),
            ("valid-tiny-qwen3", TinyArchitecture::Qwen3),
            ("valid-tiny-phi3", TinyArchitecture::Phi3),
            ("valid-tiny-gemma2", TinyArchitecture::Gemma2),
            ("valid-tiny-gemma3", TinyArchitecture::Gemma3),
        ]
        .map(|(name, architecture)| valid(name, tiny_model_for(architecture))),
    );
    // Tokenizers with fewer defaults than llama.cpp's SentencePiece: each
    // with the ids it needs in the file.
    samples.extend([
        valid("valid-tiny-wordpiece", wordpiece()),
        valid("valid-tiny-small-wordpiece", small_wordpiece()),
        valid(
            "valid-tiny-gemma4-bpe",
            tiny_model()
                .set_metadata("tokenizer.ggml.model", "gemma4")
                .set_metadata(
                    "tokenizer.ggml.merges",
                    vec!["\u{2581} h", "h i", "\u{2581}h i"],
                ),
        ),
    ]);
    samples
}

fn tiny_bytes() -> Vec<u8> {
    tiny_model().to_bytes()
}

/// A file holding one metadata entry: `key`, `type_id`, then `payload`.
fn one_entry(key: &str, type_id: u32, payload: RawGguf) -> Vec<u8> {
    RawGguf::header(3, 0, 1)
        .string(key)
        .u32(type_id)
        .bytes(&payload.into_bytes())
        .into_bytes()
}

fn header() -> Vec<Sample> {
    let case = |name, bytes, expected: &str| Sample::new("T-A1", name, bytes, expected);
    let with_version = |version| RawGguf::header(version, 0, 0).into_bytes();
    let mut tiny_cut = tiny_bytes();
    tiny_cut.truncate(10);
    let over_tensor_limit = MAX_TENSOR_COUNT + 1;
    vec![
        case("a1-empty", Vec::new(), "the file is empty"),
        case(
            "a1-magic-only",
            b"GGUF".to_vec(),
            "file truncated: expected 8 bytes, found 4",
        ),
        case(
            "a1-bad-magic",
            RawGguf::new()
                .bytes(b"FUGG")
                .u32(3)
                .u64(0)
                .u64(0)
                .into_bytes(),
            "bad magic 46 55 47 47",
        ),
        case(
            "a1-text-file",
            b"This is a text file, not a model.\n".to_vec(),
            "bad magic 54 68 69 73",
        ),
        case(
            "a1-version-0",
            with_version(0),
            "unsupported GGUF version 0",
        ),
        case(
            "a1-version-1",
            with_version(1),
            "unsupported GGUF version 1",
        ),
        case(
            "a1-version-4",
            with_version(4),
            "unsupported GGUF version 4",
        ),
        case("a1-big-endian", with_version(0x0300_0000), "big-endian"),
        case(
            "a1-tensor-count-max",
            RawGguf::header(3, u64::MAX, 0).into_bytes(),
            "tensor count 18446744073709551615 exceeds what the file can hold",
        ),
        case(
            "a1-metadata-count-max",
            RawGguf::header(3, 0, u64::MAX).into_bytes(),
            "metadata count 18446744073709551615 exceeds what the file can hold",
        ),
        case(
            "a1-tensor-count-over-limit",
            RawGguf::header(3, over_tensor_limit, 0).into_bytes(),
            "tensor count 262145 exceeds the limit",
        )
        .with_len(24 + over_tensor_limit * 64),
        case("a1-cut-in-header", tiny_cut, "file truncated"),
    ]
}

fn metadata() -> Vec<Sample> {
    let case = |name, bytes, expected: &str| Sample::new("T-A2", name, bytes, expected);
    const STRING: u32 = 8;
    const ARRAY: u32 = 9;
    let huge_string = 1u64 << 63;
    let over_string_limit = (16u64 << 20) + 1;
    let over_array_limit = (64u64 << 20) + 1;
    let string_array = |length| RawGguf::new().u32(STRING).u64(length);
    vec![
        case(
            "a2-string-length-2^63",
            one_entry("general.name", STRING, RawGguf::new().u64(huge_string)),
            "metadata key 'general.name': string length 9223372036854775808 exceeds the file size",
        ),
        case(
            "a2-key-length-2^63",
            RawGguf::header(3, 0, 1).u64(huge_string).into_bytes(),
            "metadata key #0: string length 9223372036854775808 exceeds the file size",
        )
        .with_len(1024),
        case(
            "a2-string-16MiB+1",
            one_entry(
                "general.name",
                STRING,
                RawGguf::new().u64(over_string_limit),
            ),
            "string length 16777217 exceeds the limit of 16777216 bytes",
        )
        .with_len(over_string_limit + 1024),
        case(
            "a2-string-array-64Mi+1-small-file",
            one_entry(
                "tokenizer.ggml.tokens",
                ARRAY,
                string_array(over_array_limit),
            ),
            "array of 67108865 elements exceeds the file size",
        )
        .with_len(1024),
        case(
            "a2-string-array-64Mi+1",
            one_entry(
                "tokenizer.ggml.tokens",
                ARRAY,
                string_array(over_array_limit),
            ),
            "array of 67108865 elements exceeds the limit of 16777216",
        )
        .with_len(over_array_limit * 8 + 1024),
        case(
            "a2-string-array-over-memory-limit",
            one_entry("tokenizer.ggml.tokens", ARRAY, string_array(12 << 20)),
            "metadata needs more than 134217728 bytes of memory",
        )
        .with_len((12 << 20) * 8 + 1024),
        case(
            "a2-u8-array-2^40",
            one_entry("general.data", ARRAY, RawGguf::new().u32(0).u64(1 << 40)),
            "array of 1099511627776 elements exceeds the file size",
        )
        .with_len(1024),
        case(
            "a2-empty-key",
            RawGguf::header(3, 0, 1)
                .string("")
                .u32(4)
                .u32(1)
                .into_bytes(),
            "metadata key #0 is empty",
        ),
        case(
            "a2-key-not-utf8",
            RawGguf::header(3, 0, 1)
                .string_bytes(b"general.\xffname")
                .u32(4)
                .u32(1)
                .into_bytes(),
            "metadata key #0 is not valid UTF-8",
        ),
        case(
            "a2-key-too-long",
            RawGguf::header(3, 0, 1)
                .string(&"k".repeat(1 << 16))
                .u32(4)
                .u32(1)
                .into_bytes(),
            "metadata key #0: string length 65536 exceeds the limit of 65535 bytes",
        ),
        case(
            "a2-duplicate-key",
            tiny_model().metadata("general.name", "again").to_bytes(),
            "duplicate metadata key 'general.name'",
        ),
        case(
            "a2-value-type-13",
            one_entry("general.name", 13, RawGguf::new().u32(0)),
            "metadata key 'general.name': unknown value type 13",
        ),
        case(
            "a2-array-element-type-13",
            one_entry("general.tags", ARRAY, RawGguf::new().u32(13).u64(1).u32(0)),
            "metadata key 'general.tags': unknown value type 13",
        ),
        case(
            "a2-nested-array",
            one_entry(
                "general.tags",
                ARRAY,
                RawGguf::new().u32(ARRAY).u64(1).u32(4).u64(0),
            ),
            "arrays of arrays are not supported",
        ),
        case(
            "a2-key-with-escapes",
            tiny_model()
                .metadata("evil\x1b[2J\nkey", "x")
                .metadata("evil\x1b[2J\nkey", "y")
                .to_bytes(),
            "duplicate metadata key 'evil\\u{1b}[2J\\nkey'",
        ),
    ]
}

fn alignment() -> Vec<Sample> {
    let case = |name, value: super::Value, expected: &str| {
        let bytes = tiny_model()
            .set_metadata("general.alignment", value)
            .to_bytes();
        Sample::new("T-A3", name, bytes, expected)
    };
    vec![
        case(
            "a3-alignment-0",
            0u32.into(),
            "general.alignment 0 is invalid",
        ),
        case(
            "a3-alignment-13",
            13u32.into(),
            "general.alignment 13 is invalid",
        ),
        case(
            "a3-alignment-2^31",
            0x8000_0000u32.into(),
            "general.alignment 2147483648 is invalid",
        ),
        case(
            "a3-alignment-int32",
            32i32.into(),
            "metadata key 'general.alignment' must be u32, found i32 32",
        ),
    ]
}

/// The tiny model with `blk.0.attn_q.weight` changed and its usual data.
fn edited_tensor(edit: impl FnOnce(&mut TensorSpec)) -> Vec<u8> {
    tiny_model()
        .edit_tensor("blk.0.attn_q.weight", edit)
        .data_len(tiny_model_data_len())
        .to_bytes()
}

fn tensors() -> Vec<Sample> {
    let case = |name, bytes, expected: &str| Sample::new("T-A4", name, bytes, expected);
    let layout = TinyLayout::new();
    let shape = |dimensions: &[u64]| {
        let dimensions = dimensions.to_vec();
        edited_tensor(move |spec| spec.dimensions = dimensions)
    };
    let type_id = |type_id| edited_tensor(move |spec| spec.type_id = type_id);
    vec![
        case(
            "a4-five-dimensions",
            shape(&[32, 32, 1, 1, 1]),
            "has 5 dimensions",
        ),
        case("a4-zero-dimensions", shape(&[]), "has 0 dimensions"),
        case("a4-zero-dimension", shape(&[32, 0]), "dimension 1 is zero"),
        case(
            "a4-product-overflow-2^63x2",
            shape(&[1 << 63, 2]),
            "dimension product overflows",
        ),
        case(
            "a4-product-overflow-i64max",
            shape(&[i64::MAX as u64, 2, 1, 1]),
            "dimension product overflows",
        ),
        case(
            "a4-byte-size-overflow",
            tiny_model()
                .edit_tensor("output_norm.weight", |spec| spec.dimensions = vec![1 << 62])
                .to_bytes(),
            "byte size overflows",
        ),
        // ggml-org/llama.cpp#18674: 2^42+1 rows; fits an i64 but not the file.
        case(
            "a4-rows-2^42+1",
            tiny_model()
                .edit_tensor("token_embd.weight", |spec| {
                    spec.dimensions = vec![32, (1 << 42) + 1]
                })
                .data_len(tiny_model_data_len())
                .to_bytes(),
            "file truncated",
        ),
        case(
            "a4-q4_0-row-31",
            shape(&[31, 32]),
            "row of 31 elements is not a multiple of the Q4_0 block size 32",
        ),
        case(
            "a4-type-9999",
            type_id(9999),
            "unsupported ggml type id 9999",
        ),
        case(
            "a4-type-negative",
            type_id(u32::MAX),
            "unsupported ggml type id -1",
        ),
        case(
            "a4-type-removed-q4_2",
            type_id(4),
            "unsupported ggml type id 4",
        ),
        case(
            "a4-type-removed-q4_0_4_4",
            type_id(31),
            "unsupported ggml type id 31",
        ),
        case(
            "a4-name-64-bytes",
            edited_tensor(|spec| spec.name = format!("blk.0.{}", "x".repeat(58))),
            "name is 64 bytes long (limit 63)",
        ),
        case(
            "a4-name-empty",
            edited_tensor(|spec| spec.name.clear()),
            "tensor #2 has an empty name",
        ),
        case(
            "a4-duplicate-name",
            tiny_model()
                .edit_tensor("blk.1.attn_q.weight", |spec| {
                    spec.name = "blk.0.attn_q.weight".into()
                })
                .to_bytes(),
            "duplicate tensor name 'blk.0.attn_q.weight'",
        ),
        case(
            "a4-offset-unaligned",
            tiny_model()
                .edit_tensor(LAST_TENSOR, |spec| {
                    spec.offset = Some(layout.offset(LAST_TENSOR) + 1)
                })
                .to_bytes(),
            &format!(
                "data offset {} is not a multiple of the alignment 32",
                layout.offset(LAST_TENSOR) + 1
            ),
        ),
    ]
}

fn tensor_data() -> Vec<Sample> {
    let case = |name, bytes, expected: &str| Sample::new("T-A5", name, bytes, expected);
    let tiny = tiny_bytes();
    let cut = |length: usize| tiny[..length.min(tiny.len())].to_vec();
    let with_offset = |tensor: &str, offset: u64| {
        tiny_model()
            .edit_tensor(tensor, |spec| spec.offset = Some(offset))
            .to_bytes()
    };
    let layout = TinyLayout::new();
    let data_offset = layout.data_offset;
    let last = layout.offset(LAST_TENSOR);
    vec![
        // CVE-2026-7482: the last tensor ends one byte past the end of the file.
        case(
            "a5-last-tensor-past-end",
            cut(tiny.len() - 1),
            "file truncated",
        ),
        case("a5-cut-at-half", cut(tiny.len() / 2), "file truncated"),
        case(
            "a5-cut-before-data",
            cut(data_offset as usize - 1),
            "file truncated",
        ),
        case(
            "a5-overlapping-tensors",
            with_offset(
                "blk.1.attn_q.weight",
                layout.offset("blk.1.attn_q.weight") - 32,
            ),
            "overlap",
        ),
        case(
            "a5-gap-between-tensors",
            with_offset(LAST_TENSOR, last + 32),
            &format!("should be {last}"),
        ),
        // The first two tensors swapped: packed, but not in list order.
        case(
            "a5-out-of-order",
            GgufBuilder::from_file(&layout.file)
                // blk.0.attn_norm (32 F32, 128 bytes) first, then the embedding.
                .edit_tensor("token_embd.weight", |spec| {
                    spec.offset = Some(tiny::EMBEDDING * 4)
                })
                .edit_tensor("blk.0.attn_norm.weight", |spec| spec.offset = Some(0))
                .data_len(layout.data_len)
                .to_bytes(),
            "should be 0",
        ),
        case(
            "a5-offset-overflow",
            tiny_model()
                .edit_tensor("output_norm.weight", |spec| {
                    spec.offset = Some(u64::MAX - 31)
                })
                .data_len(tiny_model_data_len())
                .to_bytes(),
            "is beyond any possible file size",
        ),
    ]
}

/// The last tensor of [`tiny_model`].
const LAST_TENSOR: &str = "output_norm.weight";

/// Where [`tiny_model`]'s tensor data lies, read back from its bytes.
struct TinyLayout {
    data_offset: u64,
    data_len: u64,
    file: GgufFile,
}

impl TinyLayout {
    fn new() -> Self {
        let bytes = tiny_bytes();
        let file = parse(io::Cursor::new(&bytes), bytes.len() as u64)
            .expect("the tiny model is a valid GGUF file");
        Self {
            data_offset: file.data_offset,
            data_len: bytes.len() as u64 - file.data_offset,
            file,
        }
    }

    /// The data offset of the tensor named `name`.
    fn offset(&self, name: &str) -> u64 {
        self.file
            .tensor(name)
            .map(|tensor| tensor.offset)
            .expect("the tiny model has this tensor")
    }
}

/// Bytes of tensor data in [`tiny_model`].
fn tiny_model_data_len() -> u64 {
    TinyLayout::new().data_len
}

/// [`tiny_model`] with token `index` replaced by `text`.
fn with_token(index: usize, text: &str) -> GgufBuilder {
    let mut tokens = tiny_tokens();
    tokens[index] = text.to_owned();
    tiny_model().set_metadata("tokenizer.ggml.tokens", tokens)
}

fn vocabulary() -> Vec<Sample> {
    let case = |name, builder: GgufBuilder, expected: &str| {
        Sample::new("T-A6", name, builder.to_bytes(), expected)
    };
    let big_token = (100u64 << 20) as usize;
    let vocab_size = tiny::VOCAB_SIZE;
    // The first byte token, <0x00>; byte tokens have token type 6.
    let byte_token = tiny::FIRST_BYTE_TOKEN as usize;
    vec![
        // ggml-org/llama.cpp#25475
        case(
            "a6-bos-out-of-range",
            tiny_model().set_metadata("tokenizer.ggml.bos_token_id", vocab_size as u32),
            &format!(
                "token id {vocab_size} is out of range for a vocabulary of {vocab_size} tokens"
            ),
        ),
        case(
            "a6-eos-out-of-range",
            tiny_model().set_metadata("tokenizer.ggml.eos_token_id", u32::MAX),
            "token id 4294967295 is out of range",
        ),
        case(
            "a6-unk-negative",
            tiny_model().set_metadata("tokenizer.ggml.unknown_token_id", -1i32),
            "token id -1 is out of range",
        ),
        case(
            "a6-eot-out-of-range",
            tiny_model().metadata("tokenizer.ggml.eot_token_id", 999u32),
            "token id 999 is out of range",
        ),
        // ggml-org/llama.cpp#14145
        case(
            "a6-tokens-shorter-than-vocab-size",
            tiny_model().metadata("llama.vocab_size", vocab_size as u32 + 1),
            &format!(
                "'llama.vocab_size' is {} but 'tokenizer.ggml.tokens' has {vocab_size} tokens",
                vocab_size + 1
            ),
        ),
        case(
            "a6-token-type-length",
            tiny_model().set_metadata("tokenizer.ggml.token_type", vec![1i32; 4]),
            &format!(
                "'tokenizer.ggml.token_type' has 4 entries but the vocabulary has {vocab_size} tokens"
            ),
        ),
        case(
            "a6-scores-length",
            tiny_model().set_metadata("tokenizer.ggml.scores", vec![0f32; 6]),
            "'tokenizer.ggml.scores' has 6 entries",
        ),
        case(
            "a6-token-type-wrong-type",
            tiny_model().set_metadata("tokenizer.ggml.token_type", vec![1f32; 5]),
            "must be an array of one number per token",
        ),
        case(
            "a6-tokens-wrong-type",
            tiny_model().set_metadata("tokenizer.ggml.tokens", vec![0u8; 5]),
            "'tokenizer.ggml.tokens' must be an array of strings",
        ),
        // ggml-org/llama.cpp#25969 (PLaMo-2 byte tokens)
        case(
            "a6-byte-token-negative",
            with_token(byte_token, "<0x-1>"),
            &format!("token {byte_token} '<0x-1>' is marked as a byte token"),
        ),
        case(
            "a6-byte-token-not-hex",
            with_token(byte_token, "<0xZZ>"),
            &format!("token {byte_token} '<0xZZ>' is marked as a byte token"),
        ),
        case(
            "a6-token-64KiB+1",
            with_token(byte_token + 1, &"a".repeat((64 << 10) + 1)),
            &format!("token {} is 65537 bytes long (limit 65536)", byte_token + 1),
        ),
        Sample::new(
            "T-A6",
            "a6-token-100MB",
            one_entry(
                "tokenizer.ggml.tokens",
                9,
                RawGguf::new().u32(8).u64(1).u64(big_token as u64),
            ),
            "string length 104857600 exceeds the limit",
        )
        .with_len(big_token as u64 + 1024),
    ]
}

fn model_shape() -> Vec<Sample> {
    let case = |name, builder: GgufBuilder, expected: &str| {
        Sample::new("T-A8", name, builder.to_bytes(), expected)
    };
    vec![
        case(
            "a8-block-count-100000",
            tiny_model().set_metadata("llama.block_count", 100_000u32),
            "'llama.block_count' is 100000, above the limit",
        ),
        case(
            "a8-block-count-above-layers",
            tiny_model().set_metadata("llama.block_count", 3u32),
            "'llama.block_count' is 3 but the file has tensors for 2 layers",
        ),
        case(
            "a8-embedding-length-2^30",
            tiny_model().set_metadata("llama.embedding_length", 1u32 << 30),
            "'llama.embedding_length' is 1073741824, above the limit",
        ),
        case(
            "a8-embedding-length-mismatch",
            tiny_model().set_metadata("llama.embedding_length", 64u32),
            "'llama.embedding_length' is 64 but tensor 'token_embd.weight' has rows of 32 elements",
        ),
        case(
            "a8-context-length-2^32",
            tiny_model().set_metadata("llama.context_length", 1u64 << 32),
            "'llama.context_length' is 4294967296, above the limit of 4294967295",
        ),
        case(
            "a8-block-count-string",
            tiny_model().set_metadata("llama.block_count", "2"),
            "'llama.block_count' must be a non-negative integer, found str",
        ),
        case(
            "a8-vocab-size-without-tokens",
            tiny_model()
                .remove_metadata("tokenizer.ggml.tokens")
                .remove_metadata("tokenizer.ggml.token_type")
                .remove_metadata("tokenizer.ggml.scores")
                .remove_metadata("tokenizer.ggml.bos_token_id")
                .remove_metadata("tokenizer.ggml.eos_token_id")
                .remove_metadata("tokenizer.ggml.unknown_token_id")
                .metadata("llama.vocab_size", 1u32 << 31),
            "'llama.vocab_size' is 2147483648, above the limit",
        ),
        case(
            "a8-architecture-not-string",
            tiny_model().set_metadata("general.architecture", 7u32),
            "'general.architecture' must be a string, found u32 7",
        ),
        case(
            "a8-split-index-out-of-range",
            tiny_model()
                .metadata("split.no", 3u16)
                .metadata("split.count", 3u16),
            "'split.no' is 3 but 'split.count' is 3",
        ),
        case(
            "a8-split-count-zero",
            tiny_model().metadata("split.count", 0u16),
            "'split.no' is 0 but 'split.count' is 0",
        ),
    ]
}

/// T-G1: hyper-parameters llama.cpp asserts on, or reads with a type of its
/// own (`hparams.rs`).
/// The tiny llama model under another architecture's name: its
/// `llama.*` keys renamed. Generic architectures that build the llama
/// graph load it.
pub fn tiny_model_as(architecture: &str) -> GgufBuilder {
    let llama = tiny_model();
    let keys: Vec<String> = llama
        .metadata_keys()
        .into_iter()
        .filter(|key| key.starts_with("llama."))
        .map(str::to_owned)
        .collect();
    let mut builder = llama
        .clone()
        .set_metadata("general.architecture", architecture);
    for key in keys {
        let value = llama.get_metadata(&key).cloned().unwrap_or(Value::U32(0));
        let renamed = format!("{architecture}.{}", &key["llama.".len()..]);
        builder = builder.remove_metadata(&key).set_metadata(&renamed, value);
    }
    builder
}

fn hyper_parameters() -> Vec<Sample> {
    let case = |name, builder: GgufBuilder, expected: &str| {
        Sample::new("T-G1", name, builder.to_bytes(), expected)
    };
    let set = |key: &str, value: Value| tiny_model().set_metadata(key, value);
    vec![
        // ggml_set_rows: GGML_ASSERT(a->ne[0] == b->ne[0]) at the first
        // decode, the KV cache row of layer 1 narrower than its keys.
        case(
            "g1-generic-kv-heads-per-layer",
            tiny_model_as("smollm3").set_metadata(
                "smollm3.attention.head_count_kv",
                vec![tiny::KV_HEADS as u32, 1],
            ),
            "tensor 'blk.1.attn_k.weight' has shape",
        )
        .model_level(),
        // models/nanbeige.cpp load_arch_hparams: GGML_ASSERT(n_loops_u >= 1),
        // one of the asserts of single architectures' loaders (arch_asserts.rs).
        case(
            "g1-arch-assert-nanbeige-loops",
            tiny_model_as("nanbeige").set_metadata("nanbeige.num_loops", 0u32),
            "'nanbeige.num_loops' is 0, but it must be at least 1",
        ),
        // ggml-cpu/ops.cpp rope: GGML_ASSERT(sections[0] > 0 || ...)
        case(
            "g1-mrope-without-sections",
            tiny_model_as("paddleocr"),
            "'paddleocr.rope.dimension_sections' is missing",
        ),
        case(
            "g1-mrope-sections-only-last",
            tiny_model_as("glm4").set_metadata(
                "glm4.rope.dimension_sections",
                vec![0u32, 0, 0, 8],
            ),
            "one of the first three sections above 0",
        ),
        // llama-model.cpp load_hparams: GGML_ASSERT(hparams.n_layer_all > 0 ...)
        case(
            "g1-block-count-zero",
            set("llama.block_count", Value::U32(0)),
            "'llama.block_count' is 0, but it must be at least 1",
        ),
        case(
            "g1-context-length-zero",
            set("llama.context_length", Value::U32(0)),
            "'llama.context_length' is 0, but it must be at least 1",
        ),
        // ggml-cpu/ops.cpp rms_norm: GGML_ASSERT(eps >= 0.0f)
        case(
            "g1-rms-epsilon-nan",
            set("llama.attention.layer_norm_rms_epsilon", Value::F32(f32::NAN)),
            "'llama.attention.layer_norm_rms_epsilon' is NaN, but it must be a finite number above 0",
        ),
        case(
            "g1-rms-epsilon-negative",
            set("llama.attention.layer_norm_rms_epsilon", Value::F32(-1e-5)),
            "'llama.attention.layer_norm_rms_epsilon' is -0.00001, but it must be a finite number above 0",
        ),
        case(
            "g1-rms-epsilon-zero",
            set("llama.attention.layer_norm_rms_epsilon", Value::F32(0.0)),
            "'llama.attention.layer_norm_rms_epsilon' is 0, but it must be a finite number above 0",
        ),
        case(
            "g1-rope-freq-base-infinite",
            set("llama.rope.freq_base", Value::F32(f32::INFINITY)),
            "'llama.rope.freq_base' is inf, but it must be a finite number above 0",
        ),
        case(
            "g1-rope-scaling-factor-negative",
            set("llama.rope.scaling.factor", Value::F32(-2.0)),
            "'llama.rope.scaling.factor' is -2, but it must be a finite number, 0 or more",
        ),
        // llama-model-loader.cpp GKV::get_kv: "key ... has wrong type"
        case(
            "g1-epsilon-as-string",
            set("llama.attention.layer_norm_rms_epsilon", Value::from("1e-5")),
            "'llama.attention.layer_norm_rms_epsilon' must be f32, found str",
        ),
        case(
            "g1-head-count-as-u64",
            set("llama.attention.head_count", Value::U64(4)),
            "'llama.attention.head_count' must be u32, or an array of u32 with one entry per layer, found u64 4",
        ),
        case(
            "g1-context-length-as-i32",
            set("llama.context_length", Value::I32(128)),
            "'llama.context_length' must be u32, found i32 128",
        ),
        case(
            "g1-head-count-zero",
            set("llama.attention.head_count", Value::U32(0)),
            "'llama.attention.head_count' is 0, but it must be at least 1 for every layer",
        ),
        case(
            "g1-feed-forward-zero-in-one-layer",
            set("llama.feed_forward_length", Value::from(vec![64u32, 0])),
            "'llama.feed_forward_length' is 0, but it must be at least 1 for every layer",
        ),
        // get_key_or_arr: "key ... has wrong array length"
        case(
            "g1-head-count-array-length",
            set("llama.attention.head_count", Value::from(vec![4u32; 3])),
            "'llama.attention.head_count' has 3 entries, but the model has 2 layers",
        ),
        // ggml.c ggml_can_mul_mat: t1->ne[2] % t0->ne[2] == 0
        case(
            "g1-kv-heads-not-a-divisor",
            set("llama.attention.head_count_kv", Value::U32(3)),
            "'llama.attention.head_count_kv' is 3, but it must be a divisor of 'llama.attention.head_count' (4) for layer 0",
        ),
        // ggml.c ggml_set_rows: GGML_ASSERT(a->ne[0] == b->ne[0]), found by
        // the mutation test: K/V tensors are shaped by layer 0's count, the
        // KV cache by each layer's own.
        case(
            "g1-kv-heads-differ-per-layer",
            set("llama.attention.head_count_kv", Value::from(vec![2u32, 1])),
            "'llama.attention.head_count_kv' is 1, but it must be 2 for layer 1, as for layer 0",
        ),
        case(
            "g1-gemma3-sliding-window-head-size",
            tiny_model_for(TinyArchitecture::Gemma3)
                .set_metadata("gemma3.attention.key_length_swa", Value::U32(16)),
            "'gemma3.attention.key_length_swa' is 16, but it must be the head size, 8",
        ),
        // models/llama.cpp: GGML_ASSERT(n_embd_head == n_rot)
        case(
            "g1-rope-dimensions-not-head-size",
            set("llama.rope.dimension_count", Value::U32(6)),
            "'llama.rope.dimension_count' is 6, but it must be the head size, 8",
        ),
        case(
            "g1-value-length-not-key-length",
            set("llama.attention.value_length", Value::U32(16)),
            "'llama.attention.value_length' is 16, but it must be the key head size, 8",
        ),
        case(
            "g1-heads-do-not-divide-embedding",
            set("llama.attention.head_count", Value::U32(3))
                .set_metadata("llama.attention.head_count_kv", Value::U32(3)),
            "'llama.attention.head_count' is 3, but it must be a divisor of 'llama.embedding_length' (32)",
        ),
        // load_hparams: GGML_ASSERT(rope_scaling_type_train != UNSPECIFIED)
        case(
            "g1-rope-scaling-type-unknown",
            set("llama.rope.scaling.type", Value::from("dynamic")),
            "'llama.rope.scaling.type' is 'dynamic', which llama.cpp does not know",
        ),
        // load_hparams: GGML_ASSERT(n_expert_used_max <= hparams.n_expert)
        case(
            "g1-experts-used-without-experts",
            set("llama.expert_used_count", Value::U32(2)),
            "'llama.expert_used_count' is 2, but it must be at most 'llama.expert_count' (0)",
        ),
        // load_hparams: GGML_ASSERT(n_expert_used_max > 0)
        case(
            "g1-experts-none-used",
            set("llama.expert_count", Value::U32(8)),
            "'llama.expert_used_count' is 0, but it must be at least 1 in a model with experts",
        ),
        case(
            "g1-expert-count-over-limit",
            set("llama.expert_count", Value::U32(2000)),
            "'llama.expert_count' is 2000, but it must be at most 1024",
        ),
        // load_hparams: GGML_ASSERT(hparams.n_layer_nextn <= hparams.n_layer_all)
        case(
            "g1-next-token-layers-over-block-count",
            set("llama.nextn_predict_layers", Value::U32(3)),
            "'llama.nextn_predict_layers' is 3, but it must be at most the block count (2)",
        ),
        // llama-graph.cpp build_pooling: GGML_ABORT("unknown pooling type")
        case(
            "g1-pooling-type-unknown",
            set("llama.pooling_type", Value::U32(9)),
            "'llama.pooling_type' is 9, but it must be a pooling type from 0 to 4",
        ),
        // ggml-cpu/ops.cpp rope: an endless loop with n_dims == 0 (a hang,
        // found by the gguf_llama fuzz target; gemma2 does not tie rope to the
        // head size, so only this rule stands in the way).
        case(
            "g1-rope-dimensions-zero",
            tiny_model_for(TinyArchitecture::Gemma2)
                .set_metadata("gemma2.rope.dimension_count", Value::U32(0)),
            "'gemma2.rope.dimension_count' is 0, but it must be at least 2",
        ),
        // llama-model.cpp create_memory: GGML_ASSERT(hparams.is_swa_any()),
        // found by the mutation fuzzing.
        case(
            "g1-no-sliding-window-layer",
            tiny_model_for(TinyArchitecture::Gemma3)
                .set_metadata("gemma3.attention.sliding_window_pattern", Value::U32(1)),
            "'gemma3.attention.sliding_window_pattern' is u32 1, but it must be a pattern that makes at least one layer a sliding-window layer",
        ),
        case(
            "g1-gemma2-softcap-zero",
            tiny_model_for(TinyArchitecture::Gemma2)
                .set_metadata("gemma2.final_logit_softcapping", Value::F32(0.0)),
            "'gemma2.final_logit_softcapping' is 0, but it must be above 0",
        ),
    ]
}

/// [`tiny_model`] with a WordPiece ("bert") tokenizer: its byte tokens
/// made normal tokens, as WordPiece has none.
fn wordpiece() -> GgufBuilder {
    let types: Vec<i32> = tiny_token_types()
        .into_iter()
        .map(|kind| match kind {
            token_type::BYTE => token_type::NORMAL,
            other => other,
        })
        .collect();
    tiny_model()
        .set_metadata("tokenizer.ggml.model", "bert")
        .set_metadata("tokenizer.ggml.token_type", types)
        .set_metadata("tokenizer.ggml.seperator_token_id", 2u32)
}

/// [`wordpiece`] without the byte tokens: 9 tokens, fewer than
/// WordPiece's default unknown id (100).
fn small_wordpiece() -> GgufBuilder {
    let byte_tokens = tiny::FIRST_BYTE_TOKEN..tiny::FIRST_BYTE_TOKEN + 256;
    let keep = |index: &usize| !byte_tokens.contains(&(*index as u64));
    let tokens: Vec<String> = tiny_tokens()
        .into_iter()
        .enumerate()
        .filter(|(index, _)| keep(index))
        .map(|(_, token)| token)
        .collect();
    let types: Vec<i32> = tiny_token_types()
        .into_iter()
        .enumerate()
        .filter(|(index, _)| keep(index))
        .map(|(_, kind)| kind)
        .collect();
    let vocab_size = tokens.len() as u64;
    wordpiece()
        .set_metadata("tokenizer.ggml.tokens", tokens)
        .set_metadata("tokenizer.ggml.token_type", types)
        .set_metadata("tokenizer.ggml.scores", vec![0f32; vocab_size as usize])
        .edit_tensor("token_embd.weight", |spec| {
            spec.dimensions = vec![tiny::EMBEDDING, vocab_size];
        })
}

/// T-G1: vocabularies llama.cpp cannot build or cannot tokenize with
/// (`vocab.rs`).
fn vocabularies_llama_cpp_cannot_use() -> Vec<Sample> {
    let case = |name, builder: GgufBuilder, expected: &str| {
        Sample::new("T-G1", name, builder.to_bytes(), expected)
    };
    let word = (tiny::FIRST_BYTE_TOKEN + 256) as usize;
    let mut raw_tokens: Vec<Vec<u8>> = tiny_tokens().into_iter().map(String::into_bytes).collect();
    raw_tokens[word + 1] = b"\xe3\x81".to_vec();
    // <0xE3>, the first byte of most Japanese characters, made a normal token.
    let byte_e3 = tiny::FIRST_BYTE_TOKEN as usize + 0xE3;
    let mut without_byte: Vec<String> = tiny_tokens();
    without_byte[byte_e3] = "\u{3042}".to_owned();
    let mut without_byte_types = tiny_token_types();
    without_byte_types[byte_e3] = token_type::NORMAL;
    let gpt2 = || {
        tiny_model()
            .set_metadata("tokenizer.ggml.model", "gpt2")
            .set_metadata("tokenizer.ggml.pre", "default")
            .remove_metadata("tokenizer.ggml.token_type")
    };
    vec![
        // llama-vocab.cpp load: GGML_ASSERT(id_to_token.size() == token_to_id.size())
        case(
            "g1-duplicate-token",
            with_token(word + 1, tiny::WORDS[0]),
            &format!("token {} '\u{2581}' duplicates token {word}", word + 1),
        ),
        case(
            "g1-duplicate-empty-token",
            tiny_model().set_metadata("tokenizer.ggml.tokens", {
                let mut tokens = tiny_tokens();
                tokens[word] = String::new();
                tokens[word + 1] = format!("[EMPTY_{word}]");
                tokens
            }),
            &format!("token {} '[EMPTY_{word}]' duplicates token {word}", word + 1),
        ),
        case(
            "g1-token-not-utf8",
            tiny_model().set_raw_metadata(
                "tokenizer.ggml.tokens",
                ValueType::Array.id(),
                raw_string_array(&raw_tokens),
            ),
            &format!("'tokenizer.ggml.tokens' element {} is not valid UTF-8", word + 1),
        ),
        // llama_vocab::byte_to_token: token_to_id.at("<0xE3>") throws out of llama_tokenize
        case(
            "g1-missing-byte-token",
            tiny_model()
                .set_metadata("tokenizer.ggml.tokens", without_byte)
                .set_metadata("tokenizer.ggml.token_type", without_byte_types),
            "no byte token <0xE3>",
        ),
        // llama_vocab::impl::tokenize: GGML_ASSERT(type != LLAMA_VOCAB_TYPE_NONE)
        case(
            "g1-tokenizer-none",
            tiny_model().set_metadata("tokenizer.ggml.model", "none"),
            "tokenizer 'none' is not supported",
        ),
        case(
            "g1-tokenizer-unknown",
            tiny_model().set_metadata("tokenizer.ggml.model", "sentencepiece"),
            "tokenizer 'sentencepiece' is not supported: llama.cpp does not know it",
        ),
        case(
            "g1-bpe-without-merges",
            gpt2(),
            "'tokenizer.ggml.merges' is missing",
        ),
        case(
            "g1-bpe-bad-merge",
            gpt2().set_metadata("tokenizer.ggml.merges", vec!["a h", "hi"]),
            "merge 1 'hi' is not two token strings separated by one space",
        ),
        case(
            "g1-bpe-merge-not-utf8",
            gpt2().set_raw_metadata(
                "tokenizer.ggml.merges",
                ValueType::Array.id(),
                raw_string_array(&[&b"a h"[..], b"\xff \xfe"]),
            ),
            "'tokenizer.ggml.merges' element 1 is not valid UTF-8",
        ),
        case(
            "g1-bpe-pre-tokenizer-unknown",
            gpt2()
                .set_metadata("tokenizer.ggml.pre", "gpt-5")
                .set_metadata("tokenizer.ggml.merges", vec!["a h"]),
            "'tokenizer.ggml.pre' is 'gpt-5', which llama.cpp does not know",
        ),
        // llama_vocab::impl::token_to_byte: GGML_ABORT for WordPiece
        case(
            "g1-wordpiece-byte-token",
            tiny_model().set_metadata("tokenizer.ggml.model", "bert"),
            &format!(
                "token {} '<0x00>' is marked as a byte token, which the 'bert' tokenizer cannot decode",
                tiny::FIRST_BYTE_TOKEN
            ),
        ),
        // llama_vocab::impl::tokenize: GGML_ASSERT(special_bos_id != LLAMA_TOKEN_NULL)
        case(
            "g1-adds-bos-without-one",
            tiny_model()
                .set_metadata("tokenizer.ggml.model", "t5")
                .set_metadata("tokenizer.ggml.add_bos_token", true)
                .remove_metadata("tokenizer.ggml.bos_token_id"),
            "the 't5' tokenizer adds a BOS token, but 'tokenizer.ggml.bos_token_id' is missing",
        ),
        // llm_tokenizer_bpe_session::append_bos: Gemma 4 has no default BOS
        // (olm used GPT-2's 11) and llama.cpp always adds it.
        case(
            "g1-gemma4-without-bos",
            gpt2()
                .set_metadata("tokenizer.ggml.model", "gemma4")
                .set_metadata("tokenizer.ggml.merges", vec!["a h"])
                .remove_metadata("tokenizer.ggml.bos_token_id"),
            "the 'gemma4' tokenizer adds a BOS token, but 'tokenizer.ggml.bos_token_id' is missing",
        ),
        case(
            "g1-gemma4-adds-eos-without-one",
            gpt2()
                .set_metadata("tokenizer.ggml.model", "gemma4")
                .set_metadata("tokenizer.ggml.merges", vec!["a h"])
                .set_metadata("tokenizer.ggml.add_eos_token", true)
                .remove_metadata("tokenizer.ggml.eos_token_id"),
            "the 'gemma4' tokenizer adds an EOS token, but 'tokenizer.ggml.eos_token_id' is missing",
        ),
        // llm_tokenizer_wpm_session::tokenize emits id -1 for a word it
        // cannot spell; llama_vocab_get_attr(-1) throws (`at`).
        case(
            "g1-wordpiece-without-unknown",
            small_wordpiece().remove_metadata("tokenizer.ggml.unknown_token_id"),
            "the 'bert' tokenizer adds an UNK token, but 'tokenizer.ggml.unknown_token_id' \
             is missing and its default id 100 is outside the vocabulary of 9 tokens",
        ),
        // llm_tokenizer_wpm_session::tokenize: time cubic in a word.
        case(
            "g1-wordpiece-token-too-long",
            wordpiece().set_metadata("tokenizer.ggml.tokens", {
                let mut tokens = tiny_tokens();
                tokens[word + 1] = "h".repeat(300);
                tokens
            }),
            "is 300 bytes long, and WordPiece tries every length up to its longest token",
        ),
        case(
            "g1-score-nan",
            tiny_model().set_metadata("tokenizer.ggml.scores", {
                let mut scores = vec![0f32; tiny::VOCAB_SIZE as usize];
                scores[word] = f32::NAN;
                scores
            }),
            &format!("'tokenizer.ggml.scores' element {word} is NaN"),
        ),
        case(
            "g1-special-id-as-i32",
            tiny_model().set_metadata("tokenizer.ggml.bos_token_id", Value::I32(1)),
            "'tokenizer.ggml.bos_token_id' must be u32, found i32 1",
        ),
        // `get_key` throws "key has wrong type": the load fails after
        // `show` passed the file.
        case(
            "g1-token-type-count-as-string",
            tiny_model().set_metadata("tokenizer.ggml.token_type_count", "2"),
            "'tokenizer.ggml.token_type_count' must be u32, found str",
        ),
        case(
            "g1-suppress-tokens-as-u32",
            tiny_model().set_metadata("tokenizer.ggml.suppress_tokens", vec![1u32, 2]),
            "'tokenizer.ggml.suppress_tokens' must be an array of i32 token ids",
        ),
        case(
            "g1-name-as-u32",
            tiny_model().set_metadata("general.name", 7u32),
            "'general.name' must be str, found u32 7",
        ),
        case(
            "g1-add-bos-as-u32",
            tiny_model().set_metadata("tokenizer.ggml.add_bos_token", Value::U32(1)),
            "'tokenizer.ggml.add_bos_token' must be bool, found u32 1",
        ),
        // llama.cpp reads tokens as C strings: "a\0x" is "a".
        case(
            "g1-token-cut-at-nul-duplicates",
            with_token(word + 1, &format!("{}\0x", tiny::WORDS[0])),
            &format!("token {} '\u{2581}' duplicates token {word}", word + 1),
        ),
        // llama-vocab.cpp load: `word.find(' ', 1)` of "a" asserts.
        case(
            "g1-bpe-merge-cut-at-nul",
            gpt2().set_metadata("tokenizer.ggml.merges", vec!["a h", "a\0 h"]),
            "merge 1 'a\\0 h' is not two token strings separated by one space",
        ),
        // llama_decode_text writes the whole token again per character
        // outside GPT-2's byte alphabet: gigabytes at load time.
        case(
            "g1-bpe-piece-cache-quadratic",
            gpt2()
                .set_metadata("tokenizer.ggml.merges", vec!["a h"])
                .set_metadata("tokenizer.ggml.tokens", {
                    let mut tokens = tiny_tokens();
                    tokens[word + 1] = " ".repeat(20_000);
                    tokens
                }),
            "decoded token texts would take more than 64 MiB",
        ),
        // llm_tokenizer_rwkv_session::tokenize restarts at 0 forever.
        case(
            "g1-rwkv-without-single-bytes",
            tiny_model().set_metadata("tokenizer.ggml.model", "rwkv"),
            "no token is the single byte 0x00",
        ),
        // naive_trie::insert recurses once per byte.
        case(
            "g1-unigram-token-too-long",
            tiny_model()
                .set_metadata("tokenizer.ggml.model", "t5")
                .set_metadata("tokenizer.ggml.tokens", {
                    let mut tokens = tiny_tokens();
                    tokens[word + 1] = "h".repeat(5_000);
                    tokens
                }),
            "is 5000 bytes long, and its trie recurses once per byte",
        ),
        // llm_tokenizer_plamo2::build: every prefix of every suffix.
        case(
            "g1-plamo2-work-cubic",
            tiny_model()
                .set_metadata("tokenizer.ggml.model", "plamo2")
                .set_metadata("tokenizer.ggml.tokens", {
                    let mut tokens = tiny_tokens();
                    tokens[word + 1] = "h".repeat(4_000);
                    tokens
                }),
            "characters of prefixes",
        ),
        // normalize_prefix throws out of llama_tokenize at an offset
        // outside the charsmap.
        case(
            "g1-unigram-charsmap-walks-outside",
            tiny_model()
                .set_metadata("tokenizer.ggml.model", "t5")
                .set_metadata("tokenizer.ggml.precompiled_charsmap", {
                    // Size 8: two units, the root's base 256 leads past them.
                    let mut bytes = 8u32.to_le_bytes().to_vec();
                    bytes.extend_from_slice(&(256u32 << 10).to_le_bytes());
                    bytes.extend_from_slice(&0u32.to_le_bytes());
                    bytes.extend_from_slice(b"x\0");
                    Value::Array(Array::U8(bytes))
                }),
            "a byte of some input leads outside its array",
        ),
        case(
            "g1-empty-vocabulary",
            tiny_model()
                .set_metadata("tokenizer.ggml.tokens", Vec::<String>::new())
                .remove_metadata("tokenizer.ggml.token_type")
                .remove_metadata("tokenizer.ggml.scores")
                .remove_metadata("tokenizer.ggml.bos_token_id")
                .remove_metadata("tokenizer.ggml.eos_token_id")
                .remove_metadata("tokenizer.ggml.unknown_token_id"),
            "the vocabulary is empty",
        ),
    ]
}

/// T-G1: tensor types ggml has no kernel for in the tensor's role
/// (`tensor_types.rs`).
fn tensor_types() -> Vec<Sample> {
    let case = |name, builder: GgufBuilder, expected: &str| {
        Sample::new("T-G1", name, builder.to_bytes(), expected)
    };
    let retype = |tensor: &str, ggml_type: GgmlType| {
        tiny_model().edit_tensor(tensor, |spec| spec.type_id = ggml_type.id())
    };
    vec![
        // binary-ops.cpp binary_op: GGML_ABORT("unsupported types")
        case(
            "g1-integer-norm-weight",
            retype("blk.0.attn_norm.weight", GgmlType::I32),
            "tensor 'blk.0.attn_norm.weight' has type I32, but a norm, bias or other 1-D tensor must be F32",
        ),
        case(
            "g1-f16-norm-weight",
            retype("output_norm.weight", GgmlType::F16),
            "tensor 'output_norm.weight' has type F16, but a norm, bias or other 1-D tensor must be F32",
        ),
        case(
            "g1-quantized-norm-weight",
            retype("blk.1.ffn_norm.weight", GgmlType::Q8_0),
            "tensor 'blk.1.ffn_norm.weight' has type Q8_0",
        ),
        // ggml-cpu.c type_traits_cpu: no vec_dot for integer types
        case(
            "g1-integer-matrix",
            retype("blk.0.attn_q.weight", GgmlType::I8),
            "tensor 'blk.0.attn_q.weight' has type I8, but a weight must be a float or weight-quantization type",
        ),
        case(
            "g1-integer-embedding",
            retype("token_embd.weight", GgmlType::I32),
            "tensor 'token_embd.weight' has type I32, but a weight must be",
        ),
        case(
            "g1-activation-quantization-weight",
            retype("blk.0.attn_k.weight", GgmlType::Q8_1),
            "tensor 'blk.0.attn_k.weight' has type Q8_1, but a weight must be",
        ),
        // ggml.c ggml_rope_impl: GGML_ASSERT(c->type == GGML_TYPE_F32)
        case(
            "g1-f16-rope-factors",
            tiny_model().tensor("rope_freqs.weight", GgmlType::F16, &[tiny::HEAD_DIM / 2]),
            "tensor 'rope_freqs.weight' has type F16, but a rope frequency factor must be F32",
        ),
    ]
}

/// T-G1: well-formed files llama.cpp cannot run (refused by
/// [`Sample::check`] and `inspect`, not by [`parse`]).
fn model_requirements() -> Vec<Sample> {
    let case = |name, builder: GgufBuilder, expected: &str| {
        Sample::new("T-G1", name, builder.to_bytes(), expected).model_level()
    };
    vec![
        case(
            "g1-missing-rms-epsilon",
            tiny_model().remove_metadata("llama.attention.layer_norm_rms_epsilon"),
            "metadata key 'llama.attention.layer_norm_rms_epsilon' is missing",
        ),
        case(
            "g1-missing-block-count",
            tiny_model().remove_metadata("llama.block_count"),
            "metadata key 'llama.block_count' is missing",
        ),
        case(
            "g1-missing-tokenizer",
            tiny_model().remove_metadata("tokenizer.ggml.model"),
            "metadata key 'tokenizer.ggml.model' is missing",
        ),
        case(
            "g1-missing-architecture",
            tiny_model().remove_metadata("general.architecture"),
            "metadata key 'general.architecture' is missing",
        ),
        case(
            "g1-unknown-architecture",
            tiny_model().set_metadata("general.architecture", "llama9"),
            "architecture 'llama9' is not supported: llama.cpp does not know it",
        ),
        case(
            "g1-clip-architecture",
            tiny_model().set_metadata("general.architecture", "clip"),
            "architecture 'clip' is not supported",
        ),
        case(
            "g1-missing-layer-tensor",
            tiny_model().remove_tensor("blk.1.ffn_up.weight"),
            "tensor 'blk.1.ffn_up.weight' is missing (llama models need it)",
        ),
        case(
            "g1-missing-attention",
            tiny_model()
                .remove_tensor("blk.0.attn_k.weight")
                .remove_tensor("blk.0.attn_q.weight"),
            "tensor 'blk.0.attn_q.weight' is missing",
        ),
        // llama-model-loader.cpp check_tensor_dims: "tensor ... has wrong shape"
        case(
            "g1-tensor-shape-mismatch",
            tiny_model().edit_tensor("blk.1.attn_k.weight", |spec| {
                spec.dimensions = vec![tiny::EMBEDDING, tiny::HEAD_DIM]
            }),
            "tensor 'blk.1.attn_k.weight' has shape [32, 8], but the model's hyper-parameters make it [32, 16]",
        ),
        case(
            "g1-embedding-rows-not-vocabulary",
            tiny_model()
                .set_metadata("tokenizer.ggml.tokens", {
                    let mut tokens = tiny_tokens();
                    tokens.push("extra".to_owned());
                    tokens
                })
                .remove_metadata("tokenizer.ggml.token_type")
                .remove_metadata("tokenizer.ggml.scores"),
            &format!(
                "tensor 'token_embd.weight' has {} rows but the vocabulary has {} tokens",
                tiny::VOCAB_SIZE,
                tiny::VOCAB_SIZE + 1
            ),
        ),
    ]
}

/// `PREFIX-0000k-of-0000n.gguf`, as llama.cpp names split parts.
pub fn split_part_name(prefix: &str, part: u64, count: u64) -> String {
    format!("{prefix}{}", super::split::part_suffix(part, count))
}

/// Writes `parts` as `dir/PREFIX-0000k-of-0000n.gguf`; returns their paths
/// in order.
pub fn write_split(
    dir: &Path,
    prefix: &str,
    parts: &[GgufBuilder],
) -> io::Result<Vec<std::path::PathBuf>> {
    let count = parts.len() as u64;
    parts
        .iter()
        .enumerate()
        .map(|(index, part)| {
            let path = dir.join(split_part_name(prefix, index as u64 + 1, count));
            std::fs::write(&path, part.to_bytes())?;
            Ok(path)
        })
        .collect()
}

/// `base` split into `count` parts as `gguf-split` writes them: the first
/// part has all metadata, every part has `split.no` (u16), `split.count`
/// (u16) and `split.tensors.count` (i32), and the tensors are shared out in
/// order. `base` must place its tensors itself (no fixed offsets), as
/// [`tiny_model`] does.
pub fn split_model(base: &GgufBuilder, count: u16) -> Vec<GgufBuilder> {
    let specs = base.tensor_specs().to_vec();
    let count = count.max(1);
    let per_part = specs.len().div_ceil(usize::from(count)).max(1);
    let total = specs.len() as i32;
    let with_split_keys = |builder: GgufBuilder, index: u16| {
        builder
            .set_metadata("split.no", index)
            .set_metadata("split.count", count)
            .set_metadata("split.tensors.count", total)
    };
    (0..count)
        .map(|index| {
            let start = (usize::from(index) * per_part).min(specs.len());
            let end = (start + per_part).min(specs.len());
            let chunk = &specs[start..end];
            let mut part = if index == 0 {
                let mut first = base.clone();
                for spec in &specs[end..] {
                    first = first.remove_tensor(&spec.name);
                }
                first
            } else {
                chunk.iter().fold(GgufBuilder::new(), |part, spec| {
                    part.tensor_spec(spec.clone())
                })
            };
            part = with_split_keys(part, index);
            part
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::GgmlType;
    use super::*;

    #[test]
    fn tiny_model_data_len_matches_the_writer() {
        let file = tiny_model().to_bytes();
        let parsed = parse(io::Cursor::new(&file), file.len() as u64).expect("tiny model parses");
        assert_eq!(parsed.tensor_data_size(), tiny_model_data_len());
        assert_eq!(parsed.file_size - parsed.data_offset, tiny_model_data_len());
    }

    #[test]
    fn sample_names_are_unique_and_file_name_safe() {
        let samples = [hostile(), valid()].concat();
        let mut names: Vec<_> = samples.iter().map(|sample| sample.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), samples.len(), "duplicate sample names");
        for name in names {
            assert!(
                name.bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"-_^+".contains(&byte)),
                "{name}"
            );
        }
    }

    #[test]
    fn tiny_model_uses_the_expected_types() {
        let bytes = tiny_bytes();
        let file = parse(io::Cursor::new(&bytes), bytes.len() as u64).expect("tiny model parses");
        let types: Vec<_> = file.tensors.iter().map(|tensor| tensor.ggml_type).collect();
        let layer = [
            GgmlType::F32,
            GgmlType::Q4_0,
            GgmlType::Q4_0,
            GgmlType::Q4_0,
            GgmlType::Q4_0,
            GgmlType::F32,
            GgmlType::Q4_0,
            GgmlType::Q4_0,
            GgmlType::Q4_0,
        ];
        let expected: Vec<GgmlType> = std::iter::once(GgmlType::F32)
            .chain(layer)
            .chain(layer)
            .chain(std::iter::once(GgmlType::F32))
            .collect();
        assert_eq!(types, expected);
    }
}
