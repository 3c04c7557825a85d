//! `POST /api/pull` and `DELETE /api/delete`: the store over the Ollama API.
//!
//! Owns: both handlers, the NDJSON progress of a pull (throttled), and the
//! status of each pull or store failure. A pull runs the same `hub::pull` code
//! as `olm pull`: in the server's pull process when there is one (a
//! sandboxed server cannot reach the network itself; see `pull_process`),
//! else on a blocking thread. A client that goes away cancels it, and the partial
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
use super::pull_process::{self, PullProcess, PullTicket};
use super::request::{strict_body, Fields};
use super::AppState;
use crate::hub::pull::{hub_target, pull_from_hub, PullEvents, Target, TargetError};
use crate::hub::{FileHead, HubError, PullReporter};
use crate::human;
use crate::store::{names::escaped, ModelRef, Store, StoreError};

/// Least time between two progress lines of one file.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// `/api/pull`: a name and `stream`; `insecure` is ignored on purpose: it
/// only allows an Ollama registry over plain HTTP, and olm pulls from the
/// hub over HTTPS with certificates checked either way (the `ollama`
/// Python client sends `insecure: false` on every pull). Registry
/// credentials (`username`, `password`) are refused: olm would not send them.
pub const PULL_FIELDS: Fields = Fields {
    honoured: &["model", "name", "stream"],
    ignored: &["insecure"],
};

/// `/api/delete`: the name only.
pub const DELETE_FIELDS: Fields = Fields {
    honoured: &["model", "name"],
    ignored: &[],
};

/// `{"model": NAME}`, or the older `{"name": NAME}`.
#[derive(Debug, Deserialize)]
struct NameRequest {
    model: Option<String>,
    name: Option<String>,
    /// `POST /api/pull` only; NDJSON progress unless `false`.
    stream: Option<bool>,
    /// `POST /api/pull` only, and only its type is checked (see [`PULL_FIELDS`]).
    #[serde(default, rename = "insecure")]
    _insecure: Option<bool>,
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
    let request: NameRequest = strict_body(body, &PULL_FIELDS)?;
    let name = request.model_name()?.to_owned();
    let target = pull_target(&name)?;
    if let Some(process) = pull_process::get() {
        drop(target);
        return pull_in_process(process, &name, request.stream != Some(false)).await;
    }
    let flag = Arc::new(AtomicBool::new(false));
    let hub_cancel = Arc::clone(&flag);
    let cancel = CancelOnDrop(Cancel::Flag(flag));
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
    tokio::task::spawn_blocking(move || pull_and_report(&name, &target, hub_cancel, &events));
    Ok(ndjson(progress_body(lines, cancel)))
}

/// Run one pull to its end and send its last line: `success`, or the error
/// in the API's shape with its status. Shared by the in-process pull and the
/// server's pull process.
pub(super) fn pull_and_report(
    name: &str,
    target: &Target,
    cancel: Arc<AtomicBool>,
    events: &ApiEvents,
) {
    match pull_from_hub(target, cancel, events) {
        Ok(_) => events.send(json!({"status": "success"}), true),
        Err(error) => events.send_error(&pull_error(name, &error.into())),
    };
}

/// The hub target of a model name from a request, as the API reports a
/// name it cannot pull.
pub(super) fn pull_target(name: &str) -> Result<Target, ApiError> {
    let reference = store_name(name)?;
    hub_target(&reference).map_err(|error| {
        let error = match error {
            TargetError::Hub(error) => anyhow::Error::from(error),
            TargetError::Catalog(error) => error.into(),
            error => error.into(),
        };
        pull_error(name, &error)
    })
}

/// `POST /api/pull` through the server's pull process: its lines are the
/// response (NDJSON), or, with `stream: false`, its last line decides it.
async fn pull_in_process(
    process: &'static PullProcess,
    name: &str,
    stream: bool,
) -> Result<Response, ApiError> {
    let (ticket, mut lines) = process.pull(name)?;
    let cancel = CancelOnDrop(Cancel::Process(ticket));
    if stream {
        return Ok(ndjson(progress_body(lines, cancel)));
    }
    loop {
        let Some(line) = lines.recv().await else {
            return Err(ApiError::internal("the pull ended without a result"));
        };
        if !line.last {
            continue;
        }
        drop(cancel);
        if line.status == StatusCode::OK {
            return Ok(Json(json!({"status": "success"})).into_response());
        }
        let message = serde_json::from_str::<Value>(&line.text)
            .ok()
            .and_then(|body| body["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "the pull failed".into());
        return Err(ApiError::new(line.status, message));
    }
}

fn ndjson(body: Body) -> Response {
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

/// How a pull is stopped.
enum Cancel {
    /// A pull on a thread of this process.
    Flag(Arc<AtomicBool>),
    /// A pull in the server's pull process.
    Process(PullTicket),
}

/// Cancels the pull when dropped: the handler's future or the response body
/// is dropped when the client goes away.
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        match &self.0 {
            Cancel::Flag(flag) => flag.store(true, Ordering::Relaxed),
            Cancel::Process(ticket) => ticket.cancel(),
        }
    }
}

/// One NDJSON line of a pull's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Line {
    /// The line, with its newline.
    pub text: String,
    /// Whether it is the last line of the pull.
    pub last: bool,
    /// 200, or the status of the failure the (last) line reports.
    pub status: StatusCode,
}

/// The NDJSON lines as they come; a pull that ends without a last line (its
/// thread panicked, the pull process died) gets an error line.
fn progress_body(lines: UnboundedReceiver<Line>, cancel: CancelOnDrop) -> Body {
    let stream = futures_util::stream::unfold(Some((lines, cancel)), |state| async move {
        let (mut lines, cancel) = state?;
        let line = lines.recv().await.unwrap_or_else(|| {
            let error = ApiError::internal("the pull ended without a result");
            Line {
                text: format!("{}\n", error.body(Flavor::Ollama)),
                last: true,
                status: error.status,
            }
        });
        let next = (!line.last).then_some((lines, cancel));
        Some((Ok::<_, Infallible>(Bytes::from(line.text)), next))
    });
    Body::from_stream(stream)
}

/// Progress of one pull as Ollama reports it: `pulling <digest>` lines with
/// `total` and `completed` (at most one per [`PROGRESS_INTERVAL`], plus the
/// first and last of each file), `verifying sha256 digest`, `writing manifest`.
pub(super) struct ApiEvents {
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
    pub(super) fn new(lines: Option<UnboundedSender<Line>>) -> Self {
        Self {
            lines,
            file: Mutex::new(FileProgress::default()),
        }
    }

    /// Send a line; a client that went away is noticed by the body's drop.
    pub(super) fn send(&self, value: Value, last: bool) {
        self.send_line(value, last, StatusCode::OK);
    }

    /// Send the failure as the last line, with its status.
    pub(super) fn send_error(&self, error: &ApiError) {
        self.send_line(error.body(Flavor::Ollama), true, error.status);
    }

    fn send_line(&self, value: Value, last: bool, status: StatusCode) {
        if let Some(lines) = &self.lines {
            let _ = lines.send(Line {
                text: format!("{value}\n"),
                last,
                status,
            });
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
        HubError::BadEndpoint { variable, .. } => ApiError::internal(format!(
            "the server's {variable} is not a usable hub address"
        )),
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
    let request: NameRequest = strict_body(body, &DELETE_FIELDS)?;
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
