//! `olm run`: one-shot generation streamed to stdout. The model's reasoning
//! (its `<think>` part) goes to stderr, dimmed, never to stdout; with
//! `--tools`, its calls go to stdout as JSON lines.

use std::io::{self, IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;

use super::resolve::{
    build_request, install_interrupt_flag, load_options, resolve_model_with_identity, Offer,
};
use super::{Interrupted, UsageError};
use crate::cli::{GenerationArgs, RunArgs};
use crate::engine::tools::{
    new_call_id, OutputParser, Piece, ReasoningMode, ToolCall, ToolChoice, ToolConstraint, ToolSpec,
};
use crate::engine::{
    self, ChatOptions, Constraint, EngineError, KvSnapshot, Message, Model, Prompt, PromptLimits,
    PromptTokens, Session, SessionOptions, Stats, StopReason, KV_STATE_FORMAT,
};
use crate::gguf::CheckedModel;
use crate::promptcache::{PromptCache, StateBound};
use crate::ui::Printer;

/// Largest `--tools` file read.
const MAX_TOOLS_FILE_BYTES: u64 = 4 << 20;

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
    if args.prompt.is_empty()
        && !args.json
        && !args.raw
        && args.tools.is_none()
        && io::stdin().is_terminal()
    {
        return super::chat::converse(
            &args.model,
            &args.generation,
            args.hide_thinking,
            printer,
            &cancel,
        );
    }
    let tools = read_tools(&args)?;
    let (checked, identity) = resolve_model_with_identity(&args.model, Offer::Pull)?;
    // Off the network from here on (a pull the user agreed to is done).
    super::lock_down(args.generation.verbose, &args.generation.load, printer);
    tracing::info!("model checked after {} ms", started.elapsed().as_millis());
    let mut request = build_request(&args.generation)?;
    // The largest context this run may use: what the prompt is checked
    // against before anything grows with it (stdin, the template, tokens).
    let max_context = args
        .generation
        .ctx_size
        .or_else(|| trained_context(&checked))
        .unwrap_or(DEFAULT_ANSWER_BUDGET);
    let limits = PromptLimits::from_header(checked.header());
    let input = read_input(&args.prompt, limits.max_bytes(max_context), max_context)?;
    let prompt = build_prompt(&args, input.text())?;

    let mut spinner = printer.spinner("loading model");
    let model = Model::load(
        &checked,
        &load_options(
            &args.generation.load,
            args.generation.chat_template.as_deref(),
        )?,
    )
    .with_context(|| format!("cannot load {}", checked.path().display()))?;
    let load_time = started.elapsed();
    if let Some(split) = model.split() {
        spinner.finish();
        printer.status(&format!("split: {}", split.summary()));
        spinner = printer.spinner("loading model");
    }

    // What the template does with reasoning and tools (never for --raw);
    // without tools, only once the prompt has rendered (a template that
    // cannot render fails first, without probes).
    let traits = match (&prompt, &tools) {
        (Prompt::Chat(_), Some(_)) => Some(model.chat_traits()),
        _ => None,
    };
    let format = traits.map(|traits| traits.format);
    let (prompt, reading_tools) = match (prompt, tools, format) {
        (Prompt::Chat(messages), Some((tools, choice)), Some(format)) => {
            // A named tool is called once; auto and required may call several.
            let parallel = !matches!(choice, ToolChoice::Function(_));
            request.constraint = Some(Constraint::Tools(Box::new(ToolConstraint {
                format,
                tools: tools.clone(),
                choice,
                parallel,
                reasoning: traits.map_or(ReasoningMode::Off, |traits| traits.reasoning(None)),
            })));
            let options = ChatOptions {
                tools: tools.clone(),
                ..ChatOptions::default()
            };
            (
                Prompt::ChatWith(messages, Box::new(options)),
                Some((format, tools)),
            )
        }
        (prompt, _, _) => (prompt, None),
    };
    let with_tools = reading_tools.is_some();

    let rendered = model.render(&prompt, max_context, &cancel)?;
    if args.verbose_prompt {
        spinner.finish();
        printer.status(&format!("prompt as the model sees it:\n{rendered}\n---"));
    }
    let chat = !matches!(prompt, Prompt::Raw(_));
    let tokens = model.tokenize_prompt_rendered(&prompt, &rendered, max_context, &cancel)?;
    let reasoning = match (&prompt, traits) {
        (Prompt::Raw(_), _) => ReasoningMode::Off,
        (_, Some(traits)) => traits.reasoning(None),
        (_, None) => model.reasoning_after(&rendered),
    };
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
    let cache_started = Instant::now();
    let cached = if args.no_cache {
        CachedPrefix::default()
    } else {
        let boundary = reusable_prefix(&model, &rendered, &input, chat, &tokens);
        use_prompt_cache(&mut session, &tokens, boundary, &identity, &cancel)
    };
    let cache_time = cache_started.elapsed();
    spinner.finish();

    let mut output = Output {
        parser: OutputParser::new(reasoning, reading_tools),
        json: args.json,
        show_thinking: !args.hide_thinking && !args.json,
        printer,
        stdout: io::stdout().lock(),
        text: String::new(),
        thinking: String::new(),
        calls: Vec::new(),
        ends_with_newline: true,
        thinking_shown: false,
    };
    let mut stats = session
        .generate(&tokens, &request, &cancel, |piece| {
            let pieces = output.parser.push(piece);
            output.take(pieces)
        })?
        .context("cannot write the answer to stdout")?;
    // The prompt's cached beginning was loaded or evaluated before the
    // generation started: its time is the prompt's too.
    stats.prompt_time += cache_time;
    stats.time_to_first_token += cache_time;
    stats.prompt_tokens_evaluated += cached.evaluated;
    let (pieces, call_error) = output.parser.finish();
    output
        .take(pieces)
        .context("cannot write the answer to stdout")?;
    output.end_thinking();

    if let Some(save) = cached.to_save {
        save.write(printer);
    }
    let Output {
        mut stdout,
        text,
        thinking,
        calls,
        ends_with_newline,
        ..
    } = output;
    if args.json {
        let mut report = JsonReport::new(checked.path(), text, thinking, calls, &stats, load_time);
        report.prompt_tokens_from_cache = cached.from_cache;
        report.split = model.split().cloned();
        serde_json::to_writer(&mut stdout, &report)?;
        stdout.write_all(b"\n")?;
    } else if !ends_with_newline {
        stdout.write_all(b"\n")?;
    }
    stdout
        .flush()
        .context("cannot write the answer to stdout")?;
    let n_ctx = session.n_ctx();
    report_end(printer, &args.generation, &stats, n_ctx);
    // olm exits next: nothing of llama.cpp's needs freeing first.
    session.release_at_exit();
    model.release_at_exit();
    if stats.stop_reason == StopReason::Cancelled {
        return Err(Interrupted.into());
    }
    check_structured_output_complete(&args.generation, &stats, n_ctx)?;
    if let (true, Some(reason)) = (with_tools, call_error) {
        return Err(InvalidCall { reason }.into());
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the answer's pieces go: content and calls to stdout (or into the
/// `--json` report), reasoning to stderr.
struct Output<'a> {
    parser: OutputParser,
    json: bool,
    show_thinking: bool,
    printer: &'a Printer,
    stdout: io::StdoutLock<'static>,
    text: String,
    thinking: String,
    calls: Vec<ToolCall>,
    ends_with_newline: bool,
    /// Reasoning was shown and not yet ended with a line break.
    thinking_shown: bool,
}

impl Output<'_> {
    fn take(&mut self, pieces: Vec<Piece>) -> io::Result<()> {
        for piece in pieces {
            match piece {
                Piece::Reasoning(text) => {
                    if self.show_thinking {
                        self.printer.thinking(&text);
                        self.thinking_shown = true;
                    }
                    self.thinking.push_str(&text);
                }
                Piece::Content(text) => {
                    self.end_thinking();
                    if self.json {
                        self.text.push_str(&text);
                        continue;
                    }
                    self.ends_with_newline = text.ends_with('\n');
                    let shown = self.printer.stdout_text(&text);
                    self.stdout.write_all(shown.as_bytes())?;
                    self.stdout.flush()?;
                }
                Piece::Call(mut call) => {
                    self.end_thinking();
                    if call.id.is_empty() {
                        call.id = new_call_id();
                    }
                    if !self.json {
                        if !self.ends_with_newline {
                            self.stdout.write_all(b"\n")?;
                        }
                        let line = serde_json::json!({"id": call.id, "name": call.name, "arguments": call.arguments});
                        writeln!(self.stdout, "{line}")?;
                        self.stdout.flush()?;
                        self.ends_with_newline = true;
                    }
                    self.calls.push(call);
                }
            }
        }
        Ok(())
    }

    /// Reasoning shown on stderr ends with a line break before anything else.
    fn end_thinking(&mut self) {
        if self.thinking_shown {
            self.printer.thinking("\n");
            self.thinking_shown = false;
        }
    }
}

/// `--tools FILE` and `--tool-choice`, checked before the model loads.
fn read_tools(args: &RunArgs) -> anyhow::Result<Option<(Vec<ToolSpec>, ToolChoice)>> {
    let Some(path) = &args.tools else {
        return Ok(None);
    };
    if args.raw {
        return Err(UsageError::new("--tools needs the chat template; drop --raw").into());
    }
    if args.generation.format.is_some() || args.generation.schema.is_some() {
        return Err(UsageError::new("--tools cannot be combined with --format or --schema").into());
    }
    let bytes = crate::files::read_bounded(path, MAX_TOOLS_FILE_BYTES)
        .map_err(|error| UsageError::new(format!("cannot read --tools: {error}")))?;
    let definitions: serde_json::Value = serde_json::from_slice(&bytes).map_err(|error| {
        UsageError::new(format!("--tools {} is not JSON: {error}", path.display()))
    })?;
    let tools = ToolSpec::parse_list(definitions).map_err(|error| {
        UsageError::new(format!("--tools {}: {error}", path.display()))
            .with_hint("give a JSON list of {\"type\": \"function\", \"function\": {\"name\", \"description\", \"parameters\"}}")
    })?;
    let choice = match args.tool_choice.as_deref() {
        None | Some("auto") => ToolChoice::Auto,
        Some("required") => ToolChoice::Required,
        Some(name) if tools.iter().any(|tool| tool.name == name) => {
            ToolChoice::Function(name.to_owned())
        }
        Some(name) => {
            return Err(UsageError::new(format!(
                "--tool-choice {} names no tool in {}",
                crate::ui::escape_controls(name),
                path.display()
            ))
            .with_hint("use auto, required, or the name of one of the tools")
            .into())
        }
    };
    // The same checks the server makes (names, schemas), and llama.cpp's own
    // conversion: a bad tool fails now, before the model is loaded.
    let constraint = Constraint::Tools(Box::new(ToolConstraint {
        format: engine::tools::ToolFormat::Generic,
        tools: tools.clone(),
        choice: choice.clone(),
        parallel: true,
        reasoning: ReasoningMode::Off,
    }));
    constraint
        .to_grammar()
        .map_err(|error| UsageError::new(format!("--tools {}: {error}", path.display())))?;
    Ok(Some((tools, choice)))
}

/// A call the model began that cannot be used (exit 1): the text is on
/// stdout, this says why it is not a call.
#[derive(Debug, thiserror::Error)]
#[error("the model's tool call is not valid: {reason}")]
pub struct InvalidCall {
    reason: String,
}

/// The context the model was trained for, from its header.
fn trained_context(checked: &CheckedModel) -> Option<u32> {
    checked
        .header()
        .context_length()
        .and_then(|length| u32::try_from(length).ok())
        .filter(|length| *length > 0)
}

/// Stdin (when it is not a terminal), then a blank line and the PROMPT words
/// joined by spaces: the document first and the instruction after it, so
/// that runs asking different questions about one document share its
/// beginning (and its cached evaluation). Stdin is read only as far as text could still fit
/// `max_context` tokens (`max_bytes`): more is refused at once, before it
/// is all read, rendered or tokenized.
fn read_input(words: &[String], max_bytes: usize, max_context: u32) -> anyhow::Result<Input> {
    let instruction = words.join(" ");
    let mut piped_text = String::new();
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        let limit = (max_bytes as u64).min(MAX_STDIN_BYTES);
        let mut piped = Vec::new();
        stdin
            .lock()
            .take(limit + 1)
            .read_to_end(&mut piped)
            .context("cannot read stdin")?;
        if piped.len() as u64 > limit {
            return Err(EngineError::InputTooLong {
                input: format!("more than {} on stdin", crate::human::size(limit)),
                n_ctx: max_context,
            }
            .into());
        }
        let piped = String::from_utf8_lossy(&piped);
        piped_text.push_str(piped.trim_end_matches(['\n', '\r']));
    }
    let input = Input {
        piped: piped_text,
        instruction,
    };
    if input.text().trim().is_empty() {
        return Err(UsageError::new("no prompt given")
            .with_hint("pass a prompt after the model, or pipe text on stdin")
            .into());
    }
    Ok(input)
}

/// What `olm run` was given: the piped document and the instruction.
#[derive(Debug, Default)]
struct Input {
    piped: String,
    instruction: String,
}

impl Input {
    /// The user's message: the document, a blank line, the instruction.
    fn text(&self) -> String {
        match (self.piped.is_empty(), self.instruction.is_empty()) {
            (false, false) => format!("{}\n\n{}", self.piped, self.instruction),
            (false, true) => self.piped.clone(),
            (true, _) => self.instruction.clone(),
        }
    }

    /// Bytes of the message that later runs are likely to share: the piped
    /// document (the instruction after it is what changes).
    fn shared_len(&self) -> usize {
        self.piped.len()
    }
}

/// The shortest beginning cached. A model's built-in system prompt is
/// about this long and every plain question starts with it: SmolLM2's 20
/// tokens take 130 ms to evaluate on 2 CPUs, while their 0.5 MB state is
/// read, checked and restored in a few milliseconds. Shorter beginnings
/// (a template's turn marker) cost next to nothing inside the prompt's batch.
const MIN_CACHED_TOKENS: usize = 16;

/// How many tokens of the prompt later runs are likely to share: everything
/// the template puts before the user's message (the system prompt) and the
/// piped document at its start. The instruction and the template's end of
/// turn are left out. Counted on the tokens themselves, so a token merged
/// across the boundary is never cached.
fn reusable_prefix(
    model: &Model,
    rendered: &str,
    input: &Input,
    chat: bool,
    tokens: &PromptTokens,
) -> usize {
    let message = input.text();
    let Some(start) = rendered.rfind(&message) else {
        return 0;
    };
    let boundary = start + input.shared_len();
    let Ok(prefix) = model.tokenize_rendered(&rendered[..boundary], chat) else {
        return 0;
    };
    let full = tokens.ids();
    prefix
        .ids()
        .iter()
        .zip(&full)
        .take_while(|(a, b)| a == b)
        .count()
        // Keep the last prompt token to evaluate: its logits start the answer.
        .min(full.len().saturating_sub(1))
}

/// What the prompt cache did for this run.
#[derive(Default)]
struct CachedPrefix {
    /// Prompt tokens loaded from the cache instead of evaluated.
    from_cache: usize,
    /// Prompt tokens evaluated to be cached (before the generation).
    evaluated: usize,
    /// A newly evaluated beginning, written once the answer is out.
    to_save: Option<PendingSave>,
}

/// A snapshot to write to the prompt cache.
struct PendingSave {
    cache: PromptCache,
    key: String,
    label: String,
    snapshot: KvSnapshot,
}

impl PendingSave {
    /// A cache that cannot be written costs only speed: the answer stands,
    /// and the user is told how to stop trying.
    fn write(self, printer: &Printer) {
        if let Err(error) = self.cache.store(
            &self.key,
            &self.label,
            &self.snapshot.tokens,
            &self.snapshot.state,
        ) {
            printer.warn(&format!(
                "cannot write the prompt cache in {}: {error}; later runs evaluate this prompt \
                 again (--no-cache or {}=0 stops using the cache)",
                self.cache.dir().display(),
                crate::env::OLM_PROMPT_CACHE_MIB,
            ));
        }
    }
}

/// Load the longest cached beginning of the prompt into the session; when
/// more of the reusable beginning (`reusable` tokens) is not cached yet,
/// evaluate it now and keep a snapshot to save after the answer.
fn use_prompt_cache(
    session: &mut Session<'_>,
    tokens: &PromptTokens,
    reusable: usize,
    identity: &str,
    cancel: &AtomicBool,
) -> CachedPrefix {
    let mut outcome = CachedPrefix::default();
    let Some(cache) = PromptCache::from_env().filter(|cache| !cache.is_off()) else {
        return outcome;
    };
    if reusable < MIN_CACHED_TOKENS {
        return outcome;
    }
    let key = format!("{identity}\n{KV_STATE_FORMAT}");
    let ids = tokens.ids();
    let bound = StateBound {
        bytes_per_token: session.state_bytes_per_token_bound(),
        max_tokens: u64::from(session.n_ctx()),
    };
    if let Some(hit) = cache.find(&key, &ids[..reusable], MIN_CACHED_TOKENS, bound) {
        let snapshot = KvSnapshot {
            tokens: hit.tokens,
            state: hit.state,
        };
        match session.restore(&snapshot, hit.matched) {
            Ok(()) => outcome.from_cache = hit.matched,
            Err(error) => tracing::warn!("ignoring a prompt cache entry: {error}"),
        }
    }
    if outcome.from_cache >= reusable {
        return outcome;
    }
    let saved = session
        .prefill_prefix(&tokens.prefix(reusable), cancel)
        .and_then(|evaluated| Ok((evaluated, session.snapshot()?)));
    match saved {
        Ok((evaluated, snapshot)) => {
            outcome.evaluated = evaluated;
            outcome.to_save = Some(PendingSave {
                cache,
                key,
                label: format!("{reusable} tokens"),
                snapshot,
            });
        }
        Err(error) => tracing::warn!("not caching the prompt: {error}"),
    }
    outcome
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

fn report_end(printer: &Printer, args: &GenerationArgs, stats: &Stats, n_ctx: u32) {
    let constrained = args.format.is_some() || args.schema.is_some();
    // A cut JSON answer is an error of its own (check_structured_output_complete).
    if stats.stop_reason == StopReason::ContextFull && !constrained {
        printer.warn(&format!(
            "the answer was cut: the context of {n_ctx} tokens is full; raise --ctx-size"
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

/// A `--format json` or `--schema` answer cut short is not JSON: say so and
/// exit 1, so that `olm run ... | jq` fails loudly under `set -e`.
fn check_structured_output_complete(
    args: &GenerationArgs,
    stats: &Stats,
    n_ctx: u32,
) -> Result<(), IncompleteJson> {
    let constrained = args.format.is_some() || args.schema.is_some();
    match stats.stop_reason {
        StopReason::MaxTokens if constrained => Err(IncompleteJson {
            reason: format!(
                "the answer reached --max-tokens ({}) first",
                stats.generated_tokens
            ),
            hint: "raise --max-tokens (-n)".into(),
        }),
        StopReason::ContextFull if constrained => Err(IncompleteJson {
            reason: format!("the context of {n_ctx} tokens filled up first"),
            hint: "raise --ctx-size (-c)".into(),
        }),
        _ => Ok(()),
    }
}

/// Structured output that stopped before its JSON was complete (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("the JSON is incomplete: {reason}")]
pub struct IncompleteJson {
    reason: String,
    pub hint: String,
}

/// The single object `olm run --json` prints.
#[derive(Debug, Serialize)]
struct JsonReport {
    model: String,
    text: String,
    /// The reasoning (a `<think>` part), when the model wrote one.
    #[serde(skip_serializing_if = "String::is_empty")]
    thinking: String,
    /// With `--tools`: the calls, each `{"id", "type", "function": {"name", "arguments"}}`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCall>,
    stop_reason: StopReason,
    prompt_tokens: usize,
    generated_tokens: usize,
    load_ms: f64,
    time_to_first_token_ms: f64,
    prompt_ms: f64,
    generation_ms: f64,
    prompt_tokens_per_second: f64,
    generation_tokens_per_second: f64,
    /// Speculative decoding: tokens proposed, and how many the model took.
    drafted_tokens: usize,
    accepted_tokens: usize,
    /// Prompt tokens loaded from the prompt cache instead of evaluated.
    prompt_tokens_from_cache: usize,
    /// How the layers were placed over this machine and RPC workers
    /// (`--rpc`, `--tensor-split`).
    #[serde(skip_serializing_if = "Option::is_none")]
    split: Option<crate::engine::rpc::Split>,
}

impl JsonReport {
    fn new(
        path: &Path,
        text: String,
        thinking: String,
        tool_calls: Vec<ToolCall>,
        stats: &Stats,
        load_time: std::time::Duration,
    ) -> Self {
        let millis = |duration: std::time::Duration| duration.as_secs_f64() * 1000.0;
        Self {
            model: path.display().to_string(),
            text,
            thinking,
            tool_calls,
            stop_reason: stats.stop_reason,
            prompt_tokens: stats.prompt_tokens,
            generated_tokens: stats.generated_tokens,
            load_ms: millis(load_time),
            time_to_first_token_ms: millis(stats.time_to_first_token),
            prompt_ms: millis(stats.prompt_time),
            generation_ms: millis(stats.generation_time),
            prompt_tokens_per_second: stats.prompt_tokens_per_second(),
            generation_tokens_per_second: stats.generation_tokens_per_second(),
            drafted_tokens: stats.drafted_tokens,
            accepted_tokens: stats.accepted_tokens,
            prompt_tokens_from_cache: 0,
            split: None,
        }
    }
}
