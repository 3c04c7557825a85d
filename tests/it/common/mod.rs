//! Shared helpers for the integration tests: a fresh, isolated olm home per
//! test, the path of the built binary, and the real test models.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub mod server;

/// The repository's `tests/models` directory (filled by `scripts/fetch-test-models.sh`).
pub fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("models")
}

/// SmolLM2-135M-Instruct Q4_1: llama arch, with a chat template.
pub fn smollm2() -> PathBuf {
    require_model("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// gemma-3-270m Q4_K_M: gemma3 arch.
pub fn gemma3() -> PathBuf {
    require_model("gemma-3-270m-q4_k_m.gguf")
}

fn require_model(name: &str) -> PathBuf {
    let path = models_dir().join(name);
    assert!(
        path.is_file(),
        "test model {} is missing: run scripts/fetch-test-models.sh",
        path.display()
    );
    path
}

/// An isolated environment: its own OLM_HOME and Hugging Face cache in a temp dir.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("olm-it-")
            .tempdir()
            .expect("create temp dir for test");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `olm` with this environment's home and cache, no terminal, no colour.
    pub fn olm(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_olm"));
        self.olm_env(&mut command);
        command
    }

    /// Give any command (a shell running olm, say) this environment.
    pub fn olm_env<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("OLM_HOME", self.path().join("olm-home"))
            .env("HF_HOME", self.path().join("hf-home"))
            .env("HF_HUB_OFFLINE", "1")
            .env("NO_COLOR", "1")
            // Tests run in parallel on few cores: one llama.cpp thread each
            // avoids oversubscribing them (OpenMP threads spin while waiting).
            .env("OLM_THREADS", "1")
            .stdin(Stdio::null())
    }
}

/// A test that cannot run here: fail, unless the run names this skip on
/// purpose in `OLM_ALLOW_SKIP` (a comma-separated list of names such as
/// `offline,tmpfs`), in which case the notice is printed and the test
/// returns. CI never sets it: a guarantee that was not checked is a failure.
#[track_caller]
pub fn skip_or_fail(name: &str, why: &str) {
    let allowed = std::env::var("OLM_ALLOW_SKIP").unwrap_or_default();
    if allowed
        .split(',')
        .map(str::trim)
        .any(|allowed| allowed == name)
    {
        eprintln!("skipped ({name}, allowed by OLM_ALLOW_SKIP): {why}");
        return;
    }
    panic!("cannot run this test: {why}; set OLM_ALLOW_SKIP={name} to skip it on purpose");
}

/// A regex of nested alternations `depth` deep (2^depth alternatives): the
/// shape of JSON-schema pattern that made grammar work run for minutes.
pub fn nested_alternations(depth: u32) -> String {
    match depth {
        0 => "a".into(),
        _ => {
            let inner = nested_alternations(depth - 1);
            format!("({inner}|{})", inner.replace('a', "b"))
        }
    }
}

/// Run a command to completion, capturing its output.
pub fn run(command: &mut Command) -> Output {
    command.output().expect("spawn olm")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Assert the process exited normally with `code` (not killed by a signal),
/// showing both streams when it did not.
#[track_caller]
pub fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "expected exit {code}, got {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        stdout(output),
        stderr(output)
    );
}

/// A copy of the SmolLM2 test model whose embedded chat template is
/// `template`. Named `{name}.gguf` in `directory`.
pub fn model_with_template(directory: &Path, name: &str, template: &str) -> PathBuf {
    model_with_metadata(directory, name, "tokenizer.chat_template", template)
}

/// A copy of the SmolLM2 test model with the string `key` set to `value`:
/// the header rewritten by olm's own GGUF writer, the weights copied as
/// they are. Named `{name}.gguf` in `directory`.
pub fn model_with_metadata(directory: &Path, name: &str, key: &str, value: &str) -> PathBuf {
    use std::io::Write;
    let source = smollm2();
    let header = olm::gguf::inspect(&source).expect("the test model parses");
    let rewritten = olm::gguf::writer::GgufBuilder::from_file(&header)
        .set_metadata(key, value)
        .data_len(0)
        .to_bytes();
    let weights = std::fs::read(&source).expect("read the test model");
    let data_offset = usize::try_from(header.data_offset).expect("offset fits");
    let path = directory.join(format!("{name}.gguf"));
    let mut file = std::fs::File::create(&path).expect("create model copy");
    file.write_all(&rewritten).expect("write header");
    file.write_all(&weights[data_offset..])
        .expect("write weights");
    path
}
