//! The fake Hugging Face hub (tests/fakehub/fakehub.py) on 127.0.0.1, one per
//! test, with its config (faults can change while a pull runs) and request log.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use crate::common::{gemma3, smollm2, TestEnv};

pub const SMOL_REPO: &str = "test/SmolLM2-GGUF";
pub const SMOL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const SMOL_SHA: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

pub struct FakeHub {
    child: Child,
    pub port: u16,
    config: PathBuf,
    log: PathBuf,
    repos: Value,
}

impl FakeHub {
    /// A hub serving SmolLM2 as `test/SmolLM2-GGUF`, gemma3 as `test/gemma-GGUF`,
    /// and SmolLM2 again as the gated `test/gated-GGUF` (token `secret-token`).
    pub fn start(env: &TestEnv) -> Self {
        let repos = json!({
            SMOL_REPO: {"files": {SMOL_FILE: smollm2()}},
            "test/gemma-GGUF": {"files": {"gemma-3-270m-q4_k_m.gguf": gemma3()}},
            "test/gated-GGUF": {"files": {SMOL_FILE: smollm2()}, "gated": true},
        });
        let config = env.path().join("fakehub.json");
        let log = env.path().join("fakehub.log");
        std::fs::write(&config, json!({"repos": repos, "faults": {}}).to_string())
            .expect("write hub config");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fakehub/fakehub.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(&config)
            .arg(&log)
            .env("FAKEHUB_LIFETIME", "300")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3 fake hub");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("hub stdout"))
            .read_line(&mut line)
            .expect("read hub port");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("fake hub printed {line:?}"));
        Self {
            child,
            port,
            config,
            log,
            repos,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Replace the faults (takes effect on the next request).
    pub fn set_faults(&self, faults: Value) {
        let temp = self.config.with_extension("tmp");
        std::fs::write(
            &temp,
            json!({"repos": self.repos, "faults": faults}).to_string(),
        )
        .expect("write hub config");
        std::fs::rename(&temp, &self.config).expect("replace hub config");
    }

    /// Serve `path` as `file` of `repo` from now on (a new version upstream).
    pub fn replace_file(&mut self, repo: &str, file: &str, path: &std::path::Path) {
        self.repos[repo]["files"][file] = json!(path);
        self.set_faults(json!({}));
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Start offsets of every ranged body request.
    pub fn range_starts(&self) -> Vec<u64> {
        self.requests()
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

    /// `olm` pointed at this hub, online (ModelScope, which `--source auto`
    /// would try if this hub could not be reached, on a local port nothing
    /// listens on: a test never reaches the real one).
    pub fn olm(&self, env: &TestEnv) -> Command {
        let mut command = env.olm();
        command
            .env("HF_ENDPOINT", self.url())
            .env(
                "MODELSCOPE_ENDPOINT",
                format!("http://127.0.0.1:{}", crate::fakems::unused_port()),
            )
            .env_remove("HF_HUB_OFFLINE")
            .env("OLM_RETRY_BASE_MS", "50")
            .env("OLM_STALL_TIMEOUT", "5");
        command
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
