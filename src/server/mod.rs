//! `olm serve`: the OpenAI- and Ollama-compatible HTTP API.
//!
//! Owns: the router (every route in [`router`]), the access guard (Host,
//! Origin, API key, CORS), body limits, `/health`, `/metrics`, the tokio
//! runtime, and graceful shutdown. The only module that imports axum.
//! Uses: `engine` (one scheduler per loaded model), `store` (model names).
//! Must not touch: the terminal (the command prints), llama.cpp directly.

mod access;
mod anthropic;
mod conn;
mod embed;
mod error;
pub mod fuzzing;
mod generation;
mod models;
mod ollama;
mod ollama_store;
mod openai;
mod pull_process;
mod request;
mod responses;
mod store_routes;
mod tools;
mod worker;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::{Json, Router};

pub use access::{is_loopback, is_wildcard, keys_match, AccessPolicy};
pub use conn::{ConnectionLimits, Shutdown};
pub use models::{skip_gguf_check as gguf_check_skipped_for_tests, ModelSettings};
pub use pull_process::{run as run_pull_process, start as start_pull_process};
pub use worker::run_child as run_worker;

use error::{ApiError, Flavor};
use models::Registry;
use worker::WorkerMetrics;

/// Everything `olm serve` was asked for.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub access: AccessPolicy,
    /// Names given on the command line and their files.
    pub models: BTreeMap<String, PathBuf>,
    pub settings: ModelSettings,
    /// Largest request body in bytes (413 above).
    pub body_limit: usize,
    /// How long in-flight requests may run after SIGINT/SIGTERM.
    pub shutdown_grace: Duration,
    /// Timeouts and the cap on open connections (slow clients, T-E1/T-E2).
    pub connections: ConnectionLimits,
    /// How long a loaded model may make no progress before `/health` is 503.
    pub stall_limit: Duration,
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
}

/// Shared by every handler.
#[derive(Debug)]
pub struct AppState {
    registry: Registry,
    access: AccessPolicy,
    requests: RequestCounters,
    body_limit: usize,
    /// How long a model may go without progress before `/health` says so.
    stall_limit: Duration,
}

/// One route of the API: its path and what answers there (the method is
/// part of the handler: `get(...)`, `post(...)`).
struct Route {
    path: &'static str,
    handler: fn() -> MethodRouter<Arc<AppState>>,
}

impl Route {
    const fn new(path: &'static str, handler: fn() -> MethodRouter<Arc<AppState>>) -> Self {
        Self { path, handler }
    }
}

/// Every route of the API, in one table: [`router`] is built from it and
/// `/metrics` counts requests by its paths, so a new route cannot be left
/// out of either.
const ROUTES: &[Route] = &[
    Route::new("/", || get(ollama::root)),
    Route::new("/health", || get(health)),
    Route::new("/metrics", || get(metrics)),
    Route::new("/v1/models", || get(openai::models)),
    Route::new("/v1/models/{id}", || get(openai::model)),
    Route::new("/v1/chat/completions", || post(openai::chat)),
    Route::new("/v1/completions", || post(openai::completions)),
    Route::new("/v1/embeddings", || post(embed::openai)),
    Route::new("/v1/responses", || post(responses::responses)),
    Route::new("/v1/messages", || post(anthropic::messages)),
    Route::new("/api/chat", || post(ollama::chat)),
    Route::new("/api/generate", || post(ollama::generate)),
    Route::new("/api/tags", || get(ollama::tags)),
    Route::new("/api/show", || post(ollama::show)),
    Route::new("/api/ps", || get(ollama::ps)),
    Route::new("/api/version", || get(ollama::version)),
    Route::new("/api/embed", || post(embed::ollama)),
    Route::new("/api/embeddings", || post(embed::ollama_legacy)),
    Route::new("/api/pull", || post(store_routes::pull)),
    Route::new("/api/delete", || delete(store_routes::delete)),
    Route::new("/api/copy", || post(ollama_store::copy)),
    Route::new("/api/create", || post(ollama_store::create)),
];

/// The `/metrics` label of requests to no route in [`ROUTES`].
const OTHER_ROUTE: &str = "other";

/// Requests per route, for `/metrics` (fixed routes only: no label from
/// input): one counter per entry of [`ROUTES`], then one for the rest.
#[derive(Debug)]
struct RequestCounters {
    counts: Box<[AtomicU64]>,
    refused: AtomicU64,
}

impl Default for RequestCounters {
    fn default() -> Self {
        Self {
            counts: (0..=ROUTES.len()).map(|_| AtomicU64::new(0)).collect(),
            refused: AtomicU64::new(0),
        }
    }
}

impl RequestCounters {
    /// Where `path`'s requests are counted: its route's index in [`ROUTES`],
    /// or the last counter ([`OTHER_ROUTE`]).
    fn index(path: &str) -> usize {
        ROUTES
            .iter()
            .position(|route| route.path == path)
            .unwrap_or(ROUTES.len())
    }

    fn count(&self, path: &str) {
        self.counts[Self::index(path)].fetch_add(1, Ordering::Relaxed);
    }

    /// Each route's label and count, [`OTHER_ROUTE`] last.
    fn labelled(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ROUTES
            .iter()
            .map(|route| route.path)
            .chain([OTHER_ROUTE])
            .zip(self.counts.iter())
            .map(|(label, count)| (label, count.load(Ordering::Relaxed)))
    }
}

/// Every route of [`ROUTES`], behind the access guard and the body limit.
pub fn router(state: Arc<AppState>, body_limit: usize) -> Router {
    ROUTES
        .iter()
        .fold(Router::new(), |router, route| {
            router.route(route.path, (route.handler)())
        })
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), guard))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// Run the server until SIGINT or SIGTERM; `announce` gets the bound address.
/// A second signal during the drain ends it at once ([`Shutdown::Interrupted`]).
pub fn run(
    config: ServerConfig,
    announce: impl FnOnce(SocketAddr),
) -> Result<Shutdown, ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    let result = runtime.block_on(serve(config, announce));
    if matches!(result, Ok(Shutdown::Interrupted)) {
        // Do not wait for blocking tasks (a model load, say): the user asked twice.
        runtime.shutdown_background();
    }
    result
}

async fn serve(
    config: ServerConfig,
    announce: impl FnOnce(SocketAddr),
) -> Result<Shutdown, ServeError> {
    let address = bind_address(&config.host, config.port);
    let listener = listen(&address).await.map_err(|source| ServeError::Bind {
        address: address.clone(),
        source,
    })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { address, source })?;
    // Caught before the address is announced, so no signal is missed.
    let mut signals = conn::Signals::new().map_err(ServeError::Serve)?;
    let state = Arc::new(AppState {
        registry: Registry::new(config.models, config.settings),
        access: config.access,
        requests: RequestCounters::default(),
        body_limit: config.body_limit,
        stall_limit: config.stall_limit,
    });
    announce(local);

    let unloader = tokio::spawn(unload_idle_models(Arc::clone(&state)));
    let app = router(Arc::clone(&state), config.body_limit);
    let shutdown = conn::serve(
        listener,
        app,
        &config.connections,
        config.shutdown_grace,
        &mut signals,
        state.registry.fail_in_flight("the server is shutting down"),
    )
    .await;
    unloader.abort();
    let _ = unloader.await;
    if shutdown == Shutdown::Interrupted {
        // Dropping the state drops the models without waiting for them.
        return Ok(shutdown);
    }
    tokio::select! {
        () = state.registry.unload_all() => Ok(shutdown),
        _ = signals.next() => Ok(Shutdown::Interrupted),
    }
}

/// Connections the kernel may hold for us before they are accepted (std's
/// default, 128, drops connection attempts of a burst; the kernel caps this
/// at `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 1024;

/// Bind the first address `address` resolves to, with [`LISTEN_BACKLOG`].
async fn listen(address: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last_error = None;
    for resolved in tokio::net::lookup_host(address).await? {
        let socket = if resolved.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket
            .bind(resolved)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the address resolves to nothing",
        )
    }))
}

fn bind_address(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

async fn unload_idle_models(state: Arc<AppState>) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    loop {
        interval.tick().await;
        state.registry.unload_idle().await;
    }
}

/// One log line per request (shown with --verbose): method, path, status
/// and the time to the response head. The path is escaped: a request must
/// not be able to forge log lines (T-D7).
async fn log_request(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let path = crate::store::names::escaped(request.uri().path());
    let response = next.run(request).await;
    tracing::info!(
        "{method} {path} {} {:.1} ms",
        response.status().as_u16(),
        started.elapsed().as_secs_f64() * 1e3
    );
    response
}

/// Host allowlist, Origin allowlist (also for CORS "simple" requests), CORS
/// preflights and headers, then the API key on every route but `/health`.
async fn guard(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let flavor = Flavor::for_path(&path);
    state.requests.count(&path);
    let headers = request.headers();
    let host = header_text(headers, header::HOST.as_str());
    if !state.access.host_allowed(host) {
        state.requests.refused.fetch_add(1, Ordering::Relaxed);
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "this server does not answer to that Host header",
        )
        .into_response_for(flavor);
    }
    let origin = header_text(headers, header::ORIGIN.as_str()).map(str::to_owned);
    if !state.access.origin_allowed(origin.as_deref()) {
        state.requests.refused.fetch_add(1, Ordering::Relaxed);
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "requests from this web origin are not allowed; see --cors-origin",
        )
        .into_response_for(flavor);
    }
    if declared_length(headers).is_some_and(|length| length > state.body_limit as u64) {
        // Refused from the header alone, before any of the body is read.
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {} bytes", state.body_limit),
        )
        .into_response_for(flavor);
    }
    if let Some(encoding) = header_text(headers, header::CONTENT_ENCODING.as_str())
        .filter(|encoding| !encoding.trim().eq_ignore_ascii_case("identity"))
    {
        // A compressed body would be read as if it were not: refused, not ignored.
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Encoding '{}' is not supported; send the body uncompressed",
                crate::store::names::escaped(encoding)
            ),
        )
        .into_response_for(flavor);
    }
    if request.method() == Method::OPTIONS {
        return with_cors(
            StatusCode::NO_CONTENT.into_response(),
            origin.as_deref(),
            true,
        );
    }
    if path != "/health"
        && !state
            .access
            .authorized(header_text(headers, header::AUTHORIZATION.as_str()))
    {
        state.requests.refused.fetch_add(1, Ordering::Relaxed);
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or invalid API key (Authorization: Bearer KEY)",
        )
        .into_response_for(flavor);
    }
    let method = request.method().clone();
    let response = next.run(request).await;
    let response = if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        method_not_allowed(&method, response, flavor)
    } else {
        response
    };
    with_cors(response, origin.as_deref(), false)
}

/// axum answers a route's wrong method with an empty 405: it gets the error
/// shape of every other refusal, keeping its `Allow` header.
fn method_not_allowed(method: &Method, response: Response, flavor: Flavor) -> Response {
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut refused = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {} is not allowed on this route",
            crate::store::names::escaped(method.as_str())
        ),
    )
    .into_response_for(flavor);
    if let Some(allow) = allow {
        refused.headers_mut().insert(header::ALLOW, allow);
    }
    refused
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    header_text(headers, header::CONTENT_LENGTH.as_str())?
        .trim()
        .parse()
        .ok()
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Echo an allowed origin (never `*`).
fn with_cors(mut response: Response, origin: Option<&str>, preflight: bool) -> Response {
    let Some(origin) = origin.and_then(|origin| HeaderValue::from_str(origin).ok()) else {
        return response;
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    if preflight {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    response
}

async fn not_found(request: Request) -> Response {
    let flavor = Flavor::for_path(request.uri().path());
    ApiError::not_found("no such route").into_response_for(flavor)
}

/// `GET /health`: open without a key, so load balancers can probe it.
/// 503 while a loaded model has stopped making progress (a decode step or a
/// request's preparation running past the stall limit, or a worker that does
/// not answer), naming the models.
async fn health(State(state): State<Arc<AppState>>) -> Response {
    let stalled = state.registry.stalled(state.stall_limit).await;
    if stalled.is_empty() {
        return Json(serde_json::json!({"status": "ok"})).into_response();
    }
    let body = serde_json::json!({"status": "stalled", "models": stalled});
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
/// A per-model Prometheus family: name, type, and how to read it from a snapshot.
type MetricFamily = (&'static str, &'static str, fn(&WorkerMetrics) -> u64);

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut text = String::new();
    let _ = writeln!(text, "# TYPE olm_http_requests_total counter");
    for (route, count) in state.requests.labelled() {
        let _ = writeln!(text, "olm_http_requests_total{{route=\"{route}\"}} {count}");
    }
    let _ = writeln!(text, "# TYPE olm_http_refused_total counter");
    let _ = writeln!(
        text,
        "olm_http_refused_total {}",
        state.requests.refused.load(Ordering::Relaxed)
    );
    let loaded = state.registry.loaded().await;
    let _ = writeln!(
        text,
        "# TYPE olm_models_loaded gauge\nolm_models_loaded {}",
        loaded.len()
    );
    let families: [MetricFamily; 14] = [
        ("olm_queue_depth", "gauge", |m| m.scheduler.queued as u64),
        ("olm_active_sequences", "gauge", |m| {
            m.scheduler.active as u64
        }),
        ("olm_preparing_requests", "gauge", |m| m.preparing as u64),
        ("olm_stalled_milliseconds", "gauge", |m| {
            m.scheduler.stalled_ms.max(m.oldest_preparation_ms)
        }),
        ("olm_prompt_tokens_total", "counter", |m| {
            m.scheduler.prompt_tokens
        }),
        ("olm_generated_tokens_total", "counter", |m| {
            m.scheduler.generated_tokens
        }),
        ("olm_requests_finished_total", "counter", |m| {
            m.scheduler.finished
        }),
        ("olm_requests_cancelled_total", "counter", |m| {
            m.scheduler.cancelled
        }),
        ("olm_requests_rejected_total", "counter", |m| {
            m.scheduler.rejected
        }),
        ("olm_decode_steps_total", "counter", |m| {
            m.scheduler.decode_steps
        }),
        ("olm_decode_nanoseconds_total", "counter", |m| {
            m.scheduler.decode_nanos
        }),
        ("olm_step_nanoseconds_total", "counter", |m| {
            m.scheduler.step_nanos
        }),
        ("olm_drafted_tokens_total", "counter", |m| {
            m.scheduler.drafted_tokens
        }),
        ("olm_draft_tokens_accepted_total", "counter", |m| {
            m.scheduler.accepted_tokens
        }),
    ];
    let mut snapshots = Vec::with_capacity(loaded.len());
    for model in &loaded {
        if let Some(metrics) = model.worker.metrics().await {
            snapshots.push((model, metrics));
        }
    }
    for (name, kind, value) in families {
        let _ = writeln!(text, "# TYPE {name} {kind}");
        for (model, snapshot) in &snapshots {
            let _ = writeln!(
                text,
                "{name}{{model=\"{}\"}} {}",
                label(&model.name),
                value(snapshot)
            );
        }
    }
    let _ = writeln!(text, "# TYPE olm_model_load_seconds gauge");
    for model in &loaded {
        let _ = writeln!(
            text,
            "olm_model_load_seconds{{model=\"{}\"}} {:.3}",
            label(&model.name),
            model.load_time.as_secs_f64()
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_paths_are_distinct_and_absolute() {
        let mut paths: Vec<&str> = ROUTES.iter().map(|route| route.path).collect();
        assert!(paths.iter().all(|path| path.starts_with('/')), "{paths:?}");
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), ROUTES.len(), "a path is listed twice");
        assert!(!paths.contains(&OTHER_ROUTE));
    }

    /// Each route is counted under its own label, anything else under "other".
    #[test]
    fn requests_are_counted_by_route() {
        let counters = RequestCounters::default();
        for route in ROUTES {
            counters.count(route.path);
        }
        counters.count("/v1/embeddings");
        counters.count("/no/such/route");
        counters.count("/health/");
        let counted: Vec<(&str, u64)> = counters.labelled().collect();
        assert_eq!(counted.len(), ROUTES.len() + 1);
        for (label, count) in counted {
            let expected = match label {
                "/v1/embeddings" | OTHER_ROUTE => 2,
                _ => 1,
            };
            assert_eq!(count, expected, "{label}");
        }
    }

    /// axum panics on a path it cannot route (or routes twice): building
    /// the router from the table proves it holds none.
    #[test]
    fn the_router_builds_from_the_table() {
        let settings = ModelSettings {
            scheduler: crate::engine::SchedulerOptions {
                parallel: 1,
                context_per_sequence: 512,
                queue_capacity: 1,
                threads: 1,
                batch_size: 512,
            },
            load: Default::default(),
            keep_alive: Duration::from_secs(1),
            max_loaded: 1,
            draft: Default::default(),
            verbose: false,
        };
        let state = Arc::new(AppState {
            registry: Registry::new(BTreeMap::new(), settings),
            access: AccessPolicy::default(),
            requests: RequestCounters::default(),
            body_limit: 1,
            stall_limit: Duration::from_secs(1),
        });
        let _router = router(state, 1);
    }
}
