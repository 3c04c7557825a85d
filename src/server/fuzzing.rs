//! The request decoders of the generation and embedding routes, reachable without a
//! model, a runtime or a socket: for the `request_decode` fuzz target and
//! tests (T-D4). Each runs the handler's own decoding and range checks, up
//! to where the handler would load the model.
//!
//! Owns: nothing but this door. Must not touch: models, workers, the store.

use axum::body::Bytes;

/// A route whose request body can be decoded here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    OpenAiChat,
    OpenAiCompletions,
    OllamaChat,
    OllamaGenerate,
    OpenAiEmbeddings,
    OllamaEmbed,
    OpenAiResponses,
    AnthropicMessages,
}

impl Route {
    pub const ALL: [Route; 8] = [
        Route::OpenAiChat,
        Route::OpenAiCompletions,
        Route::OllamaChat,
        Route::OllamaGenerate,
        Route::OpenAiEmbeddings,
        Route::OllamaEmbed,
        Route::OpenAiResponses,
        Route::AnthropicMessages,
    ];

    pub fn path(self) -> &'static str {
        match self {
            Route::OpenAiChat => "/v1/chat/completions",
            Route::OpenAiCompletions => "/v1/completions",
            Route::OllamaChat => "/api/chat",
            Route::OllamaGenerate => "/api/generate",
            Route::OpenAiEmbeddings => "/v1/embeddings",
            Route::OllamaEmbed => "/api/embed",
            Route::OpenAiResponses => "/v1/responses",
            Route::AnthropicMessages => "/v1/messages",
        }
    }
}

/// What a client would be told about a body the route refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

/// Decode `body` as `route`'s handler does: `Ok` when the request would go
/// on to the model, the status and message the client would get otherwise.
pub fn decode_request(route: Route, body: &[u8]) -> Result<(), Refused> {
    let body = Ok(Bytes::copy_from_slice(body));
    let decoded = match route {
        Route::OpenAiChat => super::openai::decode_chat(body).map(drop),
        Route::OpenAiCompletions => super::openai::decode_completion(body).map(drop),
        Route::OllamaChat => super::ollama::decode_chat(body).map(drop),
        Route::OllamaGenerate => super::ollama::decode_generate(body).map(drop),
        Route::OpenAiEmbeddings => super::embed::decode_openai(body).map(drop),
        Route::OllamaEmbed => super::embed::decode_ollama(body).map(drop),
        Route::OpenAiResponses => super::responses::decode(body).map(drop),
        Route::AnthropicMessages => super::anthropic::decode(body).map(drop),
    };
    decoded.map_err(|error| Refused {
        status: error.status.as_u16(),
        message: error.message,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::{json, Value};

    use super::*;

    fn valid_bodies() -> Vec<(Route, Value)> {
        let messages = json!([{"role": "user", "content": "hi"}]);
        vec![
            (
                Route::OpenAiChat,
                json!({"model": "m", "messages": messages, "max_tokens": 4, "stop": ["\n"],
                       "response_format": {"type": "json_schema", "json_schema": {"name": "x",
                       "schema": {"type": "object", "properties": {"a": {"type": "string",
                       "pattern": "^[a-z]{1,8}$"}}, "$defs": {"n": {"type": "integer"}}}}}}),
            ),
            (
                Route::OpenAiCompletions,
                json!({"model": "m", "prompt": "once", "temperature": 0.5, "top_k": 5}),
            ),
            (
                Route::OllamaChat,
                json!({"model": "m", "messages": messages, "format": "json",
                       "options": {"num_ctx": 2048, "num_predict": -1}, "keep_alive": "5m"}),
            ),
            (
                Route::OllamaGenerate,
                json!({"model": "m", "prompt": "once", "raw": true, "options": {"seed": 7}}),
            ),
            (
                Route::OpenAiEmbeddings,
                json!({"model": "m", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 8}),
            ),
            (
                Route::OllamaEmbed,
                json!({"model": "m", "input": "a", "truncate": false, "keep_alive": -1}),
            ),
            (
                Route::OpenAiEmbeddings,
                json!({"model": "m", "input": "a", "encoding_format": "float", "dimensions": 1048576}),
            ),
            (
                Route::OllamaEmbed,
                json!({"model": "m", "input": ["a", "b"], "dimensions": 1, "keep_alive": "5m"}),
            ),
            (
                Route::OpenAiChat,
                json!({"model": "m", "messages": [{"role": "user", "content": "weather?"},
                       {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                        "function": {"name": "w", "arguments": "{\"city\": \"Oslo\"}"}}]},
                       {"role": "tool", "tool_call_id": "c1", "content": "sunny"}],
                       "tools": [{"type": "function", "function": {"name": "w", "parameters":
                        {"type": "object", "properties": {"city": {"type": "string"}}}}}],
                       "tool_choice": "required", "n": 2, "reasoning_effort": "low"}),
            ),
            (
                Route::OllamaChat,
                json!({"model": "m", "messages": messages, "think": true, "tools": [{"type": "function",
                       "function": {"name": "w", "parameters": {"type": "object"}}}]}),
            ),
            (
                Route::OpenAiResponses,
                json!({"model": "m", "input": [{"role": "user", "content": "hi"},
                       {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
                       {"type": "function_call_output", "call_id": "c1", "output": "ok"}],
                       "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}}],
                       "max_output_tokens": 8, "stream": true}),
            ),
            (
                Route::AnthropicMessages,
                json!({"model": "m", "max_tokens": 8, "system": "be brief",
                       "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                       "tools": [{"name": "w", "input_schema": {"type": "object"}}],
                       "tool_choice": {"type": "auto"}}),
            ),
        ]
    }

    #[test]
    fn valid_requests_decode() {
        for (route, body) in valid_bodies() {
            let decoded = decode_request(route, body.to_string().as_bytes());
            assert_eq!(decoded, Ok(()), "{route:?} {body}");
        }
    }

    /// T-G6: `dimensions` outside 1..=2^20 (no model olm loads is wider) is
    /// refused before a model is loaded; the model's own size is checked
    /// once its vectors are known.
    #[test]
    fn embedding_dimensions_are_bounded() {
        for route in [Route::OpenAiEmbeddings, Route::OllamaEmbed] {
            for dimensions in ["1", "576", "1048576"] {
                let body = format!(r#"{{"model": "m", "input": "a", "dimensions": {dimensions}}}"#);
                assert_eq!(decode_request(route, body.as_bytes()), Ok(()), "{body}");
            }
            for dimensions in [
                "0",
                "-1",
                "1048577",
                "1000000000",
                "1e9",
                "9223372036854775808",
                "-9223372036854775809",
                "8.5",
                "\"8\"",
                "[8]",
            ] {
                let body = format!(r#"{{"model": "m", "input": "a", "dimensions": {dimensions}}}"#);
                let refused = decode_request(route, body.as_bytes()).expect_err(&body);
                assert_eq!(refused.status, 400, "{body}: {refused:?}");
                assert!(
                    refused.message.contains("dimensions"),
                    "{body}: {refused:?}"
                );
            }
        }
    }

    /// Every refusal of a decoder is the client's fault: a 4xx, never a 5xx.
    #[test]
    fn mangled_bodies_are_refused_with_a_4xx_and_never_panic() {
        // xorshift: the same inputs on every run.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds: Vec<Vec<u8>> = valid_bodies()
            .into_iter()
            .map(|(_, body)| body.to_string().into_bytes())
            .collect();
        for round in 0..4000 {
            let mut bytes = seeds[round % seeds.len()].clone();
            for _ in 0..=next() % 4 {
                let at = (next() as usize) % (bytes.len() + 1);
                match next() % 4 {
                    0 if at < bytes.len() => bytes[at] = next() as u8,
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    2 => {
                        let inserted = b"{}[]\",:-019eE\\\xff";
                        bytes.insert(at, inserted[(next() as usize) % inserted.len()]);
                    }
                    _ => bytes.truncate(at),
                }
            }
            for route in Route::ALL {
                if let Err(refused) = decode_request(route, &bytes) {
                    assert!(
                        (400..500).contains(&refused.status),
                        "{route:?} {:?} -> {refused:?}",
                        String::from_utf8_lossy(&bytes)
                    );
                }
            }
        }
    }

    /// Writes the fuzz seed corpus: a valid body of each route.
    /// Run: `cargo test --lib write_request_seed_corpus -- --ignored`.
    #[test]
    #[ignore = "writes fuzz/corpus/request_decode; run by hand"]
    fn write_request_seed_corpus() {
        let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/request_decode");
        std::fs::create_dir_all(&directory).expect("create corpus dir");
        for (route, body) in valid_bodies() {
            let name = format!("{route:?}.json").to_lowercase();
            std::fs::write(directory.join(name), body.to_string()).expect("write seed");
        }
    }
}
