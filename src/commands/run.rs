//! `olm run`: one-shot generation streamed to stdout.

use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;

use super::{Interrupted, UsageError};
use crate::cli::{GenerationArgs, OutputFormat, RunArgs};
use crate::engine::{
    self, Constraint, GenerateRequest, LoadOptions, Message, Model, Prompt, SamplingConfig,
    SessionOptions, Stats, StopReason, TemplateSource,
};
use crate::gguf;
use crate::store::{ModelRef, Store};
use crate::ui::Printer;

/// Tokens an answer may take when `--max-tokens` is not given; the context is
/// sized for the prompt plus this budget.
const DEFAULT_ANSWER_BUDGET: u32 = 4096;
/// Largest batch of prompt tokens evaluated at once (llama.cpp's default).
const MAX_BATCH: u32 = 2048;
/// Largest stdin accepted (a larger prompt could never fit a context anyway).
const MAX_STDIN_BYTES: u64 = 256 << 20;

pub fn run(args: RunArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    crate::ui::init_tracing(args.generation.verbose);
    engine::configure_logging(args.generation.verbose);
    let cancel = install_interrupt_flag()?;

    // No prompt on a terminal: hold a conversation instead (design.md).
    if args.prompt.is_empty() && !args.json && !args.raw && io::stdin().is_terminal() {
        return super::chat::converse(&args.model, &args.generation, printer, &cancel);
    }
    let input = read_input(&args.prompt)?;
    let path = resolve_model(&args.model)?;
    tracing::info!("model checked after {} ms", started.elapsed().as_millis());
    let prompt = build_prompt(&args, input)?;
    let request = build_request(&args.generation)?;

    let mut spinner = printer.spinner("loading model");
    let model = Model::load(&path, &load_options(&args.generation)?)
        .with_context(|| format!("cannot load {}", path.display()))?;
    let load_time = started.elapsed();

    if args.verbose_prompt {
        let rendered = model.render(&prompt)?;
        spinner.finish();
        printer.status(&format!("prompt as the model sees it:\n{rendered}\n---"));
    }
    let tokens = model.tokenize(&prompt)?;
    let n_ctx = match args.generation.ctx_size {
        Some(n_ctx) => n_ctx,
        None => model.context_for(
            tokens.len(),
            request.max_tokens.unwrap_or(DEFAULT_ANSWER_BUDGET),
        ),
    };
    let session_options = SessionOptions {
        n_ctx,
        threads: args
            .generation
            .threads
            .unwrap_or_else(engine::physical_cores),
        n_batch: n_ctx.min(MAX_BATCH),
    };
    tracing::info!("model loaded after {} ms", load_time.as_millis());
    let mut session = model.session(&session_options)?;
    tracing::info!(
        "context of {} tokens ready after {} ms",
        session.n_ctx(),
        started.elapsed().as_millis()
    );
    spinner.finish();

    let mut text = String::new();
    let mut stdout = io::stdout().lock();
    let mut ends_with_newline = true;
    let stats = session
        .generate(&tokens, &request, &cancel, |piece| {
            if args.json {
                text.push_str(piece);
                return Ok(());
            }
            ends_with_newline = piece.ends_with('\n');
            stdout.write_all(piece.as_bytes())?;
            stdout.flush()
        })?
        .context("cannot write the answer to stdout")?;

    if args.json {
        let report = JsonReport::new(&path, text, &stats, load_time);
        serde_json::to_writer(&mut stdout, &report)?;
        stdout.write_all(b"\n")?;
    } else if !ends_with_newline {
        stdout.write_all(b"\n")?;
    }
    stdout
        .flush()
        .context("cannot write the answer to stdout")?;
    report_end(printer, &args.generation, &stats, session.n_ctx());
    if stats.stop_reason == StopReason::Cancelled {
        return Err(Interrupted.into());
    }
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C sets the flag (generation stops at the next token, exit 130); a
/// second Ctrl-C exits at once.
pub(super) fn install_interrupt_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&flag))
            .context("cannot install the Ctrl-C handler")?;
        signal_hook::flag::register(signal, Arc::clone(&flag))
            .context("cannot install the Ctrl-C handler")?;
    }
    Ok(flag)
}

/// PROMPT words joined by spaces, then stdin (when it is not a terminal)
/// after a blank line.
fn read_input(words: &[String]) -> anyhow::Result<String> {
    let mut input = words.join(" ");
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        let mut piped = Vec::new();
        stdin
            .lock()
            .take(MAX_STDIN_BYTES + 1)
            .read_to_end(&mut piped)
            .context("cannot read stdin")?;
        if piped.len() as u64 > MAX_STDIN_BYTES {
            return Err(UsageError::new(format!(
                "stdin is larger than {} MiB",
                MAX_STDIN_BYTES >> 20
            ))
            .into());
        }
        let piped = String::from_utf8_lossy(&piped);
        let piped = piped.trim_end_matches(['\n', '\r']);
        if !piped.is_empty() {
            if !input.is_empty() {
                input.push_str("\n\n");
            }
            input.push_str(piped);
        }
    }
    if input.trim().is_empty() {
        return Err(UsageError::new("no prompt given")
            .with_hint("pass a prompt after the model, or pipe text on stdin")
            .into());
    }
    Ok(input)
}

/// Resolve MODEL (a .gguf path, a store name, or a repo already in the
/// Hugging Face cache) and check the file before llama.cpp sees it.
pub(super) fn resolve_model(reference: &str) -> anyhow::Result<PathBuf> {
    let path = Store::from_env()
        .resolve(&ModelRef::parse(reference)?)?
        .path;
    gguf::inspect(&path).with_context(|| format!("{} is not a usable model", path.display()))?;
    Ok(path)
}

fn build_prompt(args: &RunArgs, input: String) -> anyhow::Result<Prompt> {
    if args.raw {
        if args.generation.system.is_some() {
            return Err(UsageError::new("--system needs the chat template; drop --raw").into());
        }
        return Ok(Prompt::Raw(input));
    }
    let mut messages = Vec::with_capacity(2);
    if let Some(system) = &args.generation.system {
        messages.push(Message::new("system", system.clone()));
    }
    messages.push(Message::new("user", input));
    Ok(Prompt::Chat(messages))
}

pub(super) fn build_request(args: &GenerationArgs) -> anyhow::Result<GenerateRequest> {
    let defaults = SamplingConfig::default();
    let sampling = SamplingConfig {
        temperature: args.temperature.unwrap_or(defaults.temperature),
        top_k: args.top_k.unwrap_or(defaults.top_k),
        top_p: args.top_p.unwrap_or(defaults.top_p),
        min_p: args.min_p.unwrap_or(defaults.min_p),
        repeat_penalty: args.repeat_penalty.unwrap_or(defaults.repeat_penalty),
        repeat_last_n: defaults.repeat_last_n,
        seed: args.seed,
        ..defaults
    };
    let constraint = match (&args.format, &args.schema) {
        (_, Some(path)) => Some(Constraint::JsonSchema(read_schema(path)?)),
        (Some(OutputFormat::Json), None) => Some(Constraint::JsonObject),
        (None, None) => None,
    };
    if let Some(constraint) = &constraint {
        // Fail on a bad schema now, before the model is loaded.
        constraint.to_grammar()?;
    }
    Ok(GenerateRequest {
        sampling,
        max_tokens: args.max_tokens,
        constraint,
        stop: Vec::new(),
    })
}

fn read_schema(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        UsageError::new(format!(
            "cannot read schema file {}: {error}",
            path.display()
        ))
    })?;
    serde_json::from_str::<serde_json::Value>(&text).map_err(|error| {
        UsageError::new(format!(
            "schema file {} is not valid JSON: {error}",
            path.display()
        ))
    })?;
    Ok(text)
}

pub(super) fn load_options(args: &GenerationArgs) -> anyhow::Result<LoadOptions> {
    Ok(LoadOptions {
        gpu_layers: args.gpu_layers,
        chat_template: chat_template(args.chat_template.as_deref())?,
    })
}

/// `--chat-template FILE|NAME`: a Jinja file when the path exists, else a
/// llama.cpp built-in template name.
pub(super) fn chat_template(value: Option<&str>) -> anyhow::Result<Option<TemplateSource>> {
    let Some(value) = value else {
        return Ok(None);
    };
    if !Path::new(value).is_file() {
        return Ok(Some(TemplateSource::Builtin(value.to_owned())));
    }
    let text = std::fs::read_to_string(value)
        .with_context(|| format!("cannot read chat template {value}"))?;
    Ok(Some(TemplateSource::Jinja(text)))
}

fn report_end(printer: &Printer, args: &GenerationArgs, stats: &Stats, n_ctx: u32) {
    if stats.stop_reason == StopReason::ContextFull {
        printer.warn(&format!(
            "the answer was cut: the context of {n_ctx} tokens is full; raise --ctx-size"
        ));
    }
    let constrained = args.format.is_some() || args.schema.is_some();
    if constrained && stats.stop_reason == StopReason::MaxTokens {
        printer.warn(&format!(
            "the JSON is incomplete: the answer reached --max-tokens ({}) first; raise -n",
            stats.generated_tokens
        ));
    }
    if args.verbose {
        printer.status(&format!(
            "{} prompt tokens at {:.1} t/s, {} generated at {:.1} t/s, first token after {} ms, stop: {:?}",
            stats.prompt_tokens,
            stats.prompt_tokens_per_second(),
            stats.generated_tokens,
            stats.generation_tokens_per_second(),
            stats.time_to_first_token.as_millis(),
            stats.stop_reason,
        ));
    }
}

/// The single object `olm run --json` prints.
#[derive(Debug, Serialize)]
struct JsonReport {
    model: String,
    text: String,
    stop_reason: StopReason,
    prompt_tokens: usize,
    generated_tokens: usize,
    load_ms: f64,
    time_to_first_token_ms: f64,
    prompt_ms: f64,
    generation_ms: f64,
    prompt_tokens_per_second: f64,
    generation_tokens_per_second: f64,
}

impl JsonReport {
    fn new(path: &Path, text: String, stats: &Stats, load_time: std::time::Duration) -> Self {
        let millis = |duration: std::time::Duration| duration.as_secs_f64() * 1000.0;
        Self {
            model: path.display().to_string(),
            text,
            stop_reason: stats.stop_reason,
            prompt_tokens: stats.prompt_tokens,
            generated_tokens: stats.generated_tokens,
            load_ms: millis(load_time),
            time_to_first_token_ms: millis(stats.time_to_first_token),
            prompt_ms: millis(stats.prompt_time),
            generation_ms: millis(stats.generation_time),
            prompt_tokens_per_second: stats.prompt_tokens_per_second(),
            generation_tokens_per_second: stats.generation_tokens_per_second(),
        }
    }
}
