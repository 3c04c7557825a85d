//! `POST /api/copy` and `POST /api/create`: new store names over the Ollama
//! API, and the model digests `/api/tags` and `/api/ps` report.
//!
//! Owns: copying a name (a second manifest for the same files, or a
//! command-line model imported into the store), creating a model from a
//! GGUF file on the server's machine, and the `sha256:` digest of a model.
//! A file path is taken from a request only by `/api/create`, and only when
//! the server listens on loopback (every client is then on this machine);
//! everywhere else a path is refused. Must not touch: the engine, workers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::access::is_loopback;
use super::error::{ApiError, Flavor};
use super::models::Available;
use super::request::{strict_body, Fields};
use super::AppState;
use crate::store::{names::escaped, ModelRef, Store, StoreError};

/// `/api/copy`: both fields honoured.
pub const COPY_FIELDS: Fields = Fields {
    honoured: &["source", "destination"],
    ignored: &[],
};

/// `/api/create`: a name and a GGUF file (or an existing model) to give it.
/// Building a model from layers (`files`, `adapters`, `quantize`, a
/// template, system prompt or parameters) is refused by name.
pub const CREATE_FIELDS: Fields = Fields {
    honoured: &["model", "name", "from", "modelfile", "path", "stream"],
    ignored: &[],
};

#[derive(Debug, Deserialize)]
struct CopyRequest {
    source: String,
    destination: String,
}

#[derive(Debug, Deserialize)]
struct CreateRequest {
    model: Option<String>,
    name: Option<String>,
    from: Option<String>,
    /// Ollama's older form: a Modelfile of one `FROM` line.
    modelfile: Option<String>,
    /// Ollama's older form: the path of a Modelfile (refused: use `from`).
    path: Option<String>,
    stream: Option<bool>,
}

/// A name a request gives for the store: never a path or URL.
fn store_name(text: &str) -> Result<ModelRef, ApiError> {
    let refused = || {
        ApiError::bad_request(format!(
            "invalid model name '{}': give a name such as my-model or owner/repo[:TAG], not a path or URL",
            escaped(text)
        ))
    };
    let path_like = text.contains("://")
        || text.starts_with(['.', '/', '~'])
        || text.contains('\\')
        || text.to_ascii_lowercase().ends_with(".gguf");
    if path_like || text.is_empty() {
        return Err(refused());
    }
    ModelRef::parse_name(text).map_err(|_| refused())
}

fn store_error(error: &StoreError) -> ApiError {
    match error {
        StoreError::EmptyReference | StoreError::InvalidReference { .. } => {
            ApiError::bad_request(error.to_string())
        }
        StoreError::SplitImport(_) => ApiError::bad_request(
            "one part of a split model cannot be imported; merge the parts first",
        ),
        StoreError::NotInStore(_) | StoreError::NoSuchFile(_) => {
            ApiError::not_found("model not found")
        }
        StoreError::InvalidModel { .. } => {
            ApiError::bad_request("the file is not a usable GGUF model")
        }
        StoreError::Io { .. } if error.is_disk_full() => ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "not enough disk space on the server",
        ),
        StoreError::CorruptManifest { .. } | StoreError::Io { .. } => {
            ApiError::internal("the server cannot read or write its model store")
        }
    }
}

/// `POST /api/copy`: `destination` names what `source` names.
pub async fn copy(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    copy_inner(&state, body)
        .await
        .unwrap_or_else(|error| error.into_response_for(Flavor::Ollama))
}

async fn copy_inner(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: CopyRequest = strict_body(body, &COPY_FIELDS)?;
    let destination = store_name(&request.destination)?;
    // The source is resolved as every request resolves a model: a name from
    // the command line, or a store name.
    let source_path = state.registry.resolve(&request.source)?;
    let source_name = request.source.clone();
    tokio::task::spawn_blocking(move || {
        let store = Store::from_env();
        let manifest = ModelRef::parse_name(&source_name)
            .ok()
            .and_then(|reference| store.find(&reference).ok().flatten());
        match manifest {
            Some(mut manifest) => {
                manifest.name = destination.to_string();
                store.save_manifest(&manifest)
            }
            // A model named on the command line: into the store.
            None => store.import(&source_path, &destination).map(drop),
        }
    })
    .await
    .map_err(|_| ApiError::internal("copying the model failed"))?
    .map_err(|error| store_error(&error))?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /api/create`: a store name for a GGUF file on this machine (`from`
/// an absolute path, or a Modelfile whose only line is `FROM /path.gguf`),
/// or for an existing model (`from` a name, as `/api/copy`).
pub async fn create(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    create_inner(&state, body)
        .await
        .unwrap_or_else(|error| error.into_response_for(Flavor::Ollama))
}

async fn create_inner(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: CreateRequest = strict_body(body, &CREATE_FIELDS)?;
    let name = request
        .model
        .as_deref()
        .or(request.name.as_deref())
        .ok_or_else(|| ApiError::bad_request("model is required"))?;
    let destination = store_name(name)?;
    if request.path.is_some() {
        return Err(ApiError::bad_request(
            "path (a Modelfile on the server) is not supported: give from, the GGUF file's absolute path",
        ));
    }
    let from = match (request.from, request.modelfile) {
        (Some(from), None) => from,
        (None, Some(modelfile)) => modelfile_from(&modelfile)?,
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("give from or modelfile, not both"))
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "from is required: the absolute path of a GGUF file, or a model's name",
            ))
        }
    };
    let stream = request.stream.unwrap_or(true);
    if !Path::new(&from).is_absolute() {
        // A model's name: the same as /api/copy.
        let source_path = state.registry.resolve(&from)?;
        let source = from.clone();
        tokio::task::spawn_blocking(move || {
            let store = Store::from_env();
            let manifest = ModelRef::parse_name(&source)
                .ok()
                .and_then(|reference| store.find(&reference).ok().flatten());
            match manifest {
                Some(mut manifest) => {
                    manifest.name = destination.to_string();
                    store.save_manifest(&manifest)
                }
                None => store.import(&source_path, &destination).map(drop),
            }
        })
        .await
        .map_err(|_| ApiError::internal("creating the model failed"))?
        .map_err(|error| store_error(&error))?;
        return Ok(success(stream));
    }
    if !listens_on_loopback_only(&state.access) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "creating a model from a file path is allowed only when olm serve listens on loopback (clients on this machine)",
        ));
    }
    let path = PathBuf::from(&from);
    if !path
        .to_string_lossy()
        .to_ascii_lowercase()
        .ends_with(".gguf")
    {
        return Err(ApiError::bad_request(
            "from must be the path of a .gguf file",
        ));
    }
    tokio::task::spawn_blocking(move || Store::from_env().import(&path, &destination))
        .await
        .map_err(|_| ApiError::internal("creating the model failed"))?
        .map_err(|error| store_error(&error))?;
    Ok(success(stream))
}

/// Ollama's reply to a finished create: a stream of one status line, or
/// one object.
fn success(stream: bool) -> Response {
    let body = json!({"status": "success"});
    if stream {
        (
            [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
            format!("{body}\n"),
        )
            .into_response()
    } else {
        Json(body).into_response()
    }
}

/// The file of a Modelfile that says only `FROM /path/to/model.gguf`.
fn modelfile_from(modelfile: &str) -> Result<String, ApiError> {
    let mut from = None;
    for line in modelfile
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
    {
        let (instruction, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        if instruction.eq_ignore_ascii_case("FROM") && from.is_none() {
            from = Some(rest.trim().to_owned());
        } else {
            return Err(ApiError::bad_request(format!(
                "Modelfile instruction '{}' is not supported: only FROM",
                escaped(instruction)
            )));
        }
    }
    from.ok_or_else(|| ApiError::bad_request("the Modelfile has no FROM line"))
}

/// Whether every address the server answers on is a loopback one.
fn listens_on_loopback_only(access: &super::AccessPolicy) -> bool {
    !access.any_host && access.extra_hosts.iter().all(|host| is_loopback(host))
}

/// A model's digest as `/api/tags` shows it: `sha256:` and the hash of its
/// GGUF file (of the files' hashes, for a split model). Store models have
/// it in their manifest; a file named on the command line is hashed once
/// (on a blocking thread) and remembered while its size and time hold.
pub async fn digest(model: &Available) -> String {
    type Key = (PathBuf, u64, std::time::SystemTime);
    static HASHED: OnceLock<Mutex<HashMap<Key, String>>> = OnceLock::new();
    let store = Store::from_env();
    if let Ok(reference) = ModelRef::parse_name(&model.name) {
        if let Ok(Some(manifest)) = store.find(&reference) {
            if manifest.files.len() == 1 {
                return format!("sha256:{}", manifest.files[0].sha256);
            }
            let joined: String = manifest
                .files
                .iter()
                .map(|file| file.sha256.as_str())
                .collect();
            return format!(
                "sha256:{}",
                crate::store::sha256_reader(joined.as_bytes()).unwrap_or_default()
            );
        }
    }
    let Ok(metadata) = std::fs::metadata(&model.path) else {
        return String::new();
    };
    let key = (
        model.path.clone(),
        metadata.len(),
        metadata.modified().unwrap_or(std::time::UNIX_EPOCH),
    );
    let hashed = HASHED.get_or_init(Mutex::default);
    if let Some(known) = hashed
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return known.clone();
    }
    let path = model.path.clone();
    let digest = tokio::task::spawn_blocking(move || crate::store::sha256_file(&path))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|hash| format!("sha256:{hash}"))
        .unwrap_or_default();
    if !digest.is_empty() {
        hashed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, digest.clone());
    }
    digest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_modelfile_may_only_say_from() {
        assert_eq!(
            modelfile_from("# mine\nFROM /models/a.gguf\n").unwrap(),
            "/models/a.gguf"
        );
        for bad in [
            "",
            "SYSTEM be nice",
            "FROM /a.gguf\nPARAMETER temperature 0",
            "FROM a\nFROM b",
        ] {
            assert!(modelfile_from(bad).is_err(), "{bad}");
        }
    }

    /// Bound to every interface or to another address, the server cannot
    /// tell a client on this machine from another: no file paths then.
    #[test]
    fn paths_only_on_a_loopback_server() {
        let loopback = super::super::AccessPolicy::default();
        assert!(listens_on_loopback_only(&loopback));
        let wildcard = super::super::AccessPolicy {
            any_host: true,
            ..Default::default()
        };
        assert!(!listens_on_loopback_only(&wildcard));
        let lan = super::super::AccessPolicy {
            extra_hosts: vec!["192.168.1.5".into()],
            ..Default::default()
        };
        assert!(!listens_on_loopback_only(&lan));
    }

    #[test]
    fn names_are_never_paths() {
        for bad in ["/etc/passwd", "../x", "a.gguf", "http://x/y", "~/m", ""] {
            assert!(store_name(bad).is_err(), "{bad}");
        }
        assert!(store_name("my-model").is_ok());
    }
}
