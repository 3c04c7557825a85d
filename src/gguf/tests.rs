//! Unit tests: every hostile sample is refused with the right error, the real
//! test models parse, split sets are checked part by part, and the writer
//! round-trips.

use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::samples::{self, Level, Sample};
use super::writer::{tiny, tiny_model, GgufBuilder};
use super::*;

fn parse_bytes(bytes: &[u8]) -> Result<GgufFile, GgufError> {
    parse(Cursor::new(bytes), bytes.len() as u64)
}

fn sample(name: &str) -> Sample {
    samples::hostile()
        .into_iter()
        .chain(samples::valid())
        .find(|sample| sample.name == name)
        .unwrap_or_else(|| panic!("no sample named {name}"))
}

/// Asserts the named hostile sample fails with an error matching `$pattern`
/// (from [`parse`] for a file-level sample, from [`parse_model`] for a
/// model-level one).
macro_rules! assert_refused {
    ($name:expr, $pattern:pat $(if $guard:expr)?) => {{
        let name = $name;
        let sample = sample(name);
        let result = match sample.level {
            Level::File => sample.parse(),
            Level::Model => sample.check(),
        };
        match result {
            Err(error) => assert!(
                matches!(error, $pattern $(if $guard)?),
                "{name}: wrong error {error:?}"
            ),
            Ok(_) => panic!("{name}: accepted"),
        }
    }};
}

#[test]
fn every_hostile_sample_is_refused_with_its_message() {
    for sample in samples::hostile() {
        let result = match sample.level {
            Level::File => sample.parse(),
            Level::Model => {
                if let Err(error) = sample.parse() {
                    panic!(
                        "{}: a model-level sample fails to parse: {error}",
                        sample.name
                    );
                }
                sample.check()
            }
        };
        match result {
            Ok(_) => panic!("{} ({}): accepted", sample.name, sample.case),
            Err(error) => assert!(
                error.to_string().contains(&sample.expected),
                "{} ({}): expected {:?} in {:?}",
                sample.name,
                sample.case,
                sample.expected,
                error.to_string()
            ),
        }
    }
}

#[test]
fn hostile_samples_written_to_disk_give_the_same_errors() {
    let directory = tempfile::tempdir().expect("temp dir");
    for sample in samples::hostile() {
        let path = directory.path().join(format!("{}.gguf", sample.name));
        sample.write_to(&path).expect("write sample");
        let message = inspect(&path)
            .map(|_| "accepted".to_owned())
            .unwrap_or_else(|error| error.to_string());
        assert!(
            message.contains(&sample.expected),
            "{}: expected {:?} in {message:?}",
            sample.name,
            sample.expected
        );
    }
}

#[test]
fn every_valid_sample_parses() {
    for sample in samples::valid() {
        if let Err(error) = sample.parse() {
            panic!("{}: {error}", sample.name);
        }
    }
}

#[test]
fn the_tiny_models_are_complete_models() {
    for sample in samples::valid() {
        let complete = sample.name.starts_with("valid-tiny")
            || [
                "valid-version-2",
                "valid-alignment-64",
                "valid-context-2^31",
            ]
            .contains(&sample.name);
        if complete {
            if let Err(error) = sample.check() {
                panic!("{}: {error}", sample.name);
            }
        }
    }
}

#[test]
fn t_a1_header() {
    assert_refused!("a1-empty", GgufError::Empty);
    assert_refused!(
        "a1-magic-only",
        GgufError::Truncated {
            expected: 8,
            found: 4
        }
    );
    assert_refused!("a1-bad-magic", GgufError::BadMagic { .. });
    assert_refused!("a1-text-file", GgufError::BadMagic { .. });
    assert_refused!("a1-version-0", GgufError::UnsupportedVersion { version: 0 });
    assert_refused!("a1-version-1", GgufError::UnsupportedVersion { version: 1 });
    assert_refused!("a1-version-4", GgufError::UnsupportedVersion { version: 4 });
    assert_refused!("a1-big-endian", GgufError::BigEndian { .. });
    assert_refused!(
        "a1-tensor-count-max",
        GgufError::CountExceedsFile {
            what: "tensor",
            count: u64::MAX,
            ..
        }
    );
    assert_refused!(
        "a1-metadata-count-max",
        GgufError::CountExceedsFile {
            what: "metadata",
            count: u64::MAX,
            ..
        }
    );
    assert_refused!(
        "a1-tensor-count-over-limit",
        GgufError::CountTooLarge { what: "tensor", .. }
    );
    assert_refused!(
        "a1-cut-in-header",
        GgufError::Truncated {
            expected: 16,
            found: 10
        }
    );
}

#[test]
fn short_files_are_judged_by_what_they_hold() {
    assert!(matches!(
        parse_bytes(b"GG"),
        Err(GgufError::Truncated {
            expected: 4,
            found: 2
        })
    ));
    assert!(matches!(
        parse_bytes(b"{}"),
        Err(GgufError::BadMagic { .. })
    ));
}

#[test]
fn t_a2_metadata_strings_and_arrays() {
    assert_refused!(
        "a2-string-length-2^63",
        GgufError::StringExceedsFile {
            length: 0x8000_0000_0000_0000,
            ..
        }
    );
    assert_refused!("a2-key-length-2^63", GgufError::StringExceedsFile { .. });
    assert_refused!(
        "a2-string-16MiB+1",
        GgufError::StringTooLong {
            length: 16_777_217,
            ..
        }
    );
    assert_refused!(
        "a2-string-array-64Mi+1-small-file",
        GgufError::ArrayExceedsFile { .. }
    );
    assert_refused!(
        "a2-string-array-64Mi+1",
        GgufError::ArrayTooLong {
            length: 67_108_865,
            ..
        }
    );
    assert_refused!(
        "a2-string-array-over-memory-limit",
        GgufError::MetadataTooLarge { .. }
    );
    assert_refused!(
        "a2-u8-array-2^40",
        GgufError::ArrayExceedsFile {
            length: 1_099_511_627_776,
            ..
        }
    );
    assert_refused!("a2-empty-key", GgufError::EmptyKey { index: 0 });
    assert_refused!("a2-key-not-utf8", GgufError::KeyNotUtf8 { index: 0 });
    assert_refused!(
        "a2-key-too-long",
        GgufError::StringTooLong { limit: 65_535, .. }
    );
    assert_refused!("a2-duplicate-key", GgufError::DuplicateKey { .. });
    assert_refused!(
        "a2-value-type-13",
        GgufError::UnknownValueType { type_id: 13, .. }
    );
    assert_refused!(
        "a2-array-element-type-13",
        GgufError::UnknownValueType { type_id: 13, .. }
    );
    assert_refused!("a2-nested-array", GgufError::NestedArray { .. });
    assert_refused!("a2-key-with-escapes", GgufError::DuplicateKey { .. });
}

#[test]
fn t_a3_alignment() {
    assert_refused!(
        "a3-alignment-0",
        GgufError::InvalidAlignment { alignment: 0 }
    );
    assert_refused!(
        "a3-alignment-13",
        GgufError::InvalidAlignment { alignment: 13 }
    );
    assert_refused!(
        "a3-alignment-2^31",
        GgufError::InvalidAlignment {
            alignment: 0x8000_0000
        }
    );
    assert_refused!(
        "a3-alignment-int32",
        GgufError::WrongType {
            expected: "u32",
            ..
        }
    );
}

#[test]
fn t_a4_tensor_descriptors() {
    assert_refused!(
        "a4-five-dimensions",
        GgufError::DimensionCount { dimensions: 5, .. }
    );
    assert_refused!(
        "a4-zero-dimensions",
        GgufError::DimensionCount { dimensions: 0, .. }
    );
    assert_refused!(
        "a4-zero-dimension",
        GgufError::ZeroDimension { axis: 1, .. }
    );
    assert_refused!(
        "a4-product-overflow-2^63x2",
        GgufError::ShapeOverflow { .. }
    );
    assert_refused!(
        "a4-product-overflow-i64max",
        GgufError::ShapeOverflow { .. }
    );
    assert_refused!("a4-byte-size-overflow", GgufError::ByteSizeOverflow { .. });
    assert_refused!("a4-rows-2^42+1", GgufError::Truncated { .. });
    assert_refused!(
        "a4-q4_0-row-31",
        GgufError::RowNotBlockMultiple {
            row: 31,
            block_size: 32,
            ggml_type: GgmlType::Q4_0,
            ..
        }
    );
    assert_refused!(
        "a4-type-9999",
        GgufError::UnknownTensorType { type_id: 9999, .. }
    );
    assert_refused!(
        "a4-type-negative",
        GgufError::UnknownTensorType { type_id: -1, .. }
    );
    assert_refused!(
        "a4-type-removed-q4_2",
        GgufError::UnknownTensorType { type_id: 4, .. }
    );
    assert_refused!(
        "a4-type-removed-q4_0_4_4",
        GgufError::UnknownTensorType { type_id: 31, .. }
    );
    assert_refused!(
        "a4-name-64-bytes",
        GgufError::TensorNameTooLong { length: 64, .. }
    );
    assert_refused!("a4-name-empty", GgufError::EmptyTensorName { index: 2 });
    assert_refused!("a4-duplicate-name", GgufError::DuplicateTensor { .. });
    let last_offset = tiny_offset("output_norm.weight");
    let error = sample("a4-offset-unaligned").parse().expect_err("refused");
    assert!(
        matches!(error, GgufError::MisalignedTensor { offset, alignment: 32, .. } if offset == last_offset + 1),
        "{error:?}"
    );
}

#[test]
fn tensor_errors_name_the_tensor() {
    let error = sample("a4-zero-dimension").parse().expect_err("refused");
    assert_eq!(
        error.to_string(),
        "tensor 'blk.0.attn_q.weight': dimension 1 is zero"
    );
}

#[test]
fn t_a5_tensor_data_and_truncation() {
    let full_len = tiny_model().to_bytes().len() as u64;
    let error = sample("a5-last-tensor-past-end")
        .parse()
        .expect_err("refused");
    assert!(
        matches!(error, GgufError::Truncated { expected, found } if expected == full_len && found == full_len - 1),
        "{error:?}"
    );
    assert_refused!("a5-cut-at-half", GgufError::Truncated { .. });
    assert_refused!("a5-cut-before-data", GgufError::Truncated { .. });
    assert_refused!(
        "a5-overlapping-tensors",
        GgufError::OverlappingTensors { .. }
    );
    let last_offset = tiny_offset("output_norm.weight");
    let error = sample("a5-gap-between-tensors")
        .parse()
        .expect_err("refused");
    assert!(
        matches!(error, GgufError::UnexpectedTensorOffset { offset, expected, .. }
            if offset == last_offset + 32 && expected == last_offset),
        "{error:?}"
    );
    assert_refused!(
        "a5-out-of-order",
        GgufError::UnexpectedTensorOffset { expected: 0, .. }
    );
    assert_refused!("a5-offset-overflow", GgufError::TensorOffsetOverflow { .. });
}

/// Where the tiny model's tensor `name` starts in its data.
fn tiny_offset(name: &str) -> u64 {
    parse_bytes(&tiny_model().to_bytes())
        .expect("valid")
        .tensor(name)
        .expect("tensor exists")
        .offset
}

#[test]
fn truncation_reports_expected_and_found_sizes() {
    let bytes = tiny_model().to_bytes();
    let error = parse_bytes(&bytes[..bytes.len() - 1]).expect_err("refused");
    assert_eq!(
        error.to_string(),
        format!(
            "file truncated: expected {} bytes, found {}",
            bytes.len(),
            bytes.len() - 1
        )
    );
}

#[test]
fn t_a6_vocabulary() {
    assert_refused!(
        "a6-bos-out-of-range",
        GgufError::TokenIdOutOfRange {
            id: 265,
            vocab_size: tiny::VOCAB_SIZE,
            ..
        }
    );
    assert_refused!("a6-eos-out-of-range", GgufError::TokenIdOutOfRange { .. });
    assert_refused!(
        "a6-unk-negative",
        GgufError::TokenIdOutOfRange { id: -1, .. }
    );
    assert_refused!(
        "a6-eot-out-of-range",
        GgufError::TokenIdOutOfRange { id: 999, .. }
    );
    assert_refused!(
        "a6-tokens-shorter-than-vocab-size",
        GgufError::VocabSizeMismatch {
            declared: 266,
            tokens: 265,
            ..
        }
    );
    assert_refused!(
        "a6-token-type-length",
        GgufError::VocabLengthMismatch {
            length: 4,
            vocab_size: 265,
            ..
        }
    );
    assert_refused!(
        "a6-scores-length",
        GgufError::VocabLengthMismatch { length: 6, .. }
    );
    assert_refused!("a6-token-type-wrong-type", GgufError::WrongType { .. });
    assert_refused!("a6-tokens-wrong-type", GgufError::WrongType { .. });
    assert_refused!(
        "a6-byte-token-negative",
        GgufError::BadByteToken { index: 3, .. }
    );
    assert_refused!(
        "a6-byte-token-not-hex",
        GgufError::BadByteToken { index: 3, .. }
    );
    assert_refused!(
        "a6-token-64KiB+1",
        GgufError::TokenTooLong {
            index: 4,
            length: 65_537,
            ..
        }
    );
    assert_refused!(
        "a6-token-100MB",
        GgufError::StringTooLong {
            length: 104_857_600,
            ..
        }
    );
}

#[test]
fn t_a8_metadata_that_drives_allocation() {
    assert_refused!(
        "a8-block-count-100000",
        GgufError::ValueTooLarge { value: 100_000, .. }
    );
    assert_refused!(
        "a8-block-count-above-layers",
        GgufError::BlockCountMismatch {
            block_count: 3,
            layers: 2,
            ..
        }
    );
    assert_refused!(
        "a8-embedding-length-2^30",
        GgufError::ValueTooLarge {
            value: 1_073_741_824,
            ..
        }
    );
    assert_refused!(
        "a8-embedding-length-mismatch",
        GgufError::EmbeddingLengthMismatch {
            embedding_length: 64,
            row: 32,
            ..
        }
    );
    assert_refused!(
        "a8-context-length-2^32",
        GgufError::ValueTooLarge {
            value: 4_294_967_296,
            ..
        }
    );
    assert_refused!("a8-block-count-string", GgufError::WrongType { .. });
    assert_refused!(
        "a8-vocab-size-without-tokens",
        GgufError::ValueTooLarge { .. }
    );
    assert_refused!("a8-architecture-not-string", GgufError::WrongType { .. });
    assert_refused!(
        "a8-split-index-out-of-range",
        GgufError::InvalidSplit { index: 3, count: 3 }
    );
    assert_refused!(
        "a8-split-count-zero",
        GgufError::InvalidSplit { index: 0, count: 0 }
    );
}

#[test]
fn large_context_length_is_exposed_not_refused() {
    let file = sample("valid-context-2^31").parse().expect("valid");
    assert_eq!(file.context_length(), Some(1 << 31));
}

#[test]
fn split_first_part_is_validated_alone() {
    let file = sample("valid-split-first-part").parse().expect("valid");
    assert_eq!(file.split_count(), 3);
    assert_eq!(
        sample("valid-tiny").parse().expect("valid").split_count(),
        1
    );
}

#[test]
fn tiny_model_accessors() {
    let file = sample("valid-tiny").parse().expect("valid");
    assert_eq!(file.version, 3);
    assert_eq!(file.alignment, DEFAULT_ALIGNMENT);
    assert_eq!(file.data_offset % 32, 0);
    assert_eq!(file.architecture(), Some("llama"));
    assert_eq!(file.name(), Some("tiny"));
    assert_eq!(file.license(), Some("mit"));
    assert_eq!(file.context_length(), Some(128));
    assert_eq!(file.embedding_length(), Some(32));
    assert_eq!(file.block_count(), Some(2));
    assert_eq!(file.vocab_size(), Some(265));
    assert_eq!(tiny::VOCAB_SIZE, 265);
    assert_eq!(file.file_type_name().as_deref(), Some("Q4_0"));
    assert!(file
        .chat_template()
        .is_some_and(|template| template.contains("messages")));
    // Embedding 32×265; per layer two norms of 32, q and o 32×32, k and v
    // 32×16, gate, up and down 32×64; the output norm.
    let per_layer = 2 * 32 + 2 * 32 * 32 + 2 * 32 * 16 + 3 * 32 * 64;
    assert_eq!(file.parameter_count(), 32 * 265 + 2 * per_layer + 32);
    // F32 is 4 bytes per element, Q4_0 18 bytes per 32 elements.
    let per_layer_bytes = 2 * 128 + (2 * 32 * 32 + 2 * 32 * 16 + 3 * 32 * 64) / 32 * 18;
    assert_eq!(
        file.tensor_data_size(),
        32 * 265 * 4 + 2 * per_layer_bytes + 128
    );
    assert_eq!(file.get_u64("tokenizer.ggml.bos_token_id"), Some(1));
    assert_eq!(file.get_str("general.architecture"), Some("llama"));
    assert_eq!(file.get_u64("general.name"), None);
}

#[test]
fn get_u64_accepts_every_integer_width_but_not_negatives() {
    let file = parse_bytes(
        &GgufBuilder::new()
            .metadata("a", 7u8)
            .metadata("b", 7i16)
            .metadata("c", 7u64)
            .metadata("d", -7i32)
            .metadata("e", 7f32)
            .to_bytes(),
    )
    .expect("valid");
    assert_eq!(file.get_u64("a"), Some(7));
    assert_eq!(file.get_u64("b"), Some(7));
    assert_eq!(file.get_u64("c"), Some(7));
    assert_eq!(file.get_u64("d"), None);
    assert_eq!(file.get_u64("e"), None);
}

#[test]
fn writer_round_trips_byte_for_byte() {
    for sample in samples::valid() {
        let file = sample.parse().expect("valid sample");
        let rewritten = GgufBuilder::from_file(&file).to_bytes();
        assert_eq!(rewritten, sample.bytes, "{}", sample.name);
        assert_eq!(
            parse_bytes(&rewritten).expect("rewritten parses"),
            file,
            "{}",
            sample.name
        );
    }
}

#[test]
fn every_value_type_round_trips() {
    let builder = GgufBuilder::new()
        .metadata("u8", 1u8)
        .metadata("i8", -1i8)
        .metadata("u16", 2u16)
        .metadata("i16", -2i16)
        .metadata("u32", 3u32)
        .metadata("i32", -3i32)
        .metadata("f32", 0.5f32)
        .metadata("bool", true)
        .metadata("string", "text ✓")
        .metadata("u64", u64::MAX)
        .metadata("i64", i64::MIN)
        .metadata("f64", -0.25f64)
        .metadata("array.u8", vec![1u8, 2])
        .metadata("array.i8", vec![-1i8])
        .metadata("array.u16", vec![1u16])
        .metadata("array.i16", vec![-1i16])
        .metadata("array.u32", vec![1u32])
        .metadata("array.i32", vec![-1i32])
        .metadata("array.f32", vec![1.5f32])
        .metadata("array.bool", vec![true, false])
        .metadata("array.string", vec!["a", "", "c"])
        .metadata("array.u64", vec![u64::MAX])
        .metadata("array.i64", vec![i64::MIN])
        .metadata("array.f64", vec![2.5f64])
        .metadata("array.empty", Vec::<u32>::new());
    let bytes = builder.to_bytes();
    let file = parse_bytes(&bytes).expect("valid");
    assert_eq!(file.metadata.len(), 25);
    assert_eq!(file.get("string"), Some(&Value::String("text ✓".into())));
    assert_eq!(
        file.get("array.string").map(Value::describe).as_deref(),
        Some("array of 3 str")
    );
    assert_eq!(GgufBuilder::from_file(&file).to_bytes(), bytes);
}

/// A file whose only entry is an array of one string holding `bytes`,
/// under `key`, after `tokenizer.ggml.model` = `model` if given.
fn raw_string_file(key: &str, bytes: &[u8], model: Option<&str>) -> Vec<u8> {
    let mut raw = writer::RawGguf::header(3, 0, 1 + u64::from(model.is_some()));
    if let Some(model) = model {
        raw = raw
            .string("tokenizer.ggml.model")
            .u32(ValueType::String.id())
            .string(model);
    }
    raw.string(key)
        .u32(ValueType::Array.id())
        .u32(ValueType::String.id())
        .u64(1)
        .string_bytes(bytes)
        .into_bytes()
}

#[test]
fn invalid_utf8_in_ordinary_values_is_replaced_not_refused() {
    let bytes = raw_string_file("general.tags", b"\xe4\xb8", None);
    let file = parse_bytes(&bytes).expect("valid");
    let tags = file.get_array("general.tags").and_then(Array::as_strings);
    assert_eq!(tags, Some(&["\u{fffd}".to_owned()][..]));
    assert_eq!(
        file.first_non_utf8("general.tags"),
        Some(&NonUtf8String {
            key: "general.tags".into(),
            index: Some(0)
        })
    );
}

#[test]
fn invalid_utf8_tokens_are_refused_for_every_tokenizer() {
    // The check sees the raw bytes, not the U+FFFD they are read as.
    let bytes = raw_string_file("tokenizer.ggml.tokens", b"\xe4\xb8", None);
    assert!(matches!(
        parse_bytes(&bytes),
        Err(GgufError::StringNotUtf8 { index: Some(0), .. })
    ));
    // RWKV vocabularies hold raw bytes escaped as ASCII ("\\xe4"), which
    // llama.cpp unescapes; olm judges their bytes, so it needs them exact.
    let bytes = raw_string_file("tokenizer.ggml.tokens", b"\xe4\xb8", Some("rwkv"));
    assert!(matches!(
        parse_bytes(&bytes),
        Err(GgufError::StringNotUtf8 { index: Some(0), .. })
    ));
    // A token that reads as U+FFFD itself is valid UTF-8.
    let bytes = raw_string_file("tokenizer.ggml.tokens", "\u{fffd}".as_bytes(), None);
    assert!(parse_bytes(&bytes).is_ok());
}

#[test]
fn a_bool_is_any_nonzero_byte_like_llama_cpp() {
    let bytes = writer::RawGguf::header(3, 0, 1)
        .string("flag")
        .u32(ValueType::Bool.id())
        .bytes(&[2])
        .into_bytes();
    assert_eq!(
        parse_bytes(&bytes).expect("valid").get("flag"),
        Some(&Value::Bool(true))
    );
}

#[test]
fn names_and_keys_are_escaped_in_messages() {
    assert_eq!(error::printable("a\x1b[31m\nb"), "a\\u{1b}[31m\\nb");
    let long = "x".repeat(500);
    assert_eq!(error::printable(&long).chars().count(), 97);
}

#[test]
fn inspect_refuses_what_is_not_a_regular_file() {
    let directory = tempfile::tempdir().expect("temp dir");
    assert!(matches!(
        inspect(directory.path()),
        Err(GgufError::NotAFile { .. })
    ));
    let missing = directory.path().join("missing.gguf");
    assert!(matches!(inspect(&missing), Err(GgufError::Open { .. })));
}

/// A reader that fails after its first bytes, as a disk error would.
struct FailingReader(Cursor<Vec<u8>>);

impl Read for FailingReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if self.0.position() >= 8 {
            return Err(io::Error::other("disk on fire"));
        }
        let end = buffer.len().min(4);
        self.0.read(&mut buffer[..end])
    }
}

impl Seek for FailingReader {
    fn seek(&mut self, position: SeekFrom) -> io::Result<u64> {
        self.0.seek(position)
    }
}

#[test]
fn read_errors_are_reported_with_their_offset() {
    let bytes = tiny_model().to_bytes();
    let length = bytes.len() as u64;
    let error = parse(FailingReader(Cursor::new(bytes)), length).expect_err("refused");
    assert!(
        matches!(error, GgufError::Read { offset: 8, .. }),
        "{error:?}"
    );
}

// The real test models (scripts/fetch-test-models.sh).

/// The skip name in `OLM_ALLOW_SKIP` (a comma-separated list) that lets the
/// tests needing a real model pass without it.
const MODEL_SKIP: &str = "model";

/// Whether `OLM_ALLOW_SKIP` allows skipping tests that need `skip`.
fn skip_allowed(skip: &str) -> bool {
    std::env::var("OLM_ALLOW_SKIP").is_ok_and(|list| list_names(&list, skip))
}

/// Whether the comma-separated `list` names `skip`.
fn list_names(list: &str, skip: &str) -> bool {
    list.split(',').any(|item| item.trim() == skip)
}

/// The real test model `name`. A missing model fails the test, unless
/// `OLM_ALLOW_SKIP` names `model`: then the test says "skipped" and passes.
#[expect(clippy::print_stderr, reason = "the skip note belongs in the test log")]
pub(crate) fn real_model(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/models")
        .join(name);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        skip_allowed(MODEL_SKIP),
        "{} is missing: run scripts/fetch-test-models.sh, or set OLM_ALLOW_SKIP={MODEL_SKIP} to skip the tests that need it",
        path.display()
    );
    eprintln!(
        "skipped: {} is missing (OLM_ALLOW_SKIP={MODEL_SKIP})",
        path.display()
    );
    None
}

#[test]
fn skips_need_their_name_in_olm_allow_skip() {
    // The parsing skip_allowed applies to OLM_ALLOW_SKIP.
    assert!(list_names("model", MODEL_SKIP));
    assert!(list_names("network, model", MODEL_SKIP));
    assert!(!list_names("models", MODEL_SKIP));
    assert!(!list_names("", MODEL_SKIP));
}

/// Where the last tensor's data ends.
fn data_end(file: &GgufFile) -> u64 {
    file.tensors
        .iter()
        .map(|tensor| file.data_offset + tensor.offset + tensor.byte_size())
        .max()
        .unwrap_or(file.data_offset)
}

fn assert_truncated_copies_are_refused(path: &Path, file: &GgufFile) {
    let end = data_end(file);
    for length in [end - 1, file.file_size / 2, file.data_offset] {
        let reader = File::open(path).expect("open model");
        match parse(reader, length) {
            Err(GgufError::Truncated { found, .. }) => assert_eq!(found, length),
            other => panic!("cut at {length}: {other:?}"),
        }
    }
    // Cut inside the header, a string or array runs past the end instead.
    for length in [file.data_offset - 1, 1000, 30] {
        let reader = File::open(path).expect("open model");
        assert!(parse(reader, length).is_err(), "cut at {length}: accepted");
    }
    let reader = File::open(path).expect("open model");
    assert!(matches!(
        parse(reader, end - 1),
        Err(GgufError::Truncated { expected, found }) if expected == end && found == end - 1
    ));
}

fn assert_writer_reproduces_header(path: &Path, file: &GgufFile) {
    let written = GgufBuilder::from_file(file).data_len(0).to_bytes();
    let mut original = vec![0; file.data_offset as usize];
    File::open(path)
        .and_then(|mut reader| reader.read_exact(&mut original))
        .expect("read header");
    assert_eq!(written.len(), original.len());
    assert!(
        written == original,
        "the writer does not reproduce {}",
        path.display()
    );
}

#[test]
fn smollm2_parses() {
    let Some(path) = real_model("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let file = inspect(&path).expect("SmolLM2 is valid");
    assert_eq!(file.architecture(), Some("llama"));
    assert_eq!(file.file_type_name().as_deref(), Some("Q4_1"));
    assert!(
        (130_000_000..140_000_000).contains(&file.parameter_count()),
        "{}",
        file.parameter_count()
    );
    assert!(file.chat_template().is_some());
    assert_eq!(file.vocab_size(), Some(49_152));
    assert!(file.context_length().is_some());
    assert_eq!(file.split_count(), 1);
    assert!(data_end(&file) <= file.file_size);
    assert_truncated_copies_are_refused(&path, &file);
    assert_writer_reproduces_header(&path, &file);
}

#[test]
fn gemma3_parses() {
    let Some(path) = real_model("gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    let file = inspect(&path).expect("gemma 3 is valid");
    assert_eq!(file.architecture(), Some("gemma3"));
    assert_eq!(file.file_type_name().as_deref(), Some("Q4_K_M"));
    assert!(
        (250_000_000..300_000_000).contains(&file.parameter_count()),
        "{}",
        file.parameter_count()
    );
    assert_eq!(file.vocab_size(), Some(262_144));
    assert_truncated_copies_are_refused(&path, &file);
    assert_writer_reproduces_header(&path, &file);
}

/// Writes the fuzz seed corpus: every sample of the test plan, cut to 64 KiB.
/// Run: `cargo test --lib write_fuzz_seed_corpus -- --ignored`.
#[test]
#[ignore = "writes fuzz/corpus/gguf_parse; run by hand"]
fn write_fuzz_seed_corpus() {
    const MAX_SEED_BYTES: u64 = 64 << 10;
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/gguf_parse");
    std::fs::create_dir_all(&directory).expect("create corpus dir");
    for sample in samples::hostile().into_iter().chain(samples::valid()) {
        let mut bytes = sample.bytes.clone();
        if sample.file_len <= MAX_SEED_BYTES {
            bytes.resize(sample.file_len as usize, 0);
        }
        bytes.truncate(MAX_SEED_BYTES as usize);
        std::fs::write(directory.join(format!("{}.gguf", sample.name)), bytes).expect("write seed");
    }
}

#[test]
fn real_models_are_checked_models() {
    for name in [
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma-3-270m-q4_k_m.gguf",
    ] {
        let Some(path) = real_model(name) else {
            return;
        };
        let started = std::time::Instant::now();
        let model = check_model(&path).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{name}: the check took {:?}",
            started.elapsed()
        );
        assert_eq!(model.path(), path);
        assert_eq!(model.parts(), std::slice::from_ref(&path));
        assert_eq!(model.header().split_count(), 1);
    }
}

// T-G1: values llama.cpp asserts on.

#[test]
fn t_g1_hyper_parameters() {
    let out_of_range = |name: &str, key: &str, value: &str| {
        let error = sample(name).parse().expect_err("refused");
        assert!(
            matches!(&error, GgufError::HyperParameterOutOfRange { key: found_key, value: found_value, .. }
                if found_key == key && found_value.as_ref() == value),
            "{name}: {error:?}"
        );
    };
    out_of_range("g1-block-count-zero", "llama.block_count", "0");
    out_of_range("g1-context-length-zero", "llama.context_length", "0");
    out_of_range(
        "g1-rms-epsilon-nan",
        "llama.attention.layer_norm_rms_epsilon",
        "NaN",
    );
    out_of_range(
        "g1-rms-epsilon-negative",
        "llama.attention.layer_norm_rms_epsilon",
        "-0.00001",
    );
    out_of_range(
        "g1-rms-epsilon-zero",
        "llama.attention.layer_norm_rms_epsilon",
        "0",
    );
    out_of_range("g1-rope-freq-base-infinite", "llama.rope.freq_base", "inf");
    out_of_range(
        "g1-rope-scaling-factor-negative",
        "llama.rope.scaling.factor",
        "-2",
    );
    out_of_range("g1-head-count-zero", "llama.attention.head_count", "0");
    out_of_range(
        "g1-feed-forward-zero-in-one-layer",
        "llama.feed_forward_length",
        "0",
    );
    out_of_range(
        "g1-experts-used-without-experts",
        "llama.expert_used_count",
        "2",
    );
    out_of_range("g1-experts-none-used", "llama.expert_used_count", "0");
    out_of_range("g1-expert-count-over-limit", "llama.expert_count", "2000");
    out_of_range(
        "g1-next-token-layers-over-block-count",
        "llama.nextn_predict_layers",
        "3",
    );
    out_of_range("g1-pooling-type-unknown", "llama.pooling_type", "9");
    out_of_range(
        "g1-gemma2-softcap-zero",
        "gemma2.final_logit_softcapping",
        "0",
    );
    out_of_range(
        "g1-rope-dimensions-zero",
        "gemma2.rope.dimension_count",
        "0",
    );
    out_of_range(
        "g1-no-sliding-window-layer",
        "gemma3.attention.sliding_window_pattern",
        "u32 1",
    );
    assert_refused!(
        "g1-epsilon-as-string",
        GgufError::WrongType {
            expected: "f32",
            ..
        }
    );
    assert_refused!(
        "g1-context-length-as-i32",
        GgufError::WrongType {
            expected: "u32",
            ..
        }
    );
    assert_refused!("g1-head-count-as-u64", GgufError::WrongType { .. });
    assert_refused!(
        "g1-head-count-array-length",
        GgufError::LayerArrayLength {
            length: 3,
            layers: 2,
            ..
        }
    );
    assert_refused!(
        "g1-kv-heads-not-a-divisor",
        GgufError::HyperParameterMismatch { value: 3, .. }
    );
    assert_refused!(
        "g1-kv-heads-differ-per-layer",
        GgufError::HyperParameterMismatch { value: 1, .. }
    );
    assert_refused!(
        "g1-gemma3-sliding-window-head-size",
        GgufError::HyperParameterMismatch { value: 16, .. }
    );
    assert_refused!(
        "g1-rope-dimensions-not-head-size",
        GgufError::HyperParameterMismatch { value: 6, .. }
    );
    assert_refused!(
        "g1-value-length-not-key-length",
        GgufError::HyperParameterMismatch { value: 16, .. }
    );
    assert_refused!(
        "g1-heads-do-not-divide-embedding",
        GgufError::HyperParameterMismatch { value: 3, .. }
    );
    assert_refused!(
        "g1-rope-scaling-type-unknown",
        GgufError::UnknownKeyValue { .. }
    );
}

#[test]
fn t_g1_vocabularies() {
    let word = tiny::FIRST_BYTE_TOKEN + 256;
    assert_refused!(
        "g1-duplicate-token",
        GgufError::DuplicateToken { index, first, .. } if index == word + 1 && first == word
    );
    assert_refused!(
        "g1-duplicate-empty-token",
        GgufError::DuplicateToken { index, first, .. } if index == word + 1 && first == word
    );
    assert_refused!(
        "g1-token-not-utf8",
        GgufError::StringNotUtf8 { index: Some(index), .. } if index == word + 1
    );
    assert_refused!(
        "g1-missing-byte-token",
        GgufError::MissingByteToken { byte: 0xE3, .. }
    );
    assert_refused!("g1-tokenizer-none", GgufError::UnsupportedTokenizer { .. });
    assert_refused!(
        "g1-tokenizer-unknown",
        GgufError::UnsupportedTokenizer { .. }
    );
    assert_refused!("g1-bpe-without-merges", GgufError::MissingMerges { .. });
    assert_refused!("g1-bpe-bad-merge", GgufError::BadMerge { index: 1, .. });
    assert_refused!(
        "g1-bpe-merge-not-utf8",
        GgufError::StringNotUtf8 { index: Some(1), .. }
    );
    assert_refused!(
        "g1-bpe-pre-tokenizer-unknown",
        GgufError::UnknownKeyValue { .. }
    );
    assert_refused!(
        "g1-wordpiece-byte-token",
        GgufError::ByteTokenNotAllowed { index: 3, .. }
    );
    assert_refused!(
        "g1-adds-bos-without-one",
        GgufError::MissingSpecialToken { token: "BOS", .. }
    );
    assert_refused!(
        "g1-gemma4-without-bos",
        GgufError::MissingSpecialToken { token: "BOS", .. }
    );
    assert_refused!(
        "g1-gemma4-adds-eos-without-one",
        GgufError::MissingSpecialToken { token: "EOS", .. }
    );
    assert_refused!(
        "g1-wordpiece-without-unknown",
        GgufError::MissingSpecialToken { token: "UNK", .. }
    );
    assert_refused!(
        "g1-wordpiece-token-too-long",
        GgufError::UnusableVocabulary { .. }
    );
    assert_refused!(
        "g1-score-nan",
        GgufError::BadScore { index, .. } if index == word
    );
    assert_refused!(
        "g1-special-id-as-i32",
        GgufError::WrongType {
            expected: "u32",
            ..
        }
    );
    assert_refused!(
        "g1-add-bos-as-u32",
        GgufError::WrongType {
            expected: "bool",
            ..
        }
    );
    for name in [
        "g1-token-type-count-as-string",
        "g1-suppress-tokens-as-u32",
        "g1-name-as-u32",
    ] {
        assert_refused!(name, GgufError::WrongType { .. });
    }
    assert_refused!("g1-empty-vocabulary", GgufError::EmptyVocabulary);
}

#[test]
fn t_g1_tensor_types() {
    for (name, ggml_type) in [
        ("g1-integer-norm-weight", GgmlType::I32),
        ("g1-f16-norm-weight", GgmlType::F16),
        ("g1-quantized-norm-weight", GgmlType::Q8_0),
        ("g1-integer-matrix", GgmlType::I8),
        ("g1-integer-embedding", GgmlType::I32),
        ("g1-activation-quantization-weight", GgmlType::Q8_1),
        ("g1-f16-rope-factors", GgmlType::F16),
    ] {
        assert_refused!(
            name,
            GgufError::TensorTypeNotAllowed { ggml_type: found, .. } if found == ggml_type
        );
    }
}

#[test]
fn t_g1_what_a_model_needs_to_run() {
    for name in [
        "g1-missing-rms-epsilon",
        "g1-missing-block-count",
        "g1-missing-tokenizer",
        "g1-missing-architecture",
    ] {
        assert_refused!(name, GgufError::MissingKey { .. });
    }
    assert_refused!(
        "g1-unknown-architecture",
        GgufError::UnsupportedArchitecture { .. }
    );
    assert_refused!(
        "g1-clip-architecture",
        GgufError::UnsupportedArchitecture { .. }
    );
    assert_refused!("g1-missing-layer-tensor", GgufError::MissingTensor { .. });
    assert_refused!("g1-missing-attention", GgufError::MissingTensor { .. });
    let error = sample("g1-tensor-shape-mismatch")
        .check()
        .expect_err("refused");
    assert!(
        matches!(&error, GgufError::TensorShapeMismatch { found, expected, .. }
            if **found == [32, 8] && **expected == [32, 16]),
        "{error:?}"
    );
    assert_refused!(
        "g1-embedding-rows-not-vocabulary",
        GgufError::EmbeddingRowsMismatch {
            rows: 265,
            vocab_size: 266,
            ..
        }
    );
}

#[test]
fn real_vocabulary_shapes_pass_the_tokenizer_rules() {
    // Byte-level BPE with merges, as SmolLM2 has it.
    let bpe = tiny_model()
        .set_metadata("tokenizer.ggml.model", "gpt2")
        .set_metadata("tokenizer.ggml.pre", "smollm")
        .set_metadata("tokenizer.ggml.add_bos_token", false)
        .set_metadata(
            "tokenizer.ggml.merges",
            vec!["\u{2581} h", "h i", "\u{2581}h i"],
        );
    parse_model(Cursor::new(bpe.to_bytes()), bpe.to_bytes().len() as u64).expect("BPE model");
}

// T-G2: split sets.

/// Writes `parts` as a split set (see [`samples::write_split`]).
fn write_split(dir: &Path, prefix: &str, parts: &[GgufBuilder]) -> Vec<PathBuf> {
    samples::write_split(dir, prefix, parts).expect("write split parts")
}

fn tiny_split(dir: &Path, count: u16) -> Vec<PathBuf> {
    write_split(dir, "tiny", &samples::split_model(&tiny_model(), count))
}

/// The error `check_model` gives for part `part`, unwrapped.
fn split_part_problem(error: GgufError, part: u64) -> GgufError {
    match error {
        GgufError::SplitPart {
            part: found,
            problem,
            ..
        } if found == part => *problem,
        other => panic!("expected a problem with part {part}, got {other:?}"),
    }
}

#[test]
fn a_valid_split_set_passes_with_its_parts_in_order() {
    let directory = tempfile::tempdir().expect("temp dir");
    let paths = tiny_split(directory.path(), 3);
    let model = check_model(&paths[0]).expect("valid split set");
    assert_eq!(model.parts(), paths);
    assert_eq!(model.path(), paths[0]);
    assert_eq!(model.header().split_count(), 3);
    assert_eq!(inspect(&paths[0]).expect("valid").split_count(), 3);
}

#[test]
fn t_g2_a_missing_part_is_named() {
    let directory = tempfile::tempdir().expect("temp dir");
    let paths = tiny_split(directory.path(), 3);
    std::fs::remove_file(&paths[2]).expect("remove part 3");
    let error = check_model(&paths[0]).expect_err("refused");
    let message = error.to_string();
    assert!(message.contains("split part 3 of 3"), "{message}");
    assert!(message.contains("tiny-00003-of-00003.gguf"), "{message}");
    assert!(matches!(
        split_part_problem(error, 3),
        GgufError::Open { .. }
    ));
}

#[test]
fn t_g2_a_directory_as_a_part_is_refused() {
    let directory = tempfile::tempdir().expect("temp dir");
    let paths = tiny_split(directory.path(), 2);
    std::fs::remove_file(&paths[1]).expect("remove part 2");
    std::fs::create_dir(&paths[1]).expect("directory in its place");
    let error = check_model(&paths[0]).expect_err("refused");
    assert!(matches!(
        split_part_problem(error, 2),
        GgufError::NotAFile { .. }
    ));
}

#[cfg(unix)]
#[test]
fn t_g2_a_fifo_as_a_part_never_blocks() {
    let directory = tempfile::tempdir().expect("temp dir");
    let paths = tiny_split(directory.path(), 2);
    std::fs::remove_file(&paths[1]).expect("remove part 2");
    let status = std::process::Command::new("mkfifo")
        .arg(&paths[1])
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo failed");
    let first = paths[0].clone();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(check_model(&first).map(|_| ()));
    });
    let result = receiver
        .recv_timeout(std::time::Duration::from_secs(2))
        .expect("the check blocked on the FIFO for 2 s");
    let error = result.expect_err("refused");
    assert!(matches!(
        split_part_problem(error, 2),
        GgufError::NotAFile { .. }
    ));
}

#[test]
fn t_g2_a_truncated_part_is_refused() {
    let directory = tempfile::tempdir().expect("temp dir");
    let paths = tiny_split(directory.path(), 3);
    let length = std::fs::metadata(&paths[1]).expect("part 2").len();
    File::options()
        .write(true)
        .open(&paths[1])
        .and_then(|file| file.set_len(length - 1))
        .expect("cut part 2");
    let error = check_model(&paths[0]).expect_err("refused");
    assert!(matches!(
        split_part_problem(error, 2),
        GgufError::Truncated { found, .. } if found == length - 1
    ));
}

#[test]
fn t_g2_a_part_of_another_model_is_refused() {
    let directory = tempfile::tempdir().expect("temp dir");
    let paths = tiny_split(directory.path(), 3);
    // Part 2 of a two-part split of the same model: a different split.count.
    let other = tempfile::tempdir().expect("temp dir");
    let other_paths = tiny_split(other.path(), 2);
    std::fs::copy(&other_paths[1], &paths[1]).expect("swap in a foreign part");
    let error = check_model(&paths[0]).expect_err("refused");
    assert!(
        matches!(&error, GgufError::ForeignSplitPart { part: 2, difference, .. }
            if difference.starts_with("'split.count' is 2")),
        "{error:?}"
    );
    // Part 2 of another three-part model: same keys, its own tensors.
    let other_model = tiny_model()
        .tensor("blk.0.extra.weight", GgmlType::F32, &[32, 2])
        .tensor("blk.1.extra.weight", GgmlType::F32, &[32, 2]);
    let third = tempfile::tempdir().expect("temp dir");
    let third_paths = write_split(
        third.path(),
        "other",
        &samples::split_model(&other_model, 3),
    );
    let paths = tiny_split(directory.path(), 3);
    std::fs::copy(&third_paths[1], &paths[1]).expect("swap in a foreign part");
    let error = check_model(&paths[0]).expect_err("refused");
    assert!(
        matches!(
            &error,
            GgufError::ForeignSplitPart { part: 2, .. } | GgufError::DuplicateSplitTensor { .. }
        ),
        "{error:?}"
    );
}

#[test]
fn t_g2_split_keys_must_agree() {
    let directory = tempfile::tempdir().expect("temp dir");
    // llama.cpp reads a later part's split.no with gguf_get_val_u16, which asserts its type.
    let mut parts = samples::split_model(&tiny_model(), 2);
    parts[1] = parts[1].clone().set_metadata("split.no", 1i32);
    let paths = write_split(directory.path(), "wrong-type", &parts);
    let error = check_model(&paths[0]).expect_err("refused");
    assert!(matches!(
        split_part_problem(error, 2),
        GgufError::WrongType {
            expected: "u16",
            ..
        }
    ));
    // A part that says it is another part.
    let mut parts = samples::split_model(&tiny_model(), 3);
    parts[2] = parts[2].clone().set_metadata("split.no", 1u16);
    let paths = write_split(directory.path(), "wrong-index", &parts);
    assert!(matches!(
        check_model(&paths[0]),
        Err(GgufError::ForeignSplitPart { part: 3, .. })
    ));
    // A tensor count that does not add up.
    let parts: Vec<GgufBuilder> = samples::split_model(&tiny_model(), 2)
        .into_iter()
        .map(|part| part.set_metadata("split.tensors.count", 5i32))
        .collect();
    let paths = write_split(directory.path(), "wrong-count", &parts);
    assert!(matches!(
        check_model(&paths[0]),
        Err(GgufError::SplitTensorCount { declared: 5, .. })
    ));
    // The same tensor in two parts.
    let mut parts = samples::split_model(&tiny_model(), 2);
    parts[1] = parts[1]
        .clone()
        .tensor("token_embd.weight", GgmlType::F32, &[32, 265]);
    let paths = write_split(directory.path(), "twice", &parts);
    assert!(matches!(
        check_model(&paths[0]),
        Err(GgufError::DuplicateSplitTensor {
            first: 1,
            second: 2,
            ..
        })
    ));
}

#[test]
fn t_g2_the_first_part_must_be_named_and_opened_as_such() {
    let directory = tempfile::tempdir().expect("temp dir");
    let paths = tiny_split(directory.path(), 2);
    assert!(matches!(
        check_model(&paths[1]),
        Err(GgufError::NotFirstSplitPart { index: 1, count: 2, first, .. }) if *first == *paths[0]
    ));
    let renamed = directory.path().join("tiny.gguf");
    std::fs::copy(&paths[0], &renamed).expect("copy part 1");
    assert!(matches!(
        check_model(&renamed),
        Err(GgufError::SplitFileName { count: 2, .. })
    ));
}

#[test]
fn the_error_stays_small() {
    // GgufError travels inside StoreError and HubError; clippy's
    // `result_large_err` (128 bytes) would flag every function returning
    // them if it grew. Long texts are boxed.
    assert!(
        std::mem::size_of::<GgufError>() <= 64,
        "{} bytes",
        std::mem::size_of::<GgufError>()
    );
}
