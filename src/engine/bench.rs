//! Raw speed measurements, the way llama-bench takes them: prompt
//! processing of N random tokens in batches, and generation of N tokens one
//! decode at a time (random tokens, no sampling), each on a cleared KV cache.
//! Generation can also run several sequences at once in one batch per step,
//! which is how a batching server decodes.

use std::time::{Duration, Instant};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;

use super::{ContextShape, EngineError, Model};

/// Context settings for a benchmark.
#[derive(Debug, Clone, Copy)]
pub struct BenchParams {
    pub n_ctx: u32,
    pub n_batch: u32,
    pub n_ubatch: u32,
    pub threads: u32,
    /// Sequences decoded together (1 for llama-bench's tests).
    pub sequences: u32,
}

/// A context dedicated to measuring.
pub struct BenchContext<'model> {
    context: LlamaContext<'model>,
    batch: LlamaBatch<'static>,
    n_vocab: i32,
    bos: Option<LlamaToken>,
    params: BenchParams,
    random: u64,
}

impl Model {
    /// A context for [`BenchContext::prompt`] and [`BenchContext::generate`].
    pub fn bench_context(&self, params: BenchParams) -> Result<BenchContext<'_>, EngineError> {
        let context = self.create_context(ContextShape {
            n_ctx: params.n_ctx,
            n_batch: params.n_batch,
            n_ubatch: params.n_ubatch,
            sequences: params.sequences,
            threads: params.threads,
        })?;
        let vocab = self.inner.vocab();
        let bos = vocab.should_add_bos().then(|| vocab.bos());
        let capacity = params.n_batch.max(params.sequences).max(1) as usize;
        Ok(BenchContext {
            context,
            batch: LlamaBatch::new(capacity, params.sequences.max(1) as i32),
            n_vocab: self.inner.n_vocab(),
            bos,
            params,
            random: 0x9E37_79B9_7F4A_7C15,
        })
    }
}

/// What one run of [`Model::bench_copy`] measured.
#[derive(Debug, Clone, Copy)]
pub struct CopyRun {
    /// Time spent generating after the first token.
    pub generation: Duration,
    /// Tokens generated after the first.
    pub tokens: usize,
    pub drafted: usize,
    pub accepted: usize,
}

/// The passage a copy test's prompt repeats, in tokens.
const COPY_PASSAGE: usize = 64;
/// How often the passage repeats in the prompt.
const COPY_REPEATS: usize = 4;

impl Model {
    /// Greedy generation of `n_gen` tokens after a prompt that repeats a
    /// random passage: the model continues the repetition, as an answer
    /// that copies its input does, so speculative decoding (`draft`) has
    /// something to guess. Measures decode steps through the real
    /// generation loop (sampling, drafting, verification).
    pub fn bench_copy(
        &self,
        n_gen: u32,
        threads: u32,
        draft: super::DraftConfig,
    ) -> Result<CopyRun, EngineError> {
        let n_vocab = self.inner.n_vocab().max(2) as u64;
        let mut random = 0x9E37_79B9_7F4A_7C15_u64;
        let passage: Vec<i32> = (0..COPY_PASSAGE)
            .map(|_| {
                random ^= random >> 12;
                random ^= random << 25;
                random ^= random >> 27;
                (random.wrapping_mul(0x2545_F491_4F6C_DD1D) % n_vocab) as i32
            })
            .collect();
        let mut ids = Vec::with_capacity(COPY_PASSAGE * COPY_REPEATS + 1);
        let vocab = self.inner.vocab();
        if vocab.should_add_bos() {
            ids.push(vocab.bos().0);
        }
        for _ in 0..COPY_REPEATS {
            ids.extend_from_slice(&passage);
        }
        let prompt = super::PromptTokens::from_ids(&ids);
        let n_ctx = (prompt.len() as u32 + n_gen + 1).div_ceil(256) * 256;
        let mut session = self.session(&super::SessionOptions {
            n_ctx,
            threads,
            n_batch: n_ctx.min(2048),
        })?;
        let request = super::GenerateRequest {
            sampling: super::SamplingConfig {
                temperature: 0.0,
                ..super::SamplingConfig::default()
            },
            max_tokens: Some(n_gen),
            draft,
            ..super::GenerateRequest::default()
        };
        let never = std::sync::atomic::AtomicBool::new(false);
        let stats = session
            .generate(&prompt, &request, &never, |_| {
                Ok::<(), std::convert::Infallible>(())
            })?
            .unwrap_or_else(|never| match never {});
        Ok(CopyRun {
            generation: stats.generation_time,
            tokens: stats.generated_tokens.saturating_sub(1),
            drafted: stats.drafted_tokens,
            accepted: stats.accepted_tokens,
        })
    }
}

impl BenchContext<'_> {
    /// Empty the KV cache (not part of any measurement).
    pub fn clear(&mut self) {
        self.context.clear_kv_cache();
    }

    /// Evaluate `n_tokens` random prompt tokens in batches of `n_batch`;
    /// returns the time taken.
    pub fn prompt(&mut self, n_tokens: u32) -> Result<Duration, EngineError> {
        self.check_fits(n_tokens, 1)?;
        let started = Instant::now();
        let chunk = self.params.n_batch.max(1);
        let mut processed = 0;
        while processed < n_tokens {
            let count = chunk.min(n_tokens - processed);
            self.batch.clear();
            for offset in 0..count {
                let position = processed + offset;
                let token = match (position, self.bos) {
                    (0, Some(bos)) => bos,
                    _ => self.random_token(),
                };
                self.batch
                    .add(token, position as i32, &[0], offset + 1 == count)
                    .map_err(|error| EngineError::Decode(error.to_string()))?;
            }
            self.decode()?;
            processed += count;
        }
        self.context.synchronize();
        Ok(started.elapsed())
    }

    /// Decode `n_tokens` steps of one token per sequence, all sequences in one
    /// batch per step; returns the time taken.
    pub fn generate(&mut self, n_tokens: u32) -> Result<Duration, EngineError> {
        let sequences = self.params.sequences.max(1);
        self.check_fits(n_tokens, sequences)?;
        let started = Instant::now();
        let mut token = self.bos.unwrap_or(LlamaToken(0));
        for position in 0..n_tokens {
            self.batch.clear();
            for sequence in 0..sequences {
                self.batch
                    .add(token, position as i32, &[sequence as i32], true)
                    .map_err(|error| EngineError::Decode(error.to_string()))?;
            }
            self.decode()?;
            token = self.random_token();
        }
        self.context.synchronize();
        Ok(started.elapsed())
    }

    fn check_fits(&self, n_tokens: u32, sequences: u32) -> Result<(), EngineError> {
        let needed = u64::from(n_tokens) * u64::from(sequences);
        let n_ctx = self.context.n_ctx();
        if needed > u64::from(n_ctx) {
            return Err(EngineError::PromptTooLong {
                prompt_tokens: needed as usize,
                n_ctx,
                n_ctx_train: n_ctx,
            });
        }
        Ok(())
    }

    fn decode(&mut self) -> Result<(), EngineError> {
        self.context
            .decode(&mut self.batch)
            .map_err(|error| EngineError::Decode(error.to_string()))
    }

    /// A token id in `0..n_vocab` (xorshift64*: cheap and deterministic).
    fn random_token(&mut self) -> LlamaToken {
        self.random ^= self.random >> 12;
        self.random ^= self.random << 25;
        self.random ^= self.random >> 27;
        let value = self.random.wrapping_mul(0x2545_F491_4F6C_DD1D);
        LlamaToken((value % self.n_vocab.max(1) as u64) as i32)
    }
}
