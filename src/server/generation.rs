//! The bridge between HTTP handlers and a model's scheduler: submit a
//! request, then collect its answer or stream it as a response body.
//!
//! Owns: the event channel (dropping the receiver, as hyper does when a
//! client disconnects, cancels the sequence within one decode step), the
//! translation of engine errors into API errors, and streaming bodies.
//! Must not touch: either API's JSON shapes (a [`StreamFormat`] writes them).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::error::ApiError;
use super::models::LoadedModel;
use super::AppState;
use crate::engine::{
    EngineError, Event, EventSink, GenerateRequest, Prompt, SchedulerError, Stats,
};

/// How a request's text reaches its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Each piece as soon as it is generated (streaming responses).
    Stream,
    /// All text at once when generation ends: no wake-up of the HTTP side
    /// per token, which on few cores competes with the decode threads.
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

/// Sends engine events into a channel the handler reads; with
/// [`Delivery::Whole`] it gathers the text on the generation thread first.
struct ChannelSink {
    sender: UnboundedSender<Event>,
    gathered: Option<String>,
}

impl EventSink for ChannelSink {
    fn send(&mut self, event: Event) -> bool {
        match (&mut self.gathered, event) {
            (Some(text), Event::Text(piece)) => {
                text.push_str(&piece);
                !self.sender.is_closed()
            }
            (Some(text), event) => {
                let text = std::mem::take(text);
                if !text.is_empty() && self.sender.send(Event::Text(text)).is_err() {
                    return false;
                }
                self.sender.send(event).is_ok()
            }
            (None, event) => self.sender.send(event).is_ok(),
        }
    }

    fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// A request accepted by a scheduler.
pub struct Started {
    pub events: UnboundedReceiver<Event>,
    /// Keeps the model loaded while the answer is produced.
    pub model: Arc<LoadedModel>,
}

/// Load the model if needed, tokenize, and queue the request.
pub async fn start(
    state: &AppState,
    model_name: &str,
    prompt: Prompt,
    request: GenerateRequest,
    delivery: Delivery,
) -> Result<Started, ApiError> {
    let model = state.registry.get(model_name).await?;
    let engine_model = Arc::clone(&model.model);
    let tokens = tokio::task::spawn_blocking(move || engine_model.tokenize(&prompt))
        .await
        .map_err(|_| ApiError::internal("tokenizing the prompt failed"))?
        .map_err(|error| engine_error(&error))?;
    let (sender, events) = unbounded_channel();
    model
        .scheduler
        .submit(
            &tokens,
            request,
            Box::new(ChannelSink {
                sender,
                gathered: (delivery == Delivery::Whole).then(String::new),
            }),
        )
        .map_err(scheduler_error)?;
    Ok(Started { events, model })
}

/// Wait for the whole answer.
pub async fn collect(started: &mut Started) -> Result<(String, Stats), ApiError> {
    let mut text = String::new();
    while let Some(event) = started.events.recv().await {
        match event {
            Event::Text(piece) => text.push_str(&piece),
            Event::Done(stats) => return Ok((text, stats)),
            Event::Failed(error) => return Err(scheduler_error(error)),
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
        let (chunk, finished) = match started.events.recv().await {
            Some(Event::Text(piece)) => (format.text(&piece), false),
            Some(Event::Done(stats)) => (format.done(&stats), true),
            Some(Event::Failed(error)) => (format.failed(&scheduler_error(error)), true),
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

pub fn scheduler_error(error: SchedulerError) -> ApiError {
    match error {
        SchedulerError::QueueFull { .. } => ApiError::busy(error.to_string()),
        SchedulerError::Stopped => ApiError::busy(error.to_string()),
        SchedulerError::PromptTooLong { .. } => ApiError::bad_request(error.to_string()),
        SchedulerError::Engine(engine) => engine_error(&engine),
    }
}

pub fn engine_error(error: &EngineError) -> ApiError {
    match error {
        EngineError::PromptTooLong { .. }
        | EngineError::EmptyPrompt
        | EngineError::InputTooLarge { .. }
        | EngineError::InvalidSchema(_)
        | EngineError::Template(_) => ApiError::bad_request(error.to_string()),
        EngineError::Load { .. } => ApiError::internal("llama.cpp could not load the model"),
        other => ApiError::internal(other.to_string()),
    }
}
