//! Bad model files (T-A1…T-A6, T-A8, T-G1 and T-G2 in security-tests.md):
//! `olm show FILE` and `olm run FILE hi` both refuse each one before
//! llama.cpp sees it, with exit 5, nothing on stdout and one `error:` line
//! naming the problem, never with a crash, a signal or a hang. And the
//! rules are not over-strict: the real test models, the tiny model and a
//! valid split set pass and run.
//!
//! The hostile files come from `olm::gguf::samples`, where the unit tests
//! check the exact error of each; here they go through the real binary.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use olm::gguf::samples::{self, Sample};
use olm::gguf::writer::{tiny_model, GgufBuilder};
use serde_json::{json, Value};

use crate::common::server::{Server, MODEL};
use crate::common::{assert_exit, gemma3, run, smollm2, stderr, stdout, TestEnv};

/// The exit code for an invalid or hostile model file.
const INTEGRITY: i32 = 5;

/// How long `olm show` or `olm run` may take to refuse a split set with a
/// part that could block (T-G2: "exit 5 within 2 s, never a hang").
const SPLIT_DEADLINE: Duration = Duration::from_secs(2);

/// `olm show PATH` and `olm run PATH hi` both exit 5, normally (not by a
/// signal), with nothing on stdout and one `error:` line that contains
/// `expected`.
#[track_caller]
fn assert_refused(env: &TestEnv, path: &Path, expected: &str) {
    for command in ["show", "run"] {
        let mut olm = env.olm();
        olm.arg(command).arg(path);
        if command == "run" {
            olm.arg("hi");
        }
        assert_refused_output(
            &run(&mut olm),
            &format!("olm {command} {}", path.display()),
            expected,
        );
    }
}

/// One refusal: exit 5, empty stdout, one escaped `error:` line with
/// `expected`, no panic or backtrace.
#[track_caller]
fn assert_refused_output(output: &Output, what: &str, expected: &str) {
    assert_exit(output, INTEGRITY);
    let stderr = stderr(output);
    let error_lines: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("error:"))
        .collect();
    assert_eq!(
        error_lines.len(),
        1,
        "{what}: expected one error line in\n{stderr}"
    );
    assert!(
        error_lines[0].contains(expected),
        "{what}: expected {expected:?} in\n{stderr}"
    );
    assert!(!stderr.contains('\x1b'), "{what}: raw escape in\n{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("stack backtrace"),
        "{what}: a panic in\n{stderr}"
    );
    assert!(
        output.stdout.is_empty(),
        "{what}: stdout is not empty: {}",
        stdout(output)
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
        assert_refused(&env, &path, &sample.expected);
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

/// T-G1: zero and non-finite hyper-parameters, values of the wrong type,
/// vocabularies llama.cpp cannot build or tokenize with, tensor types ggml
/// has no kernel for in their role, and well-formed files llama.cpp cannot
/// run: each aborted llama.cpp (or made it refuse) behind olm 0.1.0's check.
#[test]
fn t_g1_files_that_would_abort_llama_cpp_exit_5() {
    assert_case_refused("T-G1");
}

/// Runs `command` to completion, or kills it after `deadline` and fails the
/// test: a hang must fail, not block the suite. (Also used by the mutation
/// test.)
pub(crate) fn run_within(command: &mut Command, deadline: Duration, what: &str) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn olm");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("poll olm").is_some() {
            return child.wait_with_output().expect("olm output");
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {deadline:?} (a hang)");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Writes `parts` as a split set (see [`samples::write_split`]).
fn write_split(dir: &Path, prefix: &str, parts: &[GgufBuilder]) -> Vec<PathBuf> {
    samples::write_split(dir, prefix, parts).expect("write split parts")
}

/// The tiny model in `count` parts, in a directory of its own under `env`.
fn tiny_split(env: &TestEnv, name: &str, count: u16) -> Vec<PathBuf> {
    let dir = env.path().join(name);
    std::fs::create_dir(&dir).expect("create split directory");
    write_split(&dir, "tiny", &samples::split_model(&tiny_model(), count))
}

/// `olm show` and `olm run` on a split set's first part, each within
/// [`SPLIT_DEADLINE`], refuse it with `expected`.
#[track_caller]
fn assert_split_refused(env: &TestEnv, first: &Path, expected: &str) {
    for command in ["show", "run"] {
        let mut olm = env.olm();
        olm.arg(command).arg(first);
        if command == "run" {
            olm.arg("hi");
        }
        let what = format!("olm {command} {}", first.display());
        let output = run_within(&mut olm, SPLIT_DEADLINE, &what);
        assert_refused_output(&output, &what, expected);
    }
}

/// T-G2: a FIFO as a part would block `fopen` (olm 0.1.0's `run` hung
/// forever): refused within 2 s, naming the part.
#[cfg(unix)]
#[test]
fn t_g2_a_fifo_part_is_refused_within_2_s() {
    let env = TestEnv::new();
    let parts = tiny_split(&env, "fifo", 3);
    std::fs::remove_file(&parts[1]).expect("remove part 2");
    let status = Command::new("mkfifo")
        .arg(&parts[1])
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo failed");
    assert_split_refused(
        &env,
        &parts[0],
        "tiny-00002-of-00003.gguf is not a regular file",
    );
}

/// T-G2: a missing part is named (olm 0.1.0's `show` reported the set as fine).
#[test]
fn t_g2_a_missing_part_is_named() {
    let env = TestEnv::new();
    let parts = tiny_split(&env, "missing", 3);
    std::fs::remove_file(&parts[2]).expect("remove part 3");
    assert_split_refused(&env, &parts[0], "split part 3 of 3");
    assert_split_refused(&env, &parts[0], "tiny-00003-of-00003.gguf): cannot open");
}

/// T-G2: a directory where a part should be.
#[test]
fn t_g2_a_directory_as_a_part_is_refused() {
    let env = TestEnv::new();
    let parts = tiny_split(&env, "directory", 2);
    std::fs::remove_file(&parts[1]).expect("remove part 2");
    std::fs::create_dir(&parts[1]).expect("directory as part 2");
    assert_split_refused(&env, &parts[0], "is not a regular file");
}

/// T-G2: a part cut short, as an interrupted download leaves it (llama.cpp
/// would mmap past its end).
#[test]
fn t_g2_a_truncated_part_is_refused() {
    let env = TestEnv::new();
    let parts = tiny_split(&env, "truncated", 3);
    let length = std::fs::metadata(&parts[2]).expect("part 3").len();
    File::options()
        .write(true)
        .open(&parts[2])
        .and_then(|file| file.set_len(length / 2))
        .expect("cut part 3");
    assert_split_refused(&env, &parts[0], "split part 3 of 3");
    assert_split_refused(&env, &parts[0], "file truncated");
}

/// T-G2: a part from another model: another split of it (a different
/// `split.count`), and a part of another model's three-part split.
#[test]
fn t_g2_a_foreign_part_is_refused() {
    let env = TestEnv::new();
    let parts = tiny_split(&env, "foreign", 3);
    let other = tiny_split(&env, "other", 2);
    std::fs::copy(&other[1], &parts[1]).expect("swap in a foreign part");
    assert_split_refused(
        &env,
        &parts[0],
        "is not part of this model: 'split.count' is 2, expected 3",
    );
    let bigger = tiny_model().set_metadata("general.name", "another model");
    let bigger = bigger
        .tensor("blk.0.extra.weight", olm::gguf::GgmlType::F32, &[32, 2])
        .tensor("blk.1.extra.weight", olm::gguf::GgmlType::F32, &[32, 2]);
    let dir = env.path().join("bigger");
    std::fs::create_dir(&dir).expect("create directory");
    let another = write_split(&dir, "another", &samples::split_model(&bigger, 3));
    std::fs::copy(&another[1], &parts[1]).expect("swap in another model's part");
    assert_split_refused(&env, &parts[0], "is not part of this model");
}

/// T-G2: opening part 2 says to open part 1.
#[test]
fn t_g2_a_later_part_points_to_the_first() {
    let env = TestEnv::new();
    let parts = tiny_split(&env, "later", 2);
    assert_split_refused(&env, &parts[1], "open its first part");
}

/// Not over-strict: a valid split set passes `show` (which lists its parts)
/// and runs from its first part, as llama.cpp loads it.
#[test]
fn a_valid_split_set_shows_its_parts_and_runs() {
    let env = TestEnv::new();
    let parts = tiny_split(&env, "valid", 3);
    let output = run(env.olm().arg("show").arg(&parts[0]).arg("--json"));
    assert_exit(&output, 0);
    let details: Value = serde_json::from_str(&stdout(&output)).expect("show --json is JSON");
    assert_eq!(details["split_count"], 3);
    let listed: Vec<&str> = details["parts"]
        .as_array()
        .expect("parts is an array")
        .iter()
        .map(|part| part.as_str().expect("a path"))
        .collect();
    let expected: Vec<String> = parts
        .iter()
        .map(|part| part.display().to_string())
        .collect();
    assert_eq!(listed, expected);
    let output = run(env.olm().arg("show").arg(&parts[0]));
    assert_exit(&output, 0);
    assert!(stdout(&output).contains("parts"), "{}", stdout(&output));
    let output = run(env
        .olm()
        .arg("run")
        .arg(&parts[0])
        .args(["--raw", "-n", "2", "hi"]));
    assert_exit(&output, 0);

    // Imported files are stored by hash, where llama.cpp could not find the
    // other parts: importing one is refused, and nothing is registered.
    let output = run(env.olm().args(["pull", "--name", "split"]).arg(&parts[0]));
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("one part of a split model"),
        "{}",
        stderr(&output)
    );
    assert_exit(&run(env.olm().args(["show", "split"])), 3);
}

/// Not over-strict: the real test models and the tiny model pass `show`, and
/// the tiny model (all zeros, but complete) runs.
#[test]
fn real_and_tiny_models_pass_and_the_tiny_model_runs() {
    let env = TestEnv::new();
    for model in [smollm2(), gemma3()] {
        let output = run(env.olm().arg("show").arg(&model).arg("--json"));
        assert_exit(&output, 0);
        let details: Value = serde_json::from_str(&stdout(&output)).expect("JSON");
        assert_eq!(details["parts"].as_array().map(Vec::len), Some(1));
    }
    let tiny = env.path().join("tiny.gguf");
    std::fs::write(&tiny, tiny_model().to_bytes()).expect("write tiny model");
    let output = run(env.olm().arg("show").arg(&tiny));
    assert_exit(&output, 0);
    let output = run(env
        .olm()
        .arg("run")
        .arg(&tiny)
        .args(["--raw", "-n", "2", "hi"]));
    assert_exit(&output, 0);
}

/// Not over-strict: the tiny models with tokenizers that have fewer
/// defaults than SentencePiece (WordPiece, with and without enough tokens
/// for its default ids; Gemma 4's byte pairs) pass `show` and answer a
/// chat prompt and a raw one holding a word they have no token for and the
/// first byte of a control token (which makes olm look its tokens up).
#[test]
fn tiny_models_with_other_tokenizers_run() {
    let env = TestEnv::new();
    let names = [
        "valid-tiny-wordpiece",
        "valid-tiny-small-wordpiece",
        "valid-tiny-gemma4-bpe",
    ];
    let tokenizers: Vec<Sample> = samples::valid()
        .into_iter()
        .filter(|sample| names.contains(&sample.name))
        .collect();
    assert_eq!(tokenizers.len(), names.len());
    for sample in tokenizers {
        let path = env.path().join(format!("{}.gguf", sample.name));
        sample.write_to(&path).expect("write sample file");
        assert_exit(&run(env.olm().arg("show").arg(&path)), 0);
        for raw in [false, true] {
            let mut olm = env.olm();
            olm.arg("run").arg(&path).args(["-n", "2", "hi zq <"]);
            if raw {
                olm.arg("--raw");
            }
            let output = run(&mut olm);
            assert_exit(&output, 0);
        }
    }
}

/// T-A8: a trained context the file claims far beyond anything real
/// (2^31, and the largest `u32`) is olm's to clamp, not a crash: llama.cpp
/// hands the value out as a negative `i32`, which llama-cpp-2 panicked on.
/// `olm run` answers within a context it sizes itself, `--json` included.
#[test]
fn a_trained_context_of_2_31_or_more_runs() {
    let env = TestEnv::new();
    for claimed in [1u32 << 31, u32::MAX] {
        let path = env.path().join(format!("context-{claimed}.gguf"));
        let model = tiny_model().set_metadata("llama.context_length", claimed);
        std::fs::write(&path, model.to_bytes()).expect("write the model");
        let output = run(env.olm().arg("run").arg(&path).args([
            "--raw",
            "-n",
            "2",
            "--json",
            "--temperature",
            "0",
            "hi",
        ]));
        assert_exit(&output, 0);
        let report: Value = serde_json::from_str(&stdout(&output)).expect("JSON");
        // Greedy: sampled, the tiny model's random weights now and then
        // picked its end-of-text token first.
        assert_eq!(report["generated_tokens"], 2, "{claimed}: {report}");
    }
}

/// Splits the real model at `source` into `count` parts in `dir`, as
/// `gguf-split` does: the first part keeps the metadata, every part gets
/// the split keys and its share of the tensors, with their real data.
fn split_real_model(source: &Path, dir: &Path, prefix: &str, count: u16) -> Vec<PathBuf> {
    let header = olm::gguf::inspect(source).expect("the real model is valid");
    let names: Vec<String> = header
        .tensors
        .iter()
        .map(|tensor| tensor.name.clone())
        .collect();
    // Let the writer pack each part's tensors from offset 0.
    let base = names
        .iter()
        .fold(GgufBuilder::from_file(&header), |builder, name| {
            builder.edit_tensor(name, |spec| spec.offset = None)
        });
    let mut model = File::open(source).expect("open the real model");
    samples::split_model(&base, count)
        .iter()
        .enumerate()
        .map(|(index, part)| {
            let path = dir.join(samples::split_part_name(
                prefix,
                index as u64 + 1,
                u64::from(count),
            ));
            let mut bytes = part.clone().data_len(0).to_bytes();
            for spec in part.tensor_specs() {
                let tensor = header.tensor(&spec.name).expect("a tensor of the model");
                let padded =
                    bytes.len().div_ceil(header.alignment as usize) * header.alignment as usize;
                bytes.resize(padded, 0);
                let mut data = vec![0; tensor.byte_size() as usize];
                io::Seek::seek(
                    &mut model,
                    io::SeekFrom::Start(header.data_offset + tensor.offset),
                )
                .and_then(|_| model.read_exact(&mut data))
                .expect("read tensor data");
                bytes.extend_from_slice(&data);
            }
            std::fs::write(&path, bytes).expect("write split part");
            path
        })
        .collect()
}

/// Not over-strict, with real weights: SmolLM2 split in three parts passes
/// `show` and answers exactly as the whole file does (greedy decoding).
#[test]
fn a_real_model_split_in_three_runs_like_the_whole() {
    let env = TestEnv::new();
    let model = smollm2();
    let parts = split_real_model(&model, env.path(), "smollm2", 3);
    let output = run(env.olm().arg("show").arg(&parts[0]));
    assert_exit(&output, 0);
    let answer = |path: &Path| {
        let output = run(env.olm().arg("run").arg(path).args([
            "--temperature",
            "0",
            "-n",
            "12",
            "Name three prime numbers",
        ]));
        assert_exit(&output, 0);
        stdout(&output)
    };
    let whole = answer(&model);
    assert!(!whole.trim().is_empty());
    assert_eq!(answer(&parts[0]), whole);
}

/// A copy of SmolLM2 whose final norm weights are NaN: it passes every
/// check (tensor data is not judged), and every value it computes for the
/// next token is NaN.
fn model_with_nan_weights(dir: &Path) -> PathBuf {
    let source = smollm2();
    let header = olm::gguf::inspect(&source).expect("the real model is valid");
    let norm = header
        .tensor("output_norm.weight")
        .expect("SmolLM2 has a final norm");
    let path = dir.join("damaged.gguf");
    std::fs::copy(&source, &path).expect("copy the model");
    let nan = f32::NAN.to_le_bytes().repeat(norm.byte_size() as usize / 4);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open the copy");
    std::os::unix::fs::FileExt::write_all_at(&file, &nan, header.data_offset + norm.offset)
        .expect("write NaN weights");
    path
}

/// Damaged weights give an error, not an answer: greedy decoding over NaN
/// logits picked token 0 (SmolLM2's end of text: an empty answer, exit
/// 0), sampling picked anything, a `--schema` grammar was dropped (it
/// refuses what the sampler picks among NaNs), and the server sent NaN
/// embeddings as nulls its worker protocol could not read, so the request
/// waited for ever. Now `run` exits 5 naming the cause, and the server
/// answers each such request with an error and keeps serving.
#[test]
fn damaged_weights_are_an_error_not_an_answer() {
    let env = TestEnv::new();
    let damaged = model_with_nan_weights(env.path());
    let schema = env.path().join("schema.json");
    std::fs::write(
        &schema,
        r#"{"type":"object","properties":{"a":{"type":"integer"}}}"#,
    )
    .expect("write schema");
    let schema = schema.to_string_lossy().into_owned();
    for extra in [
        &["--temperature", "0"][..],
        &["--temperature", "0.8", "--seed", "1"],
        &["--schema", &schema],
        &["--draft", "off"],
    ] {
        let output = run(env
            .olm()
            .arg("run")
            .arg(&damaged)
            .args(["hi", "-n", "4", "--no-cache"])
            .args(extra));
        assert_refused_output(
            &output,
            &format!("run {extra:?}"),
            "not numbers (NaN or infinite)",
        );
    }

    let server = Server::start(&[damaged.to_str().expect("a UTF-8 path")]);
    let chat = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
    let started = Instant::now();
    let reply = server.post("/v1/chat/completions", &chat("damaged"));
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert!(reply.body.contains("not numbers"), "{}", reply.body);
    let reply = server.post(
        "/v1/embeddings",
        &json!({"model": "damaged", "input": "hi"}),
    );
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert!(reply.body.contains("an embedding"), "{}", reply.body);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let reply = server.post("/v1/chat/completions", &chat(MODEL));
    assert_eq!(
        reply.status, 200,
        "the other model keeps serving: {}",
        reply.body
    );
}
