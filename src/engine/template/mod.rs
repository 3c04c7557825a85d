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

use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use serde::Serialize;

pub use isolation::{prestart, serve as serve_template_process};

use isolation::IsolatedTemplate;
use jinja::{JinjaTemplate, RenderInput};

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

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
                    .map(|_| IsolatedTemplate::new(text)),
                bos_token,
                eos_token,
            },
            TemplateSource::Builtin(name) => {
                let llama = LlamaChatTemplate::new(&name)
                    .map_err(|_| TemplateError::UnknownBuiltin(name.clone()))?;
                Self {
                    jinja: None,
                    llama: Some(llama),
                    bos_token,
                    eos_token,
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
        let jinja_error = match &self.jinja {
            Some(template) => match template.render(&self.input(messages), cancel) {
                Ok(text) => return Ok(text),
                Err(error) if error.is_exhaustion() => return Err(error),
                Err(error) => Some(error),
            },
            None => None,
        };
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

    fn input(&self, messages: &[Message]) -> RenderInput {
        RenderInput {
            messages: messages.to_vec(),
            bos_token: self.bos_token.clone(),
            eos_token: self.eos_token.clone(),
            date_string: crate::human::local_now("%d %b %Y"),
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
