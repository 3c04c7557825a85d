//! The OpenAI API: `GET /v1/models`, `POST /v1/chat/completions`,
//! `POST /v1/completions`, streamed as server-sent events or not.
//!
//! Owns: OpenAI's request and response shapes and their translation to and
//! from the engine. Must not touch: llama.cpp, the store.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, Flavor};
use super::generation::{self, Started, StreamFormat};
use super::request::{finish_reason, json_body, response_id, SamplingRequest, Stop};
use super::AppState;
use crate::engine::{Constraint, GenerateRequest, Message, Prompt, Stats};
use crate::human::unix_seconds;

/// OpenAI's default `max_tokens` for `/v1/completions`.
const COMPLETIONS_DEFAULT_MAX_TOKENS: i64 = 16;

#[derive(Debug, Deserialize)]
struct ChatBody {
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    response_format: Option<ResponseFormat>,
    n: Option<u32>,
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
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
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
struct ChatMessage {
    role: String,
    content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaSpec },
}

#[derive(Debug, Deserialize)]
struct JsonSchemaSpec {
    schema: Option<Value>,
}

/// `GET /v1/models`.
pub async fn models(State(state): State<Arc<AppState>>) -> Response {
    let data: Vec<Value> = state
        .registry
        .available()
        .into_iter()
        .map(|model| json!({"id": model.name, "object": "model", "created": model.modified, "owned_by": "olm"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
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

/// A chat or completion request, decoded and checked: all that is left to
/// check needs the model (its name, the prompt's length in tokens).
#[derive(Debug)]
pub(super) struct OpenAiRequest {
    model: String,
    prompt: Prompt,
    generate: GenerateRequest,
    stream: bool,
    include_usage: bool,
}

/// The body of `POST /v1/chat/completions`, decoded and range-checked.
pub(super) fn decode_chat(body: Result<Bytes, BytesRejection>) -> Result<OpenAiRequest, ApiError> {
    let request: ChatBody = json_body(body)?;
    check_n(request.n)?;
    let messages = chat_messages(request.messages)?;
    let constraint = constraint(request.response_format)?;
    let generate = request
        .sampling
        .into_sampling(None)?
        .into_request(constraint)?;
    Ok(OpenAiRequest {
        model: request.model,
        prompt: Prompt::Chat(messages),
        generate,
        stream: request.stream,
        include_usage: request
            .stream_options
            .is_some_and(|options| options.include_usage),
    })
}

/// The body of `POST /v1/completions`, decoded and range-checked.
pub(super) fn decode_completion(
    body: Result<Bytes, BytesRejection>,
) -> Result<OpenAiRequest, ApiError> {
    let request: CompletionBody = json_body(body)?;
    check_n(request.n)?;
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
        prompt: Prompt::Raw(prompt),
        generate,
        stream: request.stream,
        include_usage: request
            .stream_options
            .is_some_and(|options| options.include_usage),
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
    let delivery = generation::Delivery::for_stream(request.stream);
    let mut started = generation::start(
        state,
        &request.model,
        request.prompt,
        request.generate,
        delivery,
        None,
    )
    .await?;
    let prefix = match kind {
        Kind::Chat => "chatcmpl",
        Kind::Completion => "cmpl",
    };
    let reply = ResponseIdentity::new(prefix, &request.model, kind);
    if request.stream {
        return Ok(event_stream(
            started,
            ChunkWriter {
                reply,
                include_usage: request.include_usage,
                // Completion chunks carry no role.
                sent_role: kind == Kind::Completion,
            },
        ));
    }
    let (text, stats) = generation::collect(&mut started).await?;
    Ok(Json(reply.complete(&text, &stats)).into_response())
}

fn check_n(n: Option<u32>) -> Result<(), ApiError> {
    match n {
        None | Some(1) => Ok(()),
        Some(n) => Err(ApiError::bad_request(format!("n must be 1, got {n}"))),
    }
}

fn chat_messages(messages: Vec<ChatMessage>) -> Result<Vec<Message>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_request("messages must not be empty"));
    }
    messages
        .into_iter()
        .map(|message| {
            if !matches!(
                message.role.as_str(),
                "system" | "developer" | "user" | "assistant"
            ) {
                return Err(ApiError::bad_request(format!(
                    "unsupported message role '{}'",
                    message.role
                )));
            }
            let role = if message.role == "developer" {
                "system".to_owned()
            } else {
                message.role
            };
            let content = match message.content {
                None => String::new(),
                Some(Content::Text(text)) => text,
                Some(Content::Parts(parts)) => text_parts(parts)?,
            };
            Ok(Message::new(role, content))
        })
        .collect()
}

fn text_parts(parts: Vec<ContentPart>) -> Result<String, ApiError> {
    let mut text = String::new();
    for part in parts {
        match (part.kind.as_str(), part.text) {
            ("text", Some(piece)) => text.push_str(&piece),
            (kind, _) => {
                return Err(ApiError::bad_request(format!(
                    "unsupported content part '{kind}'"
                )))
            }
        }
    }
    Ok(text)
}

fn constraint(format: Option<ResponseFormat>) -> Result<Option<Constraint>, ApiError> {
    match format {
        None | Some(ResponseFormat::Text) => Ok(None),
        Some(ResponseFormat::JsonObject) => Ok(Some(Constraint::JsonObject)),
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

    fn complete(&self, text: &str, stats: &Stats) -> Value {
        let reason = finish_reason(stats.stop_reason);
        let choice = match self.kind {
            Kind::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": reason,
                "logprobs": null,
            }),
            Kind::Completion => {
                json!({"index": 0, "text": text, "finish_reason": reason, "logprobs": null})
            }
        };
        json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage(stats),
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

    fn choice(&self, text: &str, role: bool, finish: Option<&str>) -> Value {
        match self.kind {
            Kind::Chat if role => {
                json!({"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": finish})
            }
            Kind::Chat => json!({"index": 0, "delta": {"content": text}, "finish_reason": finish}),
            Kind::Completion => {
                json!({"index": 0, "text": text, "finish_reason": finish, "logprobs": null})
            }
        }
    }
}

fn usage(stats: &Stats) -> Value {
    json!({
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.generated_tokens,
        "total_tokens": stats.prompt_tokens + stats.generated_tokens,
        "prompt_tokens_details": {
            "cached_tokens": stats.prompt_tokens.saturating_sub(stats.prompt_tokens_evaluated),
        },
    })
}

/// Server-sent events: one `data:` line per chunk, then `data: [DONE]`.
struct ChunkWriter {
    reply: ResponseIdentity,
    include_usage: bool,
    sent_role: bool,
}

impl StreamFormat for ChunkWriter {
    fn text(&mut self, text: &str) -> String {
        let role = !self.sent_role;
        self.sent_role = true;
        self.reply
            .chunk(json!([self.reply.choice(text, role, None)]), Value::Null)
    }

    fn done(&mut self, stats: &Stats) -> String {
        let role = !self.sent_role;
        let finish = finish_reason(stats.stop_reason);
        let mut out = self.reply.chunk(
            json!([self.reply.choice("", role, Some(finish))]),
            Value::Null,
        );
        if self.include_usage {
            out.push_str(&self.reply.chunk(json!([]), usage(stats)));
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

    #[test]
    fn chat_request_accepts_text_and_part_contents() {
        let request: ChatBody = serde_json::from_value(json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "!"}]},
            ],
            "max_tokens": 5,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        }))
        .expect("parses");
        let messages = chat_messages(request.messages).expect("valid");
        assert_eq!(messages[1], Message::new("user", "hi!"));
        assert!(matches!(
            constraint(request.response_format),
            Ok(Some(Constraint::JsonSchema(_)))
        ));
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
        ] {
            let error = completion(fields.clone()).expect_err(&fields.to_string());
            assert_eq!(
                error.status,
                axum::http::StatusCode::BAD_REQUEST,
                "{fields}"
            );
        }
        let Ok(decoded) = completion(json!({"top_k": 5, "min_p": 0.1})) else {
            panic!("refused");
        };
        assert_eq!(decoded.generate.sampling.top_k, 5);
    }

    #[test]
    fn bad_messages_are_refused() {
        assert!(chat_messages(Vec::new()).is_err());
        let tool = vec![ChatMessage {
            role: "wizard".into(),
            content: None,
        }];
        assert!(chat_messages(tool).is_err());
        assert!(
            serde_json::from_value::<ChatBody>(json!({"model": "m", "messages": "x"})).is_err()
        );
    }
}
