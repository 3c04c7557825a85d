//! Downloads from the Hugging Face hub (or a mirror) into the store.
//!
//! Owns: talking HTTP to the hub (file listing, resolve headers, ranged GETs),
//! validating every value the server sends before it becomes part of a path,
//! retries with back-off, resume from partial files, parallel ranged parts,
//! sha256 and size verification, and progress through [`PullReporter`].
//! Uses: `store` (cache layout, locks, atomic writes), `catalog` (aliases) and
//! `gguf` (checking a downloaded file) for the shared pull in [`pull`].
//! Must not touch: the terminal (no printing: report through the trait),
//! llama.cpp, `std::process::exit`.

mod api;
mod download;
pub mod pull;
pub mod quant;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

pub use api::{FileHead, RemoteFile};
pub use download::{fetch_file, Existing};

use crate::store::StoreError;

/// Default hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Largest JSON answer read from the hub.
pub const MAX_JSON_BYTES: u64 = 16 << 20;
/// Attempts per request before giving up (Ollama uses 6).
pub const MAX_ATTEMPTS: u32 = 6;
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
    #[error("{0} is gated or private: the hub answered 401 Unauthorized")]
    Unauthorized(String),
    #[error("the hub answered {status} for {url}")]
    Status { url: String, status: u16 },
    #[error("network error for {url}: {message}")]
    Network { url: String, message: String },
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

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            HubError::Unauthorized(_) => Some(format!(
                "accept the model's license on the hub and set {} to an access token",
                crate::env::HF_TOKEN
            )),
            HubError::QuantNotFound { available, .. } if !available.is_empty() => Some(format!(
                "available: {}",
                available
                    .iter()
                    .map(|(quant, size)| format!("{quant} ({})", crate::human::size(*size)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            HubError::Offline(_) => {
                Some("connect to the network, or unset HF_HUB_OFFLINE / drop --offline".into())
            }
            HubError::Network { .. } | HubError::Status { .. } => Some(
                "check the connection (and HF_ENDPOINT) and run the same command again; it resumes"
                    .into(),
            ),
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

/// How to reach the hub.
#[derive(Clone)]
pub struct Hub {
    endpoint: String,
    token: Option<String>,
    agent: ureq::Agent,
    retry_base: Duration,
    connections: u32,
    cancel: Arc<AtomicBool>,
}

/// Settings of a [`Hub`].
#[derive(Debug, Clone)]
pub struct HubOptions {
    pub endpoint: String,
    pub token: Option<String>,
    pub stall_timeout: Duration,
    pub retry_base: Duration,
    pub connections: u32,
}

impl HubOptions {
    /// From `HF_ENDPOINT`, `HF_TOKEN`, `OLM_STALL_TIMEOUT`, `OLM_RETRY_BASE_MS`, `OLM_CONNECTIONS`.
    pub fn from_env() -> Self {
        let endpoint = std::env::var(crate::env::HF_ENDPOINT)
            .ok()
            .filter(|value| !value.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let token = std::env::var(crate::env::HF_TOKEN)
            .ok()
            .filter(|value| !value.trim().is_empty());
        Self {
            endpoint: endpoint.trim().trim_end_matches('/').to_owned(),
            token,
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

impl Hub {
    pub fn new(options: HubOptions, cancel: Arc<AtomicBool>) -> Self {
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(options.stall_timeout)
            .timeout_write(Duration::from_secs(30))
            .user_agent(concat!("olm/", env!("CARGO_PKG_VERSION")))
            .build();
        Self {
            endpoint: options.endpoint,
            token: options.token,
            agent,
            retry_base: options.retry_base,
            connections: options.connections,
            cancel,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(std::sync::atomic::Ordering::Relaxed)
    }
}
