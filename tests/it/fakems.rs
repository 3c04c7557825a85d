//! The fake ModelScope hub (tests/fakehub/fake_modelscope.py) on 127.0.0.1,
//! one per test, with its config (faults can change while a pull runs) and
//! request log; and the real `modelscope` Python client pointed at it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use crate::common::{smollm2, TestEnv};

pub const MS_SMOL_REPO: &str = "test/SmolLM2-GGUF";
pub const MS_SMOL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const MS_TOKEN: &str = "secret-ms-token";

pub struct FakeModelScope {
    child: Child,
    pub port: u16,
    config: PathBuf,
    log: PathBuf,
    repos: Value,
    cache: PathBuf,
}

impl FakeModelScope {
    /// A hub serving SmolLM2 (and a README) as `test/SmolLM2-GGUF`, the same
    /// model as the private `test/private-GGUF` (token `secret-ms-token`)
    /// and `test/denied-GGUF` (403 whatever the token), and
    /// `test/many-GGUF`, whose listing holds 3000 more files than the
    /// server returns at once.
    pub fn start(env: &TestEnv) -> Self {
        let readme = env.path().join("fakems-README.md");
        std::fs::write(&readme, "# SmolLM2 on a fake ModelScope\n").expect("write README");
        let repos = json!({
            MS_SMOL_REPO: {"files": {MS_SMOL_FILE: smollm2(), "README.md": readme}},
            "test/private-GGUF": {"files": {MS_SMOL_FILE: smollm2()}, "private": true},
            "test/denied-GGUF": {"files": {MS_SMOL_FILE: smollm2()}, "denied": true},
            "test/many-GGUF": {"files": {MS_SMOL_FILE: smollm2()}, "virtual": {"0-many": 3000}},
        });
        let config = env.path().join("fakems.json");
        let log = env.path().join("fakems.log");
        std::fs::write(
            &config,
            json!({"token": MS_TOKEN, "repos": repos, "faults": {}}).to_string(),
        )
        .expect("write fake ModelScope config");
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fakehub/fake_modelscope.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(&config)
            .arg(&log)
            .env("FAKEHUB_LIFETIME", "300")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3 fake ModelScope hub");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("hub stdout"))
            .read_line(&mut line)
            .expect("read hub port");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("fake ModelScope hub printed {line:?}"));
        Self {
            child,
            port,
            config,
            log,
            repos,
            cache: env.path().join("ms-cache"),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The ModelScope cache olm and the client share in these tests.
    pub fn cache(&self) -> &Path {
        &self.cache
    }

    /// Where the client (and olm) keep `file` of `repo` at `master`.
    pub fn snapshot_file(&self, repo: &str, file: &str) -> PathBuf {
        self.cache
            .join("models")
            .join(repo.replace('/', "--"))
            .join("snapshots/master")
            .join(file)
    }

    /// Serve `files` (name in the repo -> local path) as `repo` from now on.
    pub fn add_repo(&mut self, repo: &str, files: Value) {
        self.repos[repo] = json!({ "files": files });
        self.set_faults(json!({}));
    }

    /// Serve `path` as `file` of `repo` from now on (a new version upstream).
    pub fn replace_file(&mut self, repo: &str, file: &str, path: &Path) {
        self.repos[repo]["files"][file] = json!(path);
        self.set_faults(json!({}));
    }

    /// Replace the faults (takes effect on the next request).
    pub fn set_faults(&self, faults: Value) {
        let temp = self.config.with_extension("tmp");
        std::fs::write(
            &temp,
            json!({"token": MS_TOKEN, "repos": self.repos, "faults": faults}).to_string(),
        )
        .expect("write hub config");
        std::fs::rename(&temp, &self.config).expect("replace hub config");
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Requests whose path starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|request| request["path"].as_str().unwrap_or("").starts_with(prefix))
            .collect()
    }

    /// Requests for file bytes: the hub's download URL or object storage.
    pub fn downloads(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|request| {
                let path = request["path"].as_str().unwrap_or("");
                path.starts_with("/oss/") || path.contains("/repo?")
            })
            .collect()
    }

    /// Start offsets of every ranged request to object storage.
    pub fn range_starts(&self) -> Vec<u64> {
        self.requests_to("/oss/")
            .iter()
            .filter_map(|request| request["range"].as_str().map(str::to_owned))
            .filter_map(|range| {
                range
                    .trim_start_matches("bytes=")
                    .split('-')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// `olm` pointed at this hub (and at a Hugging Face endpoint that is
    /// never there), online.
    pub fn olm(&self, env: &TestEnv) -> Command {
        let mut command = env.olm();
        command
            .env("MODELSCOPE_ENDPOINT", self.url())
            .env("MODELSCOPE_CACHE", &self.cache)
            .env("HF_ENDPOINT", format!("http://127.0.0.1:{}", unused_port()))
            .env_remove("HF_HUB_OFFLINE")
            .env("OLM_RETRY_BASE_MS", "50")
            .env("OLM_STALL_TIMEOUT", "5");
        command
    }

    /// The real `modelscope` CLI (scripts/setup-python-clients.sh installs
    /// it), pointed at this hub and the shared cache, with `args`.
    pub fn client(&self, env: &TestEnv, args: &[&str]) -> Command {
        let mut command = Command::new(modelscope_python());
        command
            .args(["-m", "modelscope.cli.cli"])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", env.path())
            .env("MODELSCOPE_ENDPOINT", self.url())
            .env("MODELSCOPE_CACHE", &self.cache)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .stdin(Stdio::null());
        command
    }
}

impl Drop for FakeModelScope {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python that has the `modelscope` client: `OLM_TEST_PYTHON`, else the
/// virtual environment scripts/setup-python-clients.sh makes.
pub fn modelscope_python() -> PathBuf {
    let python = std::env::var_os("OLM_TEST_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            let home = std::env::var_os("HOME")?;
            let venv = Path::new(&home).join(".cache/olm/python-venv/bin/python");
            venv.is_file().then_some(venv)
        })
        .expect("no Python with the modelscope client: run scripts/setup-python-clients.sh");
    let probe = Command::new(&python)
        .args(["-c", "import modelscope, modelscope_hub"])
        .output()
        .expect("run the test Python");
    assert!(
        probe.status.success(),
        "{} lacks the modelscope client: run scripts/setup-python-clients.sh",
        python.display()
    );
    python
}

/// A local port nothing listens on (bound, then released).
pub fn unused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}
