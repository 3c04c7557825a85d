//! Prompt-lookup drafting for speculative decoding: guess the next tokens
//! by finding the last few tokens of the text so far earlier in the prompt or
//! the answer, and proposing what followed them there. The model checks a
//! whole guess in one batched step; every token it agrees with is a decode
//! step saved. Work that copies from its input (fix this code, rewrite this
//! paragraph, extract these fields) agrees often.
//!
//! Owns: the n-gram index over one sequence's tokens, the draft it proposes,
//! and how long a draft should be given how the last ones fared. Pure (no
//! llama.cpp): tested without a model. The engine's generation loops feed it
//! and verify its drafts.

use std::collections::HashMap;

/// Longest n-gram looked up: a longer match is a better predictor.
const NGRAM_MAX: usize = 4;
/// Shortest n-gram looked up: single tokens repeat too often to predict.
const NGRAM_MIN: usize = 2;

/// How the sequence's drafts are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DraftMode {
    /// No drafting: one token per decode step.
    Off,
    /// Prompt lookup (n-grams of the prompt and the answer so far).
    Ngram,
}

/// Drafting settings of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DraftConfig {
    pub mode: DraftMode,
    /// Most tokens one draft proposes.
    pub max_tokens: u32,
}

impl Default for DraftConfig {
    fn default() -> Self {
        Self {
            mode: DraftMode::Ngram,
            max_tokens: DEFAULT_DRAFT_MAX,
        }
    }
}

/// The default for `--draft-max`: long enough to copy a line of code in one
/// step, short enough that a wrong guess costs little.
pub const DEFAULT_DRAFT_MAX: u32 = 12;
/// The largest `--draft-max` accepted.
pub const MAX_DRAFT_MAX: u32 = 64;

/// An n-gram index over one sequence's tokens, and the adaptive draft length.
#[derive(Debug)]
pub struct Drafter {
    config: DraftConfig,
    /// Every token so far: prompt, then answer.
    history: Vec<i32>,
    /// For each n-gram length, the n-gram's key to the position just after
    /// its latest occurrence (where a copy would continue).
    index: [HashMap<u64, usize>; NGRAM_MAX - NGRAM_MIN + 1],
    length: AdaptiveLength,
}

impl Drafter {
    pub fn new(config: DraftConfig) -> Self {
        Self {
            config,
            history: Vec::new(),
            index: std::array::from_fn(|_| HashMap::new()),
            length: AdaptiveLength::new(config.max_tokens),
        }
    }

    /// Whether drafts are ever proposed.
    pub fn is_enabled(&self) -> bool {
        self.config.mode == DraftMode::Ngram && self.config.max_tokens > 0
    }

    /// Append tokens (the prompt, then each accepted answer token).
    pub fn extend(&mut self, tokens: impl IntoIterator<Item = i32>) {
        if !self.is_enabled() {
            return;
        }
        for token in tokens {
            self.history.push(token);
            self.index_last();
        }
    }

    /// Record the n-grams that end at the token before the last one, each
    /// pointing at the last token (what followed them).
    fn index_last(&mut self) {
        let end = self.history.len() - 1;
        for (slot, length) in (NGRAM_MIN..=NGRAM_MAX).enumerate() {
            if end < length {
                break;
            }
            let key = ngram_key(&self.history[end - length..end]);
            self.index[slot].insert(key, end);
        }
    }

    /// The tokens that followed the longest earlier occurrence of the text's
    /// last n-gram, at most the current draft length; empty when nothing
    /// matches or drafting is paused.
    pub fn draft(&mut self, out: &mut Vec<i32>) {
        out.clear();
        if !self.is_enabled() {
            return;
        }
        let Some(wanted) = self.length.next() else {
            return;
        };
        let len = self.history.len();
        for (slot, length) in (NGRAM_MIN..NGRAM_MAX + 1).enumerate().rev() {
            if len < length + 1 {
                continue;
            }
            let key = ngram_key(&self.history[len - length..]);
            let Some(&start) = self.index[slot].get(&key) else {
                continue;
            };
            // The index was built before the last token arrived: an entry is
            // never the n-gram that ends the history itself.
            let end = (start + wanted).min(len);
            out.extend_from_slice(&self.history[start..end]);
            if !out.is_empty() {
                return;
            }
        }
    }

    /// How a draft of `proposed` tokens fared: `accepted` of them were right.
    pub fn record(&mut self, proposed: usize, accepted: usize) {
        self.length.record(proposed, accepted);
    }
}

fn ngram_key(tokens: &[i32]) -> u64 {
    // FNV-1a over the token ids: cheap, and collisions only cost a wrong guess.
    tokens.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &token| {
        (hash ^ u64::from(token as u32)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The draft length, adapted to how drafts fare: longer after a fully
/// accepted draft, shorter after a rejected one, and paused for a while
/// when drafts keep failing, so that work with nothing to copy pays almost
/// nothing.
#[derive(Debug)]
struct AdaptiveLength {
    max: usize,
    current: usize,
    /// Recent acceptance, as an exponential moving average in [0, 1].
    recent: f32,
    /// Steps left before drafting is tried again.
    paused: u32,
}

/// Below this recent acceptance rate, drafting pauses.
const PAUSE_BELOW: f32 = 0.2;
/// Steps a pause lasts before one more try.
const PAUSE_STEPS: u32 = 16;
/// Weight of the newest draft in the moving average.
const SMOOTHING: f32 = 0.3;

impl AdaptiveLength {
    fn new(max: u32) -> Self {
        let max = max as usize;
        Self {
            max,
            current: max.clamp(1, 4),
            recent: 0.5,
            paused: 0,
        }
    }

    /// The length of the next draft, or `None` while paused.
    fn next(&mut self) -> Option<usize> {
        if self.max == 0 {
            return None;
        }
        if self.paused > 0 {
            self.paused -= 1;
            return None;
        }
        Some(self.current)
    }

    fn record(&mut self, proposed: usize, accepted: usize) {
        if proposed == 0 {
            return;
        }
        let rate = accepted as f32 / proposed as f32;
        self.recent = self.recent * (1.0 - SMOOTHING) + rate * SMOOTHING;
        self.current = if accepted == proposed {
            (self.current * 2).min(self.max)
        } else {
            (accepted + 1).clamp(1, self.max)
        };
        if self.recent < PAUSE_BELOW {
            self.paused = PAUSE_STEPS;
            // One more chance after the pause, from where it stands.
            self.recent = PAUSE_BELOW;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drafter(max: u32) -> Drafter {
        Drafter::new(DraftConfig {
            mode: DraftMode::Ngram,
            max_tokens: max,
        })
    }

    fn draft(drafter: &mut Drafter) -> Vec<i32> {
        let mut out = Vec::new();
        drafter.draft(&mut out);
        out
    }

    #[test]
    fn a_repeated_passage_is_proposed_from_where_it_continued() {
        let mut drafter = drafter(8);
        // "the cat sat on the mat . <answer:> the cat"
        drafter.extend([1, 2, 3, 4, 1, 5, 6, 9, 1, 2]);
        // Last bigram (1, 2) was followed by 3, 4, 1, 5... the first time.
        assert_eq!(draft(&mut drafter), vec![3, 4, 1, 5]);
    }

    #[test]
    fn the_longest_match_wins() {
        let mut drafter = drafter(8);
        // (7, 1, 2) occurs once, followed by 8; (1, 2) last occurred followed by 9.
        drafter.extend([7, 1, 2, 8, 8, 1, 2, 9, 7, 1, 2]);
        assert_eq!(draft(&mut drafter)[0], 8);
    }

    #[test]
    fn nothing_to_copy_drafts_nothing() {
        let mut drafter = drafter(8);
        drafter.extend(1..50);
        assert!(draft(&mut drafter).is_empty());
    }

    #[test]
    fn off_and_zero_length_never_draft() {
        let mut off = Drafter::new(DraftConfig {
            mode: DraftMode::Off,
            max_tokens: 8,
        });
        off.extend([1, 2, 3, 1, 2]);
        assert!(draft(&mut off).is_empty());
        let mut zero = drafter(0);
        zero.extend([1, 2, 3, 1, 2]);
        assert!(draft(&mut zero).is_empty());
    }

    #[test]
    fn length_grows_after_full_acceptance_and_shrinks_after_rejection() {
        let mut length = AdaptiveLength::new(16);
        assert_eq!(length.next(), Some(4));
        length.record(4, 4);
        assert_eq!(length.next(), Some(8));
        length.record(8, 8);
        length.record(16, 16);
        assert_eq!(length.next(), Some(16));
        length.record(16, 2);
        assert_eq!(length.next(), Some(3));
    }

    #[test]
    fn drafts_that_keep_failing_pause_drafting() {
        let mut length = AdaptiveLength::new(8);
        for _ in 0..6 {
            if length.next().is_some() {
                length.record(4, 0);
            }
        }
        let paused = (0..PAUSE_STEPS).filter(|_| length.next().is_none()).count();
        assert!(paused > 0, "a run of failures pauses drafting");
        assert!(
            (0..PAUSE_STEPS + 1).any(|_| length.next().is_some()),
            "and drafting is tried again later"
        );
    }
}
