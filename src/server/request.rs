//! Request decoding shared by both APIs: the JSON body, range checks of
//! sampling values, and small helpers for ids and timestamps.
//!
//! Owns: what a request may ask for (every number is checked here, before
//! the engine sees it). Must not touch: the engine's internals.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::error::ApiError;
use crate::engine::{Constraint, DraftConfig, GenerateRequest, SamplingConfig, StopReason};

/// Longest window of recent tokens the penalties look at.
const MAX_PENALTY_WINDOW: u32 = 1 << 16;

/// Most stop strings a request may give, and their longest length.
const MAX_STOPS: usize = 16;
const MAX_STOP_BYTES: usize = 1024;

/// serde_json's own limit on nesting while it decodes.
const MAX_JSON_DEPTH: usize = 128;

/// The fields a request object may have: each either honoured, or ignored
/// on purpose (and documented as such in README's table). Any other field
/// is a 400 that names it: a field accepted and ignored without a word
/// would leave a client believing it had been honoured.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    pub honoured: &'static [&'static str],
    pub ignored: &'static [&'static str],
}

impl Fields {
    /// Refuse the first key of `object` that is neither honoured nor ignored.
    pub fn check(
        &self,
        object: &serde_json::Map<String, serde_json::Value>,
        what: &str,
    ) -> Result<(), ApiError> {
        for key in object.keys() {
            if !self.honoured.contains(&key.as_str()) && !self.ignored.contains(&key.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "unsupported field '{}' in {what}; olm serve's README lists the fields it honours",
                    crate::store::names::escaped(&key.chars().take(64).collect::<String>())
                )));
            }
        }
        Ok(())
    }
}

/// Decode a JSON object body whose every field is in `fields`: how every
/// route with a body reads it (a body over the limit is 413, bad JSON or
/// any other top-level shape than an object is 400). The keys are read
/// first in a pass that skips the values (cheap even for 100,000
/// messages), then the body is decoded as `T`.
pub fn strict_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    fields: &Fields,
) -> Result<T, ApiError> {
    let bytes =
        body.map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?;
    check_nesting(&bytes)?;
    let keys: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice::<std::collections::BTreeMap<String, serde::de::IgnoredAny>>(&bytes)
            .map_err(|error| ApiError::bad_request(format!("invalid request body: {error}")))?
            .into_keys()
            .map(|key| (key, serde_json::Value::Null))
            .collect();
    fields.check(&keys, "the request")?;
    if fields.ignored.iter().any(|name| keys.contains_key(*name)) {
        serde_json::from_slice::<IgnoredFieldTypes>(&bytes)
            .map_err(|error| ApiError::bad_request(format!("invalid request body: {error}")))?;
    }
    serde_json::from_slice(&bytes)
        .map_err(|error| ApiError::bad_request(format!("invalid request body: {error}")))
}

/// The types of the fields olm ignores on purpose (`Fields::ignored`), as
/// the APIs that define them say: ignored is not unchecked, so `"user": -1`
/// is a 400 as it is at OpenAI. Every other field is skipped here.
#[derive(Deserialize)]
#[expect(dead_code, reason = "decoded for its types only")]
struct IgnoredFieldTypes {
    /// OpenAI: the end user's id.
    user: Option<String>,
    /// OpenAI's labels (string to string); Anthropic's `{"user_id": ...}`.
    metadata: Option<std::collections::BTreeMap<String, Option<String>>>,
    service_tier: Option<String>,
    prompt_cache_key: Option<String>,
    safety_identifier: Option<String>,
}

/// Refuse JSON nested deeper than serde_json would decode. serde_json skips
/// a field it does not know without counting levels, so without this a
/// field nested 100,000 deep passes when nobody asks for it (T-D4).
fn check_nesting(bytes: &[u8]) -> Result<(), ApiError> {
    let (mut depth, mut in_string, mut after_backslash) = (0usize, false, false);
    for &byte in bytes {
        if in_string {
            match byte {
                _ if after_backslash => after_backslash = false,
                b'\\' => after_backslash = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(ApiError::bad_request(format!(
                        "invalid request body: recursion limit exceeded (nested deeper than {MAX_JSON_DEPTH} levels)"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    fn into_list(self) -> Vec<String> {
        match self {
            Stop::One(stop) => vec![stop],
            Stop::Many(stops) => stops,
        }
    }
}

/// Sampling values as both APIs name them, before range checks.
#[derive(Debug, Default, Clone)]
pub struct SamplingRequest {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub repeat_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub repeat_last_n: Option<i64>,
    pub seed: Option<i64>,
    pub max_tokens: Option<i64>,
    pub stop: Option<Stop>,
}

impl SamplingRequest {
    /// The engine request, or 400 naming the first value out of range.
    pub fn into_request(self, constraint: Option<Constraint>) -> Result<GenerateRequest, ApiError> {
        let defaults = SamplingConfig::default();
        let sampling = SamplingConfig {
            temperature: in_range("temperature", self.temperature, 0.0, 2.0)?
                .unwrap_or(defaults.temperature),
            top_p: in_range("top_p", self.top_p, 0.0, 1.0)?.unwrap_or(defaults.top_p),
            min_p: in_range("min_p", self.min_p, 0.0, 1.0)?.unwrap_or(defaults.min_p),
            repeat_penalty: in_range("repeat_penalty", self.repeat_penalty, 0.01, 10.0)?
                .unwrap_or(defaults.repeat_penalty),
            top_k: match self.top_k {
                None => defaults.top_k,
                Some(top_k) => u32::try_from(top_k).map_err(|_| {
                    ApiError::bad_request(format!(
                        "top_k must be between 0 and {}, got {top_k}",
                        u32::MAX
                    ))
                })?,
            },
            // OpenAI's range.
            frequency_penalty: in_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?
                .unwrap_or(defaults.frequency_penalty),
            presence_penalty: in_range("presence_penalty", self.presence_penalty, -2.0, 2.0)?
                .unwrap_or(defaults.presence_penalty),
            // Ollama: 0 turns the penalties off, -1 means the whole context.
            repeat_last_n: match self.repeat_last_n {
                None => defaults.repeat_last_n,
                Some(-1) => MAX_PENALTY_WINDOW,
                Some(count) if (0..=i64::from(MAX_PENALTY_WINDOW)).contains(&count) => count as u32,
                Some(count) => {
                    return Err(ApiError::bad_request(format!(
                    "repeat_last_n must be -1 or between 0 and {MAX_PENALTY_WINDOW}, got {count}"
                )))
                }
            },
            // Negative seeds mean "random", as in Ollama.
            seed: self
                .seed
                .filter(|seed| *seed >= 0)
                .map(|seed| (seed % i64::from(u32::MAX)) as u32),
        };
        let max_tokens = match self.max_tokens {
            None => None,
            Some(count) if count >= 1 => Some(u32::try_from(count).unwrap_or(u32::MAX)),
            Some(count) => {
                return Err(ApiError::bad_request(format!(
                    "max_tokens must be at least 1, got {count}"
                )))
            }
        };
        let stop = self.stop.map(Stop::into_list).unwrap_or_default();
        if stop.len() > MAX_STOPS || stop.iter().any(|stop| stop.len() > MAX_STOP_BYTES) {
            return Err(ApiError::bad_request(format!(
                "stop takes at most {MAX_STOPS} strings of at most {MAX_STOP_BYTES} bytes"
            )));
        }
        // An empty stop string would stop nowhere: refused, not ignored.
        if stop.iter().any(String::is_empty) {
            return Err(ApiError::bad_request("stop strings must not be empty"));
        }
        // The grammar itself is built by llama.cpp's converter in the model's
        // worker process (a crash there cannot take the server down), which
        // answers 400 before the response starts; the checks here refuse what
        // could hang or overflow that converter.
        if let Some(constraint) = &constraint {
            constraint
                .check()
                .map_err(|error| ApiError::from_engine(error.kind(), error.to_string()))?;
        }
        Ok(GenerateRequest {
            sampling,
            max_tokens,
            constraint,
            stop,
            // The server's own setting (`olm serve --draft`), filled in when
            // the request starts.
            draft: DraftConfig::default(),
        })
    }
}

fn in_range(name: &str, value: Option<f64>, low: f64, high: f64) -> Result<Option<f32>, ApiError> {
    match value {
        None => Ok(None),
        Some(value) if value.is_finite() && (low..=high).contains(&value) => Ok(Some(value as f32)),
        Some(value) => Err(ApiError::bad_request(format!(
            "{name} must be between {low} and {high}, got {value}"
        ))),
    }
}

/// OpenAI's and Ollama's name for why generation ended.
pub fn finish_reason(reason: StopReason) -> &'static str {
    match reason {
        StopReason::MaxTokens | StopReason::ContextFull => "length",
        StopReason::Eog | StopReason::StopSequence | StopReason::Cancelled => "stop",
    }
}

/// A response id unique within this process: `prefix-<time><counter>`.
pub fn response_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{:x}{count:04x}", crate::human::unix_seconds())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        let deep = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        assert!(check_nesting(deep(128).as_bytes()).is_ok());
        assert!(check_nesting(deep(129).as_bytes()).is_err());
        let quoted = format!(r#"{{"a": "{}\"{}"}}"#, "[".repeat(500), "{".repeat(500));
        assert!(check_nesting(quoted.as_bytes()).is_ok(), "{quoted}");
        let mut unknown = format!(r#"{{"model": "m", "unknown": {}}}"#, deep(100_000));
        let fields = Fields {
            honoured: &["model"],
            ignored: &["unknown"],
        };
        let error = strict_body::<serde_json::Value>(Ok(Bytes::from(unknown.clone())), &fields)
            .unwrap_err();
        assert!(
            error.message.contains("recursion limit"),
            "{}",
            error.message
        );
        unknown.truncate(20);
        assert!(check_nesting(unknown.as_bytes()).is_ok());
    }

    /// T-D4: out-of-range values are refused, not clamped.
    #[test]
    fn out_of_range_values_are_refused() {
        let cases = [
            SamplingRequest {
                temperature: Some(-1.0),
                ..Default::default()
            },
            SamplingRequest {
                temperature: Some(f64::NAN),
                ..Default::default()
            },
            SamplingRequest {
                top_p: Some(1.5),
                ..Default::default()
            },
            SamplingRequest {
                top_k: Some(-5),
                ..Default::default()
            },
            SamplingRequest {
                max_tokens: Some(0),
                ..Default::default()
            },
            SamplingRequest {
                max_tokens: Some(-1),
                ..Default::default()
            },
            SamplingRequest {
                stop: Some(Stop::Many(vec!["x".into(); 10_000])),
                ..Default::default()
            },
        ];
        for case in cases {
            let error = case
                .clone()
                .into_request(None)
                .expect_err(&format!("{case:?}"));
            assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn valid_values_pass_through() {
        let request = SamplingRequest {
            temperature: Some(0.0),
            max_tokens: Some(i64::MAX),
            seed: Some(42),
            stop: Some(Stop::One("\n".into())),
            ..Default::default()
        }
        .into_request(None)
        .expect("valid");
        assert_eq!(request.sampling.temperature, 0.0);
        assert_eq!(request.max_tokens, Some(u32::MAX));
        assert_eq!(request.sampling.seed, Some(42));
        assert_eq!(request.stop, vec!["\n".to_string()]);
    }
}
