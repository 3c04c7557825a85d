//! `olm serve` against hostile input (security-tests.md T-D4, T-D6, T-D7):
//! malformed and out-of-range requests, structured-output abuse, forged log
//! lines. Every one is refused quickly, in the route's own error shape,
//! before any model is loaded, and the server stays healthy.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::server::{connect, parse_reply, Reply, Server, MODEL};
use crate::common::{models_dir, smollm2};

/// SmolLM2's vocabulary size: the first token id it does not have.
const N_VOCAB: u32 = 49_152;

/// T-D4's bound on a refusal.
const QUICK: Duration = Duration::from_millis(100);

/// A POST of raw bytes (not necessarily UTF-8 or JSON) over a fresh connection.
fn post_bytes(server: &Server, path: &str, body: &[u8]) -> Reply {
    let mut stream = connect(server.port);
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
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
fn with(base: &Value, fields: Value) -> Value {
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
fn refused(server: &Server, path: &str, body: &[u8], statuses: &[u16]) -> String {
    let started = Instant::now();
    let reply = post_bytes(server, path, body);
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
fn assert_healthy_and_idle(server: &mut Server) {
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
