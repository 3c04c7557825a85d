//! Which models the API may use, and the ones loaded now.
//!
//! Owns: mapping an API model name to a file (names given on the command
//! line, then store names; never a path from a request), loading on first
//! use (one [`Scheduler`] per file), keep-alive unloading, and listings.
//! Must not touch: HTTP shapes (handlers format listings themselves).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use axum::http::StatusCode;

use super::error::ApiError;
use crate::engine::{LoadOptions, Model, Scheduler, SchedulerOptions};
use crate::store::{names::escaped, ModelRef, Store, StoreError};

/// How loaded models run.
#[derive(Debug, Clone)]
pub struct ModelSettings {
    pub scheduler: SchedulerOptions,
    pub load: LoadOptions,
    /// How long an idle model stays loaded.
    pub keep_alive: Duration,
}

/// A model in memory with its generation thread.
#[derive(Debug)]
pub struct LoadedModel {
    pub name: String,
    pub path: PathBuf,
    pub model: Arc<Model>,
    pub scheduler: Scheduler,
    pub load_time: Duration,
    last_used: Mutex<Instant>,
}

impl LoadedModel {
    fn touch(&self) {
        *self
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    /// When it will be unloaded if nothing uses it.
    pub fn expires_at(&self, keep_alive: Duration) -> SystemTime {
        let idle = self
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed();
        SystemTime::now() + keep_alive.saturating_sub(idle)
    }

    fn is_idle_for(&self, keep_alive: Duration) -> bool {
        !self.scheduler.is_busy()
            && self
                .last_used
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .elapsed()
                >= keep_alive
    }
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
}

impl Registry {
    pub fn new(fixed: BTreeMap<String, PathBuf>, settings: ModelSettings) -> Self {
        Self {
            fixed,
            settings,
            loaded: tokio::sync::Mutex::new(BTreeMap::new()),
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
                _ => ApiError::internal(format!("cannot look up model '{shown}' in the store")),
            })?;
        Ok(resolved.path)
    }

    /// The loaded model for `name`, loading it first if needed.
    pub async fn get(&self, name: &str) -> Result<Arc<LoadedModel>, ApiError> {
        let path = self.resolve(name)?;
        let mut loaded = self.loaded.lock().await;
        if let Some(model) = loaded.get(&path) {
            model.touch();
            return Ok(Arc::clone(model));
        }
        check_file(name, &path).await?;
        let model = Arc::new(self.load(name, path.clone()).await?);
        loaded.insert(path, Arc::clone(&model));
        Ok(model)
    }

    async fn load(&self, name: &str, path: PathBuf) -> Result<LoadedModel, ApiError> {
        let settings = self.settings.clone();
        let name = name.to_owned();
        let shown = escaped(&name);
        let task = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let model = Arc::new(Model::load(&path, &settings.load)?);
            let scheduler = Scheduler::start(Arc::clone(&model), &settings.scheduler)?;
            tracing::info!("loaded {} in {:?}", escaped(&name), started.elapsed());
            Ok::<_, crate::engine::EngineError>(LoadedModel {
                name,
                path,
                model,
                scheduler,
                load_time: started.elapsed(),
                last_used: Mutex::new(Instant::now()),
            })
        });
        match task.await {
            Ok(Ok(model)) => Ok(model),
            Ok(Err(error)) => Err(ApiError::internal(format!(
                "cannot load model '{shown}': {}",
                short_engine_error(&error)
            ))),
            Err(_) => Err(ApiError::internal(format!(
                "loading model '{shown}' failed"
            ))),
        }
    }

    /// Models loaded now.
    pub async fn loaded(&self) -> Vec<Arc<LoadedModel>> {
        self.loaded.lock().await.values().cloned().collect()
    }

    /// Unload models idle longer than the keep-alive.
    pub async fn unload_idle(&self) {
        let keep_alive = self.settings.keep_alive;
        let idle: Vec<Arc<LoadedModel>> = {
            let mut loaded = self.loaded.lock().await;
            let paths: Vec<PathBuf> = loaded
                .iter()
                .filter(|(_, model)| model.is_idle_for(keep_alive))
                .map(|(path, _)| path.clone())
                .collect();
            paths
                .iter()
                .filter_map(|path| loaded.remove(path))
                .collect()
        };
        drop_in_background(idle).await;
    }

    /// Unload everything (shutdown).
    pub async fn unload_all(&self) {
        let all: Vec<Arc<LoadedModel>> = std::mem::take(&mut *self.loaded.lock().await)
            .into_values()
            .collect();
        drop_in_background(all).await;
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

/// Dropping a model joins its generation thread: keep that off the async workers.
async fn drop_in_background(models: Vec<Arc<LoadedModel>>) {
    if models.is_empty() {
        return;
    }
    let _ = tokio::task::spawn_blocking(move || drop(models)).await;
}

/// An engine error without file paths (clients may be remote).
fn short_engine_error(error: &crate::engine::EngineError) -> String {
    match error {
        crate::engine::EngineError::Load { .. } => "llama.cpp could not load the file".into(),
        other => other.to_string(),
    }
}

/// Validate a model file before llama.cpp sees it (once, when it is loaded;
/// not on every request).
async fn check_file(name: &str, path: &std::path::Path) -> Result<(), ApiError> {
    let shown = escaped(name);
    let path = path.to_owned();
    let checked = tokio::task::spawn_blocking(move || crate::gguf::inspect(&path).map(drop)).await;
    match checked {
        Ok(Ok(())) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("model '{shown}' is not a usable GGUF file"),
        )),
    }
}
