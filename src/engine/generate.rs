//! The generation loop: prefill in batches, then one token at a time until
//! end of generation, a token budget, the context limit, a stop string or a
//! cancel request.
//!
//! A [`Session`] keeps what its KV cache holds, so a follow-up prompt that
//! starts with the same tokens (a chat's next turn) evaluates only what is
//! new. The loop allocates nothing per token: the batch, the piece buffer and
//! the text buffers are reused.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use serde::Serialize;

use super::draft::{AcceptancePrior, DraftConfig, Drafter, StepCosts};
use super::sampling::{build_sampler, Constraint, SamplingConfig};
use super::text::{StopScan, TextPipeline};
use super::{ContextShape, EngineError, Model, PromptTokens};

/// How to create a session's context.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Context size in tokens.
    pub n_ctx: u32,
    /// Threads for generation and prompt processing.
    pub threads: u32,
    /// Largest number of prompt tokens evaluated in one llama.cpp call.
    pub n_batch: u32,
}

/// What to generate.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct GenerateRequest {
    pub sampling: SamplingConfig,
    /// Stop after this many tokens; `None` runs to end of generation or the context limit.
    pub max_tokens: Option<u32>,
    pub constraint: Option<Constraint>,
    /// Stop when the text contains one of these (the stop string is not emitted).
    pub stop: Vec<String>,
    /// Speculative decoding from the prompt (see [`super::draft`]).
    #[serde(default)]
    pub draft: DraftConfig,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model ended its turn (an end-of-generation token).
    Eog,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context is full.
    ContextFull,
    /// A stop string appeared.
    StopSequence,
    /// The caller cancelled.
    Cancelled,
}

/// Counts and timings of one generation.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub stop_reason: StopReason,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens evaluated now (the rest were already in the KV cache).
    pub prompt_tokens_evaluated: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    #[serde(skip)]
    pub prompt_time: Duration,
    #[serde(skip)]
    pub time_to_first_token: Duration,
    /// Time spent in single-token decode calls.
    #[serde(skip)]
    pub generation_time: Duration,
    /// Decode steps while generating (each evaluates one token and the
    /// draft after it).
    #[serde(skip)]
    pub decoded_tokens: usize,
    /// Draft tokens proposed, and how many of them the model agreed with
    /// (each one a decode step saved).
    pub drafted_tokens: usize,
    pub accepted_tokens: usize,
}

impl Stats {
    pub fn prompt_tokens_per_second(&self) -> f64 {
        per_second(self.prompt_tokens_evaluated, self.prompt_time)
    }

    /// Answer tokens after the first, per second of decoding.
    pub fn generation_tokens_per_second(&self) -> f64 {
        per_second(
            self.generated_tokens.saturating_sub(1),
            self.generation_time,
        )
    }
}

fn per_second(count: usize, time: Duration) -> f64 {
    let seconds = time.as_secs_f64();
    if count == 0 || seconds <= 0.0 {
        0.0
    } else {
        count as f64 / seconds
    }
}

/// A llama.cpp context and the tokens its KV cache holds.
pub struct Session<'model> {
    model: &'model Model,
    context: LlamaContext<'model>,
    batch: LlamaBatch<'static>,
    /// Tokens whose keys and values are in the cache, in position order.
    cached: Vec<LlamaToken>,
    /// The last answer token when generation stopped before evaluating it
    /// (a token budget, the context limit, a stop string): part of the
    /// answer, not yet of the cache. See [`Session::transcript`].
    unevaluated: Option<LlamaToken>,
    n_ctx: u32,
    n_batch: u32,
    /// Decode step times, which decide when drafting pays (kept across a
    /// chat's turns).
    step_costs: StepCosts,
    /// How the drafts of earlier turns fared: where the next turn's drafter
    /// starts.
    acceptance: AcceptancePrior,
}

impl<'model> Session<'model> {
    /// For a process about to exit: leave the context's buffers to the
    /// kernel instead of freeing them (see [`Model::release_at_exit`]).
    pub fn release_at_exit(self) {
        std::mem::forget(self);
    }

    pub(super) fn new(model: &'model Model, options: &SessionOptions) -> Result<Self, EngineError> {
        let n_ctx = options.n_ctx.max(1);
        let n_batch = options.n_batch.clamp(1, n_ctx);
        let context = model.create_context(ContextShape {
            n_ctx,
            n_batch,
            n_ubatch: 512,
            sequences: 1,
            threads: options.threads,
        })?;
        // llama.cpp rounds a context up (to 256 at least): the session keeps
        // to the size asked for, so `-c 100` stops at 100 tokens.
        let n_ctx = context.n_ctx().min(n_ctx);
        Ok(Self {
            model,
            context,
            batch: LlamaBatch::new(n_batch as usize, 1),
            cached: Vec::new(),
            unevaluated: None,
            n_ctx,
            n_batch,
            step_costs: StepCosts::default(),
            acceptance: AcceptancePrior::default(),
        })
    }

    /// The context size in tokens.
    pub fn n_ctx(&self) -> u32 {
        self.n_ctx
    }

    /// A generous bound on the bytes of saved state per token for this
    /// model: keys and values as wide as four times the embedding, in f32,
    /// in every layer (gemma's heads are wider than its embedding's share;
    /// recurrent models' fixed state fits a few tokens' worth). What a saved
    /// state's header claims is checked against it before it is read.
    pub fn state_bytes_per_token_bound(&self) -> u64 {
        let layers = u64::from(self.model.inner.n_layer().max(1));
        let embedding = u64::try_from(self.model.inner.n_embd().max(1)).unwrap_or(1);
        layers.saturating_mul(embedding).saturating_mul(2 * 4 * 4)
    }

    /// Tokens now held in the KV cache.
    pub fn cached_tokens(&self) -> usize {
        self.cached.len()
    }

    pub(super) fn model(&self) -> &'model Model {
        self.model
    }

    pub(super) fn context(&self) -> &LlamaContext<'model> {
        &self.context
    }

    pub(super) fn context_mut(&mut self) -> &mut LlamaContext<'model> {
        &mut self.context
    }

    /// The ids of the tokens the cache holds.
    pub(super) fn cached_ids(&self) -> Vec<i32> {
        self.cached.iter().map(|token| token.0).collect()
    }

    /// Record what the cache holds after its state was replaced.
    pub(super) fn set_cached(&mut self, tokens: Vec<LlamaToken>) {
        self.cached = tokens;
        self.unevaluated = None;
    }

    /// Keep only the first `keep` tokens in the cache.
    pub(super) fn keep_first(&mut self, keep: usize) {
        if keep >= self.cached.len() {
            return;
        }
        let position = u32::try_from(keep).unwrap_or(u32::MAX);
        let removed = self
            .context
            .clear_kv_cache_seq(Some(0), Some(position), None)
            .unwrap_or(false);
        if removed {
            self.cached.truncate(keep);
        } else {
            self.clear();
        }
    }

    /// Forget everything in the KV cache.
    pub fn clear(&mut self) {
        self.context.clear_kv_cache();
        self.cached.clear();
        self.unevaluated = None;
    }

    /// The last prompt followed by the answer's tokens exactly as they were
    /// sampled (without the end-of-generation token).
    ///
    /// A chat's next prompt should start with these tokens rather than with
    /// a fresh tokenization of the answer's text, which can split the same
    /// text differently and would then evaluate the whole answer again; see
    /// [`Model::tokenize_after`].
    pub fn transcript(&self) -> PromptTokens {
        let mut tokens = self.cached.clone();
        tokens.extend(self.unevaluated);
        PromptTokens { tokens }
    }

    /// Generate an answer to `prompt`, calling `on_text` with each piece of
    /// text as soon as it is complete UTF-8 and cannot be part of a stop
    /// string. An error from `on_text` (a closed pipe, say) ends generation
    /// and is returned.
    pub fn generate<E>(
        &mut self,
        prompt: &PromptTokens,
        request: &GenerateRequest,
        cancel: &AtomicBool,
        mut on_text: impl FnMut(&str) -> Result<(), E>,
    ) -> Result<Result<Stats, E>, EngineError> {
        let started = Instant::now();
        self.unevaluated = None;
        let prompt = &prompt.tokens;
        self.check_fits(prompt.len())?;
        let grammar = request
            .constraint
            .as_ref()
            .map(Constraint::to_grammar)
            .transpose()?;
        let mut sampler = build_sampler(self.model, &request.sampling, grammar.as_deref())?;

        let evaluated = self.prefill(prompt, cancel)?;
        let prompt_time = started.elapsed();
        let mut stats = Stats {
            stop_reason: StopReason::Eog,
            prompt_tokens: prompt.len(),
            prompt_tokens_evaluated: evaluated,
            generated_tokens: 0,
            prompt_time,
            time_to_first_token: Duration::ZERO,
            generation_time: Duration::ZERO,
            decoded_tokens: 0,
            drafted_tokens: 0,
            accepted_tokens: 0,
        };
        if cancel.load(Ordering::Relaxed) {
            stats.stop_reason = StopReason::Cancelled;
            return Ok(Ok(stats));
        }

        let mut emitter = Emitter {
            model: self.model,
            text: TextPipeline::new(&request.stop),
            piece: Vec::with_capacity(64),
            release: String::with_capacity(64),
            budget: request.max_tokens.map_or(usize::MAX, |n| n as usize),
        };
        let mut drafter = Drafter::new(self.model.draft_config(request.draft), &self.acceptance);
        drafter.extend(prompt.iter().map(|token| token.0));
        let mut draft = Vec::new();
        let mut pending = sampler.sample(&self.context, self.batch.n_tokens() - 1)?;
        stats.time_to_first_token = started.elapsed();

        // `pending` is sampled but neither emitted nor evaluated.
        stats.stop_reason = 'generation: loop {
            if stats.generated_tokens >= emitter.budget {
                break StopReason::MaxTokens;
            }
            if cancel.load(Ordering::Relaxed) {
                break StopReason::Cancelled;
            }
            match emitter.emit(pending, &mut stats, &mut on_text) {
                Err(error) => return Ok(Err(error)),
                Ok(Some(StopReason::Eog)) => break StopReason::Eog,
                Ok(Some(reason)) => {
                    self.unevaluated = Some(pending);
                    break reason;
                }
                Ok(None) => {}
            }
            if self.cached.len() + 1 > self.n_ctx as usize {
                self.unevaluated = Some(pending);
                break StopReason::ContextFull;
            }
            drafter.extend([pending.0]);
            self.next_draft(
                &mut drafter,
                &mut draft,
                emitter.budget - stats.generated_tokens,
            );

            let step = Instant::now();
            self.decode_with_draft(pending, &draft)?;
            self.step_costs
                .record(1, draft.len(), step.elapsed().as_secs_f32());
            stats.decoded_tokens += 1;
            stats.drafted_tokens += draft.len();
            // Verify: sample where each draft token stands. Each one the
            // sampler picks too is the answer's next token, already evaluated.
            let mut accepted = 0;
            let next = loop {
                let next = sampler.sample(&self.context, accepted as i32)?;
                if draft.get(accepted) != Some(&next.0) {
                    break next;
                }
                accepted += 1;
                drafter.extend([next.0]);
                match emitter.emit(next, &mut stats, &mut on_text) {
                    Err(error) => return Ok(Err(error)),
                    Ok(Some(reason)) => {
                        self.drop_rejected(accepted, draft.len());
                        stats.accepted_tokens += accepted;
                        stats.generation_time += step.elapsed();
                        break 'generation reason;
                    }
                    Ok(None) => {}
                }
            };
            drafter.record(draft.len(), accepted);
            stats.accepted_tokens += accepted;
            self.drop_rejected(accepted, draft.len());
            stats.generation_time += step.elapsed();
            pending = next;
        };
        drafter.teach(&mut self.acceptance);

        if stats.stop_reason != StopReason::StopSequence {
            emitter.release.clear();
            if emitter.text.finish(&mut emitter.release) == StopScan::Stopped {
                stats.stop_reason = StopReason::StopSequence;
            }
            if !emitter.release.is_empty() {
                if let Err(error) = on_text(&emitter.release) {
                    return Ok(Err(error));
                }
            }
        }
        Ok(Ok(stats))
    }

    /// The next draft: no longer than the room left in the context, the
    /// batch and the token budget (after the token it follows), and never
    /// an end-of-generation token (those end the answer; they are never
    /// evaluated).
    fn next_draft(&self, drafter: &mut Drafter, draft: &mut Vec<i32>, budget_left: usize) {
        drafter.draft(draft, self.step_costs.column_cost(1));
        let room = (self.n_ctx as usize)
            .saturating_sub(self.cached.len() + 1)
            .min(self.n_batch as usize - 1)
            .min(budget_left.saturating_sub(1));
        draft.truncate(room);
        if let Some(end) = draft
            .iter()
            .position(|&token| self.model.is_end_of_generation(LlamaToken(token)))
        {
            draft.truncate(end);
        }
    }

    /// Evaluate `token` and the draft after it in one batch, logits at
    /// every position; the cache holds all of them afterwards.
    fn decode_with_draft(&mut self, token: LlamaToken, draft: &[i32]) -> Result<(), EngineError> {
        let start = self.cached.len();
        self.batch.clear();
        let tokens = std::iter::once(token).chain(draft.iter().map(|&id| LlamaToken(id)));
        for (offset, token) in tokens.enumerate() {
            self.batch
                .add(token, (start + offset) as i32, &[0], true)
                .map_err(|error| EngineError::Decode(error.to_string()))?;
        }
        self.context
            .decode(&mut self.batch)
            .map_err(|error| EngineError::Decode(error.to_string()))?;
        self.cached.push(token);
        self.cached.extend(draft.iter().map(|&id| LlamaToken(id)));
        Ok(())
    }

    /// Remove from the cache the draft tokens after the first `accepted`.
    fn drop_rejected(&mut self, accepted: usize, drafted: usize) {
        if accepted == drafted {
            return;
        }
        let keep = self.cached.len() - (drafted - accepted);
        let position = u32::try_from(keep).unwrap_or(u32::MAX);
        let removed = self
            .context
            .clear_kv_cache_seq(Some(0), Some(position), None)
            .unwrap_or(false);
        if removed {
            self.cached.truncate(keep);
        } else {
            // The memory cannot drop a range (recurrent models): start over
            // at the next generation.
            self.clear();
        }
    }

    fn check_fits(&self, prompt_tokens: usize) -> Result<(), EngineError> {
        // One free slot at least, so the model can say something.
        if prompt_tokens >= self.n_ctx as usize {
            return Err(EngineError::PromptTooLong {
                prompt_tokens,
                n_ctx: self.n_ctx,
                n_ctx_train: self.model.n_ctx_train(),
            });
        }
        Ok(())
    }

    /// Bring the KV cache to `prompt`, reusing the longest common prefix, and
    /// leave the batch holding the last prompt token with logits requested.
    /// Returns how many tokens were evaluated.
    fn prefill(
        &mut self,
        prompt: &[LlamaToken],
        cancel: &AtomicBool,
    ) -> Result<usize, EngineError> {
        // Keep at least the last prompt token to evaluate: its logits pick the first answer token.
        self.evaluate(prompt, prompt.len() - 1, cancel)
    }

    /// Bring the KV cache to exactly `tokens` (a prefix of a prompt to come),
    /// reusing what it already holds; for a prompt cache to save. Returns how
    /// many tokens were evaluated.
    pub fn prefill_prefix(
        &mut self,
        tokens: &PromptTokens,
        cancel: &AtomicBool,
    ) -> Result<usize, EngineError> {
        self.check_fits(tokens.len())?;
        self.unevaluated = None;
        self.evaluate(&tokens.tokens, tokens.len(), cancel)
    }

    /// Evaluate `tokens` into the cache, reusing at most `most_reused` of the
    /// tokens it already holds; the last chunk asks for logits of its last token.
    fn evaluate(
        &mut self,
        prompt: &[LlamaToken],
        most_reused: usize,
        cancel: &AtomicBool,
    ) -> Result<usize, EngineError> {
        let reuse = common_prefix(&self.cached, prompt).min(most_reused);
        if reuse < self.cached.len() {
            let position = u32::try_from(reuse).unwrap_or(u32::MAX);
            let removed = self
                .context
                .clear_kv_cache_seq(Some(0), Some(position), None)
                .unwrap_or(false);
            if !removed {
                // The memory cannot drop a range (recurrent models): start over.
                self.clear();
            }
            self.cached.truncate(reuse.min(self.cached.len()));
        }
        let start = self.cached.len();
        let pending = &prompt[start..];
        let chunk_size = self.n_batch as usize;
        for (index, chunk) in pending.chunks(chunk_size).enumerate() {
            if cancel.load(Ordering::Relaxed) {
                break;
            }
            let is_last_chunk = (index + 1) * chunk_size >= pending.len();
            self.batch.clear();
            for (offset, &token) in chunk.iter().enumerate() {
                let position = self.cached.len() + offset;
                let wants_logits = is_last_chunk && offset + 1 == chunk.len();
                self.batch
                    .add(token, position as i32, &[0], wants_logits)
                    .map_err(|error| EngineError::Decode(error.to_string()))?;
            }
            self.context
                .decode(&mut self.batch)
                .map_err(|error| EngineError::Decode(error.to_string()))?;
            self.cached.extend_from_slice(chunk);
        }
        Ok(pending.len())
    }
}

/// Turns accepted tokens into emitted text, counting them and watching the
/// stop strings and the token budget.
struct Emitter<'model> {
    model: &'model Model,
    text: TextPipeline,
    piece: Vec<u8>,
    release: String,
    budget: usize,
}

impl Emitter<'_> {
    /// Emit `token`; the reason generation ends with it, if it does. An
    /// end-of-generation token is not emitted (and is [`StopReason::Eog`]).
    fn emit<E>(
        &mut self,
        token: LlamaToken,
        stats: &mut Stats,
        on_text: &mut impl FnMut(&str) -> Result<(), E>,
    ) -> Result<Option<StopReason>, E> {
        if self.model.is_end_of_generation(token) {
            return Ok(Some(StopReason::Eog));
        }
        stats.generated_tokens += 1;
        self.model.token_bytes(token, &mut self.piece);
        self.release.clear();
        let scan = self.text.push(&self.piece, &mut self.release);
        if !self.release.is_empty() {
            on_text(&self.release)?;
        }
        Ok(if scan == StopScan::Stopped {
            Some(StopReason::StopSequence)
        } else if stats.generated_tokens >= self.budget {
            Some(StopReason::MaxTokens)
        } else {
            None
        })
    }
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
