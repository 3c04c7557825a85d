//! The store over the Ollama API: `POST /api/pull` from the fake hub (NDJSON
//! progress, `stream: false`, names only, cross-origin refusal, a client that
//! disconnects), `DELETE /api/delete`, and `olm ps` against a running server.
//! Also the real `ollama` Python client pulling and deleting.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::server::{listening, pytest};
use crate::common::{assert_exit, run, smollm2, stderr, stdout, TestEnv};
use crate::fakehub::{FakeHub, SMOL_REPO, SMOL_SHA};

/// The store name a pull of the SmolLM2 repo with its quant writes.
const SMOL: &str = "test/SmolLM2-GGUF:Q4_1";

/// A running `olm serve --port 0` pointed at a fake hub, killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(hub: &FakeHub, env: &TestEnv, args: &[&str]) -> Self {
        let mut command = hub.olm(env);
        command
            .args(["serve", "--port", "0", "-c", "512"])
            .args(args);
        let (child, port, _stderr) = listening(command);
        Self { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn get(&self, path: &str) -> Reply {
        send(agent().get(&self.url(path)), None)
    }

    fn post(&self, path: &str, body: &Value) -> Reply {
        send(agent().post(&self.url(path)), Some(body))
    }

    fn delete(&self, body: &Value) -> Reply {
        send(agent().delete(&self.url("/api/delete")), Some(body))
    }

    /// Names `/api/tags` lists.
    fn tags(&self) -> Vec<String> {
        let tags = self.get("/api/tags").json();
        tags["models"]
            .as_array()
            .expect("models array")
            .iter()
            .map(|model| model["name"].as_str().expect("name").to_owned())
            .collect()
    }

    /// `olm ps ARGS` asking this server (through `OLM_HOST`).
    fn olm_ps(&self, env: &TestEnv, args: &[&str]) -> std::process::Output {
        run(env
            .olm()
            .arg("ps")
            .args(args)
            .env("OLM_HOST", format!("127.0.0.1:{}", self.port)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One agent per request, no pooled connections: each request is its own.
fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(180))
        .max_idle_connections(0)
        .build()
}

#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }

    /// The NDJSON lines of a streamed reply.
    fn lines(&self) -> Vec<Value> {
        self.body
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|error| panic!("not an NDJSON line ({error}): {line}"))
            })
            .collect()
    }

    /// Ollama's error shape: `{"error": "message"}`.
    fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("not Ollama's error shape: {}", self.body))
            .to_owned()
    }
}

fn send(request: ureq::Request, body: Option<&Value>) -> Reply {
    let result = match body {
        Some(body) => request
            .set("Content-Type", "application/json")
            .send_string(&body.to_string()),
        None => request.call(),
    };
    let response = match result {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("request failed: {error}"),
    };
    Reply {
        status: response.status(),
        content_type: response.content_type().to_owned(),
        body: response.into_string().expect("read body"),
    }
}

fn smol_size() -> u64 {
    std::fs::metadata(smollm2()).expect("test model").len()
}

fn blob(env: &TestEnv) -> PathBuf {
    env.path()
        .join("hf-home/hub/models--test--SmolLM2-GGUF/blobs")
        .join(SMOL_SHA)
}

/// Store names `olm list` shows as pulled (not merely found in the HF cache).
fn stored_names(env: &TestEnv) -> Vec<String> {
    let output = run(env.olm().args(["list", "--json"]));
    assert_exit(&output, 0);
    let rows: Value = serde_json::from_str(&stdout(&output)).expect("list --json");
    rows.as_array()
        .expect("array")
        .iter()
        .filter(|row| row["source"] != "hf-cache")
        .map(|row| row["name"].as_str().expect("name").to_owned())
        .collect()
}

/// Check a streamed pull's lines the way Ollama's clients read them, and that
/// progress was throttled (`elapsed` is how long the pull took).
fn check_pull_stream(lines: &[Value], elapsed: Duration) {
    assert_eq!(
        lines[0],
        json!({"status": "pulling manifest"}),
        "{lines:#?}"
    );
    let statuses: Vec<&str> = lines
        .iter()
        .map(|line| line["status"].as_str().unwrap_or("<none>"))
        .collect();
    assert_eq!(
        statuses[statuses.len() - 3..],
        ["verifying sha256 digest", "writing manifest", "success"],
        "{lines:#?}"
    );
    let progress: Vec<&Value> = lines
        .iter()
        .filter(|line| line.get("digest").is_some())
        .collect();
    assert!(
        progress.len() >= 2,
        "a first and a last progress line: {lines:#?}"
    );
    let total = smol_size();
    let mut completed = 0;
    for line in &progress {
        assert_eq!(
            line["status"],
            format!("pulling {}", &SMOL_SHA[..12]),
            "{line}"
        );
        assert_eq!(line["digest"], format!("sha256:{SMOL_SHA}"), "{line}");
        assert_eq!(line["total"], total, "{line}");
        let now = line["completed"].as_u64().expect("completed");
        assert!(
            now >= completed && now <= total,
            "completed goes up: {lines:#?}"
        );
        completed = now;
    }
    assert_eq!(completed, total, "the last progress line is complete");
    // At most one line per 100 ms, plus the first and last of the file:
    // never one per chunk (the file arrives in hundreds of chunks).
    let allowed = elapsed.as_secs_f64() * 10.0 + 4.0;
    assert!(
        (progress.len() as f64) <= allowed,
        "{} progress lines in {elapsed:?}",
        progress.len()
    );
}

/// The whole life of a model over the API: pull (streamed), list, generate,
/// `olm ps` (table and JSON), delete, pull again with `stream: false`.
#[test]
fn api_pull_streams_progress_then_the_model_serves_and_deletes() {
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    let server = Server::start(&hub, &env, &[]);

    // An idle server: `olm ps` prints the header only.
    let idle = server.olm_ps(&env, &[]);
    assert_exit(&idle, 0);
    assert_eq!(
        stdout(&idle),
        "NAME   SIZE   PROCESSOR   CONTEXT   UNTIL\n",
        "{}",
        stderr(&idle)
    );

    let started = Instant::now();
    let reply = server.post("/api/pull", &json!({"model": SMOL}));
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.content_type, "application/x-ndjson");
    check_pull_stream(&reply.lines(), elapsed);
    assert!(
        !hub.range_starts().is_empty(),
        "the bytes came from the hub"
    );
    assert!(blob(&env).is_file());
    assert!(
        server.tags().contains(&SMOL.to_owned()),
        "{:?}",
        server.tags()
    );
    assert_eq!(stored_names(&env), [SMOL]);

    let generated = server.post(
        "/api/generate",
        &json!({"model": SMOL, "prompt": "Say hello.", "stream": false,
                "options": {"num_predict": 8, "temperature": 0}}),
    );
    assert_eq!(generated.status, 200, "{}", generated.body);
    let generated = generated.json();
    assert_eq!(generated["done"], true, "{generated}");
    assert!(
        !generated["response"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{generated}"
    );

    // `olm ps`: the table and the server's own JSON agree.
    let listed = server.olm_ps(&env, &["--json"]);
    assert_exit(&listed, 0);
    let models: Value = serde_json::from_str(&stdout(&listed)).expect("ps --json");
    let models = models.as_array().expect("a JSON array");
    assert_eq!(models.len(), 1, "{models:?}");
    assert_eq!(models[0]["name"], SMOL);
    let table = server.olm_ps(&env, &[]);
    assert_exit(&table, 0);
    let text = stdout(&table);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["NAME", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]);
    let cells: Vec<&str> = lines[1]
        .split("   ")
        .map(str::trim)
        .filter(|cell| !cell.is_empty())
        .collect();
    assert_eq!(cells.len(), 5, "{text}");
    assert_eq!(cells[0], SMOL, "{text}");
    assert!(cells[1].ends_with(" MB"), "{text}");
    assert!(
        cells[2].contains("CPU") || cells[2].contains("GPU"),
        "{text}"
    );
    assert_eq!(
        cells[3],
        models[0]["context_length"]
            .as_u64()
            .map_or("-".to_owned(), |n| n.to_string()),
        "{text}"
    );
    assert!(
        cells[4].ends_with("from now") || cells[4] == "Forever",
        "{text}"
    );

    // Delete: 200 with an empty body, the files go, then 404.
    let deleted = server.delete(&json!({"model": SMOL}));
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(deleted.body, "");
    assert!(
        !server.tags().contains(&SMOL.to_owned()),
        "{:?}",
        server.tags()
    );
    assert!(stored_names(&env).is_empty());
    assert!(!blob(&env).exists(), "no other name used the blob");
    let again = server.delete(&json!({"name": SMOL}));
    assert_eq!(again.status, 404, "{}", again.body);
    assert!(again.error().contains("not found"), "{}", again.body);

    // `stream: false` (the legacy `name` field): one object at the end.
    let reply = server.post("/api/pull", &json!({"name": SMOL, "stream": false}));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.content_type, "application/json");
    assert_eq!(reply.json(), json!({"status": "success"}));
    assert!(server.tags().contains(&SMOL.to_owned()));

    // Pulling what is there verifies it and downloads nothing.
    let before = hub.range_starts().len();
    let started = Instant::now();
    let reply = server.post("/api/pull", &json!({"model": SMOL, "insecure": true}));
    assert_eq!(reply.status, 200, "{}", reply.body);
    check_pull_stream(&reply.lines(), started.elapsed());
    assert_eq!(hub.range_starts().len(), before, "no bytes fetched again");
}

/// T-C1, T-D4 (O8, O12) and T-D3: the API takes model names only, and a
/// cross-site "simple" request is refused; none of it reaches the hub.
#[test]
fn api_pull_refuses_paths_urls_bad_names_and_foreign_origins_before_the_hub() {
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    let server = Server::start(&hub, &env, &[]);
    let hub_url = format!("{}/{SMOL_REPO}", hub.url());
    let long = "a".repeat(1000);
    let names = [
        "../../etc/passwd",
        "/etc/passwd",
        "./model.gguf",
        "model.gguf",
        "~/model",
        hub_url.as_str(),
        "http://127.0.0.1:9/x/y",
        "https://huggingface.co/test/SmolLM2-GGUF",
        "owner/../../x",
        "hf.co/owner/repo:../../x",
        "qwen:../../x",
        "%2e%2e%2f",
        "a\\b",
        "owner/repo/extra",
        "CON",
        "x\r\ny",
        "x\u{1b}[31m",
        "nul\0byte",
        long.as_str(),
    ];
    for name in names {
        for body in [
            json!({"model": name}),
            json!({"name": name, "stream": false}),
        ] {
            let reply = server.post("/api/pull", &body);
            assert_eq!(reply.status, 400, "{body}: {}", reply.body);
            assert!(
                reply.error().contains("invalid model name"),
                "{}",
                reply.body
            );
        }
        let reply = server.delete(&json!({"model": name}));
        assert_eq!(reply.status, 400, "delete {name:?}: {}", reply.body);
        assert!(
            reply.error().contains("invalid model name"),
            "{}",
            reply.body
        );
    }
    for body in [
        json!({}),
        json!({"model": ""}),
        json!({"model": 7}),
        json!("x"),
    ] {
        let reply = server.post("/api/pull", &body);
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        reply.error();
    }
    // Not a catalog alias: known without asking the hub.
    let reply = server.post("/api/pull", &json!({"model": "no-such-alias"}));
    assert_eq!(reply.status, 404, "{}", reply.body);
    assert!(
        reply.error().contains("not a catalog alias"),
        "{}",
        reply.body
    );

    // T-D3: a browser on another site, with a body that needs no preflight.
    for (method, path) in [("POST", "/api/pull"), ("DELETE", "/api/delete")] {
        let result = agent()
            .request(method, &server.url(path))
            .set("Origin", "https://evil.example")
            .set("Content-Type", "text/plain")
            .send_string(&json!({"model": SMOL}).to_string());
        let Err(ureq::Error::Status(status, response)) = result else {
            panic!("{method} {path} from a foreign origin was not refused: {result:?}");
        };
        assert_eq!(status, 403, "{method} {path}");
        assert!(response.header("Access-Control-Allow-Origin").is_none());
    }
    assert_eq!(
        hub.requests(),
        Vec::<Value>::new(),
        "no request reached the hub"
    );
    assert!(stored_names(&env).is_empty());

    // The same server does reach the hub for a real name: the log above was
    // empty because of the checks, not because the hub was unreachable.
    let reply = server.post("/api/pull", &json!({"model": "test/missing-GGUF"}));
    assert_eq!(reply.status, 200, "errors after streaming starts come last");
    let lines = reply.lines();
    assert_eq!(lines[0], json!({"status": "pulling manifest"}));
    let last = lines.last().expect("lines");
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|error| error.contains("not found")),
        "{lines:?}"
    );
    let reply = server.post(
        "/api/pull",
        &json!({"model": "test/missing-GGUF", "stream": false}),
    );
    assert_eq!(reply.status, 404, "{}", reply.body);
    assert!(!hub.requests().is_empty());
}

/// A client that goes away mid-download cancels the pull: nothing becomes
/// visible in the store, the partial file is kept out of sight, and the next
/// pull completes.
#[test]
fn a_client_that_disconnects_mid_pull_leaves_nothing_in_the_store() {
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    // 4 connections at 4 MB/s each: the whole file would take about 6 s.
    hub.set_faults(json!({"rate": 4_000_000}));
    let server = Server::start(&hub, &env, &[]);
    let response = agent()
        .post(&server.url("/api/pull"))
        .set("Content-Type", "application/json")
        .send_string(&json!({"model": SMOL}).to_string())
        .expect("pull starts");
    let mut reader = BufReader::new(response.into_reader());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read a progress line");
        let line: Value = serde_json::from_str(&line).expect("NDJSON line");
        assert!(line.get("error").is_none(), "{line}");
        if line["completed"].as_u64().is_some_and(|done| done > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "no progress");
    }
    drop(reader);
    let partial = blob(&env).with_file_name(format!("{SMOL_SHA}.incomplete"));
    // Longer than the whole download would take had it gone on.
    let watch_until = Instant::now() + Duration::from_secs(9);
    while Instant::now() < watch_until {
        assert!(!blob(&env).exists(), "a cancelled download was finalized");
        assert!(
            stored_names(&env).is_empty(),
            "a cancelled pull was registered"
        );
        assert!(!server.tags().contains(&SMOL.to_owned()));
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        partial.is_file(),
        "the partial download is kept for a resume"
    );

    hub.set_faults(json!({}));
    let reply = server.post("/api/pull", &json!({"model": SMOL, "stream": false}));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(blob(&env).is_file());
    assert!(!partial.exists());
    assert_exit(&run(env.olm().arg("verify")), 0);
    assert_eq!(stored_names(&env), [SMOL]);
}

/// `olm ps` with no server there: one `error:` line naming the address and
/// `olm serve`, exit 1; with a key-protected server, the key from OLM_API_KEY.
#[test]
fn olm_ps_without_a_server_or_without_the_key_fails_with_one_error_line() {
    let env = TestEnv::new();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    for args in [&[][..], &["--json"][..]] {
        let output = run(env
            .olm()
            .arg("ps")
            .args(args)
            .env("OLM_HOST", format!("127.0.0.1:{port}")));
        assert_exit(&output, 1);
        assert_eq!(stdout(&output), "");
        let errors = stderr(&output);
        let lines: Vec<&str> = errors.lines().collect();
        assert_eq!(lines.len(), 1, "{errors}");
        assert!(lines[0].starts_with("error: "), "{errors}");
        assert!(lines[0].contains(&format!("127.0.0.1:{port}")), "{errors}");
        assert!(lines[0].contains("olm serve"), "{errors}");
    }
    let output = run(env.olm().args(["ps", "--host", "ftp://x"]));
    assert_exit(&output, 2);

    let hub = FakeHub::start(&env);
    let server = Server::start(&hub, &env, &["--api-key", "sekrit"]);
    let refused = server.olm_ps(&env, &[]);
    assert_exit(&refused, 1);
    assert!(
        stderr(&refused).contains("OLM_API_KEY"),
        "{}",
        stderr(&refused)
    );
    // Flags instead of OLM_HOST, the key from the environment.
    let listed = run(env
        .olm()
        .args(["ps", "--host", "http://127.0.0.1", "--port"])
        .arg(server.port.to_string())
        .env("OLM_API_KEY", "sekrit"));
    assert_exit(&listed, 0);
    assert_eq!(
        stdout(&listed),
        "NAME   SIZE   PROCESSOR   CONTEXT   UNTIL\n"
    );
}

/// The real `ollama` Python client pulls from the fake hub through
/// `olm serve`, then generates and deletes (tests/python/test_clients.py).
#[test]
fn python_ollama_client_pulls_and_deletes() {
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    let server = Server::start(&hub, &env, &[]);
    let report = pytest(
        server.port,
        Some("pull"),
        &[("OLM_MODEL", SMOL), ("OLM_PULL_MODEL", SMOL)],
    );
    assert!(
        report.contains("1 passed") && !report.contains("skipped"),
        "{report}"
    );
    assert!(
        !hub.range_starts().is_empty(),
        "the client's pull reached the hub"
    );
}
