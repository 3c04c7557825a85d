//! The OpenAI API: `GET /v1/models`, `GET /v1/models/{id}`,
//! `POST /v1/chat/completions` (tools, reasoning, several choices) and
//! `POST /v1/completions`, streamed as server-sent events or not.
//!
//! Owns: OpenAI's request and response shapes and their translation to and
//! from the engine; which of OpenAI's fields olm honours, ignores on
//! purpose or refuses ([`CHAT_FIELDS`], [`COMPLETION_FIELDS`]). Must not
//! touch: llama.cpp, the store.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::{ApiError, Flavor};
use super::generation::{self, Plan, Started, StreamFormat, MAX_CHOICES};
use super::request::{response_id, strict_body, Fields, SamplingRequest, Stop};
use super::tools::{self, Answer, Conversation, Reading, Whole};
use super::AppState;
use crate::engine::tools::{Piece, ToolCall};
use crate::engine::{Constraint, GenerateRequest, Message, Prompt, Stats};
use crate::human::unix_seconds;

/// OpenAI's default `max_tokens` for `/v1/completions`.
const COMPLETIONS_DEFAULT_MAX_TOKENS: i64 = 16;

const CHAT_HONOURED: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "response_format",
    "n",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning_effort",
    "chat_template_kwargs",
    "max_completion_tokens",
    "logprobs",
    "top_logprobs",
    "store",
    "modalities",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
    "frequency_penalty",
    "presence_penalty",
    "max_tokens",
    "stop",
    "seed",
    "logit_bias",
];

/// `/v1/chat/completions`: what olm honours, and what it ignores on purpose
/// (who the end user is, labels for OpenAI's dashboard, its billing tier,
/// and a cache key: olm keeps each slot's prompt cache by itself).
pub const CHAT_FIELDS: Fields = Fields {
    honoured: CHAT_HONOURED,
    ignored: &[
        "user",
        "metadata",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
    ],
};

const COMPLETION_HONOURED: &[&str] = &[
    "model",
    "prompt",
    "stream",
    "stream_options",
    "n",
    "echo",
    "suffix",
    "best_of",
    "logprobs",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
    "frequency_penalty",
    "presence_penalty",
    "max_tokens",
    "stop",
    "seed",
    "logit_bias",
];

/// `/v1/completions`: what olm honours, and `user`, ignored on purpose.
pub const COMPLETION_FIELDS: Fields = Fields {
    honoured: COMPLETION_HONOURED,
    ignored: &["user"],
};

#[derive(Debug, Deserialize)]
struct ChatBody {
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    response_format: Option<ResponseFormat>,
    n: Option<u32>,
    tools: Option<Value>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
    reasoning_effort: Option<String>,
    chat_template_kwargs: Option<Map<String, Value>>,
    logprobs: Option<bool>,
    top_logprobs: Option<u32>,
    store: Option<bool>,
    modalities: Option<Vec<String>>,
    #[serde(flatten)]
    sampling: OpenAiSampling,
}

#[derive(Debug, Deserialize)]
struct CompletionBody {
    model: String,
    prompt: PromptText,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    n: Option<u32>,
    #[serde(default)]
    echo: bool,
    suffix: Option<String>,
    best_of: Option<u32>,
    logprobs: Option<u32>,
    #[serde(flatten)]
    sampling: OpenAiSampling,
}

/// `prompt`: text, or a list of one text. Token ids are refused: they would
/// reach llama.cpp unchecked against the vocabulary (T-D4).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PromptText {
    One(String),
    Many(Vec<String>),
    Other(serde::de::IgnoredAny),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
    /// Random padding against length side channels on OpenAI's network;
    /// ignored on purpose (a local server sends none).
    #[serde(default, rename = "include_obfuscation")]
    _include_obfuscation: Option<bool>,
}

/// OpenAI's sampling fields, plus `top_k`, `min_p` and `repeat_penalty` as
/// llama.cpp's server takes them.
#[derive(Debug, Default, Deserialize)]
struct OpenAiSampling {
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    min_p: Option<f64>,
    repeat_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    presence_penalty: Option<f64>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    stop: Option<Stop>,
    seed: Option<i64>,
    /// Not supported: a bias the model then silently ignores would be a lie,
    /// so any entry is a 400 (null and `{}` ask for nothing and pass).
    logit_bias: Option<Value>,
}

impl OpenAiSampling {
    fn into_sampling(self, default_max_tokens: Option<i64>) -> Result<SamplingRequest, ApiError> {
        match &self.logit_bias {
            None | Some(Value::Null) => {}
            Some(Value::Object(biases)) if biases.is_empty() => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "logit_bias is not supported by this server",
                ))
            }
        }
        // The newer name replaces the older; two different limits would
        // leave one of them ignored.
        if let (Some(completion), Some(tokens)) = (self.max_completion_tokens, self.max_tokens) {
            if completion != tokens {
                return Err(ApiError::bad_request(format!(
                    "max_tokens ({tokens}) and max_completion_tokens ({completion}) disagree; \
                     send one of them"
                )));
            }
        }
        Ok(SamplingRequest {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            repeat_last_n: None,
            max_tokens: self
                .max_completion_tokens
                .or(self.max_tokens)
                .or(default_max_tokens),
            stop: self.stop,
            seed: self.seed,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ResponseFormat {
    Text {},
    /// llama.cpp's server takes a `schema` here too, and so does olm.
    JsonObject {
        schema: Option<Value>,
    },
    JsonSchema {
        json_schema: JsonSchemaSpec,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonSchemaSpec {
    schema: Option<Value>,
    /// olm's output always follows the schema (a grammar): `strict` either way is honoured.
    #[serde(default, rename = "strict")]
    _strict: Option<bool>,
    /// A label (required by OpenAI), ignored on purpose: it names the
    /// format in OpenAI's logs and changes no output.
    #[serde(default, rename = "name")]
    _name: Option<String>,
    /// Ignored on purpose: the grammar holds the output to the schema
    /// whatever the description says, and LangChain sends it with every
    /// structured-output request.
    #[serde(default, rename = "description")]
    _description: Option<String>,
}

/// `GET /v1/models`.
pub async fn models(State(state): State<Arc<AppState>>) -> Response {
    let data: Vec<Value> = state
        .registry
        .available()
        .into_iter()
        .map(|model| model_object(&model.name, model.modified))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

fn model_object(name: &str, created: u64) -> Value {
    json!({"id": name, "object": "model", "created": created, "owned_by": "olm"})
}

/// `GET /v1/models/{id}`: one model, or 404.
pub async fn model(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match state
        .registry
        .available()
        .into_iter()
        .find(|model| model.name == id)
    {
        Some(model) => Json(model_object(&model.name, model.modified)).into_response(),
        None => ApiError::not_found(format!(
            "model '{}' not found",
            crate::store::names::escaped(&id)
        ))
        .into_response_for(Flavor::OpenAi),
    }
}

/// `POST /v1/chat/completions`.
pub async fn chat(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    chat_inner(&state, body)
        .await
        .unwrap_or_else(|error| error.into_response_for(Flavor::OpenAi))
}

/// `POST /v1/completions`.
pub async fn completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    completions_inner(&state, body)
        .await
        .unwrap_or_else(|error| error.into_response_for(Flavor::OpenAi))
}

/// What a request becomes once decoded: a conversation (its prompt waits
/// for the model's template traits) or raw text.
#[derive(Debug)]
pub(super) enum Input {
    Chat(Box<Conversation>),
    Text { prompt: String, echo: bool },
}

/// A chat or completion request, decoded and checked: all that is left to
/// check needs the model (its name, its template, the prompt's length in tokens).
#[derive(Debug)]
pub(super) struct OpenAiRequest {
    model: String,
    input: Input,
    generate: GenerateRequest,
    choices: u32,
    stream: bool,
    include_usage: bool,
}

/// The body of `POST /v1/chat/completions`, decoded and range-checked.
pub(super) fn decode_chat(body: Result<Bytes, BytesRejection>) -> Result<OpenAiRequest, ApiError> {
    let request: ChatBody = strict_body(body, &CHAT_FIELDS)?;
    let choices = check_n(request.n)?;
    if request.logprobs == Some(true) || request.top_logprobs.is_some_and(|count| count > 0) {
        return Err(ApiError::bad_request(
            "logprobs are not supported by this server",
        ));
    }
    if request.store == Some(true) {
        return Err(ApiError::bad_request(
            "store is not supported: this server keeps no completions",
        ));
    }
    if let Some(modalities) = &request.modalities {
        if modalities.iter().any(|modality| modality != "text") {
            return Err(ApiError::bad_request("only the text modality is supported"));
        }
    }
    let messages = chat_messages(request.messages)?;
    let tools = tools::decode_tools(request.tools)?;
    let choice = tools::decode_choice(request.tool_choice, &tools)?;
    let thinking = request
        .reasoning_effort
        .as_deref()
        .map(reasoning_effort)
        .transpose()?;
    let constraint = constraint(request.response_format)?;
    let generate = request
        .sampling
        .into_sampling(None)?
        .into_request(constraint)?;
    let conversation = Conversation {
        messages,
        tools,
        choice: Some(choice),
        parallel: request.parallel_tool_calls.unwrap_or(true),
        thinking,
        variables: request.chat_template_kwargs.unwrap_or_default(),
    };
    Ok(OpenAiRequest {
        model: request.model,
        input: Input::Chat(Box::new(conversation)),
        generate,
        choices,
        include_usage: include_usage(request.stream, request.stream_options)?,
        stream: request.stream,
    })
}

/// `stream_options.include_usage`; the options are refused without
/// `stream`, as OpenAI refuses them.
fn include_usage(stream: bool, options: Option<StreamOptions>) -> Result<bool, ApiError> {
    match options {
        Some(_) if !stream => Err(ApiError::bad_request(
            "stream_options is only allowed when stream is true",
        )),
        options => Ok(options.is_some_and(|options| options.include_usage)),
    }
}

/// `reasoning_effort` on a template with a thinking switch: `none` and
/// `minimal` turn thinking off, the rest on.
fn reasoning_effort(effort: &str) -> Result<bool, ApiError> {
    match effort {
        "none" | "minimal" => Ok(false),
        "low" | "medium" | "high" | "xhigh" => Ok(true),
        other => Err(ApiError::bad_request(format!(
            "reasoning_effort must be none, minimal, low, medium or high, got '{}'",
            crate::store::names::escaped(other)
        ))),
    }
}

/// The body of `POST /v1/completions`, decoded and range-checked.
pub(super) fn decode_completion(
    body: Result<Bytes, BytesRejection>,
) -> Result<OpenAiRequest, ApiError> {
    let request: CompletionBody = strict_body(body, &COMPLETION_FIELDS)?;
    let choices = check_n(request.n)?;
    if request.best_of.is_some_and(|best_of| best_of != choices) {
        return Err(ApiError::bad_request(
            "best_of is not supported: ask for n choices instead",
        ));
    }
    if request.logprobs.is_some_and(|count| count > 0) {
        return Err(ApiError::bad_request(
            "logprobs are not supported by this server",
        ));
    }
    if request
        .suffix
        .as_deref()
        .is_some_and(|suffix| !suffix.is_empty())
    {
        return Err(ApiError::bad_request(
            "suffix (fill in the middle) is not supported by this server",
        ));
    }
    let prompt = match request.prompt {
        PromptText::One(prompt) => prompt,
        PromptText::Many(mut prompts) if prompts.len() == 1 => prompts.remove(0),
        PromptText::Many(_) => return Err(ApiError::bad_request("prompt must be one string")),
        PromptText::Other(_) => {
            return Err(ApiError::bad_request(
                "prompt must be a string (token ids are not accepted)",
            ))
        }
    };
    if prompt.is_empty() {
        return Err(ApiError::bad_request("prompt is empty"));
    }
    let generate = request
        .sampling
        .into_sampling(Some(COMPLETIONS_DEFAULT_MAX_TOKENS))?
        .into_request(None)?;
    Ok(OpenAiRequest {
        model: request.model,
        input: Input::Text {
            prompt,
            echo: request.echo,
        },
        generate,
        choices,
        include_usage: include_usage(request.stream, request.stream_options)?,
        stream: request.stream,
    })
}

async fn chat_inner(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    respond(state, decode_chat(body)?, Kind::Chat).await
}

async fn completions_inner(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    respond(state, decode_completion(body)?, Kind::Completion).await
}

async fn respond(
    state: &AppState,
    request: OpenAiRequest,
    kind: Kind,
) -> Result<Response, ApiError> {
    let OpenAiRequest {
        model,
        input,
        generate,
        choices,
        stream,
        include_usage,
    } = request;
    let delivery = generation::Delivery::for_stream(stream);
    let echo = match &input {
        Input::Text { prompt, echo: true } => Some(prompt.clone()),
        _ => None,
    };
    let (mut started, reading) =
        generation::start(state, &model, None, delivery, choices, |ready| {
            let (prompt, request, reading) = match input {
                Input::Chat(conversation) => conversation.plan(&ready.chat, generate)?,
                Input::Text { prompt, .. } => (Prompt::Raw(prompt), generate, Reading::plain()),
            };
            let plan = Plan {
                prompt,
                request,
                context_limit: None,
            };
            Ok((plan, reading))
        })
        .await?;
    let prefix = match kind {
        Kind::Chat => "chatcmpl",
        Kind::Completion => "cmpl",
    };
    let reply = ResponseIdentity::new(prefix, &model, kind);
    if stream {
        let answers = (0..choices).map(|_| reading.answer()).collect();
        return Ok(event_stream(
            started,
            ChunkWriter {
                reply,
                include_usage,
                sent_role: vec![kind == Kind::Completion; choices as usize],
                answers,
                usage: Usage::default(),
                echo,
            },
        ));
    }
    let answers = generation::collect(&mut started).await?;
    Ok(Json(reply.complete(&answers, &reading, echo.as_deref())).into_response())
}

fn check_n(n: Option<u32>) -> Result<u32, ApiError> {
    match n {
        None => Ok(1),
        Some(n) if (1..=MAX_CHOICES).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "n must be between 1 and {MAX_CHOICES}, got {n}"
        ))),
    }
}

/// A message: every field is honoured (unknown ones are refused by name).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatMessage {
    role: String,
    content: Option<Content>,
    name: Option<String>,
    tool_calls: Option<Vec<WireCall>>,
    tool_call_id: Option<String>,
    reasoning_content: Option<String>,
    refusal: Option<Value>,
    function_call: Option<Value>,
    /// An earlier answer's audio, by id: only `null` (an answer sent back
    /// as the OpenAI SDK writes it) is taken.
    audio: Option<Value>,
    /// An earlier answer's URL citations, as OpenAI's own answers carry
    /// them and clients send them back. Ignored on purpose: they describe
    /// the answer's text, which is sent whole in `content`.
    #[serde(default, rename = "annotations")]
    _annotations: Option<Value>,
}

/// A call an assistant made, as the client sends it back.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireCall {
    #[serde(default)]
    id: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    function: WireFunction,
    /// The call's place in a streamed delta: clients that rebuild the
    /// message from deltas send it back. Ignored on purpose: the calls'
    /// order in the list is their order.
    #[serde(default, rename = "index")]
    _index: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Map<String, Value>>),
}

/// A text part: its text, and `cache_control`, ignored on purpose as on
/// `/v1/messages` (clients that speak both APIs send it; olm keeps each
/// slot's prompt cache by itself).
const TEXT_PART_FIELDS: Fields = Fields {
    honoured: &["type", "text"],
    ignored: &["cache_control"],
};

fn chat_messages(messages: Vec<ChatMessage>) -> Result<Vec<Message>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_request("messages must not be empty"));
    }
    messages.into_iter().map(chat_message).collect()
}

fn chat_message(message: ChatMessage) -> Result<Message, ApiError> {
    if !matches!(
        message.role.as_str(),
        "system" | "developer" | "user" | "assistant" | "tool"
    ) {
        return Err(ApiError::bad_request(format!(
            "unsupported message role '{}'",
            crate::store::names::escaped(&message.role)
        )));
    }
    if message
        .refusal
        .as_ref()
        .is_some_and(|refusal| !refusal.is_null())
        || message
            .function_call
            .as_ref()
            .is_some_and(|call| !call.is_null())
        || message.audio.as_ref().is_some_and(|audio| !audio.is_null())
    {
        return Err(ApiError::bad_request(
            "refusal, function_call and audio are not supported in messages",
        ));
    }
    let role = if message.role == "developer" {
        "system".to_owned()
    } else {
        message.role
    };
    let content = match message.content {
        // Only an assistant's turn may go without (it called tools instead).
        None if role != "assistant" => {
            return Err(ApiError::bad_request(format!(
                "a {} message needs its content",
                crate::store::names::escaped(&role)
            )))
        }
        None => String::new(),
        Some(Content::Text(text)) => text,
        Some(Content::Parts(parts)) => text_parts(parts)?,
    };
    let mut converted = Message::new(role, content);
    if let Some(calls) = message.tool_calls {
        if converted.role != "assistant" {
            return Err(ApiError::bad_request(
                "only assistant messages carry tool_calls",
            ));
        }
        converted.tool_calls = calls
            .into_iter()
            .map(|call| {
                if call.kind.as_deref().is_some_and(|kind| kind != "function") {
                    return Err(ApiError::bad_request(
                        "only function tool calls are supported",
                    ));
                }
                Ok(ToolCall {
                    id: call.id,
                    name: call.function.name,
                    arguments: tools::arguments_value(call.function.arguments),
                })
            })
            .collect::<Result<_, _>>()?;
    }
    if converted.role == "tool" && message.tool_call_id.is_none() {
        return Err(ApiError::bad_request(
            "a tool message needs its tool_call_id",
        ));
    }
    converted.tool_call_id = message.tool_call_id;
    converted.name = message.name;
    converted.reasoning_content = message.reasoning_content;
    Ok(converted)
}

/// The text of a message's parts. A list without parts would be a turn
/// without content: refused, as OpenAI refuses it.
fn text_parts(parts: Vec<Map<String, Value>>) -> Result<String, ApiError> {
    if parts.is_empty() {
        return Err(ApiError::bad_request(
            "a message's content list must not be empty",
        ));
    }
    let mut text = String::new();
    for part in parts {
        match part.get("type").and_then(Value::as_str).unwrap_or_default() {
            "text" => {
                TEXT_PART_FIELDS.check(&part, "a text part")?;
                match part.get("text") {
                    Some(Value::String(piece)) => text.push_str(piece),
                    _ => return Err(ApiError::bad_request("a text part needs its text")),
                }
            }
            "image_url" | "input_image" | "image" => {
                return Err(ApiError::bad_request(
                    "image inputs are not supported: this model has no vision support (olm serves text models)",
                ))
            }
            kind => {
                return Err(ApiError::bad_request(format!(
                    "unsupported content part '{}'",
                    crate::store::names::escaped(kind)
                )))
            }
        }
    }
    Ok(text)
}

fn constraint(format: Option<ResponseFormat>) -> Result<Option<Constraint>, ApiError> {
    match format {
        None | Some(ResponseFormat::Text {}) => Ok(None),
        Some(ResponseFormat::JsonObject { schema: None }) => Ok(Some(Constraint::JsonObject)),
        Some(ResponseFormat::JsonObject {
            schema: Some(schema),
        }) => Ok(Some(Constraint::JsonSchema(schema.to_string()))),
        Some(ResponseFormat::JsonSchema { json_schema }) => match json_schema.schema {
            Some(schema) => Ok(Some(Constraint::JsonSchema(schema.to_string()))),
            None => Err(ApiError::bad_request(
                "response_format.json_schema.schema is missing",
            )),
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

/// What every object of one response shares.
#[derive(Debug)]
struct ResponseIdentity {
    id: String,
    model: String,
    created: u64,
    kind: Kind,
}

/// Tokens over all choices: the prompt once, the answers summed.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    prompt: usize,
    cached: usize,
    completion: usize,
}

impl Usage {
    fn add(&mut self, stats: &Stats) {
        self.prompt = stats.prompt_tokens;
        self.cached = self.cached.max(
            stats
                .prompt_tokens
                .saturating_sub(stats.prompt_tokens_evaluated),
        );
        self.completion += stats.generated_tokens;
    }

    fn json(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
            "prompt_tokens_details": {"cached_tokens": self.cached},
        })
    }
}

/// A call as OpenAI writes it: arguments as JSON text.
pub fn call_json(call: &ToolCall) -> Value {
    json!({
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments.to_string()},
    })
}

impl ResponseIdentity {
    fn new(prefix: &str, model: &str, kind: Kind) -> Self {
        Self {
            id: response_id(prefix),
            model: model.to_owned(),
            created: unix_seconds(),
            kind,
        }
    }

    fn object(&self, streaming: bool) -> &'static str {
        match (self.kind, streaming) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }

    fn complete(
        &self,
        answers: &[(String, Stats)],
        reading: &Reading,
        echo: Option<&str>,
    ) -> Value {
        let mut usage = Usage::default();
        let choices: Vec<Value> = answers
            .iter()
            .enumerate()
            .map(|(index, (text, stats))| {
                usage.add(stats);
                match self.kind {
                    Kind::Chat => {
                        let whole = Whole::read(reading, text);
                        let reason = tools::finish_reason(stats, !whole.calls.is_empty());
                        let mut message = json!({"role": "assistant", "content": whole.content});
                        if !whole.calls.is_empty() {
                            if whole.content.is_empty() {
                                message["content"] = Value::Null;
                            }
                            message["tool_calls"] =
                                Value::Array(whole.calls.iter().map(call_json).collect());
                        }
                        if !whole.reasoning.is_empty() {
                            message["reasoning_content"] = json!(whole.reasoning);
                        }
                        if let Some(error) = whole.error {
                            message["tool_call_error"] = json!(error);
                        }
                        json!({"index": index, "message": message, "finish_reason": reason, "logprobs": null})
                    }
                    Kind::Completion => {
                        let reason = super::request::finish_reason(stats.stop_reason);
                        let text = format!("{}{text}", echo.unwrap_or_default());
                        json!({"index": index, "text": text, "finish_reason": reason, "logprobs": null})
                    }
                }
            })
            .collect();
        json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": usage.json(),
        })
    }

    fn chunk(&self, choices: Value, usage: Value) -> String {
        let chunk = json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": usage,
        });
        format!("data: {chunk}\n\n")
    }

    fn delta(&self, index: usize, delta: Value, finish: Option<&str>) -> String {
        self.chunk(
            json!([{"index": index, "delta": delta, "finish_reason": finish, "logprobs": null}]),
            Value::Null,
        )
    }

    fn text_chunk(&self, index: usize, text: &str, finish: Option<&str>) -> String {
        self.chunk(
            json!([{"index": index, "text": text, "finish_reason": finish, "logprobs": null}]),
            Value::Null,
        )
    }
}

/// Server-sent events: one `data:` line per chunk, then `data: [DONE]`.
struct ChunkWriter {
    reply: ResponseIdentity,
    include_usage: bool,
    /// Per choice: whether its first chunk (which carries the role) went out.
    sent_role: Vec<bool>,
    answers: Vec<Answer>,
    usage: Usage,
    /// `/v1/completions` with `echo`: the prompt, sent first in each choice.
    echo: Option<String>,
}

impl ChunkWriter {
    /// Chunks for pieces of choice `index`'s answer.
    fn pieces(&mut self, index: usize, pieces: Vec<Piece>) -> String {
        let mut out = String::new();
        for piece in pieces {
            let mut delta = match piece {
                Piece::Content(text) => json!({"content": text}),
                Piece::Reasoning(text) => json!({"reasoning_content": text}),
                Piece::Call(call) => {
                    let number = self.answers[index].calls() - 1;
                    // The call's head (id and name), then its arguments, as
                    // OpenAI streams them.
                    let head = json!({"tool_calls": [{"index": number, "id": call.id, "type": "function",
                        "function": {"name": call.name, "arguments": ""}}]});
                    let head = self.with_role(index, head);
                    out.push_str(&self.reply.delta(index, head, None));
                    json!({"tool_calls": [{"index": number,
                        "function": {"arguments": call.arguments.to_string()}}]})
                }
            };
            delta = self.with_role(index, delta);
            out.push_str(&self.reply.delta(index, delta, None));
        }
        out
    }

    fn with_role(&mut self, index: usize, mut delta: Value) -> Value {
        if !self.sent_role[index] {
            self.sent_role[index] = true;
            delta["role"] = json!("assistant");
        }
        delta
    }
}

impl StreamFormat for ChunkWriter {
    fn begin(&mut self) -> String {
        let Some(prompt) = self.echo.clone() else {
            return String::new();
        };
        (0..self.answers.len())
            .map(|index| self.reply.text_chunk(index, &prompt, None))
            .collect()
    }

    fn text(&mut self, index: usize, text: &str) -> String {
        if self.reply.kind == Kind::Completion {
            return self.reply.text_chunk(index, text, None);
        }
        let pieces = self.answers[index].push(text);
        self.pieces(index, pieces)
    }

    fn done(&mut self, index: usize, stats: &Stats) -> String {
        self.usage.add(stats);
        if self.reply.kind == Kind::Completion {
            let finish = super::request::finish_reason(stats.stop_reason);
            return self.reply.text_chunk(index, "", Some(finish));
        }
        let (pieces, error) = self.answers[index].finish();
        let mut out = self.pieces(index, pieces);
        let finish = tools::finish_reason(stats, self.answers[index].calls() > 0);
        let mut delta = self.with_role(index, json!({}));
        if let Some(error) = error {
            delta["tool_call_error"] = json!(error);
        }
        out.push_str(&self.reply.delta(index, delta, Some(finish)));
        out
    }

    fn end(&mut self) -> String {
        let mut out = String::new();
        if self.include_usage {
            out.push_str(&self.reply.chunk(json!([]), self.usage.json()));
        }
        out.push_str("data: [DONE]\n\n");
        out
    }

    fn failed(&mut self, error: &ApiError) -> String {
        format!("data: {}\n\n", error.body(Flavor::OpenAi))
    }
}

fn event_stream(started: Started, writer: ChunkWriter) -> Response {
    let body: Body = generation::stream_body(started, writer);
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(fields: Value) -> Result<OpenAiRequest, ApiError> {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        for (key, value) in fields.as_object().expect("an object") {
            body[key] = value.clone();
        }
        decode_chat(Ok(Bytes::from(body.to_string())))
    }

    fn conversation(request: &OpenAiRequest) -> &Conversation {
        match &request.input {
            Input::Chat(conversation) => conversation,
            Input::Text { .. } => panic!("not a chat"),
        }
    }

    #[test]
    fn chat_request_accepts_text_and_part_contents() {
        let request = chat(json!({
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "!"}]},
            ],
            "max_tokens": 5,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": true, "schema": {"type": "object"}}},
        }))
        .expect("valid");
        assert_eq!(
            conversation(&request).messages[1],
            Message::new("user", "hi!")
        );
        assert!(matches!(
            request.generate.constraint,
            Some(Constraint::JsonSchema(_))
        ));
    }

    #[test]
    fn tool_turns_decode() {
        let request = chat(json!({
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "21 C"},
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
            "tool_choice": "auto",
            "parallel_tool_calls": false,
        }))
        .expect("valid");
        let conversation = conversation(&request);
        assert_eq!(
            conversation.messages[1].tool_calls[0].arguments,
            json!({"city": "Paris"})
        );
        assert_eq!(
            conversation.messages[2].tool_call_id.as_deref(),
            Some("call_1")
        );
        assert_eq!(conversation.choice, Some(tools::Choice::Auto));
        assert!(!conversation.parallel);
    }

    /// Every field is honoured, ignored on purpose, or refused by name.
    #[test]
    fn fields_are_honoured_ignored_or_refused() {
        for ignored in [
            json!({"user": "u1"}),
            json!({"metadata": {"a": "b"}}),
            json!({"service_tier": "auto"}),
        ] {
            chat(ignored.clone()).unwrap_or_else(|error| panic!("{ignored}: {}", error.message));
        }
        for (fields, named) in [
            (json!({"functions": []}), "functions"),
            (json!({"audio": {}}), "audio"),
            (json!({"logprobs": true}), "logprobs"),
            (json!({"top_logprobs": 3}), "logprobs"),
            (json!({"store": true}), "store"),
            (json!({"modalities": ["text", "audio"]}), "modality"),
            (json!({"reasoning_effort": "extreme"}), "reasoning_effort"),
            (json!({"n": 0}), "n must be"),
            (json!({"n": 1000}), "n must be"),
            (
                json!({"stream_options": {"include_usage": true, "extra": 1}}),
                "extra",
            ),
            (
                json!({"messages": [{"role": "user", "content": "hi", "surprise": 1}]}),
                "surprise",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:"}}]}]}),
                "vision",
            ),
            (
                json!({"messages": [{"role": "tool", "content": "x"}]}),
                "tool_call_id",
            ),
            (json!({"tool_choice": "required"}), "no tools"),
            // Ignored on purpose, but only with OpenAI's types.
            (json!({"user": -1}), "expected a string"),
            (json!({"metadata": {"a": 1}}), "expected a string"),
            (json!({"service_tier": ["auto"]}), "expected a string"),
        ] {
            let error = chat(fields.clone()).expect_err(&fields.to_string());
            assert_eq!(
                error.status,
                axum::http::StatusCode::BAD_REQUEST,
                "{fields}"
            );
            assert!(error.message.contains(named), "{fields}: {}", error.message);
        }
        for (fields, thinking) in [("none", false), ("low", true), ("high", true)] {
            let request = chat(json!({"reasoning_effort": fields})).expect("valid");
            assert_eq!(conversation(&request).thinking, Some(thinking));
        }
        assert_eq!(chat(json!({"n": 3})).expect("valid").choices, 3);
    }

    fn completion(fields: Value) -> Result<OpenAiRequest, ApiError> {
        let mut body = json!({"model": "m", "prompt": "hi"});
        for (key, value) in fields.as_object().expect("an object") {
            body[key] = value.clone();
        }
        decode_completion(Ok(Bytes::from(body.to_string())))
    }

    /// T-D4: olm has no logit_bias; a bias must not be dropped without a word.
    #[test]
    fn logit_bias_is_refused_unless_empty() {
        for bias in [
            json!({"-1": 100}),
            json!({"4294967296": -100}),
            json!({"15": 1}),
        ] {
            let error = completion(json!({ "logit_bias": bias })).expect_err("refused");
            assert!(error.message.contains("logit_bias"), "{}", error.message);
        }
        for nothing in [json!({}), Value::Null] {
            completion(json!({ "logit_bias": nothing })).expect("nothing asked");
        }
    }

    #[test]
    fn token_prompts_and_llama_cpp_ranges_are_refused() {
        for fields in [
            json!({"prompt": [-1]}),
            json!({"prompt": [49152]}),
            json!({"prompt": [[1, 2]]}),
            json!({"top_k": -5}),
            json!({"min_p": 2}),
            json!({"repeat_penalty": -1}),
            json!({"max_tokens": 9_223_372_036_854_775_808_u64}),
            json!({"suffix": "tail"}),
            json!({"best_of": 3}),
            json!({"logprobs": 2}),
            json!({"echo": "yes"}),
        ] {
            let error = completion(fields.clone()).expect_err(&fields.to_string());
            assert_eq!(
                error.status,
                axum::http::StatusCode::BAD_REQUEST,
                "{fields}"
            );
        }
        let Ok(decoded) =
            completion(json!({"top_k": 5, "min_p": 0.1, "echo": true, "logprobs": 0}))
        else {
            panic!("refused");
        };
        assert_eq!(decoded.generate.sampling.top_k, 5);
        assert!(matches!(decoded.input, Input::Text { echo: true, .. }));
    }

    #[test]
    fn bad_messages_are_refused() {
        assert!(chat_messages(Vec::new()).is_err());
        assert!(chat(json!({"messages": [{"role": "wizard", "content": "x"}]})).is_err());
        assert!(chat(json!({"messages": ["x"]})).is_err());
        assert!(chat(json!({"messages": "x"})).is_err());
    }
}
