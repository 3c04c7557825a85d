//! The inference engine: the only module that talks to llama.cpp.
//!
//! Owns: the llama.cpp backend (initialised once per process), loading models,
//! tokenizing, chat templates, sampling and the generation loop. It emits text
//! pieces and statistics through plain callbacks and values.
//!
//! Must not touch: terminals, HTTP, the model store, `std::process::exit`.
//! Inputs are checked before they reach llama.cpp, which aborts the process on
//! some invalid ones (token ids, positions, batch sizes).

mod abort;
mod admission;
mod bench;
mod draft;
mod embed;
mod generate;
mod limits;
mod partition;
mod plain_text;
pub mod rpc;
mod sampling;
mod scheduler;
mod schema;
mod state;
mod template;
mod text;
mod tokenize;
pub mod tools;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

pub use bench::{BenchContext, BenchParams, CopyRun};
pub use draft::{DraftConfig, DraftMode, DEFAULT_DRAFT_MAX, MAX_DRAFT_MAX};
pub use embed::{embed, embedding_refusal, normalize, EmbedOptions, Embedded};
pub use generate::{GenerateRequest, Session, SessionOptions, Stats, StopReason};
pub use sampling::{Constraint, SamplingConfig};
pub use scheduler::{
    Event, EventSink, Scheduler, SchedulerError, SchedulerMetrics, SchedulerOptions,
};
pub use template::{serve_template_process, ChatOptions, Message, TemplateError, TemplateSource};
pub use tools::ChatTraits;

pub use abort::{install_abort_handler, AbortPolicy};
pub use limits::{check_prompt_fits, PromptLimits};
pub use state::{KvSnapshot, KV_STATE_FORMAT};

use crate::gguf::CheckedModel;
use abort::LoadingGuard;
use template::ChatTemplate;

/// Errors from the engine. Each carries what a user needs to act on it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("llama.cpp could not be initialised: {0}")]
    Backend(String),
    #[error("llama.cpp could not load {path}")]
    Load { path: PathBuf },
    #[error("llama.cpp could not create a context of {n_ctx} tokens: {reason}")]
    Context { n_ctx: u32, reason: String },
    #[error(
        "context length exceeded: the prompt is {prompt_tokens} tokens but the context \
         holds {n_ctx} (this model supports up to {n_ctx_train})"
    )]
    PromptTooLong {
        prompt_tokens: usize,
        n_ctx: u32,
        n_ctx_train: u32,
    },
    #[error(
        "the input is {tokens} tokens; this model embeds at most {limit} (bounded by the \
         context, the model's trained context and the memory of one output per token and \
         vocabulary entry); send shorter inputs or truncate them"
    )]
    EmbeddingInputTooLong { tokens: usize, limit: usize },
    #[error(
        "{count} messages spell the model's control tokens (such as its turn markers); \
         olm keeps such text as plain text for at most {limit} messages of a prompt"
    )]
    SpecialTextInMessages { count: usize, limit: usize },
    #[error(
        "message {message} spells the model's control tokens, which olm keeps as plain \
         text, but this chat template rewrites it so that olm cannot find it in the prompt"
    )]
    SpecialTextRewritten { message: usize },
    #[error(
        "a context of {n_ctx} tokens needs about {needed_mib} MiB for its keys and values, \
         and {available_mib} MiB of memory is available; lower --ctx-size"
    )]
    ContextTooLarge {
        n_ctx: u32,
        needed_mib: u64,
        available_mib: u64,
    },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the input is {bytes} bytes; the limit is {limit} bytes")]
    InputTooLarge { bytes: usize, limit: usize },
    #[error("the input ({input}) cannot fit a context of {n_ctx} tokens")]
    InputTooLong { input: String, n_ctx: u32 },
    #[error("interrupted")]
    Cancelled,
    #[error("invalid JSON schema: {0}")]
    InvalidSchema(String),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("llama.cpp failed while evaluating: {0}")]
    Decode(String),
    #[error(
        "the text holds {chars} characters in a row without a change between whitespace \
         and other characters; this model's tokenizer takes at most {limit}"
    )]
    RunTooLong { chars: usize, limit: usize },
    #[error(
        "the model computed values that are not numbers (NaN or infinite) for {what}: its \
         weights are damaged, or it overflows at this precision"
    )]
    NonFiniteOutput { what: &'static str },
    #[error("{0}")]
    CannotEmbed(String),
    #[error(transparent)]
    Rpc(#[from] rpc::RpcError),
}

/// What kind of failure an [`EngineError`] is, for whoever answers the user
/// (a command's exit code, the server's HTTP status). It crosses the worker
/// process boundary, so its names are the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request cannot be served as asked: a prompt too long or empty, a
    /// schema that is not valid, a template that fails on this input.
    InvalidRequest,
    /// The model file cannot be used: refused by the check, or llama.cpp
    /// could not load it.
    UnusableModel,
    /// Not now: every place in the queue is taken, or preparing the prompt
    /// ran out of time; the same request may succeed later.
    Busy,
    /// The model is being unloaded or the process is stopping.
    ShuttingDown,
    /// The caller (or the client) cancelled.
    Cancelled,
    /// Anything else, such as llama.cpp failing while evaluating.
    Internal,
}

impl EngineError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::PromptTooLong { .. }
            | EngineError::EmbeddingInputTooLong { .. }
            | EngineError::SpecialTextInMessages { .. }
            | EngineError::ContextTooLarge { .. }
            | EngineError::SpecialTextRewritten { .. }
            | EngineError::EmptyPrompt
            | EngineError::InputTooLarge { .. }
            | EngineError::InputTooLong { .. }
            | EngineError::InvalidSchema(_)
            | EngineError::RunTooLong { .. }
            | EngineError::CannotEmbed(_) => ErrorKind::InvalidRequest,
            EngineError::Template(TemplateError::Cancelled) | EngineError::Cancelled => {
                ErrorKind::Cancelled
            }
            EngineError::Template(TemplateError::Process(_)) => ErrorKind::Internal,
            EngineError::Template(_) => ErrorKind::InvalidRequest,
            EngineError::Load { .. } | EngineError::NonFiniteOutput { .. } => {
                ErrorKind::UnusableModel
            }
            EngineError::Backend(_) | EngineError::Context { .. } | EngineError::Decode(_) => {
                ErrorKind::Internal
            }
            EngineError::Rpc(error) if error.is_usage() => ErrorKind::InvalidRequest,
            EngineError::Rpc(_) => ErrorKind::Internal,
        }
    }
}

/// The llama.cpp backend, created once per process.
fn backend() -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();
    if let Some(backend) = BACKEND.get() {
        return Ok(backend);
    }
    let backend = LlamaBackend::init().map_err(|error| EngineError::Backend(error.to_string()))?;
    Ok(BACKEND.get_or_init(|| backend))
}

/// Route llama.cpp's log lines to `tracing` (shown with `--verbose`) or
/// silence them. Call before loading anything.
pub fn configure_logging(verbose: bool) {
    llama_cpp_2::send_logs_to_tracing(
        llama_cpp_2::LogOptions::default().with_logs_enabled(verbose),
    );
}

/// The llama-cpp-sys-2 release whose vendored llama.cpp this build links.
pub const LLAMA_CPP_SYS_VERSION: &str = "0.1.161";

/// olm's patches to that llama.cpp, by file name (patches/llama-cpp-sys-2;
/// scripts/vendor-llama.sh applies them). None changes the KV state format;
/// 0004 changes attention's rounding, so the prompt cache's key
/// ([`KV_STATE_FORMAT`]) names every patch.
pub const LLAMA_CPP_PATCHES: &[&str] = &[
    "0001-metadata-dump-formats-only-what-it-shows",
    "0002-vocab-names-compare-lengths-first",
    "0003-q4_1-batches-in-register-tiles",
    "0004-attention-by-key-blocks-in-spans",
    "0005-small-batches-sum-as-one-token",
    "0006-model-loads-without-string-lookups",
    "0007-few-columns-in-one-pass-over-the-weights",
    "0008-a-graph-kept-for-each-recent-batch-shape",
    "0009-rows-unpacked-once-for-all-columns",
];

/// How `--version` and `doctor` name the llama.cpp this build links.
pub fn llama_cpp_description() -> String {
    format!(
        "vendored by llama-cpp-sys-2 {LLAMA_CPP_SYS_VERSION}, with {} patches of olm's ({})",
        LLAMA_CPP_PATCHES.len(),
        LLAMA_CPP_PATCHES.join(", ")
    )
}

/// llama.cpp's system line: the CPU features and backends it was built with,
/// e.g. `CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | ...`.
pub fn system_info() -> String {
    // SAFETY: llama_print_system_info returns a pointer to a static,
    // NUL-terminated buffer owned by llama.cpp.
    let info = unsafe { std::ffi::CStr::from_ptr(llama_cpp_sys_2::llama_print_system_info()) };
    info.to_string_lossy().trim().to_owned()
}

/// The compute devices llama.cpp can use, e.g. `CPU (AMD EPYC)`, `CUDA0 (NVIDIA H100)`.
pub fn devices() -> Vec<String> {
    llama_cpp_2::list_llama_ggml_backend_devices()
        .into_iter()
        .map(|device| format!("{} ({})", device.name, device.description))
        .collect()
}

/// Physical CPU cores (llama.cpp's own default for threads): hyperthread
/// siblings share a core's math units and slow each other down.
pub fn physical_cores() -> u32 {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") else {
        return logical;
    };
    let mut cores = std::collections::HashSet::new();
    let mut physical_id = String::new();
    for line in cpuinfo.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "physical id" => physical_id = value.trim().to_owned(),
            "core id" => {
                cores.insert((physical_id.clone(), value.trim().to_owned()));
            }
            _ => {}
        }
    }
    match cores.len() {
        0 => logical,
        found => (found as u32).min(logical),
    }
}

/// How to load a model.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LoadOptions {
    /// Layers to offload to a GPU; `None` keeps llama.cpp's default.
    pub gpu_layers: Option<u32>,
    /// Chat template to use instead of the model's own.
    pub chat_template: Option<TemplateSource>,
    /// RPC workers whose devices take layers (`--rpc`, names already looked up).
    #[serde(default)]
    pub rpc: Vec<std::net::SocketAddrV4>,
    /// `--tensor-split`: a weight for this machine's CPU, then for each
    /// offload device (local GPUs, then the workers'); empty: by memory.
    #[serde(default)]
    pub tensor_split: Vec<f32>,
}

/// Size and threading of a llama.cpp context. Every context olm creates goes
/// through [`Model::create_context`], so all of them are set up alike.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ContextShape {
    pub n_ctx: u32,
    pub n_batch: u32,
    pub n_ubatch: u32,
    /// Sequences with separate KV ranges (llama.cpp's `n_seq_max`).
    pub sequences: u32,
    pub threads: u32,
}

/// A prompt: either a conversation rendered with the chat template, or raw text.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Prompt {
    Chat(Vec<Message>),
    /// A conversation rendered with tools, a thinking switch or more template variables.
    ChatWith(Vec<Message>, Box<ChatOptions>),
    Raw(String),
}

/// Tokens of a prompt, ready for [`Session::generate`].
#[derive(Debug, Clone, Default)]
pub struct PromptTokens {
    tokens: Vec<LlamaToken>,
}

impl PromptTokens {
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// The first `count` tokens (all of them when there are fewer).
    pub fn prefix(&self, count: usize) -> Self {
        Self {
            tokens: self.tokens[..count.min(self.tokens.len())].to_vec(),
        }
    }

    /// Tokens from ids the caller made (benchmarks); ids must be below the
    /// vocabulary size.
    /// Tokens of a prompt, which must have some.
    fn non_empty(tokens: Vec<LlamaToken>) -> Result<Self, EngineError> {
        if tokens.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        Ok(Self { tokens })
    }

    pub(crate) fn from_ids(ids: &[i32]) -> Self {
        Self {
            tokens: ids.iter().map(|&id| LlamaToken(id)).collect(),
        }
    }

    /// The token ids, as a prompt cache stores them.
    pub fn ids(&self) -> Vec<i32> {
        self.tokens.iter().map(|token| token.0).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// A request made ready for the decode loop by [`Model::prepare`].
#[derive(Debug)]
pub struct Prepared {
    tokens: PromptTokens,
    sampler: sampling::PreparedSampler,
}

impl Prepared {
    /// Tokens in the prompt.
    pub fn prompt_tokens(&self) -> usize {
        self.tokens.len()
    }
}

/// Largest prompt text accepted (llama.cpp's tokenizer counts in i32).
const MAX_PROMPT_BYTES: usize = 256 << 20;

/// A loaded model (weights memory-mapped) with its chat template.
pub struct Model {
    inner: LlamaModel,
    template: ChatTemplate,
    description: String,
    limits: PromptLimits,
    /// The context the model was trained for (see [`trained_context`]).
    n_ctx_train: u32,
    /// Where the layers went, when they were placed over several devices.
    split: Option<rpc::Split>,
    /// First bytes of the control tokens' texts (see `plain_text`), found
    /// once, when a chat prompt is first tokenized.
    control_first_bytes: std::sync::OnceLock<[bool; 256]>,
    /// The vocabulary's special tokens, for cutting long texts (see
    /// `partition`); `None` where olm cannot cut as llama.cpp does.
    specials: std::sync::OnceLock<Option<partition::Specials>>,
}

/// The trained context a file claims (a `u32` key, so up to 2^32-1), as olm
/// uses it: at least 1 and at most `i32::MAX`. llama.cpp hands the value out
/// as an `i32`, and llama-cpp-2 panics on the negative number a claim of
/// 2^31 or more becomes; nothing olm sizes comes near either bound.
fn trained_context(claimed: u64) -> u32 {
    u32::try_from(claimed.clamp(1, i32::MAX as u64)).unwrap_or(1)
}

impl std::fmt::Debug for Model {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Model")
            .field("description", &self.description)
            .finish()
    }
}

impl Model {
    /// Load a model file that passed olm's check: llama.cpp trusts what the
    /// file says. An abort inside llama.cpp while it loads ends the process
    /// with one error line naming the file (see [`install_abort_handler`]).
    pub fn load(model: &CheckedModel, options: &LoadOptions) -> Result<Self, EngineError> {
        // The template text is in the header: start its process now, while
        // llama.cpp loads the weights, rather than at the first prompt.
        let jinja = match &options.chat_template {
            Some(TemplateSource::Jinja(text)) => Some(text.as_str()),
            Some(TemplateSource::Builtin(_)) => None,
            None => model.header().chat_template(),
        };
        if let Some(text) = jinja {
            template::prestart(text);
        }
        Self::load_path(model.path(), Some(model.header()), options)
    }

    /// Tests only (debug builds): load a file without olm's check, to prove
    /// that an abort inside llama.cpp is contained where it must be.
    #[cfg(debug_assertions)]
    pub fn load_unchecked(path: &Path, options: &LoadOptions) -> Result<Self, EngineError> {
        let header = crate::gguf::inspect(path).ok();
        Self::load_path(path, header.as_ref(), options)
    }

    /// Load `path`, whose `header` olm has read (and, but in tests, checked).
    fn load_path(
        path: &Path,
        header: Option<&crate::gguf::GgufFile>,
        options: &LoadOptions,
    ) -> Result<Self, EngineError> {
        let limits = header.map_or_else(PromptLimits::unknown, PromptLimits::from_header);
        let n_layer = header.and_then(|header| header.block_count());
        let backend = backend()?;
        // Workers first: one that cannot be used is named before the load.
        let placement = if options.rpc.is_empty() && options.tensor_split.is_empty() {
            None
        } else {
            let attached = rpc::attach(&options.rpc)?;
            let n_layer =
                n_layer
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| EngineError::Load {
                        path: path.to_owned(),
                    })?;
            Some(rpc::place(
                n_layer,
                &attached,
                options.gpu_layers,
                &options.tensor_split,
            )?)
        };
        let _loading = LoadingGuard::new(path);
        #[cfg(debug_assertions)]
        abort::inject_test_fault();
        let mut params = LlamaModelParams::default().with_use_mmap(true);
        if let Some(placement) = &placement {
            params = params
                .with_n_gpu_layers(placement.n_gpu_layers)
                .with_devices(&placement.devices)
                .map_err(|error| EngineError::Backend(error.to_string()))?;
        } else if let Some(layers) = options.gpu_layers {
            params = params.with_n_gpu_layers(layers);
        }
        let watch = placement.as_ref().map(rpc::LoadWatch::start).transpose()?;
        if let Some(watch) = &watch {
            // Each tensor loaded moves the deadline on (see rpc::LoadWatch).
            let timeout = watch.timeout();
            params = params.with_progress_callback(move |_| {
                rpc::LoadWatch::progress(timeout);
                true
            });
        }
        let loaded = LlamaModel::load_from_file(backend, path, &params);
        drop(watch);
        let inner = loaded.map_err(|_| EngineError::Load {
            path: path.to_owned(),
        })?;
        let source = match &options.chat_template {
            Some(source) => source.clone(),
            None => match inner
                .chat_template(None)
                .ok()
                .and_then(|t| t.to_string().ok())
            {
                Some(text) => TemplateSource::Jinja(text),
                None => default_template(&inner),
            },
        };
        let template = ChatTemplate::new(&inner, source)?;
        let description = describe_model(&inner);
        let n_ctx_train = match header.and_then(|header| header.context_length()) {
            Some(claimed) => trained_context(claimed),
            None => inner.n_ctx_train(),
        };
        Ok(Self {
            n_ctx_train,
            inner,
            template,
            description,
            limits,
            split: placement.map(|placement| placement.split),
            control_first_bytes: std::sync::OnceLock::new(),
            specials: std::sync::OnceLock::new(),
        })
    }

    /// How the layers were placed over devices (`--rpc`, `--tensor-split`).
    pub fn split(&self) -> Option<&rpc::Split> {
        self.split.as_ref()
    }

    /// For a process about to exit: end the template process, and leave
    /// the weights and the vocabulary to the kernel. Freeing them (hundreds
    /// of thousands of token strings, their maps) would only delay the exit.
    pub fn release_at_exit(self) {
        let Self {
            inner, template, ..
        } = self;
        drop(template);
        std::mem::forget(inner);
    }

    /// What the vocabulary says about how much input can fit a context.
    pub fn prompt_limits(&self) -> PromptLimits {
        self.limits
    }

    /// Bytes of weights llama.cpp puts on a GPU with `gpu_layers` (its
    /// default when `None`: every layer): 0 without a GPU device.
    pub fn size_on_gpu(&self, gpu_layers: Option<u32>) -> u64 {
        if !has_gpu_device() {
            return 0;
        }
        // The output layer counts as one more.
        let layers = u64::from(self.inner.n_layer()) + 1;
        if let Some(split) = &self.split {
            // Split with RPC workers: only this machine's GPUs count.
            let here: u64 = split
                .devices
                .iter()
                .filter(|share| share.endpoint.is_none() && share.device != "CPU")
                .map(|share| u64::from(share.layers) + u64::from(share.output))
                .sum();
            return self.size() / layers * here;
        }
        let offloaded = gpu_layers.map_or(layers, |count| u64::from(count).min(layers));
        self.size() / layers * offloaded
    }

    /// What the chat template does with tools and reasoning (probed once,
    /// in the template process).
    pub fn chat_traits(&self) -> ChatTraits {
        self.template.traits()
    }

    /// How to read the reasoning of an answer to `rendered` (this model's
    /// template rendered with its defaults), without probing the template.
    pub fn reasoning_after(&self, rendered: &str) -> tools::ReasoningMode {
        self.template.reasoning_after(rendered)
    }

    /// e.g. `llama 135M Q4_1`, as llama.cpp describes the model.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The context length the model was trained with.
    pub fn n_ctx_train(&self) -> u32 {
        self.n_ctx_train
    }

    /// Entries in the model's vocabulary.
    pub fn n_vocab(&self) -> u32 {
        u32::try_from(self.inner.n_vocab()).unwrap_or(0)
    }

    /// Width of the vectors the model embeds text as.
    pub fn embedding_size(&self) -> u32 {
        u32::try_from(self.inner.n_embd_out()).unwrap_or(0)
    }

    pub fn n_params(&self) -> u64 {
        self.inner.n_params()
    }

    /// Whether `token` ends the model's turn.
    pub(crate) fn is_end_of_generation(&self, token: LlamaToken) -> bool {
        self.inner.vocab().is_eog(token)
    }

    /// `config`, or no drafting for a model whose memory cannot drop the
    /// positions of a rejected draft (recurrent and hybrid models).
    pub(crate) fn draft_config(&self, config: DraftConfig) -> DraftConfig {
        if self.inner.is_recurrent() || self.inner.is_hybrid() {
            DraftConfig {
                mode: DraftMode::Off,
                ..config
            }
        } else {
            config
        }
    }

    /// The bytes `token` stands for, into `buffer` (cleared first).
    pub(crate) fn token_bytes(&self, token: LlamaToken, buffer: &mut Vec<u8>) {
        buffer.clear();
        self.inner
            .vocab()
            .token_to_piece_into(token, buffer, false, None);
    }

    /// A GGUF metadata value as text, if the file has the key.
    pub fn metadata(&self, key: &str) -> Option<String> {
        self.inner.meta_val_str(key).ok()
    }

    /// Bytes of weights.
    pub fn size(&self) -> u64 {
        self.inner.size()
    }

    /// The prompt text the model sees for `prompt`, which must fit `n_ctx`
    /// tokens as far as can be told before rendering (see [`PromptLimits`]).
    /// Rendering stops when `cancel` is raised.
    pub fn render(
        &self,
        prompt: &Prompt,
        n_ctx: u32,
        cancel: &AtomicBool,
    ) -> Result<String, EngineError> {
        self.limits.check(prompt, n_ctx)?;
        match prompt {
            Prompt::Raw(text) => Ok(text.clone()),
            Prompt::Chat(messages) => Ok(self.template.render(&self.inner, messages, cancel)?),
            Prompt::ChatWith(messages, options) => {
                Ok(self
                    .template
                    .render_with(&self.inner, messages, options, cancel)?)
            }
        }
    }

    /// Render (for chat prompts) and tokenize a prompt meant for a context
    /// of at most `n_ctx` tokens; see [`Model::render`].
    pub fn tokenize(
        &self,
        prompt: &Prompt,
        n_ctx: u32,
        cancel: &AtomicBool,
    ) -> Result<PromptTokens, EngineError> {
        let text = self.render(prompt, n_ctx, cancel)?;
        self.tokenize_prompt_rendered(prompt, &text, n_ctx, cancel)
    }

    /// Tokenize `prompt` as [`Model::render`] rendered it (`text`): the
    /// template's markers become control tokens, and the text of user,
    /// system and tool messages stays text even where it spells one
    /// (see `plain_text`).
    pub fn tokenize_prompt_rendered(
        &self,
        prompt: &Prompt,
        text: &str,
        n_ctx: u32,
        cancel: &AtomicBool,
    ) -> Result<PromptTokens, EngineError> {
        let messages = match prompt {
            Prompt::Raw(_) => return self.tokenize_rendered(text, false),
            Prompt::Chat(messages) | Prompt::ChatWith(messages, _) => messages,
        };
        let spans = plain_text::content_spans(
            messages,
            text,
            |content| self.spells_control_token(content),
            |changed| {
                let prompt = match prompt {
                    Prompt::ChatWith(_, options) => Prompt::ChatWith(changed, options.clone()),
                    _ => Prompt::Chat(changed),
                };
                self.render(&prompt, n_ctx, cancel)
            },
        )?;
        if spans.is_empty() {
            return self.tokenize_rendered(text, true);
        }
        self.tokenize_with_plain_spans(text, &spans)
    }

    /// Whether `text`, tokenized with special tokens parsed, holds a
    /// control token it spells.
    pub fn spells_control_token(&self, text: &str) -> bool {
        let vocab = self.inner.vocab();
        let first = self
            .control_first_bytes
            .get_or_init(|| plain_text::control_first_bytes(&vocab));
        if !text.bytes().any(|byte| first[usize::from(byte)]) {
            return false;
        }
        // The cut llama.cpp makes says it without tokenizing (see
        // `partition`); where olm cannot cut as llama.cpp does, tokenize.
        if let Some(specials) = self.specials() {
            return specials
                .partition(text.as_bytes(), true)
                .iter()
                .any(|fragment| {
                    matches!(fragment, partition::Fragment::Token { control: true, .. })
                });
        }
        // A text that cannot be tokenized fails where the prompt is.
        let tokens = self.tokenize_text(text, false, true).unwrap_or_default();
        plain_text::spells_control_token(&vocab, &tokens)
    }

    /// The vocabulary's special tokens, found once (see `partition`).
    fn specials(&self) -> Option<&partition::Specials> {
        self.specials
            .get_or_init(|| {
                let model = self.metadata("tokenizer.ggml.model");
                partition::Specials::new(&self.inner.vocab(), model.as_deref())
            })
            .as_ref()
    }

    /// A rendered chat prompt whose `spans` (message text spelling control
    /// tokens) are tokenized as plain text, the rest as
    /// [`Model::tokenize_rendered`] does: special tokens parsed, BOS added
    /// unless the template wrote it.
    fn tokenize_with_plain_spans(
        &self,
        text: &str,
        spans: &[std::ops::Range<usize>],
    ) -> Result<PromptTokens, EngineError> {
        check_prompt_size(text)?;
        let vocab = self.inner.vocab();
        let adds_special = !self.template_wrote_bos(text);
        let mut tokens = Vec::new();
        if adds_special && vocab.should_add_bos() {
            tokens.push(vocab.bos());
        }
        let mut at = 0;
        for span in spans {
            tokens.extend(self.tokenize_text(&text[at..span.start], false, true)?);
            tokens.extend(self.tokenize_text(&text[span.clone()], false, false)?);
            at = span.end;
        }
        tokens.extend(self.tokenize_text(&text[at..], false, true)?);
        if adds_special && vocab.should_add_eos() {
            tokens.push(vocab.eos());
        }
        PromptTokens::non_empty(tokens)
    }

    /// Whether a rendered chat prompt starts with the BOS text the template
    /// wrote itself (then no second BOS is added).
    fn template_wrote_bos(&self, text: &str) -> bool {
        let bos = self.template.bos_token();
        !bos.is_empty() && text.starts_with(bos)
    }

    /// Tokenize text [`Model::render`] produced (or a prefix of it): `chat`
    /// text parses special tokens and gets the BOS token unless the template
    /// wrote it; raw text gets BOS and no special tokens.
    pub fn tokenize_rendered(&self, text: &str, chat: bool) -> Result<PromptTokens, EngineError> {
        check_prompt_size(text)?;
        let tokens = match chat {
            // The template wrote BOS itself: parse it as the special token and add no second one.
            true if self.template_wrote_bos(text) => self.tokenize_text(text, false, true)?,
            true => self.tokenize_text(text, true, true)?,
            false => self.tokenize_text(text, true, false)?,
        };
        PromptTokens::non_empty(tokens)
    }

    /// All the input-driven work of a request before it can join a decode
    /// loop: the prompt rendered and tokenized for a context of `n_ctx`
    /// tokens, its grammar converted and its sampler built. The server runs
    /// this off the thread that decodes, so that a slow or hostile request
    /// cannot stall the sequences already generating; `cancel` stops it
    /// between steps (and during rendering).
    pub fn prepare(
        &self,
        prompt: &Prompt,
        request: &GenerateRequest,
        n_ctx: u32,
        cancel: &AtomicBool,
    ) -> Result<Prepared, EngineError> {
        let cancelled = || cancel.load(std::sync::atomic::Ordering::Relaxed);
        let tokens = self.tokenize(prompt, n_ctx, cancel)?;
        if tokens.len() >= n_ctx as usize {
            return Err(EngineError::PromptTooLong {
                prompt_tokens: tokens.len(),
                n_ctx,
                n_ctx_train: self.n_ctx_train(),
            });
        }
        if cancelled() {
            return Err(EngineError::Cancelled);
        }
        let grammar = request
            .constraint
            .as_ref()
            .map(Constraint::to_grammar)
            .transpose()?;
        if cancelled() {
            return Err(EngineError::Cancelled);
        }
        let sampler = sampling::build_sampler(self, &request.sampling, grammar.as_deref())?;
        Ok(Prepared {
            tokens,
            sampler: sampling::PreparedSampler::new(sampler),
        })
    }

    /// `base` followed by the tokens of `text`, which continues it: special
    /// tokens in `text` are parsed, and no BOS is added.
    ///
    /// For a chat's next turn: `base` is [`Session::transcript`] and `text`
    /// is what the chat template renders after the previous prompt and
    /// answer, so the answer keeps the tokens it was generated as and the KV
    /// cache is reused up to the new message.
    pub fn tokenize_after(
        &self,
        base: &PromptTokens,
        text: &str,
    ) -> Result<PromptTokens, EngineError> {
        check_prompt_size(text)?;
        let mut tokens = base.tokens.clone();
        tokens.extend(self.tokenize_text(text, false, true)?);
        PromptTokens::non_empty(tokens)
    }

    /// llama.cpp's tokens for `text` (see `tokenize`).
    fn tokenize_text(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<LlamaToken>, EngineError> {
        tokenize::tokenize(
            &self.inner,
            self.specials(),
            text,
            add_special,
            parse_special,
        )
    }

    /// A llama.cpp context of `shape`; sizes are clamped to what llama.cpp accepts.
    pub(crate) fn create_context(
        &self,
        shape: ContextShape,
    ) -> Result<llama_cpp_2::context::LlamaContext<'_>, EngineError> {
        self.create_context_with(shape, |params| params)
    }

    /// A context that outputs pooled embeddings instead of logits.
    pub(crate) fn create_embedding_context(
        &self,
        shape: ContextShape,
        pooling: llama_cpp_2::context::params::LlamaPoolingType,
    ) -> Result<llama_cpp_2::context::LlamaContext<'_>, EngineError> {
        self.create_context_with(shape, |params| {
            params.with_embeddings(true).with_pooling_type(pooling)
        })
    }

    fn create_context_with(
        &self,
        shape: ContextShape,
        customize: impl FnOnce(
            llama_cpp_2::context::params::LlamaContextParams,
        ) -> llama_cpp_2::context::params::LlamaContextParams,
    ) -> Result<llama_cpp_2::context::LlamaContext<'_>, EngineError> {
        let n_ctx = shape.n_ctx.max(1);
        self.check_context_fits(n_ctx)?;
        let n_batch = shape.n_batch.max(1);
        let threads = i32::try_from(shape.threads.max(1)).unwrap_or(i32::MAX);
        let params = llama_cpp_2::context::params::LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(n_batch)
            .with_n_ubatch(shape.n_ubatch.clamp(1, n_batch))
            .with_n_seq_max(shape.sequences.max(1))
            .with_kv_unified(false)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);

        let params = customize(params);
        self.inner
            .new_context(backend()?, params)
            .map_err(|error| EngineError::Context {
                n_ctx,
                reason: error.to_string(),
            })
    }

    /// On a machine without GPUs, whether the keys and values of `n_ctx`
    /// tokens (f16, `n_layer * 2 * n_head_kv * head size` per token) fit the
    /// memory available: llama.cpp allocates them all at once, and a
    /// context of 2^31 tokens took 8 GB before failing with "null
    /// reference" (500,000 tokens of SmolLM2 took 11 GB).
    fn check_context_fits(&self, n_ctx: u32) -> Result<(), EngineError> {
        if has_gpu_device() || self.split.is_some() {
            return Ok(());
        }
        let Some(available) = available_memory() else {
            return Ok(());
        };
        let heads = u64::from(self.inner.n_head().max(1));
        let head_size = u64::try_from(self.inner.n_embd().max(1)).unwrap_or(1) / heads;
        let per_token = u64::from(self.inner.n_layer())
            .saturating_mul(2 * 2)
            .saturating_mul(u64::from(self.inner.n_head_kv()))
            .saturating_mul(head_size.max(1));
        let needed = u64::from(n_ctx).saturating_mul(per_token);
        if needed > available {
            return Err(EngineError::ContextTooLarge {
                n_ctx,
                needed_mib: needed >> 20,
                available_mib: available >> 20,
            });
        }
        Ok(())
    }

    /// A context for generation.
    pub fn session(&self, options: &SessionOptions) -> Result<Session<'_>, EngineError> {
        Session::new(self, options)
    }

    /// A context size that fits `prompt_tokens` plus `answer_budget`, rounded
    /// up to a multiple of 256 and capped at the trained context.
    pub fn context_for(&self, prompt_tokens: usize, answer_budget: u32) -> u32 {
        let wanted = prompt_tokens as u64 + u64::from(answer_budget);
        let rounded = wanted.div_ceil(256) * 256;
        let limit = u64::from(self.n_ctx_train().max(1));
        NonZeroU32::new(rounded.min(limit) as u32).map_or(256, NonZeroU32::get)
    }
}

/// The built-in template for a model whose file carries none: its family's
/// own format where llama.cpp knows it, ChatML otherwise (llama.cpp's default).
fn default_template(model: &LlamaModel) -> TemplateSource {
    let architecture = model
        .meta_val_str("general.architecture")
        .unwrap_or_default();
    let name = match architecture.as_str() {
        "gemma" | "gemma2" | "gemma3" | "gemma3n" => "gemma",
        "phi3" => "phi3",
        "command-r" | "cohere2" => "command-r",
        _ => "chatml",
    };
    tracing::info!("the model has no chat template; using llama.cpp's built-in '{name}'");
    TemplateSource::Builtin(name.to_owned())
}

fn describe_model(model: &LlamaModel) -> String {
    let architecture = model
        .meta_val_str("general.architecture")
        .unwrap_or_else(|_| "unknown".to_owned());
    format!("{architecture} {}", crate::human::count(model.n_params()))
}

/// Text llama.cpp is asked to tokenize is at most [`MAX_PROMPT_BYTES`].
fn check_prompt_size(text: &str) -> Result<(), EngineError> {
    if text.len() > MAX_PROMPT_BYTES {
        return Err(EngineError::InputTooLarge {
            bytes: text.len(),
            limit: MAX_PROMPT_BYTES,
        });
    }
    Ok(())
}

/// Whether llama.cpp sees a GPU (discrete or integrated).
fn has_gpu_device() -> bool {
    use llama_cpp_2::LlamaBackendDeviceType as Kind;
    llama_cpp_2::list_llama_ggml_backend_devices()
        .iter()
        .any(|device| matches!(device.device_type, Kind::Gpu | Kind::IntegratedGpu))
}

/// `MemAvailable` of /proc/meminfo, in bytes.
fn available_memory() -> Option<u64> {
    let text =
        crate::files::read_text_bounded(std::path::Path::new("/proc/meminfo"), 64 << 10).ok()?;
    let line = text
        .lines()
        .find(|line| line.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--version` names the patches the build applies: the list is the
    /// folder scripts/vendor-llama.sh applies, in its order.
    #[test]
    fn the_patch_list_is_the_patches_folder() {
        let folder =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("patches/llama-cpp-sys-2");
        let mut found: Vec<String> = std::fs::read_dir(&folder)
            .expect("patches folder")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter_map(|name| name.strip_suffix(".patch").map(str::to_owned))
            .collect();
        found.sort();
        assert_eq!(found, LLAMA_CPP_PATCHES);
    }

    /// A cached KV state computed by a llama.cpp with other patches may hold
    /// other values: the cache key names each patch.
    #[test]
    fn the_prompt_cache_key_names_every_patch() {
        for patch in LLAMA_CPP_PATCHES {
            let number = &patch[..4];
            assert!(
                KV_STATE_FORMAT.contains(&format!(" {number}")),
                "{KV_STATE_FORMAT} lacks {number}"
            );
        }
    }
}
