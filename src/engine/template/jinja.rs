//! Rendering a Jinja chat template with minijinja, as the model's authors
//! wrote it (Python-style string methods through `pycompat`, the variables
//! Hugging Face's `apply_chat_template` passes).
//!
//! This runs inside the template process ([`super::isolation`]), never in a
//! process that holds a model: minijinja bounds recursion and, with fuel,
//! the number of instructions, but not the size of intermediate values (a
//! string doubled in a loop reaches gigabytes within a few dozen
//! instructions), so memory and time are bounded by that process's limits.

use std::fmt::Write as _;

use minijinja::{Environment, ErrorKind, Value};

use super::{Message, TemplateError};

/// The largest prompt a template may render (the context is far smaller).
pub const MAX_RENDERED_BYTES: usize = 64 << 20;
/// Instruction budget for one rendering: real templates take a few dozen
/// instructions a message, so this is plenty for the longest conversation a
/// context holds, and a stop within a second or two for loops that would
/// run for minutes.
const RENDER_FUEL: u64 = 10_000_000;

const TEMPLATE_NAME: &str = "chat";

/// What a template is rendered with besides its source.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RenderInput {
    pub messages: Vec<Message>,
    pub bos_token: String,
    pub eos_token: String,
    /// Today's date as templates print it (`26 Jul 2024`), and the strftime
    /// formats they ask `strftime_now` for are answered from the same clock.
    pub date_string: String,
    /// End with the opening of the assistant's turn.
    #[serde(default = "yes")]
    pub add_generation_prompt: bool,
    /// Tool definitions in OpenAI's shape; undefined in the template when `None`.
    #[serde(default)]
    pub tools: Option<Vec<serde_json::Value>>,
    /// Qwen3's thinking switch; undefined in the template when `None`.
    #[serde(default)]
    pub enable_thinking: Option<bool>,
    /// More variables (`tools_in_user_message`, a request's `chat_template_kwargs`).
    #[serde(default)]
    pub variables: serde_json::Map<String, serde_json::Value>,
}

fn yes() -> bool {
    true
}

/// A parsed template, ready to render.
pub struct JinjaTemplate {
    environment: Environment<'static>,
}

impl JinjaTemplate {
    /// Parse `source`; a syntax error is refused here.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let mut environment = Environment::new();
        environment
            .set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        environment.set_fuel(Some(RENDER_FUEL));
        environment.set_trim_blocks(false);
        environment.set_lstrip_blocks(false);
        environment.add_function("raise_exception", raise_exception);
        environment.add_function("strftime_now", strftime_now);
        environment
            .add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|error| TemplateError::Render(describe(&error)))?;
        Ok(Self { environment })
    }

    /// Render `input`, ending with the opening of the assistant's turn.
    pub fn render(&self, input: &RenderInput) -> Result<String, TemplateError> {
        let template = self
            .environment
            .get_template(TEMPLATE_NAME)
            .map_err(|error| TemplateError::Render(describe(&error)))?;
        let mut variables = input.variables.clone();
        variables.insert("date_string".into(), input.date_string.clone().into());
        variables.insert(
            "add_generation_prompt".into(),
            input.add_generation_prompt.into(),
        );
        if let Some(enable) = input.enable_thinking {
            variables.insert("enable_thinking".into(), enable.into());
        }
        let context = minijinja::context! {
            messages => Value::from_serialize(&input.messages),
            bos_token => &input.bos_token,
            eos_token => &input.eos_token,
            tools => input.tools.as_ref().map_or(Value::UNDEFINED, Value::from_serialize),
            ..Value::from_serialize(&variables)
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

fn raise_exception(message: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

fn strftime_now(format: String) -> String {
    crate::human::local_now(&format)
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

/// An `io::Write` sink that refuses to grow past a limit.
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
        JinjaTemplate::parse(source)?.render(&RenderInput {
            messages: messages.to_vec(),
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
            date_string: "1 Jan 2026".into(),
            add_generation_prompt: true,
            tools: None,
            enable_thinking: None,
            variables: serde_json::Map::new(),
        })
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
    fn the_date_variable_is_passed_in() {
        assert_eq!(
            render_source("{{ date_string }}", &[]).unwrap(),
            "1 Jan 2026"
        );
    }
}
