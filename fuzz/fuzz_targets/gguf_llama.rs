//! T-G1: the values llama.cpp reads, mutated (`olm::gguf::mutate`, steered
//! by the fuzz input) in the tiny model of each covered architecture, then
//! checked by olm exactly as `olm run` checks a file (`gguf::check_model`)
//! and, when the check accepts it, loaded and run by llama.cpp: tokenize a
//! prompt with multi-byte characters, evaluate it, generate two tokens.
//! Oracle: whatever olm's check accepts, llama.cpp runs without aborting.
//! An abort or crash here (libFuzzer reports it, with the input) is a
//! validation rule olm is missing; llama.cpp refusing a file cleanly is not.
//!
//! Needs the olm crate and so llama.cpp: only the `engine` feature builds it.

#![no_main]

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use olm::engine::{GenerateRequest, LoadOptions, Model, Prompt, SessionOptions};
use olm::gguf::mutate::{mutate_with, Choices};
use olm::gguf::writer::{tiny_model_for, TinyArchitecture};

/// Text that needs byte tokens, multi-byte characters and a newline.
const PROMPT: &str = "hi there\n\u{65e5}\u{672c} \u{fc} \u{1f642}";

/// Where this process writes each mutated model (llama.cpp loads from a path).
fn model_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        olm::engine::configure_logging(false);
        std::env::temp_dir().join(format!("olm-fuzz-gguf-llama-{}.gguf", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let mut choices = Choices::from_bytes(data);
    let architecture = *choices.pick(&TinyArchitecture::ALL);
    let mutation = mutate_with(&tiny_model_for(architecture), &mut choices);
    let path = model_path();
    if std::fs::write(path, mutation.to_bytes()).is_err() {
        return;
    }
    if olm::gguf::check_model(path).is_err() {
        return;
    }
    // Accepted: llama.cpp must load and run it, or refuse it cleanly.
    let Ok(model) = Model::load(path, &LoadOptions::default()) else {
        return;
    };
    let Ok(tokens) = model.tokenize(&Prompt::Raw(PROMPT.to_owned())) else {
        return;
    };
    let options = SessionOptions {
        n_ctx: 64,
        threads: 1,
        n_batch: 64,
    };
    let Ok(mut session) = model.session(&options) else {
        return;
    };
    let request = GenerateRequest {
        max_tokens: Some(2),
        ..GenerateRequest::default()
    };
    let cancel = AtomicBool::new(false);
    let _ = session.generate(&tokens, &request, &cancel, |_piece| Ok::<(), ()>(()));
});
