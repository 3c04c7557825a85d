//! Embeddings in both APIs: OpenAI's `POST /v1/embeddings`, Ollama's
//! `POST /api/embed` and its older `POST /api/embeddings`.
//!
//! Owns: their request and response shapes and input limits. The vectors
//! come from the model's worker ([`crate::engine::embed`] runs there).
//! Must not touch: llama.cpp, the store.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, Flavor};
use super::models::KeepAlive;
use super::request::{strict_body, Fields};
use super::AppState;
use crate::store::names::escaped;

/// Most inputs one request may embed (OpenAI's own limit).
const MAX_INPUTS: usize = 2048;

/// Widest embeddings of any model olm loads (its GGUF check refuses wider),
/// so a larger `dimensions` is refused before a model is loaded for it.
const MAX_DIMENSIONS: u64 = crate::gguf::MAX_EMBEDDING_LENGTH;

/// `input`: one text or a list. Token arrays are refused: they would reach
/// llama.cpp unchecked, and text is what every client sends.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
    Other(serde::de::IgnoredAny),
}

impl Input {
    fn into_texts(self) -> Result<Vec<String>, ApiError> {
        let texts = match self {
            Input::One(text) => vec![text],
            Input::Many(texts) => texts,
            Input::Other(_) => {
                return Err(ApiError::bad_request(
                    "input must be a string or a list of strings (token ids are not accepted)",
                ))
            }
        };
        if texts.is_empty() {
            return Err(ApiError::bad_request("input is empty"));
        }
        if texts.len() > MAX_INPUTS {
            return Err(ApiError::bad_request(format!(
                "input has {} items; at most {MAX_INPUTS} per request",
                texts.len()
            )));
        }
        if texts.iter().any(String::is_empty) {
            return Err(ApiError::bad_request("input contains an empty string"));
        }
        Ok(texts)
    }
}

/// `/v1/embeddings` fields (README's table): `user` is ignored on purpose.
const OPENAI_FIELDS: Fields = Fields {
    honoured: &["model", "input", "encoding_format", "dimensions"],
    ignored: &["user"],
};

/// `/api/embed` fields: Ollama's `options` (load and sampling settings)
/// change nothing an embedding does here, so they are refused, not dropped.
const OLLAMA_FIELDS: Fields = Fields {
    honoured: &[
        "model",
        "name",
        "input",
        "truncate",
        "dimensions",
        "keep_alive",
    ],
    ignored: &[],
};

/// `/api/embeddings` (Ollama's older route) fields.
const OLLAMA_LEGACY_FIELDS: Fields = Fields {
    honoured: &["model", "name", "prompt", "keep_alive"],
    ignored: &[],
};

#[derive(Debug, Deserialize)]
struct OpenAiRequest {
    model: String,
    input: Input,
    encoding_format: Option<String>,
    dimensions: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct OllamaRequest {
    #[serde(alias = "name")]
    model: String,
    input: Input,
    truncate: Option<bool>,
    dimensions: Option<Value>,
    keep_alive: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct OllamaLegacyRequest {
    #[serde(alias = "name")]
    model: String,
    prompt: String,
    keep_alive: Option<Value>,
}

/// `POST /v1/embeddings`.
pub async fn openai(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    openai_inner(&state, body)
        .await
        .unwrap_or_else(|error| error.into_response_for(Flavor::OpenAi))
}

/// A checked `/v1/embeddings` request.
pub(super) struct OpenAiDecoded {
    model: String,
    texts: Vec<String>,
    base64: bool,
    dimensions: Option<usize>,
}

/// Decode and check a `/v1/embeddings` body (no model needed).
pub(super) fn decode_openai(
    body: Result<Bytes, BytesRejection>,
) -> Result<OpenAiDecoded, ApiError> {
    let request: OpenAiRequest = strict_body(body, &OPENAI_FIELDS)?;
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unsupported encoding_format '{other}' (float or base64)"
            )))
        }
    };
    Ok(OpenAiDecoded {
        dimensions: dimensions(request.dimensions.as_ref())?,
        texts: request.input.into_texts()?,
        model: request.model,
        base64,
    })
}

async fn openai_inner(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let OpenAiDecoded {
        model,
        texts,
        base64,
        dimensions,
    } = decode_openai(body)?;
    let (vectors, prompt_tokens) = embed(state, &model, texts, false, None, dimensions).await?;
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                json!(encode_base64(&vector))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }))
    .into_response())
}

/// `POST /api/embed`.
pub async fn ollama(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    ollama_inner(&state, body)
        .await
        .unwrap_or_else(|error| error.into_response_for(Flavor::Ollama))
}

/// A checked `/api/embed` request.
pub(super) struct OllamaDecoded {
    model: String,
    texts: Vec<String>,
    truncate: bool,
    dimensions: Option<usize>,
    keep_alive: Option<KeepAlive>,
}

/// Decode and check an `/api/embed` body (no model needed).
pub(super) fn decode_ollama(
    body: Result<Bytes, BytesRejection>,
) -> Result<OllamaDecoded, ApiError> {
    let request: OllamaRequest = strict_body(body, &OLLAMA_FIELDS)?;
    Ok(OllamaDecoded {
        keep_alive: KeepAlive::from_request(request.keep_alive.as_ref())?,
        dimensions: dimensions(request.dimensions.as_ref())?,
        texts: request.input.into_texts()?,
        truncate: request.truncate.unwrap_or(true),
        model: request.model,
    })
}

async fn ollama_inner(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let OllamaDecoded {
        model,
        texts,
        truncate,
        dimensions,
        keep_alive,
    } = decode_ollama(body)?;
    let (embeddings, prompt_tokens) =
        embed(state, &model, texts, truncate, keep_alive, dimensions).await?;
    Ok(Json(json!({
        "model": model,
        "embeddings": embeddings,
        "total_duration": nanos(started),
        "load_duration": 0,
        "prompt_eval_count": prompt_tokens,
    }))
    .into_response())
}

/// `POST /api/embeddings` (Ollama's older route: one prompt, one vector).
pub async fn ollama_legacy(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    ollama_legacy_inner(&state, body)
        .await
        .unwrap_or_else(|error| error.into_response_for(Flavor::Ollama))
}

async fn ollama_legacy_inner(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: OllamaLegacyRequest = strict_body(body, &OLLAMA_LEGACY_FIELDS)?;
    let keep_alive = KeepAlive::from_request(request.keep_alive.as_ref())?;
    let texts = Input::One(request.prompt).into_texts()?;
    let (mut vectors, _) = embed(state, &request.model, texts, true, keep_alive, None).await?;
    let embedding = vectors.pop().unwrap_or_default();
    Ok(Json(json!({ "embedding": embedding })).into_response())
}

/// Embed `texts` with `model`: one vector per text, shortened to
/// `dimensions` if asked (400 when the model's vectors are narrower), and
/// the prompt tokens they took.
async fn embed(
    state: &AppState,
    model: &str,
    texts: Vec<String>,
    truncate: bool,
    keep_alive: Option<KeepAlive>,
    dimensions: Option<usize>,
) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    let loaded = state.registry.get(model, keep_alive).await?;
    let size = loaded.worker.ready().embedding_size as usize;
    if let Some(asked) = dimensions.filter(|asked| *asked > size) {
        // Refused before any text is embedded.
        return Err(ApiError::bad_request(format!(
            "dimensions must be at most the model's embedding size: '{}' makes vectors \
             of {size} dimensions, not {asked}",
            escaped(model),
        )));
    }
    let embedded = loaded.worker.embed(texts, truncate).await?;
    let vectors = shortened_all(embedded.vectors, dimensions).map_err(|size| {
        ApiError::bad_request(format!(
            "dimensions must be at most the model's embedding size: '{}' makes vectors \
             of {size} dimensions, not {}",
            escaped(model),
            dimensions.unwrap_or_default()
        ))
    })?;
    Ok((vectors, embedded.prompt_tokens))
}

/// A request's `dimensions`: a whole number from 1 to [`MAX_DIMENSIONS`]
/// (the model's own size is checked once its vectors are known). Decoded
/// here rather than by serde so that every refusal names the field.
fn dimensions(requested: Option<&Value>) -> Result<Option<usize>, ApiError> {
    let count = match requested {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(number)) => number.as_i64().or_else(|| {
            // Past i64, or written as a float (`1e9`, `8.0`): whole ones count.
            number
                .as_f64()
                .filter(|value| value.fract() == 0.0)
                .map(|value| value as i64)
        }),
        Some(_) => None,
    };
    let Some(count) = count else {
        return Err(ApiError::bad_request(
            "dimensions must be a whole number from 1 to the model's embedding size",
        ));
    };
    if count < 1 {
        return Err(ApiError::bad_request(format!(
            "dimensions must be at least 1, not {count}"
        )));
    }
    u64::try_from(count)
        .ok()
        .filter(|count| *count <= MAX_DIMENSIONS)
        .and_then(|count| usize::try_from(count).ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "dimensions must be at most the model's embedding size; {count} is more \
                 than any model has (olm loads none wider than {MAX_DIMENSIONS})"
            ))
        })
}

/// Every vector shortened to `dimensions`, or the model's embedding size
/// when `dimensions` is larger than it.
fn shortened_all(
    vectors: Vec<Vec<f32>>,
    dimensions: Option<usize>,
) -> Result<Vec<Vec<f32>>, usize> {
    let Some(dimensions) = dimensions else {
        return Ok(vectors);
    };
    let size = vectors.iter().map(Vec::len).max().unwrap_or(0);
    if dimensions > size {
        return Err(size);
    }
    Ok(vectors
        .into_iter()
        .map(|vector| shortened(vector, dimensions))
        .collect())
}

/// The first `dimensions` values, scaled back to unit length (as OpenAI
/// and Ollama shorten embeddings).
fn shortened(mut vector: Vec<f32>, dimensions: usize) -> Vec<f32> {
    if dimensions >= vector.len() {
        return vector;
    }
    vector.truncate(dimensions);
    crate::engine::normalize(&mut vector);
    vector
}

/// OpenAI's base64 format: the little-endian f32 bytes.
fn encode_base64(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn nanos(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortened_vectors_have_unit_length() {
        let vector = shortened(vec![0.6, 0.8, 0.0, 0.0], 1);
        assert_eq!(vector, vec![1.0]);
        assert_eq!(shortened(vec![0.6, 0.8], 2), vec![0.6, 0.8]);
    }

    /// T-G6: `dimensions` from 1 to the model's embedding size.
    #[test]
    fn dimensions_beyond_the_model_are_refused_with_its_size() {
        let vectors = || vec![vec![0.6, 0.8, 0.0], vec![0.0, 0.0, 1.0]];
        assert_eq!(shortened_all(vectors(), None), Ok(vectors()));
        assert_eq!(shortened_all(vectors(), Some(3)), Ok(vectors()));
        assert_eq!(
            shortened_all(vectors(), Some(1)),
            Ok(vec![vec![1.0], vec![0.0]])
        );
        assert_eq!(shortened_all(vectors(), Some(4)), Err(3));
        assert_eq!(shortened_all(vectors(), Some(usize::MAX)), Err(3));
    }

    #[test]
    fn dimensions_are_bounded_before_any_model() {
        assert_eq!(dimensions(None), Ok(None));
        assert_eq!(dimensions(Some(&Value::Null)), Ok(None));
        assert_eq!(dimensions(Some(&json!(1))), Ok(Some(1)));
        assert_eq!(dimensions(Some(&json!(8.0))), Ok(Some(8)));
        assert_eq!(dimensions(Some(&json!(1 << 20))), Ok(Some(1 << 20)));
        for refused in [
            json!(0),
            json!(-1),
            json!(i64::MIN),
            json!((1 << 20) + 1),
            json!(1_000_000_000),
            json!(1e9),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(-1e300),
            json!(1e300),
            json!(8.5),
            json!("8"),
            json!([8]),
            json!(true),
        ] {
            let error = dimensions(Some(&refused)).expect_err("refused");
            assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(error.message.contains("dimensions"), "{}", error.message);
        }
    }

    #[test]
    fn base64_is_little_endian_f32() {
        assert_eq!(encode_base64(&[1.0]), "AACAPw==");
    }

    #[test]
    fn inputs_are_checked() {
        let tokens: Input = serde_json::from_str("[[1, 2]]").unwrap();
        assert!(tokens.into_texts().is_err());
        let empty: Input = serde_json::from_str("[]").unwrap();
        assert!(empty.into_texts().is_err());
        let two: Input = serde_json::from_str(r#"["a", "b"]"#).unwrap();
        assert_eq!(two.into_texts().unwrap().len(), 2);
    }
}
