//! The hostile GGUF files of the test plan (T-A1…T-A6, T-A8 in
//! `security-tests.md`) and a few valid ones, built in memory. Unit tests
//! parse them, integration tests run `olm` on them, and the fuzz seed corpus
//! is written from them. Files that must be large are described by their
//! first bytes and a length: the rest is zeros (a sparse file on disk).

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use super::writer::{tiny_model, GgufBuilder, RawGguf, TensorSpec};
use super::{parse, GgufError, GgufFile, MAX_TENSOR_COUNT};

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
    pub expected: &'static str,
}

impl Sample {
    fn new(case: &'static str, name: &'static str, bytes: Vec<u8>, expected: &'static str) -> Self {
        let file_len = bytes.len() as u64;
        Self {
            name,
            case,
            bytes,
            file_len,
            expected,
        }
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

/// Valid files that exercise limits, splits and old versions; each must parse.
pub fn valid() -> Vec<Sample> {
    let valid = |name, builder: GgufBuilder| Sample::new("valid", name, builder.to_bytes(), "");
    vec![
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
    ]
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
    let case = |name, bytes, expected| Sample::new("T-A1", name, bytes, expected);
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
    let case = |name, bytes, expected| Sample::new("T-A2", name, bytes, expected);
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
    let case = |name, value: super::Value, expected| {
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
    let case = |name, bytes, expected| Sample::new("T-A4", name, bytes, expected);
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
            "tensor #1 has an empty name",
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
                .edit_tensor("output_norm.weight", |spec| spec.offset = Some(1793))
                .to_bytes(),
            "data offset 1793 is not a multiple of the alignment 32",
        ),
    ]
}

fn tensor_data() -> Vec<Sample> {
    let case = |name, bytes, expected| Sample::new("T-A5", name, bytes, expected);
    let tiny = tiny_bytes();
    let cut = |length: usize| tiny[..length.min(tiny.len())].to_vec();
    let with_offset = |tensor: &str, offset: u64| {
        tiny_model()
            .edit_tensor(tensor, |spec| spec.offset = Some(offset))
            .to_bytes()
    };
    let tiny_len = tiny.len() as u64;
    let data_offset = tiny_len - tiny_model_data_len();
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
            with_offset("blk.1.attn_q.weight", 640),
            "overlap",
        ),
        case(
            "a5-gap-between-tensors",
            with_offset("output_norm.weight", 1824),
            "should be 1792",
        ),
        case(
            "a5-out-of-order",
            tiny_model()
                .edit_tensor("token_embd.weight", |spec| spec.offset = Some(1152))
                .edit_tensor("blk.0.attn_q.weight", |spec| spec.offset = Some(0))
                .edit_tensor("blk.1.attn_q.weight", |spec| spec.offset = Some(576))
                .edit_tensor("output_norm.weight", |spec| spec.offset = Some(1792))
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

/// Bytes of tensor data in [`tiny_model`] (F32 32×5, two Q4_0 32×32, F32 32).
fn tiny_model_data_len() -> u64 {
    640 + 576 + 576 + 128
}

fn vocabulary() -> Vec<Sample> {
    let case = |name, builder: GgufBuilder, expected| {
        Sample::new("T-A6", name, builder.to_bytes(), expected)
    };
    let big_token = (100u64 << 20) as usize;
    vec![
        // ggml-org/llama.cpp#25475
        case(
            "a6-bos-out-of-range",
            tiny_model().set_metadata("tokenizer.ggml.bos_token_id", 5u32),
            "token id 5 is out of range for a vocabulary of 5 tokens",
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
            tiny_model().metadata("tokenizer.ggml.eot_token_id", 99u32),
            "token id 99 is out of range",
        ),
        // ggml-org/llama.cpp#14145
        case(
            "a6-tokens-shorter-than-vocab-size",
            tiny_model().metadata("llama.vocab_size", 6u32),
            "'llama.vocab_size' is 6 but 'tokenizer.ggml.tokens' has 5 tokens",
        ),
        case(
            "a6-token-type-length",
            tiny_model().set_metadata("tokenizer.ggml.token_type", vec![1i32; 4]),
            "'tokenizer.ggml.token_type' has 4 entries but the vocabulary has 5 tokens",
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
            tiny_model().set_metadata(
                "tokenizer.ggml.tokens",
                vec!["<unk>", "<s>", "</s>", "<0x-1>", "a"],
            ),
            "token 3 '<0x-1>' is marked as a byte token",
        ),
        case(
            "a6-byte-token-not-hex",
            tiny_model().set_metadata(
                "tokenizer.ggml.tokens",
                vec!["<unk>", "<s>", "</s>", "<0xZZ>", "a"],
            ),
            "token 3 '<0xZZ>' is marked as a byte token",
        ),
        case(
            "a6-token-64KiB+1",
            tiny_model().set_metadata(
                "tokenizer.ggml.tokens",
                vec![
                    "<unk>".to_owned(),
                    "<s>".into(),
                    "</s>".into(),
                    "<0x0A>".into(),
                    "a".repeat((64 << 10) + 1),
                ],
            ),
            "token 4 is 65537 bytes long (limit 65536)",
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
    let case = |name, builder: GgufBuilder, expected| {
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
        assert_eq!(
            types,
            [GgmlType::F32, GgmlType::Q4_0, GgmlType::Q4_0, GgmlType::F32]
        );
    }
}
