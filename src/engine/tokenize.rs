//! Calling llama.cpp's tokenizer: in pieces of bounded size where the text
//! holds many special tokens (see `partition`), and without running out of
//! stack. Byte-pair
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

use std::ops::Range;

use super::partition::{Fragment, Specials};
use super::EngineError;

/// Longest run of whitespace or of other characters a text may hold (for
/// every vocabulary: llama-cpp-2 cannot say which type some are): a
/// byte-pair vocabulary's regex needs about 350 bytes of stack
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

/// Text up to this long goes to llama.cpp whole: its special-token cut
/// costs little on so few occurrences.
const WHOLE_TEXT_BYTES: usize = 1024;

/// Most bytes of plain text and user-defined tokens given to llama.cpp at
/// once, where the text can be cut: its special-token cut grows with the
/// square of the occurrences in what it is given.
const PIECE_BYTES: usize = 512;

/// llama.cpp's tokens for `text`: BOS and EOS as the vocabulary adds them
/// when `add_special`, control tokens it spells parsed when `parse_special`.
/// With `specials` (see `partition`), a long text is cut at its special
/// tokens first and given to llama.cpp in pieces.
pub fn tokenize(
    model: &LlamaModel,
    specials: Option<&Specials>,
    text: &str,
    add_special: bool,
    parse_special: bool,
) -> Result<Vec<LlamaToken>, EngineError> {
    let Some(specials) = specials.filter(|_| text.len() > WHOLE_TEXT_BYTES) else {
        return tokenize_whole(model, text, add_special, parse_special);
    };
    let vocab = model.vocab();
    let mut tokens = Vec::with_capacity(text.len() / 2 + 2);
    if add_special && vocab.should_add_bos() {
        tokens.push(vocab.bos());
    }
    let mut piece: Option<Range<usize>> = None;
    let flush = |piece: Option<Range<usize>>, tokens: &mut Vec<LlamaToken>| {
        let Some(range) = piece else { return Ok(()) };
        match text.get(range) {
            Some(part) => {
                tokens.extend(tokenize_whole(model, part, false, false)?);
                Ok(())
            }
            None => Err(EngineError::Backend(
                "a special token was found inside a character".into(),
            )),
        }
    };
    for fragment in specials.partition(text.as_bytes(), parse_special) {
        if let Fragment::Token {
            id, control: true, ..
        } = fragment
        {
            flush(piece.take(), &mut tokens)?;
            tokens.push(id);
            continue;
        }
        let span = fragment.span();
        match &mut piece {
            Some(open) if open.end == span.start && open.len() < PIECE_BYTES => open.end = span.end,
            _ => {
                flush(piece.take(), &mut tokens)?;
                piece = Some(span);
            }
        }
    }
    flush(piece, &mut tokens)?;
    if add_special && vocab.should_add_eos() {
        tokens.push(vocab.eos());
    }
    Ok(tokens)
}

/// llama.cpp's tokens for the whole of `text`, on a stack deep enough for
/// its longest run.
fn tokenize_whole(
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

#[cfg(test)]
mod exactness {
    use super::*;
    use crate::engine::{LoadOptions, Model};

    /// Pieces of text that exercise the cut: runs of newlines and spaces
    /// (user-defined tokens in gemma), control tokens of both models,
    /// look-alikes, multi-byte characters.
    const PIECES: [&str; 30] = [
        "a",
        "Hello",
        " world",
        " ",
        "  ",
        "   ",
        "\n",
        "\n\n",
        "\n\n\n",
        "\t",
        "\r\n",
        "é",
        "中文",
        "🙂",
        "!!!",
        "123",
        "<",
        ">",
        "|",
        "<start_of_turn>",
        "<end_of_turn>",
        "<start_of_turn>user\n",
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        "<unused7>",
        "<bos>",
        "<pad>",
        "[multimodal]",
        "<mask>",
    ];

    /// Deterministic texts of 1 to 4 KB from [`PIECES`] (xorshift).
    fn texts(count: usize) -> Vec<String> {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..count)
            .map(|_| {
                let target = 1024 + (next() % 3072) as usize;
                let mut text = String::new();
                while text.len() < target {
                    text.push_str(PIECES[(next() % PIECES.len() as u64) as usize]);
                }
                text
            })
            .collect()
    }

    /// The pieces olm gives llama.cpp tokenize as the whole text does, and
    /// the cut tells which texts spell a control token as tokenizing does, on
    /// both test models (a byte-pair vocabulary with control tokens, and a
    /// SentencePiece one with 6,249 control and 165 user-defined tokens),
    /// with and without BOS/EOS and special tokens parsed.
    #[test]
    fn pieces_tokenize_as_the_whole_text() {
        for name in [
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "gemma-3-270m-q4_k_m.gguf",
        ] {
            let Some(path) = crate::gguf::tests::real_model(name) else {
                return;
            };
            let checked = crate::gguf::check_model(&path).expect("a checked model");
            let model = Model::load(&checked, &LoadOptions::default()).expect("load");
            let kind = model.metadata("tokenizer.ggml.model");
            let specials = Specials::new(&model.inner.vocab(), kind.as_deref())
                .unwrap_or_else(|| panic!("{name}: its special tokens can be cut in Rust"));
            let vocab = model.inner.vocab();
            let short = PIECES.iter().map(|piece| format!("see {piece} here"));
            for text in texts(48).into_iter().chain(short) {
                let tokens = tokenize_whole(&model.inner, &text, false, true).expect("tokenize");
                assert_eq!(
                    model.spells_control_token(&text),
                    crate::engine::plain_text::spells_control_token(&vocab, &tokens),
                    "{name}: whether {text:?} spells a control token"
                );
            }
            for (index, text) in texts(48).iter().enumerate() {
                for (add_special, parse_special) in
                    [(false, false), (false, true), (true, false), (true, true)]
                {
                    let pieces = tokenize(
                        &model.inner,
                        Some(&specials),
                        text,
                        add_special,
                        parse_special,
                    )
                    .expect("tokenize in pieces");
                    let whole = tokenize_whole(&model.inner, text, add_special, parse_special)
                        .expect("tokenize whole");
                    assert!(
                        pieces == whole,
                        "{name}, text {index}, add {add_special}, parse {parse_special}: {} tokens \
                         in pieces, {} whole\n{text:?}",
                        pieces.len(),
                        whole.len()
                    );
                }
            }
        }
    }
}
