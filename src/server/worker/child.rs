//! The worker process (`olm __worker`): loads one model, runs its
//! scheduler, and answers the server over stdin/stdout (see [`protocol`]).
//!
//! Owns: everything llama.cpp does for the server, so that an abort inside
//! llama.cpp ends this process only. Must not touch: HTTP, the store, the
//! terminal (stdout carries the protocol; logs go to stderr).
//!
//! [`protocol`]: super::protocol

use std::collections::HashMap;
use std::io::{BufRead, BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use super::protocol::{
    Embeddings, FromWorker, ReadyInfo, ToWorker, WireError, WireStats, WorkerConfig,
};
use crate::engine::{self, Event, EventSink, Model, Scheduler};
use crate::server::generation::{engine_error, scheduler_error};

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
                    internal(format!("bad worker configuration: {error}")),
                )
            }
        },
        _ => return fatal(&outbox, internal("no worker configuration on stdin".into())),
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
        load_seconds: started.elapsed().as_secs_f64(),
    };
    if !outbox.send(&FromWorker::Ready(ready)) {
        return 0;
    }
    let cancellations: Cancellations = Arc::default();
    for line in lines {
        let Ok(line) = line else { break };
        match serde_json::from_str::<ToWorker>(&line) {
            Ok(message) => handle(
                message,
                &model,
                &scheduler,
                &config,
                &outbox,
                &cancellations,
            ),
            Err(error) => tracing::warn!("ignoring a malformed message from the server: {error}"),
        }
    }
    // stdin closed: the server stopped or let this model go.
    drop(scheduler);
    0
}

fn internal(message: String) -> WireError {
    WireError {
        status: 500,
        message,
    }
}

fn fatal(outbox: &Outbox, error: WireError) -> i32 {
    outbox.send(&FromWorker::Fatal { error });
    1
}

/// Validate the file (the one check that stands between a request and
/// llama.cpp), load it and start its scheduler.
fn load(config: &WorkerConfig) -> Result<(Arc<Model>, Scheduler), WireError> {
    let failed = |status: u16, message: String| WireError { status, message };
    if !config.skip_gguf_check {
        crate::gguf::inspect(&config.path)
            .map_err(|_| failed(422, "the model file is not a usable GGUF file".into()))?;
    }
    let model = Arc::new(
        Model::load(&config.path, &config.load).map_err(|error| match error {
            engine::EngineError::Load { .. } => {
                failed(500, "llama.cpp could not load the model file".into())
            }
            other => failed(500, other.to_string()),
        })?,
    );
    let scheduler = Scheduler::start(Arc::clone(&model), &config.scheduler)
        .map_err(|error| failed(500, error.to_string()))?;
    Ok((model, scheduler))
}

fn handle(
    message: ToWorker,
    model: &Arc<Model>,
    scheduler: &Scheduler,
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
        } => {
            let cancelled = Arc::new(AtomicBool::new(false));
            lock(cancellations).insert(id, Arc::clone(&cancelled));
            let sink = Box::new(WorkerSink {
                id,
                outbox: outbox.clone(),
                cancelled,
                cancellations: Arc::clone(cancellations),
                gathered: whole.then(String::new),
            });
            let submitted = model
                .tokenize(&prompt)
                .map_err(|error| engine_error(&error))
                .and_then(|tokens| {
                    scheduler
                        .submit(&tokens, request, sink)
                        .map_err(scheduler_error)
                });
            match submitted {
                Ok(()) => {
                    outbox.send(&FromWorker::Accepted { id });
                }
                Err(error) => {
                    lock(cancellations).remove(&id);
                    outbox.send(&FromWorker::Failed {
                        id,
                        error: WireError::from(&error),
                    });
                }
            }
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
        } => {
            let model = Arc::clone(model);
            let thread_outbox = outbox.clone();
            let threads = config.scheduler.threads;
            // Off the reading thread, so cancels and new requests keep flowing.
            let spawned = std::thread::Builder::new()
                .name("olm-embed".into())
                .spawn(move || {
                    let reply = match engine::embed(&model, &inputs, truncate, threads) {
                        Ok(embedded) => FromWorker::Embedded {
                            id,
                            embeddings: Embeddings {
                                vectors: embedded.vectors,
                                prompt_tokens: embedded.prompt_tokens,
                            },
                        },
                        Err(error) => FromWorker::Failed {
                            id,
                            error: WireError::from(&engine_error(&error)),
                        },
                    };
                    thread_outbox.send(&reply);
                });
            if spawned.is_err() {
                outbox.send(&FromWorker::Failed {
                    id,
                    error: WireError {
                        status: 500,
                        message: "cannot start an embedding thread".into(),
                    },
                });
            }
        }
        ToWorker::Metrics { id } => {
            outbox.send(&FromWorker::Metrics {
                id,
                metrics: scheduler.metrics(),
            });
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sends one request's events to the server; with `gathered`, its text in
/// one piece at the end.
struct WorkerSink {
    id: u64,
    outbox: Outbox,
    cancelled: Arc<AtomicBool>,
    cancellations: Cancellations,
    gathered: Option<String>,
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
                error: WireError::from(&scheduler_error(error)),
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
