//! Downloads from a hub into the store: Hugging Face (or a mirror) and
//! ModelScope (or a mirror), each a "source" that lists a repo's files and
//! says where each file's bytes are ([`Hub::list_files`], [`Hub::head_file`]);
//! one transfer path ([`fetch_file`]) fetches the bytes for both.
//!
//! Owns: talking HTTP to the hubs (file listings, resolve headers, ranged
//! GETs), validating every value a server sends before it becomes part of a
//! path, telling an unreachable hub from one that answered, retries with
//! back-off, resume from partial files, parallel ranged parts, sha256 and
//! size verification, the hubs' tokens (environment or saved logins), and
//! progress through [`PullReporter`].
//! Uses: `store` (cache layouts, locks, atomic writes), `catalog` (aliases) and
//! `gguf` (checking a downloaded file) for the shared pull in [`pull`].
//! Must not touch: the terminal (no printing: report through the trait),
//! llama.cpp, `std::process::exit`.

mod api;
mod download;
mod modelscope;
pub mod pull;
pub mod quant;
mod tokens;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

pub use api::{FileHead, RemoteFile};
pub use download::{fetch_file, Existing};

use crate::store::{HubKind, StoreError};

/// Default Hugging Face endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Default ModelScope endpoint (the client's `DEFAULT_ENDPOINT`).
pub const DEFAULT_MODELSCOPE_ENDPOINT: &str = "https://modelscope.cn";
/// Largest JSON answer read from the hub.
pub const MAX_JSON_BYTES: u64 = 16 << 20;
/// Attempts per request before giving up (Ollama uses 6).
pub const MAX_ATTEMPTS: u32 = 6;
/// Largest file size believed from a hub (1 PiB): a listed or announced
/// size beyond it is invalid metadata, so sums of sizes cannot overflow.
pub const MAX_FILE_BYTES: u64 = 1 << 50;
/// Fewest bytes a body must bring in each stall window (`OLM_STALL_TIMEOUT`,
/// 30 s by default: about 550 bytes a second). A hub that sends a byte now
/// and then, never silent long enough to be a stall, is as stuck as a
/// silent one.
pub const MIN_BYTES_PER_WINDOW: u64 = 16 << 10;
/// Most redirects followed for one request.
pub const MAX_REDIRECTS: u32 = 10;

/// Progress of a pull, reported by the hub; the terminal side lives in `ui`.
pub trait PullReporter: Send + Sync {
    /// Another process holds the lock on this file; waiting for it.
    fn waiting_for_lock(&self, _file: &str) {}
    /// A file's download starts (`already` bytes were there from before).
    fn start_file(&self, file: &str, total: u64, already: u64);
    /// `bytes` more arrived.
    fn advance(&self, bytes: u64);
    /// A request failed and will be retried after `delay`.
    fn retrying(&self, _reason: &str, _delay: Duration) {}
    /// The file is complete; its hash is being checked.
    fn verifying(&self, _file: &str) {}
    /// The file is verified and in place.
    fn finish_file(&self, file: &str);
}

/// A reporter that reports nothing.
pub struct Silent;

impl PullReporter for Silent {
    fn start_file(&self, _file: &str, _total: u64, _already: u64) {}
    fn advance(&self, _bytes: u64) {}
    fn finish_file(&self, _file: &str) {}
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("offline: {0} is not in the local cache")]
    Offline(String),
    #[error("repo {0} was not found on the hub")]
    RepoNotFound(String),
    #[error("{repo} has no {quant} file")]
    QuantNotFound {
        repo: String,
        quant: String,
        available: Vec<(String, u64)>,
    },
    #[error("{repo} has no GGUF file")]
    NoGguf { repo: String },
    #[error("{} is gated or private: the hub answered 401 Unauthorized", api::shown_url(.0))]
    Unauthorized(String),
    /// `HF_ENDPOINT` (or `MODELSCOPE_ENDPOINT`) is not an http(s) URL olm
    /// can send requests to.
    #[error("{variable} is not a usable hub address ({reason}): {}", api::shown_url(.value))]
    BadEndpoint {
        variable: &'static str,
        value: String,
        reason: &'static str,
    },
    /// An HTTP error status (on ModelScope also 401 and 403, whose hints
    /// name ModelScope's token).
    #[error("{}", status_message(*.hub, *.status, .url))]
    Status {
        url: String,
        status: u16,
        hub: HubKind,
    },
    /// No answer: `unreachable` when the hub could not be reached at all
    /// (DNS failure, refused connection, connect timeout), which is never
    /// retried and lets `--source auto` try the other hub.
    #[error("{}", network_message(.url, .message, *.unreachable))]
    Network {
        url: String,
        message: String,
        unreachable: bool,
    },
    #[error("invalid metadata from hub: {what} {value}")]
    BadMetadata { what: &'static str, value: String },
    #[error("{file} is corrupt: sha256 is {actual}, the hub says {expected}")]
    HashMismatch {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{file} has the wrong size: {actual} bytes, the hub says {expected}")]
    SizeMismatch {
        file: String,
        expected: u64,
        actual: u64,
    },
    #[error("not enough disk space in {path}: {needed} bytes needed, {free} free")]
    DiskFull {
        path: String,
        needed: u64,
        free: u64,
    },
    #[error("interrupted; the partial download is kept and the next pull resumes it")]
    Interrupted,
    /// The message names the I/O error itself (it is not also a `source`,
    /// which would print it twice in an error chain).
    #[error("{action} {path}: {error}")]
    Io {
        action: &'static str,
        path: String,
        error: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl HubError {
    /// Exit code class: 3 not found, 4 network, 5 integrity, 6 disk, 130 interrupted, 1 other.
    pub fn exit_code(&self) -> u8 {
        match self {
            HubError::BadEndpoint { .. } => 2,
            HubError::RepoNotFound(_)
            | HubError::QuantNotFound { .. }
            | HubError::NoGguf { .. } => 3,
            HubError::Offline(_)
            | HubError::Unauthorized(_)
            | HubError::Status { .. }
            | HubError::Network { .. } => 4,
            HubError::BadMetadata { .. }
            | HubError::HashMismatch { .. }
            | HubError::SizeMismatch { .. } => 5,
            HubError::DiskFull { .. } => 6,
            HubError::Io { error, .. } if crate::store::is_disk_full(error) => 6,
            HubError::Interrupted => 130,
            HubError::Io { .. } | HubError::Store(_) => 1,
        }
    }

    /// The hub could not be reached at all (DNS, refused, connect timeout).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            HubError::Network {
                unreachable: true,
                ..
            }
        )
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            HubError::Unauthorized(_) => Some(format!(
                "accept the model's license on the hub and set {} to an access token \
                 (or log in with `hf auth login`)",
                crate::env::HF_TOKEN
            )),
            HubError::Status {
                status: 401,
                hub: HubKind::ModelScope,
                ..
            } => Some(format!(
                "the repo is private: set {} to a ModelScope access token (or log in with `modelscope login`)",
                crate::env::MODELSCOPE_API_TOKEN
            )),
            HubError::Status {
                status: 403,
                hub: HubKind::ModelScope,
                ..
            } => Some(format!(
                "the token in use ({} or the saved `modelscope login`) has no access to this repo",
                crate::env::MODELSCOPE_API_TOKEN
            )),
            HubError::Network {
                unreachable: true, ..
            } => Some(format!(
                "check the connection; `--source hf|modelscope|auto` picks the hub, {} and {} a mirror",
                crate::env::HF_ENDPOINT,
                crate::env::MODELSCOPE_ENDPOINT
            )),
            HubError::QuantNotFound { available, .. } if !available.is_empty() => Some(format!(
                "available: {}",
                available
                    .iter()
                    .map(|(quant, size)| format!("{quant} ({})", crate::human::size(*size)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            HubError::BadEndpoint { variable, .. } => Some(format!(
                "set {variable} to the hub's address, such as {} (or unset it)",
                match variable {
                    &crate::env::HF_ENDPOINT => DEFAULT_ENDPOINT,
                    _ => DEFAULT_MODELSCOPE_ENDPOINT,
                }
            )),
            HubError::Offline(_) => {
                Some("connect to the network, or unset HF_HUB_OFFLINE / drop --offline".into())
            }
            HubError::Network { .. } | HubError::Status { .. } => Some(format!(
                "check the connection (and {} or {}) and run the same command again; it resumes",
                crate::env::HF_ENDPOINT,
                crate::env::MODELSCOPE_ENDPOINT
            )),
            HubError::HashMismatch { .. } | HubError::SizeMismatch { .. } => {
                Some("the damaged download was removed; run the same command again".into())
            }
            HubError::DiskFull { .. } => {
                Some("free some disk space and run the same command again".into())
            }
            HubError::Io { error, .. } if crate::store::is_disk_full(error) => {
                Some("free some disk space and run the same command again; it resumes".into())
            }
            HubError::RepoNotFound(_) => {
                Some("check the name; `olm pull --help` shows the forms a model can take".into())
            }
            HubError::Store(store) => store.hint(),
            _ => None,
        }
    }

    pub(crate) fn io<'a>(
        action: &'static str,
        path: &'a std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |error| HubError::Io {
            action,
            path: path.display().to_string(),
            error,
        }
    }
}

fn status_message(hub: HubKind, status: u16, url: &str) -> String {
    let meaning = match status {
        401 => " Unauthorized (no token, or a token the hub does not accept)",
        403 => " Forbidden (the token has no access)",
        404 => " Not Found",
        429 => " Too Many Requests",
        _ => "",
    };
    format!(
        "{} answered {status}{meaning} for {}",
        hub.title(),
        api::shown_url(url)
    )
}

fn network_message(url: &str, message: &str, unreachable: bool) -> String {
    let url = api::shown_url(url);
    if unreachable {
        format!("cannot reach {url}: {message}")
    } else {
        format!("network error for {url}: {message}")
    }
}

/// How to reach one hub.
#[derive(Clone)]
pub struct Hub {
    kind: HubKind,
    endpoint: String,
    token: Option<String>,
    agent: ureq::Agent,
    retry_base: Duration,
    connections: u32,
    /// The pace window: see [`MIN_BYTES_PER_WINDOW`].
    stall_timeout: Duration,
    cancel: Arc<AtomicBool>,
}

/// Settings of a [`Hub`].
#[derive(Debug, Clone)]
pub struct HubOptions {
    pub kind: HubKind,
    pub endpoint: String,
    pub token: Option<String>,
    /// Longest wait for a DNS answer or an accepted connection.
    pub connect_timeout: Duration,
    pub stall_timeout: Duration,
    pub retry_base: Duration,
    pub connections: u32,
}

impl HubOptions {
    /// Hugging Face, from the environment (see [`HubOptions::for_hub`]).
    pub fn from_env() -> Self {
        Self::for_hub(HubKind::HuggingFace)
    }

    /// `hub`'s endpoint and token from the environment: Hugging Face from
    /// `HF_ENDPOINT` and `HF_TOKEN` (else the token file of the Hugging Face
    /// CLI's login); ModelScope from `MODELSCOPE_ENDPOINT` (else
    /// `MODELSCOPE_DOMAIN`) and `MODELSCOPE_API_TOKEN` (else the saved
    /// `modelscope login`). Transfer settings from `OLM_CONNECT_TIMEOUT`,
    /// `OLM_STALL_TIMEOUT`, `OLM_RETRY_BASE_MS`, `OLM_CONNECTIONS`.
    pub fn for_hub(kind: HubKind) -> Self {
        let (endpoint, token) = match kind {
            HubKind::HuggingFace => (hf_endpoint(), tokens::hugging_face()),
            HubKind::ModelScope => (modelscope_endpoint(), tokens::modelscope()),
        };
        Self {
            kind,
            endpoint,
            token,
            connect_timeout: Duration::from_secs(
                crate::env::number(crate::env::OLM_CONNECT_TIMEOUT, 5).clamp(1, 300),
            ),
            stall_timeout: Duration::from_secs(
                crate::env::number(crate::env::OLM_STALL_TIMEOUT, 30).max(1),
            ),
            retry_base: Duration::from_millis(crate::env::number(
                crate::env::OLM_RETRY_BASE_MS,
                500,
            )),
            connections: crate::env::number(crate::env::OLM_CONNECTIONS, 4).clamp(1, 16) as u32,
        }
    }
}

/// A non-empty environment variable, trimmed.
fn env_value(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// `HF_ENDPOINT`, else huggingface.co; no trailing `/`.
fn hf_endpoint() -> String {
    let endpoint = env_value(crate::env::HF_ENDPOINT).unwrap_or_else(|| DEFAULT_ENDPOINT.into());
    endpoint.trim_end_matches('/').to_owned()
}

/// `MODELSCOPE_ENDPOINT`, else `MODELSCOPE_DOMAIN`, else modelscope.cn;
/// `https://` added when the value has no scheme and no trailing `/`, as
/// the client's `HubConfig.normalize_endpoint` does.
fn modelscope_endpoint() -> String {
    let endpoint = env_value(crate::env::MODELSCOPE_ENDPOINT)
        .or_else(|| env_value(crate::env::MODELSCOPE_DOMAIN))
        .unwrap_or_else(|| DEFAULT_MODELSCOPE_ENDPOINT.into());
    let lower = endpoint.to_ascii_lowercase();
    let endpoint = if lower.starts_with("http://") || lower.starts_with("https://") {
        endpoint
    } else {
        format!("https://{endpoint}")
    };
    endpoint.trim_end_matches('/').to_owned()
}

impl Hub {
    pub fn new(options: HubOptions, cancel: Arc<AtomicBool>) -> Self {
        let connect_timeout = options.connect_timeout;
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .resolver(move |netloc: &str| api::resolve_within(netloc, connect_timeout))
            .timeout_connect(connect_timeout)
            .timeout_read(options.stall_timeout)
            .timeout_write(Duration::from_secs(30))
            .user_agent(concat!("olm/", env!("CARGO_PKG_VERSION")))
            .build();
        Self {
            kind: options.kind,
            endpoint: options.endpoint,
            token: options.token,
            agent,
            retry_base: options.retry_base,
            connections: options.connections,
            stall_timeout: options.stall_timeout,
            cancel,
        }
    }

    /// The endpoint as messages show it: any user name and password in it
    /// replaced by `***`.
    pub fn shown_endpoint(&self) -> String {
        api::shown_url(&self.endpoint)
    }

    /// An endpoint that is not an http(s) URL with a host (and no query or
    /// fragment, which the paths olm appends would break) is a setting to
    /// fix, said once before any request (exit 2), not a network error.
    pub fn check_endpoint(&self) -> Result<(), HubError> {
        let variable = match self.kind {
            HubKind::HuggingFace => crate::env::HF_ENDPOINT,
            HubKind::ModelScope => crate::env::MODELSCOPE_ENDPOINT,
        };
        api::check_endpoint(&self.endpoint).map_err(|reason| HubError::BadEndpoint {
            variable,
            value: self.endpoint.clone(),
            reason,
        })
    }

    /// Which hub this is.
    pub fn kind(&self) -> HubKind {
        self.kind
    }

    /// Every file of `repo` (Hugging Face: at `main`; ModelScope: at
    /// `master`), names, sizes and hashes validated.
    pub fn list_files(
        &self,
        repo: &crate::store::RepoId,
        reporter: &dyn PullReporter,
    ) -> Result<Vec<RemoteFile>, HubError> {
        match self.kind {
            HubKind::HuggingFace => self.hf_list_files(repo, reporter),
            HubKind::ModelScope => self.ms_list_files(repo, reporter),
        }
    }

    /// The revision, sha256, size and download URL of `file` (Hugging Face
    /// asks the resolve URL; ModelScope's listing already says).
    pub fn head_file(
        &self,
        repo: &crate::store::RepoId,
        file: &RemoteFile,
        reporter: &dyn PullReporter,
    ) -> Result<FileHead, HubError> {
        match self.kind {
            HubKind::HuggingFace => self.hf_head_file(repo, &file.name, reporter),
            HubKind::ModelScope => self.ms_head_file(repo, file),
        }
    }

    pub(crate) fn cancelled(&self) -> bool {
        self.cancel.load(std::sync::atomic::Ordering::Relaxed)
    }
}
