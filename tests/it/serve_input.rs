//! `olm serve` against hostile input (security-tests.md T-D4, T-D6, T-D7,
//! T-G6): malformed and out-of-range requests, structured-output abuse,
//! forged log lines, malformed `Host` headers. Every one is refused
//! quickly, in the route's own error shape, before any model is loaded
//! (but an embedding `dimensions` past the model's own size, which its
//! vectors tell), and the server stays healthy.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::server::{connect, http, parse_reply, read_all, Reply, Server, MODEL};
use crate::common::{models_dir, smollm2};

/// SmolLM2's vocabulary size: the first token id it does not have.
const N_VOCAB: u32 = 49_152;

/// T-D4's bound on a refusal.
const QUICK: Duration = Duration::from_millis(100);

/// A POST of raw bytes (not necessarily UTF-8 or JSON) over a fresh connection.
fn post_bytes(server: &Server, path: &str, body: &[u8]) -> Reply {
    send_bytes(server, "POST", path, body)
}

/// A request of raw bytes with any method, over a fresh connection.
pub(crate) fn send_bytes(server: &Server, method: &str, path: &str, body: &[u8]) -> Reply {
    let mut stream = connect(server.port);
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        server.host(),
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("send head");
    stream.write_all(body).expect("send body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    parse_reply(&raw)
}

/// `base` with `fields` set (a field of `null` is removed).
pub(crate) fn with(base: &Value, fields: Value) -> Value {
    let mut body = base.clone();
    for (key, value) in fields.as_object().expect("fields are an object") {
        if value.is_null() {
            body.as_object_mut().expect("an object").remove(key);
        } else {
            body[key] = value.clone();
        }
    }
    body
}

/// Send `body` to `path` and check the refusal: one of `statuses`, within
/// [`QUICK`], in the route's error shape. Returns the error message.
#[track_caller]
pub(crate) fn refused(server: &Server, path: &str, body: &[u8], statuses: &[u16]) -> String {
    refused_by(server, "POST", path, body, statuses)
}

/// [`refused`] with any method.
#[track_caller]
pub(crate) fn refused_by(
    server: &Server,
    method: &str,
    path: &str,
    body: &[u8],
    statuses: &[u16],
) -> String {
    let started = Instant::now();
    let reply = send_bytes(server, method, path, body);
    let elapsed = started.elapsed();
    let shown = String::from_utf8_lossy(&body[..body.len().min(160)]).into_owned();
    assert!(
        statuses.contains(&reply.status),
        "{path} {shown}: expected {statuses:?}, got {} {}",
        reply.status,
        reply.body
    );
    assert!(elapsed < QUICK, "{path} {shown}: refused after {elapsed:?}");
    let error = reply.json()["error"].clone();
    let message = if path.starts_with("/api/") {
        error.as_str().map(str::to_owned)
    } else {
        assert!(error["type"].is_string(), "OpenAI shape: {}", reply.body);
        error["message"].as_str().map(str::to_owned)
    };
    message.unwrap_or_else(|| panic!("{path} {shown}: not the API's error shape: {}", reply.body))
}

/// After the barrage: still answering, and no model was loaded for any of it.
pub(crate) fn assert_healthy_and_idle(server: &mut Server) {
    assert_eq!(server.get("/health").status, 200);
    assert!(
        server.child.try_wait().expect("wait").is_none(),
        "the server died"
    );
    let metrics = server.get("/metrics").body;
    assert!(
        metrics.lines().any(|line| line == "olm_models_loaded 0"),
        "a refused request loaded a model:\n{metrics}"
    );
}

fn nested(depth: usize, open: &str, close: &str, leaf: &str) -> String {
    let mut text = open.repeat(depth);
    text.push_str(leaf);
    text.push_str(&close.repeat(depth));
    text
}

/// T-D4 on every generation route: each malformed or out-of-range request
/// gets its 4xx within 100 ms, and the server is unharmed.
#[test]
fn malformed_and_out_of_range_requests_are_refused_quickly() {
    let mut server = Server::start(&[]);
    let chat = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                      "max_tokens": 4, "temperature": 0});
    let completion = json!({"model": MODEL, "prompt": "hi", "max_tokens": 4, "temperature": 0});
    let ollama_chat = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                             "stream": false, "options": {"num_predict": 4}});
    let generate = json!({"model": MODEL, "prompt": "hi", "stream": false,
                          "options": {"num_predict": 4}});
    let routes = [
        ("/v1/chat/completions", &chat),
        ("/v1/completions", &completion),
        ("/api/chat", &ollama_chat),
        ("/api/generate", &generate),
    ];

    // Not JSON, cut short, not UTF-8: on every route.
    for (path, valid) in routes {
        let text = valid.to_string();
        let mut not_utf8 = text.clone().into_bytes();
        let model_at = text.find(MODEL).expect("the model is named");
        not_utf8[model_at] = 0xff;
        for body in [
            b"not json".to_vec(),
            Vec::new(),
            text.as_bytes()[..text.len() / 2].to_vec(),
            not_utf8,
            b"\xff\xfe{}".to_vec(),
        ] {
            refused(&server, path, &body, &[400]);
        }
    }

    // Nested 100,000 deep: in a field olm ignores (serde_json skips those
    // without counting levels, so olm counts them first), in one it keeps
    // as JSON (Ollama's format), in one it types, and as the whole body.
    let deep_array = nested(100_000, "[", "]", "");
    let deep_object = nested(100_000, "{\"a\":", "}", "1");
    for (path, valid) in routes {
        for deep in [&deep_array, &deep_object] {
            let text = valid.to_string();
            let fields = if path.starts_with("/api/") {
                vec!["unknown", "format"]
            } else {
                vec!["unknown"]
            };
            for field in fields {
                let body = format!(r#"{{"{field}": {deep}, {}"#, &text[1..]);
                let message = refused(&server, path, body.as_bytes(), &[400]);
                assert!(
                    message.contains("recursion limit"),
                    "{path} {field}: {message}"
                );
            }
            let body = format!(r#"{{"model": {deep}, {}"#, &text[1..]);
            refused(&server, path, body.as_bytes(), &[400]);
            refused(&server, path, deep.as_bytes(), &[400]);
        }
    }

    // Unknown models are 404; paths and URLs are never opened (400 or 404).
    let absolute = smollm2().to_str().expect("UTF-8 path").to_owned();
    for (path, valid) in routes {
        refused(
            &server,
            path,
            with(valid, json!({"model": "no-such-model"}))
                .to_string()
                .as_bytes(),
            &[404],
        );
        for name in [
            absolute.as_str(),
            "/etc/passwd",
            "../../../etc/passwd",
            "file:///etc/passwd",
            "https://evil.example/model.gguf",
            "http://127.0.0.1:1/x",
            "hf.co/../../etc/passwd",
            "C:\\Windows\\win.ini",
        ] {
            let body = with(valid, json!({ "model": name })).to_string();
            refused(&server, path, body.as_bytes(), &[400, 404]);
        }
    }

    // OpenAI's fields out of range, on both OpenAI routes.
    let vocab = N_VOCAB.to_string();
    let too_many_stops: Vec<String> = (0..10_000).map(|i| format!("stop{i}")).collect();
    for (path, valid) in &routes[..2] {
        for fields in [
            json!({"max_tokens": -1}),
            json!({"max_tokens": 0}),
            json!({"max_tokens": 9_223_372_036_854_775_808_u64}),
            json!({"max_completion_tokens": -1}),
            // Two limits that disagree: one of them would be ignored.
            json!({"max_tokens": 4, "max_completion_tokens": 8}),
            json!({"temperature": -1}),
            json!({"top_p": 1.5}),
            json!({"top_k": -5}),
            json!({"min_p": -0.5}),
            json!({"n": 1000}),
            json!({"n": -1}),
            json!({"stop": too_many_stops}),
            json!({"stop": "x".repeat(2000)}),
            json!({"seed": 9_223_372_036_854_775_808_u64}),
            // olm has no logit_bias: refused, whatever the token.
            json!({"logit_bias": {"-1": 100}}),
            json!({"logit_bias": {vocab.clone(): -100}}),
            json!({"logit_bias": {"0": 1}}),
        ] {
            let body = with(valid, fields.clone()).to_string();
            let message = refused(&server, path, body.as_bytes(), &[400]);
            if fields.get("logit_bias").is_some() {
                assert!(message.contains("logit_bias"), "{message}");
            }
        }
    }
    for fields in [
        json!({"messages": "x"}),
        json!({"messages": []}),
        json!({"messages": null}),
        json!({"messages": [{"role": "wizard", "content": "hi"}]}),
        json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
        json!({"model": null}),
        json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
    ] {
        let body = with(&chat, fields).to_string();
        refused(&server, "/v1/chat/completions", body.as_bytes(), &[400]);
    }
    for prompt in [
        json!([-1]),
        json!([N_VOCAB]),
        json!([[1, 2]]),
        json!(""),
        json!(7),
    ] {
        let body = with(&completion, json!({ "prompt": prompt })).to_string();
        let message = refused(&server, "/v1/completions", body.as_bytes(), &[400]);
        if prompt.is_array() {
            assert!(message.contains("prompt"), "{message}");
        }
    }

    // Ollama's options: counts its API gives no meaning, and the others.
    for (path, valid) in &routes[2..] {
        for options in [
            json!({"num_ctx": -5}),
            json!({"num_keep": -7}),
            json!({"n_keep": -7}),
            json!({"num_predict": -3}),
            json!({"num_predict": 0}),
            json!({"temperature": -1}),
            json!({"top_k": -5}),
            json!({"top_p": 2}),
            json!({"repeat_penalty": -1}),
            json!({"stop": too_many_stops}),
            json!({"stop": [""]}),
        ] {
            let name = options.as_object().unwrap().keys().next().unwrap().clone();
            let body = with(valid, json!({ "options": options })).to_string();
            let message = refused(&server, path, body.as_bytes(), &[400]);
            let named = name.replace("n_keep", "num_keep");
            assert!(
                message.contains(&named) || name == "stop",
                "{message} names no {named}"
            );
        }
        for fields in [
            json!({"keep_alive": "forever and a day"}),
            json!({"format": 7}),
            json!({"options": "x"}),
        ] {
            let body = with(valid, fields).to_string();
            refused(&server, path, body.as_bytes(), &[400]);
        }
    }
    refused(
        &server,
        "/api/chat",
        with(&ollama_chat, json!({"messages": "x"}))
            .to_string()
            .as_bytes(),
        &[400],
    );

    // Fields OpenAI refuses in these shapes, refused rather than ignored:
    // an empty stop string, stream_options without stream, a user turn
    // without content.
    for (path, valid) in &routes[..2] {
        for (fields, named) in [
            (json!({"stop": ["", "x"]}), "stop"),
            (
                json!({"stream_options": {"include_usage": true}}),
                "stream_options",
            ),
        ] {
            let body = with(valid, fields).to_string();
            let message = refused(&server, path, body.as_bytes(), &[400]);
            assert!(message.contains(named), "{message}");
        }
    }
    let body = with(
        &chat,
        json!({"messages": [{"role": "user", "content": null}]}),
    )
    .to_string();
    let message = refused(&server, "/v1/chat/completions", body.as_bytes(), &[400]);
    assert!(message.contains("content"), "{message}");

    assert_healthy_and_idle(&mut server);
}

/// T-D6: hostile `response_format.json_schema` and Ollama `format` schemas
/// are refused within a second, before llama.cpp turns them into grammars,
/// and the server's memory does not grow with them.
#[test]
fn hostile_json_schemas_are_refused_within_a_second() {
    let mut server = Server::start(&[]);
    let rss_before = rss_kib(server.child.id());
    let items = |depth: usize| {
        nested(
            depth,
            r#"{"type": "array", "items": "#,
            "}",
            r#"{"type": "string"}"#,
        )
    };
    let pattern = |pattern: String| json!({"type": "string", "pattern": pattern});
    let schemas: Vec<(Value, &str)> = vec![
        // Over serde_json's 128 levels: refused while the body is read.
        (
            serde_json::from_str(&items(100)).expect("100 levels still parse"),
            "nests deeper",
        ),
        (json!({"$ref": "#"}), "recursive"),
        (
            json!({"type": "object", "properties": {"next": {"$ref": "#"}}}),
            "recursive",
        ),
        (
            json!({"$defs": {"a": {"type": "array", "items": {"$ref": "#/$defs/b"}},
                             "b": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/a"}]}},
                   "$ref": "#/$defs/a"}),
            "recursive",
        ),
        (
            json!({"$ref": "https://evil.example/schema.json"}),
            "outside",
        ),
        (json!({"$ref": "file:///etc/passwd"}), "outside"),
        (pattern("^(a+)+$".repeat(1000)), "bytes"),
        (
            pattern(format!("^{}a{}$", "(".repeat(99), ")".repeat(99))),
            "groups",
        ),
        (pattern("^(a{2000}){2000}$".into()), "repeats"),
        (pattern("^a{1000000000}$".into()), "repeats"),
        (
            json!({"type": "string", "minLength": 4_000_000_000_u64}),
            "minLength",
        ),
        // 3000 optional properties kept llama.cpp's converter busy for
        // 40 s on a server thread.
        (
            json!({"type": "object", "properties": (0..3000)
                .map(|i| (format!("p{i}"), json!({"type": "string"})))
                .collect::<serde_json::Map<String, Value>>()}),
            "optional properties",
        ),
        // A long property name overflowed the stack of llama.cpp's
        // converter (its std::regex), which runs in the server process.
        (
            json!({"type": "object", "properties": {" ".repeat(100_000): {"type": "string"}},
                   "required": [" ".repeat(100_000)]}),
            "key is",
        ),
    ];
    let deep = items(10_000);
    let started = Instant::now();
    for (schema, why) in &schemas {
        let openai = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}});
        let ollama = json!({"model": MODEL, "prompt": "hi", "format": schema, "stream": false});
        for (path, body) in [("/v1/chat/completions", openai), ("/api/generate", ollama)] {
            let message = refused_within_a_second(&server, path, body.to_string().as_bytes());
            assert!(message.contains(why), "{path}: {why:?} not in {message:?}");
        }
    }
    // Nested 10,000 levels: past serde_json's recursion limit (128).
    let openai = format!(
        r#"{{"model": "{MODEL}", "messages": [{{"role": "user", "content": "hi"}}],
            "response_format": {{"type": "json_schema", "json_schema": {{"name": "x", "schema": {deep}}}}}}}"#
    );
    let ollama = format!(r#"{{"model": "{MODEL}", "prompt": "hi", "format": {deep}}}"#);
    for (path, body) in [("/v1/chat/completions", openai), ("/api/generate", ollama)] {
        let message = refused_within_a_second(&server, path, body.as_bytes());
        assert!(message.contains("recursion limit"), "{message}");
    }
    eprintln!(
        "{} hostile schemas refused in {:?}",
        schemas.len() * 2 + 2,
        started.elapsed()
    );

    let grown = rss_kib(server.child.id()).saturating_sub(rss_before);
    assert!(grown < 64 << 10, "the server grew by {grown} KiB");
    assert_healthy_and_idle(&mut server);
}

#[track_caller]
fn refused_within_a_second(server: &Server, path: &str, body: &[u8]) -> String {
    let started = Instant::now();
    let reply = post_bytes(server, path, body);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{path}: {:?}",
        started.elapsed()
    );
    assert_eq!(reply.status, 400, "{path}: {}", reply.body);
    let error = &reply.json()["error"];
    error
        .as_str()
        .or_else(|| error["message"].as_str())
        .unwrap_or_else(|| panic!("{path}: not the API's error shape: {}", reply.body))
        .to_owned()
}

/// Resident memory of a process, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// T-D7: input with `\r\n` in it cannot forge a log line, even with
/// `--verbose`, and no error a client gets names a path on the server or
/// the user running it.
#[test]
fn forged_log_lines_stay_escaped_and_errors_name_no_paths() {
    let server = Server::start(&["--verbose"]);
    let forged = "x\r\nFAKE LOG LINE\nFAKE LOG LINE";
    let chat = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    let requests: Vec<(&str, Value)> = vec![
        ("/v1/chat/completions", chat(forged)),
        ("/v1/completions", json!({"model": forged, "prompt": "hi"})),
        ("/v1/embeddings", json!({"model": forged, "input": "hi"})),
        ("/api/chat", json!({"model": forged, "messages": []})),
        ("/api/generate", json!({"model": forged, "prompt": "hi"})),
        ("/api/show", json!({"model": forged})),
        ("/api/embed", json!({"model": forged, "input": "hi"})),
        ("/api/pull", json!({"model": forged, "stream": false})),
        (
            "/api/pull",
            json!({"model": "qwen:x\r\nFAKE LOG LINE", "stream": false}),
        ),
        // Refused, or printed by llama.cpp as it is when it cannot enforce it.
        (
            "/v1/chat/completions",
            json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                   "max_tokens": 1, "response_format": {"type": "json_schema", "json_schema":
                   {"name": "x", "schema": {"type": "string", "pattern": "x\r\nFAKE LOG LINE"}}}}),
        ),
        ("/v1/chat/completions", chat("no-such-model")),
        ("/api/show", json!({"model": "no-such-model"})),
    ];
    let replies: Vec<Reply> = requests
        .iter()
        .map(|(path, body)| server.post(path, body))
        .collect();
    let delete = server.request(
        "DELETE",
        "/api/delete",
        &[],
        &json!({"model": forged}).to_string(),
    );
    assert!((400..500).contains(&delete.status), "{}", delete.body);
    // A header cannot carry a line break: the parser refuses the request
    // (400, or the connection closed), and nothing of it reaches a log.
    for header in [
        "X-Note: a\r\nFAKE LOG LINE: b",
        "X-Note: a\rFAKE LOG LINE",
        "X-Note: a\nFAKE LOG LINE",
    ] {
        let mut stream = connect(server.port);
        let request = format!(
            "GET /v1/models HTTP/1.1\r\nHost: {}\r\n{header}\r\nConnection: close\r\n\r\n",
            server.host()
        );
        stream.write_all(request.as_bytes()).expect("send request");
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        if !raw.is_empty() {
            assert_eq!(
                parse_reply(&raw).status,
                400,
                "{header:?}: {}",
                String::from_utf8_lossy(&raw)
            );
        }
    }

    // Let stderr catch up, then look for a line the client wrote.
    std::thread::sleep(Duration::from_millis(300));
    let lines = server.stderr_lines();
    assert!(
        lines.iter().all(|line| {
            let line = line.trim_start_matches('\r');
            !line.starts_with("FAKE LOG LINE") && !line.contains("\rFAKE LOG LINE")
        }),
        "a client forged a log line:\n{}",
        lines.join("\n")
    );

    let mut errors = Vec::new();
    for ((path, body), reply) in requests.iter().zip(replies) {
        assert!(
            (400..500).contains(&reply.status),
            "{path} {body}: {} {}",
            reply.status,
            reply.body
        );
        errors.push(reply.body);
    }
    let home = server.env.path().to_str().expect("UTF-8 path").to_owned();
    let models = models_dir().to_str().expect("UTF-8 path").to_owned();
    let user = std::env::var("USER").unwrap_or_default();
    errors.push(delete.body);
    for body in &errors {
        assert!(!body.contains(&home), "names the server's home: {body}");
        assert!(!body.contains(&models), "names a model directory: {body}");
        assert!(
            !body.contains("/home/") && !body.contains("/root"),
            "{body}"
        );
        if user.len() > 3 {
            assert!(!body.contains(&user), "names the user {user}: {body}");
        }
    }
}

/// One request exactly as written, over a fresh connection.
fn raw_request(port: u16, request: &str) -> Reply {
    let mut stream = connect(port);
    stream.write_all(request.as_bytes()).expect("send request");
    parse_reply(&read_all(&mut stream))
}

/// The message of an error reply, checked to be in the shape of `path`'s API.
#[track_caller]
fn error_message(path: &str, reply: &Reply) -> String {
    let error = &reply.json()["error"];
    let message = if path.starts_with("/api/") {
        error.as_str()
    } else {
        assert_eq!(
            error["type"], "invalid_request_error",
            "OpenAI shape: {}",
            reply.body
        );
        assert_eq!(error["code"], reply.status.to_string(), "{}", reply.body);
        error["message"].as_str()
    };
    message
        .unwrap_or_else(|| panic!("{path}: not the API's error shape: {}", reply.body))
        .to_owned()
}

/// Another client is served: the refusal before it left nothing behind.
#[track_caller]
fn another_client_is_served(server: &Server) {
    let reply = server.get("/v1/models");
    assert_eq!(reply.status, 200, "{}", reply.body);
}

/// T-G6 (RFC 9112 §3.2): no `Host` in HTTP/1.1, two of them, a malformed
/// one, or an absolute request target that names another host get 400 in
/// the route's error shape, on `/health` too, before the allowlist, the
/// API key or a handler; the connection is closed after it, and the next
/// client is served. Well-formed loopback hosts are served and well-formed
/// foreign ones still get the allowlist's 403 (T-D2).
#[test]
fn malformed_host_headers_are_refused_with_400() {
    let mut server = Server::start(&[]);
    let port = server.port;
    let malformed = [
        String::new(),
        format!("Host: 127.0.0.1:{port}\r\nHost: 127.0.0.1:{port}\r\n"),
        format!("Host: 127.0.0.1:{port}\r\nHost: evil.example\r\n"),
        format!("Host: evil.example\r\nHost: 127.0.0.1:{port}\r\n"),
        "Host: localhost:\r\n".to_owned(),
        "Host: [::1]:\r\n".to_owned(),
        "Host: localhost:abc\r\n".to_owned(),
        "Host: localhost:65536\r\n".to_owned(),
        "Host: localhost:99999\r\n".to_owned(),
        "Host: localhost:-1\r\n".to_owned(),
        format!("Host: localhost:{port}0\r\n"),
        format!("Host: localhost:{port}:{port}\r\n"),
        format!("Host: ::1:{port}\r\n"),
        format!("Host: [::1]x:{port}\r\n"),
        format!("Host: x[::1]:{port}\r\n"),
        format!("Host: [::1]:{port}]\r\n"),
        "Host: [::1\r\n".to_owned(),
        format!("Host: [localhost]:{port}\r\n"),
        format!("Host: user@localhost:{port}\r\n"),
        format!("Host: local host:{port}\r\n"),
    ];
    for path in ["/health", "/v1/models", "/api/tags"] {
        for head in &malformed {
            let reply = raw_request(
                port,
                &format!("GET {path} HTTP/1.1\r\n{head}Connection: keep-alive\r\n\r\n"),
            );
            assert_eq!(reply.status, 400, "{path} {head:?}: {}", reply.body);
            let message = error_message(path, &reply);
            assert!(message.contains("Host"), "{path} {head:?}: {message}");
            assert_eq!(reply.header("connection"), Some("close"), "{path} {head:?}");
            another_client_is_served(&server);
        }
    }

    // A compressed body is refused (415), not read as if it were plain.
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    for encoding in ["gzip", "br, gzip"] {
        let reply = raw_request(
            port,
            &format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
                 Content-Type: application/json\r\nContent-Encoding: {encoding}\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        );
        assert_eq!(reply.status, 415, "{encoding}: {}", reply.body);
        let message = error_message("/v1/chat/completions", &reply);
        assert!(message.contains("Content-Encoding"), "{message}");
    }

    // A route's wrong method: 405 in the error shape, with its Allow header.
    let reply = raw_request(
        port,
        &format!("PATCH /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(reply.status, 405, "{}", reply.body);
    assert!(error_message("/v1/chat/completions", &reply).contains("PATCH"));
    assert!(reply
        .header("allow")
        .is_some_and(|allow| allow.contains("POST")));

    // Absolute request targets: the authority must be the Host's.
    let host = format!("Host: 127.0.0.1:{port}\r\n");
    for target in [
        format!("http://evil.example:{port}/health"),
        format!("http://localhost:{port}/health"),
        format!("http://127.0.0.1:{}/health", port.wrapping_add(1)),
        "http://127.0.0.1/health".to_owned(),
        format!("ftp://127.0.0.1:{port}/health"),
        format!("http://user@127.0.0.1:{port}/health"),
    ] {
        let reply = raw_request(
            port,
            &format!("GET {target} HTTP/1.1\r\n{host}Connection: close\r\n\r\n"),
        );
        assert_eq!(reply.status, 400, "{target}: {}", reply.body);
        error_message("/health", &reply);
        another_client_is_served(&server);
    }
    let reply = raw_request(
        port,
        &format!("GET http://127.0.0.1:{port}/health HTTP/1.1\r\n{host}Connection: close\r\n\r\n"),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);

    // Well-formed: loopback names are served, others meet the allowlist.
    for name in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("LocalHost:{port}"),
        "localhost".to_owned(),
    ] {
        for path in ["/health", "/v1/models", "/api/tags"] {
            let reply = http(port, "GET", path, &[("Host", &name)], "");
            assert_eq!(reply.status, 200, "{path} Host {name}: {}", reply.body);
        }
    }
    for name in [
        format!("evil.example:{port}"),
        format!("attacker.localhost:{port}"),
        format!("[::2]:{port}"),
        format!(":{port}"),
        String::new(),
    ] {
        for path in ["/health", "/v1/models", "/api/tags"] {
            let reply = http(port, "GET", path, &[("Host", &name)], "");
            assert_eq!(reply.status, 403, "{path} Host {name:?}: {}", reply.body);
        }
    }
    // HTTP/1.0 may leave Host out; the allowlist still wants one.
    let reply = raw_request(port, "GET /health HTTP/1.0\r\n\r\n");
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_healthy_and_idle(&mut server);

    // With an API key: a malformed Host is 400 before the key is asked for.
    let keyed = Server::start(&["--api-key", "secret"]);
    let port = keyed.port;
    for head in ["", "Host: localhost:99999\r\n"] {
        let reply = raw_request(
            port,
            &format!("GET /v1/models HTTP/1.1\r\n{head}Connection: close\r\n\r\n"),
        );
        assert_eq!(reply.status, 400, "{head:?}: {}", reply.body);
    }
    let foreign = format!("evil.example:{port}");
    let reply = http(port, "GET", "/v1/models", &[("Host", &foreign)], "");
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(keyed.get("/v1/models").status, 401);
}

/// T-G6: `dimensions` of `/v1/embeddings` and `/api/embed` is a whole
/// number from 1 to the model's embedding size (SmolLM2-135M: 576).
/// Values no model could meet are refused before a model loads; one more
/// than the model's size is refused with its size; valid ones still work;
/// and each refusal leaves the server serving the next client.
#[test]
fn embedding_dimensions_are_bounded_by_the_model() {
    const WIDTH: usize = 576;
    let mut server = Server::start(&[]);
    let routes = ["/v1/embeddings", "/api/embed"];
    for path in routes {
        for dimensions in [
            json!(0),
            json!(-1),
            json!(1e9),
            json!(1_000_000_000),
            json!(9_223_372_036_854_775_808_u64),
            json!(8.5),
            json!("8"),
        ] {
            let body = json!({"model": MODEL, "input": "hi", "dimensions": dimensions});
            let message = refused(&server, path, body.to_string().as_bytes(), &[400]);
            assert!(
                message.contains("dimensions"),
                "{path} {dimensions}: {message}"
            );
            another_client_is_served(&server);
        }
    }
    assert_healthy_and_idle(&mut server);

    for path in routes {
        let body = json!({"model": MODEL, "input": ["hi", "there"], "dimensions": WIDTH + 1});
        let reply = server.post(path, &body);
        assert_eq!(reply.status, 400, "{path}: {}", reply.body);
        let message = error_message(path, &reply);
        assert!(
            message.contains("dimensions") && message.contains(&WIDTH.to_string()),
            "{path}: the model's size is not in {message:?}"
        );
        another_client_is_served(&server);

        for dimensions in [1, 8, WIDTH] {
            let body = json!({"model": MODEL, "input": ["hi", "there"], "dimensions": dimensions});
            let reply = server.post(path, &body);
            assert_eq!(reply.status, 200, "{path} {dimensions}: {}", reply.body);
            let reply = reply.json();
            let vectors: Vec<Vec<f64>> = if path == "/api/embed" {
                serde_json::from_value(reply["embeddings"].clone()).expect("embeddings")
            } else {
                reply["data"]
                    .as_array()
                    .expect("data")
                    .iter()
                    .map(|item| serde_json::from_value(item["embedding"].clone()).expect("vector"))
                    .collect()
            };
            assert_eq!(vectors.len(), 2, "{reply}");
            for vector in vectors {
                assert_eq!(vector.len(), dimensions, "{path}");
                let norm = vector.iter().map(|value| value * value).sum::<f64>().sqrt();
                assert!(
                    (norm - 1.0).abs() < 1e-3,
                    "{path} {dimensions}: norm {norm}"
                );
            }
        }
    }
}
