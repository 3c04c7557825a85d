//! Chat templates: turning a conversation into the prompt text a model was
//! trained on.
//!
//! The model's own Jinja template is rendered with minijinja (Python-style
//! string methods through `pycompat`), which is what llama.cpp's own tools do
//! by default and what the model's authors wrote; llama.cpp's built-in
//! template matcher is the fallback for templates minijinja cannot render,
//! and the way to use a named built-in (`--chat-template chatml`).
//!
//! A template comes from a file the user downloaded, so rendering is bounded:
//! minijinja's recursion limit, a fuel budget for loops, and a cap on the
//! rendered size. A hostile template fails fast with an error, never hangs.

use std::fmt::Write as _;

use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use minijinja::{Environment, ErrorKind, Value};
use serde::Serialize;

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
    #[error("llama.cpp does not know the chat template {0}")]
    UnknownBuiltin(String),
}

/// The largest prompt a template may render (the context is far smaller).
const MAX_RENDERED_BYTES: usize = 64 << 20;
/// Instruction budget for one rendering: plenty for real templates with long
/// conversations, and a hard stop for loops that would run for minutes.
const RENDER_FUEL: u64 = 50_000_000;

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
    jinja: Option<Environment<'static>>,
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
                jinja: jinja_environment(&text).ok(),
                llama: LlamaChatTemplate::new(&text).ok(),
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
    pub(super) fn render(
        &self,
        model: &LlamaModel,
        messages: &[Message],
    ) -> Result<String, TemplateError> {
        let jinja_error = match &self.jinja {
            Some(environment) => match self.render_jinja(environment, messages) {
                Ok(text) => return Ok(text),
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
            // A size or fuel failure of the Jinja template is the real story.
            (Err(_), Some(error)) => Err(error),
            (Err(error), None) => Err(error),
        }
    }

    fn render_jinja(
        &self,
        environment: &Environment<'static>,
        messages: &[Message],
    ) -> Result<String, TemplateError> {
        let template = environment
            .get_template(TEMPLATE_NAME)
            .map_err(|error| TemplateError::Render(describe(&error)))?;
        let context = minijinja::context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
            tools => Value::UNDEFINED,
            date_string => today("%d %b %Y"),
        };
        let mut output = BoundedString::new(MAX_RENDERED_BYTES);
        let result = template.render_captured_to(context, &mut output).map(drop);
        if output.overflowed {
            return Err(TemplateError::TooLarge {
                limit: MAX_RENDERED_BYTES,
            });
        }
        result.map_err(|error| TemplateError::Render(describe(&error)))?;
        Ok(output.text)
    }
}

const TEMPLATE_NAME: &str = "chat";

fn jinja_environment(source: &str) -> Result<Environment<'static>, minijinja::Error> {
    let mut environment = Environment::new();
    environment.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    environment.set_fuel(Some(RENDER_FUEL));
    environment.set_trim_blocks(false);
    environment.set_lstrip_blocks(false);
    environment.add_function("raise_exception", raise_exception);
    environment.add_function("strftime_now", strftime_now);
    environment.add_template_owned(TEMPLATE_NAME, source.to_owned())?;
    Ok(environment)
}

fn raise_exception(message: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

fn strftime_now(format: String) -> String {
    today(&format)
}

fn describe(error: &minijinja::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
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

/// The local date formatted with strftime (templates put it in system prompts).
fn today(format: &str) -> String {
    let Ok(format) = std::ffi::CString::new(format) else {
        return String::new();
    };
    let mut buffer = [0u8; 128];
    // SAFETY: time/localtime_r/strftime get valid pointers to local values and
    // a buffer whose length is passed along; strftime NUL-terminates or returns 0.
    let written = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut parts: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut parts).is_null() {
            return String::new();
        }
        libc::strftime(
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            format.as_ptr(),
            &parts,
        )
    };
    String::from_utf8_lossy(&buffer[..written]).into_owned()
}

/// A `fmt::Write` sink that refuses to grow past a limit.
struct BoundedString {
    text: String,
    limit: usize,
    overflowed: bool,
}

impl BoundedString {
    fn new(limit: usize) -> Self {
        Self {
            text: String::new(),
            limit,
            overflowed: false,
        }
    }
}

impl std::io::Write for BoundedString {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + bytes.len() > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("rendered prompt too large"));
        }
        let text = std::str::from_utf8(bytes).map_err(std::io::Error::other)?;
        self.text.push_str(text);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_source(source: &str, messages: &[Message]) -> Result<String, TemplateError> {
        let environment =
            jinja_environment(source).map_err(|e| TemplateError::Render(describe(&e)))?;
        let template = ChatTemplate {
            jinja: None,
            llama: None,
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
        };
        template.render_jinja(&environment, messages)
    }

    #[test]
    fn python_string_methods_work() {
        let source =
            "{% for m in messages %}{{ m.role.upper() }}:{{ m.content.strip() }}|{% endfor %}";
        let text = render_source(source, &[Message::new("user", "  hi  ")]).expect("render");
        assert_eq!(text, "USER:hi|");
    }

    #[test]
    fn raise_exception_is_an_error() {
        let source = "{{ raise_exception('roles must alternate') }}";
        let error = render_source(source, &[]).unwrap_err();
        assert!(
            error.to_string().contains("roles must alternate"),
            "{error}"
        );
    }

    #[test]
    fn infinite_recursion_fails_fast() {
        let started = std::time::Instant::now();
        let source = "{% macro x() %}{{ x() }}{% endmacro %}{{ x() }}";
        assert!(render_source(source, &[]).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn huge_loops_run_out_of_fuel_or_size() {
        let started = std::time::Instant::now();
        let source = "{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxxxxxxxxxx{% endfor %}{% endfor %}";
        assert!(render_source(source, &[]).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn deeply_nested_parentheses_are_rejected() {
        let source = format!("{{{{ {}1{} }}}}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(render_source(&source, &[]).is_err());
    }

    #[test]
    fn strftime_formats_a_date() {
        let text = today("%Y");
        assert_eq!(text.len(), 4, "{text}");
    }
}
