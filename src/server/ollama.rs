//! The Ollama API: `/api/chat` and `/api/generate` (NDJSON streaming by
//! default), `/api/tags`, `/api/show`, `/api/ps`, `/api/version`.
//!
//! Owns: Ollama's request and response shapes and their translation to and
//! from the engine. Must not touch: llama.cpp, the store.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::{ApiError, Flavor};
use super::generation::{self, StreamFormat};
use super::models::{Available, KeepAlive};
use super::request::{finish_reason, json_body, SamplingRequest, Stop};
use super::AppState;
use crate::engine::{Constraint, Message, Prompt, Stats};
use crate::human::{self, rfc3339};

#[derive(Debug, Deserialize)]
struct ChatBody {
    model: String,
    #[serde(default)]
    messages: Vec<ChatMessage>,
    stream: Option<bool>,
    format: Option<Value>,
    options: Option<Options>,
    keep_alive: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: String,
}

#[derive(Debug, Deserialize)]
struct GenerateBody {
    model: String,
    #[serde(default)]
    prompt: String,
    system: Option<String>,
    #[serde(default)]
    raw: bool,
    stream: Option<bool>,
    format: Option<Value>,
    options: Option<Options>,
    keep_alive: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct Options {
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    min_p: Option<f64>,
    repeat_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    presence_penalty: Option<f64>,
    repeat_last_n: Option<i64>,
    seed: Option<i64>,
    num_predict: Option<i64>,
    stop: Option<Stop>,
    /// Checked, then ignored: `olm serve -c` sets the context of a model
    /// for every request, and clients send their idea of it all the time.
    num_ctx: Option<i64>,
    /// Checked, then ignored: olm never shifts the context (a prompt that
    /// does not fit is a 400), so there is nothing to keep.
    #[serde(alias = "n_keep")]
    num_keep: Option<i64>,
}

impl Options {
    /// Ollama's options, refusing counts that mean nothing (T-D4).
    fn into_sampling(self) -> Result<SamplingRequest, ApiError> {
        if let Some(count) = self.num_ctx.filter(|count| *count < 1) {
            return Err(ApiError::bad_request(format!(
                "num_ctx must be at least 1, got {count}"
            )));
        }
        // -1 keeps the whole prompt.
        if let Some(count) = self.num_keep.filter(|count| *count < -1) {
            return Err(ApiError::bad_request(format!(
                "num_keep must be -1 or more, got {count}"
            )));
        }
        // -1 means "until the context is full", -2 "fill the context".
        let max_tokens = match self.num_predict {
            None | Some(-1 | -2) => None,
            Some(count) if count >= 1 => Some(count),
            Some(count) => {
                return Err(ApiError::bad_request(format!(
                    "num_predict must be -1, -2 or at least 1, got {count}"
                )))
            }
        };
        Ok(SamplingRequest {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed,
            max_tokens,
            stop: self.stop,
        })
    }
}

#[derive(Debug, Deserialize)]
struct ShowRequest {
    #[serde(alias = "name")]
    model: String,
}

/// `POST /api/chat`.
pub async fn chat(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    chat_inner(&state, body)
        .await
        .unwrap_or_else(|error| error.into_response_for(Flavor::Ollama))
}

/// `POST /api/generate`.
pub async fn generate(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    generate_inner(&state, body)
        .await
        .unwrap_or_else(|error| error.into_response_for(Flavor::Ollama))
}

/// A chat or generate request, decoded and checked: all that is left to
/// check needs the model (its name, the prompt's length in tokens).
#[derive(Debug)]
pub(super) enum OllamaRequest {
    /// No prompt: load the model, or unload it with `keep_alive: 0`.
    Load {
        model: String,
        keep_alive: Option<KeepAlive>,
    },
    Generate {
        model: String,
        prompt: Prompt,
        generate: crate::engine::GenerateRequest,
        stream: bool,
        keep_alive: Option<KeepAlive>,
    },
}

/// The body of `POST /api/chat`, decoded and range-checked.
pub(super) fn decode_chat(body: Result<Bytes, BytesRejection>) -> Result<OllamaRequest, ApiError> {
    let request: ChatBody = json_body(body)?;
    let keep_alive = KeepAlive::from_request(request.keep_alive.as_ref())?;
    if request.messages.is_empty() {
        // Ollama loads (or with keep_alive 0 unloads) the model for an empty conversation.
        return Ok(OllamaRequest::Load {
            model: request.model,
            keep_alive,
        });
    }
    let prompt = Prompt::Chat(chat_messages(request.messages)?);
    decoded_generation(
        request.model,
        prompt,
        request.options,
        request.format,
        request.stream,
        keep_alive,
    )
}

/// The body of `POST /api/generate`, decoded and range-checked.
pub(super) fn decode_generate(
    body: Result<Bytes, BytesRejection>,
) -> Result<OllamaRequest, ApiError> {
    let request: GenerateBody = json_body(body)?;
    let keep_alive = KeepAlive::from_request(request.keep_alive.as_ref())?;
    if request.prompt.is_empty() {
        return Ok(OllamaRequest::Load {
            model: request.model,
            keep_alive,
        });
    }
    let prompt = if request.raw {
        if request.system.is_some() {
            return Err(ApiError::bad_request(
                "system needs the chat template; drop raw",
            ));
        }
        Prompt::Raw(request.prompt)
    } else {
        let mut messages = Vec::with_capacity(2);
        if let Some(system) = request.system {
            messages.push(Message::new("system", system));
        }
        messages.push(Message::new("user", request.prompt));
        Prompt::Chat(messages)
    };
    decoded_generation(
        request.model,
        prompt,
        request.options,
        request.format,
        request.stream,
        keep_alive,
    )
}

/// What chat and generate share once the prompt is built: options and
/// `format` checked into an engine request, NDJSON streaming by default.
fn decoded_generation(
    model: String,
    prompt: Prompt,
    options: Option<Options>,
    format: Option<Value>,
    stream: Option<bool>,
    keep_alive: Option<KeepAlive>,
) -> Result<OllamaRequest, ApiError> {
    let constraint = format_constraint(format)?;
    let generate = options
        .unwrap_or_default()
        .into_sampling()?
        .into_request(constraint)?;
    Ok(OllamaRequest::Generate {
        model,
        prompt,
        generate,
        stream: stream.unwrap_or(true),
        keep_alive,
    })
}

async fn chat_inner(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    dispatch(state, decode_chat(body)?, Kind::Chat).await
}

async fn generate_inner(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    dispatch(state, decode_generate(body)?, Kind::Generate).await
}

async fn dispatch(
    state: &AppState,
    request: OllamaRequest,
    kind: Kind,
) -> Result<Response, ApiError> {
    match request {
        OllamaRequest::Load { model, keep_alive } => {
            load_or_unload(state, &model, keep_alive, kind).await
        }
        OllamaRequest::Generate {
            model,
            prompt,
            generate,
            stream,
            keep_alive,
        } => respond(state, &model, prompt, generate, kind, stream, keep_alive).await,
    }
}

async fn respond(
    state: &AppState,
    model: &str,
    prompt: Prompt,
    request: crate::engine::GenerateRequest,
    kind: Kind,
    stream: bool,
    keep_alive: Option<KeepAlive>,
) -> Result<Response, ApiError> {
    let delivery = generation::Delivery::for_stream(stream);
    let mut started =
        generation::start(state, model, prompt, request, delivery, keep_alive).await?;
    let writer = LineWriter {
        model: model.to_owned(),
        kind,
        load_duration: started.model.load_time,
    };
    if stream {
        let body = generation::stream_body(started, writer);
        return Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response());
    }
    let (text, stats) = generation::collect(&mut started).await?;
    let mut reply = writer.piece(&text);
    writer.add_final_fields(&mut reply, &stats);
    Ok(Json(reply).into_response())
}

fn chat_messages(messages: Vec<ChatMessage>) -> Result<Vec<Message>, ApiError> {
    messages
        .into_iter()
        .map(|message| match message.role.as_str() {
            "system" | "user" | "assistant" => Ok(Message::new(message.role, message.content)),
            other => Err(ApiError::bad_request(format!(
                "unsupported message role '{other}'"
            ))),
        })
        .collect()
}

/// `format`: `"json"` or a JSON schema object.
fn format_constraint(format: Option<Value>) -> Result<Option<Constraint>, ApiError> {
    match format {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(name)) if name.is_empty() => Ok(None),
        Some(Value::String(name)) if name == "json" => Ok(Some(Constraint::JsonObject)),
        Some(schema @ Value::Object(_)) => Ok(Some(Constraint::JsonSchema(schema.to_string()))),
        Some(other) => Err(ApiError::bad_request(format!("unsupported format {other}"))),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Generate,
}

/// A request with no prompt: load the model, or unload it with `keep_alive: 0`.
async fn load_or_unload(
    state: &AppState,
    model: &str,
    keep_alive: Option<KeepAlive>,
    kind: Kind,
) -> Result<Response, ApiError> {
    let reason = if keep_alive == Some(KeepAlive::For(Duration::ZERO)) {
        state.registry.unload(model).await?;
        "unload"
    } else {
        state.registry.get(model, keep_alive).await?;
        "load"
    };
    Ok(Json(loaded_reply(model, kind, reason)).into_response())
}

fn loaded_reply(model: &str, kind: Kind, reason: &str) -> Value {
    let mut reply = json!({"model": model, "created_at": rfc3339(SystemTime::now()), "done": true, "done_reason": reason});
    match kind {
        Kind::Chat => reply["message"] = json!({"role": "assistant", "content": ""}),
        Kind::Generate => reply["response"] = json!(""),
    }
    reply
}

/// NDJSON: one object per piece, then a final object with `done: true`.
struct LineWriter {
    model: String,
    kind: Kind,
    load_duration: Duration,
}

impl LineWriter {
    fn piece(&self, text: &str) -> Value {
        let mut object =
            json!({"model": self.model, "created_at": rfc3339(SystemTime::now()), "done": false});
        match self.kind {
            Kind::Chat => object["message"] = json!({"role": "assistant", "content": text}),
            Kind::Generate => object["response"] = json!(text),
        }
        object
    }

    fn add_final_fields(&self, object: &mut Value, stats: &Stats) {
        let nanos = |duration: Duration| duration.as_nanos() as u64;
        object["done"] = json!(true);
        object["done_reason"] = json!(finish_reason(stats.stop_reason));
        object["total_duration"] = json!(nanos(stats.time_to_first_token + stats.generation_time));
        object["load_duration"] = json!(nanos(self.load_duration));
        object["prompt_eval_count"] = json!(stats.prompt_tokens);
        object["prompt_eval_duration"] = json!(nanos(stats.prompt_time));
        object["eval_count"] = json!(stats.generated_tokens);
        object["eval_duration"] = json!(nanos(stats.generation_time));
    }
}

impl StreamFormat for LineWriter {
    fn text(&mut self, text: &str) -> String {
        format!("{}\n", self.piece(text))
    }

    fn done(&mut self, stats: &Stats) -> String {
        let mut object = self.piece("");
        self.add_final_fields(&mut object, stats);
        format!("{object}\n")
    }

    fn failed(&mut self, error: &ApiError) -> String {
        format!("{}\n", error.body(Flavor::Ollama))
    }
}

/// `GET /api/tags`.
pub async fn tags(State(state): State<Arc<AppState>>) -> Response {
    let models: Vec<Value> = state.registry.available().iter().map(describe).collect();
    Json(json!({ "models": models })).into_response()
}

/// `GET /api/ps`.
pub async fn ps(State(state): State<Arc<AppState>>) -> Response {
    let keep_alive = state.registry.settings().keep_alive;
    let models: Vec<Value> = state
        .registry
        .loaded()
        .await
        .iter()
        .map(|loaded| {
            let available = Available {
                name: loaded.name.clone(),
                path: loaded.path.clone(),
                size: loaded.worker.ready().size,
                modified: 0,
            };
            let mut entry = describe(&available);
            // Ollama's "forever" is a date far in the future.
            let never = UNIX_EPOCH + Duration::from_secs(253_402_300_799);
            entry["expires_at"] = json!(rfc3339(loaded.expires_at(keep_alive).unwrap_or(never)));
            entry["size_vram"] = json!(0);
            entry["context_length"] = json!(loaded.worker.ready().context_per_sequence);
            if let Some(split) = &loaded.worker.ready().split {
                // olm's own field: where the layers are (`--rpc`).
                entry["split"] = json!(split);
            }
            entry
        })
        .collect();
    Json(json!({ "models": models })).into_response()
}

/// `GET /api/version`.
pub async fn version() -> Response {
    Json(json!({ "version": env!("CARGO_PKG_VERSION") })).into_response()
}

/// `POST /api/show`: metadata read from the file's header, without loading it.
pub async fn show(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    show_inner(&state, body)
        .await
        .unwrap_or_else(|error| error.into_response_for(Flavor::Ollama))
}

async fn show_inner(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: ShowRequest = json_body(body)?;
    let path = state.registry.resolve(&request.model)?;
    let file = crate::gguf::inspect(&path).map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "the model file is not usable",
        )
    })?;
    let architecture = file.architecture().unwrap_or("unknown").to_owned();
    let mut info = Map::new();
    info.insert("general.architecture".into(), json!(architecture));
    info.insert(
        "general.parameter_count".into(),
        json!(file.parameter_count()),
    );
    if let Some(name) = file.name() {
        info.insert("general.name".into(), json!(name));
    }
    if let Some(length) = file.context_length() {
        info.insert(format!("{architecture}.context_length"), json!(length));
    }
    if let Some(length) = file.embedding_length() {
        info.insert(format!("{architecture}.embedding_length"), json!(length));
    }
    if let Some(count) = file.block_count() {
        info.insert(format!("{architecture}.block_count"), json!(count));
    }
    let reply = json!({
        "license": file.license().unwrap_or_default(),
        "modelfile": "",
        "parameters": "",
        "template": file.chat_template().unwrap_or_default(),
        "details": details(&file),
        "model_info": info,
        "capabilities": ["completion"],
    });
    Ok(Json(reply).into_response())
}

fn details(file: &crate::gguf::GgufFile) -> Value {
    let family = file.architecture().unwrap_or("unknown");
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": human::count(file.parameter_count()),
        "quantization_level": file.file_type_name().unwrap_or_default(),
    })
}

/// One `/api/tags` or `/api/ps` entry.
fn describe(model: &Available) -> Value {
    let modified = UNIX_EPOCH + Duration::from_secs(model.modified);
    let details = crate::gguf::inspect(&model.path).map_or(Value::Null, |file| details(&file));
    json!({
        "name": model.name,
        "model": model.name,
        "modified_at": rfc3339(modified),
        "size": model.size,
        "digest": "",
        "details": details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(options: Value) -> Result<OllamaRequest, ApiError> {
        let body = json!({"model": "m", "prompt": "hi", "options": options});
        decode_generate(Ok(Bytes::from(body.to_string())))
    }

    /// T-D4: counts with no meaning in Ollama's API are refused, not ignored.
    #[test]
    fn meaningless_counts_are_refused() {
        for (options, name) in [
            (json!({"num_ctx": -5}), "num_ctx"),
            (json!({"num_ctx": 0}), "num_ctx"),
            (json!({"num_keep": -7}), "num_keep"),
            (json!({"n_keep": -7}), "num_keep"),
            (json!({"num_predict": -3}), "num_predict"),
            (json!({"num_predict": 0}), "num_predict"),
        ] {
            let error = decode(options.clone()).expect_err(&options.to_string());
            assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(error.message.contains(name), "{options}: {}", error.message);
        }
    }

    #[test]
    fn meaningful_counts_pass() {
        let Ok(OllamaRequest::Generate { generate, .. }) =
            decode(json!({"num_ctx": 4096, "num_keep": -1, "num_predict": -2}))
        else {
            panic!("refused");
        };
        assert_eq!(generate.max_tokens, None);
        let Ok(OllamaRequest::Generate { generate, .. }) = decode(json!({"num_predict": 7})) else {
            panic!("refused");
        };
        assert_eq!(generate.max_tokens, Some(7));
    }
}
