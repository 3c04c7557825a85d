//! Command-line definitions (clap derive): the single source for `--help`,
//! shell completions and man pages.
//!
//! Owns: argument names, defaults, help text and value parsing of plain
//! values. Must not do I/O or resolve anything (no store lookups, no file
//! reads): commands turn these plain values into resolved settings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Run open-weight language models locally.
///
/// olm runs GGUF models through llama.cpp on this machine. Everything but
/// `pull` works offline.
///
/// Exit codes: 0 success; 1 other failure; 2 invalid arguments or model
/// reference; 3 model not found; 4 network or hub error; 5 integrity failure
/// (bad or hostile model file, hash mismatch); 6 not enough disk space;
/// 130 interrupted.
#[derive(Debug, Parser)]
#[command(name = "olm", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Let this command reach the network (the escape hatch; never the default).
    ///
    /// Every command but `pull` runs in a sandbox the kernel enforces
    /// (Landlock and seccomp on Linux): it cannot connect anywhere, send a
    /// datagram or look a name up; `serve` may only accept on its own port.
    /// This flag (or OLM_ALLOW_NETWORK=1) leaves the sandbox off, for this
    /// command and the processes it starts. `olm doctor` shows what the
    /// sandbox does on this machine.
    #[arg(
        long,
        global = true,
        env = crate::env::OLM_ALLOW_NETWORK,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub allow_network: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate an answer to a prompt and stream it to stdout.
    ///
    /// The prompt is the words after MODEL. When stdin is not a terminal it is
    /// read too and comes first, the prompt after it and a blank line, so
    /// `git diff | olm run MODEL "Write a commit message"` gives the model the
    /// diff, then the instruction. Only the answer goes to stdout; status and
    /// statistics go to stderr.
    Run(RunArgs),

    /// Chat with a model in the terminal.
    ///
    /// The answer streams as it is generated; the conversation stays in the
    /// model's cache, so each turn evaluates only what is new. `"""` starts
    /// and ends a multi-line message, a line ending in `\` continues. Ctrl-C
    /// stops an answer, Ctrl-D or /bye quits, /help lists the commands
    /// (/set, /system, /show, /stats, /save, /load, /clear, /model). The
    /// line history is kept in olm's data directory (`OLM_HOME`).
    Chat(ChatArgs),

    /// Measure prompt and generation speed, llama-bench style.
    ///
    /// Tests: ppN evaluates a prompt of N random tokens in batches; tgN
    /// generates N tokens one decode at a time. Each test runs after a
    /// warm-up, `-r` times on an empty KV cache, and reports mean ± standard
    /// deviation in tokens per second. List-valued flags (`-p 128,512`) run
    /// every combination. Progress goes to stderr, the report to stdout.
    Bench(BenchArgs),

    /// Download a model into the store, or register a local .gguf file.
    ///
    /// MODEL is a catalog alias (`qwen-7b`, `qwen-7b:q8_0`) or Ollama's name
    /// for the same model (`qwen2.5:7b`), a repo (`owner/repo[:QUANT]`; on
    /// Hugging Face only: `hf.co/owner/repo`; on ModelScope only:
    /// `ms://owner/repo` or `modelscope.cn/owner/repo`), or a path to a
    /// .gguf file with `--name`. Files go into the Hugging Face or ModelScope
    /// cache (shared with those hubs' own tools) with a progress bar; an
    /// interrupted pull resumes where it stopped; every file is checked
    /// against the hub's sha256 before it becomes visible.
    /// Exit codes: 2 invalid name, 3 no such model or quant, 4 network or
    /// hub error, 5 integrity (hash or size mismatch, invalid file, invalid
    /// metadata from the hub), 6 not enough disk, 130 interrupted (the
    /// partial download is kept).
    Pull(PullArgs),

    /// List the models in the store and GGUF files already in the Hugging Face and ModelScope caches.
    ///
    /// SOURCE says where each came from: hf or modelscope (pulled from that
    /// hub), local (imported), hf-cache or ms-cache (found in a hub's cache,
    /// downloaded by another tool). `--available` lists the catalog instead.
    #[command(visible_alias = "ls")]
    List(ListArgs),

    /// Show a model's metadata: architecture, parameters, quant, context, template, license, files.
    Show(ShowArgs),

    /// Remove models from the store (and their files, unless another name uses them).
    Rm(RmArgs),

    /// Re-hash stored files against their manifests; exit 1 if any changed.
    Verify(VerifyArgs),

    /// Serve the OpenAI- and Ollama-compatible HTTP API.
    ///
    /// Listens on 127.0.0.1 only unless --host says otherwise, and then only
    /// with an API key. Models load on first use: store names (see `olm
    /// list`) and the MODELs given here (a .gguf path is named by its file
    /// stem). Each loaded model runs in its own worker process, so a crash
    /// inside llama.cpp fails only that model's requests in flight; it is
    /// loaded again on next use. Requests share one batched decode loop per
    /// model with --parallel sequences; more wait in a bounded queue, beyond
    /// it 503. Routes: /v1/models, /v1/chat/completions, /v1/completions,
    /// /v1/responses, /v1/messages, /v1/embeddings, /api/chat, /api/generate,
    /// /api/embed, /api/embeddings, /api/tags, /api/show, /api/ps, /api/pull,
    /// /api/delete, /api/copy, /api/create, /api/version, /health, /metrics.
    /// SIGINT or SIGTERM lets running requests finish, then exits 0; a
    /// second one exits 130 at once.
    Serve(ServeArgs),

    /// List the models a running `olm serve` has loaded.
    ///
    /// Asks the server's /api/ps and prints NAME, SIZE, PROCESSOR, CONTEXT
    /// (tokens per sequence) and UNTIL (when it unloads if left idle), like
    /// `ollama ps`; with --json, the server's models array. The server is
    /// --host (else OLM_HOST: `host`, `host:port` or `http://host:port`;
    /// default 127.0.0.1) with --port (else the host's own port, else 11435).
    /// OLM_API_KEY is sent as `Authorization: Bearer KEY` when set. No server
    /// there: exit 1.
    Ps(PsArgs),

    /// List or clear the prompt cache.
    ///
    /// `olm run` saves the evaluated beginning of a prompt (the system
    /// prompt, a piped document) there, so the next run that starts the same
    /// way loads it instead of evaluating it again. Entries are keyed by the
    /// model's bytes, the llama.cpp build and olm's context settings, checked
    /// whole before use, and the least recently used go first beyond
    /// `OLM_PROMPT_CACHE_MIB` (default 4096; 0 turns the cache off). `olm run
    /// --no-cache` neither reads nor writes it.
    Cache(CacheArgs),

    /// Check this machine and the store: build, CPU, backends, sandbox, models.
    ///
    /// Prints olm's and llama.cpp's build, the CPU features and GPU backends
    /// it uses, the kernel's sandbox support and what is in force (Landlock
    /// ABI and network rules, the seccomp filter; a missing feature is named),
    /// and the store's health. With MODELs, or with --offline, it proves each
    /// model (every stored model when none is named) can run with no network:
    /// every file it needs (weights, split parts) is on disk, its sha256 equals
    /// the manifest's and its header is valid. Exit 0 only when all of that
    /// holds; 3 when a file is missing; 5 when a file changed or is invalid.
    Doctor(DoctorArgs),

    /// Write stored models into one verified bundle file for an air-gapped machine.
    ///
    /// The bundle is a tar stream: a manifest (name, source, revision, and the
    /// size and sha256 of every file), then the files. It is written as the
    /// files are read, with no second copy on disk; every file is hashed on
    /// the way and a file that no longer matches its manifest stops the
    /// export (exit 5). `-o -` writes to stdout:
    /// `olm export m -o - | ssh host olm import -`.
    Export(ExportArgs),

    /// Add the models of a bundle made by `olm export` to the store.
    ///
    /// Every file's size and sha256 is checked while it is read; nothing is
    /// registered until every file of the bundle checked out, and a bundle
    /// that is damaged, cut short or names a path instead of a file (`../x`,
    /// `/abs`) is refused whole (exit 5) with nothing written outside the
    /// store. Too little free disk: exit 6 before anything is written.
    /// Imported models are stored as pulled ones are, so `list`, `show`,
    /// `verify` and `rm` treat them alike. FILE `-` reads stdin.
    Import(ImportArgs),

    /// Lend this machine's CPU or GPUs to another olm: an RPC worker.
    ///
    /// Another machine's `olm run|chat|serve|bench MODEL --rpc HOST:PORT`
    /// then places some of the model's layers here (llama.cpp's RPC
    /// backend), so a model too big for one machine runs on several. Every
    /// machine runs the same olm release; a worker of another RPC protocol
    /// version is refused. The protocol has no authentication and no
    /// encryption, so the worker listens on 127.0.0.1 unless told otherwise:
    /// reach it through an SSH tunnel (`ssh -L 50052:127.0.0.1:50052 HOST`)
    /// or bind a WireGuard address with --allow-unauthenticated-network.
    /// It serves one client at a time, and starts again by itself if a
    /// request makes llama.cpp stop. SIGINT or SIGTERM stops it (exit 0).
    #[command(name = "worker", disable_version_flag = true)]
    RpcWorker(RpcWorkerArgs),

    /// Print a shell completion script to stdout.
    ///
    /// bash: `olm completions bash > ~/.local/share/bash-completion/completions/olm`;
    /// zsh: `olm completions zsh > ~/.zfunc/_olm` (with ~/.zfunc in fpath);
    /// fish: `olm completions fish > ~/.config/fish/completions/olm.fish`.
    /// install.sh installs them for you.
    Completions(CompletionsArgs),

    /// Internal: run one model for `olm serve` in a child process, speaking
    /// JSON lines on stdin and stdout. Not for people.
    #[command(name = crate::process::WORKER_COMMAND, hide = true)]
    Worker(WorkerArgs),

    /// Internal: render chat templates in a child process with bounded
    /// memory, speaking JSON lines on stdin and stdout. Not for people.
    #[command(name = crate::process::TEMPLATE_COMMAND, hide = true)]
    Template,

    /// Internal: run `olm serve`'s pulls in a process that keeps the network
    /// (the server itself cannot reach it), speaking JSON lines on stdin and
    /// stdout. Not for people.
    #[command(name = crate::process::PULL_COMMAND, hide = true)]
    PullHelper(WorkerArgs),

    /// Internal: the RPC server of `olm worker`, in a child process that the
    /// worker starts again if llama.cpp stops it. Not for people.
    #[command(name = crate::process::RPC_SERVER_COMMAND, hide = true)]
    RpcServer(RpcServerArgs),

    /// Internal, debug builds only: try to reach the network from inside the
    /// sandbox and print what the kernel answered, as JSON. For tests.
    #[cfg(debug_assertions)]
    #[command(name = crate::process::NET_PROBE_COMMAND, hide = true)]
    NetProbe(NetProbeArgs),
}

/// Arguments of `olm doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Store names to check file by file (default with --offline: all).
    #[arg(add = model_name_candidates(), value_name = "MODEL")]
    pub models: Vec<String>,

    /// Prove the models can run with no network: every file local and hash-verified.
    #[arg(long)]
    pub offline: bool,

    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `olm export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Store names to put in the bundle.
    #[arg(add = model_name_candidates(), required = true, value_name = "MODEL")]
    pub models: Vec<String>,

    /// The bundle file to write (`-` for stdout); it appears only when complete.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: PathBuf,
}

/// Arguments of `olm import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The bundle made by `olm export` (`-` for stdin).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Replace store names that already exist with other files.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of the hidden network probe (debug builds only).
#[cfg(debug_assertions)]
#[derive(Debug, Args)]
pub struct NetProbeArgs {
    /// Where to try to connect and send: `127.0.0.1:PORT`.
    pub target: std::net::SocketAddr,

    /// Sandbox as `olm serve --port PORT` is: bind a listener on PORT first.
    #[arg(long, value_name = "PORT")]
    pub listen: Option<u16>,

    /// Sandbox as `olm run --rpc HOST:PORT` is: connections to PORT allowed.
    #[arg(long, value_name = "PORT", conflicts_with = "listen")]
    pub rpc_port: Vec<u16>,
}

/// Arguments of `olm worker` (the RPC worker; not `olm __worker`, a
/// server's model process).
#[derive(Debug, Args)]
pub struct RpcWorkerArgs {
    /// Address and port to listen on (IPv4).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:50052")]
    pub bind: String,

    /// Listen on an address other than loopback, knowing that anyone who
    /// reaches it can use this machine.
    ///
    /// llama.cpp's RPC protocol has no authentication and no encryption:
    /// whoever reaches the port can allocate this machine's memory, run
    /// computations on it, read what it computes (prompts and answers pass
    /// through as activations) and send it malformed requests; llama.cpp's
    /// RPC server has had memory-safety bugs. Bind only an address of a
    /// private network you trust, such as a WireGuard interface; an SSH
    /// tunnel needs no flag (the worker stays on 127.0.0.1).
    #[arg(long)]
    pub allow_unauthenticated_network: bool,

    /// CPU threads for computing [default: physical cores].
    #[arg(short = 't', long, value_name = "N", env = crate::env::OLM_THREADS, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,

    /// Most memory the worker may take, e.g. `24G` or `512M`.
    ///
    /// Each device the worker offers reports at most this much memory to
    /// clients, which split layers by it; the worker's process cannot take
    /// more (`RLIMIT_DATA`: a client that asks for more gets an allocation
    /// failure, and the worker starts its server again).
    #[arg(long, value_name = "SIZE")]
    pub mem: Option<String>,

    /// Print olm's version and the RPC protocol version this worker speaks.
    #[arg(short = 'V', long = "version")]
    pub show_version: bool,

    /// Log each client and llama.cpp's RPC messages to stderr.
    #[arg(long)]
    pub verbose: bool,
}

/// `olm __rpc-server`: started by `olm worker`.
#[derive(Debug, Args)]
pub struct RpcServerArgs {
    /// Address and port to listen on (checked by `olm worker`).
    #[arg(long, value_name = "ADDR:PORT")]
    pub bind: std::net::SocketAddrV4,

    /// CPU threads for computing.
    #[arg(long, value_name = "N")]
    pub threads: u32,

    /// Memory limit in bytes (`RLIMIT_DATA`).
    #[arg(long, value_name = "BYTES")]
    pub mem_bytes: Option<u64>,

    /// Let llama.cpp's RPC messages through to stderr.
    #[arg(long)]
    pub verbose: bool,
}

/// Arguments of `olm cache`.
#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub action: CacheAction,
}

/// What `olm cache` does.
#[derive(Debug, Subcommand)]
pub enum CacheAction {
    /// List the entries, most recently used first.
    Ls {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove every entry.
    Clear,
}

/// Arguments of `olm completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Write the completion script for `shell`. The script asks `olm` itself
/// for candidates at each TAB (clap_complete's dynamic completion), so model
/// names come from the store as it is now.
pub fn write_completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    use clap_complete::env::EnvCompleter;
    let completer: &dyn EnvCompleter = match shell {
        clap_complete::Shell::Bash => &clap_complete::env::Bash,
        clap_complete::Shell::Zsh => &clap_complete::env::Zsh,
        clap_complete::Shell::Fish => &clap_complete::env::Fish,
        clap_complete::Shell::Elvish => &clap_complete::env::Elvish,
        _ => &clap_complete::env::Powershell,
    };
    // A failing stdout is reported by the caller's flush; nothing to add here.
    let _ = completer.write_registration(COMPLETE_VAR, "olm", "olm", "olm", out);
}

/// The variable under which a shell asks `olm` for completions.
const COMPLETE_VAR: &str = "COMPLETE";

/// Answer a shell's completion request (`COMPLETE=bash olm -- ...`) and exit;
/// does nothing when the variable is not set.
pub fn complete_from_env() {
    use clap::CommandFactory;
    clap_complete::CompleteEnv::with_factory(Cli::command)
        .var(COMPLETE_VAR)
        .bin("olm")
        .completer("olm")
        .complete();
}

/// Model names in the store, offered when completing a MODEL argument. The
/// one place the CLI definitions read anything: only when a shell asks.
fn model_name_candidates() -> clap_complete::ArgValueCandidates {
    clap_complete::ArgValueCandidates::new(|| {
        let (manifests, _) = crate::store::Store::from_env().manifests_all();
        manifests
            .into_iter()
            .map(|manifest| clap_complete::CompletionCandidate::new(manifest.name))
            .collect::<Vec<_>>()
    })
}

/// Arguments of `olm pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The model: alias[:quant], owner/repo[:quant], hf.co/owner/repo, ms://owner/repo, or a .gguf path.
    pub model: String,

    /// Which hub to download from: hf, modelscope, or auto.
    ///
    /// `auto` tries Hugging Face first (or config.toml's `first_source`)
    /// and, only when it cannot be reached at all (DNS failure, refused
    /// connection, connect timeout), says so and uses ModelScope; an HTTP
    /// error such as 404 or 401 is the answer, never a reason to switch.
    /// Default: OLM_SOURCE, else config.toml's `source`, else auto. A
    /// reference that names its hub (`ms://`, `hf.co/`) uses that hub.
    #[arg(long, value_enum, value_name = "SOURCE")]
    pub source: Option<SourceArg>,

    /// The quant to download (e.g. Q4_K_M, q8_0); wins over a `:QUANT` tag.
    #[arg(long, value_name = "QUANT")]
    pub quant: Option<String>,

    /// Store name for a local file (required with a path).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Download again even when a verified copy is already stored.
    ///
    /// The stored file is replaced only after the new download is verified.
    #[arg(long)]
    pub force: bool,

    /// List every quant with its size and whether it fits this machine; download nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Resolve from the local cache only (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
}

/// Arguments of `olm list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,

    /// List the catalog instead: each alias, the size of its default quant,
    /// the hubs that have it and Ollama's names for it.
    #[arg(long)]
    pub available: bool,
}

/// A hub to pull from (`olm pull --source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceArg {
    /// Hugging Face (HF_ENDPOINT).
    Hf,
    /// ModelScope (MODELSCOPE_ENDPOINT).
    Modelscope,
    /// One, then the other if the first cannot be reached.
    Auto,
}

/// Arguments of `olm show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The model: a store name, repo or .gguf path.
    #[arg(add = model_name_candidates())]
    pub model: String,

    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,

    /// Print only the chat template.
    #[arg(long, conflicts_with = "license")]
    pub template: bool,

    /// Print only the license.
    #[arg(long)]
    pub license: bool,
}

/// Arguments of `olm rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Store names to remove.
    #[arg(add = model_name_candidates(), required = true)]
    pub models: Vec<String>,

    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
}

/// Arguments of `olm serve`.
/// `olm __worker`: the server starts it; its model arrives on stdin.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Log to stderr (the server passes its own --verbose).
    #[arg(short, long)]
    pub verbose: bool,

    /// Ports of the RPC workers the model uses (`serve --rpc`): the
    /// sandbox lets the process connect there, and nowhere else.
    #[arg(long = "rpc-port", value_name = "PORT")]
    pub rpc_ports: Vec<u16>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Models the API may use besides store names: a name, repo or .gguf path.
    #[arg(add = model_name_candidates(), value_name = "MODEL")]
    pub models: Vec<String>,

    /// Address to listen on; anything but loopback requires --api-key.
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on (0 picks a free one; the address is printed on stderr).
    #[arg(short = 'p', long, value_name = "PORT", default_value_t = 11435)]
    pub port: u16,

    /// Sequences generated together per model (one batched decode).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallel: u32,

    /// Requests that may wait for a free sequence; more get 503 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub max_queue: usize,

    /// API key required as `Authorization: Bearer KEY` on every route but /health.
    #[arg(long, value_name = "KEY", env = crate::env::OLM_API_KEY, hide_env_values = true)]
    pub api_key: Option<String>,

    /// A browser origin allowed to call the API (exact, e.g. http://localhost:3000); repeatable.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,

    /// Context of each sequence in tokens [default: the model's, at most 4096].
    #[arg(short = 'c', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub ctx_size: Option<u32>,

    /// Seconds an idle model stays loaded (a request's `keep_alive` overrides it).
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub keep_alive: u64,

    /// Models loaded at once; loading one more first unloads the least
    /// recently used idle one (as does a shortage of memory).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_loaded: u32,

    /// Largest request body in MiB (413 above).
    #[arg(long, value_name = "MIB", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub max_body_mib: u64,

    /// CPU threads for generation [default: physical cores].
    #[arg(short = 't', long, value_name = "N", env = crate::env::OLM_THREADS, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,

    #[command(flatten)]
    pub load: LoadArgs,

    #[command(flatten)]
    pub draft: DraftArgs,

    /// Chat template to use instead of each model's own: a Jinja file or a llama.cpp built-in name.
    #[arg(long, value_name = "FILE|NAME")]
    pub chat_template: Option<String>,

    /// Show llama.cpp's own log lines and request logs on stderr.
    #[arg(long)]
    pub verbose: bool,

    /// Milliseconds a client may take to send a request's headers (also the
    /// idle keep-alive limit) [default: 10000].
    #[arg(long, value_name = "MS", hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_ms: Option<u64>,

    /// Milliseconds a client may take to send a request's body; 408 after
    /// [default: 60000].
    #[arg(long, value_name = "MS", hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout_ms: Option<u64>,

    /// Milliseconds a write to a client that stopped reading may stay
    /// blocked before the connection and its generation are dropped
    /// [default: 30000].
    #[arg(long, value_name = "MS", hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub write_timeout_ms: Option<u64>,

    /// Connections open at once; more wait to be accepted [default: 512].
    #[arg(long, value_name = "N", hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,

    /// Milliseconds running requests may take to finish after SIGINT or
    /// SIGTERM [default: 10000].
    #[arg(long, value_name = "MS", hide = true)]
    pub shutdown_grace_ms: Option<u64>,

    /// Milliseconds a loaded model may go without progress (a decode step or
    /// a request's preparation that does not end) before /health answers 503
    /// [default: 30000].
    #[arg(long, value_name = "MS", hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_limit_ms: Option<u64>,

    /// Tests only, debug builds only: run `/api/pull` inside the sandboxed
    /// server instead of its pull process, to prove the server itself cannot
    /// connect anywhere.
    #[cfg(debug_assertions)]
    #[arg(long, hide = true)]
    pub test_pull_in_server: bool,
}

/// Arguments of `olm ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Print the server's JSON array of loaded models instead of a table.
    #[arg(long)]
    pub json: bool,

    /// The server's address: a host, `host:port` or `http://host:port`.
    #[arg(
        long,
        value_name = "HOST",
        env = crate::env::OLM_HOST,
        default_value = "127.0.0.1"
    )]
    pub host: String,

    /// The server's port [default: the one --host names, else 11435].
    #[arg(short = 'p', long, value_name = "PORT")]
    pub port: Option<u16>,

    /// API key sent as `Authorization: Bearer KEY` (the server's --api-key).
    #[arg(long, value_name = "KEY", env = crate::env::OLM_API_KEY, hide_env_values = true)]
    pub api_key: Option<String>,
}

/// Arguments of `olm verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Store names to check [default: all].
    #[arg(add = model_name_candidates())]
    pub models: Vec<String>,
}

/// Arguments of `olm chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The model: a path to a .gguf file or a name, as for `olm run`.
    #[arg(add = model_name_candidates())]
    pub model: String,

    /// Do not show the model's reasoning (its `<think>` part) on stderr.
    #[arg(long)]
    pub hide_thinking: bool,

    #[command(flatten)]
    pub generation: GenerationArgs,
}

/// Arguments of `olm run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The model: a name in the store (see `olm list`), owner/repo[:QUANT], or a path to a .gguf file.
    #[arg(add = model_name_candidates())]
    pub model: String,

    /// The prompt. Several words are joined with spaces.
    #[arg(value_name = "PROMPT")]
    pub prompt: Vec<String>,

    /// Send the prompt to the model as is, without the chat template.
    #[arg(long)]
    pub raw: bool,

    /// Print the prompt as the model sees it (after the chat template) to stderr.
    #[arg(long)]
    pub verbose_prompt: bool,

    /// Neither load nor save the prompt cache for this run.
    ///
    /// By default the evaluated beginning of the prompt (the system prompt,
    /// a piped document) is saved in olm's cache folder (`OLM_PROMPT_CACHE`),
    /// so the next run that starts the same way skips evaluating it.
    #[arg(long)]
    pub no_cache: bool,

    /// Print one JSON object with the text and statistics instead of streaming text.
    ///
    /// Fields: model, text, thinking (the model's reasoning, if any),
    /// tool_calls (with --tools), stop_reason (eog, max_tokens, context_full,
    /// stop_sequence, cancelled), prompt_tokens, generated_tokens,
    /// load_ms, time_to_first_token_ms, prompt_ms, generation_ms,
    /// prompt_tokens_per_second, generation_tokens_per_second,
    /// drafted_tokens, accepted_tokens (speculative decoding),
    /// prompt_tokens_from_cache (loaded from the prompt cache).
    #[arg(long)]
    pub json: bool,

    /// Tools the model may call: a JSON file with a list of tool definitions
    /// as OpenAI and Ollama take them (`{"type": "function", "function":
    /// {"name", "description", "parameters"}}`). Each call is printed on
    /// stdout as one JSON line, {"id", "name", "arguments"}; an answer in
    /// prose (with --tool-choice auto) is printed as text.
    #[arg(long, value_name = "FILE")]
    pub tools: Option<PathBuf>,

    /// Which calls to make with --tools: auto (calls or prose, as the model
    /// decides), required (one call or more), or the name of the tool to
    /// call (exactly once).
    #[arg(long, value_name = "auto|required|NAME", requires = "tools")]
    pub tool_choice: Option<String>,

    /// Do not show the model's reasoning (its `<think>` part) on stderr. It
    /// never goes to stdout; --json carries it as "thinking".
    #[arg(long)]
    pub hide_thinking: bool,

    #[command(flatten)]
    pub generation: GenerationArgs,
}

/// Arguments of `olm bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The model: a path to a .gguf file or a model name.
    #[arg(add = model_name_candidates())]
    pub model: String,

    /// Prompt sizes to test (ppN); 0 skips prompt tests.
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_name = "N,...",
        value_delimiter = ',',
        default_value = "512"
    )]
    pub prompts: Vec<u32>,

    /// Generation lengths to test (tgN); 0 skips generation tests.
    #[arg(
        short = 'n',
        long = "n-gen",
        value_name = "N,...",
        value_delimiter = ',',
        default_value = "128"
    )]
    pub generations: Vec<u32>,

    /// Repetitions of each test.
    #[arg(short = 'r', long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub repetitions: u32,

    /// CPU threads [default: physical cores].
    #[arg(short = 't', long, value_name = "N,...", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Vec<u32>,

    /// Logical batch sizes: prompt tokens per llama.cpp call.
    #[arg(short = 'b', long, value_name = "N,...", value_delimiter = ',', default_value = "2048", value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: Vec<u32>,

    /// Physical batch sizes: tokens per compute step.
    #[arg(long = "ubatch-size", visible_alias = "ub", value_name = "N,...", value_delimiter = ',', default_value = "512", value_parser = clap::value_parser!(u32).range(1..))]
    pub ubatch_size: Vec<u32>,

    /// Sequences generating at once through one batched decode (serving
    /// throughput); reported as aggregate tokens per second.
    #[arg(long, value_name = "N,...", value_delimiter = ',', default_value = "1", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: Vec<u32>,

    #[command(flatten)]
    pub load: LoadArgs,

    /// Report format.
    #[arg(
        short = 'o',
        long,
        value_enum,
        default_value = "md",
        value_name = "FORMAT"
    )]
    pub output: BenchFormat,

    /// Skip the warm-up run before each test.
    #[arg(long)]
    pub no_warmup: bool,

    /// `ngram` adds, for each generation length N, the tests `tgN copy` and
    /// `tgN copy+draft`: greedy generation after a prompt that repeats a
    /// passage (as an answer that copies its input does), without and with
    /// speculative decoding; JSON reports `n_drafted` and `n_accepted`.
    #[arg(long, value_enum, value_name = "MODE", default_value = "off")]
    pub draft: DraftChoice,

    /// Show llama.cpp's own log lines on stderr.
    #[arg(long)]
    pub verbose: bool,
}

/// Report formats of `olm bench -o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchFormat {
    /// A markdown table, as llama-bench prints.
    Md,
    /// A JSON array of records with llama-bench's field names.
    Json,
    /// One JSON record per line.
    Jsonl,
    /// Comma-separated values with a header line.
    Csv,
}

/// Generation flags shared by `run`, `chat` and `serve`.
#[derive(Debug, Clone, Args)]
pub struct GenerationArgs {
    /// System prompt: instructions that frame the conversation.
    #[arg(short = 's', long, value_name = "TEXT", help_heading = "Generation")]
    pub system: Option<String>,

    /// Sampling temperature; 0 picks the most likely token every time (greedy).
    #[arg(long, value_name = "T", value_parser = non_negative_f32, help_heading = "Generation")]
    pub temperature: Option<f32>,

    /// Sample only from the K most likely tokens (0 disables).
    #[arg(long, value_name = "K", help_heading = "Generation")]
    pub top_k: Option<u32>,

    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches P (1.0 disables).
    #[arg(long, value_name = "P", value_parser = probability, help_heading = "Generation")]
    pub top_p: Option<f32>,

    /// Drop tokens less likely than P times the most likely one (0 disables).
    #[arg(long, value_name = "P", value_parser = probability, help_heading = "Generation")]
    pub min_p: Option<f32>,

    /// Penalize tokens repeated in the last 64 tokens (1.0 disables).
    #[arg(long, value_name = "X", value_parser = positive_f32, help_heading = "Generation")]
    pub repeat_penalty: Option<f32>,

    /// Random seed; the same seed, model and prompt give the same answer.
    #[arg(long, value_name = "N", help_heading = "Generation")]
    pub seed: Option<u32>,

    /// Stop after generating N tokens.
    ///
    /// Without it, generation stops at the model's end of turn or when the
    /// context is full.
    #[arg(
        short = 'n',
        long,
        value_name = "N",
        env = crate::env::OLM_MAX_TOKENS,
        help_heading = "Generation"
    )]
    pub max_tokens: Option<u32>,

    /// Context size in tokens (prompt plus answer).
    ///
    /// By default olm sizes the context to what the run needs: the prompt plus
    /// the answer budget, within the model's trained context length.
    #[arg(short = 'c', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), help_heading = "Generation")]
    pub ctx_size: Option<u32>,

    /// CPU threads for generation [default: physical cores].
    #[arg(short = 't', long, value_name = "N", env = crate::env::OLM_THREADS, value_parser = clap::value_parser!(u32).range(1..=1024), help_heading = "Generation")]
    pub threads: Option<u32>,

    #[command(flatten)]
    pub load: LoadArgs,

    #[command(flatten)]
    pub draft: DraftArgs,

    /// Constrain the output to a format: `json` makes the model answer with a JSON object.
    #[arg(long, value_enum, value_name = "FORMAT", help_heading = "Generation")]
    pub format: Option<OutputFormat>,

    /// Constrain the output to match a JSON schema read from FILE.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "format",
        help_heading = "Generation"
    )]
    pub schema: Option<PathBuf>,

    /// Chat template to use instead of the model's own: a Jinja file, or a
    /// llama.cpp built-in name (chatml, llama3, gemma, mistral-v7, phi4, ...).
    #[arg(long, value_name = "FILE|NAME", help_heading = "Generation")]
    pub chat_template: Option<String>,

    /// Show llama.cpp's own log lines on stderr.
    #[arg(long)]
    pub verbose: bool,
}

/// How a model is loaded onto this machine's devices: the flags `run`,
/// `chat`, `serve` and `bench` share.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Number of layers to offload to the GPU (when olm is built with a GPU backend).
    #[arg(long, value_name = "N", help_heading = "Model loading")]
    pub gpu_layers: Option<u32>,

    /// Split the model over RPC workers too: `HOST:PORT` of each `olm
    /// worker`, comma-separated (IPv4; a name is looked up once, first).
    ///
    /// Layers go to this machine and to each worker's devices in proportion
    /// to their memory (this machine's CPU takes its share when it has no
    /// GPU); --tensor-split sets the weights instead. A worker that cannot
    /// be reached, does not answer or speaks another protocol version is
    /// refused before loading (exit 4); one that dies later ends the request
    /// with an error (OLM_RPC_TIMEOUT bounds each wait). The traffic is not
    /// encrypted: use a tunnel or a private network. `olm run --json` shows
    /// the split.
    #[arg(long, value_name = "LIST", value_delimiter = ',', env = crate::env::OLM_RPC, help_heading = "Model loading")]
    pub rpc: Vec<String>,

    /// Weights of the layer split, comma-separated: this machine's CPU
    /// first, then each GPU here, then each device of each --rpc worker in
    /// order, e.g. `1,1,2`; 0 gives a device no layer.
    #[arg(
        long,
        value_name = "W,...",
        value_delimiter = ',',
        conflicts_with = "gpu_layers",
        help_heading = "Model loading"
    )]
    pub tensor_split: Vec<f32>,
}

/// Speculative decoding: `run`, `chat` and `serve` share these.
#[derive(Debug, Clone, Args)]
pub struct DraftArgs {
    /// Speculative decoding: `ngram` guesses the next tokens from the prompt
    /// and the answer so far, and the model checks a whole guess in one step
    /// (same answer, faster when the answer copies from its input); `off`
    /// decodes one token at a time.
    #[arg(
        long,
        value_enum,
        value_name = "MODE",
        default_value = "ngram",
        help_heading = "Speed"
    )]
    pub draft: DraftChoice,

    /// Most tokens one guess may propose (the length adapts to how guesses
    /// fare; guessing stops while guesses are right too rarely to pay).
    #[arg(long, value_name = "N", default_value_t = crate::engine::DEFAULT_DRAFT_MAX, value_parser = clap::value_parser!(u32).range(1..=crate::engine::MAX_DRAFT_MAX as i64), help_heading = "Speed")]
    pub draft_max: u32,
}

/// `--draft` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DraftChoice {
    Off,
    Ngram,
}

/// Output constraint for `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A JSON object.
    Json,
}

fn non_negative_f32(value: &str) -> Result<f32, String> {
    let number: f32 = value
        .parse()
        .map_err(|_| format!("'{value}' is not a number"))?;
    if number.is_finite() && number >= 0.0 {
        Ok(number)
    } else {
        Err(format!("{value} must be a finite number >= 0"))
    }
}

fn positive_f32(value: &str) -> Result<f32, String> {
    let number = non_negative_f32(value)?;
    if number > 0.0 {
        Ok(number)
    } else {
        Err(format!("{value} must be greater than 0"))
    }
}

fn probability(value: &str) -> Result<f32, String> {
    let number = non_negative_f32(value)?;
    if number <= 1.0 {
        Ok(number)
    } else {
        Err(format!("{value} must be between 0 and 1"))
    }
}

/// Files generated from these definitions and checked in: completion
/// scripts and man pages. `generated_docs_are_current` compares them;
/// `cargo test regenerate_docs -- --ignored` rewrites them.
#[cfg(test)]
mod generated {
    use std::path::{Path, PathBuf};

    use clap::CommandFactory;
    use clap_complete::Shell;

    use super::*;

    const REGENERATE: &str = "run `cargo test regenerate_docs -- --ignored` and commit the result";

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn completion_file(shell: Shell) -> &'static str {
        match shell {
            Shell::Bash => "olm.bash",
            Shell::Zsh => "_olm",
            Shell::Fish => "olm.fish",
            Shell::Elvish => "olm.elv",
            Shell::PowerShell => "_olm.ps1",
            _ => "olm.unknown",
        }
    }

    /// Every generated file: (path relative to the repo, contents).
    fn rendered() -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = Vec::new();
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::Elvish,
            Shell::PowerShell,
        ] {
            let mut out = Vec::new();
            write_completions(shell, &mut out);
            files.push((Path::new("completions").join(completion_file(shell)), out));
        }
        let command = Cli::command();
        files.push((Path::new("man").join("olm.1"), man_page(command.clone())));
        for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
            let name = format!("olm-{}", sub.get_name());
            let page = sub
                .clone()
                .name(name.clone())
                .display_name(format!("olm {}", sub.get_name()))
                .bin_name(format!("olm {}", sub.get_name()));
            files.push((Path::new("man").join(format!("{name}.1")), man_page(page)));
        }
        files
    }

    fn man_page(command: clap::Command) -> Vec<u8> {
        let mut out = Vec::new();
        clap_mangen::Man::new(command)
            .render(&mut out)
            .expect("render man page");
        out
    }

    #[test]
    fn generated_docs_are_current() {
        for (path, expected) in rendered() {
            let actual = std::fs::read(root().join(&path)).unwrap_or_default();
            assert!(
                actual == expected,
                "{} is stale: {REGENERATE}",
                path.display()
            );
        }
    }

    #[test]
    #[ignore = "rewrites completions/ and man/"]
    fn regenerate_docs() {
        for directory in ["completions", "man"] {
            let _ = std::fs::remove_dir_all(root().join(directory));
            std::fs::create_dir_all(root().join(directory)).expect("create docs dir");
        }
        for (path, contents) in rendered() {
            std::fs::write(root().join(path), contents).expect("write generated file");
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_argument_has_help() {
        fn check(command: &clap::Command, path: &str) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(
                    arg.get_help().is_some() || arg.get_long_help().is_some(),
                    "{path} argument '{id}' has no help text"
                );
            }
            for sub in command.get_subcommands() {
                assert!(
                    sub.get_about().is_some(),
                    "{path} {} has no about",
                    sub.get_name()
                );
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        check(&Cli::command(), "olm");
    }

    #[test]
    fn sampling_values_are_range_checked() {
        assert!(Cli::try_parse_from(["olm", "run", "m", "--temperature", "-1"]).is_err());
        assert!(Cli::try_parse_from(["olm", "run", "m", "--top-p", "1.5"]).is_err());
        assert!(Cli::try_parse_from(["olm", "run", "m", "--repeat-penalty", "0"]).is_err());
        assert!(Cli::try_parse_from(["olm", "run", "m", "-c", "0"]).is_err());
        assert!(Cli::try_parse_from(["olm", "run", "m", "--temperature", "NaN"]).is_err());
        assert!(Cli::try_parse_from(["olm", "run", "m", "--temperature", "0.7", "hi"]).is_ok());
    }
}
