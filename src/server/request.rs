//! Request decoding shared by both APIs: the JSON body, range checks of
//! sampling values, and small helpers for ids and timestamps.
//!
//! Owns: what a request may ask for (every number is checked here, before
//! the engine sees it). Must not touch: the engine's internals.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::error::ApiError;
use crate::engine::{Constraint, GenerateRequest, SamplingConfig, StopReason};

/// Most stop strings a request may give, and their longest length.
const MAX_STOPS: usize = 16;
const MAX_STOP_BYTES: usize = 1024;

/// Decode a JSON body; a body over the limit is 413, bad JSON is 400.
pub fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes =
        body.map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?;
    serde_json::from_slice(&bytes)
        .map_err(|error| ApiError::bad_request(format!("invalid request body: {error}")))
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
                    ApiError::bad_request(format!("top_k must be >= 0, got {top_k}"))
                })?,
            },
            repeat_last_n: defaults.repeat_last_n,
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
        if let Some(constraint) = &constraint {
            constraint
                .to_grammar()
                .map_err(|error| ApiError::bad_request(error.to_string()))?;
        }
        Ok(GenerateRequest {
            sampling,
            max_tokens,
            constraint,
            stop,
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

/// Seconds since the Unix epoch.
pub fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |duration| duration.as_secs())
}

/// A response id unique within this process: `prefix-<time><counter>`.
pub fn response_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{:x}{count:04x}", unix_seconds())
}

/// RFC 3339 UTC timestamp, as Ollama writes `created_at`.
pub fn rfc3339(time: SystemTime) -> String {
    let duration = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = duration.as_secs();
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        duration.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let time = UNIX_EPOCH + Duration::from_secs(1_709_251_199);
        assert_eq!(rfc3339(time), "2024-02-29T23:59:59.000000000Z");
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
