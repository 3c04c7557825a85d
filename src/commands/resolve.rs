//! What `run`, `chat`, `bench` and `serve` share before they start: the
//! model a MODEL argument names (checked before llama.cpp sees it), the
//! engine request the generation flags describe, how to load the model, and
//! the Ctrl-C flag.
//!
//! Owns: turning parsed arguments into resolved values (parse, then
//! resolve). Reads only what the user named (the store, a schema file, a
//! template file), each with a size bound. Must not touch: the terminal.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context as _;

use super::UsageError;
use crate::cli::{Command, DraftArgs, DraftChoice, GenerationArgs, LoadArgs, OutputFormat};
use crate::engine::rpc::{self, Endpoint};
use crate::engine::{
    Constraint, DraftConfig, DraftMode, GenerateRequest, LoadOptions, SamplingConfig,
    TemplateSource,
};
use crate::files::{self, ReadError};
use crate::gguf::{self, CheckedModel};
use crate::store::{ModelRef, Store, StoreError};

/// Largest `--schema` file (far above any schema the converter accepts).
const MAX_SCHEMA_FILE_BYTES: u64 = 1 << 20;
/// Largest `--chat-template` file (real templates are a few KB).
const MAX_TEMPLATE_FILE_BYTES: u64 = 1 << 20;

/// Resolve MODEL (a .gguf path, a store name, or a repo already in a hub
/// cache; else, on a terminal, pulled after asking) and check the file
/// (every part of a split set) before llama.cpp sees it.
pub fn resolve_model(reference: &str) -> anyhow::Result<CheckedModel> {
    Ok(resolve_model_with_identity(reference, Offer::Pull)?.0)
}

/// Whether resolving a name that is not in the store may offer to pull it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// On a terminal, ask once and pull (before the command locks itself
    /// off the network).
    Pull,
    /// Never: the command is already off the network (chat's `/model`).
    Nothing,
}

/// [`resolve_model`], and a name for the model's exact bytes that caches
/// can key on: the sha256 a pulled model was verified against, else the
/// file's device, inode, size and modification time (hashing a file of
/// gigabytes at every run would cost seconds; a changed file gets a new
/// identity).
pub fn resolve_model_with_identity(
    reference: &str,
    offer: Offer,
) -> anyhow::Result<(CheckedModel, String)> {
    let reference = ModelRef::parse(reference)?;
    let store = Store::from_env();
    let resolved = match store.resolve(&reference) {
        Err(StoreError::NotInStore(name)) if offer == Offer::Pull => {
            // On a terminal, offer to pull it (`olm pull`'s own code).
            let printer = crate::ui::Printer::new();
            if super::pull::offer_pull(&reference, &printer)?.is_none() {
                return Err(StoreError::NotInStore(name).into());
            }
            store.resolve(&reference)?
        }
        resolved => resolved?,
    };
    let path = resolved.path;
    let checked = gguf::check_model(&path).map_err(|source| StoreError::InvalidModel {
        path: path.clone(),
        source,
    })?;
    let identity = match resolved
        .manifest
        .and_then(|manifest| manifest.files.first().cloned())
    {
        Some(file) => format!("sha256:{}", file.sha256),
        None => file_identity(&path)?,
    };
    Ok((checked, identity))
}

fn file_identity(path: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let metadata =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(format!(
        "file:{}:{}:{}:{}.{}",
        metadata.dev(),
        metadata.ino(),
        metadata.size(),
        metadata.mtime(),
        metadata.mtime_nsec()
    ))
}

/// The engine request of the generation flags: sampling values and the
/// output constraint (a schema is read, bounded and checked now, before
/// any model loads).
pub fn build_request(args: &GenerationArgs) -> anyhow::Result<GenerateRequest> {
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
        // The same bounds the server applies, and llama.cpp's own conversion:
        // a bad schema fails now, before the model is loaded.
        constraint.to_grammar().map_err(|error| {
            UsageError::new(error.to_string()).with_hint("fix the schema given with --schema")
        })?;
    }
    Ok(GenerateRequest {
        sampling,
        max_tokens: args.max_tokens,
        constraint,
        stop: Vec::new(),
        draft: draft_config(&args.draft),
    })
}

/// The engine's drafting settings from `--draft` and `--draft-max`.
pub fn draft_config(args: &DraftArgs) -> DraftConfig {
    DraftConfig {
        mode: match args.draft {
            DraftChoice::Off => DraftMode::Off,
            DraftChoice::Ngram => DraftMode::Ngram,
        },
        max_tokens: args.draft_max,
    }
}

fn read_schema(path: &Path) -> anyhow::Result<String> {
    let text = files::read_text_bounded(path, MAX_SCHEMA_FILE_BYTES)
        .map_err(|error| usage_read_error("schema", &error))?;
    serde_json::from_str::<serde_json::Value>(&text).map_err(|error| {
        UsageError::new(format!(
            "schema file {} is not valid JSON: {error}",
            path.display()
        ))
    })?;
    Ok(text)
}

fn usage_read_error(what: &str, error: &ReadError) -> UsageError {
    UsageError::new(format!("cannot use the {what} file: {error}"))
}

/// How to load the model, from the shared load flags and `--chat-template`.
pub fn load_options(load: &LoadArgs, chat_template: Option<&str>) -> anyhow::Result<LoadOptions> {
    Ok(LoadOptions {
        gpu_layers: load.gpu_layers,
        chat_template: chat_template_source(chat_template)?,
        rpc: rpc::parse_endpoints(&load.rpc)?
            .iter()
            .map(Endpoint::resolve)
            .collect::<Result<_, _>>()?,
        tensor_split: load.tensor_split.clone(),
    })
}

/// The ports of `--rpc` workers (after [`settle_rpc_endpoints`]).
pub fn rpc_ports(load: &LoadArgs) -> Vec<u16> {
    load.rpc
        .iter()
        .filter_map(|endpoint| endpoint.parse::<std::net::SocketAddrV4>().ok())
        .map(|address| address.port())
        .collect()
}

/// The `--rpc` flags of a command that loads models, if it has them.
fn load_args_mut(command: &mut Command) -> Option<&mut LoadArgs> {
    match command {
        Command::Run(args) => Some(&mut args.generation.load),
        Command::Chat(args) => Some(&mut args.generation.load),
        Command::Bench(args) => Some(&mut args.load),
        Command::Serve(args) => Some(&mut args.load),
        _ => None,
    }
}

/// `--rpc` (or `OLM_RPC`): check each worker's address and look host names
/// up now, before the sandbox takes DNS away, so that the command and the
/// processes it starts connect to addresses only. Returns the workers'
/// ports, which the sandbox then allows.
pub fn settle_rpc_endpoints(command: &mut Command) -> anyhow::Result<Vec<u16>> {
    let Some(load) = load_args_mut(command) else {
        return Ok(Vec::new());
    };
    let endpoints = rpc::parse_endpoints(&load.rpc)?;
    let mut settled = Vec::new();
    for endpoint in &endpoints {
        settled.push(endpoint.resolve()?);
    }
    load.rpc = settled.iter().map(ToString::to_string).collect();
    Ok(settled.iter().map(|address| address.port()).collect())
}

/// `--chat-template FILE|NAME`: a Jinja file when the path exists, else a
/// llama.cpp built-in template name.
fn chat_template_source(value: Option<&str>) -> anyhow::Result<Option<TemplateSource>> {
    let Some(value) = value else {
        return Ok(None);
    };
    if std::fs::symlink_metadata(value).is_err() {
        return Ok(Some(TemplateSource::Builtin(value.to_owned())));
    }
    let text = files::read_text_bounded(Path::new(value), MAX_TEMPLATE_FILE_BYTES)
        .map_err(|error| usage_read_error("chat template", &error))?;
    Ok(Some(TemplateSource::Jinja(text)))
}

/// Ctrl-C sets the flag (generation stops at the next token, exit 130); a
/// second Ctrl-C exits at once.
pub fn install_interrupt_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&flag))
            .context("cannot install the Ctrl-C handler")?;
        signal_hook::flag::register(signal, Arc::clone(&flag))
            .context("cannot install the Ctrl-C handler")?;
    }
    Ok(flag)
}
