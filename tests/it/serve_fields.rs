//! `olm serve` honours or refuses every field, at every level of a request
//! (README "Request fields"): a key inside a message, a content part or
//! block, a tool call, an input item, `response_format`, `tool_choice` or
//! `thinking` that olm does not know is a 400 naming it, as at the top
//! level; the keys clients send back unchanged are accepted; and a request
//! that only loads a model still has its values checked.

use serde_json::{json, Value};

use crate::common::server::{Server, MODEL};
use crate::serve_input::{assert_healthy_and_idle, refused, refused_by, with};

/// Every nested object refuses a key it does not know, by name, within
/// 100 ms, in its API's error shape, before any model is loaded; so do
/// the store routes, which took any key (and a JSON array for an object).
#[test]
fn unknown_keys_inside_a_request_are_refused_by_name() {
    let mut server = Server::start(&[]);
    let chat = json!({"model": MODEL, "max_tokens": 4,
                      "messages": [{"role": "user", "content": "hi"}]});
    let responses = json!({"model": MODEL, "max_output_tokens": 4, "input": "hi"});
    let messages = json!({"model": MODEL, "max_tokens": 4,
                          "messages": [{"role": "user", "content": "hi"}]});
    let ollama_chat = json!({"model": MODEL, "stream": false,
                             "messages": [{"role": "user", "content": "hi"}]});
    let call = json!({"id": "c1", "type": "function",
                      "function": {"name": "f", "arguments": "{}"}});
    let tool = json!({"type": "function", "function": {"name": "f"}});
    let cases = [
        // OpenAI chat.
        (
            "/v1/chat/completions",
            with(
                &chat,
                json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "surprise": 1}]}]}),
            ),
            "surprise",
        ),
        (
            "/v1/chat/completions",
            with(
                &chat,
                json!({"messages": [{"role": "assistant", "tool_calls": [with(&call, json!({"surprise": 1}))]},
                                    {"role": "user", "content": "hi"}]}),
            ),
            "surprise",
        ),
        (
            "/v1/chat/completions",
            with(
                &chat,
                json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                        "function": {"name": "f", "arguments": "{}", "surprise": 1}}]},
                                    {"role": "user", "content": "hi"}]}),
            ),
            "surprise",
        ),
        (
            "/v1/chat/completions",
            with(
                &chat,
                json!({"response_format": {"type": "json_object", "surprise": 1}}),
            ),
            "surprise",
        ),
        (
            "/v1/chat/completions",
            with(
                &chat,
                json!({"response_format": {"type": "text", "surprise": 1}}),
            ),
            "surprise",
        ),
        (
            "/v1/chat/completions",
            with(
                &chat,
                json!({"response_format": {"type": "json_schema",
                        "json_schema": {"name": "x", "schema": {}, "surprise": 1}}}),
            ),
            "surprise",
        ),
        (
            "/v1/chat/completions",
            with(
                &chat,
                json!({"tools": [tool], "tool_choice": {"type": "function", "function": {"name": "f"}, "surprise": 1}}),
            ),
            "surprise",
        ),
        (
            "/v1/chat/completions",
            with(
                &chat,
                json!({"tools": [tool], "tool_choice": {"type": "function", "function": {"name": "f", "surprise": 1}}}),
            ),
            "surprise",
        ),
        // Empty and textless content: a turn would vanish or be blank.
        (
            "/v1/chat/completions",
            with(
                &chat,
                json!({"messages": [{"role": "user", "content": []}]}),
            ),
            "empty",
        ),
        (
            "/v1/chat/completions",
            with(
                &chat,
                json!({"messages": [{"role": "user", "content": [{"type": "text"}]}]}),
            ),
            "text",
        ),
        // Responses.
        (
            "/v1/responses",
            with(
                &responses,
                json!({"input": [{"role": "user", "content": "hi", "surprise": 1}]}),
            ),
            "surprise",
        ),
        (
            "/v1/responses",
            with(
                &responses,
                json!({"input": [{"role": "user", "content": [{"type": "input_text", "text": "hi", "surprise": 1}]}]}),
            ),
            "surprise",
        ),
        (
            "/v1/responses",
            with(
                &responses,
                json!({"input": [{"role": "user", "content": [{"type": "input_text"}]}]}),
            ),
            "text",
        ),
        (
            "/v1/responses",
            with(
                &responses,
                json!({"input": [{"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}", "surprise": 1},
                                 {"type": "function_call_output", "call_id": "c1", "output": "x"}]}),
            ),
            "surprise",
        ),
        (
            "/v1/responses",
            with(
                &responses,
                json!({"input": [{"type": "reasoning", "summary": [], "encrypted_content": "gAAAA"},
                                 {"role": "user", "content": "hi"}]}),
            ),
            "encrypted_content",
        ),
        (
            "/v1/responses",
            with(
                &responses,
                json!({"text": {"format": {"type": "json_schema", "name": "x", "schema": {}, "surprise": 1}}}),
            ),
            "surprise",
        ),
        // Anthropic Messages.
        (
            "/v1/messages",
            with(
                &messages,
                json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "surprise": 1}]}]}),
            ),
            "surprise",
        ),
        (
            "/v1/messages",
            with(
                &messages,
                json!({"system": [{"type": "text", "text": "be brief", "surprise": 1}]}),
            ),
            "surprise",
        ),
        (
            "/v1/messages",
            with(
                &messages,
                json!({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                        "content": [{"type": "text", "text": "r", "surprise": 1}]}]}]}),
            ),
            "surprise",
        ),
        (
            "/v1/messages",
            with(
                &messages,
                json!({"thinking": {"type": "disabled", "surprise": 1}}),
            ),
            "surprise",
        ),
        (
            "/v1/messages",
            with(
                &messages,
                json!({"tool_choice": {"type": "none", "surprise": 1}}),
            ),
            "surprise",
        ),
        (
            "/v1/messages",
            with(
                &messages,
                json!({"tool_choice": {"type": "none", "disable_parallel_tool_use": "yes"}}),
            ),
            "disable_parallel_tool_use",
        ),
        (
            "/v1/messages",
            with(
                &messages,
                json!({"messages": [{"role": "user", "content": []}]}),
            ),
            "empty",
        ),
        // Ollama.
        (
            "/api/chat",
            with(
                &ollama_chat,
                json!({"messages": [{"role": "assistant", "content": "",
                                     "tool_calls": [{"function": {"name": "f", "arguments": {}, "surprise": 1}}]}]}),
            ),
            "surprise",
        ),
        (
            "/api/chat",
            with(
                &ollama_chat,
                json!({"messages": [{"role": "assistant", "content": "",
                                     "tool_calls": [{"type": "custom", "function": {"name": "f"}}]}]}),
            ),
            "function",
        ),
        // A load-only request has its values checked as any other.
        (
            "/api/chat",
            json!({"model": MODEL, "messages": [], "options": {"num_ctx": -5}}),
            "num_ctx",
        ),
        (
            "/api/generate",
            json!({"model": MODEL, "prompt": "", "options": {"temperature": -1}}),
            "temperature",
        ),
        (
            "/api/generate",
            json!({"model": MODEL, "prompt": "", "format": "yaml"}),
            "format",
        ),
        // Store routes.
        (
            "/api/show",
            json!({"model": MODEL, "surprise": 1}),
            "surprise",
        ),
        (
            "/api/show",
            json!({"model": MODEL, "verbose": true}),
            "verbose",
        ),
        (
            "/api/pull",
            json!({"model": "owner/repo", "username": "u", "password": "p"}),
            "password",
        ),
    ];
    for (path, body, named) in cases {
        let message = refused(&server, path, body.to_string().as_bytes(), &[400]);
        assert!(message.contains(named), "{path} {body}: {message}");
    }
    let message = refused_by(
        &server,
        "DELETE",
        "/api/delete",
        br#"{"model": "owner/repo", "surprise": 1}"#,
        &[400],
    );
    assert!(message.contains("surprise"), "{message}");
    // A JSON array is not the object these routes take.
    let name = json!([MODEL]).to_string();
    for path in ["/api/show", "/api/pull"] {
        refused(&server, path, name.as_bytes(), &[400]);
    }
    refused_by(&server, "DELETE", "/api/delete", name.as_bytes(), &[400]);
    assert_healthy_and_idle(&mut server);
}

/// What clients send back unchanged is accepted (a streamed call's
/// `index`, `cache_control`, an earlier response's item ids, statuses and
/// annotations, a reasoning summary), and json_object's `schema`
/// (llama.cpp's extension) shapes the answer.
#[test]
fn what_clients_send_back_is_accepted_and_a_json_object_schema_is_honoured() {
    let server = Server::start(&[]);
    let ok = |path: &str, body: Value| -> Value {
        let reply = server.post(path, &body);
        assert_eq!(reply.status, 200, "{path} {body}: {}", reply.body);
        reply.json()
    };
    ok(
        "/v1/chat/completions",
        json!({"model": MODEL, "max_tokens": 2, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "weather?", "cache_control": {"type": "ephemeral"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "c1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "18 C"},
            // An answer of OpenAI's own, sent back as its SDK writes it.
            {"role": "assistant", "content": "It is 18 C.", "refusal": null, "annotations": [],
             "audio": null, "function_call": null, "tool_calls": null},
            {"role": "user", "content": "thanks"},
        ]}),
    );
    let audio = server.post(
        "/v1/chat/completions",
        &json!({"model": MODEL, "max_tokens": 2, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": null, "audio": {"id": "audio_1"}},
        ]}),
    );
    assert_eq!(audio.status, 400, "{}", audio.body);
    assert!(audio.body.contains("audio"), "{}", audio.body);
    ok(
        "/v1/responses",
        json!({"model": MODEL, "max_output_tokens": 2, "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "reasoning", "id": "rs_1", "status": "completed", "content": [],
             "summary": [{"type": "summary_text", "text": "greet back"}]},
            {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": "Hello!", "annotations": [], "logprobs": []}]},
            {"type": "function_call", "id": "fc_1", "status": "completed", "call_id": "c1",
             "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "18 C"},
        ]}),
    );
    ok(
        "/api/chat",
        json!({"model": MODEL, "stream": false, "options": {"num_predict": 2}, "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "", "tool_calls": [{"type": "function",
                "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "tool_name": "get_weather", "content": "18 C"},
        ]}),
    );
    let schema = json!({"type": "object", "properties": {"count": {"type": "integer"}},
                        "required": ["count"], "additionalProperties": false});
    let reply = ok(
        "/v1/chat/completions",
        json!({"model": MODEL, "max_tokens": 40, "temperature": 0,
               "messages": [{"role": "user", "content": "How many legs has a cat? Answer in JSON."}],
               "response_format": {"type": "json_object", "schema": schema}}),
    );
    let content = reply["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    let answer: Value = serde_json::from_str(content).expect("JSON");
    assert!(answer["count"].is_i64(), "{content}");
    assert_eq!(answer.as_object().map(|object| object.len()), Some(1));
}
