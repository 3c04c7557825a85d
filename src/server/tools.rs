//! Tool calling and reasoning, shared by every chat API the server speaks
//! (OpenAI chat and responses, Ollama chat, Anthropic messages).
//!
//! Owns: decoding tool definitions and `tool_choice`, the conversation a
//! request asks for ([`Conversation`]), turning it into a prompt and a
//! constraint once the model's template is known ([`Conversation::plan`]),
//! and reading each answer as it streams ([`Answer`]): content, reasoning
//! and calls with ids given here. Must not touch: either API's JSON shapes
//! beyond the tool definitions they share.

use serde_json::{Map, Value};

use super::error::ApiError;
use super::request::Fields;
use crate::engine::tools::{
    new_call_id, OutputParser, Piece, ReasoningMode, ToolCall, ToolChoice, ToolConstraint,
    ToolFormat, ToolSpec,
};
use crate::engine::{
    ChatOptions, ChatTraits, Constraint, GenerateRequest, Message, Prompt, Stats, StopReason,
};

/// What `tool_choice` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// No calls: the tools are not even shown to the model.
    None,
    Auto,
    Required,
    Function(String),
}

/// Decode tool definitions in the shape both APIs share:
/// `[{"type": "function", "function": {"name", "description", "parameters"}}]`.
pub fn decode_tools(tools: Option<Value>) -> Result<Vec<ToolSpec>, ApiError> {
    match tools {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(tools) => ToolSpec::parse_list(tools).map_err(ApiError::bad_request),
    }
}

/// The keys of a `tool_choice` object in any of the APIs: OpenAI's
/// `{"type": "function", "function": {"name"}}` and the flat
/// `{"type": "function" | "tool", "name"}` of the Responses and Messages
/// APIs (Anthropic's `disable_parallel_tool_use` is taken out by its route).
const CHOICE_FIELDS: Fields = Fields {
    honoured: &["type", "function", "name"],
    ignored: &[],
};

const CHOICE_FUNCTION_FIELDS: Fields = Fields {
    honoured: &["name"],
    ignored: &[],
};

/// Decode `tool_choice`: `"auto"`, `"none"`, `"required"` (also Anthropic's
/// `"any"`), or a named function in OpenAI's
/// `{"type": "function", "function": {"name"}}` or flatter shapes.
pub fn decode_choice(choice: Option<Value>, tools: &[ToolSpec]) -> Result<Choice, ApiError> {
    let choice = match choice {
        None | Some(Value::Null) => {
            return Ok(if tools.is_empty() {
                Choice::None
            } else {
                Choice::Auto
            })
        }
        Some(Value::String(name)) => match name.as_str() {
            "auto" => Choice::Auto,
            "none" => Choice::None,
            "required" | "any" => Choice::Required,
            other => {
                return Err(ApiError::bad_request(format!(
                    "tool_choice must be auto, none, required or a function, got '{other}'"
                )))
            }
        },
        Some(Value::Object(object)) => {
            CHOICE_FIELDS.check(&object, "tool_choice")?;
            if let Some(Value::Object(function)) = object.get("function") {
                CHOICE_FUNCTION_FIELDS.check(function, "tool_choice.function")?;
            }
            let name = object
                .get("function")
                .and_then(|function| function.get("name"))
                .or_else(|| object.get("name"))
                .and_then(Value::as_str);
            match (object.get("type").and_then(Value::as_str), name) {
                (Some("function" | "tool"), Some(name)) => Choice::Function(name.to_owned()),
                (Some("auto"), _) => Choice::Auto,
                (Some("none"), _) => Choice::None,
                (Some("any" | "required"), _) => Choice::Required,
                _ => return Err(ApiError::bad_request("tool_choice names no function")),
            }
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "tool_choice must be a string or an object",
            ))
        }
    };
    match &choice {
        Choice::Function(name) if !tools.iter().any(|tool| &tool.name == name) => {
            Err(ApiError::bad_request(format!(
                "tool_choice names '{name}', which is not among the tools"
            )))
        }
        Choice::Auto | Choice::Required | Choice::Function(_) if tools.is_empty() => Err(
            ApiError::bad_request("tool_choice asks for calls but no tools are given"),
        ),
        _ => Ok(choice),
    }
}

/// Arguments as a client sends them back: OpenAI's JSON text or Ollama's object.
pub fn arguments_value(arguments: Value) -> Value {
    match arguments {
        Value::String(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
        Value::Null => Value::Object(Map::new()),
        other => other,
    }
}

/// A chat request as both APIs ask for it, before the model is known.
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    pub choice: Option<Choice>,
    /// Several calls in one answer (OpenAI's `parallel_tool_calls`, default true).
    pub parallel: bool,
    /// Thinking asked on or off (Ollama's `think`, OpenAI's `reasoning_effort`).
    pub thinking: Option<bool>,
    /// Template variables (`chat_template_kwargs`).
    pub variables: Map<String, Value>,
}

/// How to read a request's answers.
#[derive(Debug, Clone)]
pub struct Reading {
    pub reasoning: ReasoningMode,
    pub tools: Option<(ToolFormat, Vec<ToolSpec>)>,
}

impl Reading {
    /// Raw completions: all text is content.
    pub fn plain() -> Self {
        Self {
            reasoning: ReasoningMode::Off,
            tools: None,
        }
    }

    pub fn answer(&self) -> Answer {
        Answer {
            parser: OutputParser::new(self.reasoning, self.tools.clone()),
            calls: 0,
        }
    }
}

impl Conversation {
    /// The prompt, the request with its tool constraint, and how to read
    /// the answers, for a model whose template does `traits`.
    pub fn plan(
        self,
        traits: &ChatTraits,
        mut request: GenerateRequest,
    ) -> Result<(Prompt, GenerateRequest, Reading), ApiError> {
        let choice = self.choice.unwrap_or(Choice::None);
        if let Some(thinking) = self.thinking {
            check_thinking(traits, thinking)?;
        }
        let reasoning = traits.reasoning(self.thinking);
        let tool_choice = match &choice {
            _ if self.tools.is_empty() => None,
            Choice::None => None,
            Choice::Auto => Some(ToolChoice::Auto),
            Choice::Required => Some(ToolChoice::Required),
            Choice::Function(name) => Some(ToolChoice::Function(name.clone())),
        };
        let offered = tool_choice.is_some();
        let has_turns = self
            .messages
            .iter()
            .any(|message| !message.tool_calls.is_empty() || message.role == "tool");
        let tools = if let Some(choice) = tool_choice {
            if request.constraint.is_some() {
                return Err(ApiError::bad_request(
                    "a response format cannot be combined with tool calls; use tool_choice none or drop the format",
                ));
            }
            request.constraint = Some(Constraint::Tools(Box::new(ToolConstraint {
                format: traits.format,
                tools: self.tools.clone(),
                choice,
                parallel: self.parallel,
                reasoning,
            })));
            Some((traits.format, self.tools.clone()))
        } else {
            None
        };
        let plain = !offered
            && !has_turns
            && self.thinking.is_none()
            && self.variables.is_empty()
            && self
                .messages
                .iter()
                .all(|message| message.reasoning_content.is_none());
        let prompt = if plain {
            Prompt::Chat(self.messages.clone())
        } else {
            Prompt::ChatWith(
                self.messages.clone(),
                Box::new(ChatOptions {
                    tools: if offered {
                        self.tools.clone()
                    } else {
                        Vec::new()
                    },
                    enable_thinking: self.thinking,
                    variables: self.variables.clone(),
                }),
            )
        };
        Ok((prompt, request, Reading { reasoning, tools }))
    }
}

/// Thinking can be asked for only where the template can give it.
fn check_thinking(traits: &ChatTraits, thinking: bool) -> Result<(), ApiError> {
    match (thinking, traits.thinking, traits.can_switch_thinking()) {
        (true, false, _) => Err(ApiError::bad_request(
            "this model does not support thinking (its chat template has no reasoning)",
        )),
        (false, true, false) => Err(ApiError::bad_request(
            "this model always thinks: its chat template has no switch to turn thinking off",
        )),
        _ => Ok(()),
    }
}

/// One answer as it streams: content, reasoning and calls, each call given
/// an id unless the model wrote one.
#[derive(Debug)]
pub struct Answer {
    parser: OutputParser,
    calls: usize,
}

impl Answer {
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let pieces = self.parser.push(text);
        self.number(pieces)
    }

    /// The answer ended: what was held, and why text that began a call is content.
    pub fn finish(&mut self) -> (Vec<Piece>, Option<String>) {
        let (pieces, error) = self.parser.finish();
        (self.number(pieces), error)
    }

    /// Calls so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    fn number(&mut self, pieces: Vec<Piece>) -> Vec<Piece> {
        pieces
            .into_iter()
            .map(|piece| match piece {
                Piece::Call(mut call) => {
                    if call.id.is_empty() {
                        call.id = new_call_id();
                    }
                    self.calls += 1;
                    Piece::Call(call)
                }
                other => other,
            })
            .collect()
    }
}

/// An answer read whole.
#[derive(Debug, Default)]
pub struct Whole {
    pub content: String,
    pub reasoning: String,
    pub calls: Vec<ToolCall>,
    pub error: Option<String>,
}

impl Whole {
    pub fn read(reading: &Reading, text: &str) -> Self {
        let mut answer = reading.answer();
        let mut whole = Self::default();
        whole.add(answer.push(text));
        let (pieces, error) = answer.finish();
        whole.add(pieces);
        whole.error = error;
        if !whole.calls.is_empty() && whole.content.trim().is_empty() {
            whole.content.clear();
        }
        whole
    }

    fn add(&mut self, pieces: Vec<Piece>) {
        for piece in pieces {
            match piece {
                Piece::Content(text) => self.content.push_str(&text),
                Piece::Reasoning(text) => self.reasoning.push_str(&text),
                Piece::Call(call) => self.calls.push(call),
            }
        }
    }
}

/// OpenAI's and Ollama's name for why an answer ended: `tool_calls` when
/// it made calls and ended on its own.
pub fn finish_reason(stats: &Stats, called: bool) -> &'static str {
    if called
        && matches!(
            stats.stop_reason,
            StopReason::Eog | StopReason::StopSequence
        )
    {
        "tool_calls"
    } else {
        super::request::finish_reason(stats.stop_reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
    }

    #[test]
    fn tools_and_choices_decode() {
        let tools = decode_tools(Some(weather())).unwrap();
        assert_eq!(tools[0].name, "get_weather");
        assert_eq!(decode_choice(None, &tools).unwrap(), Choice::Auto);
        assert_eq!(decode_choice(None, &[]).unwrap(), Choice::None);
        assert_eq!(
            decode_choice(Some(json!("required")), &tools).unwrap(),
            Choice::Required
        );
        assert_eq!(
            decode_choice(
                Some(json!({"type": "function", "function": {"name": "get_weather"}})),
                &tools
            )
            .unwrap(),
            Choice::Function("get_weather".into())
        );
        for bad in [
            json!("sometimes"),
            json!({"type": "function", "function": {"name": "nope"}}),
            json!(3),
        ] {
            assert!(decode_choice(Some(bad.clone()), &tools).is_err(), "{bad}");
        }
        assert!(decode_choice(Some(json!("required")), &[]).is_err());
    }

    #[test]
    fn bad_tools_are_refused() {
        for bad in [
            json!({"type": "function"}),
            json!([{"type": "retrieval"}]),
            json!([{"type": "function", "function": {"description": "no name"}}]),
            json!([{"type": "function", "function": {"name": "a b"}}]),
            json!([{"type": "function", "function": {"name": "f", "parameters": "object"}}]),
            json!([{"type": "function", "function": {"name": "f", "exotic": 1}}]),
        ] {
            assert!(decode_tools(Some(bad.clone())).is_err(), "{bad}");
        }
    }

    fn traits(thinking: bool, switch: bool) -> ChatTraits {
        ChatTraits {
            format: ToolFormat::Hermes,
            renders_tools: true,
            renders_tool_turns: true,
            thinking,
            thinking_switch: switch,
            opens_thinking: false,
        }
    }

    #[test]
    fn plans_carry_tools_and_thinking() {
        let conversation = Conversation {
            messages: vec![Message::new("user", "hi")],
            tools: decode_tools(Some(weather())).unwrap(),
            choice: Some(Choice::Required),
            parallel: true,
            ..Conversation::default()
        };
        let (prompt, request, reading) = conversation
            .clone()
            .plan(&traits(false, false), GenerateRequest::default())
            .unwrap();
        assert!(matches!(prompt, Prompt::ChatWith(_, ref options) if options.tools.len() == 1));
        assert!(matches!(request.constraint, Some(Constraint::Tools(_))));
        assert!(reading.tools.is_some());

        let none = Conversation {
            choice: Some(Choice::None),
            ..conversation.clone()
        };
        let (prompt, request, reading) = none
            .clone()
            .plan(&traits(false, false), GenerateRequest::default())
            .unwrap();
        assert!(matches!(prompt, Prompt::Chat(_)));
        assert!(request.constraint.is_none() && reading.tools.is_none());

        let with_format = GenerateRequest {
            constraint: Some(Constraint::JsonObject),
            ..GenerateRequest::default()
        };
        assert!(conversation
            .plan(&traits(false, false), with_format)
            .is_err());

        let think = Conversation {
            thinking: Some(true),
            ..none.clone()
        };
        assert!(think
            .clone()
            .plan(&traits(false, false), GenerateRequest::default())
            .is_err());
        assert!(think
            .plan(&traits(true, true), GenerateRequest::default())
            .is_ok());
        let no_think = Conversation {
            thinking: Some(false),
            ..none
        };
        assert!(no_think
            .clone()
            .plan(&traits(true, false), GenerateRequest::default())
            .is_err());
        assert!(no_think
            .plan(&traits(false, false), GenerateRequest::default())
            .is_ok());
    }

    #[test]
    fn calls_get_ids_and_end_with_tool_calls() {
        let reading = Reading {
            reasoning: ReasoningMode::Off,
            tools: Some((ToolFormat::Hermes, decode_tools(Some(weather())).unwrap())),
        };
        let whole = Whole::read(
            &reading,
            "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}</tool_call><tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}</tool_call>",
        );
        assert_eq!(whole.calls.len(), 2);
        assert_ne!(whole.calls[0].id, whole.calls[1].id);
        assert_eq!(whole.calls[0].id.len(), 9);
        let stats = Stats {
            stop_reason: StopReason::Eog,
            prompt_tokens: 1,
            prompt_tokens_evaluated: 1,
            generated_tokens: 1,
            prompt_time: Default::default(),
            time_to_first_token: Default::default(),
            generation_time: Default::default(),
            decoded_tokens: 0,
            drafted_tokens: 0,
            accepted_tokens: 0,
        };
        assert_eq!(finish_reason(&stats, true), "tool_calls");
        assert_eq!(finish_reason(&stats, false), "stop");
    }
}
