//! Every environment variable olm reads, documented once.

/// Not read but set: olm sets it to `1` for itself and every process it
/// starts, so that an abort inside llama.cpp never attaches a debugger to
/// print a backtrace (on stdout, and slowly).
pub const GGML_NO_BACKTRACE: &str = "GGML_NO_BACKTRACE";

/// Disables colour on stderr when set to a non-empty value (<https://no-color.org>).
pub const NO_COLOR: &str = "NO_COLOR";

/// `RUST_LOG`-style filter for olm's own tracing output (with `--verbose`).
pub const OLM_LOG: &str = "OLM_LOG";

/// Default for `--threads` (CPU threads for generation).
pub const OLM_THREADS: &str = "OLM_THREADS";

/// Default for `olm serve --api-key`: the key clients must send as
/// `Authorization: Bearer KEY`.
pub const OLM_API_KEY: &str = "OLM_API_KEY";

/// Where `olm ps` finds the server: `host`, `host:port` or `http://host:port`.
/// Default: `127.0.0.1:11435`.
pub const OLM_HOST: &str = "OLM_HOST";

/// Tests only, and read only by debug builds (release builds ignore it): `1`
/// lets llama.cpp see model files olm's GGUF validator would refuse, to prove
/// that an abort inside llama.cpp stays where it must (a server's worker
/// process; one error line from a command).
pub const OLM_TEST_SKIP_GGUF_CHECK: &str = "OLM_TEST_SKIP_GGUF_CHECK";

/// Tests only, and read only by debug builds: inject a fault while a model
/// loads, to prove the abort safety net of commands. `abort` makes ggml
/// abort as a failed `GGML_ASSERT` does; `signal` raises `SIGABRT` as an
/// uncaught C++ exception does.
pub const OLM_TEST_FAULT: &str = "OLM_TEST_FAULT";

/// olm's own state: manifests (store names), imported blobs, `config.toml`.
/// Default: the platform data directory (`~/.local/share/olm` on Linux).
pub const OLM_HOME: &str = "OLM_HOME";

/// Hugging Face home; the model cache is `$HF_HOME/hub` unless `HF_HUB_CACHE`
/// says otherwise. Default: `~/.cache/huggingface`.
pub const HF_HOME: &str = "HF_HOME";

/// The Hugging Face model cache directory itself (wins over `HF_HOME`).
pub const HF_HUB_CACHE: &str = "HF_HUB_CACHE";

/// Base URL of the Hugging Face hub or a mirror. Default: `https://huggingface.co`.
pub const HF_ENDPOINT: &str = "HF_ENDPOINT";

/// Access token for gated or private repos, sent only to `HF_ENDPOINT`'s host.
pub const HF_TOKEN: &str = "HF_TOKEN";

/// `1`/`true`/`yes`/`on`: `olm pull` resolves from the local cache only, like `--offline`.
pub const HF_HUB_OFFLINE: &str = "HF_HUB_OFFLINE";

/// A file holding the Hugging Face token, as the Hugging Face CLI's login
/// writes it; used when `HF_TOKEN` is not set. Default: `$HF_HOME/token`.
pub const HF_TOKEN_PATH: &str = "HF_TOKEN_PATH";

/// Base URL of the ModelScope hub or a mirror. Default: `https://modelscope.cn`.
pub const MODELSCOPE_ENDPOINT: &str = "MODELSCOPE_ENDPOINT";

/// The ModelScope host when `MODELSCOPE_ENDPOINT` is not set (the client's
/// older name for it); `https://` is added when it has no scheme.
pub const MODELSCOPE_DOMAIN: &str = "MODELSCOPE_DOMAIN";

/// ModelScope access token for private repos, sent only to the ModelScope
/// endpoint's host (as `Authorization: Bearer` and the `m_session_id`
/// cookie, as the client sends it). Set but empty: no token. Unset: the
/// login `modelscope login` saved, if any.
pub const MODELSCOPE_API_TOKEN: &str = "MODELSCOPE_API_TOKEN";

/// The ModelScope cache, shared with the `modelscope` client. Default:
/// `~/.cache/modelscope`.
pub const MODELSCOPE_CACHE: &str = "MODELSCOPE_CACHE";

/// Where the `modelscope` client keeps its login (`credentials/cookies`).
/// Default: `~/.modelscope`.
pub const MODELSCOPE_HOME: &str = "MODELSCOPE_HOME";

/// Default for `olm pull --source`: `hf`, `modelscope` or `auto` (the
/// `source` key of config.toml when unset; `auto` when neither).
pub const OLM_SOURCE: &str = "OLM_SOURCE";

/// Seconds a pull waits for a hub to answer a DNS query or accept a
/// connection before calling it unreachable (and, with `--source auto`,
/// trying the other hub). Default: 5.
pub const OLM_CONNECT_TIMEOUT: &str = "OLM_CONNECT_TIMEOUT";

/// Seconds without a received byte (or with fewer than 16 KiB) before a
/// download counts as stalled and is retried from where it stopped; a
/// listing or a file's headers must arrive within twice this. Default: 30.
pub const OLM_STALL_TIMEOUT: &str = "OLM_STALL_TIMEOUT";

/// Milliseconds of the first retry's back-off (doubled on each retry). Default: 500.
pub const OLM_RETRY_BASE_MS: &str = "OLM_RETRY_BASE_MS";

/// Parallel ranged connections for one large file. Default: 4.
pub const OLM_CONNECTIONS: &str = "OLM_CONNECTIONS";

/// Default for `--rpc` (run, chat, serve, bench): RPC workers as
/// `HOST:PORT,HOST:PORT`, each an `olm worker` whose devices take layers.
pub const OLM_RPC: &str = "OLM_RPC";

/// Seconds one answer of an RPC worker may take before the request fails
/// (a worker computes its layers of a whole prompt batch before it
/// answers). Default: 300.
pub const OLM_RPC_TIMEOUT: &str = "OLM_RPC_TIMEOUT";

/// Whether a boolean environment variable is set to a true value.
pub fn flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| {
        matches!(
            value.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// A numeric environment variable, or `default` when unset. A value that
/// is not a whole number (`-1`, `NaN`, `1e309`, not UTF-8) is said in one
/// warning line, then the default applies: it is never taken silently.
#[expect(
    clippy::print_stderr,
    reason = "read where no Printer is at hand; one warning line, as the Printer writes it"
)]
pub fn number(name: &str, default: u64) -> u64 {
    let Some(raw) = std::env::var_os(name) else {
        return default;
    };
    match raw.to_str().and_then(|value| value.trim().parse().ok()) {
        Some(value) => value,
        None => {
            eprintln!(
                "warning: {name}={} is not a whole number of 0 or more; using {default}",
                crate::store::names::escaped(&raw.to_string_lossy())
            );
            default
        }
    }
}

/// `1`/`true`/`yes`/`on`: leave the network sandbox off, like `--allow-network`
/// (for the command and the processes it starts). Every command but `pull`
/// otherwise runs where the kernel refuses it any network access.
pub const OLM_ALLOW_NETWORK: &str = "OLM_ALLOW_NETWORK";

/// Default for `--max-tokens` (answer length limit) of `run` and `chat`.
pub const OLM_MAX_TOKENS: &str = "OLM_MAX_TOKENS";

/// The prompt cache folder (`olm run` keeps the evaluated beginnings of
/// prompts there). Default: `prompts/` in the platform cache folder
/// (`~/.cache/olm/prompts` on Linux).
pub const OLM_PROMPT_CACHE: &str = "OLM_PROMPT_CACHE";

/// Most MiB the prompt cache may take; the least recently used entries go
/// first. Default: 4096.
pub const OLM_PROMPT_CACHE_MIB: &str = "OLM_PROMPT_CACHE_MIB";

/// Read by the test suite, not by olm: a comma-separated list of tests that
/// cannot run on this machine and may be skipped on purpose (`offline`,
/// `tmpfs`, `model`). Unset, such a test fails instead of passing unrun.
pub const OLM_ALLOW_SKIP: &str = "OLM_ALLOW_SKIP";

/// Read by the test suite, not by olm: the seed of the GGUF metadata
/// mutation test (default fixed, so a run is repeatable).
pub const OLM_MUTATION_SEED: &str = "OLM_MUTATION_SEED";
