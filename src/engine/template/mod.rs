//! Chat templates: turning a conversation into the prompt text a model was
//! trained on.
//!
//! The model's own Jinja template is rendered with minijinja (Python-style
//! string methods through `pycompat`), which is what llama.cpp's own tools do
//! by default and what the model's authors wrote; llama.cpp's built-in
//! template matcher is the fallback for templates minijinja cannot parse or
//! render, and the way to use a named built-in (`--chat-template chatml`).
//!
//! A template comes from a file the user downloaded, so a Jinja template
//! runs in the template process ([`isolation`]): bounded in memory (every
//! intermediate value, not only the output), in time, and stopped by the
//! caller's cancel flag. The built-in matcher is llama.cpp's own C++ code
//! with fixed formats and runs in-process.

mod isolation;
mod jinja;

use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use serde::Serialize;
use serde_json::{Map, Value};

pub use isolation::{prestart, serve as serve_template_process};

use super::tools::{prompt, ChatTraits, ReasoningMode, ToolCall, ToolFormat, ToolSpec};
use isolation::IsolatedTemplate;
use jinja::{JinjaTemplate, RenderInput};

/// One message of a conversation, with the fields chat templates read for
/// tool calling (Hugging Face's names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
    /// An assistant's calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// A tool result: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// A tool result: the tool's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An assistant's reasoning, for templates that show or strip it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Phi-4 mini reads the tool list from its system message's `tools`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<String>,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
            reasoning_content: None,
            tools: None,
        }
    }

    /// The bytes of text this message brings to a prompt.
    pub fn text_len(&self) -> usize {
        self.content.len()
            + self
                .tool_calls
                .iter()
                .map(|call| call.name.len() + call.arguments.to_string().len())
                .sum::<usize>()
            + self.reasoning_content.as_ref().map_or(0, String::len)
            + self.tools.as_ref().map_or(0, String::len)
    }
}

/// What a conversation is rendered with besides its messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChatOptions {
    /// Tools the model may call (the template's `tools`, or olm's fallback prompt).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec>,
    /// The template's thinking switch (`enable_thinking`); `None` leaves
    /// the template's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_thinking: Option<bool>,
    /// More template variables (`chat_template_kwargs`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub variables: Map<String, Value>,
}

impl ChatOptions {
    /// The bytes of text these options bring to a prompt.
    pub fn text_len(&self) -> usize {
        self.tools
            .iter()
            .map(|tool| tool.template_value().to_string().len())
            .sum::<usize>()
            + Value::Object(self.variables.clone()).to_string().len()
    }
}

/// Variables a request may not set through `chat_template_kwargs`: olm
/// passes them itself.
const RESERVED_VARIABLES: &[&str] = &["messages", "tools", "bos_token", "eos_token"];

/// Why a template could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("the chat template cannot be rendered: {0}")]
    Render(String),
    #[error("the rendered prompt exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("rendering the chat template went over its limits: {0}")]
    Exhausted(String),
    #[error("rendering the chat template took longer than {seconds} s")]
    TimedOut { seconds: u64 },
    #[error("rendering the chat template was interrupted")]
    Cancelled,
    #[error("the chat template could not be rendered: {0}")]
    Process(String),
    #[error("llama.cpp does not know the chat template {0}")]
    UnknownBuiltin(String),
}

impl TemplateError {
    /// Whether the template used up a bound (memory, time, size) rather than
    /// failing on its own terms; the built-in matcher is no help then.
    fn is_exhaustion(&self) -> bool {
        matches!(
            self,
            TemplateError::TooLarge { .. }
                | TemplateError::Exhausted(_)
                | TemplateError::TimedOut { .. }
                | TemplateError::Cancelled
        )
    }
}

/// Where the template text comes from.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum TemplateSource {
    /// Jinja source (the model's own, or a file the user gave).
    Jinja(String),
    /// A llama.cpp built-in template name such as `chatml` or `llama3`.
    Builtin(String),
}

/// A chat template ready to render conversations.
pub struct ChatTemplate {
    jinja: Option<IsolatedTemplate>,
    llama: Option<LlamaChatTemplate>,
    bos_token: String,
    eos_token: String,
    /// The Jinja text, or the built-in template's name.
    source: String,
    /// What the template does with tools and reasoning, probed on first use.
    traits: OnceLock<ChatTraits>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ChatTemplate")
            .field("jinja", &self.jinja.is_some())
            .field("llama", &self.llama)
            .finish()
    }
}

impl ChatTemplate {
    /// Prepare `source` for `model`. Jinja that does not even parse falls back
    /// to llama.cpp's matcher on the same text.
    pub(super) fn new(model: &LlamaModel, source: TemplateSource) -> Result<Self, TemplateError> {
        let (bos_token, eos_token) = special_token_texts(model);
        let template = match source {
            TemplateSource::Jinja(text) => Self {
                llama: LlamaChatTemplate::new(&text).ok(),
                jinja: JinjaTemplate::parse(&text)
                    .ok()
                    .map(|_| IsolatedTemplate::new(text.clone())),
                bos_token,
                eos_token,
                source: text,
                traits: OnceLock::new(),
            },
            TemplateSource::Builtin(name) => {
                let llama = LlamaChatTemplate::new(&name)
                    .map_err(|_| TemplateError::UnknownBuiltin(name.clone()))?;
                Self {
                    jinja: None,
                    llama: Some(llama),
                    bos_token,
                    eos_token,
                    source: name,
                    traits: OnceLock::new(),
                }
            }
        };
        Ok(template)
    }

    /// The BOS token's text, which a rendered prompt may start with.
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// Render `messages`, ending with the opening of the assistant's turn.
    /// A Jinja template that fails on its own terms falls back to llama.cpp's
    /// matcher; one that went over a bound, or was cancelled, does not.
    pub(super) fn render(
        &self,
        model: &LlamaModel,
        messages: &[Message],
        cancel: &AtomicBool,
    ) -> Result<String, TemplateError> {
        self.render_input(model, self.input(messages.to_vec()), true, cancel)
    }

    /// Render `messages` with tools, a thinking switch or more variables.
    /// Tools reach the template as its `tools` variable when it lists them
    /// itself, and as olm's fallback prompt otherwise ([`prompt::adapt`]);
    /// thinking turned off for a template whose prompt opens a `<think>`
    /// block closes that block at once.
    pub(super) fn render_with(
        &self,
        model: &LlamaModel,
        messages: &[Message],
        options: &ChatOptions,
        cancel: &AtomicBool,
    ) -> Result<String, TemplateError> {
        let traits = self.traits();
        let messages = prompt::adapt(messages, &options.tools, &traits);
        let mut input = self.input(messages);
        if traits.renders_tools && !options.tools.is_empty() {
            input.tools = Some(options.tools.iter().map(ToolSpec::template_value).collect());
        }
        input.enable_thinking = options.enable_thinking;
        // As llama.cpp does for Llama 3.x: the tool list in the system
        // message, where the other families put it too.
        input
            .variables
            .insert("tools_in_user_message".into(), Value::Bool(false));
        for (name, value) in &options.variables {
            if !RESERVED_VARIABLES.contains(&name.as_str()) {
                input.variables.insert(name.clone(), value.clone());
            }
        }
        // The built-in matcher knows no tools: with the template's own tool
        // rendering in play, its failure is the answer.
        let may_fall_back = !traits.renders_tools || options.tools.is_empty();
        let mut text = self.render_input(model, input, may_fall_back, cancel)?;
        if options.enable_thinking == Some(false)
            && traits.opens_thinking
            && text.trim_end().ends_with("<think>")
        {
            text.push_str("\n</think>\n\n");
        }
        Ok(text)
    }

    fn render_input(
        &self,
        model: &LlamaModel,
        input: RenderInput,
        may_fall_back: bool,
        cancel: &AtomicBool,
    ) -> Result<String, TemplateError> {
        let jinja_error = match &self.jinja {
            Some(template) => match template.render(&input, cancel) {
                Ok(text) => return Ok(text),
                Err(error) if error.is_exhaustion() || !may_fall_back => return Err(error),
                Err(error) => Some(error),
            },
            None => None,
        };
        let messages = &input.messages;
        let llama_result = match &self.llama {
            Some(template) => render_llama(model, template, messages),
            None => Err(TemplateError::Render("no usable template".into())),
        };
        match (llama_result, jinja_error) {
            (Ok(text), _) => Ok(text),
            // The Jinja template's own error is the one its author would want.
            (Err(_), Some(error)) => Err(error),
            (Err(error), None) => Err(error),
        }
    }

    fn input(&self, messages: Vec<Message>) -> RenderInput {
        RenderInput {
            messages,
            bos_token: self.bos_token.clone(),
            eos_token: self.eos_token.clone(),
            date_string: crate::human::local_now("%d %b %Y"),
            add_generation_prompt: true,
            tools: None,
            enable_thinking: None,
            variables: Map::new(),
        }
    }

    /// How to read the reasoning of an answer to `rendered`, a prompt this
    /// template rendered with its defaults: what [`ChatTraits::reasoning`]
    /// says for it, read from the prompt itself instead of probe renderings
    /// (a one-shot run needs nothing else from the traits).
    pub(super) fn reasoning_after(&self, rendered: &str) -> ReasoningMode {
        let opens_thinking = rendered.trim_end().ends_with("<think>");
        if !opens_thinking && !self.source.contains("<think>") {
            return ReasoningMode::Off;
        }
        ReasoningMode::Tags {
            starts_inside: opens_thinking,
        }
    }

    /// What this template does with tools and reasoning: rendered once with
    /// probe conversations (in the template process, like every rendering)
    /// and remembered.
    pub(super) fn traits(&self) -> ChatTraits {
        *self.traits.get_or_init(|| self.probe())
    }

    fn probe(&self) -> ChatTraits {
        let format = ToolFormat::detect(&self.source);
        let thinking = self.source.contains("<think>");
        let Some(template) = &self.jinja else {
            return ChatTraits {
                format,
                thinking,
                ..ChatTraits::default()
            };
        };
        let cancel = AtomicBool::new(false);
        // A template that exhausts a bound once (a hostile one) is not
        // rendered again for the other probes: each would take as long.
        let exhausted = std::cell::Cell::new(false);
        let render = |input: RenderInput| {
            if exhausted.get() {
                return None;
            }
            match template.render(&input, &cancel) {
                Ok(text) => Some(text),
                Err(error) => {
                    exhausted.set(error.is_exhaustion());
                    None
                }
            }
        };
        let tool = ToolSpec {
            name: "olm_probe_tool".into(),
            description: Some("olm-probe-description".into()),
            parameters: serde_json::json!({
                "type": "object",
                "properties": {"olm_probe_argument": {"type": "string"}},
                "required": ["olm_probe_argument"]
            }),
        };
        let question = Message::new("user", "olm-probe-question");
        let with_tools = |messages: Vec<Message>| {
            let mut input = self.input(messages);
            input.tools = Some(vec![tool.template_value()]);
            input
        };
        let renders_tools = render(with_tools(vec![question.clone()]))
            .is_some_and(|text| text.contains("olm_probe_tool"));
        let mut call = Message::new("assistant", "");
        call.tool_calls = vec![ToolCall {
            id: "olmprobe1".into(),
            name: "olm_probe_tool".into(),
            arguments: serde_json::json!({"olm_probe_argument": "olm-probe-value"}),
        }];
        let mut result = Message::new("tool", "olm-probe-result");
        result.tool_call_id = Some("olmprobe1".into());
        result.name = Some("olm_probe_tool".into());
        let renders_tool_turns = render(with_tools(vec![question.clone(), call, result]))
            .is_some_and(|text| {
                text.contains("olm-probe-value") && text.contains("olm-probe-result")
            });
        let switched = |enable: Option<bool>| {
            let mut input = self.input(vec![question.clone()]);
            input.enable_thinking = enable;
            render(input)
        };
        let (on, off) = (switched(Some(true)), switched(Some(false)));
        let thinking_switch = matches!((&on, &off), (Some(on), Some(off)) if on != off);
        let opens_thinking =
            switched(None).is_some_and(|text| text.trim_end().ends_with("<think>"));
        ChatTraits {
            format,
            renders_tools,
            renders_tool_turns,
            thinking: thinking || opens_thinking,
            thinking_switch,
            opens_thinking,
        }
    }
}

fn render_llama(
    model: &LlamaModel,
    template: &LlamaChatTemplate,
    messages: &[Message],
) -> Result<String, TemplateError> {
    let chat = messages
        .iter()
        .map(|message| LlamaChatMessage::new(message.role.clone(), message.content.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TemplateError::Render(error.to_string()))?;
    model
        .apply_chat_template(template, &chat, true)
        .map_err(|error| TemplateError::Render(format!("llama.cpp template matcher: {error}")))
}

/// The texts of the BOS and EOS tokens, which templates insert themselves.
fn special_token_texts(model: &LlamaModel) -> (String, String) {
    let vocab = model.vocab();
    let text_of = |token| {
        vocab
            .text(token)
            .map(|text| text.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let bos = if vocab.bos().0 >= 0 {
        text_of(vocab.bos())
    } else {
        String::new()
    };
    let eos = if vocab.eos().0 >= 0 {
        text_of(vocab.eos())
    } else {
        String::new()
    };
    (bos, eos)
}
