//! T-A9: arbitrary bytes into olm's GGUF reader. Invariants: it never panics
//! (libFuzzer also flags any allocation over `-malloc_limit_mb`), and every
//! file it accepts round-trips through olm's writer (unless it holds strings
//! that are not valid UTF-8, which the reader replaces).
//!
//! The reader is included as source, not through the `olm` crate, which
//! links llama.cpp.

#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unused_imports)]
#[path = "../../src/gguf/mod.rs"]
mod gguf;

use gguf::writer::GgufBuilder;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = gguf::parse(Cursor::new(data), data.len() as u64) else {
        return;
    };
    // Strings that were not valid UTF-8 (an RWKV vocabulary's) are read as
    // U+FFFD, which is all the writer can write back: such a file does not
    // round-trip, by design.
    if !file.non_utf8.is_empty() {
        return;
    }
    let written = GgufBuilder::from_file(&file).to_bytes();
    let reparsed = match gguf::parse(Cursor::new(&written), written.len() as u64) {
        Ok(reparsed) => reparsed,
        Err(error) => panic!("olm's writer produced a file its reader refuses: {error}"),
    };
    assert_eq!(reparsed.tensors, file.tensors, "tensor table changed");
    let keys = |file: &gguf::GgufFile| -> Vec<String> {
        file.metadata.iter().map(|(key, _)| key.clone()).collect()
    };
    assert_eq!(keys(&reparsed), keys(&file), "metadata keys changed");
    // Byte equality also covers float values, NaNs included.
    let rewritten = GgufBuilder::from_file(&reparsed).to_bytes();
    assert!(rewritten == written, "writing a parsed file is not stable");
});
