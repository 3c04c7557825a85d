//! Dependency rules of the crate layout (design.md, style.md): only `engine`
//! talks to llama.cpp, and the library modules never reach back into
//! `commands`, `cli` or `ui`. A grep keeps the rules true at no cost.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn only_the_engine_uses_llama_cpp() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let engine = src.join("engine");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let offenders: Vec<_> = files
        .iter()
        .filter(|path| !path.starts_with(&engine))
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            text.contains("llama_cpp_2") || text.contains("llama_cpp_sys_2")
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "llama.cpp used outside src/engine: {offenders:?}"
    );
}

/// The library modules that `commands` glues together; they must not reach
/// back up into the command layer or the terminal.
const LIBRARY_DIRS: [&str; 5] = ["server", "hub", "store", "engine", "gguf"];

/// Modules only `main` and `commands` may use.
const FRONT_END: [&str; 3] = ["commands", "cli", "ui"];

/// Known violations still to fix, as (file under src/, module). Each must
/// still occur, so a fixed one is removed from this list.
const KNOWN: [(&str, &str); 0] = [];

/// The front-end modules a line of code names through `crate::`, either as a
/// path (`crate::ui::x`) or in a group (`use crate::{cli, ui::y}`).
fn front_end_uses(line: &str) -> Vec<&'static str> {
    let code = line.trim_start();
    if code.starts_with("//") {
        return Vec::new();
    }
    let mut found = Vec::new();
    for (start, _) in code.match_indices("crate::") {
        let rest = &code[start + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group.split([',', '}']).map(|item| item.trim()).collect(),
            None => vec![rest],
        };
        for name in names {
            let head: String = name
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if let Some(module) = FRONT_END.iter().find(|module| **module == head) {
                found.push(*module);
            }
        }
    }
    found
}

#[test]
fn library_modules_do_not_use_commands_cli_or_ui() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for dir in LIBRARY_DIRS {
        let path = src.join(dir);
        if path.is_dir() {
            rust_files(&path, &mut files);
        }
        let single = src.join(format!("{dir}.rs"));
        if single.is_file() {
            files.push(single);
        }
    }
    assert!(
        files.len() > 10,
        "too few files found under src/: {files:?}"
    );
    let mut offenders = Vec::new();
    let mut seen_known = Vec::new();
    for path in &files {
        let relative = path
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(path).expect("read source file");
        for (number, line) in text.lines().enumerate() {
            for module in front_end_uses(line) {
                if KNOWN.contains(&(relative.as_str(), module)) {
                    seen_known.push((relative.clone(), module));
                } else {
                    offenders.push(format!("src/{relative}:{}: {}", number + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "library modules must not use commands, cli or ui (design.md, \"Dependencies point one way\"):\n{}",
        offenders.join("\n")
    );
    for (file, module) in KNOWN {
        assert!(
            seen_known
                .iter()
                .any(|(seen, used)| seen == file && *used == module),
            "src/{file} no longer uses crate::{module}: remove it from KNOWN"
        );
    }
}

#[test]
fn front_end_uses_finds_paths_and_groups() {
    assert_eq!(front_end_uses("use crate::commands::{a, b};"), ["commands"]);
    assert_eq!(front_end_uses("    crate::ui::init_tracing(true);"), ["ui"]);
    assert_eq!(
        front_end_uses("use crate::{cli::Cli, store, ui};"),
        ["cli", "ui"]
    );
    assert!(front_end_uses("use crate::client::X; use crate::uix;").is_empty());
    assert!(front_end_uses("// see crate::commands::exit_code").is_empty());
    assert!(front_end_uses("use crate::hub::pull::PullEvents;").is_empty());
}
