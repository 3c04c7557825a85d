//! Calling llama.cpp's tokenizer without running out of stack. Byte-pair
//! vocabularies split text with their pre-tokenizer's regular expression,
//! and llama.cpp runs most of those (`default`, `gpt-4o`, `llama4`,
//! `tekken`, `deepseek-v3`, `bloom`…) with C++ `std::regex`, which
//! recurses once per character of a match. A run of 30,000 `!` overflowed
//! the 8 MiB stack of `olm run`'s main thread (SIGSEGV), and about 6,000 a
//! server thread's 2 MiB, taking the model's worker and every request in
//! it down. A match never spans more than one run of whitespace or of
//! non-whitespace characters (and a character or two around it), so text
//! whose longest such run could go deep is tokenized on a thread whose
//! stack is sized for that run, and a run longer than [`MAX_RUN_CHARS`] is
//! refused.
//!
//! Owns: the call into llama.cpp's tokenizer. Must not touch: what is
//! tokenized with which flags (the callers in `engine`).

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::vocab::VocabType;

use super::EngineError;

/// Longest run of whitespace or of other characters a byte-pair
/// vocabulary's text may hold: its regex needs about 350 bytes of stack
/// per character (measured: 8 MiB overflow between 20,000 and 30,000), so
/// this takes a stack of about 256 MiB, touched only as deep as it goes.
pub const MAX_RUN_CHARS: usize = 262_144;

/// Runs this long are tokenized on the calling thread, whatever its stack
/// (a server thread's 2 MiB holds about 6,000).
const RUN_CHARS_ON_ANY_STACK: usize = 2_048;

/// Stack per character of the longest run, with room to spare.
const STACK_BYTES_PER_CHAR: usize = 1024;

/// Stack for the rest of the tokenizer's work.
const BASE_STACK_BYTES: usize = 8 << 20;

/// llama.cpp's tokens for `text`: BOS and EOS as the vocabulary adds them
/// when `add_special`, control tokens it spells parsed when `parse_special`.
pub fn tokenize(
    model: &LlamaModel,
    text: &str,
    add_special: bool,
    parse_special: bool,
) -> Result<Vec<LlamaToken>, EngineError> {
    let call = || {
        model
            .vocab()
            .tokenize(text.as_bytes(), add_special, parse_special)
    };
    if model.vocab().vocab_type() != VocabType::BPE {
        return Ok(call());
    }
    let run = longest_run(text);
    if run <= RUN_CHARS_ON_ANY_STACK {
        return Ok(call());
    }
    if run > MAX_RUN_CHARS {
        return Err(EngineError::RunTooLong {
            chars: run,
            limit: MAX_RUN_CHARS,
        });
    }
    let stack = BASE_STACK_BYTES + run * STACK_BYTES_PER_CHAR;
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("olm-tokenize".into())
            .stack_size(stack)
            .spawn_scoped(scope, call)
            .map_err(|error| {
                EngineError::Backend(format!("cannot start a thread to tokenize: {error}"))
            })?
            .join()
            .map_err(|_| EngineError::Backend("the tokenizing thread panicked".into()))
    })
}

/// The most characters in a row that are all whitespace or all not.
fn longest_run(text: &str) -> usize {
    let mut longest = 0;
    let mut current = 0;
    let mut in_whitespace = None;
    for character in text.chars() {
        let whitespace = character.is_whitespace();
        if in_whitespace == Some(whitespace) {
            current += 1;
        } else {
            in_whitespace = Some(whitespace);
            current = 1;
        }
        longest = longest.max(current);
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_counted_in_characters() {
        assert_eq!(longest_run(""), 0);
        assert_eq!(longest_run("ab  c"), 2);
        assert_eq!(longest_run("a\n\n\n\tb"), 4);
        assert_eq!(longest_run("éééé x"), 4);
        assert_eq!(longest_run(&"!".repeat(30_000)), 30_000);
        // Letters, digits and symbols are one run: some pre-tokenizers
        // (bloom's) match them together.
        assert_eq!(longest_run("ab12!?\u{301}c d"), 8);
        // U+3000, an ideographic space, is whitespace to the regexes too.
        assert_eq!(longest_run("a\u{3000}\u{3000}b"), 2);
    }
}
