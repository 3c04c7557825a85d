//! OpenAI's Responses API: `POST /v1/responses`, with function tools,
//! reasoning and streaming (named server-sent events), for agents that
//! speak only this API.
//!
//! Owns: the Responses request and response shapes and which fields are
//! honoured, ignored on purpose or refused ([`RESPONSES_FIELDS`]). olm keeps
//! no responses, so `store` and `previous_response_id` are refused: the
//! client sends the whole conversation as `input`. Conversation, tools and
//! reasoning go through [`super::tools`]. Must not touch: llama.cpp, the store.

use std::sync::Arc;

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
use super::request::{response_id, strict_body, Fields, SamplingRequest};
use super::tools::{self, Answer, Conversation, Whole};
use super::AppState;
use crate::engine::tools::{Piece, ToolCall, ToolSpec};
use crate::engine::{Constraint, Message, Stats, StopReason};
use crate::human::unix_seconds;

/// `/v1/responses`: what olm honours (`store`, `background`, `include`,
/// `truncation`, `top_logprobs` only at the values that ask for nothing
/// olm lacks), and what it ignores on purpose (who the end user is,
/// labels, the billing tier, a cache key: olm caches prompts by itself).
pub const RESPONSES_FIELDS: Fields = Fields {
    honoured: &[
        "model",
        "input",
        "instructions",
        "max_output_tokens",
        "temperature",
        "top_p",
        "stream",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "reasoning",
        "store",
        "background",
        "include",
        "truncation",
        "top_logprobs",
        "previous_response_id",
    ],
    ignored: &[
        "user",
        "metadata",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
    ],
};

#[derive(Debug, Deserialize)]
struct ResponsesBody {
    model: String,
    input: Input,
    instructions: Option<String>,
    max_output_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    #[serde(default)]
    stream: bool,
    tools: Option<Vec<Map<String, Value>>>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
    text: Option<TextOptions>,
    reasoning: Option<Reasoning>,
    store: Option<bool>,
    background: Option<bool>,
    include: Option<Vec<String>>,
    truncation: Option<String>,
    top_logprobs: Option<u32>,
    previous_response_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Items(Vec<Map<String, Value>>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextOptions {
    format: Option<Format>,
    /// How terse to be: not something olm can honour but by refusing it.
    verbosity: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Format {
    Text {},
    JsonObject {},
    JsonSchema {
        schema: Value,
        #[serde(default, rename = "name")]
        _name: Option<String>,
        #[serde(default, rename = "strict")]
        _strict: Option<bool>,
        #[serde(default, rename = "description")]
        _description: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reasoning {
    effort: Option<String>,
    /// A summary of the reasoning: olm returns the reasoning itself
    /// (`reasoning_text`); asking for a summary is refused.
    summary: Option<String>,
    #[serde(rename = "generate_summary")]
    generate_summary: Option<String>,
}

/// A Responses request, decoded and checked.
#[derive(Debug)]
pub(super) struct ResponsesRequest {
    model: String,
    conversation: Conversation,
    generate: crate::engine::GenerateRequest,
    stream: bool,
    echo: Echo,
}

/// What the response repeats of the request.
#[derive(Debug, Clone)]
struct Echo {
    instructions: Option<String>,
    tools: Vec<ToolSpec>,
    tool_choice: Value,
    parallel: bool,
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_output_tokens: Option<i64>,
    format: Value,
}

/// `POST /v1/responses`.
pub async fn responses(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    responses_inner(&state, body)
        .await
        .unwrap_or_else(|error| error.into_response_for(Flavor::OpenAi))
}

/// The body of `POST /v1/responses`, decoded and range-checked.
pub(super) fn decode(body: Result<Bytes, BytesRejection>) -> Result<ResponsesRequest, ApiError> {
    let request: ResponsesBody = strict_body(body, &RESPONSES_FIELDS)?;
    if request.store == Some(true) {
        return Err(ApiError::bad_request(
            "store is not supported: this server keeps no responses (send store: false and the whole conversation as input)",
        ));
    }
    if request.previous_response_id.is_some() {
        return Err(ApiError::bad_request(
            "previous_response_id is not supported: this server keeps no responses; send the whole conversation as input",
        ));
    }
    if request.background == Some(true) {
        return Err(ApiError::bad_request(
            "background responses are not supported",
        ));
    }
    if request
        .include
        .as_ref()
        .is_some_and(|include| !include.is_empty())
    {
        return Err(ApiError::bad_request("include is not supported"));
    }
    if request
        .truncation
        .as_deref()
        .is_some_and(|truncation| truncation != "disabled")
    {
        return Err(ApiError::bad_request(
            "truncation is not supported: a conversation that does not fit the context is refused",
        ));
    }
    if request.top_logprobs.is_some_and(|count| count > 0) {
        return Err(ApiError::bad_request(
            "logprobs are not supported by this server",
        ));
    }
    let thinking = match &request.reasoning {
        None => None,
        Some(reasoning) => {
            if reasoning.summary.is_some() || reasoning.generate_summary.is_some() {
                return Err(ApiError::bad_request(
                    "reasoning summaries are not supported: the reasoning itself is returned",
                ));
            }
            match reasoning.effort.as_deref() {
                None => None,
                Some("none" | "minimal") => Some(false),
                Some("low" | "medium" | "high" | "xhigh") => Some(true),
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "reasoning.effort must be none, minimal, low, medium or high, got '{}'",
                        crate::store::names::escaped(other)
                    )))
                }
            }
        }
    };
    let (constraint, format) = match request.text {
        None => (None, json!({"type": "text"})),
        Some(TextOptions {
            verbosity: Some(_), ..
        }) => return Err(ApiError::bad_request("text.verbosity is not supported")),
        Some(TextOptions { format, .. }) => match format {
            None | Some(Format::Text {}) => (None, json!({"type": "text"})),
            Some(Format::JsonObject {}) => {
                (Some(Constraint::JsonObject), json!({"type": "json_object"}))
            }
            Some(Format::JsonSchema { schema, .. }) => (
                Some(Constraint::JsonSchema(schema.to_string())),
                json!({"type": "json_schema", "schema": schema}),
            ),
        },
    };
    let mut messages = Vec::new();
    if let Some(instructions) = &request.instructions {
        messages.push(Message::new("system", instructions.clone()));
    }
    match request.input {
        Input::Text(text) => messages.push(Message::new("user", text)),
        Input::Items(items) => {
            for item in items {
                push_item(&mut messages, item)?;
            }
        }
    }
    if !messages.iter().any(|message| message.role != "system") {
        return Err(ApiError::bad_request("input is empty"));
    }
    let tools = request
        .tools
        .unwrap_or_default()
        .into_iter()
        .map(tool)
        .collect::<Result<Vec<_>, _>>()?;
    let tool_choice = request.tool_choice.clone().unwrap_or_else(|| json!("auto"));
    let choice = tools::decode_choice(request.tool_choice, &tools)?;
    let parallel = request.parallel_tool_calls.unwrap_or(true);
    let generate = SamplingRequest {
        temperature: request.temperature,
        top_p: request.top_p,
        max_tokens: request.max_output_tokens,
        ..SamplingRequest::default()
    }
    .into_request(constraint)?;
    let echo = Echo {
        instructions: request.instructions,
        tools: tools.clone(),
        tool_choice,
        parallel,
        temperature: request.temperature,
        top_p: request.top_p,
        max_output_tokens: request.max_output_tokens,
        format,
    };
    Ok(ResponsesRequest {
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
        echo,
    })
}

/// `{"type": "function", "name", "description", "parameters", "strict"}`.
fn tool(mut tool: Map<String, Value>) -> Result<ToolSpec, ApiError> {
    match tool.remove("type") {
        Some(Value::String(kind)) if kind == "function" => {}
        other => {
            return Err(ApiError::bad_request(format!(
                "only function tools are supported, got type {}",
                other.unwrap_or(Value::Null)
            )))
        }
    }
    let mut tools = ToolSpec::parse_list(Value::Array(vec![Value::Object(tool)]))
        .map_err(ApiError::bad_request)?;
    tools
        .pop()
        .ok_or_else(|| ApiError::bad_request("a tool is empty"))
}

/// The keys of each input item's type. `id` and `status` are ignored on
/// purpose: they come back with the items of an earlier response, and
/// olm keeps no responses for an id to name.
const MESSAGE_ITEM_FIELDS: Fields = Fields {
    honoured: &["type", "role", "content"],
    ignored: &["id", "status"],
};
const CALL_ITEM_FIELDS: Fields = Fields {
    honoured: &["type", "call_id", "name", "arguments"],
    ignored: &["id", "status"],
};
const OUTPUT_ITEM_FIELDS: Fields = Fields {
    honoured: &["type", "call_id", "output"],
    ignored: &["id", "status"],
};
/// A reasoning item: its `content` (olm's `reasoning_text`), or else its
/// `summary`; `encrypted_content` only when empty (olm cannot read it).
const REASONING_ITEM_FIELDS: Fields = Fields {
    honoured: &["type", "content", "summary", "encrypted_content"],
    ignored: &["id", "status"],
};

/// A text part: `input_text`, `output_text` or `text`. An output text's
/// `annotations` and `logprobs` come back with an earlier answer and are
/// ignored on purpose (they describe it, they ask for nothing).
const TEXT_PART_FIELDS: Fields = Fields {
    honoured: &["type", "text"],
    ignored: &["annotations", "logprobs"],
};

/// The text of a text part, its keys checked.
fn part_text(part: &Value) -> Result<&str, ApiError> {
    let Value::Object(part) = part else {
        return Err(ApiError::bad_request("a content part must be an object"));
    };
    TEXT_PART_FIELDS.check(part, "a text part")?;
    part.get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("a text part needs its text"))
}

fn text_of(content: &Value) -> Result<String, ApiError> {
    match content {
        Value::String(text) => Ok(text.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text" | "text") => {
                        text.push_str(part_text(part)?);
                    }
                    Some("input_image" | "input_file") => {
                        return Err(ApiError::bad_request(
                            "image and file inputs are not supported: this model has no vision support (olm serves text models)",
                        ))
                    }
                    _ => return Err(ApiError::bad_request("unsupported content part in input")),
                }
            }
            Ok(text)
        }
        Value::Null => Ok(String::new()),
        _ => Err(ApiError::bad_request(
            "content must be text or a list of parts",
        )),
    }
}

/// One input item: a message, a function call the model made, its output,
/// or reasoning (kept with the assistant turn that follows).
fn push_item(messages: &mut Vec<Message>, item: Map<String, Value>) -> Result<(), ApiError> {
    let kind = item
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    let text = |key: &str| item.get(key).and_then(Value::as_str).map(str::to_owned);
    let fields = match kind {
        "message" => &MESSAGE_ITEM_FIELDS,
        "function_call" => &CALL_ITEM_FIELDS,
        "function_call_output" => &OUTPUT_ITEM_FIELDS,
        "reasoning" => &REASONING_ITEM_FIELDS,
        other => {
            return Err(ApiError::bad_request(format!(
                "input items of type '{}' are not supported",
                crate::store::names::escaped(other)
            )))
        }
    };
    fields.check(&item, &format!("a {kind} item"))?;
    match kind {
        "message" => {
            let role =
                text("role").ok_or_else(|| ApiError::bad_request("a message has no role"))?;
            let role = match role.as_str() {
                "developer" | "system" => "system",
                "user" => "user",
                "assistant" => "assistant",
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unsupported role '{}'",
                        crate::store::names::escaped(other)
                    )))
                }
            };
            let content = match item.get("content") {
                // Only an assistant's turn may go without (it called tools instead).
                None | Some(Value::Null) if role != "assistant" => {
                    return Err(ApiError::bad_request(format!(
                        "a {role} message needs its content"
                    )))
                }
                content => text_of(content.unwrap_or(&Value::Null))?,
            };
            match messages.last_mut() {
                // A reasoning item may have opened this assistant turn.
                Some(last)
                    if role == "assistant"
                        && last.role == "assistant"
                        && last.content.is_empty()
                        && last.tool_calls.is_empty() =>
                {
                    last.content = content;
                }
                _ => messages.push(Message::new(role, content)),
            }
        }
        "function_call" => {
            let name =
                text("name").ok_or_else(|| ApiError::bad_request("a function_call has no name"))?;
            let id = text("call_id")
                .ok_or_else(|| ApiError::bad_request("a function_call has no call_id"))?;
            let arguments =
                tools::arguments_value(item.get("arguments").cloned().unwrap_or(Value::Null));
            let call = ToolCall {
                id,
                name,
                arguments,
            };
            // The items of one model turn come in a row: its calls join
            // the assistant turn they follow.
            match messages.last_mut() {
                Some(last) if last.role == "assistant" => last.tool_calls.push(call),
                _ => {
                    let mut turn = Message::new("assistant", "");
                    turn.tool_calls.push(call);
                    messages.push(turn);
                }
            }
        }
        "function_call_output" => {
            let id = text("call_id")
                .ok_or_else(|| ApiError::bad_request("a function_call_output has no call_id"))?;
            let output = text_of(item.get("output").unwrap_or(&Value::Null))?;
            let mut result = Message::new("tool", output);
            result.name = messages
                .iter()
                .flat_map(|message| &message.tool_calls)
                .find(|call| call.id == id)
                .map(|call| call.name.clone());
            result.tool_call_id = Some(id);
            messages.push(result);
        }
        _ => {
            // Its text, kept with the assistant turn it led to.
            let mut turn = Message::new("assistant", "");
            turn.reasoning_content = Some(reasoning_text(&item)?);
            messages.push(turn);
        }
    }
    Ok(())
}

/// The text of a reasoning item: its `content` parts (what olm returns),
/// or else its `summary` parts (what OpenAI returns). Encrypted reasoning
/// is refused: olm cannot read it, and dropping it would drop the turn's
/// reasoning without a word.
fn reasoning_text(item: &Map<String, Value>) -> Result<String, ApiError> {
    match item.get("encrypted_content") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) if text.is_empty() => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "encrypted reasoning (encrypted_content) cannot be read by this server; send the reasoning's text or leave the item out",
            ))
        }
    }
    let parts = |key: &str| -> Result<Vec<Value>, ApiError> {
        match item.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(parts)) => Ok(parts.clone()),
            Some(_) => Err(ApiError::bad_request(format!(
                "a reasoning item's {key} must be a list of parts"
            ))),
        }
    };
    let content = parts("content")?;
    let chosen = if content.is_empty() {
        parts("summary")?
    } else {
        content
    };
    let mut reasoning = String::new();
    for part in &chosen {
        let part = part
            .as_object()
            .filter(|part| {
                matches!(
                    part.get("type").and_then(Value::as_str),
                    Some("reasoning_text" | "summary_text")
                )
            })
            .ok_or_else(|| {
                ApiError::bad_request("reasoning parts are reasoning_text or summary_text")
            })?;
        REASONING_PART_FIELDS.check(part, "a reasoning part")?;
        let text = part
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad_request("a reasoning part needs its text"))?;
        reasoning.push_str(text);
    }
    Ok(reasoning)
}

const REASONING_PART_FIELDS: Fields = Fields {
    honoured: &["type", "text"],
    ignored: &[],
};

async fn responses_inner(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let ResponsesRequest {
        model,
        conversation,
        generate,
        stream,
        echo,
    } = decode(body)?;
    let delivery = generation::Delivery::for_stream(stream);
    let (mut started, reading) =
        generation::start_conversation(state, &model, delivery, conversation, generate).await?;
    let shell = Shell {
        id: response_id("resp"),
        model,
        created: unix_seconds(),
        echo,
    };
    if stream {
        let writer = EventWriter {
            shell,
            answer: reading.answer(),
            sequence: 0,
            output: Vec::new(),
            open: None,
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
    let mut output = Vec::new();
    if !whole.reasoning.is_empty() {
        output.push(reasoning_item(
            &response_id("rs"),
            &whole.reasoning,
            "completed",
        ));
    }
    if !whole.content.is_empty() || whole.calls.is_empty() {
        output.push(message_item(
            &response_id("msg"),
            &whole.content,
            "completed",
        ));
    }
    for call in &whole.calls {
        output.push(call_item(call, "completed"));
    }
    let mut response = shell.response(output, Some(&stats));
    if let Some(error) = whole.error {
        response["tool_call_error"] = json!(error);
    }
    Ok(Json(response).into_response())
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
}

fn reasoning_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "reasoning", "id": id, "status": status, "summary": [],
        "content": [{"type": "reasoning_text", "text": text}]})
}

fn call_item(call: &ToolCall, status: &str) -> Value {
    json!({"type": "function_call", "id": format!("fc_{}", call.id), "call_id": call.id,
        "name": call.name, "arguments": call.arguments.to_string(), "status": status})
}

/// What every shape of one response shares.
struct Shell {
    id: String,
    model: String,
    created: u64,
    echo: Echo,
}

impl Shell {
    /// The response object: in progress without `stats`, finished with them.
    fn response(&self, output: Vec<Value>, stats: Option<&Stats>) -> Value {
        let (status, incomplete, usage) = match stats {
            None => ("in_progress", Value::Null, Value::Null),
            Some(stats) => {
                let cut = matches!(
                    stats.stop_reason,
                    StopReason::MaxTokens | StopReason::ContextFull
                );
                (
                    if cut { "incomplete" } else { "completed" },
                    if cut {
                        json!({"reason": "max_output_tokens"})
                    } else {
                        Value::Null
                    },
                    json!({
                        "input_tokens": stats.prompt_tokens,
                        "input_tokens_details": {"cached_tokens": stats.prompt_tokens.saturating_sub(stats.prompt_tokens_evaluated)},
                        "output_tokens": stats.generated_tokens,
                        "output_tokens_details": {"reasoning_tokens": 0},
                        "total_tokens": stats.prompt_tokens + stats.generated_tokens,
                    }),
                )
            }
        };
        let tools: Vec<Value> = self
            .echo
            .tools
            .iter()
            .map(|tool| {
                json!({"type": "function", "name": tool.name, "description": tool.description,
                "parameters": tool.parameters, "strict": false})
            })
            .collect();
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "error": null,
            "incomplete_details": incomplete,
            "instructions": self.echo.instructions,
            "max_output_tokens": self.echo.max_output_tokens,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": self.echo.parallel,
            "previous_response_id": null,
            "reasoning": {"effort": null, "summary": null},
            "store": false,
            "temperature": self.echo.temperature,
            "text": {"format": self.echo.format},
            "tool_choice": self.echo.tool_choice,
            "tools": tools,
            "top_p": self.echo.top_p,
            "truncation": "disabled",
            "usage": usage,
            "metadata": {},
        })
    }
}

/// Which output item is open in a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Message,
    Reasoning,
}

/// Named events: `response.created`, per output item `added`, its deltas
/// and `done`, then `response.completed`; each with a sequence number.
struct EventWriter {
    shell: Shell,
    answer: Answer,
    sequence: u64,
    /// Finished output items, for the final response.
    output: Vec<Value>,
    /// The item being streamed: its kind, id and text so far.
    open: Option<(Open, String, String)>,
}

impl EventWriter {
    fn event(&mut self, name: &str, mut data: Value) -> String {
        data["type"] = json!(name);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        format!("event: {name}\ndata: {data}\n\n")
    }

    fn close(&mut self) -> String {
        let Some((kind, id, text)) = self.open.take() else {
            return String::new();
        };
        let index = self.output.len();
        let mut out = String::new();
        let item = match kind {
            Open::Message => {
                out.push_str(&self.event("response.output_text.done", json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []})));
                let part =
                    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
                out.push_str(&self.event(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
                ));
                message_item(&id, &text, "completed")
            }
            Open::Reasoning => {
                out.push_str(&self.event(
                    "response.reasoning_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text}),
                ));
                reasoning_item(&id, &text, "completed")
            }
        };
        out.push_str(&self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        ));
        self.output.push(item);
        out
    }

    fn open(&mut self, kind: Open) -> String {
        if matches!(&self.open, Some((open, _, _)) if *open == kind) {
            return String::new();
        }
        let mut out = self.close();
        let index = self.output.len();
        let (id, item) = match kind {
            Open::Message => {
                let id = response_id("msg");
                let item = json!({"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []});
                (id, item)
            }
            Open::Reasoning => {
                let id = response_id("rs");
                let item = json!({"type": "reasoning", "id": id, "status": "in_progress", "summary": [], "content": []});
                (id, item)
            }
        };
        out.push_str(&self.event(
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        ));
        if kind == Open::Message {
            let part =
                json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []});
            out.push_str(&self.event(
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
            ));
        }
        self.open = Some((kind, id, String::new()));
        out
    }

    fn pieces(&mut self, pieces: Vec<Piece>) -> String {
        let mut out = String::new();
        for piece in pieces {
            match piece {
                Piece::Content(text) | Piece::Reasoning(text) if text.is_empty() => {}
                Piece::Content(text) => out.push_str(&self.delta(Open::Message, text)),
                Piece::Reasoning(text) => out.push_str(&self.delta(Open::Reasoning, text)),
                Piece::Call(call) => {
                    out.push_str(&self.close());
                    let index = self.output.len();
                    let id = format!("fc_{}", call.id);
                    let added = json!({"type": "function_call", "id": id, "call_id": call.id, "name": call.name, "arguments": "", "status": "in_progress"});
                    out.push_str(&self.event(
                        "response.output_item.added",
                        json!({"output_index": index, "item": added}),
                    ));
                    let arguments = call.arguments.to_string();
                    out.push_str(&self.event(
                        "response.function_call_arguments.delta",
                        json!({"item_id": id, "output_index": index, "delta": arguments}),
                    ));
                    out.push_str(&self.event("response.function_call_arguments.done", json!({"item_id": id, "output_index": index, "name": call.name, "arguments": arguments})));
                    let item = call_item(&call, "completed");
                    out.push_str(&self.event(
                        "response.output_item.done",
                        json!({"output_index": index, "item": item}),
                    ));
                    self.output.push(item);
                }
            }
        }
        out
    }

    fn delta(&mut self, kind: Open, text: String) -> String {
        let mut out = self.open(kind);
        let index = self.output.len();
        let Some((_, id, so_far)) = &mut self.open else {
            return out;
        };
        so_far.push_str(&text);
        let id = id.clone();
        let name = match kind {
            Open::Message => "response.output_text.delta",
            Open::Reasoning => "response.reasoning_text.delta",
        };
        let mut data =
            json!({"item_id": id, "output_index": index, "content_index": 0, "delta": text});
        if kind == Open::Message {
            data["logprobs"] = json!([]);
        }
        out.push_str(&self.event(name, data));
        out
    }
}

impl StreamFormat for EventWriter {
    fn begin(&mut self) -> String {
        let response = self.shell.response(Vec::new(), None);
        let mut out = self.event("response.created", json!({"response": response}));
        let response = self.shell.response(Vec::new(), None);
        out.push_str(&self.event("response.in_progress", json!({"response": response})));
        out
    }

    fn text(&mut self, _choice: usize, text: &str) -> String {
        let pieces = self.answer.push(text);
        self.pieces(pieces)
    }

    fn done(&mut self, _choice: usize, stats: &Stats) -> String {
        let (pieces, error) = self.answer.finish();
        let mut out = self.pieces(pieces);
        if self.output.is_empty() && self.open.is_none() {
            out.push_str(&self.open(Open::Message));
        }
        out.push_str(&self.close());
        let mut response = self.shell.response(self.output.clone(), Some(stats));
        if let Some(error) = error {
            response["tool_call_error"] = json!(error);
        }
        let name = if response["status"] == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        out.push_str(&self.event(name, json!({"response": response})));
        out
    }

    fn failed(&mut self, error: &ApiError) -> String {
        let body = error.body(Flavor::OpenAi);
        self.event("error", json!({"code": error.status.as_u16().to_string(), "message": body["error"]["message"], "param": null}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(fields: Value) -> Result<ResponsesRequest, ApiError> {
        let mut body = json!({"model": "m", "input": "hi"});
        for (key, value) in fields.as_object().expect("an object") {
            body[key] = value.clone();
        }
        decode(Ok(Bytes::from(body.to_string())))
    }

    #[test]
    fn a_conversation_with_function_calls_decodes() {
        let decoded = request(json!({
            "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Weather in Oslo?"}]},
                {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            ],
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
            "tool_choice": "required",
            "parallel_tool_calls": false,
            "reasoning": {"effort": "low"},
            "store": false,
            "user": "u",
        }))
        .expect("valid");
        let messages = &decoded.conversation.messages;
        assert_eq!(messages[0], Message::new("system", "Be brief."));
        assert_eq!(messages[2].tool_calls[0].arguments, json!({"city": "Oslo"}));
        assert_eq!(messages[3].name.as_deref(), Some("get_weather"));
        assert_eq!(decoded.conversation.thinking, Some(true));
        assert!(!decoded.conversation.parallel);
    }

    #[test]
    fn what_cannot_be_honoured_is_refused() {
        for (fields, says) in [
            (json!({"store": true}), "store"),
            (
                json!({"previous_response_id": "resp_1"}),
                "previous_response_id",
            ),
            (json!({"background": true}), "background"),
            (
                json!({"include": ["reasoning.encrypted_content"]}),
                "include",
            ),
            (json!({"truncation": "auto"}), "truncation"),
            (json!({"reasoning": {"summary": "auto"}}), "summaries"),
            (json!({"tools": [{"type": "web_search"}]}), "function tools"),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}),
                "vision",
            ),
            (json!({"prompt": {"id": "p"}}), "'prompt'"),
            (json!({"text": {"verbosity": "low"}}), "verbosity"),
            (
                json!({"input": [{"role": "user", "content": null}]}),
                "needs its content",
            ),
            (json!({"input": [{"role": "system"}]}), "needs its content"),
        ] {
            let error = request(fields.clone()).expect_err(&fields.to_string());
            assert!(error.message.contains(says), "{fields}: {}", error.message);
        }
    }
}
