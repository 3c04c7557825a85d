//! Continuous batching for `olm serve`: one llama.cpp context per loaded
//! model, shared by up to `parallel` sequences, driven by one thread.
//!
//! Owns: the generation thread (a llama.cpp context is not `Send`, so it is
//! created and used only there), admission between decode steps, the step
//! batch (one next token of every generating sequence, then prompt chunks in
//! what room is left), per-sequence samplers, KV ranges, UTF-8 joining and
//! stop strings, cancellation, and the counters `/metrics` reads.
//!
//! Must not touch: HTTP, async runtimes, the store. Callers hand in tokens
//! from [`Model::tokenize`] and receive [`Event`]s through an [`EventSink`].
//!
//! The step loop: admit waiting requests into free slots; drop sequences
//! whose client left; build one batch with the pending token of every
//! generating sequence plus prompt chunks of prefilling ones (up to
//! `n_batch` tokens); `llama_decode` once; sample the next token of every
//! sequence that has logits; stream its text; finish sequences that hit
//! end of generation, a stop string, their token budget or the context.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;

use super::admission::{prefill_shares, AdmissionQueue, QueueFull, SlotPool};
use super::draft::{AcceptancePrior, Drafter, StepCosts};
use super::sampling::{PreparedSampler, Sampler};
use super::text::{StopScan, TextPipeline};
use super::{ContextShape, EngineError, GenerateRequest, Model, Prepared, Stats, StopReason};

/// How to run a model's scheduler.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SchedulerOptions {
    /// Sequences decoded together (llama.cpp's `n_seq_max`).
    pub parallel: u32,
    /// Context of each sequence in tokens (prompt plus answer).
    pub context_per_sequence: u32,
    /// Requests that may wait for a free sequence; more are turned away.
    pub queue_capacity: usize,
    /// Threads for llama.cpp.
    pub threads: u32,
    /// Largest number of tokens in one decode call.
    pub batch_size: u32,
}

/// What a request produces, in order: text pieces, then `Done` or `Failed`.
#[derive(Debug)]
pub enum Event {
    /// A piece of the answer: complete UTF-8, never part of a stop string.
    Text(String),
    /// Generation ended normally (or was cancelled).
    Done(Stats),
    /// Generation could not run or continue.
    Failed(SchedulerError),
}

/// Where a request's events go. Implemented by the server over its channel.
pub trait EventSink: Send {
    /// Deliver an event; `false` when the receiver is gone (the client left).
    fn send(&mut self, event: Event) -> bool;
    /// Whether the receiver is gone; checked before every decode step.
    fn is_closed(&self) -> bool;
}

/// Why a request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(
        "the server is busy: every sequence is in use and {capacity} requests are already waiting"
    )]
    QueueFull { capacity: usize },
    #[error("the prompt is {prompt_tokens} tokens but the context holds {n_ctx}; context length exceeded")]
    PromptTooLong { prompt_tokens: usize, n_ctx: u32 },
    #[error("the model is shutting down")]
    Stopped,
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl SchedulerError {
    pub fn kind(&self) -> super::ErrorKind {
        use super::ErrorKind;
        match self {
            SchedulerError::QueueFull { .. } => ErrorKind::Busy,
            SchedulerError::PromptTooLong { .. } => ErrorKind::InvalidRequest,
            SchedulerError::Stopped => ErrorKind::ShuttingDown,
            SchedulerError::Engine(engine) => engine.kind(),
        }
    }
}

/// A snapshot of the scheduler's counters.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct SchedulerMetrics {
    pub queued: usize,
    pub active: usize,
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
    pub finished: u64,
    pub cancelled: u64,
    pub rejected: u64,
    /// Decode calls, and the time spent in them and in whole steps
    /// (decode plus sampling and text), in nanoseconds.
    pub decode_steps: u64,
    pub decode_nanos: u64,
    pub step_nanos: u64,
    /// Speculative decoding: draft tokens proposed, and accepted.
    #[serde(default)]
    pub drafted_tokens: u64,
    #[serde(default)]
    pub accepted_tokens: u64,
    /// While sequences are active: how long since the last decode step
    /// finished (or since work arrived). A model that stops making progress
    /// (a step that never ends) shows here; 0 when idle.
    pub stalled_ms: u64,
}

/// A running scheduler: a handle to the generation thread of one model.
/// Dropping it stops the thread (waiting requests fail with `Stopped`).
pub struct Scheduler {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    context_per_sequence: u32,
    parallel: u32,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Scheduler")
            .field("parallel", &self.parallel)
            .field("context_per_sequence", &self.context_per_sequence)
            .finish()
    }
}

/// A request waiting for, or holding, a sequence.
struct Job {
    tokens: Vec<LlamaToken>,
    request: GenerateRequest,
    /// Built with the prompt, off this thread; taken when the job starts.
    sampler: Option<PreparedSampler>,
    sink: Box<dyn EventSink>,
    submitted: Instant,
}

/// What the handle and the thread share.
struct Shared {
    queue: Mutex<AdmissionQueue<Job>>,
    wake: Condvar,
    stopping: AtomicBool,
    active: AtomicUsize,
    queued: AtomicUsize,
    prompt_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    finished: AtomicU64,
    cancelled: AtomicU64,
    rejected: AtomicU64,
    decode_steps: AtomicU64,
    decode_nanos: AtomicU64,
    step_nanos: AtomicU64,
    drafted_tokens: AtomicU64,
    accepted_tokens: AtomicU64,
    /// When the scheduler started: `last_progress` counts from here.
    epoch: Instant,
    /// Nanoseconds after `epoch` when the last step ended or work arrived.
    last_progress: AtomicU64,
}

impl Shared {
    fn note_progress(&self) {
        self.last_progress
            .store(nanos(self.epoch.elapsed()), Ordering::Relaxed);
    }

    fn lock_queue(&self) -> MutexGuard<'_, AdmissionQueue<Job>> {
        // A panic elsewhere cannot leave the queue itself inconsistent.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How long the idle thread sleeps before it looks at the queue again.
const IDLE_WAIT: Duration = Duration::from_millis(250);

impl Scheduler {
    /// Start the generation thread for `model` and create its context there.
    pub fn start(model: Arc<Model>, options: &SchedulerOptions) -> Result<Self, EngineError> {
        let parallel = options.parallel.clamp(1, 256);
        let shared = Arc::new(Shared {
            queue: Mutex::new(AdmissionQueue::new(options.queue_capacity)),
            wake: Condvar::new(),
            stopping: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            decode_steps: AtomicU64::new(0),
            decode_nanos: AtomicU64::new(0),
            step_nanos: AtomicU64::new(0),
            drafted_tokens: AtomicU64::new(0),
            accepted_tokens: AtomicU64::new(0),
            epoch: Instant::now(),
            last_progress: AtomicU64::new(0),
        });
        let (ready_sender, ready) = mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        let thread_options = SchedulerOptions {
            parallel,
            ..options.clone()
        };
        let thread = std::thread::Builder::new()
            .name("olm-generation".into())
            .spawn(move || generation_thread(&model, &thread_options, thread_shared, ready_sender))
            .map_err(|error| {
                EngineError::Backend(format!("cannot start the generation thread: {error}"))
            })?;
        let context_per_sequence = match ready.recv() {
            Ok(Ok(context_per_sequence)) => context_per_sequence,
            Ok(Err(error)) => {
                let _ = thread.join();
                return Err(error);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(EngineError::Backend(
                    "the generation thread ended while starting".into(),
                ));
            }
        };
        Ok(Self {
            shared,
            thread: Some(thread),
            context_per_sequence,
            parallel,
        })
    }

    /// Tokens one sequence may hold (prompt plus answer).
    pub fn context_per_sequence(&self) -> u32 {
        self.context_per_sequence
    }

    pub fn parallel(&self) -> u32 {
        self.parallel
    }

    /// Queue a request prepared by [`Model::prepare`] (rendered, tokenized,
    /// its sampler built: nothing slow is left for the decode loop). The
    /// prompt must leave room for an answer in one sequence's context. Fails
    /// at once when the queue is full.
    pub fn submit(
        &self,
        prepared: Prepared,
        request: GenerateRequest,
        sink: Box<dyn EventSink>,
    ) -> Result<(), SchedulerError> {
        let Prepared { tokens, sampler } = prepared;
        if tokens.len() >= self.context_per_sequence as usize {
            return Err(SchedulerError::PromptTooLong {
                prompt_tokens: tokens.len(),
                n_ctx: self.context_per_sequence,
            });
        }
        if self.shared.stopping.load(Ordering::Relaxed) {
            return Err(SchedulerError::Stopped);
        }
        let job = Job {
            tokens: tokens.tokens,
            request,
            sampler: Some(sampler),
            sink,
            submitted: Instant::now(),
        };
        let mut queue = self.shared.lock_queue();
        let free_slots =
            (self.parallel as usize).saturating_sub(self.shared.active.load(Ordering::Relaxed));
        match queue.push(job, free_slots) {
            Ok(()) => {
                self.shared.queued.store(queue.len(), Ordering::Relaxed);
                drop(queue);
                self.shared.wake.notify_one();
                Ok(())
            }
            Err(QueueFull(_)) => {
                self.shared.rejected.fetch_add(1, Ordering::Relaxed);
                Err(SchedulerError::QueueFull {
                    capacity: queue.capacity(),
                })
            }
        }
    }

    pub fn metrics(&self) -> SchedulerMetrics {
        let shared = &self.shared;
        let active = shared.active.load(Ordering::Relaxed);
        let stalled_ms = if active > 0 {
            let since = nanos(shared.epoch.elapsed())
                .saturating_sub(shared.last_progress.load(Ordering::Relaxed));
            since / 1_000_000
        } else {
            0
        };
        SchedulerMetrics {
            stalled_ms,
            queued: shared.queued.load(Ordering::Relaxed),
            active,
            prompt_tokens: shared.prompt_tokens.load(Ordering::Relaxed),
            generated_tokens: shared.generated_tokens.load(Ordering::Relaxed),
            finished: shared.finished.load(Ordering::Relaxed),
            cancelled: shared.cancelled.load(Ordering::Relaxed),
            rejected: shared.rejected.load(Ordering::Relaxed),
            decode_steps: shared.decode_steps.load(Ordering::Relaxed),
            decode_nanos: shared.decode_nanos.load(Ordering::Relaxed),
            step_nanos: shared.step_nanos.load(Ordering::Relaxed),
            drafted_tokens: shared.drafted_tokens.load(Ordering::Relaxed),
            accepted_tokens: shared.accepted_tokens.load(Ordering::Relaxed),
        }
    }

    /// Whether requests are waiting or running.
    pub fn is_busy(&self) -> bool {
        let metrics = self.metrics();
        metrics.active > 0 || metrics.queued > 0
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread's body: create the context, report readiness, run the loop.
fn generation_thread(
    model: &Model,
    options: &SchedulerOptions,
    shared: Arc<Shared>,
    ready: mpsc::Sender<Result<u32, EngineError>>,
) {
    let (context, context_per_sequence) = match create_context(model, options) {
        Ok(created) => created,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    let _ = ready.send(Ok(context_per_sequence));
    let batch_size = options.batch_size.max(options.parallel) as usize;
    let mut worker = StepLoop {
        model,
        context,
        batch: LlamaBatch::new(batch_size, 1),
        batch_size,
        sequences: Vec::with_capacity(options.parallel as usize),
        slots: SlotPool::new(options.parallel),
        context_per_sequence: context_per_sequence as usize,
        shared,
        piece: Vec::with_capacity(64),
        cached: vec![Vec::new(); options.parallel as usize],
        step_costs: StepCosts::default(),
        acceptance: AcceptancePrior::default(),
    };
    worker.run();
}

/// A context of `parallel` sequences with separate KV ranges of
/// `context_per_sequence` tokens each (rounded up to llama.cpp's 256).
fn create_context<'model>(
    model: &'model Model,
    options: &SchedulerOptions,
) -> Result<(LlamaContext<'model>, u32), EngineError> {
    let per_sequence = options
        .context_per_sequence
        .clamp(1, model.n_ctx_train().max(256));
    let per_sequence = per_sequence.div_ceil(256) * 256;
    let n_ctx = per_sequence.saturating_mul(options.parallel);
    let batch_size = options.batch_size.max(options.parallel);
    let context = model.create_context(ContextShape {
        n_ctx,
        n_batch: batch_size,
        n_ubatch: 512,
        sequences: options.parallel,
        threads: options.threads,
    })?;
    let actual = (context.n_ctx() / options.parallel).min(per_sequence);
    Ok((context, actual))
}

/// One request holding a sequence slot.
struct Sequence {
    slot: u32,
    job: Job,
    sampler: Sampler,
    text: TextPipeline,
    /// Prompt tokens already in the KV cache.
    prefilled: usize,
    /// Generated tokens evaluated into the KV cache, in order.
    decoded: Vec<LlamaToken>,
    /// Tokens of this sequence in the KV cache (the next position).
    position: usize,
    /// The last sampled token, to be evaluated in the next step.
    pending: Option<LlamaToken>,
    /// Proposes the tokens after `pending` (speculative decoding).
    drafter: Drafter,
    /// This step's draft: evaluated after `pending`, verified by sampling.
    draft: Vec<i32>,
    /// Where this sequence's logits are in the current step's batch.
    logits_index: Option<i32>,
    /// Prompt tokens added to the current step's batch.
    prefill_share: usize,
    budget: usize,
    generated: usize,
    admitted: Instant,
    first_token: Option<Instant>,
    stats: Stats,
}

impl Sequence {
    fn is_prefilling(&self) -> bool {
        self.pending.is_none() && self.prefilled < self.job.tokens.len()
    }
}

/// The generation thread's state.
struct StepLoop<'model> {
    model: &'model Model,
    context: LlamaContext<'model>,
    batch: LlamaBatch<'static>,
    batch_size: usize,
    sequences: Vec<Sequence>,
    slots: SlotPool,
    context_per_sequence: usize,
    shared: Arc<Shared>,
    /// Reused for each sampled token's bytes.
    piece: Vec<u8>,
    /// Per slot, the tokens its KV range holds: kept after a request ends so
    /// that the next request with the same beginning (a chat's next turn, a
    /// repeated system prompt) evaluates only what is new.
    cached: Vec<Vec<LlamaToken>>,
    /// Decode step times, which decide when drafting pays.
    step_costs: StepCosts,
    /// How the drafts of finished answers fared: where a new answer's
    /// drafter starts.
    acceptance: AcceptancePrior,
}

impl StepLoop<'_> {
    fn run(&mut self) {
        loop {
            self.admit_waiting();
            self.drop_abandoned();
            if self.shared.stopping.load(Ordering::Relaxed) {
                self.stop_everything();
                return;
            }
            if self.sequences.is_empty() {
                self.wait_for_work();
                continue;
            }
            if let Err(error) = self.step() {
                self.fail_all(&error);
            }
        }
    }

    fn wait_for_work(&self) {
        let queue = self.shared.lock_queue();
        if queue.is_empty() && !self.shared.stopping.load(Ordering::Relaxed) {
            let _ = self.shared.wake.wait_timeout(queue, IDLE_WAIT);
        }
    }

    /// Move waiting requests into free slots; forget waiters that left.
    fn admit_waiting(&mut self) {
        let jobs = {
            let mut queue = self.shared.lock_queue();
            let abandoned = queue.remove_abandoned(|job| job.sink.is_closed());
            self.shared
                .cancelled
                .fetch_add(abandoned.len() as u64, Ordering::Relaxed);
            let jobs = queue.admit(self.slots.free_count());
            self.shared.queued.store(queue.len(), Ordering::Relaxed);
            // Counted as active before the lock is released, so `submit`
            // never sees their slots as free.
            self.shared
                .active
                .store(self.sequences.len() + jobs.len(), Ordering::Relaxed);
            jobs
        };
        if !jobs.is_empty() && self.sequences.is_empty() {
            // Work arrived at an idle model: progress is measured from now.
            self.shared.note_progress();
        }
        for job in jobs {
            self.start(job);
        }
        self.shared
            .active
            .store(self.sequences.len(), Ordering::Relaxed);
    }

    fn start(&mut self, mut job: Job) {
        let cached = &self.cached;
        let Some(slot) = self.slots.acquire_preferring(|slot| {
            worthwhile_prefix(common_prefix(&cached[slot as usize], &job.tokens))
        }) else {
            // admit() never hands out more jobs than free slots.
            job.sink.send(Event::Failed(SchedulerError::Stopped));
            return;
        };
        let Some(sampler) = job.sampler.take() else {
            // submit() always gives a job its sampler.
            job.sink.send(Event::Failed(SchedulerError::Stopped));
            self.slots.release(slot);
            return;
        };
        let sampler = sampler.into_inner();
        let reused = self.reuse_prefix(slot, &job.tokens);
        let mut drafter =
            Drafter::new(self.model.draft_config(job.request.draft), &self.acceptance);
        drafter.extend(job.tokens.iter().map(|token| token.0));
        let room = self.context_per_sequence.saturating_sub(job.tokens.len());
        let budget = job
            .request
            .max_tokens
            .map_or(room, |max| (max as usize).min(room));
        let stats = Stats {
            stop_reason: StopReason::Eog,
            prompt_tokens: job.tokens.len(),
            prompt_tokens_evaluated: job.tokens.len() - reused,
            generated_tokens: 0,
            prompt_time: Duration::ZERO,
            time_to_first_token: Duration::ZERO,
            generation_time: Duration::ZERO,
            decoded_tokens: 0,
            drafted_tokens: 0,
            accepted_tokens: 0,
        };
        self.sequences.push(Sequence {
            slot,
            text: TextPipeline::new(&job.request.stop),
            drafter,
            draft: Vec::new(),
            job,
            sampler,
            prefilled: reused,
            position: reused,
            decoded: Vec::new(),
            pending: None,
            logits_index: None,
            prefill_share: 0,
            budget,
            generated: 0,
            admitted: Instant::now(),
            first_token: None,
            stats,
        });
    }

    /// Keep the longest prefix of `tokens` that `slot` already holds (but
    /// at least the last token to evaluate, for its logits); drop the rest
    /// of the slot's KV range. Returns how many tokens are kept.
    fn reuse_prefix(&mut self, slot: u32, tokens: &[LlamaToken]) -> usize {
        let cached = std::mem::take(&mut self.cached[slot as usize]);
        let keep = common_prefix(&cached, tokens).min(tokens.len().saturating_sub(1));
        let position = u32::try_from(keep).unwrap_or(u32::MAX);
        let trimmed = keep > 0
            && self
                .context
                .clear_kv_cache_seq(Some(slot), Some(position), None)
                .unwrap_or(false);
        if trimmed {
            keep
        } else {
            self.forget_slot(slot);
            0
        }
    }

    /// Clear a slot's KV range.
    fn forget_slot(&mut self, slot: u32) {
        let _ = self.context.clear_kv_cache_seq(Some(slot), None, None);
        self.cached[slot as usize].clear();
    }

    /// Sequences whose client went away end now, before the next decode.
    fn drop_abandoned(&mut self) {
        let mut index = 0;
        while index < self.sequences.len() {
            if self.sequences[index].job.sink.is_closed() {
                let sequence = self.sequences.swap_remove(index);
                self.shared.cancelled.fetch_add(1, Ordering::Relaxed);
                self.retire(sequence);
            } else {
                index += 1;
            }
        }
        self.shared
            .active
            .store(self.sequences.len(), Ordering::Relaxed);
    }

    /// Free a finished sequence's slot, remembering what its KV range holds.
    fn retire(&mut self, sequence: Sequence) {
        sequence.drafter.teach(&mut self.acceptance);
        let slot = sequence.slot;
        let mut held = sequence.job.tokens;
        held.truncate(sequence.prefilled);
        held.extend_from_slice(&sequence.decoded);
        self.cached[slot as usize] = held;
        self.slots.release(slot);
    }

    /// One decode: every generating sequence's pending token, then prompt chunks.
    fn step(&mut self) -> Result<(), EngineError> {
        let step_started = Instant::now();
        self.fill_batch()?;
        tracing::trace!(
            tokens = self.batch.n_tokens(),
            sequences = self.sequences.len(),
            "decode step"
        );
        let decode_started = Instant::now();
        self.context
            .decode(&mut self.batch)
            .map_err(|error| EngineError::Decode(error.to_string()))?;
        let decode_time = decode_started.elapsed();
        self.record_step_cost(decode_time);
        // Progress is a decode that finished: stamped before sampling sends
        // any event, so a request answered is never seen as stalled.
        self.shared.note_progress();
        for sequence in &mut self.sequences {
            if let Some(token) = sequence.pending.take() {
                sequence.decoded.push(token);
                let draft = sequence.draft.iter().map(|&id| LlamaToken(id));
                sequence.decoded.extend(draft);
                sequence.position += 1 + sequence.draft.len();
            }
            sequence.prefilled += sequence.prefill_share;
            sequence.position += sequence.prefill_share;
            sequence.prefill_share = 0;
        }
        self.sample_all();
        let shared = &self.shared;
        shared.decode_steps.fetch_add(1, Ordering::Relaxed);
        shared
            .decode_nanos
            .fetch_add(nanos(decode_time), Ordering::Relaxed);
        shared
            .step_nanos
            .fetch_add(nanos(step_started.elapsed()), Ordering::Relaxed);
        shared.note_progress();
        Ok(())
    }

    /// Learn from a decode step's time what drafted tokens cost: only steps
    /// of generating sequences alone (prompt chunks cost differently).
    fn record_step_cost(&mut self, decode_time: Duration) {
        if self
            .sequences
            .iter()
            .any(|sequence| sequence.prefill_share > 0)
        {
            return;
        }
        let decoding = self
            .sequences
            .iter()
            .filter(|sequence| sequence.logits_index.is_some())
            .count();
        let drafted = self
            .sequences
            .iter()
            .map(|sequence| sequence.draft.len())
            .sum();
        self.step_costs
            .record(decoding, drafted, decode_time.as_secs_f32());
    }

    /// The step's batch, in slot order: with a separate KV stream per
    /// sequence, llama.cpp splits a batch into one micro-batch per run of
    /// consecutive sequence ids *in batch order*, and each micro-batch is a
    /// full pass over the weights. Slot order makes the busy slots one run
    /// (slots are handed out lowest first), so all generating sequences
    /// share one pass.
    fn fill_batch(&mut self) -> Result<(), EngineError> {
        let add_error =
            |error: llama_cpp_2::llama_batch::BatchAddError| EngineError::Decode(error.to_string());
        self.sequences
            .sort_unstable_by_key(|sequence| sequence.slot);
        self.batch.clear();
        let mut generating = 0;
        // Drafts share the batch with the prompt chunks: at most half of it.
        let mut draft_room = self.batch_size / 2;
        let decoding = self
            .sequences
            .iter()
            .filter(|sequence| sequence.pending.is_some())
            .count();
        let column_cost = self.step_costs.column_cost(decoding);
        for sequence in &mut self.sequences {
            sequence.logits_index = None;
            sequence.draft.clear();
            let Some(token) = sequence.pending else {
                continue;
            };
            sequence.drafter.extend([token.0]);
            next_draft(
                self.model,
                sequence,
                self.context_per_sequence,
                draft_room,
                column_cost,
            );
            draft_room -= sequence.draft.len();
            sequence.logits_index = Some(self.batch.n_tokens());
            let slot = [sequence.slot as i32];
            let draft = sequence.draft.iter().map(|&id| LlamaToken(id));
            for (offset, token) in std::iter::once(token).chain(draft).enumerate() {
                self.batch
                    .add(token, to_position(sequence.position + offset), &slot, true)
                    .map_err(add_error)?;
                generating += 1;
            }
        }
        let remaining: Vec<usize> = self
            .sequences
            .iter()
            .filter(|sequence| sequence.is_prefilling())
            .map(|sequence| sequence.job.tokens.len() - sequence.prefilled)
            .collect();
        let shares = prefill_shares(self.batch_size, generating, &remaining);
        let prefilling = self
            .sequences
            .iter_mut()
            .filter(|sequence| sequence.is_prefilling());
        for (sequence, share) in prefilling.zip(shares) {
            sequence.prefill_share = share;
            let end = sequence.prefilled + share;
            for position in sequence.prefilled..end {
                let is_last = position + 1 == sequence.job.tokens.len();
                if is_last {
                    sequence.logits_index = Some(self.batch.n_tokens());
                }
                self.batch
                    .add(
                        sequence.job.tokens[position],
                        to_position(position),
                        &[sequence.slot as i32],
                        is_last,
                    )
                    .map_err(add_error)?;
            }
        }
        Ok(())
    }

    /// Sample the next token of every sequence with logits in this step and
    /// finish those that are done.
    fn sample_all(&mut self) {
        let mut finished = Vec::new();
        for (index, sequence) in self.sequences.iter_mut().enumerate() {
            let Some(logits_index) = sequence.logits_index.take() else {
                continue;
            };
            let verdict = verify_draft(
                &mut self.context,
                self.model,
                sequence,
                logits_index,
                self.context_per_sequence,
                &mut self.piece,
                &self.shared,
            );
            match verdict {
                Ok(None) => {}
                Ok(Some(reason)) => finished.push((index, Ok(reason))),
                Err(error) => finished.push((index, Err(error))),
            }
        }
        // Highest index first, so swap_remove never moves one still to remove.
        for (index, verdict) in finished.into_iter().rev() {
            let sequence = self.sequences.swap_remove(index);
            match verdict {
                Ok(reason) => self.finish(sequence, reason),
                Err(error) => self.fail(sequence, error),
            }
        }
        self.shared
            .active
            .store(self.sequences.len(), Ordering::Relaxed);
    }

    fn finish(&mut self, mut sequence: Sequence, reason: StopReason) {
        let slot = sequence.slot;
        if reason == StopReason::Cancelled {
            self.shared.cancelled.fetch_add(1, Ordering::Relaxed);
        } else {
            let reason = flush_text(&mut sequence, reason);
            sequence.stats.stop_reason = reason;
            sequence.stats.generated_tokens = sequence.generated;
            sequence.stats.decoded_tokens = sequence.generated.saturating_sub(1);
            if let Some(first) = sequence.first_token {
                sequence.stats.generation_time = first.elapsed();
            }
            let stats = sequence.stats.clone();
            sequence.job.sink.send(Event::Done(stats));
            self.shared.finished.fetch_add(1, Ordering::Relaxed);
        }
        debug_assert_eq!(slot, sequence.slot);
        self.retire(sequence);
    }

    /// One sequence cannot go on (its logits are not numbers): its client
    /// gets the error and its slot's cache is dropped; the others go on.
    fn fail(&mut self, mut sequence: Sequence, error: EngineError) {
        let slot = sequence.slot;
        sequence
            .job
            .sink
            .send(Event::Failed(SchedulerError::Engine(error)));
        self.forget_slot(slot);
        self.slots.release(slot);
    }

    /// A decode failed: every active request gets the error, the cache is reset.
    fn fail_all(&mut self, error: &EngineError) {
        for mut sequence in std::mem::take(&mut self.sequences) {
            let failure = SchedulerError::Engine(EngineError::Decode(error.to_string()));
            sequence.job.sink.send(Event::Failed(failure));
            self.slots.release(sequence.slot);
        }
        self.context.clear_kv_cache();
        self.cached.iter_mut().for_each(Vec::clear);
        self.shared.active.store(0, Ordering::Relaxed);
    }

    fn stop_everything(&mut self) {
        let waiting = self.shared.lock_queue().drain_all();
        for mut job in waiting {
            job.sink.send(Event::Failed(SchedulerError::Stopped));
        }
        for mut sequence in std::mem::take(&mut self.sequences) {
            sequence
                .job
                .sink
                .send(Event::Failed(SchedulerError::Stopped));
        }
        self.shared.queued.store(0, Ordering::Relaxed);
        self.shared.active.store(0, Ordering::Relaxed);
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Below this many cached tokens a slot is not worth leaving a gap for: a
/// gap among busy slots costs llama.cpp an extra pass over the weights on
/// every step (see [`StepLoop::fill_batch`]), re-evaluating a short prompt once
/// costs much less.
const MIN_PREFIX_WORTH_A_GAP: usize = 256;

fn worthwhile_prefix(prefix: usize) -> usize {
    if prefix >= MIN_PREFIX_WORTH_A_GAP {
        prefix
    } else {
        0
    }
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn to_position(position: usize) -> i32 {
    // Positions are below the context size, which llama.cpp keeps in 32 bits.
    i32::try_from(position).unwrap_or(i32::MAX)
}

/// The draft after a sequence's pending token: no longer than the room
/// left in its context, its token budget and the batch, and never an
/// end-of-generation token. A drafted column costs the sequence
/// `column_cost` of a token.
fn next_draft(
    model: &Model,
    sequence: &mut Sequence,
    context: usize,
    batch_room: usize,
    column_cost: f32,
) {
    sequence.drafter.draft(&mut sequence.draft, column_cost);
    let room = context
        .saturating_sub(sequence.position + 1)
        .min(sequence.budget.saturating_sub(sequence.generated + 1))
        .min(batch_room);
    sequence.draft.truncate(room);
    if let Some(end) = sequence
        .draft
        .iter()
        .position(|&token| model.is_end_of_generation(LlamaToken(token)))
    {
        sequence.draft.truncate(end);
    }
}

/// Sample where the sequence's pending token and each draft token stand:
/// every draft token the sampler picks too is emitted (it is already in the
/// cache); the first one it does not is dropped from the cache with the rest
/// of the draft, and the token sampled instead is emitted and pending for the
/// next step. Returns the reason the sequence ends, if it does.
fn verify_draft(
    context: &mut LlamaContext<'_>,
    model: &Model,
    sequence: &mut Sequence,
    logits_index: i32,
    context_per_sequence: usize,
    piece: &mut Vec<u8>,
    shared: &Shared,
) -> Result<Option<StopReason>, EngineError> {
    let drafted = sequence.draft.len();
    let mut accepted = 0;
    let token = loop {
        let token = sequence
            .sampler
            .sample(context, logits_index + accepted as i32)?;
        if sequence.draft.get(accepted) != Some(&token.0) {
            break token;
        }
        accepted += 1;
        sequence.drafter.extend([token.0]);
        if let Some(reason) =
            emit_token(model, sequence, token, context_per_sequence, piece, shared)
        {
            drop_rejected(context, sequence, drafted - accepted);
            record_draft(sequence, shared, drafted, accepted);
            return Ok(Some(reason));
        }
    };
    drop_rejected(context, sequence, drafted - accepted);
    record_draft(sequence, shared, drafted, accepted);
    let reason = emit_token(model, sequence, token, context_per_sequence, piece, shared);
    if reason.is_none() {
        sequence.pending = Some(token);
    }
    Ok(reason)
}

fn record_draft(sequence: &mut Sequence, shared: &Shared, drafted: usize, accepted: usize) {
    if drafted == 0 {
        return;
    }
    sequence.drafter.record(drafted, accepted);
    sequence.stats.drafted_tokens += drafted;
    sequence.stats.accepted_tokens += accepted;
    shared
        .drafted_tokens
        .fetch_add(drafted as u64, Ordering::Relaxed);
    shared
        .accepted_tokens
        .fetch_add(accepted as u64, Ordering::Relaxed);
}

/// Remove the last `rejected` draft tokens from the sequence's cache.
fn drop_rejected(context: &mut LlamaContext<'_>, sequence: &mut Sequence, rejected: usize) {
    if rejected == 0 {
        return;
    }
    sequence.position -= rejected;
    let kept = sequence.decoded.len() - rejected;
    sequence.decoded.truncate(kept);
    let position = u32::try_from(sequence.position).unwrap_or(u32::MAX);
    // Drafting is off for models whose memory cannot drop a range.
    let _ = context.clear_kv_cache_seq(Some(sequence.slot), Some(position), None);
}

/// Take a token the sequence produced: stream its text and decide whether
/// the sequence ends. Returns the reason when it does.
fn emit_token(
    model: &Model,
    sequence: &mut Sequence,
    token: LlamaToken,
    context_per_sequence: usize,
    piece: &mut Vec<u8>,
    shared: &Shared,
) -> Option<StopReason> {
    if sequence.first_token.is_none() {
        let now = Instant::now();
        sequence.first_token = Some(now);
        sequence.stats.time_to_first_token = now - sequence.job.submitted;
        sequence.stats.prompt_time = now - sequence.admitted;
        shared
            .prompt_tokens
            .fetch_add(sequence.job.tokens.len() as u64, Ordering::Relaxed);
    }
    if model.is_end_of_generation(token) {
        return Some(StopReason::Eog);
    }
    sequence.generated += 1;
    shared.generated_tokens.fetch_add(1, Ordering::Relaxed);

    model.token_bytes(token, piece);
    // `release` is sent away as the event's text, so it is a new String.
    let mut release = String::new();
    let scan = sequence.text.push(piece, &mut release);
    if !release.is_empty() && !sequence.job.sink.send(Event::Text(release)) {
        return Some(StopReason::Cancelled);
    }
    if scan == StopScan::Stopped {
        Some(StopReason::StopSequence)
    } else if sequence.generated >= sequence.budget {
        Some(StopReason::MaxTokens)
    } else if sequence.position >= context_per_sequence {
        Some(StopReason::ContextFull)
    } else {
        None
    }
}

/// Emit text still held by the UTF-8 joiner or the stop matcher; a stop
/// string completed by that last text changes the reason.
fn flush_text(sequence: &mut Sequence, reason: StopReason) -> StopReason {
    if reason == StopReason::StopSequence {
        return reason;
    }
    let mut release = String::new();
    let reason = match sequence.text.finish(&mut release) {
        StopScan::Stopped => StopReason::StopSequence,
        StopScan::Continue => reason,
    };
    if !release.is_empty() {
        sequence.job.sink.send(Event::Text(release));
    }
    reason
}
