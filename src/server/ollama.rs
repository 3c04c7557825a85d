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
use super::generation::{self, Plan, StreamFormat};
use super::models::{Available, KeepAlive};
use super::request::{finish_reason, strict_body, Fields, SamplingRequest, Stop};
use super::tools::{self, Answer, Conversation, Reading, Whole};
use super::AppState;
use crate::engine::tools::{Piece, ToolCall};
use crate::engine::{Constraint, Message, Prompt, Stats};
use crate::human::{self, rfc3339};

/// `/api/chat`: every field is honoured (`logprobs` only when false).
pub const CHAT_FIELDS: Fields = Fields {
    honoured: &[
        "model",
        "messages",
        "tools",
        "format",
        "options",
        "stream",
        "keep_alive",
        "think",
        "logprobs",
        "top_logprobs",
    ],
    ignored: &[],
};

/// `/api/generate`: every field is honoured (`suffix`, `template`,
/// `context`, `images` and `logprobs` only when empty or false).
pub const GENERATE_FIELDS: Fields = Fields {
    honoured: &[
        "model",
        "prompt",
        "suffix",
        "system",
        "template",
        "context",
        "raw",
        "images",
        "stream",
        "format",
        "options",
        "keep_alive",
        "think",
        "logprobs",
        "top_logprobs",
    ],
    ignored: &[],
};

/// `options`: runtime options honoured, and `num_keep`, checked then
/// ignored on purpose (olm never shifts the context: a prompt that does not
/// fit is a 400, so there is nothing to keep). Samplers olm does not have
/// (`typical_p`, `tfs_z`, `mirostat`) pass only at their "off" values;
/// load options are refused: `olm serve` sets them for every request.
pub const OPTION_FIELDS: Fields = Fields {
    honoured: &[
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "repeat_penalty",
        "frequency_penalty",
        "presence_penalty",
        "repeat_last_n",
        "seed",
        "num_predict",
        "stop",
        "num_ctx",
        "typical_p",
        "tfs_z",
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
        "penalize_newline",
    ],
    ignored: &["num_keep"],
};

/// Options that choose how a model is loaded: set by `olm serve`'s flags.
const LOAD_OPTIONS: &[&str] = &[
    "numa",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "low_vram",
    "f16_kv",
    "logits_all",
    "vocab_only",
    "use_mmap",
    "use_mlock",
    "embedding_only",
    "num_thread",
];

#[derive(Debug, Deserialize)]
struct ChatBody {
    model: String,
    #[serde(default)]
    messages: Vec<ChatMessage>,
    stream: Option<bool>,
    format: Option<Value>,
    options: Option<Value>,
    keep_alive: Option<Value>,
    tools: Option<Value>,
    think: Option<Value>,
    logprobs: Option<bool>,
    top_logprobs: Option<u32>,
}

/// A message: every field is honoured (unknown ones are refused by name).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<String>,
    thinking: Option<String>,
    images: Option<Vec<Value>>,
    tool_calls: Option<Vec<OllamaCall>>,
    tool_name: Option<String>,
    tool_call_id: Option<String>,
}

/// A call an assistant made, as the client sends it back.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OllamaCall {
    #[serde(default)]
    id: Option<String>,
    /// OpenAI's shape, which some clients send here too: only `function`.
    #[serde(rename = "type", default)]
    kind: Option<String>,
    function: OllamaFunction,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OllamaFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
    /// The call's place among the answer's calls (olm writes it, as
    /// Ollama does, and clients send it back). Ignored on purpose: the
    /// calls' order in the list is their order.
    #[serde(default, rename = "index")]
    _index: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct GenerateBody {
    model: String,
    #[serde(default)]
    prompt: String,
    suffix: Option<String>,
    system: Option<String>,
    template: Option<String>,
    context: Option<Vec<Value>>,
    #[serde(default)]
    raw: bool,
    images: Option<Vec<Value>>,
    stream: Option<bool>,
    format: Option<Value>,
    options: Option<Value>,
    keep_alive: Option<Value>,
    think: Option<Value>,
    logprobs: Option<bool>,
    top_logprobs: Option<u32>,
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
    /// A smaller context for this request (a larger one is refused: the
    /// server's `-c` sets the most a request may use).
    num_ctx: Option<i64>,
    /// Checked, then ignored: olm never shifts the context.
    #[serde(alias = "n_keep")]
    num_keep: Option<i64>,
    typical_p: Option<f64>,
    tfs_z: Option<f64>,
    mirostat: Option<i64>,
    mirostat_tau: Option<f64>,
    mirostat_eta: Option<f64>,
    penalize_newline: Option<bool>,
}

impl Options {
    /// Decode `options`, naming any option olm does not have.
    fn decode(value: Option<Value>) -> Result<Self, ApiError> {
        let Some(value) = value.filter(|value| !value.is_null()) else {
            return Ok(Self::default());
        };
        let Value::Object(mut object) = value else {
            return Err(ApiError::bad_request("options must be an object"));
        };
        // Ollama's older name for num_keep.
        if let Some(keep) = object.remove("n_keep") {
            object.entry("num_keep").or_insert(keep);
        }
        if let Some(load) = object
            .keys()
            .find(|key| LOAD_OPTIONS.contains(&key.as_str()))
        {
            return Err(ApiError::bad_request(format!(
                "option '{load}' chooses how the model is loaded: olm serve sets it for every request (see olm serve --help)"
            )));
        }
        OPTION_FIELDS.check(&object, "options")?;
        serde_json::from_value(Value::Object(object))
            .map_err(|error| ApiError::bad_request(format!("invalid options: {error}")))
    }

    /// Ollama's options, refusing counts that mean nothing (T-D4) and
    /// samplers olm does not have.
    fn into_sampling(self) -> Result<(SamplingRequest, Option<u32>), ApiError> {
        let context_limit = match self.num_ctx {
            None => None,
            Some(count) if count < 1 => {
                return Err(ApiError::bad_request(format!(
                    "num_ctx must be at least 1, got {count}"
                )))
            }
            Some(count) => Some(u32::try_from(count).unwrap_or(u32::MAX)),
        };
        // -1 keeps the whole prompt.
        if let Some(count) = self.num_keep.filter(|count| *count < -1) {
            return Err(ApiError::bad_request(format!(
                "num_keep must be -1 or more, got {count}"
            )));
        }
        let off = |name: &str, value: Option<f64>, neutral: f64| match value {
            Some(value) if value != neutral => Err(ApiError::bad_request(format!(
                "option '{name}' is not supported (only its default {neutral} is)"
            ))),
            _ => Ok(()),
        };
        off("typical_p", self.typical_p, 1.0)?;
        off("tfs_z", self.tfs_z, 1.0)?;
        off("mirostat", self.mirostat.map(|value| value as f64), 0.0)?;
        // mirostat_tau and mirostat_eta tune a sampler that is off (above):
        // they change nothing, as in Ollama with mirostat 0.
        let _ = (self.mirostat_tau, self.mirostat_eta);
        if self.penalize_newline == Some(true) {
            return Err(ApiError::bad_request(
                "option 'penalize_newline' is not supported (only false is)",
            ));
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
        let sampling = SamplingRequest {
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
        };
        Ok((sampling, context_limit))
    }
}

/// `/api/show`: the name, and `verbose` only when false (olm's
/// `model_info` holds the main keys, never the tokenizer's whole lists).
pub const SHOW_FIELDS: Fields = Fields {
    honoured: &["model", "name", "verbose"],
    ignored: &[],
};

#[derive(Debug, Deserialize)]
struct ShowRequest {
    #[serde(alias = "name")]
    model: String,
    #[serde(default)]
    verbose: bool,
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
/// check needs the model (its name, its template, the prompt's length in tokens).
#[derive(Debug)]
pub(super) enum OllamaRequest {
    /// No prompt: load the model, or unload it with `keep_alive: 0`.
    Load {
        model: String,
        keep_alive: Option<KeepAlive>,
    },
    Generate(Box<Generate>),
}

#[derive(Debug)]
pub(super) struct Generate {
    model: String,
    input: Input,
    generate: crate::engine::GenerateRequest,
    context_limit: Option<u32>,
    stream: bool,
    keep_alive: Option<KeepAlive>,
}

#[derive(Debug)]
enum Input {
    Chat(Conversation),
    Raw(String),
}

/// The body of `POST /api/chat`, decoded and range-checked.
pub(super) fn decode_chat(body: Result<Bytes, BytesRejection>) -> Result<OllamaRequest, ApiError> {
    let request: ChatBody = strict_body(body, &CHAT_FIELDS)?;
    check_logprobs(request.logprobs, request.top_logprobs)?;
    let keep_alive = KeepAlive::from_request(request.keep_alive.as_ref())?;
    let tools = tools::decode_tools(request.tools)?;
    let thinking = think(request.think)?;
    // Checked before a load-only request too: a value it could not use is
    // refused there as it would be with messages.
    let (generate, context_limit) = generation_request(request.options, request.format)?;
    if request.messages.is_empty() {
        // Ollama loads (or with keep_alive 0 unloads) the model for an empty conversation.
        return Ok(OllamaRequest::Load {
            model: request.model,
            keep_alive,
        });
    }
    let choice = if tools.is_empty() {
        tools::Choice::None
    } else {
        tools::Choice::Auto
    };
    let conversation = Conversation {
        messages: chat_messages(request.messages)?,
        tools,
        choice: Some(choice),
        parallel: true,
        thinking,
        variables: Map::new(),
    };
    Ok(generation(
        request.model,
        Input::Chat(conversation),
        (generate, context_limit),
        request.stream,
        keep_alive,
    ))
}

/// The body of `POST /api/generate`, decoded and range-checked.
pub(super) fn decode_generate(
    body: Result<Bytes, BytesRejection>,
) -> Result<OllamaRequest, ApiError> {
    let request: GenerateBody = strict_body(body, &GENERATE_FIELDS)?;
    check_logprobs(request.logprobs, request.top_logprobs)?;
    check_images(request.images.as_deref())?;
    if request
        .suffix
        .as_deref()
        .is_some_and(|suffix| !suffix.is_empty())
    {
        return Err(ApiError::bad_request(
            "suffix (fill in the middle) is not supported by this server",
        ));
    }
    if request
        .template
        .as_deref()
        .is_some_and(|template| !template.is_empty())
    {
        return Err(ApiError::bad_request(
            "a per-request template is not supported: olm uses the model's chat template (or olm serve --chat-template)",
        ));
    }
    if request
        .context
        .as_ref()
        .is_some_and(|context| !context.is_empty())
    {
        return Err(ApiError::bad_request(
            "context (token ids of an earlier answer) is not supported: use /api/chat with the messages",
        ));
    }
    let keep_alive = KeepAlive::from_request(request.keep_alive.as_ref())?;
    let thinking = think(request.think)?;
    let (generate, context_limit) = generation_request(request.options, request.format)?;
    if request.prompt.is_empty() {
        return Ok(OllamaRequest::Load {
            model: request.model,
            keep_alive,
        });
    }
    let input = if request.raw {
        if request.system.is_some() || thinking.is_some() {
            return Err(ApiError::bad_request(
                "system and think need the chat template; drop raw",
            ));
        }
        Input::Raw(request.prompt)
    } else {
        let mut messages = Vec::with_capacity(2);
        if let Some(system) = request.system {
            messages.push(Message::new("system", system));
        }
        messages.push(Message::new("user", request.prompt));
        Input::Chat(Conversation {
            messages,
            thinking,
            ..Conversation::default()
        })
    };
    Ok(generation(
        request.model,
        input,
        (generate, context_limit),
        request.stream,
        keep_alive,
    ))
}

fn check_logprobs(logprobs: Option<bool>, top: Option<u32>) -> Result<(), ApiError> {
    if logprobs == Some(true) || top.is_some_and(|count| count > 0) {
        return Err(ApiError::bad_request(
            "logprobs are not supported by this server",
        ));
    }
    Ok(())
}

fn check_images(images: Option<&[Value]>) -> Result<(), ApiError> {
    if images.is_some_and(|images| !images.is_empty()) {
        return Err(ApiError::bad_request(
            "images are not supported: this model has no vision support (olm serves text models)",
        ));
    }
    Ok(())
}

/// `think`: `true`/`false`, or a level (`"low"`, `"medium"`, `"high"`) that
/// turns thinking on.
fn think(value: Option<Value>) -> Result<Option<bool>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(on)) => Ok(Some(on)),
        Some(Value::String(level)) if matches!(level.as_str(), "low" | "medium" | "high") => {
            Ok(Some(true))
        }
        Some(other) => Err(ApiError::bad_request(format!(
            "think must be true, false, \"low\", \"medium\" or \"high\", got {other}"
        ))),
    }
}

/// What chat and generate share: `options` and `format` checked into an
/// engine request and the request's context limit.
fn generation_request(
    options: Option<Value>,
    format: Option<Value>,
) -> Result<(crate::engine::GenerateRequest, Option<u32>), ApiError> {
    let options = Options::decode(options)?;
    let constraint = format_constraint(format)?;
    let (sampling, context_limit) = options.into_sampling()?;
    Ok((sampling.into_request(constraint)?, context_limit))
}

/// A generation once its input is built, NDJSON streaming by default.
fn generation(
    model: String,
    input: Input,
    (generate, context_limit): (crate::engine::GenerateRequest, Option<u32>),
    stream: Option<bool>,
    keep_alive: Option<KeepAlive>,
) -> OllamaRequest {
    OllamaRequest::Generate(Box::new(Generate {
        model,
        input,
        generate,
        context_limit,
        stream: stream.unwrap_or(true),
        keep_alive,
    }))
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
        OllamaRequest::Generate(generate) => respond(state, *generate, kind).await,
    }
}

async fn respond(state: &AppState, request: Generate, kind: Kind) -> Result<Response, ApiError> {
    let Generate {
        model,
        input,
        generate,
        context_limit,
        stream,
        keep_alive,
    } = request;
    let delivery = generation::Delivery::for_stream(stream);
    let (mut started, reading) =
        generation::start(state, &model, keep_alive, delivery, 1, |ready| {
            let (prompt, request, reading) = match input {
                Input::Chat(conversation) => conversation.plan(&ready.chat, generate)?,
                Input::Raw(text) => (Prompt::Raw(text), generate, Reading::plain()),
            };
            let plan = Plan {
                prompt,
                request,
                context_limit,
            };
            Ok((plan, reading))
        })
        .await?;
    let writer = LineWriter {
        model: model.clone(),
        kind,
        load_duration: started.model.load_time,
        answer: reading.answer(),
    };
    if stream {
        let body = generation::stream_body(started, writer);
        return Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response());
    }
    let mut answers = generation::collect(&mut started).await?;
    let Some((text, stats)) = answers.pop() else {
        return Err(ApiError::internal("generation ended without a result"));
    };
    let whole = Whole::read(&reading, &text);
    let mut reply = writer.message(&whole.content, &whole.reasoning, &whole.calls);
    if let Some(error) = &whole.error {
        writer.add_error(&mut reply, error);
    }
    writer.add_final_fields(&mut reply, &stats);
    Ok(Json(reply).into_response())
}

fn chat_messages(messages: Vec<ChatMessage>) -> Result<Vec<Message>, ApiError> {
    messages.into_iter().map(chat_message).collect()
}

fn chat_message(message: ChatMessage) -> Result<Message, ApiError> {
    if !matches!(
        message.role.as_str(),
        "system" | "user" | "assistant" | "tool"
    ) {
        return Err(ApiError::bad_request(format!(
            "unsupported message role '{}'",
            crate::store::names::escaped(&message.role)
        )));
    }
    check_images(message.images.as_deref())?;
    let mut converted = Message::new(message.role, message.content.unwrap_or_default());
    if let Some(calls) = message.tool_calls {
        if calls
            .iter()
            .any(|call| call.kind.as_deref().is_some_and(|kind| kind != "function"))
        {
            return Err(ApiError::bad_request(
                "only function tool calls are supported",
            ));
        }
        converted.tool_calls = calls
            .into_iter()
            .enumerate()
            .map(|(index, call)| ToolCall {
                // Ollama's clients send calls back without ids: the result
                // that follows answers them in order.
                id: call.id.unwrap_or_else(|| format!("call{index:05}")),
                name: call.function.name,
                arguments: tools::arguments_value(call.function.arguments),
            })
            .collect();
    }
    converted.reasoning_content = message.thinking.filter(|thinking| !thinking.is_empty());
    converted.name = message.tool_name;
    converted.tool_call_id = message.tool_call_id;
    Ok(converted)
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

/// A call as Ollama writes it: arguments as an object, the call's index.
fn call_json(call: &ToolCall, index: usize) -> Value {
    json!({"id": call.id, "function": {"index": index, "name": call.name, "arguments": call.arguments}})
}

/// NDJSON: one object per piece, then a final object with `done: true`.
struct LineWriter {
    model: String,
    kind: Kind,
    load_duration: Duration,
    answer: Answer,
}

impl LineWriter {
    /// One object with content, reasoning and calls (any may be empty).
    fn message(&self, content: &str, thinking: &str, calls: &[ToolCall]) -> Value {
        self.message_from(content, thinking, calls, 0)
    }

    fn message_from(
        &self,
        content: &str,
        thinking: &str,
        calls: &[ToolCall],
        first: usize,
    ) -> Value {
        let mut object =
            json!({"model": self.model, "created_at": rfc3339(SystemTime::now()), "done": false});
        match self.kind {
            Kind::Chat => {
                let mut message = json!({"role": "assistant", "content": content});
                if !thinking.is_empty() {
                    message["thinking"] = json!(thinking);
                }
                if !calls.is_empty() {
                    message["tool_calls"] = Value::Array(
                        calls
                            .iter()
                            .enumerate()
                            .map(|(index, call)| call_json(call, first + index))
                            .collect(),
                    );
                }
                object["message"] = message;
            }
            Kind::Generate => {
                object["response"] = json!(content);
                if !thinking.is_empty() {
                    object["thinking"] = json!(thinking);
                }
            }
        }
        object
    }

    fn add_error(&self, object: &mut Value, error: &str) {
        match self.kind {
            Kind::Chat => object["message"]["tool_call_error"] = json!(error),
            Kind::Generate => object["tool_call_error"] = json!(error),
        }
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

    fn lines(&mut self, pieces: Vec<Piece>) -> String {
        let mut out = String::new();
        for piece in pieces {
            let line = match piece {
                Piece::Content(text) => self.message(&text, "", &[]),
                Piece::Reasoning(text) => self.message("", &text, &[]),
                Piece::Call(call) => {
                    let index = self.answer.calls() - 1;
                    self.message_from("", "", std::slice::from_ref(&call), index)
                }
            };
            out.push_str(&format!("{line}\n"));
        }
        out
    }
}

impl StreamFormat for LineWriter {
    fn text(&mut self, _choice: usize, text: &str) -> String {
        let pieces = self.answer.push(text);
        self.lines(pieces)
    }

    fn done(&mut self, _choice: usize, stats: &Stats) -> String {
        let (pieces, error) = self.answer.finish();
        let mut out = self.lines(pieces);
        let mut object = self.message("", "", &[]);
        if let Some(error) = error {
            self.add_error(&mut object, &error);
        }
        self.add_final_fields(&mut object, stats);
        out.push_str(&format!("{object}\n"));
        out
    }

    fn failed(&mut self, error: &ApiError) -> String {
        format!("{}\n", error.body(Flavor::Ollama))
    }
}

/// `GET /api/tags`.
pub async fn tags(State(state): State<Arc<AppState>>) -> Response {
    let mut models = Vec::new();
    for model in state.registry.available() {
        let mut entry = describe(&model);
        entry["digest"] = json!(super::ollama_store::digest(&model).await);
        models.push(entry);
    }
    Json(json!({ "models": models })).into_response()
}

/// `GET /api/ps`.
pub async fn ps(State(state): State<Arc<AppState>>) -> Response {
    let keep_alive = state.registry.settings().keep_alive;
    let available = state.registry.available();
    let mut models = Vec::new();
    for loaded in state.registry.loaded().await {
        let ready = loaded.worker.ready();
        // When the file was pulled or written, as /api/tags says.
        let modified = available
            .iter()
            .find(|model| model.name == loaded.name)
            .map_or(0, |model| model.modified);
        let model = Available {
            name: loaded.name.clone(),
            path: loaded.path.clone(),
            size: ready.size,
            modified,
        };
        let mut entry = describe(&model);
        entry["digest"] = json!(super::ollama_store::digest(&model).await);
        // Ollama's "forever" is a date far in the future.
        let never = UNIX_EPOCH + Duration::from_secs(253_402_300_799);
        entry["expires_at"] = json!(rfc3339(loaded.expires_at(keep_alive).unwrap_or(never)));
        entry["size_vram"] = json!(ready.size_vram);
        entry["context_length"] = json!(ready.context_per_sequence);
        if let Some(split) = &ready.split {
            // olm's own field: where the layers are (`--rpc`).
            entry["split"] = json!(split);
        }
        models.push(entry);
    }
    Json(json!({ "models": models })).into_response()
}

/// `GET /`: Ollama's clients probe it to see that a server runs.
pub async fn root() -> Response {
    "olm is running".into_response()
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
    let request: ShowRequest = strict_body(body, &SHOW_FIELDS)?;
    if request.verbose {
        return Err(ApiError::bad_request(
            "verbose is not supported: model_info holds the main keys only",
        ));
    }
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

    fn generate(request: Result<OllamaRequest, ApiError>) -> Generate {
        match request {
            Ok(OllamaRequest::Generate(generate)) => *generate,
            Ok(OllamaRequest::Load { .. }) => panic!("a load"),
            Err(error) => panic!("refused: {}", error.message),
        }
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
        let decoded = generate(decode(
            json!({"num_ctx": 4096, "num_keep": -1, "num_predict": -2}),
        ));
        assert_eq!(decoded.generate.max_tokens, None);
        assert_eq!(decoded.context_limit, Some(4096));
        let decoded = generate(decode(json!({"num_predict": 7})));
        assert_eq!(decoded.generate.max_tokens, Some(7));
    }

    /// Options olm does not have are refused by name; their "off" values pass.
    #[test]
    fn options_are_honoured_or_refused() {
        for (options, name) in [
            (json!({"typical_p": 0.5}), "typical_p"),
            (json!({"mirostat": 2}), "mirostat"),
            (json!({"tfs_z": 0.9}), "tfs_z"),
            (json!({"penalize_newline": true}), "penalize_newline"),
            (json!({"num_thread": 4}), "num_thread"),
            (json!({"num_gpu": 99}), "num_gpu"),
            (json!({"invented": 1}), "invented"),
        ] {
            let error = decode(options.clone()).expect_err(&options.to_string());
            assert!(error.message.contains(name), "{options}: {}", error.message);
        }
        generate(decode(
            json!({"typical_p": 1.0, "mirostat": 0, "tfs_z": 1, "penalize_newline": false}),
        ));
    }

    fn chat(fields: Value) -> Result<OllamaRequest, ApiError> {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        for (key, value) in fields.as_object().expect("an object") {
            body[key] = value.clone();
        }
        decode_chat(Ok(Bytes::from(body.to_string())))
    }

    #[test]
    fn chat_fields_are_honoured_or_refused() {
        for (fields, named) in [
            (json!({"images": []}), "images"),
            (
                json!({"messages": [{"role": "user", "content": "what is this?", "images": ["aGk="]}]}),
                "vision",
            ),
            (json!({"think": "very"}), "think"),
            (json!({"logprobs": true}), "logprobs"),
            (
                json!({"messages": [{"role": "wizard", "content": "x"}]}),
                "role",
            ),
        ] {
            let error = chat(fields.clone()).expect_err(&fields.to_string());
            assert!(error.message.contains(named), "{fields}: {}", error.message);
        }
        let decoded = generate(chat(json!({
            "think": true,
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
                {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
            ],
        })));
        let Input::Chat(conversation) = decoded.input else {
            panic!("not a chat");
        };
        assert_eq!(conversation.thinking, Some(true));
        assert_eq!(conversation.tools.len(), 1);
        assert_eq!(
            conversation.messages[1].tool_calls[0].arguments,
            json!({"city": "Oslo"})
        );
        assert_eq!(
            conversation.messages[2].name.as_deref(),
            Some("get_weather")
        );
    }

    #[test]
    fn generate_fields_that_ask_for_more_are_refused() {
        for fields in [
            json!({"suffix": "end"}),
            json!({"template": "{{ .Prompt }}"}),
            json!({"context": [1, 2, 3]}),
            json!({"images": ["aGk="]}),
            json!({"raw": true, "think": true}),
        ] {
            let mut body = json!({"model": "m", "prompt": "hi"});
            for (key, value) in fields.as_object().expect("an object") {
                body[key] = value.clone();
            }
            assert!(
                decode_generate(Ok(Bytes::from(body.to_string()))).is_err(),
                "{fields}"
            );
        }
    }
}
