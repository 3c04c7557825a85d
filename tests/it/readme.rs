//! The README's commands: every `olm ...` line in a shell block must parse
//! with the real CLI definitions, and blocks marked ```` ```sh test ```` run
//! for real against the test model (named `model.gguf` in their directory,
//! and registered in the store as `qwen-7b`), so a copied example works.

use std::path::Path;

use clap::Parser;

use crate::common::{assert_exit, run, smollm2, stderr, stdout, TestEnv};

struct Block {
    info: String,
    body: String,
}

fn readme_blocks() -> Vec<Block> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        match (&mut current, trimmed.strip_prefix("```")) {
            (None, Some(info)) => {
                current = Some(Block {
                    info: info.trim().to_owned(),
                    body: String::new(),
                })
            }
            (Some(_), Some(_)) => blocks.extend(current.take()),
            (Some(block), None) => {
                block.body.push_str(line);
                block.body.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// The `olm ...` invocations on a shell line: split at pipes, `&&`, `;`, `$(`
/// and quotes of `sh -c '...'`, cut at comments and redirections.
fn olm_invocations(line: &str) -> Vec<String> {
    let line = line.split(" #").next().unwrap_or(line);
    line.split(['|', ';', '\''])
        .flat_map(|part| part.split("&&"))
        .flat_map(|part| part.split("$("))
        .filter_map(|part| {
            let mut words = part.trim();
            for prefix in ["if ! ", "then "] {
                words = words.strip_prefix(prefix).unwrap_or(words);
            }
            // Environment assignments before the command (`VAR=value olm ...`).
            while let Some((first, rest)) = words.split_once(' ') {
                if !first.contains('=') || first.starts_with('-') {
                    break;
                }
                words = rest.trim_start();
            }
            let arguments = words.strip_prefix("olm ")?;
            let arguments = arguments.split(['>', '<']).next().unwrap_or(arguments);
            Some(format!("olm {}", arguments.trim()))
        })
        .collect()
}

#[test]
fn every_olm_command_in_the_readme_parses() {
    let mut checked = 0;
    for block in readme_blocks().iter().filter(|b| b.info.starts_with("sh")) {
        for line in block.body.lines() {
            for command in olm_invocations(line) {
                let words = shlex::split(&command)
                    .unwrap_or_else(|| panic!("unbalanced quotes: {command}"));
                if let Err(error) = olm::cli::Cli::try_parse_from(&words) {
                    use clap::error::ErrorKind;
                    assert!(
                        matches!(
                            error.kind(),
                            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
                        ),
                        "README command does not parse: {command}\n{error}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 25,
        "only {checked} olm commands found in README.md"
    );
}

#[test]
fn runnable_readme_blocks_work() {
    let env = TestEnv::new();
    let work = env.path().join("work");
    std::fs::create_dir_all(work.join("notes")).unwrap();
    std::fs::copy(smollm2(), work.join("model.gguf")).expect("copy test model");
    std::fs::write(
        work.join("notes.txt"),
        "Meeting: ship the release on Friday. Bob writes the changelog.\n",
    )
    .unwrap();
    std::fs::write(
        work.join("notes/a.md"),
        "The cache layout follows Hugging Face.\n",
    )
    .unwrap();
    std::fs::write(
        work.join("app.log"),
        "error: disk full\nwarning: retrying\nerror: disk full\n",
    )
    .unwrap();
    // Bounded fields: the whole object fits in the 160 tokens below, so a
    // tiny model sampling at random cannot ramble past the end of the JSON.
    std::fs::write(
        work.join("person.json"),
        r#"{"type":"object","properties":{"name":{"type":"string","maxLength":40},"age":{"type":"integer"}},"required":["name","age"]}"#,
    )
    .unwrap();
    let import = run(env
        .olm()
        .arg("pull")
        .arg(work.join("model.gguf"))
        .args(["--name", "qwen-7b"]));
    assert_exit(&import, 0);

    let olm_dir = Path::new(env!("CARGO_BIN_EXE_olm"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        olm_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let blocks: Vec<_> = readme_blocks()
        .into_iter()
        .filter(|b| b.info == "sh test")
        .collect();
    assert!(
        blocks.len() >= 2,
        "no runnable blocks marked ```sh test in README.md"
    );
    for block in blocks {
        let script = format!(
            "set -euo pipefail\ngit init -q . && git add notes.txt\n{}",
            block.body
        );
        let mut command = std::process::Command::new("bash");
        env.olm_env(&mut command)
            .current_dir(&work)
            .env("PATH", &path)
            // Short answers keep the test quick; the commands are the README's.
            // Long enough for a whole `--schema` object (see person.json).
            .env("OLM_MAX_TOKENS", "160")
            .arg("-c")
            .arg(&script);
        let output = run(&mut command);
        assert!(
            output.status.success(),
            "README block failed ({:?}):\n{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            output.status,
            block.body,
            stdout(&output),
            stderr(&output)
        );
    }
}
