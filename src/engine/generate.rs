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
    /// Single-token decode calls (`generated_tokens - 1` unless the answer hit a limit).
    #[serde(skip)]
    pub decoded_tokens: usize,
}

impl Stats {
    pub fn prompt_tokens_per_second(&self) -> f64 {
        per_second(self.prompt_tokens_evaluated, self.prompt_time)
    }

    pub fn generation_tokens_per_second(&self) -> f64 {
        per_second(self.decoded_tokens, self.generation_time)
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
}

impl<'model> Session<'model> {
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
        let n_ctx = context.n_ctx();
        Ok(Self {
            model,
            context,
            batch: LlamaBatch::new(n_batch as usize, 1),
            cached: Vec::new(),
            unevaluated: None,
            n_ctx,
            n_batch,
        })
    }

    /// The context size in tokens.
    pub fn n_ctx(&self) -> u32 {
        self.n_ctx
    }

    /// Tokens now held in the KV cache.
    pub fn cached_tokens(&self) -> usize {
        self.cached.len()
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
        };
        if cancel.load(Ordering::Relaxed) {
            stats.stop_reason = StopReason::Cancelled;
            return Ok(Ok(stats));
        }

        let vocab = self.model.inner.vocab();
        let mut text = TextPipeline::new(&request.stop);
        let mut piece = Vec::with_capacity(64);
        let mut release = String::with_capacity(64);
        let mut logits_index = self.batch.n_tokens() - 1;
        let budget = request.max_tokens.map_or(usize::MAX, |n| n as usize);

        stats.stop_reason = loop {
            if stats.generated_tokens >= budget {
                break StopReason::MaxTokens;
            }
            if cancel.load(Ordering::Relaxed) {
                break StopReason::Cancelled;
            }
            let token = sampler.sample(&self.context, logits_index);
            if stats.generated_tokens == 0 {
                stats.time_to_first_token = started.elapsed();
            }
            if vocab.is_eog(token) {
                break StopReason::Eog;
            }
            stats.generated_tokens += 1;

            self.model.token_bytes(token, &mut piece);
            release.clear();
            let scan = text.push(&piece, &mut release);
            if !release.is_empty() {
                if let Err(error) = on_text(&release) {
                    return Ok(Err(error));
                }
            }
            let stop = if scan == StopScan::Stopped {
                Some(StopReason::StopSequence)
            } else if stats.generated_tokens >= budget {
                Some(StopReason::MaxTokens)
            } else if self.cached.len() + 1 > self.n_ctx as usize {
                Some(StopReason::ContextFull)
            } else {
                None
            };
            if let Some(reason) = stop {
                self.unevaluated = Some(token);
                break reason;
            }

            let step = Instant::now();
            self.decode_one(token)?;
            stats.generation_time += step.elapsed();
            stats.decoded_tokens += 1;
            logits_index = 0;
        };

        if stats.stop_reason != StopReason::StopSequence {
            release.clear();
            if text.finish(&mut release) == StopScan::Stopped {
                stats.stop_reason = StopReason::StopSequence;
            }
            if !release.is_empty() {
                if let Err(error) = on_text(&release) {
                    return Ok(Err(error));
                }
            }
        }
        Ok(Ok(stats))
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
        let reuse = common_prefix(&self.cached, prompt).min(prompt.len() - 1);
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

    fn decode_one(&mut self, token: LlamaToken) -> Result<(), EngineError> {
        let position = self.cached.len() as i32;
        self.batch.clear();
        self.batch
            .add(token, position, &[0], true)
            .map_err(|error| EngineError::Decode(error.to_string()))?;
        self.context
            .decode(&mut self.batch)
            .map_err(|error| EngineError::Decode(error.to_string()))?;
        self.cached.push(token);
        Ok(())
    }
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
