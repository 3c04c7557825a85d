//! Unit tests: every hostile sample is refused with the right error, the real
//! test models parse, and the writer round-trips.

use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::samples::{self, Sample};
use super::writer::{tiny_model, GgufBuilder};
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

/// Asserts the named hostile sample fails with an error matching `$pattern`.
macro_rules! assert_refused {
    ($name:expr, $pattern:pat) => {{
        let name = $name;
        match sample(name).parse() {
            Err(error) => assert!(matches!(error, $pattern), "{name}: wrong error {error:?}"),
            Ok(_) => panic!("{name}: accepted"),
        }
    }};
}

#[test]
fn every_hostile_sample_is_refused_with_its_message() {
    for sample in samples::hostile() {
        match sample.parse() {
            Ok(_) => panic!("{} ({}): accepted", sample.name, sample.case),
            Err(error) => assert!(
                error.to_string().contains(sample.expected),
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
            message.contains(sample.expected),
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
    assert_refused!("a4-name-empty", GgufError::EmptyTensorName { index: 1 });
    assert_refused!("a4-duplicate-name", GgufError::DuplicateTensor { .. });
    assert_refused!(
        "a4-offset-unaligned",
        GgufError::MisalignedTensor {
            offset: 1793,
            alignment: 32,
            ..
        }
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
    assert_refused!(
        "a5-gap-between-tensors",
        GgufError::UnexpectedTensorOffset {
            offset: 1824,
            expected: 1792,
            ..
        }
    );
    assert_refused!(
        "a5-out-of-order",
        GgufError::UnexpectedTensorOffset { expected: 0, .. }
    );
    assert_refused!("a5-offset-overflow", GgufError::TensorOffsetOverflow { .. });
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
            id: 5,
            vocab_size: 5,
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
        GgufError::TokenIdOutOfRange { id: 99, .. }
    );
    assert_refused!(
        "a6-tokens-shorter-than-vocab-size",
        GgufError::VocabSizeMismatch {
            declared: 6,
            tokens: 5,
            ..
        }
    );
    assert_refused!(
        "a6-token-type-length",
        GgufError::VocabLengthMismatch {
            length: 4,
            vocab_size: 5,
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
    assert_eq!(file.vocab_size(), Some(5));
    assert_eq!(file.file_type_name().as_deref(), Some("Q4_0"));
    assert!(file
        .chat_template()
        .is_some_and(|template| template.contains("messages")));
    assert_eq!(file.parameter_count(), 32 * 5 + 2 * 32 * 32 + 32);
    assert_eq!(file.tensor_data_size(), 640 + 2 * 576 + 128);
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

#[test]
fn invalid_utf8_in_values_is_replaced_not_refused() {
    // RWKV vocabularies hold raw bytes.
    let bytes = writer::RawGguf::header(3, 0, 1)
        .string("tokenizer.ggml.tokens")
        .u32(ValueType::Array.id())
        .u32(ValueType::String.id())
        .u64(1)
        .string_bytes(b"\xe4\xb8")
        .into_bytes();
    let file = parse_bytes(&bytes).expect("valid");
    let tokens = file
        .get_array("tokenizer.ggml.tokens")
        .and_then(Array::as_strings);
    assert_eq!(tokens, Some(&["\u{fffd}".to_owned()][..]));
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

#[expect(clippy::print_stderr, reason = "the skip note belongs in the test log")]
fn real_model(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/models")
        .join(name);
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "skipped: {} is missing (run scripts/fetch-test-models.sh)",
            path.display()
        );
        None
    }
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
