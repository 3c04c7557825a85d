//! Bad model files (T-A1…T-A6, T-A8 in security-tests.md): `olm run FILE hi`
//! refuses each one before llama.cpp sees it, with exit 5 and an `error:`
//! line naming the problem, never with a crash or a signal.
//!
//! The hostile files come from `olm::gguf::samples`, where the unit tests
//! check the exact error of each; here they go through the real binary.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use olm::gguf::samples::{self, Sample};

use crate::common::{assert_exit, run, smollm2, stderr, TestEnv};

/// The exit code for an invalid or hostile model file.
const INTEGRITY: i32 = 5;

/// `olm run PATH hi` exits 5, normally (not by a signal), with one `error:`
/// line that contains `expected`.
#[track_caller]
fn assert_refused(env: &TestEnv, path: &Path, expected: &str) {
    let output = run(env.olm().arg("run").arg(path).arg("hi"));
    assert_exit(&output, INTEGRITY);
    let stderr = stderr(&output);
    let error_lines: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("error:"))
        .collect();
    assert_eq!(
        error_lines.len(),
        1,
        "{}: expected one error line in\n{stderr}",
        path.display()
    );
    assert!(
        error_lines[0].contains(expected),
        "{}: expected {expected:?} in\n{stderr}",
        path.display()
    );
    assert!(
        !stderr.contains('\x1b'),
        "{}: raw escape in\n{stderr}",
        path.display()
    );
}

/// Writes every hostile sample of one test-plan case and runs `olm` on it.
fn assert_case_refused(case: &str) {
    let env = TestEnv::new();
    let cases: Vec<Sample> = samples::hostile()
        .into_iter()
        .filter(|sample| sample.case == case)
        .collect();
    assert!(!cases.is_empty(), "no samples for {case}");
    for sample in cases {
        let path = env.path().join(format!("{}.gguf", sample.name));
        sample.write_to(&path).expect("write sample file");
        assert_refused(&env, &path, sample.expected);
    }
}

/// Empty file, `GGUF` only (CVE-2024-39720), bad magic, versions 0/1/4,
/// counts of 2^64−1.
#[test]
fn t_a1_bad_headers_exit_5() {
    assert_case_refused("T-A1");
}

/// Strings of 2^63 and 16 MiB + 1 bytes, arrays of 64 Mi + 1 strings and of
/// 2^40 bytes in a 1 KiB file, empty and duplicate keys, value type 13
/// (CVE-2025-0315, ollama#17042, ggml-org/llama.cpp#19856).
#[test]
fn t_a2_bad_metadata_exit_5() {
    assert_case_refused("T-A2");
}

/// `general.alignment` 0 (CVE-2025-0317), 13, 2^31 (ggml-org/llama.cpp#24997),
/// and stored as an int32.
#[test]
fn t_a3_bad_alignment_exits_5() {
    assert_case_refused("T-A3");
}

/// Five or zero dimensions, a zero dimension, overflowing shapes
/// (ggml-org/llama.cpp#18674), a Q4_0 row of 31, unknown and removed type ids,
/// long, empty and duplicate names, unaligned offsets.
#[test]
fn t_a4_bad_tensor_descriptors_exit_5() {
    assert_case_refused("T-A4");
}

/// Tensor data past the end of the file (CVE-2026-7482), cut files,
/// overlapping and unordered tensors.
#[test]
fn t_a5_bad_tensor_data_exits_5() {
    assert_case_refused("T-A5");
}

/// Special token ids out of range (ggml-org/llama.cpp#25475), short token
/// lists (ggml-org/llama.cpp#14145), mismatched arrays, bad byte tokens
/// (ggml-org/llama.cpp#25969), a 100 MB token.
#[test]
fn t_a6_bad_vocabulary_exits_5() {
    assert_case_refused("T-A6");
}

/// `block_count` 100000, `embedding_length` 2^30 and other metadata that
/// would size allocations.
#[test]
fn t_a8_metadata_that_drives_allocation_exits_5() {
    assert_case_refused("T-A8");
}

#[test]
fn a_directory_exits_5() {
    let env = TestEnv::new();
    let directory = env.path().join("directory.gguf");
    std::fs::create_dir(&directory).expect("create directory");
    assert_refused(&env, &directory, "is not a regular file");
}

#[test]
fn an_empty_file_exits_5() {
    let env = TestEnv::new();
    let path = env.path().join("empty.gguf");
    File::create(&path).expect("create empty file");
    assert_refused(&env, &path, "not a GGUF file");
}

#[test]
fn a_text_file_exits_5() {
    let env = TestEnv::new();
    let path = env.path().join("notes.gguf");
    std::fs::write(&path, "These are my notes, not a model.\n").expect("write text file");
    assert_refused(&env, &path, "not a GGUF file: bad magic");
}

/// Copies the first `length` bytes of `source` to `destination`.
fn copy_prefix(source: &Path, destination: &Path, length: u64) -> io::Result<()> {
    let mut reader = File::open(source)?.take(length);
    let mut writer = File::create(destination)?;
    io::copy(&mut reader, &mut writer)?;
    Ok(())
}

/// A real model cut at 50 % and at size − 1 (an interrupted download):
/// refused with the sizes, never a SIGBUS from reading a mapped region past
/// the end of the file (CVE-2026-7482).
#[test]
fn t_a5_real_model_cut_short_exits_5() {
    let env = TestEnv::new();
    let model = smollm2();
    let size = std::fs::metadata(&model).expect("model size").len();
    for length in [size / 2, size - 1] {
        let path = env.path().join(format!("smollm2-cut-{length}.gguf"));
        copy_prefix(&model, &path, length).expect("copy model prefix");
        assert_refused(
            &env,
            &path,
            &format!("file truncated: expected {size} bytes, found {length}"),
        );
        std::fs::remove_file(&path).expect("remove cut copy");
    }
}
