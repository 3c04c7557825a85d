//! Bounded work per request in `olm serve` (T-G3; issue 12): a hostile chat
//! template, a request of 100,000 messages or a pathological schema fails on
//! its own, fast, while another client's answer keeps streaming; `/health`
//! says when a model stops making progress.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::server::{chat_body, Server, MODEL};
use crate::common::{model_with_metadata, model_with_template};

const DOUBLING_TEMPLATE: &str = "{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}\
    {% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}";

/// A streaming answer from the good model runs while a model with a hostile
/// template is asked: that request fails with 400 in seconds, the stream
/// finishes, and both stay usable.
#[test]
fn a_hostile_template_fails_alone_while_another_answer_streams() {
    let directory = tempfile::tempdir().expect("temp dir");
    let hostile = model_with_template(directory.path(), "hostile", DOUBLING_TEMPLATE);
    let server = Server::start(&[hostile.to_str().expect("utf-8 path")]);
    server.warm_up();
    // Load the hostile model first, so its request below measures rendering.
    let first = server.post(
        "/v1/completions",
        &json!({"model": "hostile", "prompt": "x", "max_tokens": 1}),
    );
    assert_eq!(
        first.status, 200,
        "raw completions need no template: {}",
        first.body
    );

    let (streamed, refused, refused_after) = std::thread::scope(|scope| {
        let streaming = scope.spawn(|| {
            server.post(
                "/v1/chat/completions",
                &chat_body("Count from one to forty.", 60, true),
            )
        });
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        let refused = server.post(
            "/v1/chat/completions",
            &json!({"model": "hostile", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
        );
        let refused_after = started.elapsed();
        (
            streaming.join().expect("streaming client"),
            refused,
            refused_after,
        )
    });
    assert_eq!(refused.status, 400, "{}", refused.body);
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("chat template"), "{message}");
    assert!(
        refused_after < Duration::from_secs(8),
        "refused after {refused_after:?}"
    );

    assert_eq!(streamed.status, 200, "{}", streamed.body);
    assert!(
        streamed.body.contains("[DONE]"),
        "the stream finished: {}",
        streamed.body
    );
    assert_eq!(server.get("/health").status, 200);
    let again = server.post("/v1/chat/completions", &chat_body("hi", 2, false));
    assert_eq!(again.status, 200, "{}", again.body);
}

/// T-G3: 100,000 messages, or one message with 100,000 tool calls, cannot
/// fit any context: refused before the template sees them, within seconds (a quarter of a second on an idle
/// machine; the bound leaves room for a loaded 2-core CI runner), by either API.
#[test]
fn a_hundred_thousand_messages_are_refused_at_once() {
    let server = Server::start(&[]);
    server.warm_up();
    let messages: Vec<serde_json::Value> = (0..100_000)
        .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": "hi"}))
        .collect();
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": MODEL, "messages": messages, "max_tokens": 2}),
        ),
        (
            "/api/chat",
            json!({"model": MODEL, "messages": messages, "stream": false}),
        ),
    ] {
        let started = Instant::now();
        let reply = server.post(path, &body);
        assert_eq!(reply.status, 400, "{path}: {}", reply.body);
        assert!(
            reply.body.contains("100000 messages") && reply.body.contains("cannot fit"),
            "{path}: {}",
            reply.body
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{path}: refused after {:?}",
            started.elapsed()
        );
    }
    // One message with 100,000 calls: each renders at least its name.
    let calls = vec![json!({"function": {"name": "f", "arguments": {}}}); 100_000];
    let started = Instant::now();
    let reply = server.post(
        "/api/chat",
        &json!({"model": MODEL, "stream": false,
                "messages": [{"role": "assistant", "content": "", "tool_calls": calls}]}),
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.contains("100000 tool calls"), "{}", reply.body);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "refused after {:?}",
        started.elapsed()
    );
    let fine = server.post("/v1/chat/completions", &chat_body("hi", 2, false));
    assert_eq!(fine.status, 200, "{}", fine.body);
}

/// A schema pattern of nested alternations is refused with 400 before it
/// reaches the model's worker.
#[test]
fn a_pattern_of_nested_alternations_is_refused() {
    let server = Server::start(&[]);
    let schema = json!({"type": "object", "properties": {"x": {"type": "string", "pattern": format!("^{}$", crate::common::nested_alternations(10))}}});
    let started = Instant::now();
    let reply = server.post(
        "/v1/chat/completions",
        &json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        }),
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.contains("alternatives"), "{}", reply.body);
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// `/health` answers 503 naming the model while one decode step runs past
/// the stall limit (a long prompt's chunk on one thread, with a limit of
/// 50 ms), and 200 again once the model makes progress.
#[test]
fn health_reports_a_model_that_stops_making_progress() {
    let server = Server::start(&["-c", "2048", "--stall-limit-ms", "50"]);
    server.warm_up();
    assert_eq!(server.get("/health").status, 200);
    let long_prompt = "The quick brown fox jumps over the lazy dog. ".repeat(60);
    let (stalled, reply) = std::thread::scope(|scope| {
        let request =
            scope.spawn(|| server.post("/v1/chat/completions", &chat_body(&long_prompt, 2, false)));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut stalled = None;
        while Instant::now() < deadline && !request.is_finished() {
            let health = server.get("/health");
            if health.status == 503 {
                stalled = Some(health.body);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (stalled, request.join().expect("request thread"))
    });
    let body = stalled.expect("/health said 503 during the long step");
    assert!(body.contains("stalled") && body.contains(MODEL), "{body}");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.get("/health").status != 200 {
        assert!(Instant::now() < deadline, "healthy again once idle");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `keep_alive` longer than a century means "forever"; `/api/ps` still
/// answers (it used to overflow adding it to the clock).
#[test]
fn an_enormous_keep_alive_is_forever() {
    let server = Server::start(&[]);
    let reply = server.post(
        "/api/generate",
        &json!({"model": MODEL, "prompt": "hi", "stream": false, "keep_alive": 1.8e19, "options": {"num_predict": 1}}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let ps = server.get("/api/ps");
    assert_eq!(ps.status, 200, "{}", ps.body);
    assert!(ps.body.contains(MODEL), "{}", ps.body);
}

/// An embedding input is bounded by the server's context, not the model's
/// trained one (SmolLM2's is 8,192 tokens; llama.cpp computes logits for
/// every token of an embedding, 8 bytes per token and vocabulary entry):
/// past it, 400 naming the limit, or (Ollama's `truncate`, its default) the
/// first tokens only; and the worker still embeds afterwards.
#[test]
fn an_embedding_input_is_bounded_by_the_servers_context() {
    let server = Server::start(&["-c", "256"]);
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(100);
    let refused = server.post("/v1/embeddings", &json!({"model": MODEL, "input": long}));
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("256"), "{}", refused.body);
    let truncated = server.post("/api/embed", &json!({"model": MODEL, "input": long}));
    assert_eq!(truncated.status, 200, "{}", truncated.body);
    let truncated = truncated.json();
    assert_eq!(
        truncated["prompt_eval_count"].as_u64(),
        Some(256),
        "cut to the context: {truncated}"
    );
    let short = server.post("/api/embed", &json!({"model": MODEL, "input": "a fox"}));
    assert_eq!(short.status, 200, "{}", short.body);
}

/// Pre-tokenizers that llama.cpp runs with `std::regex` (GPT-2's
/// `default`, also `gpt-4o`, `llama4`, `tekken`, `deepseek-v3`…) recurse
/// once per character of a match: 10,000 `!` in a message overflow a
/// preparing thread's stack and killed the model's worker with every
/// request in it (`olm run` fell over at about 25,000). Now such a run is
/// tokenized on a stack sized for it, and one past the limit is a 400.
#[test]
fn a_long_run_of_one_character_does_not_overflow_the_stack() {
    let directory = tempfile::tempdir().expect("temp dir");
    let model = model_with_metadata(
        directory.path(),
        "pre-default",
        "tokenizer.ggml.pre",
        "default",
    );
    let server = Server::start(&[model.to_str().expect("utf-8 path"), "-c", "2048"]);
    let ask = |content: String, max_tokens: u32| {
        server.post(
            "/v1/chat/completions",
            &json!({
                "model": "pre-default",
                "messages": [{"role": "user", "content": content}],
                "max_tokens": max_tokens,
            }),
        )
    };
    // Tokenized whole (then too long for the context), not a crash.
    let long = ask("!".repeat(40_000), 1);
    assert_eq!(long.status, 400, "{}", long.body);
    assert!(
        long.body.contains("context length exceeded"),
        "{}",
        long.body
    );
    let too_long = ask("!".repeat(300_000), 1);
    assert_eq!(too_long.status, 400, "{}", too_long.body);
    assert!(
        too_long.body.contains("characters in a row"),
        "{}",
        too_long.body
    );
    let after = ask("Say hi".into(), 4);
    assert_eq!(
        after.status, 200,
        "the worker still answers: {}",
        after.body
    );

    let run = crate::common::run(
        crate::common::TestEnv::new()
            .olm()
            .arg("run")
            .arg(&model)
            .args(["--raw", "-n", "1", "--no-cache", "-c", "1024"])
            .arg("!".repeat(60_000)),
    );
    let stderr = crate::common::stderr(&run);
    assert!(stderr.contains("context length exceeded"), "{stderr}");
}
