//! The bridge between HTTP handlers and a model's worker: submit a request,
//! then collect its answer or stream it as a response body.
//!
//! Owns: starting a generation (dropping it, as hyper does with the body
//! when a client disconnects, cancels the sequence within one decode step),
//! and streaming bodies.
//! Must not touch: either API's JSON shapes (a [`StreamFormat`] writes them).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};

use super::error::ApiError;
use super::models::{KeepAlive, LoadedModel};
use super::worker::{Generation, GenerationEvent};
use super::AppState;
use crate::engine::{check_prompt_fits, GenerateRequest, Prompt, Stats};

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

/// A request accepted by a model's worker.
pub struct Started {
    pub generation: Generation,
    /// Keeps the model loaded while the answer is produced.
    pub model: Arc<LoadedModel>,
}

/// Load the model if needed and queue the request in its worker, which
/// renders and tokenizes the prompt and checks it fits the context.
pub async fn start(
    state: &AppState,
    model_name: &str,
    prompt: Prompt,
    mut request: GenerateRequest,
    delivery: Delivery,
    keep_alive: Option<KeepAlive>,
) -> Result<Started, ApiError> {
    request.draft = state.registry.settings().draft;
    let model = state.registry.get(model_name, keep_alive).await?;
    let ready = model.worker.ready();
    let max_bytes = usize::try_from(ready.max_prompt_bytes).unwrap_or(usize::MAX);
    check_prompt_fits(&prompt, ready.context_per_sequence, max_bytes)
        .map_err(|error| ApiError::from_engine(error.kind(), error.to_string()))?;
    let generation = model
        .worker
        .generate(prompt, request, delivery == Delivery::Whole)
        .await?;
    Ok(Started { generation, model })
}

/// Wait for the whole answer.
pub async fn collect(started: &mut Started) -> Result<(String, Stats), ApiError> {
    let mut text = String::new();
    while let Some(reply) = started.generation.next().await {
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
    fn text(&mut self, text: &str) -> String;
    fn done(&mut self, stats: &Stats) -> String;
    fn failed(&mut self, error: &ApiError) -> String;
}

/// A response body that streams the answer as `format` writes it.
pub fn stream_body(started: Started, format: impl StreamFormat) -> Body {
    let stream = futures_util::stream::unfold(Some((started, format)), |state| async move {
        let (mut started, mut format) = state?;
        let (chunk, finished) = match started.generation.next().await {
            // Consumed by `generate`; an empty chunk if it ever came again.
            Some(GenerationEvent::Accepted) => (String::new(), false),
            Some(GenerationEvent::Text(piece)) => (format.text(&piece), false),
            Some(GenerationEvent::Done(stats)) => (format.done(&stats), true),
            Some(GenerationEvent::Failed(error)) => (format.failed(&error), true),
            None => (
                format.failed(&ApiError::internal("generation ended without a result")),
                true,
            ),
        };
        let next = if finished {
            None
        } else {
            Some((started, format))
        };
        Some((Ok::<_, Infallible>(Bytes::from(chunk)), next))
    });
    Body::from_stream(stream)
}
