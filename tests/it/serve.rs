//! `olm serve`: both APIs over plain HTTP, batching under load, limits,
//! access control, cancellation and shutdown (security-tests.md D and E),
//! plus the real `openai` and `ollama` Python clients (tests/python).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::server::{
    chat_body, connect, http, parse_reply, pytest, send_request, sse_events, Reply, Server, MODEL,
};
use crate::common::{smollm2, TestEnv};

/// The text of an OpenAI chat stream, checking it ends with `[DONE]`.
fn streamed_chat_text(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.body);
    let events = sse_events(&reply.body);
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{}",
        reply.body
    );
    events[..events.len() - 1]
        .iter()
        .map(|event| serde_json::from_str::<Value>(event).expect("chunk is JSON"))
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[test]
fn openai_chat_completions_models_and_json_schema() {
    let server = Server::start(&[]);

    let models = server.get("/v1/models").json();
    assert_eq!(models["object"], "list");
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|model| model["id"] == MODEL),
        "{models}"
    );

    let reply = server.post(
        "/v1/chat/completions",
        &chat_body("Name three colors.", 16, false),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer = reply.json();
    assert_eq!(answer["object"], "chat.completion");
    assert!(
        !answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty(),
        "{answer}"
    );
    assert!(
        answer["usage"]["prompt_tokens"].as_u64().unwrap() > 0,
        "{answer}"
    );
    assert!(
        answer["usage"]["completion_tokens"].as_u64().unwrap() <= 16,
        "{answer}"
    );

    let mut body = chat_body("Name three colors.", 16, true);
    body["stream_options"] = json!({"include_usage": true});
    let reply = server.post("/v1/chat/completions", &body);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    let streamed = streamed_chat_text(&reply);
    assert_eq!(
        streamed, answer["choices"][0]["message"]["content"],
        "greedy: stream and non-stream agree"
    );
    let events = sse_events(&reply.body);
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).expect("usage chunk");
    assert_eq!(
        usage["usage"]["completion_tokens"], answer["usage"]["completion_tokens"],
        "{usage}"
    );

    let reply = server.post(
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "The sky is", "max_tokens": 8, "temperature": 0}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let completion = reply.json();
    assert_eq!(completion["object"], "text_completion");
    assert!(
        !completion["choices"][0]["text"]
            .as_str()
            .unwrap()
            .is_empty(),
        "{completion}"
    );

    let mut body = chat_body("Describe a person as JSON.", 64, false);
    body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "person", "schema": {
        "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]
    }}});
    let reply = server.post("/v1/chat/completions", &body);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let content = reply.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    let person: Value = serde_json::from_str(&content)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {content}"));
    assert!(
        person["name"].is_string() && person["age"].is_i64(),
        "{person}"
    );
}

#[test]
fn ollama_chat_generate_tags_show_ps_version() {
    let server = Server::start(&[]);

    let reply = server.post("/api/chat", &json!({
        "model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "options": {"num_predict": 8, "temperature": 0}
    }));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<Value> = reply
        .body
        .lines()
        .map(|line| serde_json::from_str(line).expect("NDJSON line"))
        .collect();
    let last = lines.last().expect("at least one line");
    assert_eq!(last["done"], true, "{last}");
    assert!(last["eval_count"].as_u64().unwrap() > 0, "{last}");
    let text: String = lines
        .iter()
        .filter_map(|line| line["message"]["content"].as_str())
        .collect();
    assert!(!text.is_empty(), "{}", reply.body);

    let reply = server.post("/api/generate", &json!({"model": MODEL, "prompt": "Say hello.", "stream": false, "options": {"num_predict": 8}}));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let generated = reply.json();
    assert_eq!(generated["done"], true);
    assert!(
        !generated["response"].as_str().unwrap().is_empty(),
        "{generated}"
    );

    let tags = server.get("/api/tags").json();
    assert_eq!(tags["models"][0]["name"], MODEL, "{tags}");
    assert_eq!(tags["models"][0]["details"]["family"], "llama", "{tags}");

    let show = server.post("/api/show", &json!({"model": MODEL})).json();
    assert_eq!(show["details"]["quantization_level"], "Q4_1", "{show}");
    assert!(
        show["template"].as_str().unwrap().contains("im_start"),
        "{show}"
    );

    let ps = server.get("/api/ps").json();
    assert_eq!(ps["models"][0]["name"], MODEL, "{ps}");
    assert_eq!(
        server.get("/api/version").json()["version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(server.get("/health").status, 200);
}

/// 8 streaming clients on 4 sequences: all are served, by one batched loop.
#[test]
fn eight_concurrent_streams_on_four_sequences_all_finish() {
    let server = Server::start(&["--parallel", "4"]);
    let port = server.port;
    let host = server.host();
    let clients: Vec<_> = (0..8)
        .map(|index| {
            let host = host.clone();
            std::thread::spawn(move || {
                let body = chat_body(
                    &format!("Write a sentence about the number {index}."),
                    24,
                    true,
                )
                .to_string();
                http(
                    port,
                    "POST",
                    "/v1/chat/completions",
                    &[("Host", &host)],
                    &body,
                )
            })
        })
        .collect();
    for client in clients {
        let reply = client.join().expect("client thread");
        let text = streamed_chat_text(&reply);
        assert!(!text.trim().is_empty(), "empty answer: {}", reply.body);
    }
    let finished = format!("olm_requests_finished_total{{model=\"{MODEL}\"}} 8");
    let idle = format!("olm_active_sequences{{model=\"{MODEL}\"}} 0");
    server.wait_for_metrics(&[&finished, &idle]);
}

/// T-D4, T-D5: each bad request gets a 4xx in its API's shape.
#[test]
fn bad_requests_get_their_status_in_each_api_shape() {
    let server = Server::start(&["--max-body-mib", "1"]);

    let reply = server.request("POST", "/v1/chat/completions", &[], "{\"model\": ");
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        reply.json()["error"]["message"].is_string(),
        "OpenAI shape: {}",
        reply.body
    );
    let reply = server.request("POST", "/api/chat", &[], "not json");
    assert_eq!(reply.status, 400);
    assert!(
        reply.json()["error"].is_string(),
        "Ollama shape: {}",
        reply.body
    );

    let mut unknown = chat_body("hi", 4, false);
    unknown["model"] = json!("no-such-model");
    assert_eq!(server.post("/v1/chat/completions", &unknown).status, 404);
    assert_eq!(
        server
            .post("/api/show", &json!({"model": "no-such-model"}))
            .status,
        404
    );
    for path in ["/etc/passwd", "../../x", smollm2().to_str().unwrap()] {
        unknown["model"] = json!(path);
        let status = server.post("/v1/chat/completions", &unknown).status;
        assert!(
            status == 400 || status == 404,
            "a path as model must be refused: {path} -> {status}"
        );
    }

    for bad in [
        json!({"max_tokens": 0}),
        json!({"temperature": -1}),
        json!({"messages": "x"}),
        json!({"messages": []}),
        json!({"n": 1000}),
    ] {
        let mut body = chat_body("hi", 4, false);
        for (key, value) in bad.as_object().unwrap() {
            body[key] = value.clone();
        }
        assert_eq!(
            server.post("/v1/chat/completions", &body).status,
            400,
            "{bad}"
        );
    }

    let long_prompt = "word ".repeat(2000);
    let reply = server.post("/v1/chat/completions", &chat_body(&long_prompt, 4, false));
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        reply.body.contains("context length exceeded"),
        "{}",
        reply.body
    );

    // 413 from Content-Length alone, before the body is read.
    let mut stream = connect(server.port);
    let head = format!("POST /v1/chat/completions HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 67108864\r\nConnection: close\r\n\r\n{{", server.host());
    stream.write_all(head.as_bytes()).expect("send head");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    assert_eq!(parse_reply(&raw).status, 413);
    assert_eq!(server.get("/health").status, 200, "still healthy");
}

/// T-D2, T-D3: DNS rebinding and cross-site requests are refused.
#[test]
fn foreign_hosts_and_origins_are_refused() {
    let server = Server::start(&["--cors-origin", "http://localhost:3000"]);
    for host in [
        "evil.example:11435",
        "127.0.0.1.nip.io",
        "attacker.localhost",
        ":11435",
    ] {
        let reply = http(server.port, "GET", "/health", &[("Host", host)], "");
        assert_eq!(reply.status, 403, "Host {host}");
    }
    for host in [
        format!("localhost:{}", server.port),
        format!("[::1]:{}", server.port),
    ] {
        assert_eq!(
            http(server.port, "GET", "/health", &[("Host", &host)], "").status,
            200,
            "Host {host}"
        );
    }

    let simple = [
        ("Origin", "https://evil.example"),
        ("Content-Type", "text/plain"),
    ];
    let reply = server.request(
        "POST",
        "/v1/chat/completions",
        &simple,
        &chat_body("hi", 4, false).to_string(),
    );
    assert_eq!(reply.status, 403, "{}", reply.body);
    let preflight = server.request(
        "OPTIONS",
        "/v1/chat/completions",
        &[("Origin", "https://evil.example")],
        "",
    );
    assert_eq!(preflight.status, 403);
    assert_eq!(preflight.header("access-control-allow-origin"), None);

    let allowed = server.request(
        "OPTIONS",
        "/v1/chat/completions",
        &[("Origin", "http://localhost:3000")],
        "",
    );
    assert_eq!(allowed.status, 204);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    let reply = server.request(
        "GET",
        "/v1/models",
        &[("Origin", "http://localhost:3000")],
        "",
    );
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
}

/// T-D1: with a key, every route but /health needs it.
#[test]
fn api_key_is_required_on_every_route_but_health() {
    let server = Server::start(&["--api-key", "sesame"]);
    for (path, headers) in [
        ("/v1/models", vec![]),
        ("/v1/models", vec![("Authorization", "Bearer wrong")]),
        ("/v1/models", vec![("Authorization", "Bearer ")]),
        ("/api/tags", vec![]),
        ("/metrics", vec![]),
    ] {
        let reply = server.request("GET", path, &headers, "");
        assert_eq!(reply.status, 401, "{path} {headers:?}");
        assert!(
            reply.json()["error"].is_object() || path.starts_with("/api/"),
            "{}",
            reply.body
        );
    }
    assert_eq!(
        server
            .request(
                "GET",
                "/v1/models",
                &[("Authorization", "Bearer sesame")],
                ""
            )
            .status,
        200
    );
    assert_eq!(server.get("/health").status, 200);
}

#[test]
fn network_bind_without_a_key_is_refused() {
    let env = TestEnv::new();
    let output = crate::common::run(
        env.olm()
            .args(["serve", "--host", "0.0.0.0", "--port", "0"]),
    );
    crate::common::assert_exit(&output, 2);
    assert!(
        crate::common::stderr(&output).contains("API key"),
        "{}",
        crate::common::stderr(&output)
    );
}

/// T-E4: beyond the sequences and the queue, 503 with Retry-After at once.
#[test]
fn full_queue_answers_503_with_retry_after() {
    let server = Server::start(&["--parallel", "1", "--max-queue", "1"]);
    // Load the model first, so all requests below meet a running scheduler.
    assert_eq!(
        server
            .post("/v1/chat/completions", &chat_body("hi", 1, false))
            .status,
        200
    );
    let port = server.port;
    let host = server.host();
    let clients: Vec<_> = (0..5)
        .map(|_| {
            let host = host.clone();
            std::thread::spawn(move || {
                let body = chat_body("Count to one hundred.", 48, false).to_string();
                http(
                    port,
                    "POST",
                    "/v1/chat/completions",
                    &[("Host", &host)],
                    &body,
                )
            })
        })
        .collect();
    let replies: Vec<Reply> = clients
        .into_iter()
        .map(|client| client.join().expect("client"))
        .collect();
    let busy: Vec<&Reply> = replies.iter().filter(|reply| reply.status == 503).collect();
    let served = replies.iter().filter(|reply| reply.status == 200).count();
    assert!(!busy.is_empty(), "expected some 503: {replies:?}");
    assert!(
        served >= 2,
        "one running plus one queued are served: {replies:?}"
    );
    assert_eq!(busy[0].header("retry-after"), Some("1"));
    assert!(busy[0].json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("busy"));
}

/// T-E3: a client that goes away frees its sequence; the next request runs.
#[test]
fn disconnected_client_frees_its_sequence() {
    let server = Server::start(&["--parallel", "1", "-c", "2048"]);
    let mut stream = connect(server.port);
    let body = json!({"model": MODEL, "prompt": "Once upon a time", "max_tokens": 1900, "stream": true, "temperature": 1.0, "seed": 1}).to_string();
    let host = server.host();
    send_request(
        &mut stream,
        "POST",
        "/v1/completions",
        &[("Host", &host)],
        &body,
    );
    let mut first = [0u8; 256];
    let read = stream.read(&mut first).expect("first bytes of the stream");
    assert!(
        String::from_utf8_lossy(&first[..read]).contains("200"),
        "stream started"
    );
    drop(stream);

    let started = Instant::now();
    let reply = server.post("/v1/chat/completions", &chat_body("hi", 4, false));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the slot was not freed: {:?}",
        started.elapsed()
    );
    server.wait_for_metrics(&[&format!(
        "olm_requests_cancelled_total{{model=\"{MODEL}\"}} 1"
    )]);
}

/// T-E6: SIGTERM lets the server finish and exit 0.
#[test]
fn sigterm_exits_zero() {
    let mut server = Server::start(&[]);
    assert_eq!(server.get("/health").status, 200);
    server.signal(libc::SIGTERM);
    let status = server.wait_for_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// The real `openai` and `ollama` Python packages against `olm serve`
/// (tests/python; the clients are installed by scripts/setup-python-clients.sh).
#[test]
fn python_openai_and_ollama_clients() {
    let server = Server::start(&["--parallel", "2"]);
    pytest(server.port, None, &[("OLM_MODEL", MODEL)]);
}

#[test]
fn a_repeated_prompt_reuses_the_cached_prefix() {
    let server = Server::start(&[]);
    let first = server.post(
        "/v1/chat/completions",
        &chat_body("Tell me about the moon.", 8, false),
    );
    assert_eq!(first.status, 200, "{}", first.body);
    let first = first.json();
    assert_eq!(
        first["usage"]["prompt_tokens_details"]["cached_tokens"], 0,
        "{first}"
    );
    let second = server
        .post(
            "/v1/chat/completions",
            &chat_body("Tell me about the moon.", 8, false),
        )
        .json();
    let prompt_tokens = second["usage"]["prompt_tokens"].as_u64().unwrap();
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert_eq!(
        cached,
        prompt_tokens - 1,
        "all but the last prompt token come from the cache: {second}"
    );
    assert_eq!(
        second["choices"][0]["message"]["content"], first["choices"][0]["message"]["content"],
        "same greedy answer"
    );
}

/// The pid of the worker process running the model (the server's only child).
fn worker_pid(server: &Server) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = server.worker_pids();
        if let [pid] = pids[..] {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "expected one worker process, found {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 6 / T-E5: each model runs in a worker process. Killing it with
/// SIGKILL mid-request fails that request with a 500 that says so; the
/// server stays up and the next request loads the model again.
#[test]
fn a_killed_worker_fails_its_request_and_the_model_is_reloaded() {
    let server = Server::start(&["--parallel", "2", "-c", "2048"]);
    let warm = server.post("/v1/chat/completions", &chat_body("hi", 2, false));
    assert_eq!(warm.status, 200, "{}", warm.body);
    let worker = worker_pid(&server);

    // A long streaming answer, and a non-streaming one beside it.
    let mut stream = connect(server.port);
    let host = server.host();
    let body = json!({"model": MODEL, "prompt": "Once upon a time", "max_tokens": 1900,
        "stream": true, "temperature": 1.0, "seed": 1})
    .to_string();
    send_request(
        &mut stream,
        "POST",
        "/v1/completions",
        &[("Host", &host)],
        &body,
    );
    let mut first = [0u8; 512];
    let read = stream.read(&mut first).expect("first bytes of the stream");
    assert!(String::from_utf8_lossy(&first[..read]).contains("200 OK"));
    let port = server.port;
    let host_for_thread = host.clone();
    let waiting = std::thread::spawn(move || {
        let body = json!({"model": MODEL, "prompt": "Once upon a time", "max_tokens": 1900,
            "temperature": 1.0, "seed": 2})
        .to_string();
        http(
            port,
            "POST",
            "/v1/completions",
            &[("Host", &host_for_thread)],
            &body,
        )
    });
    std::thread::sleep(Duration::from_millis(300));

    // SAFETY: kill(2) on a pid we just read from /proc.
    assert_eq!(
        unsafe { libc::kill(i32::try_from(worker).expect("pid"), libc::SIGKILL) },
        0
    );
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).expect("the stream ends");
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.contains("worker process was killed by signal 9"),
        "the stream ends with an error event naming the crash: {rest}"
    );
    let waited = waiting.join().expect("request thread");
    assert_eq!(waited.status, 500, "{}", waited.body);
    assert!(
        waited.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("will be loaded again"),
        "{}",
        waited.body
    );

    assert_eq!(server.get("/health").status, 200);
    let again = server.post("/v1/chat/completions", &chat_body("hi", 4, false));
    assert_eq!(
        again.status, 200,
        "the model is loaded again: {}",
        again.body
    );
    assert_ne!(worker_pid(&server), worker, "a new worker process");
}

/// T-E5: a file that makes llama.cpp abort while loading (olm's GGUF check
/// switched off by the test flag) gets a 5xx naming the crash; the server
/// and the other model keep working.
#[test]
fn a_model_that_crashes_llama_cpp_while_loading_is_contained() {
    let crash_dir = tempfile::tempdir().expect("temp dir");
    let crasher = crash_dir.path().join("crasher.gguf");
    write_llama_cpp_crasher(&crasher);
    let crasher_arg = crasher.to_str().expect("utf-8 path");
    let server = Server::start_with_env(&[crasher_arg], &[("OLM_TEST_SKIP_GGUF_CHECK", "1")]);

    let crashed = server.post(
        "/v1/chat/completions",
        &json!({"model": "crasher", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
    );
    assert!(crashed.status >= 500, "{} {}", crashed.status, crashed.body);
    let message = crashed.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("crashed while loading") && message.contains("signal"),
        "{message}"
    );
    assert_eq!(server.get("/health").status, 200);
    let fine = server.post("/v1/chat/completions", &chat_body("hi", 4, false));
    assert_eq!(
        fine.status, 200,
        "the other model still answers: {}",
        fine.body
    );
}

/// A GGUF file that passes llama.cpp's own parsing but makes it abort in a
/// `GGML_ASSERT` while loading: see `crashing_gguf_for_llama_cpp` in
/// src/gguf/samples.rs for which assertion it trips.
fn write_llama_cpp_crasher(path: &std::path::Path) {
    olm::gguf::samples::llama_cpp_crasher()
        .write_to(path)
        .expect("write the crashing file");
}

/// `/v1/embeddings` (float and base64) and Ollama's `/api/embed` and
/// `/api/embeddings`: one unit vector per input, the same text gives the
/// same vector, different texts differ, bad inputs are 400.
#[test]
fn embeddings_in_both_apis() {
    let server = Server::start(&[]);
    let reply = server.post(
        "/v1/embeddings",
        &json!({"model": MODEL, "input": ["The cat sat on the mat.", "Stock markets fell today.", "The cat sat on the mat."]}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = reply.json();
    let vectors: Vec<Vec<f64>> = reply["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| serde_json::from_value(item["embedding"].clone()).unwrap())
        .collect();
    assert_eq!(vectors.len(), 3);
    assert_eq!(vectors[0].len(), 576, "SmolLM2-135M's embedding width");
    for vector in &vectors {
        let norm: f64 = vector.iter().map(|value| value * value).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "unit length: {norm}");
    }
    let cosine = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    assert!(
        cosine(&vectors[0], &vectors[2]) > 0.9999,
        "same text, same vector"
    );
    assert!(
        cosine(&vectors[0], &vectors[1]) < 0.999,
        "different texts differ"
    );
    assert!(
        reply["usage"]["prompt_tokens"].as_u64().unwrap() > 6,
        "{reply}"
    );

    let base64 = server
        .post(
            "/v1/embeddings",
            &json!({"model": MODEL, "input": "The cat sat on the mat.", "encoding_format": "base64", "dimensions": 64}),
        )
        .json();
    let encoded = base64["data"][0]["embedding"]
        .as_str()
        .expect("base64 text");
    // 64 little-endian f32 values are 256 bytes: 344 base64 characters.
    assert_eq!(encoded.len(), 344, "{encoded}");

    let ollama = server
        .post(
            "/api/embed",
            &json!({"model": MODEL, "input": ["The cat sat on the mat.", "Stock markets fell today."]}),
        )
        .json();
    let first: Vec<f64> = serde_json::from_value(ollama["embeddings"][0].clone()).unwrap();
    assert!(
        cosine(&first, &vectors[0]) > 0.9999,
        "both APIs agree: {ollama}"
    );
    assert!(ollama["prompt_eval_count"].as_u64().unwrap() > 0);
    let legacy = server
        .post(
            "/api/embeddings",
            &json!({"model": MODEL, "prompt": "The cat sat on the mat."}),
        )
        .json();
    assert_eq!(
        legacy["embedding"].as_array().map(Vec::len),
        Some(576),
        "{legacy}"
    );

    for (path, body) in [
        (
            "/v1/embeddings",
            json!({"model": MODEL, "input": [[1, 2, 3]]}),
        ),
        ("/v1/embeddings", json!({"model": MODEL, "input": []})),
        (
            "/v1/embeddings",
            json!({"model": MODEL, "input": "x", "encoding_format": "int8"}),
        ),
        ("/api/embed", json!({"model": MODEL, "input": [-1]})),
        (
            "/api/embed",
            json!({"model": MODEL, "input": "x", "dimensions": -3}),
        ),
    ] {
        let reply = server.post(path, &body);
        assert_eq!(reply.status, 400, "{path} {body}: {}", reply.body);
    }
    // A field olm does not honour is refused by name, never dropped; the
    // one OpenAI field ignored on purpose (`user`) is accepted.
    for (path, body, field) in [
        (
            "/v1/embeddings",
            json!({"model": MODEL, "input": "x", "truncate_prompt_tokens": 4}),
            "truncate_prompt_tokens",
        ),
        (
            "/api/embed",
            json!({"model": MODEL, "input": "x", "options": {"num_ctx": 64}}),
            "options",
        ),
        (
            "/api/embeddings",
            json!({"model": MODEL, "prompt": "x", "options": {"temperature": 0}}),
            "options",
        ),
    ] {
        let reply = server.post(path, &body);
        assert_eq!(reply.status, 400, "{path} {body}: {}", reply.body);
        assert!(reply.body.contains(field), "{path}: {}", reply.body);
    }
    let with_user = server.post(
        "/v1/embeddings",
        &json!({"model": MODEL, "input": "x", "user": "someone"}),
    );
    assert_eq!(with_user.status, 200, "{}", with_user.body);
    let unknown = server.post(
        "/v1/embeddings",
        &json!({"model": "no-such-model", "input": "x"}),
    );
    assert_eq!(unknown.status, 404, "{}", unknown.body);
}

/// Ollama's `keep_alive`: `-1` keeps a model loaded (far-future
/// `expires_at`), `0` with no prompt unloads it at once.
#[test]
fn keep_alive_keeps_or_unloads_a_model() {
    let server = Server::start(&[]);
    let loaded = server
        .post("/api/generate", &json!({"model": MODEL, "keep_alive": -1}))
        .json();
    assert_eq!(loaded["done_reason"], "load", "{loaded}");
    let ps = server.get("/api/ps").json();
    let expires = ps["models"][0]["expires_at"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(expires.starts_with("9999-"), "{ps}");
    let worker = worker_pid(&server);

    let unloaded = server
        .post("/api/generate", &json!({"model": MODEL, "keep_alive": 0}))
        .json();
    assert_eq!(unloaded["done_reason"], "unload", "{unloaded}");
    let ps = server.get("/api/ps").json();
    assert_eq!(ps["models"].as_array().map(Vec::len), Some(0), "{ps}");
    // The worker process is gone too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{worker}")).exists()
        && std::fs::read_to_string(format!("/proc/{worker}/stat"))
            .map(|stat| !stat.contains(") Z "))
            .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "worker {worker} still runs");
        std::thread::sleep(Duration::from_millis(50));
    }

    let short = server
        .post("/api/generate", &json!({"model": MODEL, "prompt": "hi", "stream": false, "keep_alive": "1s", "options": {"num_predict": 2}}))
        .json();
    assert_eq!(short["done"], true, "{short}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ps = server.get("/api/ps").json();
        if ps["models"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(Instant::now() < deadline, "not unloaded after 1s: {ps}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let bad = server.post(
        "/api/generate",
        &json!({"model": MODEL, "keep_alive": "soon"}),
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
}

/// `--max-loaded 1`: loading a second model first unloads the idle one (its
/// worker exits); asking for the first again loads it again.
#[test]
fn loading_past_max_loaded_unloads_the_least_recently_used_model() {
    let gemma = crate::common::gemma3();
    let server = Server::start(&["--max-loaded", "1", gemma.to_str().expect("utf-8 path")]);
    let gemma_name = "gemma-3-270m-q4_k_m";
    let loaded_names = || -> Vec<String> {
        server.get("/api/ps").json()["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|model| model["name"].as_str().unwrap().to_owned())
            .collect()
    };

    let first = server.post("/v1/chat/completions", &chat_body("hi", 2, false));
    assert_eq!(first.status, 200, "{}", first.body);
    let smollm_worker = worker_pid(&server);
    assert_eq!(loaded_names(), vec![MODEL.to_owned()]);

    let mut body = chat_body("hi", 2, false);
    body["model"] = json!(gemma_name);
    let second = server.post("/v1/chat/completions", &body);
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(loaded_names(), vec![gemma_name.to_owned()]);
    let gemma_worker = worker_pid(&server);
    assert_ne!(gemma_worker, smollm_worker, "SmolLM2's worker has exited");

    let again = server.post("/v1/chat/completions", &chat_body("hi", 2, false));
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(loaded_names(), vec![MODEL.to_owned()]);
}

/// A long counting completion, sent on a connection the caller may drop.
fn long_request(server: &Server, stream: bool) -> std::net::TcpStream {
    let mut connection = connect(server.port);
    let body = json!({"model": MODEL, "prompt": "1, 2, 3, 4, 5, 6,", "max_tokens": 1500,
        "stream": stream, "temperature": 0})
    .to_string();
    let host = server.host();
    send_request(
        &mut connection,
        "POST",
        "/v1/completions",
        &[("Host", &host)],
        &body,
    );
    connection
}

/// T-E3 with `stream: false`: a client that leaves while its answer is
/// being generated frees its sequence too, and one that leaves while it
/// waits in the queue is dropped from the queue without ever starting.
#[test]
fn non_streaming_and_queued_clients_that_leave_are_dropped() {
    let server = Server::start(&["--parallel", "1", "-c", "2048"]);
    let warm = server.post("/v1/chat/completions", &chat_body("hi", 2, false));
    assert_eq!(warm.status, 200, "{}", warm.body);
    let cancelled_before = server.metric("olm_requests_cancelled_total").unwrap_or(0);
    let generated_before = server.metric("olm_generated_tokens_total").unwrap_or(0);

    let running = long_request(&server, false);
    server.wait_for_metric("olm_active_sequences", 1, Duration::from_secs(10));
    // Its prompt is counted with its first token.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric("olm_generated_tokens_total").unwrap_or(0) <= generated_before {
        assert!(
            Instant::now() < deadline,
            "the running request never generated"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let queued = long_request(&server, false);
    server.wait_for_metric("olm_queue_depth", 1, Duration::from_secs(10));
    let prompt_tokens = server.metric("olm_prompt_tokens_total").unwrap_or(0);

    drop(queued);
    server.wait_for_metric("olm_queue_depth", 0, Duration::from_secs(10));
    assert_eq!(
        server.metric("olm_active_sequences"),
        Some(1),
        "the running request goes on"
    );
    drop(running);
    server.wait_for_metric("olm_active_sequences", 0, Duration::from_secs(10));
    server.wait_for_metric(
        "olm_requests_cancelled_total",
        cancelled_before + 2,
        Duration::from_secs(10),
    );
    assert_eq!(
        server.metric("olm_prompt_tokens_total"),
        Some(prompt_tokens),
        "the queued request never started"
    );
    let next = server.post("/v1/chat/completions", &chat_body("hi", 2, false));
    assert_eq!(next.status, 200, "{}", next.body);
}

/// OpenAI's `frequency_penalty` and `presence_penalty` (and Ollama's, with
/// `repeat_last_n`) change what is sampled; values out of range are 400.
#[test]
fn frequency_and_presence_penalties_take_effect() {
    let server = Server::start(&[]);
    let complete = |extra: Value| {
        let mut body =
            json!({"model": MODEL, "prompt": "1, 2, 3, 4, 5,", "max_tokens": 24, "temperature": 0});
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        let reply = server.post("/v1/completions", &body);
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["choices"][0]["text"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let plain = complete(json!({}));
    assert_ne!(
        complete(json!({"frequency_penalty": 2.0})),
        plain,
        "frequency_penalty changes the answer"
    );
    assert_ne!(
        complete(json!({"presence_penalty": 2.0})),
        plain,
        "presence_penalty changes the answer"
    );
    let ollama = |options: Value| {
        server.post(
            "/api/generate",
            &json!({"model": MODEL, "prompt": "1, 2, 3, 4, 5,", "raw": true, "stream": false,
                "options": options}),
        )
    };
    let plain_ollama =
        ollama(json!({"temperature": 0, "num_predict": 24})).json()["response"].clone();
    let penalized = ollama(
        json!({"temperature": 0, "num_predict": 24, "frequency_penalty": 2.0, "repeat_last_n": 64}),
    );
    assert_eq!(penalized.status, 200, "{}", penalized.body);
    assert_ne!(penalized.json()["response"], plain_ollama);

    for bad in [
        json!({"frequency_penalty": 3}),
        json!({"presence_penalty": -2.5}),
    ] {
        let mut body = json!({"model": MODEL, "prompt": "x", "max_tokens": 2});
        for (key, value) in bad.as_object().unwrap() {
            body[key] = value.clone();
        }
        assert_eq!(server.post("/v1/completions", &body).status, 400, "{bad}");
    }
    assert_eq!(ollama(json!({"repeat_last_n": -5})).status, 400);
}

/// A model file that stops being a usable GGUF after the server started
/// (here: overwritten with a hostile one) is refused at load with 422, by
/// the worker's own check, before llama.cpp sees it; the server goes on.
#[test]
fn a_model_file_broken_after_startup_is_refused_with_422() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tiny.gguf");
    let valid = olm::gguf::samples::valid()
        .into_iter()
        .find(|sample| sample.name == "valid-tiny")
        .expect("the valid-tiny sample");
    valid.write_to(&path).expect("write the sample");
    let server = Server::start(&[path.to_str().expect("utf-8 path")]);
    olm::gguf::samples::llama_cpp_crasher()
        .write_to(&path)
        .expect("overwrite the sample");

    let reply = server.post(
        "/v1/chat/completions",
        &json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
    );
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a usable GGUF file"),
        "{}",
        reply.body
    );
    let fine = server.post("/v1/chat/completions", &chat_body("hi", 2, false));
    assert_eq!(fine.status, 200, "{}", fine.body);
}
