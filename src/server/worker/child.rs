//! The worker process (`olm __worker`): loads one model, runs its
//! scheduler, and answers the server over stdin/stdout (see [`protocol`]).
//!
//! Owns: everything llama.cpp does for the server, so that an abort inside
//! llama.cpp ends this process only. Three kinds of thread keep each other
//! free: the reader takes the server's messages (a cancel is never stuck
//! behind a slow request), preparers render, tokenize and build each
//! request's grammar within a time budget, and the scheduler's thread only
//! decodes. Must not touch: HTTP, the store, the terminal (stdout carries
//! the protocol; logs go to stderr).
//!
//! [`protocol`]: super::protocol

use std::collections::HashMap;
use std::io::{BufRead, BufWriter, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::protocol::{
    Embeddings, FromWorker, ReadyInfo, ToWorker, WireError, WireStats, WorkerConfig, WorkerMetrics,
};
use crate::engine::{
    self, EngineError, ErrorKind, Event, EventSink, GenerateRequest, Model, Prompt, Scheduler,
    SchedulerError,
};

/// Threads that prepare requests (render, tokenize, grammar) at once.
const PREPARERS: usize = 2;
/// How long preparing one request may take before it is answered with 503.
const PREPARATION_BUDGET: Duration = Duration::from_secs(15);

/// Where every message to the server goes; one line each, flushed at once.
#[derive(Clone)]
struct Outbox(Arc<Mutex<BufWriter<std::io::Stdout>>>);

impl Outbox {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(BufWriter::new(std::io::stdout()))))
    }

    /// Send a message; `false` when the server is gone.
    fn send(&self, message: &FromWorker) -> bool {
        let mut out = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Straight into the buffer: no String per token. The newline ends
        // the line even if serializing failed half way (the server skips it).
        let serialized = serde_json::to_writer(&mut *out, message).is_ok();
        let ended = out.write_all(b"\n").and_then(|()| out.flush()).is_ok();
        serialized && ended
    }

    fn fail(&self, id: u64, error: WireError) {
        self.send(&FromWorker::Failed { id, error });
    }
}

/// Cancellation flags of the generations in flight, by request id.
type Cancellations = Arc<Mutex<HashMap<u64, Arc<AtomicBool>>>>;

/// Run the worker until the server closes stdin. Returns the process's exit status.
pub fn run() -> i32 {
    let outbox = Outbox::new();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let config: WorkerConfig = match lines.next() {
        Some(Ok(line)) => match serde_json::from_str(&line) {
            Ok(config) => config,
            Err(error) => {
                return fatal(
                    &outbox,
                    WireError::new(
                        ErrorKind::Internal,
                        format!("bad worker configuration: {error}"),
                    ),
                )
            }
        },
        _ => {
            return fatal(
                &outbox,
                WireError::new(ErrorKind::Internal, "no worker configuration on stdin"),
            )
        }
    };
    engine::configure_logging(config.verbose);
    let started = Instant::now();
    let (model, scheduler) = match load(&config) {
        Ok(loaded) => loaded,
        Err(error) => return fatal(&outbox, error),
    };
    let ready = ReadyInfo {
        context_per_sequence: scheduler.context_per_sequence(),
        parallel: scheduler.parallel(),
        size: model.size(),
        embedding_size: model.embedding_size(),
        max_prompt_bytes: model
            .prompt_limits()
            .max_bytes(scheduler.context_per_sequence()) as u64,
        load_seconds: started.elapsed().as_secs_f64(),
        split: model.split().cloned(),
        // Probed once here (a few renderings in the template process), so
        // requests with tools or a thinking switch can be read by the server.
        chat: model.chat_traits(),
        size_vram: model.size_on_gpu(config.load.gpu_layers),
    };
    if !outbox.send(&FromWorker::Ready(ready)) {
        return 0;
    }
    let preparers = Preparers::start(
        Arc::clone(&model),
        Arc::clone(&scheduler),
        outbox.clone(),
        Admission::new(&config.scheduler),
    );
    let cancellations: Cancellations = Arc::default();
    for line in lines {
        let Ok(line) = line else { break };
        match serde_json::from_str::<ToWorker>(&line) {
            Ok(message) => handle(
                message,
                &model,
                &scheduler,
                &preparers,
                &config,
                &outbox,
                &cancellations,
            ),
            Err(error) => tracing::warn!("ignoring a malformed message from the server: {error}"),
        }
    }
    // stdin closed: the server stopped or let this model go.
    preparers.stop();
    drop(scheduler);
    0
}

fn fatal(outbox: &Outbox, error: WireError) -> i32 {
    outbox.send(&FromWorker::Fatal { error });
    1
}

/// Validate the file (the one check that stands between a request and
/// llama.cpp), load it and start its scheduler.
fn load(config: &WorkerConfig) -> Result<(Arc<Model>, Arc<Scheduler>), WireError> {
    let model = Arc::new(load_model(config)?);
    let scheduler = Scheduler::start(Arc::clone(&model), &config.scheduler)
        .map_err(|error| WireError::from(&error))?;
    Ok((model, Arc::new(scheduler)))
}

fn load_model(config: &WorkerConfig) -> Result<Model, WireError> {
    #[cfg(debug_assertions)]
    if config.skip_gguf_check {
        return Model::load_unchecked(&config.path, &config.load)
            .map_err(|error| WireError::from(&error));
    }
    let checked = crate::gguf::check_model(&config.path).map_err(|_| {
        WireError::new(
            ErrorKind::UnusableModel,
            "the model file is not a usable GGUF file",
        )
    })?;
    Model::load(&checked, &config.load).map_err(|error| WireError::from(&error))
}

fn handle(
    message: ToWorker,
    model: &Arc<Model>,
    scheduler: &Scheduler,
    preparers: &Preparers,
    config: &WorkerConfig,
    outbox: &Outbox,
    cancellations: &Cancellations,
) {
    match message {
        ToWorker::Generate {
            id,
            prompt,
            request,
            whole,
            context_limit,
        } => {
            let cancelled = Arc::new(AtomicBool::new(false));
            lock(cancellations).insert(id, Arc::clone(&cancelled));
            let Some(admitted) = preparers.admission.admit() else {
                lock(cancellations).remove(&id);
                return outbox.fail(id, preparers.admission.refusal());
            };
            let sink = WorkerSink {
                id,
                outbox: outbox.clone(),
                cancelled,
                cancellations: Arc::clone(cancellations),
                gathered: whole.then(String::new),
                _admitted: admitted,
            };
            preparers.queue(Preparation {
                prompt,
                request,
                context_limit,
                sink,
                received: Instant::now(),
            });
        }
        ToWorker::Cancel { id } => {
            if let Some(flag) = lock(cancellations).get(&id) {
                flag.store(true, Ordering::Relaxed);
            }
        }
        ToWorker::Embed {
            id,
            inputs,
            truncate,
        } => embed(
            EmbedJob {
                id,
                inputs,
                truncate,
            },
            model,
            config,
            outbox,
            cancellations,
            &preparers.admission.embeddings,
        ),
        ToWorker::Metrics { id } => {
            let mut counters = scheduler.metrics();
            counters.rejected += preparers.admission.rejected.load(Ordering::Relaxed);
            outbox.send(&FromWorker::Metrics {
                id,
                metrics: WorkerMetrics {
                    scheduler: counters,
                    preparing: preparers.busy(),
                    oldest_preparation_ms: preparers.oldest_ms(),
                },
            });
        }
    }
}

/// One embedding request.
struct EmbedJob {
    id: u64,
    inputs: Vec<String>,
    truncate: bool,
}

/// Embeddings waiting for their turn in a worker, at most; more are turned
/// away as busy.
const EMBEDDINGS_WAITING: usize = 16;

/// Embeddings take turns: each has its own llama.cpp context, whose logits
/// alone can take 2 GiB (`engine::embed`), so two at once would
/// double the worker's peak memory.
#[derive(Default)]
struct EmbeddingLine {
    turn: Mutex<()>,
    queued: AtomicUsize,
}

/// A place in the [`EmbeddingLine`], given back when dropped.
struct InLine(Arc<EmbeddingLine>);

impl Drop for InLine {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EmbeddingLine {
    fn join(self: &Arc<Self>) -> Option<InLine> {
        self.queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |queued| {
                (queued < EMBEDDINGS_WAITING + 1).then_some(queued + 1)
            })
            .ok()
            .map(|_| InLine(Arc::clone(self)))
    }
}

/// Embed off the reading thread, so cancels and new requests keep flowing;
/// one embedding at a time, cancelled when its client leaves.
fn embed(
    job: EmbedJob,
    model: &Arc<Model>,
    config: &WorkerConfig,
    outbox: &Outbox,
    cancellations: &Cancellations,
    line: &Arc<EmbeddingLine>,
) {
    let EmbedJob {
        id,
        inputs,
        truncate,
    } = job;
    let Some(in_line) = line.join() else {
        return outbox.fail(
            id,
            WireError::new(
                ErrorKind::Busy,
                format!(
                    "{EMBEDDINGS_WAITING} embedding requests are already waiting for this model"
                ),
            ),
        );
    };
    let cancelled = Arc::new(AtomicBool::new(false));
    lock(cancellations).insert(id, Arc::clone(&cancelled));
    let cancellations = Arc::clone(cancellations);
    let model = Arc::clone(model);
    let thread_outbox = outbox.clone();
    let options = engine::EmbedOptions {
        threads: config.scheduler.threads,
        max_tokens: config.scheduler.context_per_sequence,
    };
    let spawned = std::thread::Builder::new()
        .name("olm-embed".into())
        .spawn(move || {
            let result = {
                let _turn = lock(&in_line.0.turn);
                engine::embed(&model, &inputs, truncate, options, &cancelled)
            };
            drop(in_line);
            lock(&cancellations).remove(&id);
            let reply = match result {
                Ok(embedded) => FromWorker::Embedded {
                    id,
                    embeddings: Embeddings {
                        vectors: embedded.vectors,
                        prompt_tokens: embedded.prompt_tokens,
                    },
                },
                Err(error) => FromWorker::Failed {
                    id,
                    error: WireError::from(&error),
                },
            };
            thread_outbox.send(&reply);
        });
    if spawned.is_err() {
        outbox.fail(
            id,
            WireError::new(ErrorKind::Internal, "cannot start an embedding thread"),
        );
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The worker's door: at most `parallel + queue_capacity` generations are
/// in the worker at once (being prepared, queued or decoding), as the
/// scheduler's own queue allows; one more is refused at once with 503.
struct Admission {
    /// Embeddings, which take turns apart from generations.
    embeddings: Arc<EmbeddingLine>,
    in_flight: Arc<AtomicUsize>,
    capacity: usize,
    queue_capacity: usize,
    rejected: AtomicU64,
}

/// One admitted generation; leaves when dropped (with its sink, when the
/// request ends for any reason).
struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    fn new(options: &engine::SchedulerOptions) -> Self {
        Self {
            embeddings: Arc::default(),
            in_flight: Arc::new(AtomicUsize::new(0)),
            capacity: options.queue_capacity + options.parallel as usize,
            queue_capacity: options.queue_capacity,
            rejected: AtomicU64::new(0),
        }
    }

    fn admit(&self) -> Option<Admitted> {
        let taken = self
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |count| {
                (count < self.capacity).then_some(count + 1)
            })
            .is_ok();
        if !taken {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
        taken.then(|| Admitted(Arc::clone(&self.in_flight)))
    }

    fn refusal(&self) -> WireError {
        WireError::from(&SchedulerError::QueueFull {
            capacity: self.queue_capacity,
        })
    }
}

/// A generation waiting to be prepared.
struct Preparation {
    prompt: Prompt,
    request: GenerateRequest,
    context_limit: Option<u32>,
    sink: WorkerSink,
    received: Instant,
}

/// The preparing threads and their bounded queue.
struct Preparers {
    queue: Option<SyncSender<Preparation>>,
    admission: Admission,
    /// Raised when stdin closes: what is still queued is dropped unprepared.
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    outbox: Outbox,
    /// When each busy preparer started its current request.
    started: Arc<Mutex<Vec<Option<Instant>>>>,
}

impl Preparers {
    fn start(
        model: Arc<Model>,
        scheduler: Arc<Scheduler>,
        outbox: Outbox,
        admission: Admission,
    ) -> Self {
        // Never full: admission bounds what is in the worker.
        let (sender, receiver) = mpsc::sync_channel(admission.capacity.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        let started = Arc::new(Mutex::new(vec![None; PREPARERS]));
        let stopping = Arc::new(AtomicBool::new(false));
        let threads = (0..PREPARERS)
            .filter_map(|index| {
                let preparer = Preparer {
                    index,
                    model: Arc::clone(&model),
                    scheduler: Arc::clone(&scheduler),
                    outbox: outbox.clone(),
                    started: Arc::clone(&started),
                    stopping: Arc::clone(&stopping),
                };
                let receiver = Arc::clone(&receiver);
                std::thread::Builder::new()
                    .name(format!("olm-prepare-{index}"))
                    .spawn(move || preparer.run(&receiver))
                    .ok()
            })
            .collect();
        Self {
            queue: Some(sender),
            admission,
            stopping,
            threads,
            outbox,
            started,
        }
    }

    /// Queue `preparation`, or answer 503 at once when the queue is full.
    fn queue(&self, preparation: Preparation) {
        let Some(queue) = &self.queue else { return };
        match queue.try_send(preparation) {
            Ok(()) => {}
            Err(TrySendError::Full(preparation) | TrySendError::Disconnected(preparation)) => {
                self.outbox.fail(
                    preparation.sink.id,
                    WireError::new(
                        ErrorKind::Busy,
                        "the server is busy: too many requests are waiting to be prepared",
                    ),
                );
            }
        }
    }

    /// Requests being prepared now.
    fn busy(&self) -> usize {
        lock(&self.started).iter().flatten().count()
    }

    /// How long the oldest preparation now running has taken, in milliseconds.
    fn oldest_ms(&self) -> u64 {
        lock(&self.started)
            .iter()
            .flatten()
            .map(|started| u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX))
            .max()
            .unwrap_or(0)
    }

    /// Let queued requests drain and the threads end.
    fn stop(mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.queue = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One preparing thread.
struct Preparer {
    index: usize,
    model: Arc<Model>,
    scheduler: Arc<Scheduler>,
    outbox: Outbox,
    started: Arc<Mutex<Vec<Option<Instant>>>>,
    stopping: Arc<AtomicBool>,
}

impl Preparer {
    fn run(&self, queue: &Mutex<Receiver<Preparation>>) {
        loop {
            let next = lock(queue).recv();
            let Ok(preparation) = next else { return };
            if self.stopping.load(Ordering::Relaxed) {
                return;
            }
            lock(&self.started)[self.index] = Some(Instant::now());
            self.prepare(preparation);
            lock(&self.started)[self.index] = None;
        }
    }

    /// Render, tokenize and build the sampler, then hand the request to the
    /// scheduler; every failure is answered with its kind.
    fn prepare(&self, preparation: Preparation) {
        let Preparation {
            prompt,
            mut request,
            context_limit,
            sink,
            received,
        } = preparation;
        let id = sink.id;
        if sink.is_closed() {
            return;
        }
        let n_ctx = context_limit.map_or(self.scheduler.context_per_sequence(), |limit| {
            limit.min(self.scheduler.context_per_sequence())
        });
        let prepared = self
            .model
            .prepare(&prompt, &request, n_ctx, &sink.cancelled);
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(EngineError::Cancelled) => return,
            Err(error) => return self.outbox.fail(id, WireError::from(&error)),
        };
        if context_limit.is_some() {
            // The answer fills what the smaller context leaves.
            let room = n_ctx.saturating_sub(prepared.prompt_tokens() as u32).max(1);
            request.max_tokens = Some(request.max_tokens.map_or(room, |max| max.min(room)));
        }
        if received.elapsed() > PREPARATION_BUDGET {
            return self.outbox.fail(
                id,
                WireError::new(
                    ErrorKind::Busy,
                    format!(
                        "preparing the prompt took longer than {} s",
                        PREPARATION_BUDGET.as_secs()
                    ),
                ),
            );
        }
        match self.scheduler.submit(prepared, request, Box::new(sink)) {
            Ok(()) => {
                self.outbox.send(&FromWorker::Accepted { id });
            }
            Err(error) => self.outbox.fail(id, WireError::from(&error)),
        }
    }
}

/// Sends one request's events to the server; with `gathered`, its text in
/// one piece at the end.
struct WorkerSink {
    id: u64,
    outbox: Outbox,
    cancelled: Arc<AtomicBool>,
    cancellations: Cancellations,
    gathered: Option<String>,
    /// Holds this generation's place until the request ends.
    _admitted: Admitted,
}

impl EventSink for WorkerSink {
    fn send(&mut self, event: Event) -> bool {
        let id = self.id;
        let message = match (&mut self.gathered, event) {
            (Some(text), Event::Text(piece)) => {
                text.push_str(&piece);
                return !self.is_closed();
            }
            (None, Event::Text(text)) => FromWorker::Text { id, text },
            (gathered, Event::Done(stats)) => {
                if let Some(text) = gathered.take().filter(|text| !text.is_empty()) {
                    self.outbox.send(&FromWorker::Text { id, text });
                }
                FromWorker::Done {
                    id,
                    stats: WireStats::from(&stats),
                }
            }
            (_, Event::Failed(error)) => FromWorker::Failed {
                id,
                error: WireError::from(&error),
            },
        };
        self.outbox.send(&message) && !self.is_closed()
    }

    fn is_closed(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

impl Drop for WorkerSink {
    fn drop(&mut self) {
        lock(&self.cancellations).remove(&self.id);
    }
}
