//! llama.cpp's special-token partition, done once in Rust. Before its
//! tokenizer proper, llama.cpp cuts the text at every special token it
//! holds (`tokenizer_st_partition` in llama-vocab.cpp): for each special
//! token, longest first, each occurrence in what is still plain text
//! becomes that token. Its list of pieces is walked from the start for
//! every occurrence, so the work grows with the square of the occurrences:
//! gemma-3, whose vocabulary has a special token for each run of newlines
//! and of spaces, took 24.6 s to tokenize 40,000 short lines (80 KB), 5 s
//! for 20,000, and could not be stopped meanwhile.
//!
//! Here the same cut is found from a scan of the text (an Aho-Corasick
//! automaton says which special tokens occur, memchr finds each one), so
//! that llama.cpp is given pieces of bounded size (see `tokenize`). The
//! pieces tokenize as the whole text does: llama.cpp's byte-pair and
//! SentencePiece tokenizers treat each piece of plain text on its own
//! (SentencePiece's space prefix goes to every piece after a special
//! token, and to the first).
//!
//! Owns: where the special tokens of a text are. Must not touch: how plain
//! text is tokenized (llama.cpp's).

use std::collections::HashMap;
use std::ops::Range;

use aho_corasick::AhoCorasick;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token_type::LlamaTokenAttr;
use llama_cpp_2::vocab::LlamaVocab;

/// The vocabulary's special tokens, in the order llama.cpp tries them.
pub struct Specials {
    /// Longest text first (llama.cpp sorts its cache by length).
    tokens: Vec<Special>,
    /// Pattern `i` is `tokens[i].text`.
    automaton: AhoCorasick,
}

struct Special {
    id: LlamaToken,
    text: Box<[u8]>,
    /// A control or unknown token: cut only when special tokens are parsed.
    control: bool,
    /// Whitespace before it is dropped.
    lstrip: bool,
    /// Whitespace after it is dropped.
    rstrip: bool,
}

/// One piece of a partitioned text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fragment {
    /// Plain text, tokenized by llama.cpp's tokenizer.
    Text(Range<usize>),
    /// A special token and the text it stands for.
    Token {
        id: LlamaToken,
        span: Range<usize>,
        control: bool,
    },
}

impl Fragment {
    pub fn span(&self) -> Range<usize> {
        match self {
            Fragment::Text(span) | Fragment::Token { span, .. } => span.clone(),
        }
    }
}

impl Specials {
    /// The special tokens of `vocab`, or `None` where olm cannot cut text
    /// exactly as llama.cpp does: a tokenizer other than SentencePiece
    /// (`llama`) or byte-pair (`gpt2`) may carry state from one piece to the
    /// next; a special token whose text is empty or not UTF-8; two of the
    /// same length that can overlap (llama.cpp's sort leaves their order
    /// open).
    pub fn new(vocab: &LlamaVocab<'_>, tokenizer_model: Option<&str>) -> Option<Self> {
        // llama.cpp's names for its SentencePiece and byte-pair tokenizers
        // (llama-cpp-2's `vocab_type` panics on the types it does not know).
        if !matches!(tokenizer_model, Some("llama" | "gpt2")) {
            return None;
        }
        let mut tokens = Vec::new();
        for id in 0..vocab.n_tokens().max(0) {
            let token = LlamaToken(id);
            let attributes = vocab.attr(token);
            let control = attributes.contains(LlamaTokenAttr::Control)
                || attributes.contains(LlamaTokenAttr::Unknown);
            if !control && !attributes.contains(LlamaTokenAttr::UserDefined) {
                continue;
            }
            let text = vocab.text(token)?.to_bytes();
            if text.is_empty() || std::str::from_utf8(text).is_err() {
                return None;
            }
            tokens.push(Special {
                id: token,
                text: text.into(),
                control,
                lstrip: attributes.contains(LlamaTokenAttr::LStrip),
                rstrip: attributes.contains(LlamaTokenAttr::RStrip),
            });
        }
        tokens.sort_by_key(|special| std::cmp::Reverse(special.text.len()));
        if same_length_overlap(&tokens) {
            return None;
        }
        let automaton = AhoCorasick::new(tokens.iter().map(|special| &special.text[..])).ok()?;
        Some(Self { tokens, automaton })
    }

    /// `text` cut as llama.cpp cuts it; control and unknown tokens only
    /// when `parse_special`.
    pub fn partition(&self, text: &[u8], parse_special: bool) -> Vec<Fragment> {
        let applies = |special: &Special| parse_special || !special.control;
        let mut occurring = vec![false; self.tokens.len()];
        for found in self.automaton.find_overlapping_iter(text) {
            occurring[found.pattern().as_usize()] = true;
        }
        let mut fragments = vec![Fragment::Text(0..text.len())];
        if text.is_empty() {
            fragments.clear();
        }
        for (special, _) in self
            .tokens
            .iter()
            .zip(&occurring)
            .filter(|(special, occurs)| **occurs && applies(special))
        {
            fragments = cut(text, fragments, special);
        }
        fragments
    }
}

/// Each plain piece of `fragments` cut at `special`'s occurrences, as
/// llama.cpp does: leftmost first, none overlapping, whitespace dropped
/// beside a token that strips it.
fn cut(text: &[u8], fragments: Vec<Fragment>, special: &Special) -> Vec<Fragment> {
    let finder = memchr::memmem::Finder::new(&special.text);
    let length = special.text.len();
    let mut out = Vec::with_capacity(fragments.len());
    for fragment in fragments {
        let Fragment::Text(range) = fragment else {
            out.push(fragment);
            continue;
        };
        let mut cursor = range.start;
        loop {
            let Some(at) = finder
                .find(&text[cursor..range.end])
                .map(|offset| cursor + offset)
            else {
                if cursor < range.end {
                    out.push(Fragment::Text(cursor..range.end));
                }
                break;
            };
            let mut left_end = at;
            if special.lstrip {
                while left_end > cursor && is_c_space(text[left_end - 1]) {
                    left_end -= 1;
                }
            }
            if left_end > cursor {
                out.push(Fragment::Text(cursor..left_end));
            }
            out.push(Fragment::Token {
                id: special.id,
                span: at..at + length,
                control: special.control,
            });
            cursor = at + length;
            if special.rstrip {
                while cursor < range.end && is_c_space(text[cursor]) {
                    cursor += 1;
                }
            }
            if cursor >= range.end {
                break;
            }
        }
    }
    out
}

/// C's `isspace` in the "C" locale, which llama.cpp's strips use.
fn is_c_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// Whether two special tokens of the same length can overlap in a text (a
/// proper suffix of one is a prefix of the other): llama.cpp tries tokens
/// of one length in an order its unstable sort leaves open, and an
/// occurrence of the one tried first would hide the other's.
fn same_length_overlap(tokens: &[Special]) -> bool {
    let mut by_length: HashMap<usize, Vec<&[u8]>> = HashMap::new();
    for special in tokens {
        by_length
            .entry(special.text.len())
            .or_default()
            .push(&special.text);
    }
    by_length
        .values()
        .filter(|group| group.len() > 1)
        .any(|group| {
            // Proper prefixes, and which token has each (`None`: several).
            let mut prefixes: HashMap<&[u8], Option<usize>> = HashMap::new();
            for (index, text) in group.iter().enumerate() {
                for end in 1..text.len() {
                    prefixes
                        .entry(&text[..end])
                        .and_modify(|owner| {
                            if *owner != Some(index) {
                                *owner = None;
                            }
                        })
                        .or_insert(Some(index));
                }
            }
            group.iter().enumerate().any(|(index, text)| {
                (1..text.len()).any(|start| match prefixes.get(&text[start..]) {
                    Some(owner) => *owner != Some(index),
                    None => false,
                })
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn special(id: i32, text: &str, control: bool) -> Special {
        Special {
            id: LlamaToken(id),
            text: text.as_bytes().into(),
            control,
            lstrip: false,
            rstrip: false,
        }
    }

    fn specials(mut tokens: Vec<Special>) -> Specials {
        tokens.sort_by_key(|special| std::cmp::Reverse(special.text.len()));
        let automaton = AhoCorasick::new(tokens.iter().map(|special| &special.text[..])).unwrap();
        Specials { tokens, automaton }
    }

    /// Fragments as text: plain pieces quoted, tokens by id.
    fn show(text: &str, fragments: &[Fragment]) -> Vec<String> {
        fragments
            .iter()
            .map(|fragment| match fragment {
                Fragment::Text(range) => format!("{:?}", &text[range.clone()]),
                Fragment::Token { id, .. } => format!("#{}", id.0),
            })
            .collect()
    }

    #[test]
    fn longest_first_then_leftmost() {
        let set = specials(vec![
            special(1, "\n", false),
            special(2, "\n\n", false),
            special(3, "<s>", true),
        ]);
        let text = "a\n\n\nb<s>c\n";
        assert_eq!(
            show(text, &set.partition(text.as_bytes(), true)),
            ["\"a\"", "#2", "#1", "\"b\"", "#3", "\"c\"", "#1"]
        );
        // Control tokens stay text unless special tokens are parsed.
        assert_eq!(
            show(text, &set.partition(text.as_bytes(), false)),
            ["\"a\"", "#2", "#1", "\"b<s>c\"", "#1"]
        );
        assert!(set.partition(b"", true).is_empty());
    }

    #[test]
    fn strips_drop_whitespace_beside_the_token() {
        let mut end = special(7, "<|end|>", true);
        end.rstrip = true;
        let mut mask = special(8, "<mask>", true);
        mask.lstrip = true;
        let set = specials(vec![end, mask]);
        let text = "a <|end|>  \n b  <mask>c";
        assert_eq!(
            show(text, &set.partition(text.as_bytes(), true)),
            ["\"a \"", "#7", "\"b\"", "#8", "\"c\""]
        );
    }

    #[test]
    fn equal_lengths_that_overlap_are_found() {
        let texts = |list: &[&str]| {
            list.iter()
                .map(|text| special(0, text, true))
                .collect::<Vec<_>>()
        };
        assert!(same_length_overlap(&texts(&["ab", "bc"])));
        assert!(same_length_overlap(&texts(&["<a>", "a>x"])));
        // A token overlapping itself is cut the same way in any order.
        assert!(!same_length_overlap(&texts(&["\n\n", "  "])));
        assert!(!same_length_overlap(&texts(&[
            "<unused1>",
            "<unused2>",
            "ab"
        ])));
        assert!(!same_length_overlap(&texts(&["ab", "abc", "bcd0"])));
    }
}
