//! `POST /api/pull` and `DELETE /api/delete`: the store over the Ollama API.
//!
//! Owns: both handlers, the NDJSON progress of a pull (throttled), and the
//! status of each pull or store failure. A pull runs the same `hub::pull` code
//! as `olm pull`, on a blocking thread; a client that goes away cancels it, and the partial
//! download stays where no model is looked for (the next pull resumes it).
//! The API names models only: a path or URL is refused before any work.
//! Must not touch: the engine, the terminal.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::error::{ApiError, Flavor};
use super::request::json_body;
use super::AppState;
use crate::hub::pull::{hub_target, pull_from_hub, PullEvents, TargetError};
use crate::hub::{FileHead, HubError, PullReporter};
use crate::human;
use crate::store::{names::escaped, ModelRef, Store, StoreError};

/// Least time between two progress lines of one file.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// `{"model": NAME}`, or the older `{"name": NAME}`.
#[derive(Debug, Deserialize)]
struct NameRequest {
    model: Option<String>,
    name: Option<String>,
    /// `POST /api/pull` only; NDJSON progress unless `false`.
    stream: Option<bool>,
    // `insecure` and Ollama's registry credentials are accepted and ignored.
}

impl NameRequest {
    fn model_name(&self) -> Result<&str, ApiError> {
        self.model
            .as_deref()
            .filter(|name| !name.is_empty())
            .or(self.name.as_deref())
            .filter(|name| !name.is_empty())
            .ok_or_else(|| ApiError::bad_request("model is required"))
    }
}

/// A store or hub name from a request: never a path, a URL or anything
/// `ModelRef::parse_name` refuses (400 before any file or network access).
fn store_name(text: &str) -> Result<ModelRef, ApiError> {
    let refused = || {
        ApiError::bad_request(format!(
            "invalid model name '{}': give a name such as owner/repo[:QUANT] or a catalog alias, not a path or URL",
            escaped(text)
        ))
    };
    let path_like = text.contains("://")
        || text.starts_with(['.', '/', '~'])
        || text.contains('\\')
        || text.to_ascii_lowercase().ends_with(".gguf");
    if path_like {
        return Err(refused());
    }
    ModelRef::parse_name(text).map_err(|_| refused())
}

/// `POST /api/pull`.
pub async fn pull(body: Result<Bytes, BytesRejection>) -> Response {
    pull_inner(body)
        .await
        .unwrap_or_else(|error| error.into_response_for(Flavor::Ollama))
}

async fn pull_inner(body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let request: NameRequest = json_body(body)?;
    let name = request.model_name()?.to_owned();
    let reference = store_name(&name)?;
    let target = hub_target(&reference).map_err(|error| {
        let error = match error {
            TargetError::Hub(error) => anyhow::Error::from(error),
            TargetError::Catalog(error) => error.into(),
            error => error.into(),
        };
        pull_error(&name, &error)
    })?;
    let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
    let hub_cancel = Arc::clone(&cancel.0);
    if request.stream == Some(false) {
        let events = ApiEvents::new(None);
        let pulled = tokio::task::spawn_blocking(move || {
            pull_from_hub(&target, hub_cancel, &events).map(drop)
        })
        .await
        .map_err(|_| ApiError::internal("the pull failed"))?;
        drop(cancel);
        pulled.map_err(|error| pull_error(&name, &error.into()))?;
        return Ok(Json(json!({"status": "success"})).into_response());
    }
    let (sender, lines) = unbounded_channel();
    let events = ApiEvents::new(Some(sender));
    events.send(json!({"status": "pulling manifest"}), false);
    tokio::task::spawn_blocking(move || {
        match pull_from_hub(&target, hub_cancel, &events) {
            Ok(_) => events.send(json!({"status": "success"}), true),
            Err(error) => events.send(pull_error(&name, &error.into()).body(Flavor::Ollama), true),
        };
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        progress_body(lines, cancel),
    )
        .into_response())
}

/// Cancels the pull when dropped: the handler's future or the response body
/// is dropped when the client goes away.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One NDJSON line, and whether it is the last.
type Line = (String, bool);

/// The NDJSON lines as they come; a pull that ends without a last line (its
/// thread panicked) gets an error line.
fn progress_body(lines: UnboundedReceiver<Line>, cancel: CancelOnDrop) -> Body {
    let stream = futures_util::stream::unfold(Some((lines, cancel)), |state| async move {
        let (mut lines, cancel) = state?;
        let (line, last) = lines.recv().await.unwrap_or_else(|| {
            let error = ApiError::internal("the pull ended without a result");
            (format!("{}\n", error.body(Flavor::Ollama)), true)
        });
        let next = (!last).then_some((lines, cancel));
        Some((Ok::<_, Infallible>(Bytes::from(line)), next))
    });
    Body::from_stream(stream)
}

/// Progress of one pull as Ollama reports it: `pulling <digest>` lines with
/// `total` and `completed` (at most one per [`PROGRESS_INTERVAL`], plus the
/// first and last of each file), `verifying sha256 digest`, `writing manifest`.
struct ApiEvents {
    lines: Option<UnboundedSender<Line>>,
    file: Mutex<FileProgress>,
}

#[derive(Default)]
struct FileProgress {
    name: String,
    sha256: String,
    total: u64,
    completed: u64,
    last_sent: Option<Instant>,
    verified: bool,
}

impl FileProgress {
    fn line(&mut self) -> Value {
        self.last_sent = Some(Instant::now());
        let status = match self.sha256.get(..12) {
            Some(short) => format!("pulling {short}"),
            None => format!("pulling {}", self.name),
        };
        json!({
            "status": status,
            "digest": format!("sha256:{}", self.sha256),
            "total": self.total,
            "completed": self.completed.min(self.total),
        })
    }
}

impl ApiEvents {
    fn new(lines: Option<UnboundedSender<Line>>) -> Self {
        Self {
            lines,
            file: Mutex::new(FileProgress::default()),
        }
    }

    /// Send a line; a client that went away is noticed by the body's drop.
    fn send(&self, value: Value, last: bool) {
        if let Some(lines) = &self.lines {
            let _ = lines.send((format!("{value}\n"), last));
        }
    }

    fn with_file<T>(&self, action: impl FnOnce(&mut FileProgress) -> T) -> T {
        action(&mut self.file.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The file's last progress line, then `verifying sha256 digest` (once).
    fn verified(&self) {
        let lines = self.with_file(|file| {
            if file.verified {
                return None;
            }
            file.verified = true;
            Some(file.line())
        });
        if let Some(line) = lines {
            self.send(line, false);
            self.send(json!({"status": "verifying sha256 digest"}), false);
        }
    }
}

impl PullEvents for ApiEvents {
    fn reporter(&self) -> &dyn PullReporter {
        self
    }

    fn warn(&self, message: &str) {
        tracing::warn!("{}", escaped(message));
    }

    fn file(&self, name: &str, head: &FileHead) {
        self.with_file(|file| {
            *file = FileProgress {
                name: name.to_owned(),
                sha256: head.sha256.clone(),
                total: head.size,
                ..FileProgress::default()
            }
        });
    }

    fn writing_manifest(&self) {
        self.send(json!({"status": "writing manifest"}), false);
    }
}

impl PullReporter for ApiEvents {
    fn waiting_for_lock(&self, file: &str) {
        tracing::info!("waiting for another pull of {}", escaped(file));
    }

    fn start_file(&self, _file: &str, total: u64, already: u64) {
        let line = self.with_file(|file| {
            file.total = total;
            file.completed = already;
            file.line()
        });
        self.send(line, false);
    }

    fn advance(&self, bytes: u64) {
        let line = self.with_file(|file| {
            file.completed += bytes;
            let due = file
                .last_sent
                .is_none_or(|sent| sent.elapsed() >= PROGRESS_INTERVAL);
            due.then(|| file.line())
        });
        if let Some(line) = line {
            self.send(line, false);
        }
    }

    fn retrying(&self, reason: &str, delay: Duration) {
        tracing::warn!("pull: {}; retrying in {delay:?}", escaped(reason));
    }

    fn verifying(&self, _file: &str) {
        self.verified();
    }

    fn finish_file(&self, _file: &str) {
        // A blob already in the cache was hashed without a `verifying` call.
        self.verified();
    }
}

/// A failed pull as the API reports it: the status says whose fault it is,
/// the message never carries a server-side path.
fn pull_error(name: &str, error: &anyhow::Error) -> ApiError {
    tracing::warn!(
        "pull of {} failed: {}",
        escaped(name),
        escaped(&format!("{error:#}"))
    );
    for cause in error.chain() {
        if let Some(hub) = cause.downcast_ref::<HubError>() {
            return hub_error(hub);
        }
        if let Some(store) = cause.downcast_ref::<StoreError>() {
            return store_error(store);
        }
        if cause.is::<crate::catalog::CatalogError>() {
            return ApiError::internal("the server's model catalog (config.toml) is invalid");
        }
    }
    ApiError::internal("the pull failed")
}

fn hub_error(error: &HubError) -> ApiError {
    let bad_gateway = |message: String| ApiError::new(StatusCode::BAD_GATEWAY, message);
    match error {
        HubError::RepoNotFound(_) | HubError::NoGguf { .. } => {
            ApiError::not_found(error.to_string())
        }
        HubError::QuantNotFound { .. } => ApiError::not_found(match error.hint() {
            Some(hint) => format!("{error}; {hint}"),
            None => error.to_string(),
        }),
        HubError::Offline(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{error} (the server runs with HF_HUB_OFFLINE)"),
        ),
        HubError::Unauthorized(_) => {
            bad_gateway(format!("{error}; the server needs HF_TOKEN for this repo"))
        }
        HubError::Status { .. }
        | HubError::Network { .. }
        | HubError::BadMetadata { .. }
        | HubError::HashMismatch { .. }
        | HubError::SizeMismatch { .. } => bad_gateway(error.to_string()),
        HubError::DiskFull { needed, free, .. } => disk_full(format!(
            "not enough disk space on the server: {} needed, {} free",
            human::size(*needed),
            human::size(*free)
        )),
        HubError::Io { error, .. } if crate::store::is_disk_full(error) => {
            disk_full("not enough disk space on the server".into())
        }
        HubError::Io { .. } => ApiError::internal("the server cannot write the download"),
        HubError::Interrupted => ApiError::internal("the pull was cancelled"),
        HubError::Store(store) => store_error(store),
    }
}

fn store_error(error: &StoreError) -> ApiError {
    match error {
        StoreError::EmptyReference
        | StoreError::InvalidReference { .. }
        | StoreError::SplitImport(_) => ApiError::bad_request(error.to_string()),
        StoreError::NotInStore(_) | StoreError::NoSuchFile(_) => {
            ApiError::not_found("model not found")
        }
        StoreError::InvalidModel { .. } => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "the downloaded file is not a usable GGUF model",
        ),
        StoreError::Io { .. } if error.is_disk_full() => {
            disk_full("not enough disk space on the server".into())
        }
        StoreError::CorruptManifest { .. } | StoreError::Io { .. } => {
            ApiError::internal("the server cannot read or write its model store")
        }
    }
}

fn disk_full(message: String) -> ApiError {
    ApiError::new(StatusCode::INSUFFICIENT_STORAGE, message)
}

/// `DELETE /api/delete`: remove a store name like `olm rm` (files another
/// name uses are kept); 200 with an empty body, 404 when unknown.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    delete_inner(&state, body)
        .await
        .unwrap_or_else(|error| error.into_response_for(Flavor::Ollama))
}

async fn delete_inner(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: NameRequest = json_body(body)?;
    let name = request.model_name()?.to_owned();
    let reference = store_name(&name)?;
    // A deleted model must not keep answering from memory.
    state.registry.unload(&name).await.ok();
    let removed = tokio::task::spawn_blocking(move || {
        let store = Store::from_env();
        let Some(manifest) = store.find(&reference)? else {
            return Ok(None);
        };
        store.remove(&manifest).map(|_| Some(manifest.name))
    })
    .await
    .map_err(|_| ApiError::internal("removing the model failed"))?
    .map_err(|error| store_error(&error))?;
    match removed {
        Some(removed) => {
            tracing::info!("removed {}", escaped(&removed));
            Ok(StatusCode::OK.into_response())
        }
        None => Err(ApiError::not_found(format!(
            "model '{}' not found",
            escaped(&name)
        ))),
    }
}
