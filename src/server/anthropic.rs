//! Anthropic's Messages API: `POST /v1/messages`, with tools, thinking and
//! streaming (named server-sent events), so agents that speak only this
//! API (coding agents such as Claude Code) can run on a local model.
//!
//! Owns: the Messages request and response shapes, their error shape
//! (`{"type": "error", "error": {"type", "message"}}`), and which fields
//! are honoured, ignored on purpose or refused ([`MESSAGES_FIELDS`]).
//! Conversation, tools and reasoning go through [`super::tools`], like the
//! other chat APIs. Must not touch: llama.cpp, the store.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::generation::{self, StreamFormat};
use super::request::{response_id, strict_body, Fields, SamplingRequest, Stop};
use super::tools::{self, Answer, Choice, Conversation, Whole};
use super::AppState;
use crate::engine::tools::{Piece, ToolCall, ToolSpec};
use crate::engine::{Message, Stats, StopReason};

/// `/v1/messages`: what olm honours, and what it ignores on purpose:
/// `metadata` (who the end user is), `service_tier` (Anthropic's billing),
/// and a thinking block's `budget_tokens` (the answer's `max_tokens`
/// bounds the thinking too). `cache_control` on any block is ignored on
/// purpose as well: olm keeps each slot's prompt cache by itself.
pub const MESSAGES_FIELDS: Fields = Fields {
    honoured: &[
        "model",
        "messages",
        "system",
        "max_tokens",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
    ],
    ignored: &["metadata", "service_tier"],
};

#[derive(Debug, Deserialize)]
struct MessagesBody {
    model: String,
    messages: Vec<InputMessage>,
    system: Option<InputContent>,
    max_tokens: i64,
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    stream: bool,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    tools: Option<Vec<Map<String, Value>>>,
    tool_choice: Option<Value>,
    thinking: Option<Thinking>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputMessage {
    role: String,
    content: InputContent,
}

/// Content as Anthropic writes it: a text, or a list of blocks (also for
/// `system` and a tool result's `content`). Decoded by hand rather than as
/// an untagged enum, so a refused key in a block is named in the error.
#[derive(Debug, Deserialize)]
#[serde(try_from = "Value")]
enum InputContent {
    Text(String),
    Blocks(Vec<Block>),
}

impl TryFrom<Value> for InputContent {
    type Error = String;

    fn try_from(value: Value) -> Result<Self, String> {
        match value {
            Value::String(text) => Ok(InputContent::Text(text)),
            blocks @ Value::Array(_) => serde_json::from_value(blocks)
                .map(InputContent::Blocks)
                .map_err(|error| error.to_string()),
            _ => Err("content must be a text or a list of content blocks".into()),
        }
    }
}

/// A content block: every key of the block types olm reads is honoured
/// or ignored on purpose, any other is refused by name.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Block {
    Text {
        text: String,
        #[serde(default, rename = "cache_control")]
        _cache_control: Option<Value>,
        #[serde(default, rename = "citations")]
        _citations: Option<Value>,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
        #[serde(default, rename = "cache_control")]
        _cache_control: Option<Value>,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default)]
        content: Option<InputContent>,
        #[serde(default)]
        is_error: bool,
        #[serde(default, rename = "cache_control")]
        _cache_control: Option<Value>,
    },
    Thinking {
        thinking: String,
        /// Anthropic's proof that it wrote the thinking; olm writes none
        /// and checks none.
        #[serde(default, rename = "signature")]
        _signature: Option<String>,
    },
    /// Refused whatever they hold (olm serves text models).
    Image(#[expect(dead_code, reason = "refused unread")] Map<String, Value>),
    Document(#[expect(dead_code, reason = "refused unread")] Map<String, Value>),
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Thinking {
    Enabled {
        #[serde(rename = "budget_tokens")]
        _budget_tokens: Option<u64>,
    },
    Disabled {},
    Adaptive {},
}

/// `POST /v1/messages`.
pub async fn messages(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    messages_inner(&state, body)
        .await
        .unwrap_or_else(error_response)
}

/// An error in Anthropic's shape.
pub fn error_response(error: ApiError) -> Response {
    let kind = error_type(error.status);
    let mut response = (
        error.status,
        Json(json!({"type": "error", "error": {"type": kind, "message": error.message}})),
    )
        .into_response();
    if let Some(seconds) = error.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn error_type(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "authentication_error",
        StatusCode::FORBIDDEN => "permission_error",
        StatusCode::NOT_FOUND => "not_found_error",
        StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "overloaded_error",
        status if status.is_server_error() => "api_error",
        _ => "invalid_request_error",
    }
}

/// A Messages request, decoded and checked.
#[derive(Debug)]
pub(super) struct MessagesRequest {
    model: String,
    conversation: Conversation,
    generate: crate::engine::GenerateRequest,
    stream: bool,
    stops: Vec<String>,
}

/// The body of `POST /v1/messages`, decoded and range-checked.
pub(super) fn decode(body: Result<Bytes, BytesRejection>) -> Result<MessagesRequest, ApiError> {
    let request: MessagesBody = strict_body(body, &MESSAGES_FIELDS)?;
    if request.messages.is_empty() {
        return Err(ApiError::bad_request("messages must not be empty"));
    }
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    match request.system {
        None => {}
        Some(InputContent::Text(text)) => messages.push(Message::new("system", text)),
        Some(InputContent::Blocks(blocks)) => {
            let mut text = String::new();
            for block in blocks {
                match block {
                    Block::Text { text: piece, .. } => text.push_str(&piece),
                    _ => return Err(ApiError::bad_request("system blocks must be text")),
                }
            }
            messages.push(Message::new("system", text));
        }
    }
    for message in request.messages {
        push_message(&mut messages, message)?;
    }
    let tools = request
        .tools
        .unwrap_or_default()
        .into_iter()
        .map(tool)
        .collect::<Result<Vec<_>, _>>()?;
    let (choice, parallel) = tool_choice(request.tool_choice, &tools)?;
    let thinking = request.thinking.map(|thinking| match thinking {
        Thinking::Enabled { .. } | Thinking::Adaptive {} => true,
        Thinking::Disabled {} => false,
    });
    let stops = request.stop_sequences.unwrap_or_default();
    let generate = SamplingRequest {
        temperature: request.temperature,
        top_p: request.top_p,
        top_k: request.top_k,
        max_tokens: Some(request.max_tokens),
        stop: (!stops.is_empty()).then(|| Stop::Many(stops.clone())),
        ..SamplingRequest::default()
    }
    .into_request(None)?;
    Ok(MessagesRequest {
        model: request.model,
        conversation: Conversation {
            messages,
            tools,
            choice: Some(choice),
            parallel,
            thinking,
            variables: Map::new(),
        },
        generate,
        stream: request.stream,
        stops,
    })
}

/// One input message: text and tool uses of the assistant, text and tool
/// results of the user (each result becomes a `tool` turn, as templates
/// expect).
fn push_message(messages: &mut Vec<Message>, message: InputMessage) -> Result<(), ApiError> {
    if !matches!(message.role.as_str(), "user" | "assistant") {
        return Err(ApiError::bad_request(format!(
            "message roles are user and assistant, got '{}'",
            crate::store::names::escaped(&message.role)
        )));
    }
    let blocks = match message.content {
        InputContent::Text(text) => {
            messages.push(Message::new(message.role, text));
            return Ok(());
        }
        // A turn without blocks would vanish from the conversation:
        // refused, as Anthropic refuses it.
        InputContent::Blocks(blocks) if blocks.is_empty() => {
            return Err(ApiError::bad_request(format!(
                "a {} message's content list must not be empty",
                message.role
            )))
        }
        InputContent::Blocks(blocks) => blocks,
    };
    let mut current = Message::new(message.role.clone(), "");
    let mut reasoning = String::new();
    for block in blocks {
        match block {
            Block::Text { text, .. } => current.content.push_str(&text),
            Block::Thinking { thinking, .. } if message.role == "assistant" => {
                reasoning.push_str(&thinking)
            }
            Block::ToolUse {
                id, name, input, ..
            } if message.role == "assistant" => current.tool_calls.push(ToolCall {
                id,
                name,
                arguments: input,
            }),
            Block::ToolResult {
                tool_use_id,
                content,
                is_error,
                ..
            } if message.role == "user" => {
                let mut text = match content {
                    None => String::new(),
                    Some(InputContent::Text(text)) => text,
                    Some(InputContent::Blocks(blocks)) => {
                        let mut text = String::new();
                        for block in blocks {
                            match block {
                                Block::Text { text: piece, .. } => text.push_str(&piece),
                                _ => {
                                    return Err(ApiError::bad_request(
                                        "tool results may hold text blocks only",
                                    ))
                                }
                            }
                        }
                        text
                    }
                };
                if is_error {
                    text = format!("Error: {text}");
                }
                let mut result = Message::new("tool", text);
                result.tool_call_id = Some(tool_use_id.clone());
                // The name of the tool this result answers, from its call.
                result.name = messages
                    .iter()
                    .flat_map(|message| &message.tool_calls)
                    .find(|call| call.id == tool_use_id)
                    .map(|call| call.name.clone());
                messages.push(result);
            }
            Block::Image(_) | Block::Document(_) => {
                return Err(ApiError::bad_request(
                    "image and document blocks are not supported: this model has no vision support (olm serves text models)",
                ))
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "a content block of this type is not supported in a {} message",
                    message.role
                )))
            }
        }
    }
    if !reasoning.is_empty() {
        current.reasoning_content = Some(reasoning);
    }
    // A turn of thinking alone is kept too: its reasoning is what it says.
    if !current.content.is_empty()
        || !current.tool_calls.is_empty()
        || current.reasoning_content.is_some()
    {
        messages.push(current);
    }
    Ok(())
}

/// `{"name", "description", "input_schema"}`; Anthropic's own tools
/// (computer use, bash, web search) have a `type` and are refused.
fn tool(mut tool: Map<String, Value>) -> Result<ToolSpec, ApiError> {
    match tool.remove("type") {
        None | Some(Value::Null) => {}
        Some(Value::String(kind)) if kind == "custom" => {}
        Some(kind) => {
            return Err(ApiError::bad_request(format!(
                "tool type {kind} is not supported: only custom tools with an input_schema"
            )))
        }
    }
    // Ignored on purpose, as everywhere: olm caches prompts by itself.
    tool.remove("cache_control");
    if tool.contains_key("parameters") {
        return Err(ApiError::bad_request(
            "unsupported field 'parameters' in a tool: give input_schema",
        ));
    }
    let Some(schema) = tool.remove("input_schema") else {
        return Err(ApiError::bad_request("a tool needs its input_schema"));
    };
    tool.insert("parameters".into(), schema);
    let mut tools = ToolSpec::parse_list(Value::Array(vec![Value::Object(tool)]))
        .map_err(ApiError::bad_request)?;
    tools
        .pop()
        .ok_or_else(|| ApiError::bad_request("a tool is empty"))
}

/// `tool_choice`: `{"type": "auto" | "any" | "tool" | "none", "name",
/// "disable_parallel_tool_use"}`.
fn tool_choice(mut choice: Option<Value>, tools: &[ToolSpec]) -> Result<(Choice, bool), ApiError> {
    let disable = choice
        .as_mut()
        .and_then(Value::as_object_mut)
        .and_then(|choice| choice.remove("disable_parallel_tool_use"));
    let parallel = match disable {
        None | Some(Value::Null) => true,
        Some(Value::Bool(disable)) => !disable,
        Some(_) => {
            return Err(ApiError::bad_request(
                "tool_choice.disable_parallel_tool_use must be true or false",
            ))
        }
    };
    let choice = tools::decode_choice(choice, tools)?;
    Ok((choice, parallel))
}

async fn messages_inner(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let MessagesRequest {
        model,
        conversation,
        generate,
        stream,
        stops,
    } = decode(body)?;
    let delivery = generation::Delivery::for_stream(stream);
    let (mut started, reading) =
        generation::start_conversation(state, &model, delivery, conversation, generate).await?;
    let id = response_id("msg");
    if stream {
        let writer = EventWriter {
            id,
            model,
            answer: reading.answer(),
            open: None,
            next_index: 0,
            stops,
        };
        let body = generation::stream_body(started, writer);
        return Ok((
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response());
    }
    let mut answers = generation::collect(&mut started).await?;
    let Some((text, stats)) = answers.pop() else {
        return Err(ApiError::internal("generation ended without a result"));
    };
    let whole = Whole::read(&reading, &text);
    let mut content = Vec::new();
    if !whole.reasoning.is_empty() {
        content.push(json!({"type": "thinking", "thinking": whole.reasoning, "signature": ""}));
    }
    if !whole.content.is_empty() || whole.calls.is_empty() {
        content.push(json!({"type": "text", "text": whole.content}));
    }
    for call in &whole.calls {
        content.push(json!({"type": "tool_use", "id": tool_use_id(call), "name": call.name, "input": call.arguments}));
    }
    let (reason, sequence) = stop_reason(&stats, !whole.calls.is_empty(), &stops);
    let mut reply = json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage(&stats),
    });
    if let Some(error) = whole.error {
        reply["tool_call_error"] = json!(error);
    }
    Ok(Json(reply).into_response())
}

/// Anthropic's ids of tool uses start with `toolu_`.
fn tool_use_id(call: &ToolCall) -> String {
    format!("toolu_{}", call.id)
}

fn usage(stats: &Stats) -> Value {
    json!({
        "input_tokens": stats.prompt_tokens,
        "output_tokens": stats.generated_tokens,
        "cache_read_input_tokens": stats.prompt_tokens.saturating_sub(stats.prompt_tokens_evaluated),
        "cache_creation_input_tokens": 0,
    })
}

/// Why the answer ended, and the stop sequence when one ended it (known
/// only when the request gave one).
fn stop_reason(stats: &Stats, called: bool, stops: &[String]) -> (&'static str, Value) {
    match stats.stop_reason {
        StopReason::StopSequence => match stops {
            [only] => ("stop_sequence", json!(only)),
            _ => ("stop_sequence", Value::Null),
        },
        StopReason::Eog if called => ("tool_use", Value::Null),
        StopReason::Eog | StopReason::Cancelled => ("end_turn", Value::Null),
        StopReason::MaxTokens | StopReason::ContextFull => ("max_tokens", Value::Null),
    }
}

/// Which content block is open in a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
}

/// Named server-sent events: `message_start`, then per block
/// `content_block_start`, its deltas and `content_block_stop`, then
/// `message_delta` and `message_stop`.
struct EventWriter {
    id: String,
    model: String,
    answer: Answer,
    open: Option<(Open, usize)>,
    next_index: usize,
    stops: Vec<String>,
}

fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

impl EventWriter {
    fn close(&mut self) -> String {
        let Some((kind, index)) = self.open.take() else {
            return String::new();
        };
        let mut out = String::new();
        if kind == Open::Thinking {
            out.push_str(&event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "signature_delta", "signature": ""}}),
            ));
        }
        out.push_str(&event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ));
        out
    }

    fn open(&mut self, kind: Open) -> (String, usize) {
        if let Some((open, index)) = self.open {
            if open == kind {
                return (String::new(), index);
            }
        }
        let mut out = self.close();
        let index = self.next_index;
        self.next_index += 1;
        let block = match kind {
            Open::Text => json!({"type": "text", "text": ""}),
            Open::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
        };
        out.push_str(&event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        self.open = Some((kind, index));
        (out, index)
    }

    fn pieces(&mut self, pieces: Vec<Piece>) -> String {
        let mut out = String::new();
        for piece in pieces {
            match piece {
                Piece::Content(text) => {
                    let (opened, index) = self.open(Open::Text);
                    out.push_str(&opened);
                    out.push_str(&event(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": index,
                            "delta": {"type": "text_delta", "text": text}}),
                    ));
                }
                Piece::Reasoning(text) => {
                    let (opened, index) = self.open(Open::Thinking);
                    out.push_str(&opened);
                    out.push_str(&event(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": index,
                            "delta": {"type": "thinking_delta", "thinking": text}}),
                    ));
                }
                Piece::Call(call) => {
                    out.push_str(&self.close());
                    let index = self.next_index;
                    self.next_index += 1;
                    out.push_str(&event(
                        "content_block_start",
                        &json!({"type": "content_block_start", "index": index,
                            "content_block": {"type": "tool_use", "id": tool_use_id(&call), "name": call.name, "input": {}}}),
                    ));
                    out.push_str(&event(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": call.arguments.to_string()}}),
                    ));
                    out.push_str(&event(
                        "content_block_stop",
                        &json!({"type": "content_block_stop", "index": index}),
                    ));
                }
            }
        }
        out
    }
}

impl StreamFormat for EventWriter {
    fn begin(&mut self) -> String {
        let message = json!({
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        });
        event(
            "message_start",
            &json!({"type": "message_start", "message": message}),
        ) + &event("ping", &json!({"type": "ping"}))
    }

    fn text(&mut self, _choice: usize, text: &str) -> String {
        let pieces = self.answer.push(text);
        self.pieces(pieces)
    }

    fn done(&mut self, _choice: usize, stats: &Stats) -> String {
        let (pieces, error) = self.answer.finish();
        let mut out = self.pieces(pieces);
        if self.next_index == 0 {
            // An empty answer still has its (empty) text block.
            let (opened, _) = self.open(Open::Text);
            out.push_str(&opened);
        }
        out.push_str(&self.close());
        let (reason, sequence) = stop_reason(stats, self.answer.calls() > 0, &self.stops);
        let mut delta = json!({"type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": usage(stats)});
        if let Some(error) = error {
            delta["tool_call_error"] = json!(error);
        }
        out.push_str(&event("message_delta", &delta));
        out.push_str(&event("message_stop", &json!({"type": "message_stop"})));
        out
    }

    fn failed(&mut self, error: &ApiError) -> String {
        event(
            "error",
            &json!({"type": "error", "error": {"type": error_type(error.status), "message": error.message}}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(fields: Value) -> Result<MessagesRequest, ApiError> {
        let mut body = json!({"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]});
        for (key, value) in fields.as_object().expect("an object") {
            body[key] = value.clone();
        }
        decode(Ok(Bytes::from(body.to_string())))
    }

    /// An assistant turn of thinking alone keeps its reasoning (it was
    /// dropped with the turn).
    #[test]
    fn a_turn_of_thinking_alone_is_kept() {
        let decoded = request(json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "Greet.", "signature": ""}]},
            {"role": "user", "content": "again"},
        ]}))
        .expect("valid");
        let messages = &decoded.conversation.messages;
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert_eq!(messages[1].reasoning_content.as_deref(), Some("Greet."));
    }

    #[test]
    fn a_conversation_with_tools_decodes() {
        let decoded = request(json!({
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "metadata": {"user_id": "u"},
            "messages": [
                {"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "I should look.", "signature": "x"},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]},
            ],
        }))
        .expect("valid");
        let messages = &decoded.conversation.messages;
        assert_eq!(messages[0], Message::new("system", "Be brief."));
        assert_eq!(messages[2].tool_calls[0].arguments, json!({"city": "Oslo"}));
        assert_eq!(
            messages[2].reasoning_content.as_deref(),
            Some("I should look.")
        );
        assert_eq!(messages[3].role, "tool");
        assert_eq!(messages[3].name.as_deref(), Some("get_weather"));
        assert_eq!(decoded.conversation.choice, Some(Choice::Required));
        assert!(!decoded.conversation.parallel);
        assert_eq!(decoded.conversation.thinking, Some(true));
    }

    #[test]
    fn what_cannot_be_honoured_is_refused() {
        for (fields, says) in [
            (json!({"mcp_servers": []}), "mcp_servers"),
            (
                json!({"tools": [{"type": "bash_20250124", "name": "bash"}]}),
                "not supported",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}),
                "vision",
            ),
            (
                json!({"messages": [{"role": "system", "content": "x"}]}),
                "roles",
            ),
            (json!({"max_tokens": 0}), "max_tokens"),
            (
                json!({"tool_choice": {"type": "tool", "name": "nope"}, "tools": []}),
                "tool",
            ),
        ] {
            let error = request(fields.clone()).expect_err(&fields.to_string());
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{fields}");
            assert!(error.message.contains(says), "{fields}: {}", error.message);
        }
        let response = error_response(ApiError::busy("full"));
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
