//! Which models the API may use, and the ones loaded now.
//!
//! Owns: mapping an API model name to a file (names given on the command
//! line, then store names; never a path from a request), loading on first
//! use (one worker process per file), keep-alive and memory-pressure
//! unloading, reloading after a worker died, and listings.
//! Must not touch: HTTP shapes (handlers format listings themselves).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use super::error::ApiError;
use super::worker::{SpawnError, WorkerConfig, WorkerProcess};
use crate::engine::{DraftConfig, LoadOptions, SchedulerOptions};
use crate::store::space::available_memory;
use crate::store::{names::escaped, ModelRef, Store, StoreError};

/// How loaded models run.
#[derive(Debug, Clone)]
pub struct ModelSettings {
    pub scheduler: SchedulerOptions,
    pub load: LoadOptions,
    /// How long an idle model stays loaded unless a request says otherwise.
    pub keep_alive: Duration,
    /// Models loaded at once before the least recently used idle one goes.
    pub max_loaded: usize,
    /// Speculative decoding for every request (`olm serve --draft`).
    pub draft: DraftConfig,
    pub verbose: bool,
}

/// How long a model stays loaded after its last request (Ollama's `keep_alive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    For(Duration),
    Forever,
}

impl KeepAlive {
    /// Ollama's spellings: seconds as a number, a duration string such as
    /// `"5m"`, `"1h30m"`, `"90s"`, `"500ms"`, or a negative value for "forever".
    pub fn parse(value: &serde_json::Value) -> Result<Self, ApiError> {
        let invalid = || {
            ApiError::bad_request(
                "invalid keep_alive: use seconds or a duration such as \"5m\"; negative keeps the model loaded",
            )
        };
        match value {
            serde_json::Value::Number(number) => {
                let seconds = number.as_f64().ok_or_else(invalid)?;
                Self::from_seconds(seconds).ok_or_else(invalid)
            }
            serde_json::Value::String(text) => parse_duration(text)
                .and_then(Self::from_seconds)
                .ok_or_else(invalid),
            _ => Err(invalid()),
        }
    }

    /// A request's optional `keep_alive` field (`null` is as good as absent).
    pub fn from_request(value: Option<&serde_json::Value>) -> Result<Option<Self>, ApiError> {
        value
            .filter(|value| !value.is_null())
            .map(Self::parse)
            .transpose()
    }

    fn from_seconds(seconds: f64) -> Option<Self> {
        if !seconds.is_finite() {
            return None;
        }
        if seconds < 0.0 {
            return Some(KeepAlive::Forever);
        }
        // Longer than a century is forever too (and never overflows an
        // `Instant` when added to it).
        if seconds > CENTURY.as_secs_f64() {
            return Some(KeepAlive::Forever);
        }
        Some(Duration::try_from_secs_f64(seconds).map_or(KeepAlive::Forever, KeepAlive::For))
    }
}

const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `"1h30m"`, `"5m"`, `"-1"`, `"2.5s"`, `"300ms"`, or a bare number of seconds.
fn parse_duration(text: &str) -> Option<f64> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Some(seconds);
    }
    let (sign, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (-1.0, rest),
        None => (1.0, text),
    };
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let amount: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_length = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_length] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_length..];
        total += amount * scale;
    }
    Some(sign * total)
}

/// A model loaded in its worker process.
#[derive(Debug)]
pub struct LoadedModel {
    pub name: String,
    pub path: PathBuf,
    pub worker: WorkerProcess,
    pub load_time: Duration,
    last_used: Mutex<Instant>,
    /// Set by the last request that asked; `None` is the server's default.
    keep_alive: Mutex<Option<KeepAlive>>,
}

impl LoadedModel {
    fn touch(&self, keep_alive: Option<KeepAlive>) {
        *lock(&self.last_used) = Instant::now();
        if keep_alive.is_some() {
            *lock(&self.keep_alive) = keep_alive;
        }
    }

    fn keep_alive(&self, default: Duration) -> KeepAlive {
        lock(&self.keep_alive).unwrap_or(KeepAlive::For(default))
    }

    /// When it will be unloaded if nothing uses it (`None`: never).
    pub fn expires_at(&self, default: Duration) -> Option<SystemTime> {
        match self.keep_alive(default) {
            KeepAlive::Forever => None,
            KeepAlive::For(keep_alive) => {
                let idle = lock(&self.last_used).elapsed();
                Some(SystemTime::now() + keep_alive.saturating_sub(idle))
            }
        }
    }

    fn is_expired(&self, default: Duration) -> bool {
        match self.keep_alive(default) {
            KeepAlive::Forever => false,
            KeepAlive::For(keep_alive) => {
                !self.worker.is_busy() && lock(&self.last_used).elapsed() >= keep_alive
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A model the API can name.
#[derive(Debug, Clone)]
pub struct Available {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub modified: u64,
}

/// The models of one server.
#[derive(Debug)]
pub struct Registry {
    /// Names given on the command line, with their files.
    fixed: BTreeMap<String, PathBuf>,
    settings: ModelSettings,
    /// Loaded models by file, so two names of one file share it.
    loaded: tokio::sync::Mutex<BTreeMap<PathBuf, Arc<LoadedModel>>>,
    /// One lock per file while it loads: a second request for the same
    /// model waits for the first load; requests for other models do not.
    loading: Mutex<BTreeMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl Registry {
    pub fn new(fixed: BTreeMap<String, PathBuf>, settings: ModelSettings) -> Self {
        Self {
            fixed,
            settings,
            loaded: tokio::sync::Mutex::new(BTreeMap::new()),
            loading: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn settings(&self) -> &ModelSettings {
        &self.settings
    }

    /// The file an API name means: a name from the command line, else a
    /// store name. A request can never name a path.
    pub fn resolve(&self, name: &str) -> Result<PathBuf, ApiError> {
        if let Some(path) = self.fixed.get(name) {
            return Ok(path.clone());
        }
        let shown = escaped(name);
        let reference = ModelRef::parse_name(name)
            .map_err(|_| ApiError::bad_request(format!("invalid model name '{shown}'")))?;
        let resolved = Store::from_env()
            .resolve(&reference)
            .map_err(|error| match error {
                StoreError::NotInStore(_) | StoreError::NoSuchFile(_) => ApiError::not_found(
                    format!("model '{shown}' not found; pull it with `olm pull {shown}`"),
                ),
                error if error.escape().is_some() => ApiError::internal(format!(
                    "model '{shown}' cannot be used: its files lead outside the store"
                )),
                _ => ApiError::internal(format!("cannot look up model '{shown}' in the store")),
            })?;
        Ok(resolved.path)
    }

    /// The loaded model for `name`, loading it first if needed (and again
    /// if its worker died). `keep_alive` is the request's, if it gave one.
    pub async fn get(
        &self,
        name: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Arc<LoadedModel>, ApiError> {
        let path = self.resolve(name)?;
        if let Some(model) = self.live(&path, name, keep_alive).await {
            return Ok(model);
        }
        let load_lock = Arc::clone(lock(&self.loading).entry(path.clone()).or_default());
        let _loading = load_lock.lock().await;
        // Another request may have loaded it while this one waited.
        if let Some(model) = self.live(&path, name, keep_alive).await {
            return Ok(model);
        }
        let evicted = make_room(
            &mut *self.loaded.lock().await,
            &path,
            self.settings.max_loaded,
        );
        shut_down(evicted).await;
        let model = Arc::new(self.load(name, path.clone()).await?);
        model.touch(keep_alive);
        self.loaded.lock().await.insert(path, Arc::clone(&model));
        Ok(model)
    }

    /// The loaded model at `path` if its worker runs (a dead one is forgotten).
    async fn live(
        &self,
        path: &std::path::Path,
        name: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Option<Arc<LoadedModel>> {
        let mut loaded = self.loaded.lock().await;
        let model = loaded.get(path)?;
        if model.worker.is_alive() {
            model.touch(keep_alive);
            return Some(Arc::clone(model));
        }
        tracing::warn!("the worker of {} died; loading it again", escaped(name));
        loaded.remove(path);
        None
    }

    /// Unload `name` now (Ollama's `keep_alive: 0` with no prompt).
    pub async fn unload(&self, name: &str) -> Result<(), ApiError> {
        let path = self.resolve(name)?;
        let removed = self.loaded.lock().await.remove(&path);
        shut_down(removed.into_iter().collect()).await;
        Ok(())
    }

    async fn load(&self, name: &str, path: PathBuf) -> Result<LoadedModel, ApiError> {
        let shown = escaped(name);
        let config = WorkerConfig {
            path: path.clone(),
            load: self.settings.load.clone(),
            scheduler: self.settings.scheduler.clone(),
            verbose: self.settings.verbose,
            skip_gguf_check: skip_gguf_check(),
        };
        let started = Instant::now();
        let worker = WorkerProcess::spawn(&config)
            .await
            .map_err(|error| match error {
                SpawnError::Died(how) => ApiError::internal(format!(
                    "model '{shown}' crashed while loading: its worker process {how}"
                )),
                SpawnError::Load(refused) => {
                    let mut error = ApiError::from_engine(refused.kind, refused.message);
                    error.message = format!("cannot load model '{shown}': {}", error.message);
                    error
                }
                other => ApiError::internal(format!("cannot load model '{shown}': {other}")),
            })?;
        tracing::info!(
            "loaded {shown} in {:?} (worker pid {})",
            started.elapsed(),
            worker.pid()
        );
        Ok(LoadedModel {
            name: name.to_owned(),
            path,
            load_time: started.elapsed(),
            worker,
            last_used: Mutex::new(Instant::now()),
            keep_alive: Mutex::new(None),
        })
    }

    /// Names of the loaded models that stopped making progress: a decode
    /// step or a request's preparation running longer than `limit`, or a
    /// worker that does not answer for its counters.
    pub async fn stalled(&self, limit: Duration) -> Vec<String> {
        let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        let mut stalled = Vec::new();
        for model in self.loaded().await {
            let stuck = match model.worker.metrics().await {
                Some(metrics) => {
                    metrics.scheduler.stalled_ms > limit_ms
                        || metrics.oldest_preparation_ms > limit_ms
                }
                None => true,
            };
            if stuck {
                stalled.push(model.name.clone());
            }
        }
        stalled
    }

    /// Models loaded now (with a live worker).
    pub async fn loaded(&self) -> Vec<Arc<LoadedModel>> {
        self.loaded
            .lock()
            .await
            .values()
            .filter(|model| model.worker.is_alive())
            .cloned()
            .collect()
    }

    /// Unload models idle longer than their keep-alive, and forget dead workers.
    pub async fn unload_idle(&self) {
        let default = self.settings.keep_alive;
        let idle: Vec<Arc<LoadedModel>> = {
            let mut loaded = self.loaded.lock().await;
            let paths: Vec<PathBuf> = loaded
                .iter()
                .filter(|(_, model)| !model.worker.is_alive() || model.is_expired(default))
                .map(|(path, _)| path.clone())
                .collect();
            paths
                .iter()
                .filter_map(|path| loaded.remove(path))
                .collect()
        };
        shut_down(idle).await;
    }

    /// End every request in flight with `message` (a 503); shutdown after
    /// the grace period.
    pub async fn fail_in_flight(&self, message: &str) {
        let error = ApiError::busy(message);
        for model in self.loaded.lock().await.values() {
            model.worker.fail_in_flight(&error);
        }
    }

    /// Unload everything (shutdown).
    pub async fn unload_all(&self) {
        let all: Vec<Arc<LoadedModel>> = std::mem::take(&mut *self.loaded.lock().await)
            .into_values()
            .collect();
        shut_down(all).await;
    }

    /// Every name the API accepts: command-line names, then store names.
    pub fn available(&self) -> Vec<Available> {
        let mut models: Vec<Available> = self
            .fixed
            .iter()
            .map(|(name, path)| {
                let metadata = std::fs::metadata(path).ok();
                Available {
                    name: name.clone(),
                    path: path.clone(),
                    size: metadata.as_ref().map_or(0, std::fs::Metadata::len),
                    modified: metadata
                        .and_then(|metadata| metadata.modified().ok())
                        .and_then(|time| time.duration_since(SystemTime::UNIX_EPOCH).ok())
                        .map_or(0, |duration| duration.as_secs()),
                }
            })
            .collect();
        let store = Store::from_env();
        let (manifests, _) = store.manifests_all();
        for manifest in manifests {
            if self.fixed.contains_key(&manifest.name) {
                continue;
            }
            let Some(path) = store.files(&manifest).into_iter().next() else {
                continue;
            };
            models.push(Available {
                name: manifest.name.clone(),
                path,
                size: manifest.files.iter().map(|file| file.size).sum(),
                modified: manifest.pulled_at,
            });
        }
        models
    }
}

/// Stop the workers of models no request holds any more; one still in use
/// stops when its last request ends and drops it.
async fn shut_down(models: Vec<Arc<LoadedModel>>) {
    for model in models {
        if let Ok(model) = Arc::try_unwrap(model) {
            model.worker.shut_down(WORKER_EXIT_GRACE).await;
        }
    }
}

/// How long a worker may take to exit once told to.
const WORKER_EXIT_GRACE: Duration = Duration::from_secs(5);

/// Before loading the model at `path`, unload idle models (least recently
/// used first) while `max_loaded` are loaded or the machine lacks the memory
/// for it. Models serving requests are never unloaded; if room is still
/// short, the load goes ahead anyway and the OS decides (as Ollama does on CPU).
fn make_room(
    loaded: &mut BTreeMap<PathBuf, Arc<LoadedModel>>,
    path: &std::path::Path,
    max_loaded: usize,
) -> Vec<Arc<LoadedModel>> {
    let needed = memory_needed(path);
    let mut evicted = Vec::new();
    let mut candidates: Vec<(Instant, PathBuf)> = loaded
        .iter()
        .filter(|(_, model)| !model.worker.is_busy())
        .map(|(path, model)| (*lock(&model.last_used), path.clone()))
        .collect();
    candidates.sort();
    let mut freed = 0u64;
    for (_, candidate) in candidates {
        let available = available_memory().unwrap_or(u64::MAX).saturating_add(freed);
        if available >= needed && loaded.len() < max_loaded.max(1) {
            break;
        }
        if let Some(model) = loaded.remove(&candidate) {
            tracing::info!(
                "unloading {} to make room for another model",
                escaped(&model.name)
            );
            freed = freed.saturating_add(model.worker.ready().size);
            evicted.push(model);
        }
    }
    evicted
}

/// Weights plus a tenth for the context and buffers.
fn memory_needed(path: &std::path::Path) -> u64 {
    let size = std::fs::metadata(path).map_or(0, |metadata| metadata.len());
    size.saturating_add(size / 10)
}

/// Tests only: let llama.cpp see files olm's validator would refuse, to
/// prove that a crash inside llama.cpp stays inside the worker (T-E5).
/// Release builds never read the switch.
pub fn skip_gguf_check() -> bool {
    cfg!(debug_assertions)
        && std::env::var_os(crate::env::OLM_TEST_SKIP_GGUF_CHECK).is_some_and(|value| value == "1")
}
