//! Tool calling and reasoning output: which convention a model's chat
//! template follows, the grammar that makes its calls valid, and the parser
//! that turns its output text back into content, reasoning and calls.
//!
//! Owns: the tool-call conventions of the model families people run
//! ([`ToolFormat`], detected from the template text, never the file name),
//! olm's fallback prompt for templates that know no tools ([`prompt`]), the
//! GBNF grammar for `required`, named and (lazily, behind trigger words)
//! `auto` calls ([`grammar`]), the streaming output parser ([`parse`]) and
//! the check of arguments against a tool's schema ([`validate`]).
//!
//! Pure but for [`grammar`], which asks llama.cpp's converter for each
//! schema's rules. Must not touch: the decode loop (the parser reads the
//! text the engine already emits), HTTP, terminals.

mod format;
pub mod grammar;
mod parse;
pub mod prompt;
mod validate;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use format::ToolFormat;
pub use grammar::{Grammar, Trigger};
pub use parse::{OutputParser, Parsed, Piece, ReasoningMode};
pub use validate::validate;

/// Most tools one request may offer, and the longest tool name.
pub const MAX_TOOLS: usize = 128;
pub const MAX_TOOL_NAME_BYTES: usize = 64;

/// A function the model may call, as both APIs describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON schema of the arguments (an object schema).
    pub parameters: Value,
}

impl ToolSpec {
    /// The OpenAI shape chat templates read: `{"type": "function", "function": {...}}`.
    pub fn template_value(&self) -> Value {
        let mut function = serde_json::Map::new();
        function.insert("name".into(), Value::String(self.name.clone()));
        if let Some(description) = &self.description {
            function.insert("description".into(), Value::String(description.clone()));
        }
        function.insert("parameters".into(), self.parameters.clone());
        serde_json::json!({"type": "function", "function": function})
    }

    /// Tool definitions as OpenAI and Ollama write them,
    /// `[{"type": "function", "function": {"name", "description", "parameters", "strict"}}]`
    /// (a bare `{"name", ...}` function object is taken too), or why not.
    pub fn parse_list(tools: Value) -> Result<Vec<ToolSpec>, String> {
        let Value::Array(tools) = tools else {
            return Err("tools must be a list".into());
        };
        if tools.len() > MAX_TOOLS {
            return Err(format!("at most {MAX_TOOLS} tools, got {}", tools.len()));
        }
        tools.into_iter().map(Self::parse_one).collect()
    }

    fn parse_one(tool: Value) -> Result<ToolSpec, String> {
        let Value::Object(mut tool) = tool else {
            return Err("each tool must be an object".into());
        };
        let mut function = if tool.contains_key("function") || tool.contains_key("type") {
            match tool.remove("type") {
                None => {}
                Some(Value::String(kind)) if kind == "function" => {}
                Some(other) => {
                    return Err(format!(
                        "only function tools are supported, got type {other}"
                    ))
                }
            }
            if let Some(key) = tool.keys().find(|key| *key != "function") {
                return Err(format!("unsupported field '{key}' in a tool"));
            }
            match tool.remove("function") {
                Some(Value::Object(function)) => function,
                _ => return Err("a tool has no function object".into()),
            }
        } else {
            tool
        };
        let name = match function.remove("name") {
            Some(Value::String(name)) => name,
            _ => return Err("a tool function has no name".into()),
        };
        Self::check_name(&name)?;
        let description = match function.remove("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text),
            Some(_) => return Err(format!("the description of tool '{name}' must be text")),
        };
        let parameters = match function.remove("parameters") {
            None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
            Some(schema @ Value::Object(_)) => schema,
            Some(_) => {
                return Err(format!(
                    "the parameters of tool '{name}' must be a JSON schema object"
                ))
            }
        };
        // `strict`: calls always follow the schema (a grammar), so both
        // values are honoured.
        match function.remove("strict") {
            None | Some(Value::Null | Value::Bool(_)) => {}
            Some(_) => return Err(format!("strict of tool '{name}' must be true or false")),
        }
        if let Some(key) = function.keys().next() {
            return Err(format!("unsupported field '{key}' in tool '{name}'"));
        }
        Ok(ToolSpec {
            name,
            description,
            parameters,
        })
    }

    /// A name a template and a grammar can carry: letters, digits, `_`,
    /// `-` and `.`, at most [`MAX_TOOL_NAME_BYTES`] (OpenAI's own rule).
    pub fn check_name(name: &str) -> Result<(), String> {
        let valid = !name.is_empty()
            && name.len() <= MAX_TOOL_NAME_BYTES
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'));
        if valid {
            Ok(())
        } else {
            Err(format!(
                "tool names are 1 to {MAX_TOOL_NAME_BYTES} letters, digits, '_', '-' or '.', got {:?}",
                name.chars().take(80).collect::<String>()
            ))
        }
    }
}

/// Which calls the model must make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// Prose or calls, as the model decides (calls constrained once begun).
    Auto,
    /// At least one call, of any tool.
    Required,
    /// A call of this tool.
    Function(String),
}

/// A call the model made: its arguments are a JSON object that matched the
/// tool's schema (see [`validate`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "WireCall", into = "WireCall")]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

/// [`ToolCall`] in the shape chat templates and OpenAI messages use:
/// `{"id", "type": "function", "function": {"name", "arguments"}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WireCall {
    #[serde(default)]
    id: String,
    #[serde(rename = "type", default = "function_type")]
    kind: String,
    function: WireFunction,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

fn function_type() -> String {
    "function".into()
}

impl From<WireCall> for ToolCall {
    fn from(wire: WireCall) -> Self {
        Self {
            id: wire.id,
            name: wire.function.name,
            arguments: wire.function.arguments,
        }
    }
}

impl From<ToolCall> for WireCall {
    fn from(call: ToolCall) -> Self {
        Self {
            id: call.id,
            kind: function_type(),
            function: WireFunction {
                name: call.name,
                arguments: call.arguments,
            },
        }
    }
}

/// The constraint for a request with tools: which convention, which tools,
/// which calls. Becomes a grammar in the model's process ([`grammar`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolConstraint {
    pub format: ToolFormat,
    pub tools: Vec<ToolSpec>,
    pub choice: ToolChoice,
    /// Several calls in one answer.
    pub parallel: bool,
    /// How the answer may begin with reasoning before the calls.
    pub reasoning: ReasoningMode,
}

/// What a chat template does with tools and reasoning, found by rendering
/// it with probe conversations once per loaded model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatTraits {
    pub format: ToolFormat,
    /// The template writes the tool list into the prompt itself; otherwise
    /// olm's fallback prompt does ([`prompt`]).
    pub renders_tools: bool,
    /// The template renders assistant calls and tool results itself.
    pub renders_tool_turns: bool,
    /// The template knows `<think>` tags: answers may begin with reasoning.
    pub thinking: bool,
    /// The template reads `enable_thinking` (Qwen3's switch).
    pub thinking_switch: bool,
    /// The prompt ends inside an open `<think>` (DeepSeek-R1 distills): the
    /// answer starts with reasoning and no opening tag.
    pub opens_thinking: bool,
}

impl Default for ChatTraits {
    fn default() -> Self {
        Self {
            format: ToolFormat::Generic,
            renders_tools: false,
            renders_tool_turns: false,
            thinking: false,
            thinking_switch: false,
            opens_thinking: false,
        }
    }
}

impl ChatTraits {
    /// How to read an answer's reasoning when `enable_thinking` is as given.
    pub fn reasoning(&self, enable_thinking: Option<bool>) -> ReasoningMode {
        if !self.thinking {
            return ReasoningMode::Off;
        }
        ReasoningMode::Tags {
            starts_inside: self.opens_thinking && enable_thinking != Some(false),
        }
    }

    /// Whether a request may turn thinking on or off for this model: a
    /// template switch, or a prompt that opens the think block (which olm
    /// closes at once to turn it off).
    pub fn can_switch_thinking(&self) -> bool {
        self.thinking_switch || self.opens_thinking
    }
}

/// A tool call id: 9 letters and digits, unique within this process (the
/// shape Mistral's templates insist on, which every client accepts).
pub fn new_call_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    // Counter in the low digits (unique), the clock above it (unique across runs).
    let mut value = seconds.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (count << 20) ^ count;
    let mut id = String::with_capacity(9);
    for index in 0..9 {
        let digit = if index < 4 {
            (count >> (6 * index)) % 62
        } else {
            let digit = value % 62;
            value /= 62;
            digit
        };
        id.push(ALPHABET[digit as usize] as char);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids_are_nine_alphanumerics_and_unique() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| new_call_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids
            .iter()
            .all(|id| id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric())));
    }

    #[test]
    fn calls_cross_in_the_template_shape() {
        let call = ToolCall {
            id: "abc123def".into(),
            name: "get_weather".into(),
            arguments: serde_json::json!({"city": "Paris"}),
        };
        let value = serde_json::to_value(&call).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"id": "abc123def", "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}}})
        );
        assert_eq!(serde_json::from_value::<ToolCall>(value).unwrap(), call);
    }

    #[test]
    fn tool_names_are_checked() {
        assert!(ToolSpec::check_name("get_weather").is_ok());
        assert!(ToolSpec::check_name("a.b-c_1").is_ok());
        for bad in ["", "has space", "quote\"", &"x".repeat(65), "new\nline"] {
            assert!(ToolSpec::check_name(bad).is_err(), "{bad:?}");
        }
    }
}
