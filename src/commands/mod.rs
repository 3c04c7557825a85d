//! One module per subcommand: glue between the CLI arguments and the parts
//! that do the work (store, gguf, engine, ui). Also the one place that maps
//! errors to exit codes and hints.
//!
//! Only `main` imports this module.

mod bench;
mod cache;
mod chat;
mod doctor;
mod export;
mod import;
mod list;
mod ps;
mod pull;
mod resolve;
mod rm;
mod run;
mod serve;
mod show;
mod verify;
mod worker;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::engine::rpc::RpcError;
use crate::engine::{self, AbortPolicy, EngineError, ErrorKind};
use crate::gguf::GgufError;
use crate::hub::HubError;
use crate::sandbox::{self, Policy};
use crate::store::bundle::BundleError;
use crate::store::StoreError;
use crate::ui::Printer;

/// Run the chosen subcommand.
pub fn dispatch(mut cli: Cli, printer: &Printer) -> anyhow::Result<ExitCode> {
    let sandboxed = !cli.allow_network;
    // RPC workers' names are looked up now, while DNS still works.
    let rpc_ports = resolve::settle_rpc_endpoints(&mut cli.command)?;
    if cli.allow_network {
        // The processes this one starts (template, workers) make the same choice.
        std::env::set_var(crate::env::OLM_ALLOW_NETWORK, "1");
    } else if let Some(policy) = sandbox_policy(&cli.command, &rpc_ports)? {
        // First, before any thread starts: threads and child processes inherit it.
        let enforcement = sandbox::apply(&policy);
        report_sandbox(&enforcement, is_verbose(&cli.command), printer);
    }
    if matches!(
        cli.command,
        Command::Run(_) | Command::Chat(_) | Command::Bench(_)
    ) {
        // These load models in this process: an abort inside llama.cpp
        // becomes one error line and an exit code, never a core dump.
        engine::install_abort_handler(AbortPolicy::ExitWithError);
    }
    match cli.command {
        Command::Run(args) => run::run(args, printer),
        Command::Chat(args) => chat::run(args, printer),
        Command::Bench(args) => bench::run(args, printer),
        Command::Pull(args) => pull::run(args, printer),
        Command::List(args) => list::run(args, printer),
        Command::Show(args) => show::run(args, printer),
        Command::Rm(args) => rm::run(args, printer),
        Command::Verify(args) => verify::run(args, printer),
        Command::Serve(args) => serve::run(args, printer, sandboxed),
        Command::Ps(args) => ps::run(args, printer),
        Command::Cache(args) => cache::run(args, printer),
        Command::Doctor(args) => doctor::run(args, printer),
        Command::Export(args) => export::run(args, printer),
        Command::Import(args) => import::run(args, printer),
        Command::Worker(args) => {
            crate::ui::init_tracing(args.verbose);
            engine::install_abort_handler(AbortPolicy::ReportAndAbort);
            Ok(exit_status(crate::server::run_worker()))
        }
        Command::Template => Ok(exit_status(engine::serve_template_process())),
        Command::PullHelper(args) => {
            crate::ui::init_tracing(args.verbose);
            Ok(exit_status(crate::server::run_pull_process()))
        }
        Command::RpcWorker(args) => worker::run(args, printer),
        Command::RpcServer(args) => Ok(worker::run_server(&args, printer)),
        #[cfg(debug_assertions)]
        Command::NetProbe(args) => {
            let report = sandbox::probe(args.target, args.listen);
            let mut stdout = std::io::stdout().lock();
            serde_json::to_writer(&mut stdout, &report)?;
            std::io::Write::write_all(&mut stdout, b"\n")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions(args) => {
            crate::cli::write_completions(args.shell, &mut std::io::stdout().lock());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The sandbox a command runs in; `None` for the commands that apply their
/// own (`serve`, once its pull process runs) or need the network (`pull` and
/// `serve`'s pull process).
fn sandbox_policy(command: &Command, rpc_ports: &[u16]) -> anyhow::Result<Option<Policy>> {
    Ok(match command {
        // run and chat lock down themselves once the model is resolved
        // (`lock_down`): on a terminal they may first pull a missing model
        // the user asked for.
        Command::Pull(_)
        | Command::PullHelper(_)
        | Command::Serve(_)
        | Command::Run(_)
        | Command::Chat(_) => None,
        Command::Ps(args) => Some(ps::sandbox_policy(&args.host, args.port)?),
        // Its workers' ports, and no other (run and chat: `lock_down`).
        Command::Bench(_) => Some(Policy::rpc_client(rpc_ports)),
        // A model process of `serve --rpc`: its workers' ports, and no other.
        Command::Worker(args) => Some(Policy::offline().with_rpc_ports(&args.rpc_ports)),
        Command::RpcWorker(args) => Some(worker::sandbox_policy(args)),
        Command::RpcServer(args) => Some(Policy::listener(args.bind.port())),
        #[cfg(debug_assertions)]
        Command::NetProbe(args) => Some(match args.listen {
            Some(port) => Policy::listener(port),
            None => Policy::rpc_client(&args.rpc_port),
        }),
        _ => Some(Policy::offline()),
    })
}

/// Take this process off the network for good (unless `--allow-network`):
/// for `run` and `chat`, once their model is resolved and before anything
/// starts a thread. With `--rpc`, the workers' ports stay reachable, and no
/// other.
pub(super) fn lock_down(verbose: bool, load: &crate::cli::LoadArgs, printer: &Printer) {
    if crate::env::flag(crate::env::OLM_ALLOW_NETWORK) {
        return;
    }
    let enforcement = sandbox::apply(&Policy::rpc_client(&resolve::rpc_ports(load)));
    report_sandbox(&enforcement, verbose, printer);
}

/// Whether the command was asked for `--verbose`.
fn is_verbose(command: &Command) -> bool {
    match command {
        Command::Run(args) => args.generation.verbose,
        Command::Chat(args) => args.generation.verbose,
        Command::Bench(args) => args.verbose,
        Command::Serve(args) => args.verbose,
        Command::Worker(args) | Command::PullHelper(args) => args.verbose,
        Command::RpcWorker(args) => args.verbose,
        _ => false,
    }
}

/// With `--verbose`: the sandbox in force, and each feature this kernel lacks.
fn report_sandbox(enforcement: &sandbox::Enforcement, verbose: bool, printer: &Printer) {
    if !verbose {
        return;
    }
    printer.status(&enforcement.summary());
    for missing in &enforcement.missing {
        printer.warn(&format!(
            "sandbox: {} is not in force: {}",
            missing.feature, missing.reason
        ));
    }
}

fn exit_status(status: i32) -> ExitCode {
    ExitCode::from(u8::try_from(status).unwrap_or(1))
}

/// `olm --version`: olm's version and commit, and the llama.cpp it links
/// with the CPU features and backends that build uses.
pub fn long_version() -> String {
    let commit = option_env!("OLM_GIT_COMMIT").unwrap_or("unknown");
    format!(
        "{}\ncommit: {commit}\nllama.cpp: {}\nsystem: {}\ndevices: {}\ngpu backends: {}\nrpc protocol: {}",
        env!("CARGO_PKG_VERSION"),
        crate::engine::llama_cpp_description(),
        crate::engine::system_info(),
        crate::engine::devices().join(", "),
        if cfg!(feature = "cuda") { "CUDA" } else { "none (build with --cuda for CUDA)" },
        if crate::engine::rpc::available() {
            crate::engine::rpc::PROTOCOL.to_string()
        } else {
            "none (built without GGML_RPC)".into()
        },
    )
}

/// Exit codes of design.md.
pub mod exit {
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const NETWORK: u8 = 4;
    pub const INTEGRITY: u8 = 5;
    pub const DISK_FULL: u8 = 6;
    pub const INTERRUPTED: u8 = 130;
}

/// An invalid argument found after parsing (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UsageError {
    pub message: String,
    pub hint: Option<String>,
}

impl UsageError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Generation was interrupted (exit 130); the message is not shown.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// The exit code for an error: the first classified error in its chain.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.is::<UsageError>() {
            return exit::USAGE;
        }
        if cause.is::<Interrupted>() {
            return exit::INTERRUPTED;
        }
        if cause.is::<pull::NotFound>() {
            return exit::NOT_FOUND;
        }
        if cause.is::<GgufError>() {
            return exit::INTEGRITY;
        }
        if let Some(store) = cause.downcast_ref::<StoreError>() {
            return store_exit_code(store);
        }
        if let Some(bundle) = cause.downcast_ref::<BundleError>() {
            return match bundle {
                BundleError::Store(store) => store_exit_code(store),
                BundleError::Damaged(_) | BundleError::Changed { .. } => exit::INTEGRITY,
                _ if bundle.is_disk_full() => exit::DISK_FULL,
                _ => exit::FAILURE,
            };
        }
        if let Some(hub) = cause.downcast_ref::<HubError>() {
            return match hub {
                HubError::Store(store) => store_exit_code(store),
                other => other.exit_code(),
            };
        }
        if cause.is::<crate::catalog::CatalogError>() {
            return exit::USAGE;
        }
        if let Some(rpc) = cause.downcast_ref::<RpcError>() {
            return rpc_exit_code(rpc);
        }
        if let Some(engine) = cause.downcast_ref::<EngineError>() {
            return match (engine, engine.kind()) {
                (EngineError::Rpc(rpc), _) => rpc_exit_code(rpc),
                (EngineError::InvalidSchema(_), _) => exit::USAGE,
                (_, ErrorKind::UnusableModel) => exit::INTEGRITY,
                (_, ErrorKind::Cancelled) => exit::INTERRUPTED,
                _ => exit::FAILURE,
            };
        }
    }
    exit::FAILURE
}

fn rpc_exit_code(error: &RpcError) -> u8 {
    if error.is_usage() {
        exit::USAGE
    } else if error.is_network() {
        exit::NETWORK
    } else {
        exit::FAILURE
    }
}

fn store_exit_code(error: &StoreError) -> u8 {
    match error {
        StoreError::EmptyReference
        | StoreError::InvalidReference { .. }
        | StoreError::SplitImport(_) => exit::USAGE,
        StoreError::NoSuchFile(_) | StoreError::NotInStore(_) => exit::NOT_FOUND,
        StoreError::CorruptManifest { .. } | StoreError::InvalidModel { .. } => exit::INTEGRITY,
        StoreError::Io { .. } if error.is_disk_full() => exit::DISK_FULL,
        StoreError::Io { .. } => exit::FAILURE,
    }
}

/// Advice to print under the error line, if any.
pub fn hint(error: &anyhow::Error) -> Option<String> {
    for cause in error.chain() {
        if let Some(usage) = cause.downcast_ref::<UsageError>() {
            return usage.hint.clone();
        }
        if let Some(cut) = cause.downcast_ref::<run::IncompleteJson>() {
            return Some(cut.hint.clone());
        }
        if let Some(missing) = cause.downcast_ref::<pull::NotFound>() {
            return missing.hint.clone();
        }
        if let Some(store) = cause.downcast_ref::<StoreError>() {
            return store.hint();
        }
        if let Some(bundle) = cause.downcast_ref::<BundleError>() {
            return bundle.hint();
        }
        if let Some(hub) = cause.downcast_ref::<HubError>() {
            return hub.hint();
        }
        if let Some(rpc) = cause.downcast_ref::<RpcError>() {
            return rpc.hint();
        }
        if let Some(engine) = cause.downcast_ref::<EngineError>() {
            return match engine {
                EngineError::Rpc(rpc) => rpc.hint(),
                EngineError::PromptTooLong { n_ctx_train, .. } => Some(format!(
                    "shorten the input, or raise --ctx-size (up to {n_ctx_train} for this model)"
                )),
                EngineError::InputTooLong { .. } => Some(
                    "shorten the input, or raise --ctx-size (up to the model's trained context)"
                        .into(),
                ),
                EngineError::Template(_) => Some(
                    "the model's chat template is unusable; pass --chat-template FILE|NAME \
                     (e.g. chatml) or --raw"
                        .into(),
                ),
                _ => None,
            };
        }
    }
    None
}

/// Whether the error is a closed pipe (`olm run ... | head`), which ends quietly.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
