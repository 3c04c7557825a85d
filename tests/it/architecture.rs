//! Dependency rules of the crate layout (style.md): only `engine` talks to
//! llama.cpp. A grep keeps the rule true at no cost.

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
