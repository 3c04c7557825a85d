//! A running `olm serve` on the test model and a bare HTTP/1.1 client for
//! it, shared by the server tests (tests/it/serve.rs, serve_input.rs).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{smollm2, TestEnv};

/// The API name of the test model (its file stem).
pub const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1";

/// A running `olm serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    /// Its OLM_HOME and HOME: no error sent to a client may name them.
    pub env: TestEnv,
    /// Every line it has written to stderr so far.
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// `olm serve --port 0 MODEL ARGS...`, once it prints its address.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], vars: &[(&str, &str)]) -> Self {
        let env = TestEnv::new();
        let mut command = env.olm();
        command
            .envs(vars.iter().copied())
            .args(["serve", "--port", "0"])
            .args(if args.contains(&"-c") {
                &[][..]
            } else {
                &["-c", "512"][..]
            })
            .arg(smollm2())
            .args(args);
        let (child, port, stderr) = listening(command);
        Self {
            child,
            port,
            env,
            stderr,
        }
    }

    /// Poll `/metrics` until it has every line in `wanted` (the generation
    /// thread updates its counters just after the last event is sent).
    pub fn wait_for_metrics(&self, wanted: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let metrics = self.get("/metrics").body;
            if wanted
                .iter()
                .all(|line| metrics.lines().any(|have| have == *line))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "expected {wanted:?} in:\n{metrics}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    pub fn address(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Load the model with one short generation, so later timings leave the load out.
    pub fn warm_up(&self) {
        let reply = self.post("/v1/chat/completions", &chat_body("hi", 2, false));
        assert_eq!(reply.status, 200, "{}", reply.body);
    }

    /// The value of a per-model metric (`NAME{model="..."} VALUE`).
    pub fn metric(&self, name: &str) -> Option<u64> {
        let prefix = format!("{name}{{model=\"{MODEL}\"}} ");
        self.get("/metrics")
            .body
            .lines()
            .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
    }

    /// Poll a metric until it has `value`.
    pub fn wait_for_metric(&self, name: &str, value: u64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let have = self.metric(name);
            if have == Some(value) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} is {have:?}, expected {value}, after {within:?}:\n{}",
                self.get("/metrics").body
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    /// Wait for the server to exit; panic after `within`.
    pub fn wait_for_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "olm serve still running after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }

    /// The server's model workers (`olm __worker` children), as /proc
    /// lists them under the threads that started them.
    pub fn worker_pids(&self) -> Vec<u32> {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.child.id())) else {
            return Vec::new();
        };
        tasks
            .filter_map(Result::ok)
            .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
            .flat_map(|children| {
                children
                    .split_whitespace()
                    .filter_map(|pid| pid.parse().ok())
                    .collect::<Vec<u32>>()
            })
            // The server's other child is its pull process (`olm __pull`).
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|command| {
                    command
                        .split(|byte| *byte == 0)
                        .any(|arg| arg == b"__worker")
                })
            })
            .collect()
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], "")
    }

    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.request("POST", path, &[], &body.to_string())
    }

    /// The lines written to stderr so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        lock(&self.stderr).clone()
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let host = self.host();
        let mut all = vec![("Host", host.as_str())];
        all.extend_from_slice(headers);
        http(self.port, method, path, &all, body)
    }
}

/// Spawn an `olm serve --port 0 ...` command and wait for the address it
/// prints: the child, its port, and its stderr lines (kept being read, so
/// the server never blocks on a full pipe).
pub fn listening(mut command: std::process::Command) -> (Child, u16, Arc<Mutex<Vec<String>>>) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn olm serve");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let captured = Arc::new(Mutex::new(Vec::new()));
    let port = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            panic!("olm serve exited before listening: {:?}", child.wait());
        };
        let port = line
            .strip_prefix("listening on http://127.0.0.1:")
            .map(|address| address.trim().parse().expect("port number"));
        lock(&captured).push(line);
        if let Some(port) = port {
            break port;
        }
    };
    let sink = Arc::clone(&captured);
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            lock(&sink).push(line);
        }
    });
    (child, port, captured)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A complete HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// One HTTP/1.1 request over a fresh connection, with exactly these headers.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut stream = connect(port);
    send_request(&mut stream, method, path, headers, body);
    parse_reply(&read_all(&mut stream))
}

/// Everything the server sends until it closes the connection; a reset
/// after the response (the server closed with request bytes unread) ends it too.
pub fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return raw,
            Ok(read) => raw.extend_from_slice(&buffer[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error)
                if !raw.is_empty() && error.kind() == std::io::ErrorKind::ConnectionReset =>
            {
                return raw;
            }
            Err(error) => panic!("read response: {error} (after {} bytes)", raw.len()),
        }
    }
}

pub fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to olm serve");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("set timeout");
    stream
}

pub fn send_request(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
    {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("send request");
}

pub fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("transfer-encoding") && value.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The `data:` payloads of a server-sent event stream.
pub fn sse_events(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

pub fn chat_body(content: &str, max_tokens: u32, stream: bool) -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Run tests/python (pytest, with `filter` as `-k` if given) against the
/// server on `port`, with the real `openai` and `ollama` clients that
/// scripts/setup-python-clients.sh installs. Panics with pytest's output if
/// it fails; returns its report.
pub fn pytest(port: u16, filter: Option<&str>, vars: &[(&str, &str)]) -> String {
    let python = std::env::var_os("OLM_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            let home = std::env::var_os("HOME")?;
            let venv = std::path::Path::new(&home).join(".cache/olm/python-venv/bin/python");
            venv.is_file().then_some(venv)
        })
        .expect(
            "no Python with the openai and ollama clients: run scripts/setup-python-clients.sh",
        );
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python");
    let output = std::process::Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .args(filter.map(|filter| ["-k", filter]).into_iter().flatten())
        .arg(&tests)
        .env("OLM_BASE_URL", format!("http://127.0.0.1:{port}"))
        .envs(vars.iter().copied())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .output()
        .expect("run pytest");
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "pytest failed\n--- stdout ---\n{report}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    report
}
