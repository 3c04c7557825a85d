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
/// How many of an n-gram's latest occurrences are weighed against each
/// other: code and prose repeat short n-grams (`) -> None:`, `, and the`)
/// in places that continue differently.
const CANDIDATES: usize = 16;
/// How far back the text before an occurrence is compared with the text
/// before the end.
const CONTEXT_MAX: usize = 64;

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

/// Number of n-gram lengths a match can have (each keeps its own rate).
const SOURCES: usize = NGRAM_MAX - NGRAM_MIN + 1;

/// What earlier answers' drafts taught, for the next answer's drafter to
/// start from: for each n-gram length of a match, the chance that its
/// drafted tokens (real, or judged without the model while drafting did
/// not pay) were right when that answer ended (see [`Continuation`]). A
/// server asked the same kind of question again and again (counting, an
/// open question) does not pay a few wrong drafts per answer to learn
/// again that drafting loses there; one whose answers copy starts drafting
/// at once. An answer that copies after answers that did not has its
/// guesses judged without the model and starts drafting a few guesses in.
#[derive(Debug, Clone, Copy)]
pub struct AcceptancePrior {
    chances: [f32; SOURCES],
}

impl Default for AcceptancePrior {
    fn default() -> Self {
        Self {
            chances: [FIRST_CONTINUATION; SOURCES],
        }
    }
}

/// An n-gram index over one sequence's tokens, and the adaptive draft length.
#[derive(Debug)]
pub struct Drafter {
    config: DraftConfig,
    /// Every token so far: prompt, then answer.
    history: Vec<i32>,
    /// For each n-gram length, the n-gram's key to the position just after
    /// its latest occurrence (where a copy would continue).
    latest: [HashMap<u64, usize>; SOURCES],
    /// For each n-gram length and each position `p` of the history, the
    /// position after the occurrence before the one `p` follows, of the
    /// same n-gram (a chain from `latest` back through the history).
    earlier: [Vec<Option<usize>>; SOURCES],
    length: AdaptiveLength,
    /// While drafting does not pay: the draft it would have proposed, judged
    /// against the tokens that follow instead of by the model.
    shadow: Shadow,
    /// The n-gram length (as an index) of the last draft's match.
    drafted_from: usize,
}

impl Drafter {
    /// A drafter for one answer, whose chances start at `prior`'s.
    pub fn new(config: DraftConfig, prior: &AcceptancePrior) -> Self {
        Self {
            config,
            history: Vec::new(),
            latest: std::array::from_fn(|_| HashMap::new()),
            earlier: std::array::from_fn(|_| Vec::new()),
            length: AdaptiveLength::new(config.max_tokens, prior),
            shadow: Shadow::default(),
            drafted_from: 0,
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
            if let Some((source, proposed, accepted)) = self.shadow.judge(token) {
                self.length.record(source, proposed, accepted);
            }
        }
    }

    /// Record the n-grams that end at the token before the last one, each
    /// pointing at the last token (what followed them), and chained to their
    /// previous occurrence.
    fn index_last(&mut self) {
        let end = self.history.len() - 1;
        for (slot, length) in (NGRAM_MIN..=NGRAM_MAX).enumerate() {
            let previous = (end >= length)
                .then(|| ngram_key(&self.history[end - length..end]))
                .and_then(|key| self.latest[slot].insert(key, end));
            self.earlier[slot].push(previous);
        }
    }

    /// The tokens that followed an earlier occurrence of the text's last
    /// n-gram (the longest that occurred before; of its latest occurrences,
    /// the one preceded by the longest run of the same tokens as the text's
    /// end: the copy in progress, not another place where the same few
    /// tokens appear), at most the current draft length, and only as many
    /// tokens as are worth a drafted column's cost, `column_cost` (see
    /// [`StepCosts`]), given how often recent drafts from matches of that
    /// n-gram length were right: a long match often predicts a copy, a
    /// short one only sometimes. Empty when nothing matches or not even the
    /// first token is worth it; such a draft is kept and judged against the
    /// tokens that follow instead, so that drafting resumes as soon as it
    /// would pay, without the model paying for the tries.
    pub fn draft(&mut self, out: &mut Vec<i32>, column_cost: f32) {
        out.clear();
        if !self.is_enabled() {
            return;
        }
        let Some(source) = self.lookup(self.length.current, out) else {
            return;
        };
        let worth = self.length.worth(source, column_cost);
        if worth > 0 {
            out.truncate(worth);
            self.shadow.clear();
            self.drafted_from = source;
        } else {
            if self.shadow.is_idle() {
                self.shadow.start(source, out);
            }
            out.clear();
        }
    }

    /// Fill `out` with at most `wanted` tokens; the index of the n-gram
    /// length that matched.
    fn lookup(&self, wanted: usize, out: &mut Vec<i32>) -> Option<usize> {
        out.clear();
        let len = self.history.len();
        for (slot, length) in (NGRAM_MIN..NGRAM_MAX + 1).enumerate().rev() {
            if len < length + 1 {
                continue;
            }
            let key = ngram_key(&self.history[len - length..]);
            let Some(start) = self.best_occurrence(slot, key, length) else {
                continue;
            };
            // The index was built before the last token arrived: an entry is
            // never the n-gram that ends the history itself.
            let end = (start + wanted).min(len);
            out.extend_from_slice(&self.history[start..end]);
            if !out.is_empty() {
                return Some(slot);
            }
        }
        None
    }

    /// Of the latest [`CANDIDATES`] occurrences of the n-gram `key` (of
    /// `length` tokens), the position after the one whose preceding tokens
    /// match the end of the history the longest; the latest on a tie. An
    /// occurrence that does not match even the n-gram (a hash collision)
    /// is never chosen.
    fn best_occurrence(&self, slot: usize, key: u64, length: usize) -> Option<usize> {
        let mut best: Option<(usize, usize)> = None;
        let mut next = self.latest[slot].get(&key).copied();
        for _ in 0..CANDIDATES {
            let Some(start) = next else {
                break;
            };
            let context = self.common_context(start);
            if context >= length && best.is_none_or(|(longest, _)| context > longest) {
                best = Some((context, start));
            }
            next = self.earlier[slot][start];
        }
        best.map(|(_, start)| start)
    }

    /// How many tokens before position `start` equal the history's last
    /// tokens, in order backwards, up to [`CONTEXT_MAX`].
    fn common_context(&self, start: usize) -> usize {
        let before = self.history[..start].iter().rev();
        let end = self.history.iter().rev();
        before
            .zip(end)
            .take(CONTEXT_MAX)
            .take_while(|(earlier, last)| earlier == last)
            .count()
    }

    /// How a draft of `proposed` tokens fared: `accepted` of them were right.
    pub fn record(&mut self, proposed: usize, accepted: usize) {
        self.length.record(self.drafted_from, proposed, accepted);
    }

    /// At the end of the answer: what its drafts taught, for the next
    /// answer's drafter. Only the rates of the n-gram lengths this answer's
    /// drafts came from change (another answer, still going, may have
    /// taught the others since this one started).
    pub fn teach(&self, prior: &mut AcceptancePrior) {
        for (learned, (rate, judged)) in prior
            .chances
            .iter_mut()
            .zip(self.length.rates.iter().zip(self.length.judged))
        {
            if judged {
                *learned = rate.chance();
            }
        }
    }
}

/// What drafted tokens cost where olm runs, learned from the times of its
/// own decode steps.
///
/// A drafted token is one more column in a step's batch; an accepted one
/// saves its sequence's share of a whole step. For `k` sequences decoded
/// together, a step without drafts takes `base` and each drafted column adds
/// `extra`: a column costs its sequence `k * extra / base` of a token, and
/// a drafted token pays when the chance that it is accepted is above that.
/// On a 2-CPU machine and a 135M model a column costs 0.45-0.7 of a
/// one-sequence step (the first column of a step the most); on a GPU or
/// with a large model it is nearer 0.1. Until both times are known for `k`,
/// the cost comes from the nearest `k` that has them, or from
/// [`PRIOR_COLUMN_COST`].
#[derive(Debug, Default)]
pub struct StepCosts {
    /// Indexed by the number of sequences in the step.
    by_sequences: Vec<StepTimes>,
}

/// Moving averages of one kind of step's decode times.
#[derive(Debug, Default, Clone, Copy)]
struct StepTimes {
    /// Seconds of a step without drafts.
    base: Option<f32>,
    /// Seconds of a step with drafts, and how many drafted columns it had.
    drafted: Option<(f32, f32)>,
}

/// The column cost assumed before any step is measured, as a share of a
/// one-sequence step: what this machine's kind measures for the test models.
const PRIOR_COLUMN_COST: f32 = 0.6;
/// Weight of the newest step in the moving averages.
const TIME_SMOOTHING: f32 = 0.2;
/// The most sequences a step is learned for (more share the last entry).
const MAX_SEQUENCES: usize = 64;

impl StepCosts {
    /// A decode step of `sequences` generating sequences with `drafted`
    /// drafted columns in all (and no prompt tokens) took `seconds`.
    pub fn record(&mut self, sequences: usize, drafted: usize, seconds: f32) {
        if sequences == 0 || !seconds.is_finite() || seconds <= 0.0 {
            return;
        }
        let index = sequences.min(MAX_SEQUENCES);
        if self.by_sequences.len() <= index {
            self.by_sequences.resize(index + 1, StepTimes::default());
        }
        let times = &mut self.by_sequences[index];
        let blend = |old: f32, new: f32| old + (new - old) * TIME_SMOOTHING;
        if drafted == 0 {
            times.base = Some(times.base.map_or(seconds, |old| blend(old, seconds)));
        } else {
            let columns = drafted as f32;
            times.drafted = Some(times.drafted.map_or((seconds, columns), |(time, count)| {
                (blend(time, seconds), blend(count, columns))
            }));
        }
    }

    /// What a drafted column costs one of `sequences` sequences decoded
    /// together, in its tokens: a drafted token saves time when its chance
    /// of being accepted is above this.
    pub fn column_cost(&self, sequences: usize) -> f32 {
        let k = sequences.clamp(1, MAX_SEQUENCES);
        let cost = self
            .nearest_measured(k)
            .map_or(PRIOR_COLUMN_COST, |(measured_k, share)| {
                one_sequence_cost(measured_k, share)
            });
        // A step of k sequences costs 1 + cost (k - 1) one-sequence steps.
        let share = cost / (1.0 + cost * (k as f32 - 1.0));
        (k as f32 * share).clamp(0.0, 1.0)
    }

    /// The measured `k` nearest to `wanted`, and a drafted column's cost there
    /// as a share of that step.
    fn nearest_measured(&self, wanted: usize) -> Option<(usize, f32)> {
        let measured = |k: usize| {
            let times = self.by_sequences.get(k)?;
            let (base, (time, columns)) = (times.base?, times.drafted?);
            Some((k, ((time - base) / columns / base).max(0.0)))
        };
        (0..MAX_SEQUENCES).find_map(|distance| {
            let below = wanted.checked_sub(distance).and_then(measured);
            below.or_else(|| measured(wanted + distance))
        })
    }
}

/// A drafted column's cost as a share of a one-sequence step, from its share
/// of a `k`-sequence step (inverting `share = c / (1 + c (k - 1))`).
fn one_sequence_cost(k: usize, share: f32) -> f32 {
    let room = 1.0 - share * (k as f32 - 1.0);
    if room <= 0.0 {
        return 1.0;
    }
    (share / room).min(1.0)
}

fn ngram_key(tokens: &[i32]) -> u64 {
    // FNV-1a over the token ids: cheap, and collisions only cost a wrong guess.
    tokens.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &token| {
        (hash ^ u64::from(token as u32)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A draft not shown to the model, judged token by token against the text
/// that follows it.
#[derive(Debug, Default)]
struct Shadow {
    /// The n-gram length (as an index) of the guess's match.
    source: usize,
    guess: Vec<i32>,
    matched: usize,
}

impl Shadow {
    fn is_idle(&self) -> bool {
        self.guess.is_empty()
    }

    fn start(&mut self, source: usize, guess: &[i32]) {
        self.source = source;
        self.guess.clear();
        self.guess.extend_from_slice(guess);
        self.matched = 0;
    }

    fn clear(&mut self) {
        self.guess.clear();
        self.matched = 0;
    }

    /// The next token of the text: `Some((source, proposed, accepted))` once
    /// the guess is settled (a token differed, or all of it matched).
    fn judge(&mut self, token: i32) -> Option<(usize, usize, usize)> {
        let expected = *self.guess.get(self.matched)?;
        if expected == token {
            self.matched += 1;
            if self.matched < self.guess.len() {
                return None;
            }
        }
        let outcome = (self.source, self.guess.len(), self.matched);
        self.clear();
        Some(outcome)
    }
}

/// The draft length, adapted to how drafts fare (longer after a fully
/// accepted draft, shorter after a rejected one), and for each n-gram length
/// of the match a draft comes from, how often such drafts' tokens are right:
/// that decides how many of a draft's tokens are worth their columns.
#[derive(Debug)]
struct AdaptiveLength {
    max: usize,
    current: usize,
    rates: [Continuation; SOURCES],
    /// Whether any draft from each n-gram length was judged.
    judged: [bool; SOURCES],
}

/// How recent drafts fared, as exponentially weighted sums of the tokens
/// accepted and of the drafts cut short by a wrong token. A draft is
/// accepted up to its first wrong token, so each drafted token is a trial
/// that succeeds with the chance that it is right given that those before
/// it were: `accepted / (accepted + failed)`, and the `i`-th token of a
/// draft is accepted with that chance to the power `i`. (The share of
/// proposed tokens accepted instead would count the tokens after a wrong
/// one, which were never judged, as wrong: a draft of 12 whose 10th token
/// is wrong would look 75% right, not 90%.)
#[derive(Debug, Clone, Copy)]
struct Continuation {
    accepted: f32,
    failed: f32,
}

impl Continuation {
    fn chance(self) -> f32 {
        let trials = self.accepted + self.failed;
        if trials <= 0.0 {
            return FIRST_CONTINUATION;
        }
        (self.accepted / trials).clamp(0.0, 1.0)
    }

    /// [`Self::chance`] less one standard error: the sums weigh about the
    /// last `1 / SMOOTHING` drafts, and a few one-token drafts say little
    /// (four right of five: 0.8 ± 0.2), a few long copies a lot.
    fn cautious_chance(self) -> f32 {
        let chance = self.chance();
        let trials = ((self.accepted + self.failed) / SMOOTHING).max(1.0);
        (chance - (chance * (1.0 - chance) / trials).sqrt()).max(0.0)
    }
}

/// Weight of the newest draft in the moving sums.
const SMOOTHING: f32 = 0.3;
/// The chance that a drafted token is right assumed before any draft was
/// ever judged: drafting starts on, with drafts of 2 tokens where a column
/// costs 0.6 of a step ([`PRIOR_COLUMN_COST`]), for answers that copy from
/// their first token.
const FIRST_CONTINUATION: f32 = 0.9;

impl AdaptiveLength {
    /// Chances that start at `prior`'s, with the weight of one draft.
    fn new(max: u32, prior: &AcceptancePrior) -> Self {
        let max = max as usize;
        let current = max.clamp(1, 4);
        let rates = prior.chances.map(|chance| Continuation {
            accepted: chance * current as f32,
            failed: (1.0 - chance) * current as f32,
        });
        Self {
            max,
            current,
            rates,
            judged: [false; SOURCES],
        }
    }

    /// How many tokens of a draft from `source` matches are worth their
    /// columns, at most the current length: the `i`-th token saves a step
    /// only if it and all before it are right (chance `q^i`), and costs
    /// `column_cost` of a step either way, so a draft goes on while
    /// `q^i >= column_cost`. Zero when not even the first token pays. `q`
    /// is the cautious estimate: drafting that resumes on a lucky streak of
    /// right guesses (the estimate is then at its highest) pays for drafts
    /// that are right only as often as before.
    fn worth(&self, source: usize, column_cost: f32) -> usize {
        let chance = self.rates[source].cautious_chance();
        let worth = if column_cost <= 0.0 || chance >= 1.0 {
            self.current
        } else if chance <= column_cost {
            0
        } else {
            // Both logarithms are negative: chance and cost are in (0, 1).
            (column_cost.ln() / chance.ln()).floor() as usize
        };
        worth.min(self.current)
    }

    fn record(&mut self, source: usize, proposed: usize, accepted: usize) {
        if proposed == 0 {
            return;
        }
        self.judged[source] = true;
        let rate = &mut self.rates[source];
        let failed = if accepted < proposed { 1.0 } else { 0.0 };
        rate.accepted = rate.accepted * (1.0 - SMOOTHING) + accepted as f32 * SMOOTHING;
        rate.failed = rate.failed * (1.0 - SMOOTHING) + failed * SMOOTHING;
        self.current = if accepted == proposed {
            (self.current * 2).min(self.max)
        } else {
            (accepted + 1).clamp(1, self.max)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drafter_in(mode: DraftMode, max: u32) -> Drafter {
        let config = DraftConfig {
            mode,
            max_tokens: max,
        };
        Drafter::new(config, &AcceptancePrior::default())
    }

    fn drafter(max: u32) -> Drafter {
        drafter_in(DraftMode::Ngram, max)
    }

    /// A drafter (drafts of up to 8) that has seen `tokens`.
    fn drafter_with(tokens: &[i32]) -> Drafter {
        drafter_from(&AcceptancePrior::default(), tokens)
    }

    fn draft(drafter: &mut Drafter) -> Vec<i32> {
        let mut out = Vec::new();
        drafter.draft(&mut out, 0.0);
        out
    }

    #[test]
    fn a_repeated_passage_is_proposed_from_where_it_continued() {
        // "the cat sat on the mat . <answer:> the cat"
        let mut drafter = drafter_with(&[1, 2, 3, 4, 1, 5, 6, 9, 1, 2]);
        // Last bigram (1, 2) was followed by 3, 4, 1, 5... the first time.
        assert_eq!(draft(&mut drafter), vec![3, 4, 1, 5]);
    }

    #[test]
    fn the_longest_match_wins() {
        // (7, 1, 2) occurs once, followed by 8; (1, 2) last occurred followed by 9.
        let mut drafter = drafter_with(&[7, 1, 2, 8, 8, 1, 2, 9, 7, 1, 2]);
        assert_eq!(draft(&mut drafter)[0], 8);
    }

    #[test]
    fn the_copy_in_progress_wins_over_a_later_occurrence_of_its_ngram() {
        // (1, 2, 3, 4) is followed by 5 after (10, 11, 12), by 9 later on;
        // the answer so far copies the first passage.
        let mut copying = drafter_with(&[
            10, 11, 12, 1, 2, 3, 4, 5, 6, 7, 20, 21, 1, 2, 3, 4, 9, 9, 10, 11, 12, 1, 2, 3, 4,
        ]);
        assert_eq!(draft(&mut copying), vec![5, 6, 7, 20]);
        // Without that context, the latest occurrence is proposed.
        let mut fresh = drafter_with(&[
            10, 11, 12, 1, 2, 3, 4, 5, 6, 7, 20, 21, 1, 2, 3, 4, 9, 9, 30, 1, 2, 3, 4,
        ]);
        assert_eq!(draft(&mut fresh)[0], 9);
    }

    #[test]
    fn nothing_to_copy_drafts_nothing() {
        let mut drafter = drafter(8);
        drafter.extend(1..50);
        assert!(draft(&mut drafter).is_empty());
    }

    #[test]
    fn off_and_zero_length_never_draft() {
        let mut off = drafter_in(DraftMode::Off, 8);
        off.extend([1, 2, 3, 1, 2]);
        assert!(draft(&mut off).is_empty());
        let mut zero = drafter(0);
        zero.extend([1, 2, 3, 1, 2]);
        assert!(draft(&mut zero).is_empty());
    }

    #[test]
    fn length_grows_after_full_acceptance_and_shrinks_after_rejection() {
        let mut length = AdaptiveLength::new(16, &AcceptancePrior::default());
        assert_eq!(length.current, 4);
        length.record(0, 4, 4);
        assert_eq!(length.current, 8);
        length.record(0, 8, 8);
        length.record(0, 16, 16);
        assert_eq!(length.current, 16);
        length.record(0, 16, 2);
        assert_eq!(length.current, 3);
    }

    /// A drafter's lengths with every source's chance of a right token at
    /// `chance`, learned from many drafts, and drafts of up to `current`.
    fn length_with(chance: f32, current: usize) -> AdaptiveLength {
        let mut length = AdaptiveLength::new(64, &AcceptancePrior::default());
        length.rates = [Continuation {
            accepted: chance * 100.0,
            failed: (1.0 - chance) * 100.0,
        }; SOURCES];
        length.current = current;
        length
    }

    #[test]
    fn a_draft_holds_only_the_tokens_worth_their_columns() {
        // 0.9^4 = 0.66 >= 0.6 > 0.9^5: four tokens pay.
        assert_eq!(length_with(0.9, 12).worth(0, 0.6), 4);
        assert_eq!(length_with(0.8, 12).worth(0, 0.6), 2);
        // A copy (0.97) where a column costs 0.45: all the current length.
        assert_eq!(length_with(0.97, 12).worth(0, 0.45), 12);
        // Not even the first token pays: no draft.
        assert_eq!(length_with(0.6, 12).worth(0, 0.6), 0);
        assert_eq!(length_with(0.3, 12).worth(0, 0.6), 0);
        // Columns that cost nothing (or a chance of 1): the current length.
        assert_eq!(length_with(0.3, 8).worth(0, 0.0), 8);
        assert_eq!(length_with(1.0, 8).worth(0, 0.9), 8);
    }

    #[test]
    fn a_few_right_guesses_are_not_trusted_as_much_as_many() {
        // One-token drafts right four times in five, the weight of one
        // draft: 0.8 less its standard error (0.22).
        let few = Continuation {
            accepted: 0.8,
            failed: 0.2,
        };
        assert!((few.cautious_chance() - 0.58).abs() < 0.01);
        // Copies of twelve tokens right 95% of the time: 0.95 less 0.035.
        let many = Continuation {
            accepted: 11.4,
            failed: 0.6,
        };
        assert!((many.cautious_chance() - 0.915).abs() < 0.01);
        // The very first drafts: two tokens where a column costs 0.6.
        let first = AdaptiveLength::new(12, &AcceptancePrior::default());
        assert_eq!(first.worth(0, PRIOR_COLUMN_COST), 2);
    }

    #[test]
    fn a_long_draft_wrong_near_its_end_counts_as_mostly_right() {
        let mut length = length_with(0.9, 12);
        // Nine of twelve right: the tenth token was wrong, the last two
        // were never judged. A token is right 9 times in 10, not 3 in 4.
        for _ in 0..10 {
            length.record(0, 12, 9);
        }
        let chance = length.rates[0].chance();
        assert!((chance - 0.9).abs() < 0.01, "{chance}");
        // One token drafted and wrong each time: soon seen as never right.
        for _ in 0..20 {
            length.record(1, 1, 0);
        }
        assert!(length.rates[1].chance() < 0.1);
        assert_eq!(length.worth(1, 0.05), 0);
    }

    /// Feed `text` one token at a time as the answer, drafting before each
    /// token as the engine does, and verifying real drafts against `text`.
    /// Returns the number of tokens drafted at each step (one per decode
    /// step).
    fn answer(drafter: &mut Drafter, text: &[i32], column_cost: f32) -> Vec<usize> {
        let mut proposed = Vec::new();
        let mut out = Vec::new();
        let mut at = 0;
        while at < text.len() {
            drafter.extend([text[at]]);
            drafter.draft(&mut out, column_cost);
            // As the engine does, no draft past the answer's last token.
            out.truncate(text.len() - at - 1);
            proposed.push(out.len());
            let accepted = out
                .iter()
                .zip(&text[at + 1..])
                .take_while(|(guess, token)| guess == token)
                .count();
            drafter.extend(text[at + 1..=at + accepted].iter().copied());
            if !out.is_empty() {
                drafter.record(out.len(), accepted);
            }
            at += accepted + 1;
        }
        proposed
    }

    #[test]
    fn drafts_that_keep_failing_stop_drafting() {
        let (prompt, wrong) = prompt_and_wrong_answer();
        let mut drafter = drafter_from(&AcceptancePrior::default(), &prompt);
        let proposed = answer(&mut drafter, &wrong, StepCosts::default().column_cost(1));
        let late: usize = proposed[proposed.len() / 2..].iter().sum();
        assert!(proposed.iter().sum::<usize>() > 0, "drafting starts on");
        assert_eq!(late, 0, "failing drafts stop: {proposed:?}");
    }

    #[test]
    fn drafting_resumes_as_soon_as_its_guesses_would_be_right() {
        let (prompt, wrong) = prompt_and_wrong_answer();
        let mut drafter = drafter_from(&AcceptancePrior::default(), &prompt);
        // First an answer on which every guess fails, then a copy of the
        // prompt: the guesses not shown to the model turn right, and drafting
        // resumes within a few tokens, with no draft wasted on the way.
        answer(
            &mut drafter,
            &wrong[..60],
            StepCosts::default().column_cost(1),
        );
        let mut out = Vec::new();
        drafter.draft(&mut out, StepCosts::default().column_cost(1));
        assert!(out.is_empty(), "drafting has stopped");
        // (The copy starts past the part the wrong answer repeated, whose
        // bigrams now point into that answer.)
        let copy = &prompt[60..];
        let proposed = answer(&mut drafter, copy, StepCosts::default().column_cost(1));
        let first = proposed.iter().position(|&n| n > 0);
        assert!(
            first.is_some_and(|step| step <= 6),
            "drafting resumed late: {proposed:?}"
        );
        assert!(
            proposed.len() < copy.len() / 2,
            "and the copy took fewer steps than tokens: {proposed:?}"
        );
    }

    /// A prompt whose bigrams (2i, 2i+1) are each followed by 100+i, and an
    /// answer that repeats the bigrams and goes on otherwise: every guess
    /// fails.
    fn prompt_and_wrong_answer() -> (Vec<i32>, Vec<i32>) {
        let prompt = (0..40).flat_map(|i| [2 * i, 2 * i + 1, 100 + i]).collect();
        let wrong = (0..40).flat_map(|i| [2 * i, 2 * i + 1, 500 + i]).collect();
        (prompt, wrong)
    }

    fn drafter_from(prior: &AcceptancePrior, prompt: &[i32]) -> Drafter {
        let config = DraftConfig {
            mode: DraftMode::Ngram,
            max_tokens: 8,
        };
        let mut drafter = Drafter::new(config, prior);
        drafter.extend(prompt.iter().copied());
        drafter
    }

    #[test]
    fn an_answer_starts_from_what_the_last_answers_drafts_taught() {
        let column_cost = StepCosts::default().column_cost(1);
        let (prompt, wrong) = prompt_and_wrong_answer();
        let mut prior = AcceptancePrior::default();
        let mut first = drafter_from(&prior, &prompt);
        let first_drafts: usize = answer(&mut first, &wrong, column_cost).iter().sum();
        first.teach(&mut prior);
        // The same question again: no draft is shown to the model.
        let mut second = drafter_from(&prior, &prompt);
        let second_drafts = answer(&mut second, &wrong, column_cost);
        assert!(first_drafts > 0, "the first answer drafts");
        assert_eq!(second_drafts.iter().sum::<usize>(), 0, "{second_drafts:?}");
        // An answer that copies, after those: drafting starts a few tokens in.
        second.teach(&mut prior);
        let mut copying = drafter_from(&prior, &prompt);
        let copy = &prompt[..60];
        let proposed = answer(&mut copying, copy, column_cost);
        let first_draft = proposed.iter().position(|&n| n > 0);
        assert!(
            first_draft.is_some_and(|step| step <= 8),
            "drafting started late: {proposed:?}"
        );
        assert!(proposed.len() < copy.len() / 2, "{proposed:?}");
    }

    #[test]
    fn an_answer_teaches_only_the_rates_its_drafts_came_from() {
        let (prompt, _) = prompt_and_wrong_answer();
        let mut prior = AcceptancePrior::default();
        prior.chances[0] = 0.1;
        // Nothing drafted (an answer that ends at once): nothing learned.
        drafter_from(&AcceptancePrior::default(), &prompt).teach(&mut prior);
        assert_eq!(prior.chances[0], 0.1);
        assert_eq!(prior.chances[1], FIRST_CONTINUATION);
        // Off never drafts, so it never teaches.
        let off = drafter_in(DraftMode::Off, 8);
        off.teach(&mut prior);
        assert_eq!(prior.chances[0], 0.1);
    }

    /// The test models' token streams (prompt, greedy answer) for the
    /// bench's prompts: bench/draft_streams.py writes them.
    fn recorded_streams() -> Vec<(String, Vec<i32>, Vec<i32>)> {
        let data: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/data/draft-streams.json"))
                .expect("tests/data/draft-streams.json is JSON");
        let tokens = |value: &serde_json::Value| -> Vec<i32> {
            value
                .as_array()
                .expect("a list of tokens")
                .iter()
                .map(|token| token.as_i64().expect("a token id") as i32)
                .collect()
        };
        data.as_object()
            .expect("an object of streams")
            .iter()
            .map(|(name, stream)| {
                let prompt = tokens(&stream["prompt"]);
                (name.clone(), prompt, tokens(&stream["answer"]))
            })
            .collect()
    }

    /// The answer's tokens over the time its decode steps take, in one-token
    /// steps, when the engine's default drafter (starting from `prior`)
    /// drafts ahead of each step and a drafted column costs `column_cost`
    /// of a step; and what the answer taught.
    fn simulated_speedup(
        prior: &AcceptancePrior,
        prompt: &[i32],
        text: &[i32],
        column_cost: f32,
    ) -> (f32, AcceptancePrior) {
        let mut drafter = Drafter::new(DraftConfig::default(), prior);
        drafter.extend(prompt.iter().copied());
        let proposed = answer(&mut drafter, text, column_cost);
        let columns: usize = proposed.iter().sum();
        let mut taught = *prior;
        drafter.teach(&mut taught);
        let time = proposed.len() as f32 + column_cost * columns as f32;
        (text.len() as f32 / time, taught)
    }

    #[test]
    fn recorded_answers_that_copy_are_drafted_well_and_the_others_cost_little() {
        let mut checked = 0;
        for (name, prompt, text) in recorded_streams() {
            let fresh = AcceptancePrior::default();
            if name.contains("fix the bug") || name.contains("rewrite") {
                // A 12-token draft's column costs 0.47 of a step on a
                // 2-CPU AVX2 machine: a copy is 1.6-1.9 times as fast.
                let (speedup, _) = simulated_speedup(&fresh, &prompt, &text, 0.47);
                assert!(speedup >= 1.5, "{name}: {speedup}");
            }
            // One-token drafts cost 0.65 of a step there: an answer with
            // little to copy loses at most 10% the first time, and 3% once
            // the answer before it taught the drafter.
            let (first, taught) = simulated_speedup(&fresh, &prompt, &text, 0.65);
            let (again, _) = simulated_speedup(&taught, &prompt, &text, 0.65);
            assert!(first >= 0.9, "{name}, first answer: {first}");
            assert!(again >= 0.97, "{name}, asked again: {again}");
            checked += 1;
        }
        assert_eq!(checked, 10, "both models, five prompts each");
    }

    /// Costs learned from 20 steps of `sequences` sequences: `base` seconds
    /// without drafts, `drafted` seconds with `columns` drafted columns.
    fn learned(sequences: usize, base: f32, columns: usize, drafted: f32) -> StepCosts {
        let mut costs = StepCosts::default();
        for _ in 0..20 {
            costs.record(sequences, 0, base);
            costs.record(sequences, columns, drafted);
        }
        costs
    }

    fn assert_near(actual: f32, expected: f32) {
        assert!(
            (actual - expected).abs() < 1e-3,
            "{actual} is not {expected}"
        );
    }

    #[test]
    fn the_column_cost_is_the_measured_cost_of_a_drafted_column() {
        let prior = StepCosts::default();
        assert!((prior.column_cost(1) - PRIOR_COLUMN_COST).abs() < 1e-6);
        // A small model on few CPUs: a drafted column costs 0.7 of a step.
        assert_near(learned(1, 0.010, 4, 0.038).column_cost(1), 0.7);
        // A large model reads its weights once for all columns: 0.05.
        assert_near(learned(1, 0.200, 8, 0.280).column_cost(1), 0.05);
    }

    #[test]
    fn a_shared_step_needs_a_higher_rate_to_pay() {
        let prior = StepCosts::default();
        let rates: Vec<f32> = (1..=8).map(|k| prior.column_cost(k)).collect();
        assert!(rates.windows(2).all(|pair| pair[0] < pair[1]), "{rates:?}");
        assert!(rates.iter().all(|&rate| rate < 1.0), "{rates:?}");
        assert_eq!(prior.column_cost(0), rates[0]);
        // Four sequences, measured: 20 ms a step, 3 ms a drafted column; a
        // sequence's share of the step is 5 ms, so 3 of 5 drafted tokens
        // must be right.
        let costs = learned(4, 0.020, 2, 0.026);
        assert_near(costs.column_cost(4), 0.6);
        // Three sequences, never measured, are judged from four's cost.
        let three = costs.column_cost(3);
        assert!(three > 0.4 && three < 0.6, "{three}");
    }

    #[test]
    fn step_times_that_make_no_sense_are_ignored() {
        let mut costs = StepCosts::default();
        costs.record(1, 0, f32::NAN);
        costs.record(1, 2, -1.0);
        costs.record(0, 0, 0.01);
        assert!((costs.column_cost(1) - PRIOR_COLUMN_COST).abs() < 1e-6);
        // Drafted steps faster than plain ones (noise) cost nothing, not less.
        costs.record(1, 0, 0.010);
        costs.record(1, 3, 0.009);
        assert_eq!(costs.column_cost(1), 0.0);
    }
}
