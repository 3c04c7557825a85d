//! Request decoding shared by both APIs: the JSON body, range checks of
//! sampling values, and small helpers for ids and timestamps.
//!
//! Owns: what a request may ask for (every number is checked here, before
//! the engine sees it). Must not touch: the engine's internals.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use crate::engine::{Constraint, GenerateRequest, SamplingConfig, StopReason};
use crate::store::names::escaped;

/// Longest window of recent tokens the penalties look at.
const MAX_PENALTY_WINDOW: u32 = 1 << 16;

/// Most stop strings a request may give, and their longest length.
const MAX_STOPS: usize = 16;
const MAX_STOP_BYTES: usize = 1024;

/// serde_json's own limit on nesting while it decodes.
const MAX_JSON_DEPTH: usize = 128;

/// Bounds on a JSON schema for structured output (T-D6), checked before
/// llama.cpp turns it into a grammar, in this process and in the worker.
/// That conversion is recursive C++: its `std::regex` over a property name
/// overflows a 2 MiB thread stack near 10,000 characters, and it follows
/// `$ref`s, nesting and regex groups one stack frame each. Its grammar
/// parser then copies each repetition `{m,n}` out in full (and refuses
/// more than 2000), and it drops regex patterns nested over 100 groups
/// without a word. Well inside all of that, everything else is a clear 400.
const MAX_SCHEMA_BYTES: usize = 256 << 10;
const MAX_SCHEMA_DEPTH: usize = 64;
/// Property names, `$defs` names and every other key of the schema.
const MAX_SCHEMA_KEY_BYTES: usize = 256;
const MAX_REF_BYTES: usize = 1024;
const MAX_PATTERN_BYTES: usize = 4096;
const MAX_PATTERN_GROUPS: usize = 32;
/// Largest `{m,n}` in a pattern and largest `minLength` / `minItems`.
const MAX_REPETITION: u64 = 1000;
/// Values looked at, `$ref` targets included: a bound on the check itself.
const MAX_SCHEMA_VISITS: usize = 1_000_000;
/// The converter's time grows with the square of an object's optional
/// properties and more (400 of them take 80 ms, 3000 take 40 s, on a server
/// thread): the sum of those squares over all objects stays under this.
const MAX_OPTIONAL_PROPERTIES_SQUARED: usize = 250_000;

/// Decode a JSON body; a body over the limit is 413, bad JSON is 400.
pub fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes =
        body.map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?;
    check_nesting(&bytes)?;
    serde_json::from_slice(&bytes)
        .map_err(|error| ApiError::bad_request(format!("invalid request body: {error}")))
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
                    ApiError::bad_request(format!("top_k must be >= 0, got {top_k}"))
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
        // The grammar itself is built by llama.cpp's converter in the model's
        // worker process (a crash there cannot take the server down), which
        // answers 400 before the response starts; the checks here refuse what
        // could hang or overflow that converter.
        if let Some(Constraint::JsonSchema(schema)) = &constraint {
            check_schema(schema)?;
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

/// A schema within the bounds above, with every `$ref` pointing into itself
/// and none leading back to where it started (400 otherwise).
fn check_schema(text: &str) -> Result<(), ApiError> {
    if text.len() > MAX_SCHEMA_BYTES {
        return Err(schema_error(format!(
            "it is {} bytes; the limit is {MAX_SCHEMA_BYTES}",
            text.len()
        )));
    }
    let root: Value =
        serde_json::from_str(text).map_err(|error| schema_error(error.to_string()))?;
    SchemaCheck {
        root: &root,
        visits: 0,
        optional_squared: 0,
        following: Vec::new(),
        followed: HashSet::new(),
    }
    .visit(&root, 0)
}

fn schema_error(reason: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("invalid JSON schema: {reason}"))
}

/// One walk over a schema, into `$ref` targets too (each once).
struct SchemaCheck<'a> {
    root: &'a Value,
    visits: usize,
    /// Sum of the squares of each object's optional property count.
    optional_squared: usize,
    /// `$ref` targets being walked now, by address: meeting one again is a cycle.
    following: Vec<*const Value>,
    /// `$ref` targets walked to the end.
    followed: HashSet<*const Value>,
}

impl<'a> SchemaCheck<'a> {
    fn visit(&mut self, value: &'a Value, depth: usize) -> Result<(), ApiError> {
        self.visits += 1;
        if self.visits > MAX_SCHEMA_VISITS {
            return Err(schema_error("it is too large to turn into a grammar"));
        }
        if depth > MAX_SCHEMA_DEPTH {
            return Err(schema_error(format!(
                "it nests deeper than {MAX_SCHEMA_DEPTH} levels (counting $ref)"
            )));
        }
        match value {
            Value::Array(items) => items
                .iter()
                .try_for_each(|item| self.visit(item, depth + 1)),
            Value::Object(fields) => {
                self.count_optional_properties(fields)?;
                for (key, field) in fields {
                    if key.len() > MAX_SCHEMA_KEY_BYTES {
                        return Err(schema_error(format!(
                            "a key is {} bytes; the limit is {MAX_SCHEMA_KEY_BYTES}",
                            key.len()
                        )));
                    }
                    match (key.as_str(), field) {
                        ("$ref", Value::String(reference)) => self.follow(reference, depth)?,
                        ("pattern", Value::String(pattern)) => check_pattern(pattern)?,
                        ("minLength" | "minItems", Value::Number(count))
                            if count.as_u64().is_none_or(|count| count > MAX_REPETITION) =>
                        {
                            return Err(schema_error(format!(
                                "{key} must be an integer from 0 to {MAX_REPETITION}, not {count}"
                            )));
                        }
                        _ => {}
                    }
                    self.visit(field, depth + 1)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn count_optional_properties(
        &mut self,
        fields: &serde_json::Map<String, Value>,
    ) -> Result<(), ApiError> {
        let Some(Value::Object(properties)) = fields.get("properties") else {
            return Ok(());
        };
        // Each name once: a repeated one must not hide an optional property.
        let required: HashSet<&str> = match fields.get("required") {
            Some(Value::Array(names)) => names
                .iter()
                .filter_map(Value::as_str)
                .filter(|name| properties.contains_key(*name))
                .collect(),
            _ => HashSet::new(),
        };
        let optional = properties.len() - required.len();
        self.optional_squared = self.optional_squared.saturating_add(optional * optional);
        if self.optional_squared > MAX_OPTIONAL_PROPERTIES_SQUARED {
            return Err(schema_error(
                "it has too many optional properties to turn into a grammar in good time; \
                 list more of them in `required`",
            ));
        }
        Ok(())
    }

    /// Walk a `$ref`'s target: only `#...` (a JSON pointer into this schema).
    fn follow(&mut self, reference: &str, depth: usize) -> Result<(), ApiError> {
        if reference.len() > MAX_REF_BYTES {
            return Err(schema_error(format!(
                "a $ref is {} bytes; the limit is {MAX_REF_BYTES}",
                reference.len()
            )));
        }
        let shown = escaped(reference);
        let Some(pointer) = reference.strip_prefix('#') else {
            return Err(schema_error(format!(
                "$ref '{shown}' points outside the schema; only '#/...' is supported"
            )));
        };
        let Some(target) = self.root.pointer(pointer) else {
            return Err(schema_error(format!("$ref '{shown}' points to nothing")));
        };
        let address: *const Value = target;
        if self.following.contains(&address) {
            return Err(schema_error(format!(
                "$ref '{shown}' is recursive; recursive schemas are not supported"
            )));
        }
        if self.followed.contains(&address) {
            return Ok(());
        }
        self.following.push(address);
        self.visit(target, depth + 1)?;
        self.following.pop();
        self.followed.insert(address);
        Ok(())
    }
}

/// A regex `pattern` llama.cpp can turn into a grammar without harm: not too
/// long, no control characters, groups not nested too deeply, no repetition
/// count over the limit.
fn check_pattern(pattern: &str) -> Result<(), ApiError> {
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(schema_error(format!(
            "a pattern is {} bytes; the limit is {MAX_PATTERN_BYTES}",
            pattern.len()
        )));
    }
    // llama.cpp prints a pattern it cannot enforce to stderr as it is: a
    // line break in one would forge a log line (T-D7). Regexes spell them `\n`.
    if pattern.chars().any(char::is_control) {
        return Err(schema_error(
            "a pattern contains a control character; write it as an escape such as \\n",
        ));
    }
    let mut chars = pattern.chars().peekable();
    let (mut groups, mut in_class) = (0usize, false);
    while let Some(char) = chars.next() {
        match char {
            '\\' => {
                chars.next();
            }
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            _ if in_class => {}
            '(' => {
                groups += 1;
                if groups > MAX_PATTERN_GROUPS {
                    return Err(schema_error(format!(
                        "a pattern nests more than {MAX_PATTERN_GROUPS} groups"
                    )));
                }
            }
            ')' => groups = groups.saturating_sub(1),
            '{' => {
                let mut counts = String::new();
                while let Some(&next) = chars.peek() {
                    if !(next.is_ascii_digit() || next == ',' || next == ' ') {
                        break;
                    }
                    counts.push(next);
                    chars.next();
                }
                let too_many = |count: &str| {
                    let count = count.trim();
                    !count.is_empty() && count.parse::<u64>().map_or(true, |n| n > MAX_REPETITION)
                };
                if chars.peek() == Some(&'}') && counts.split(',').any(too_many) {
                    return Err(schema_error(format!(
                        "a pattern repeats {{{counts}}} times; the limit is {MAX_REPETITION}"
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(())
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
    fn nesting_is_counted_outside_strings_only() {
        let deep = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        assert!(check_nesting(deep(128).as_bytes()).is_ok());
        assert!(check_nesting(deep(129).as_bytes()).is_err());
        let quoted = format!(r#"{{"a": "{}\"{}"}}"#, "[".repeat(500), "{".repeat(500));
        assert!(check_nesting(quoted.as_bytes()).is_ok(), "{quoted}");
        let mut unknown = format!(r#"{{"model": "m", "unknown": {}}}"#, deep(100_000));
        let error = json_body::<serde_json::Value>(Ok(Bytes::from(unknown.clone()))).unwrap_err();
        assert!(
            error.message.contains("recursion limit"),
            "{}",
            error.message
        );
        unknown.truncate(20);
        assert!(check_nesting(unknown.as_bytes()).is_ok());
    }

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

    fn schema_refused(schema: &str) -> String {
        let error = SamplingRequest::default()
            .into_request(Some(Constraint::JsonSchema(schema.to_owned())))
            .expect_err(&schema[..schema.len().min(200)]);
        assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST);
        error.message
    }

    fn nested(levels: usize, leaf: &str) -> String {
        let mut schema = leaf.to_owned();
        for _ in 0..levels {
            schema = format!(r#"{{"type":"array","items":{schema}}}"#);
        }
        schema
    }

    /// T-D6: each refused with a 400 before llama.cpp sees it.
    #[test]
    fn hostile_schemas_are_refused() {
        let string = r#"{"type":"string"}"#;
        let pattern = |pattern: &str| json_string_schema("pattern", pattern);
        let cases = [
            (nested(70, string), "nests deeper"),
            ("[".repeat(100) + &"]".repeat(100), "nests deeper"),
            (r##"{"$ref":"#"}"##.into(), "recursive"),
            (
                r##"{"type":"object","properties":{"child":{"$ref":"#"}}}"##.into(),
                "recursive",
            ),
            (
                r##"{"$defs":{"a":{"$ref":"#/$defs/b"},"b":{"type":"array","items":{"$ref":"#/$defs/a"}}},"$ref":"#/$defs/a"}"##.into(),
                "recursive",
            ),
            (r#"{"$ref":"https://example.com/schema.json"}"#.into(), "outside"),
            (r#"{"$ref":"/etc/passwd"}"#.into(), "outside"),
            (r##"{"$ref":"#/$defs/missing"}"##.into(), "points to nothing"),
            (
                // Crashes llama.cpp's converter (std::regex recursion).
                format!(r#"{{"type":"object","properties":{{"{}":{string}}}}}"#, " ".repeat(20_000)),
                "key is",
            ),
            (pattern(&format!("^{}a{}$", "(".repeat(40), ")".repeat(40))), "groups"),
            (pattern("^a{1000000}$"), "repeats"),
            (pattern("^(ab){5,2001}$"), "repeats"),
            (pattern("^a{99999999999999999999999}$"), "repeats"),
            (pattern(&format!("^{}$", "a".repeat(5000))), "bytes"),
            (pattern("^a\r\nFAKE LOG LINE$"), "control character"),
            (r#"{"type":"string","minLength":1000000000}"#.into(), "minLength"),
            (r#"{"type":"array","minItems":-1}"#.into(), "minItems"),
            (format!(r#"{{"enum":["{}"]}}"#, "x".repeat(300 << 10)), "bytes"),
            ("{not json".into(), "invalid JSON schema"),
            (object_schema(1000, &["p1"; 1000]), "optional properties"),
            (
                format!(r#"{{"anyOf":[{}]}}"#, vec![object_schema(100, &[]); 26].join(",")),
                "optional properties",
            ),
        ];
        for (schema, why) in cases {
            let message = schema_refused(&schema);
            assert!(message.contains(why), "{why:?} not in {message:?}");
        }
    }

    /// An object of `count` string properties `p0`, `p1`...
    fn object_schema(count: usize, required: &[&str]) -> String {
        let properties: serde_json::Map<String, Value> = (0..count)
            .map(|i| (format!("p{i}"), serde_json::json!({"type": "string"})))
            .collect();
        serde_json::json!({"type": "object", "properties": properties, "required": required})
            .to_string()
    }

    fn json_string_schema(keyword: &str, value: &str) -> String {
        serde_json::json!({"type": "string", keyword: value}).to_string()
    }

    #[test]
    fn ordinary_schemas_pass() {
        let schemas = [
            nested(20, r#"{"type":"string"}"#),
            // One definition used twice is not a cycle.
            r##"{"$defs":{"n":{"type":"integer"}},"type":"object","properties":{"a":{"$ref":"#/$defs/n"},"b":{"type":"array","items":{"$ref":"#/$defs/n"}}}}"##.into(),
            json_string_schema("pattern", r"^[0-9]{3}-[a-z]{2,8}(\.[a-z]+)*$"),
            json_string_schema("pattern", "^[{(]{1000}$"),
            r#"{"type":"string","minLength":3,"maxLength":100000}"#.into(),
            object_schema(400, &[]),
            {
                let names: Vec<String> = (0..2000).map(|i| format!("p{i}")).collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                object_schema(2000, &names)
            },
        ];
        for schema in schemas {
            SamplingRequest::default()
                .into_request(Some(Constraint::JsonSchema(schema.clone())))
                .unwrap_or_else(|error| panic!("{schema}: {}", error.message));
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
