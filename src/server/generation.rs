//! The bridge between HTTP handlers and a model's worker: submit a request
//! (one generation per choice), then collect the answers or stream them as
//! a response body.
//!
//! Owns: starting generations (dropping them, as hyper does with the body
//! when a client disconnects, cancels their sequences within one decode
//! step), and streaming bodies, several choices merged into one.
//! Must not touch: the APIs' JSON shapes (a [`StreamFormat`] writes them).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::models::{KeepAlive, LoadedModel};
use super::tools::{Conversation, Reading};
use super::worker::{Generation, GenerationEvent, ReadyInfo};
use super::AppState;
use crate::engine::{check_prompt_fits, GenerateRequest, Prompt, Stats};

/// Most choices (`n`) one request may ask for.
pub const MAX_CHOICES: u32 = 8;

/// How a request's text reaches its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Each piece as soon as it is generated (streaming responses).
    Stream,
    /// All text at once when generation ends (gathered in the worker): no
    /// wake-up of the HTTP side per token, which on few cores competes with
    /// the decode threads.
    Whole,
}

impl Delivery {
    pub fn for_stream(stream: bool) -> Self {
        if stream {
            Delivery::Stream
        } else {
            Delivery::Whole
        }
    }
}

/// What to generate, once the model's worker has said what it is.
#[derive(Debug)]
pub struct Plan {
    pub prompt: Prompt,
    pub request: GenerateRequest,
    /// A smaller context for this request (Ollama's `num_ctx`).
    pub context_limit: Option<u32>,
}

/// Generations accepted by a model's worker, one per choice.
pub struct Started {
    pub generations: Vec<Generation>,
    /// Keeps the model loaded while the answers are produced.
    pub model: Arc<LoadedModel>,
}

/// Load the model if needed, let `plan` build the prompt and request from
/// what its worker reports (the template's traits, the context), and queue
/// `choices` generations of it (their seeds one apart when a seed is
/// given, so that the choices differ). The worker renders and tokenizes the
/// prompt and checks it fits the context.
pub async fn start<T>(
    state: &AppState,
    model_name: &str,
    keep_alive: Option<KeepAlive>,
    delivery: Delivery,
    choices: u32,
    plan: impl FnOnce(&ReadyInfo) -> Result<(Plan, T), ApiError>,
) -> Result<(Started, T), ApiError> {
    let model = state.registry.get(model_name, keep_alive).await?;
    let ready = model.worker.ready().clone();
    let (plan, extra) = plan(&ready)?;
    if let Some(limit) = plan.context_limit {
        if limit > ready.context_per_sequence {
            return Err(ApiError::bad_request(format!(
                "num_ctx {limit} is larger than the context of {} tokens this server gives each request; start olm serve with a larger -c",
                ready.context_per_sequence
            )));
        }
    }
    let context = plan
        .context_limit
        .unwrap_or(ready.context_per_sequence)
        .min(ready.context_per_sequence);
    let max_bytes = usize::try_from(ready.max_prompt_bytes).unwrap_or(usize::MAX);
    check_prompt_fits(&plan.prompt, context, max_bytes)
        .map_err(|error| ApiError::from_engine(error.kind(), error.to_string()))?;
    let mut generations = Vec::with_capacity(choices as usize);
    for index in 0..choices.max(1) {
        let mut request = plan.request.clone();
        request.draft = state.registry.settings().draft;
        request.sampling.seed = request.sampling.seed.map(|seed| seed.wrapping_add(index));
        let generation = model
            .worker
            .generate(
                plan.prompt.clone(),
                request,
                delivery == Delivery::Whole,
                plan.context_limit,
            )
            .await?;
        generations.push(generation);
    }
    Ok((Started { generations, model }, extra))
}

/// Start one answer to `conversation` in the model's own chat format, at
/// the server's context: what `/v1/messages` and `/v1/responses` ask for.
pub async fn start_conversation(
    state: &AppState,
    model_name: &str,
    delivery: Delivery,
    conversation: Conversation,
    request: GenerateRequest,
) -> Result<(Started, Reading), ApiError> {
    start(state, model_name, None, delivery, 1, |ready| {
        let (prompt, request, reading) = conversation.plan(&ready.chat, request)?;
        let plan = Plan {
            prompt,
            request,
            context_limit: None,
        };
        Ok((plan, reading))
    })
    .await
}

/// Wait for every choice's whole answer.
pub async fn collect(started: &mut Started) -> Result<Vec<(String, Stats)>, ApiError> {
    let mut answers = Vec::with_capacity(started.generations.len());
    for generation in &mut started.generations {
        answers.push(collect_one(generation).await?);
    }
    Ok(answers)
}

async fn collect_one(generation: &mut Generation) -> Result<(String, Stats), ApiError> {
    let mut text = String::new();
    while let Some(reply) = generation.next().await {
        match reply {
            GenerationEvent::Accepted => {}
            GenerationEvent::Text(piece) => text.push_str(&piece),
            GenerationEvent::Done(stats) => return Ok((text, stats)),
            GenerationEvent::Failed(error) => return Err(error),
        }
    }
    Err(ApiError::internal("generation ended without a result"))
}

/// Writes one API's streaming chunks.
pub trait StreamFormat: Send + 'static {
    /// What comes before anything else.
    fn begin(&mut self) -> String {
        String::new()
    }
    /// A piece of choice `choice`'s answer.
    fn text(&mut self, choice: usize, text: &str) -> String;
    /// Choice `choice` ended.
    fn done(&mut self, choice: usize, stats: &Stats) -> String;
    /// Every choice ended.
    fn end(&mut self) -> String {
        String::new()
    }
    fn failed(&mut self, error: &ApiError) -> String;
}

/// The events of every choice, in the order they come.
enum Events {
    One(Generation),
    Many {
        receiver: mpsc::UnboundedReceiver<(usize, Option<GenerationEvent>)>,
        /// Forwarders, stopped (and their generations cancelled) when the body goes.
        _tasks: Vec<AbortOnDrop>,
    },
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Events {
    fn new(mut generations: Vec<Generation>) -> Self {
        if generations.len() == 1 {
            if let Some(generation) = generations.pop() {
                return Events::One(generation);
            }
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        let tasks = generations
            .into_iter()
            .enumerate()
            .map(|(index, mut generation)| {
                let sender = sender.clone();
                AbortOnDrop(tokio::spawn(async move {
                    loop {
                        let event = tokio::select! {
                            event = generation.next() => event,
                            () = sender.closed() => return,
                        };
                        let finished = !matches!(
                            event,
                            Some(GenerationEvent::Accepted | GenerationEvent::Text(_))
                        );
                        if sender.send((index, event)).is_err() || finished {
                            return;
                        }
                    }
                }))
            })
            .collect();
        Events::Many {
            receiver,
            _tasks: tasks,
        }
    }

    async fn next(&mut self) -> (usize, Option<GenerationEvent>) {
        match self {
            Events::One(generation) => (0, generation.next().await),
            Events::Many { receiver, .. } => receiver.recv().await.unwrap_or((0, None)),
        }
    }
}

/// A response body that streams every choice's answer as `format` writes it.
pub fn stream_body(started: Started, mut format: impl StreamFormat) -> Body {
    let remaining = started.generations.len();
    let begin = format.begin();
    let events = Events::new(started.generations);
    let model = started.model;
    let state = Some((events, format, remaining, model));
    let stream = futures_util::stream::unfold(state, |state| async move {
        let (mut events, mut format, mut remaining, model) = state?;
        let (index, event) = events.next().await;
        let (chunk, finished) = match event {
            // Consumed by `generate`; an empty chunk if it ever came again.
            Some(GenerationEvent::Accepted) => (String::new(), false),
            Some(GenerationEvent::Text(piece)) => (format.text(index, &piece), false),
            Some(GenerationEvent::Done(stats)) => {
                remaining -= 1;
                let mut chunk = format.done(index, &stats);
                if remaining == 0 {
                    chunk.push_str(&format.end());
                }
                (chunk, remaining == 0)
            }
            Some(GenerationEvent::Failed(error)) => (format.failed(&error), true),
            None => (
                format.failed(&ApiError::internal("generation ended without a result")),
                true,
            ),
        };
        let next = if finished {
            None
        } else {
            Some((events, format, remaining, model))
        };
        Some((Ok::<_, Infallible>(Bytes::from(chunk)), next))
    });
    let begin = futures_util::stream::iter(
        (!begin.is_empty()).then(|| Ok::<_, Infallible>(Bytes::from(begin))),
    );
    Body::from_stream(futures_util::StreamExt::chain(begin, stream))
}
