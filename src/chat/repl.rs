//! The chat loop: read a line (rustyline), run a slash command or answer a
//! message with the loaded model, print, repeat.
//!
//! One engine `Session` lives for as long as one model is loaded, so its KV
//! cache holds the conversation: each turn evaluates only the tokens that are
//! new since the last one. When the conversation outgrows the context, the
//! oldest turns are dropped (never the system prompt) and the rest is
//! evaluated once more, which is said on stderr.
//!
//! Owns: the line editor and its history file, the order of events in a turn,
//! and what the user sees. The answer goes to stdout as it is generated;
//! everything olm says goes to stderr through `ui::Printer`. Must not touch:
//! the server, the hub, the store, `std::process::exit` (Ctrl-C arrives as
//! the `cancel` flag, set by the caller's signal handler).

use std::io::IsTerminal;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{Config, Editor};

use super::command::{self, ShowTopic, SlashCommand, HELP};
use super::conversation::{prompt_budget, Conversation};
use super::input::MultilineInput;
use super::settings;
use super::transcript;
use crate::engine::tools::{OutputParser, Piece, ReasoningMode};
use crate::engine::{
    EngineError, ErrorKind, GenerateRequest, KvSnapshot, LoadOptions, Message, Model, Prompt,
    PromptTokens, Session, SessionOptions, Stats, StopReason, KV_STATE_FORMAT,
};
use crate::gguf::CheckedModel;
use crate::ui::Printer;

/// Context size when `--ctx-size` is not given (capped by what the model was trained for).
const DEFAULT_CONTEXT: u32 = 8192;
/// Largest batch of prompt tokens evaluated at once (llama.cpp's default).
const MAX_BATCH: u32 = 2048;
const PROMPT: &str = ">>> ";
const CONTINUATION_PROMPT: &str = "... ";

/// A model to chat with: the name the user typed and the checked file it
/// resolved to.
#[derive(Debug, Clone)]
pub struct ModelChoice {
    pub name: String,
    pub model: CheckedModel,
    /// The model's bytes, named for the state `/save` keeps beside a
    /// transcript (see `commands::resolve::resolve_model_with_identity`).
    pub identity: String,
}

impl ModelChoice {
    pub fn new(reference: &str, model: CheckedModel, identity: String) -> Self {
        Self {
            name: display_name(reference, model.path()),
            model,
            identity,
        }
    }

    /// The key a saved state of this model must carry to be restored.
    fn state_key(&self) -> String {
        format!("{}\n{KV_STATE_FORMAT}", self.identity)
    }

    fn path(&self) -> &Path {
        self.model.path()
    }
}

/// A path is shown by its file stem (`SmolLM2-135M-Instruct.Q4_1`), a name as typed.
fn display_name(reference: &str, path: &Path) -> String {
    let typed_a_path = Path::new(reference) == path || reference.ends_with(".gguf");
    let stem = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned());
    match stem {
        Some(stem) if typed_a_path => stem,
        _ => reference.to_owned(),
    }
}

/// Resolves `/model NAME` to a checked model file, exactly as the command line does.
pub type Resolver<'a> = dyn Fn(&str) -> anyhow::Result<(CheckedModel, String)> + 'a;

/// Everything a chat needs, resolved by `commands::chat`.
pub struct ChatSetup<'a> {
    pub model: ModelChoice,
    pub load_options: LoadOptions,
    pub request: GenerateRequest,
    pub system: Option<String>,
    /// Context size in tokens; `None`: 8192, or less when the model was trained for less.
    pub ctx_size: Option<u32>,
    pub threads: u32,
    /// Keep the model's reasoning (its `<think>` part) off the terminal.
    pub hide_thinking: bool,
    pub resolve: &'a Resolver<'a>,
}

/// Hold a conversation until `/bye` or Ctrl-D.
pub fn run(setup: ChatSetup<'_>, printer: &Printer, cancel: &AtomicBool) -> anyhow::Result<()> {
    let mut current = setup.model.clone();
    let mut model = load_model(&current, &setup.load_options, printer, cancel)?;
    let mut chat = Chat {
        editor: LineEditor::open(printer)?,
        input: MultilineInput::default(),
        conversation: Conversation::new(setup.system.clone()),
        request: setup.request.clone(),
        last_turn: None,
        evaluated: None,
        hide_thinking: setup.hide_thinking,
        printer,
        cancel,
    };
    loop {
        let Next::Switch(wanted) = chat.converse(&model, &current, &setup)? else {
            return Ok(());
        };
        drop(model);
        model = match load_model(&wanted, &setup.load_options, printer, cancel) {
            Ok(loaded) => {
                current = wanted;
                loaded
            }
            Err(error) => {
                printer.error(
                    &format!("{error:#}"),
                    Some(&format!("back to {}", current.name)),
                );
                load_model(&current, &setup.load_options, printer, cancel)?
            }
        };
    }
}

/// Load a model. llama.cpp cannot stop a load half way, so while it runs
/// the Ctrl-C flag is raised: the handler exits at once (130) on a flag
/// that is already set, instead of the Ctrl-C waiting for the load.
fn load_model(
    choice: &ModelChoice,
    options: &LoadOptions,
    printer: &Printer,
    cancel: &AtomicBool,
) -> anyhow::Result<Model> {
    let _spinner = printer.spinner(&format!("loading {}", choice.name));
    cancel.store(true, Ordering::SeqCst);
    let loaded = Model::load(&choice.model, options)
        .with_context(|| format!("cannot load {}", choice.path().display()));
    cancel.store(false, Ordering::SeqCst);
    loaded
}

/// What happens after a model's conversation loop ends.
enum Next {
    Quit,
    Switch(ModelChoice),
}

/// What one line of input amounted to.
enum Input {
    Message(String),
    Command(SlashCommand),
    Quit,
    Nothing,
}

/// Counts of the last answer, for `/stats`.
struct LastTurn {
    stats: Stats,
    context_used: usize,
}

/// The prompt text of the last turn followed by its answer, and the tokens
/// the session saw and generated for them. The next prompt is tokenized as
/// these tokens plus only what the template adds after them, so the answer
/// keeps the tokens it was generated as and the KV cache matches up to the
/// new message.
struct Evaluated {
    text: String,
    tokens: PromptTokens,
}

/// The chat's state across models.
struct Chat<'a> {
    editor: LineEditor,
    input: MultilineInput,
    conversation: Conversation,
    request: GenerateRequest,
    last_turn: Option<LastTurn>,
    /// What the current session has evaluated; `None` after a model switch.
    evaluated: Option<Evaluated>,
    hide_thinking: bool,
    printer: &'a Printer,
    cancel: &'a AtomicBool,
}

impl Chat<'_> {
    /// Talk with `model` until the user quits or picks another model.
    fn converse(
        &mut self,
        model: &Model,
        choice: &ModelChoice,
        setup: &ChatSetup<'_>,
    ) -> anyhow::Result<Next> {
        let n_ctx = setup
            .ctx_size
            .unwrap_or_else(|| DEFAULT_CONTEXT.min(model.n_ctx_train().max(1)));
        let options = SessionOptions {
            n_ctx,
            threads: setup.threads,
            n_batch: n_ctx.min(MAX_BATCH),
        };
        let mut session = model.session(&options)?;
        self.evaluated = None;
        self.printer.status(&format!(
            "{} · {} context · /help for commands",
            choice.name,
            short_count(session.n_ctx())
        ));
        loop {
            let flow = match self.read()? {
                Input::Nothing => continue,
                Input::Quit => return Ok(Next::Quit),
                Input::Message(text) => {
                    if let Err(error) = self.answer(model, &mut session, text) {
                        self.refuse_message(error)?;
                    }
                    continue;
                }
                Input::Command(command) => {
                    self.run_command(command, model, choice, &mut session, setup)
                }
            };
            if let Some(next) = flow? {
                return Ok(next);
            }
        }
    }

    /// Read one line and say what it means.
    fn read(&mut self) -> anyhow::Result<Input> {
        let prompt = if self.input.is_continuing() {
            CONTINUATION_PROMPT
        } else {
            PROMPT
        };
        let line = match self.editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                if self.input.is_continuing() {
                    self.input.reset();
                    self.printer.status("message discarded");
                } else {
                    self.printer.status("use /bye or Ctrl-D to quit");
                }
                return Ok(Input::Nothing);
            }
            Err(ReadlineError::Eof) => return Ok(Input::Quit),
            Err(error) => return Err(error).context("cannot read from the terminal"),
        };
        let Some(text) = self.input.feed(&line) else {
            return Ok(Input::Nothing);
        };
        if text.trim().is_empty() {
            return Ok(Input::Nothing);
        }
        self.editor.remember(&text, self.printer);
        match command::parse(&text) {
            Some(Ok(command)) => Ok(Input::Command(command)),
            Some(Err(error)) => {
                self.printer.warn(&error.to_string());
                Ok(Input::Nothing)
            }
            None if text.trim_start().starts_with('/') => {
                Ok(Input::Message(text.trim_start().to_owned()))
            }
            None => Ok(Input::Message(text)),
        }
    }

    /// A message the engine could not take (too long for the context, a
    /// template that fails on it, Ctrl-C while it was prepared): say why and
    /// forget it, the conversation goes on. Anything else ends the chat.
    fn refuse_message(&mut self, error: anyhow::Error) -> anyhow::Result<()> {
        let kind = error
            .chain()
            .find_map(|cause| cause.downcast_ref::<EngineError>())
            .map(EngineError::kind);
        match kind {
            Some(ErrorKind::InvalidRequest) => {
                self.printer.warn(&format!("{error:#}"));
                Ok(())
            }
            Some(ErrorKind::Cancelled) => {
                self.printer.status("interrupted; the message was not sent");
                Ok(())
            }
            _ => Err(error),
        }
    }

    /// One turn: fit the conversation into the context, generate, stream.
    fn answer(
        &mut self,
        model: &Model,
        session: &mut Session<'_>,
        text: String,
    ) -> anyhow::Result<()> {
        self.cancel.store(false, Ordering::SeqCst);
        let n_ctx = session.n_ctx();
        // A message that alone cannot fit is refused before it is rendered.
        model
            .prompt_limits()
            .check(&Prompt::Raw(text.clone()), n_ctx)?;
        self.conversation.push_user(text);
        let answered = self.answer_last_message(model, session);
        if answered.is_err() {
            self.conversation.pop_user();
        }
        answered
    }

    /// The rest of a turn, once the user's message is in the conversation.
    fn answer_last_message(
        &mut self,
        model: &Model,
        session: &mut Session<'_>,
    ) -> anyhow::Result<()> {
        let n_ctx = session.n_ctx();
        let budget = prompt_budget(n_ctx, self.request.max_tokens);
        let cancel = self.cancel;
        let trim = self.conversation.trim_to_fit(budget, |messages| {
            match model.tokenize(&Prompt::Chat(messages.to_vec()), n_ctx, cancel) {
                Ok(tokens) => Ok(tokens.len()),
                // Too long to even render: older turns must go.
                Err(EngineError::InputTooLong { .. }) => Ok(usize::MAX),
                Err(error) => Err(error),
            }
        })?;
        if !trim.fits {
            self.conversation.pop_user();
            let length = match trim.prompt_tokens {
                usize::MAX => "too long to render".to_owned(),
                tokens => format!("{tokens} tokens"),
            };
            self.printer.warn(&format!(
                "that message is {length} with the system prompt; the context holds {budget} with room for the answer; \
                 shorten it or restart with a larger --ctx-size"
            ));
            return Ok(());
        }
        if trim.dropped_turns > 0 {
            self.printer.status(&format!(
                "the conversation outgrew the context of {} tokens: dropped the {} oldest turn(s), \
                 kept the system prompt; reading the rest again ({} tokens)",
                session.n_ctx(),
                trim.dropped_turns,
                trim.prompt_tokens
            ));
        }
        let prompt = Prompt::Chat(self.conversation.prompt_messages());
        let rendered = model.render(&prompt, n_ctx, self.cancel)?;
        // A message that spells control tokens is text: the whole prompt is
        // tokenized again so that it stays so.
        let plain = self
            .conversation
            .turns()
            .last()
            .is_none_or(|message| !model.spells_control_token(&message.content));
        let tokens = match self.evaluated.take() {
            Some(evaluated) if plain && rendered.starts_with(&evaluated.text) => {
                model.tokenize_after(&evaluated.tokens, &rendered[evaluated.text.len()..])?
            }
            _ => model.tokenize_prompt_rendered(&prompt, &rendered, n_ctx, self.cancel)?,
        };
        let reasoning = model.chat_traits().reasoning(None);
        let (answer, stats) = self.generate(session, &tokens, reasoning)?;
        self.evaluated = Some(Evaluated {
            text: rendered + &answer,
            tokens: session.transcript(),
        });
        self.conversation.push_assistant(answer);
        self.report_stop(&stats, session.n_ctx());
        self.last_turn = Some(LastTurn {
            stats,
            context_used: session.cached_tokens(),
        });
        Ok(())
    }

    /// Stream the answer to stdout, its reasoning (a `<think>` part) dimmed
    /// to stderr unless hidden; returns its text exactly as generated.
    fn generate(
        &mut self,
        session: &mut Session<'_>,
        tokens: &PromptTokens,
        reasoning: ReasoningMode,
    ) -> anyhow::Result<(String, Stats)> {
        self.cancel.store(false, Ordering::SeqCst);
        let mut spinner = self.printer.spinner("thinking");
        let mut answer = String::new();
        let mut shown = Shown {
            printer: self.printer,
            hide_thinking: self.hide_thinking,
            stdout: io::stdout().lock(),
            thinking_open: false,
            content_ends_with_newline: true,
        };
        let mut parser = OutputParser::new(reasoning, None);
        let result = session.generate(tokens, &self.request, self.cancel, |piece| {
            spinner.finish();
            answer.push_str(piece);
            shown.take(parser.push(piece))
        });
        spinner.finish();
        self.cancel.store(false, Ordering::SeqCst);
        let stats = result?.context("cannot write the answer to stdout")?;
        shown
            .take(parser.finish().0)
            .context("cannot write the answer to stdout")?;
        shown.end_thinking();
        let Shown {
            mut stdout,
            content_ends_with_newline,
            ..
        } = shown;
        if !answer.is_empty() && !content_ends_with_newline
            || stats.stop_reason == StopReason::Cancelled
        {
            stdout
                .write_all(b"\n")
                .context("cannot write the answer to stdout")?;
        }
        stdout
            .flush()
            .context("cannot write the answer to stdout")?;
        Ok((answer, stats))
    }

    fn report_stop(&self, stats: &Stats, n_ctx: u32) {
        match stats.stop_reason {
            StopReason::Cancelled => self
                .printer
                .status("stopped; the partial answer stays in the conversation"),
            StopReason::ContextFull => self.printer.warn(&format!(
                "the answer was cut: the context of {n_ctx} tokens is full; \
                 the oldest turns will be dropped on your next message"
            )),
            _ => {}
        }
    }

    /// Run a slash command; `Some` ends this model's loop.
    fn run_command(
        &mut self,
        command: SlashCommand,
        model: &Model,
        choice: &ModelChoice,
        session: &mut Session<'_>,
        setup: &ChatSetup<'_>,
    ) -> anyhow::Result<Option<Next>> {
        let printer = self.printer;
        match command {
            SlashCommand::Help => printer.status(HELP),
            SlashCommand::Bye => return Ok(Some(Next::Quit)),
            SlashCommand::Clear => {
                self.conversation.clear();
                printer.status("conversation cleared (the system prompt stays)");
            }
            SlashCommand::System(system) => {
                let message = if system.is_some() {
                    "system prompt set"
                } else {
                    "system prompt removed"
                };
                self.conversation.set_system(system);
                printer.status(message);
            }
            SlashCommand::Set(setting) => {
                setting.apply(&mut self.request);
                printer.status(&format!(
                    "set {}",
                    describe_params(&self.request, Some(setting))
                ));
            }
            SlashCommand::Show(topic) => self.show(topic, model, choice, session)?,
            SlashCommand::Stats => self.show_stats(session),
            SlashCommand::Save(path) => self.save(&path, choice, session),
            SlashCommand::Load(path) => self.load(&path, choice, session),
            SlashCommand::Model(name) => match (setup.resolve)(&name) {
                Ok((checked, identity)) => {
                    return Ok(Some(Next::Switch(ModelChoice::new(
                        &name, checked, identity,
                    ))))
                }
                Err(error) => printer.error(
                    &format!("{error:#}"),
                    Some("the conversation goes on with the current model"),
                ),
            },
        }
        Ok(None)
    }

    fn show(
        &self,
        topic: ShowTopic,
        model: &Model,
        choice: &ModelChoice,
        session: &Session<'_>,
    ) -> anyhow::Result<()> {
        let text = match topic {
            ShowTopic::Info => format!(
                "model: {} ({}, {:.0} MiB)\nfile: {}\ncontext: {} tokens (trained for {})\nconversation: {} messages",
                choice.name,
                model.description(),
                model.size() as f64 / f64::from(1 << 20),
                choice.path().display(),
                session.n_ctx(),
                model.n_ctx_train(),
                self.conversation.turns().len()
            ),
            ShowTopic::Params => describe_params(&self.request, None),
            ShowTopic::System => self.conversation.system().unwrap_or("(no system prompt)").to_owned(),
            ShowTopic::Template => {
                let mut messages = self.conversation.prompt_messages();
                messages.push(Message::new("user", "(your next message)"));
                let rendered = model.render(&Prompt::Chat(messages), session.n_ctx(), self.cancel)?;
                format!("the conversation as the model sees it:\n{rendered}")
            }
        };
        self.printer.status(&text);
        Ok(())
    }

    fn show_stats(&self, session: &Session<'_>) {
        let context = format!(
            "context: {} of {} tokens used",
            session.cached_tokens(),
            session.n_ctx()
        );
        let Some(last) = &self.last_turn else {
            self.printer.status(&format!("no answer yet; {context}"));
            return;
        };
        let stats = &last.stats;
        self.printer.status(&format!(
            "prompt: {} tokens, {} evaluated ({} from cache) at {:.1} t/s\n\
             answer: {} tokens at {:.1} t/s, first token after {} ms, stop: {}\n\
             drafting: {} of {} drafted tokens accepted\n\
             context: {} of {} tokens used",
            stats.prompt_tokens,
            stats.prompt_tokens_evaluated,
            stats
                .prompt_tokens
                .saturating_sub(stats.prompt_tokens_evaluated),
            stats.prompt_tokens_per_second(),
            stats.generated_tokens,
            stats.generation_tokens_per_second(),
            stats.time_to_first_token.as_millis(),
            stop_reason_name(stats.stop_reason),
            stats.accepted_tokens,
            stats.drafted_tokens,
            last.context_used,
            session.n_ctx(),
        ));
    }

    /// `/save FILE`: the transcript; for a JSON transcript, the model's
    /// state too (`FILE` with the extension `.kv`), so `/load` need not read
    /// the conversation again.
    fn save(&self, path: &Path, choice: &ModelChoice, session: &Session<'_>) {
        if let Err(error) = transcript::save(path, &choice.name, &self.conversation) {
            return self.printer.error(&error.to_string(), None);
        }
        let messages = self.conversation.prompt_messages().len();
        let state = transcript::is_json(path)
            .then(|| save_state(&state_path(path), choice, session))
            .transpose();
        match state {
            Ok(Some(tokens)) => self.printer.status(&format!(
                "saved {messages} messages to {} and the model's state ({tokens} tokens) to {}",
                path.display(),
                state_path(path).display()
            )),
            Ok(None) => self
                .printer
                .status(&format!("saved {messages} messages to {}", path.display())),
            Err(error) => self.printer.warn(&format!(
                "saved {messages} messages to {}, but not the model's state: {error:#}",
                path.display()
            )),
        }
    }

    /// `/load FILE.json`: the transcript, and the model's state saved with
    /// it when it is this model's, intact and fits this context.
    fn load(&mut self, path: &Path, choice: &ModelChoice, session: &mut Session<'_>) {
        let conversation = match transcript::load(path) {
            Ok(conversation) => conversation,
            Err(error) => return self.printer.error(&error.to_string(), None),
        };
        self.conversation = conversation;
        let messages = self.conversation.prompt_messages().len();
        let restored = restore_state(&state_path(path), choice, session);
        self.evaluated = None;
        match restored {
            Some(tokens) => self.printer.status(&format!(
                "loaded {messages} messages from {} and the model's state ({tokens} tokens): \
                 it continues without reading them again",
                path.display()
            )),
            None => self.printer.status(&format!(
                "loaded {messages} messages from {}; the model reads them with your next message",
                path.display()
            )),
        }
    }
}

/// Where a transcript's model state is kept: `talk.json` → `talk.kv`.
fn state_path(transcript: &Path) -> PathBuf {
    transcript.with_extension("kv")
}

/// The most bytes of state `/load` reads.
const MAX_STATE_BYTES: u64 = 16 << 30;

/// Write the session's state beside a transcript; returns its token count.
fn save_state(path: &Path, choice: &ModelChoice, session: &Session<'_>) -> anyhow::Result<usize> {
    let snapshot = session.snapshot()?;
    crate::promptcache::write_file(
        path,
        &choice.state_key(),
        &choice.name,
        &snapshot.tokens,
        &snapshot.state,
    )
    .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(snapshot.tokens.len())
}

/// Restore the state saved beside a transcript, if there is one this model
/// can use; returns its token count. Anything else (no file, another model,
/// a damaged file, too large for the context) restores nothing.
fn restore_state(path: &Path, choice: &ModelChoice, session: &mut Session<'_>) -> Option<usize> {
    let bound = crate::promptcache::StateBound {
        bytes_per_token: session.state_bytes_per_token_bound(),
        max_tokens: u64::from(session.n_ctx()),
    };
    let (tokens, state) =
        crate::promptcache::read_file(path, &choice.state_key(), MAX_STATE_BYTES, bound).ok()?;
    if tokens.len() >= session.n_ctx() as usize {
        return None;
    }
    let snapshot = KvSnapshot { tokens, state };
    session.restore(&snapshot, snapshot.tokens.len()).ok()?;
    Some(snapshot.tokens.len())
}

/// `temperature = 0.8, top-k = 40, ...`, or only the one just set.
fn describe_params(request: &GenerateRequest, only: Option<settings::Setting>) -> String {
    let wanted = only.map(|setting| setting.parameter());
    settings::describe(request)
        .into_iter()
        .filter(|(parameter, _)| wanted.is_none_or(|wanted| wanted == *parameter))
        .map(|(parameter, value)| format!("{parameter} = {value}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn stop_reason_name(reason: StopReason) -> &'static str {
    match reason {
        StopReason::Eog => "end of turn",
        StopReason::MaxTokens => "max-tokens",
        StopReason::ContextFull => "context full",
        StopReason::StopSequence => "stop sequence",
        StopReason::Cancelled => "cancelled",
    }
}

/// 8192 -> "8k", 32768 -> "32k", 1000 -> "1000".
fn short_count(tokens: u32) -> String {
    if tokens >= 1024 && tokens.is_multiple_of(1024) {
        format!("{}k", tokens / 1024)
    } else {
        tokens.to_string()
    }
}

/// rustyline with olm's history file.
struct LineEditor {
    editor: Editor<(), FileHistory>,
    history_file: Option<PathBuf>,
    history_warned: bool,
}

impl LineEditor {
    fn open(printer: &Printer) -> anyhow::Result<Self> {
        let config = Config::builder()
            .auto_add_history(false)
            .max_history_size(10_000)
            .and_then(|builder| builder.history_ignore_dups(true))
            .context("cannot configure the line editor")?
            .build();
        let mut editor = keep_interrupt_handler(|| Editor::with_config(config))
            .context("cannot start the line editor")?
            .context("cannot start the line editor")?;
        // Lines piped in by a script are not the user's history.
        let history_file = std::io::stdin()
            .is_terminal()
            .then(super::history_file)
            .flatten();
        if let Some(path) = history_file.as_deref().filter(|path| path.exists()) {
            if let Err(error) = editor.load_history(path) {
                printer.warn(&format!(
                    "cannot read the chat history {}: {error}",
                    path.display()
                ));
            }
        }
        Ok(Self {
            editor,
            history_file,
            history_warned: false,
        })
    }

    fn readline(&mut self, prompt: &str) -> Result<String, ReadlineError> {
        self.editor.readline(prompt)
    }

    /// Add an entry to the history and append it to the history file.
    fn remember(&mut self, entry: &str, printer: &Printer) {
        // An entry the history ignores (a duplicate) needs no saving.
        if !self.editor.add_history_entry(entry).unwrap_or(false) {
            return;
        }
        let Some(path) = &self.history_file else {
            return;
        };
        let result = match path.parent() {
            Some(parent) => std::fs::create_dir_all(parent).map_err(ReadlineError::from),
            None => Ok(()),
        }
        .and_then(|()| self.editor.append_history(path));
        if let Err(error) = result {
            if !self.history_warned {
                printer.warn(&format!(
                    "cannot write the chat history {}: {error}",
                    path.display()
                ));
                self.history_warned = true;
            }
        }
    }
}

/// Run `create` (which makes a rustyline editor) and put back the SIGINT
/// handler that was installed before it.
///
/// rustyline takes SIGINT over for as long as an editor lives, to wake its
/// reader; but at the prompt the terminal is in raw mode, where Ctrl-C is a
/// key and never a signal. While the model answers the terminal is in cooked
/// mode, and SIGINT must reach olm's cancel flag (set by `signal-hook`),
/// so olm restores that handler. (rustyline's own `signal-hook` feature
/// would avoid this, but in 17.0 it loses typed-ahead input: its reader
/// waits on the terminal while keys sit in its buffer.)
fn keep_interrupt_handler<T>(create: impl FnOnce() -> T) -> io::Result<T> {
    // SAFETY: an all-zero sigaction is a valid value to be overwritten.
    let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: with a null new action, sigaction only reads the current one.
    if unsafe { libc::sigaction(libc::SIGINT, std::ptr::null(), &mut previous) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let created = create();
    // SAFETY: re-installs, unchanged, the action the kernel just gave us.
    if unsafe { libc::sigaction(libc::SIGINT, &previous, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(created)
}

/// Where an answer's pieces are shown: content on stdout, reasoning dimmed
/// on stderr (unless hidden).
struct Shown<'a> {
    printer: &'a Printer,
    hide_thinking: bool,
    stdout: io::StdoutLock<'static>,
    /// Reasoning was shown and not yet ended with a line break.
    thinking_open: bool,
    content_ends_with_newline: bool,
}

impl Shown<'_> {
    fn take(&mut self, pieces: Vec<Piece>) -> io::Result<()> {
        for piece in pieces {
            match piece {
                Piece::Reasoning(text) => {
                    if !self.hide_thinking {
                        self.printer.thinking(&text);
                        self.thinking_open = true;
                    }
                }
                Piece::Content(text) => {
                    self.end_thinking();
                    self.content_ends_with_newline = text.ends_with('\n');
                    let shown = self.printer.stdout_text(&text);
                    self.stdout.write_all(shown.as_bytes())?;
                }
                // A chat offers no tools: no calls are read.
                Piece::Call(_) => {}
            }
        }
        self.stdout.flush()
    }

    fn end_thinking(&mut self) {
        if self.thinking_open {
            self.printer.thinking("\n");
            self.thinking_open = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_shows_as_its_file_stem_and_a_name_as_typed() {
        let path = Path::new("/models/SmolLM2.Q4_1.gguf");
        assert_eq!(
            display_name("/models/SmolLM2.Q4_1.gguf", path),
            "SmolLM2.Q4_1"
        );
        assert_eq!(display_name("smollm2", path), "smollm2");
    }

    #[test]
    fn context_sizes_read_short() {
        assert_eq!(short_count(8192), "8k");
        assert_eq!(short_count(32768), "32k");
        assert_eq!(short_count(1000), "1000");
    }
}
