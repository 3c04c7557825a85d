//! ModelScope as a source, against the fake ModelScope hub on 127.0.0.1
//! (and the fake Hugging Face hub where both take part): pulls with the same
//! guarantees as from Hugging Face (resume, corruption, hostile listings,
//! tokens, redirects, missing quants, listings cut at 3000 entries), `--source
//! auto` falling back only from a hub that cannot be reached, the cache
//! shared both ways with the real `modelscope` client, the catalog's names,
//! and `olm run` offering to pull on a terminal.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{assert_exit, run, skip_or_fail, stderr, stdout, TestEnv};
use crate::fakehub::{FakeHub, SMOL_SHA};
use crate::fakems::{unused_port, FakeModelScope, MS_SMOL_FILE, MS_SMOL_REPO, MS_TOKEN};

const MS_SMOL: &str = "ms://test/SmolLM2-GGUF:Q4_1";
/// The store name an `ms://` pull writes (the hub is not part of it).
const SMOL_NAME: &str = "test/SmolLM2-GGUF:Q4_1";

fn sha256(path: &Path) -> String {
    let output = run(Command::new("sha256sum").arg(path));
    stdout(&output)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn list_json(env: &TestEnv, hub: &FakeModelScope) -> Vec<Value> {
    let output = run(env
        .olm()
        .args(["list", "--json"])
        .env("MODELSCOPE_CACHE", hub.cache()));
    assert_exit(&output, 0);
    serde_json::from_str::<Value>(&stdout(&output))
        .expect("list --json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Stored models (not files merely found in a cache).
fn stored(env: &TestEnv, hub: &FakeModelScope) -> Vec<Value> {
    list_json(env, hub)
        .into_iter()
        .filter(|row| row["source"] == "hub" || row["source"] == "local")
        .collect()
}

/// Every file under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, found: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            found.push(
                path.strip_prefix(base)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                walk(base, &path, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(dir, dir, &mut found);
    found.sort();
    found
}

/// A user alias in config.toml that both hubs have (the fake ones).
fn write_config(env: &TestEnv, extra: &str) {
    let home = env.path().join("olm-home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join("config.toml"),
        format!(
            "{extra}\n[[model]]\nalias = \"smol\"\nrepo = \"{MS_SMOL_REPO}\"\nquant = \"Q4_1\"\nmodelscope = \"{MS_SMOL_REPO}\"\nollama = [\"smollm:tiny\"]\nsize = 98362432\n"
        ),
    )
    .unwrap();
}

#[test]
fn a_clean_pull_lands_where_the_modelscope_client_looks_and_runs_offline() {
    let env = TestEnv::new();
    let hub = FakeModelScope::start(&env);
    let output = run(hub.olm(&env).args(["pull", MS_SMOL]));
    assert_exit(&output, 0);
    let err = stderr(&output);
    assert!(
        err.contains("sha256 verified") && err.contains("ModelScope"),
        "{err}"
    );
    // The client's own layout: a plain file in snapshots/master.
    let file = hub.snapshot_file(MS_SMOL_REPO, MS_SMOL_FILE);
    let metadata = std::fs::symlink_metadata(&file).unwrap();
    assert!(
        metadata.file_type().is_file(),
        "a plain file, as the client writes"
    );
    assert_eq!(sha256(&file), SMOL_SHA);
    assert!(
        hub.downloads()
            .iter()
            .all(|request| request["authorization"].is_null()),
        "no token was configured"
    );
    let rows = stored(&env, &hub);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["name"], SMOL_NAME);
    assert_eq!(rows[0]["hub"], "modelscope");
    assert_eq!(rows[0]["revision"], "master");
    let table = stdout(&run(env
        .olm()
        .arg("list")
        .env("MODELSCOPE_CACHE", hub.cache())));
    assert!(
        table
            .lines()
            .any(|line| line.starts_with(SMOL_NAME) && line.contains(" modelscope ")),
        "{table}"
    );
    // No partial and no olm file where the client lists the snapshot.
    let snapshot = tree(file.parent().unwrap());
    assert_eq!(snapshot, [MS_SMOL_FILE], "{snapshot:?}");
    // A second pull finds the verified file and downloads nothing.
    let before = hub.downloads().len();
    assert_exit(&run(hub.olm(&env).args(["pull", MS_SMOL])), 0);
    assert_eq!(hub.downloads().len(), before, "no bytes fetched again");
    drop(hub);
    // Offline: no hub, and (where permitted) no network at all.
    let cache = env.path().join("ms-cache");
    let answer = run(env
        .olm()
        .args(["run", MS_SMOL, "Say hi", "-n", "4", "--temperature", "0"])
        .env("MODELSCOPE_CACHE", &cache));
    assert_exit(&answer, 0);
    assert!(!stdout(&answer).is_empty());
    assert_exit(
        &run(env.olm().arg("verify").env("MODELSCOPE_CACHE", &cache)),
        0,
    );
    let probe = run(Command::new("unshare").args(["-rn", "true"]));
    if !probe.status.success() {
        skip_or_fail(
            "offline",
            &format!("unshare -rn is not permitted here: {}", stderr(&probe)),
        );
        return;
    }
    let mut command = Command::new("unshare");
    env.olm_env(&mut command);
    command.env("MODELSCOPE_CACHE", &cache).args([
        "-rn",
        env!("CARGO_BIN_EXE_olm"),
        "run",
        SMOL_NAME,
        "hi",
        "-n",
        "2",
        "--temperature",
        "0",
    ]);
    assert_exit(&run(&mut command), 0);
}

#[test]
fn a_cut_download_resumes_with_a_range_past_zero() {
    let env = TestEnv::new();
    let hub = FakeModelScope::start(&env);
    hub.set_faults(json!({"cut_after": 5_000_000, "cut_times": 2}));
    let output = run(hub
        .olm(&env)
        .args(["pull", MS_SMOL])
        .env("OLM_CONNECTIONS", "1"));
    assert_exit(&output, 0);
    let starts = hub.range_starts();
    assert_eq!(
        starts.iter().filter(|&&start| start == 0).count(),
        1,
        "one request from 0: {starts:?}"
    );
    assert!(
        starts.iter().any(|&start| start >= 5_000_000),
        "resumed past the cut: {starts:?}"
    );
    assert_eq!(
        sha256(&hub.snapshot_file(MS_SMOL_REPO, MS_SMOL_FILE)),
        SMOL_SHA
    );
}

#[test]
fn a_corrupt_download_is_rejected_and_nothing_registered() {
    let env = TestEnv::new();
    let hub = FakeModelScope::start(&env);
    hub.set_faults(json!({"flip_byte": 2_000_000}));
    let output = run(hub.olm(&env).args(["pull", MS_SMOL]));
    assert_exit(&output, 5);
    assert!(stderr(&output).contains("sha256"), "{}", stderr(&output));
    assert!(!hub.snapshot_file(MS_SMOL_REPO, MS_SMOL_FILE).exists());
    let partials = tree(&hub.cache().join(".olm/partial"));
    assert!(partials.is_empty(), "bad partial removed: {partials:?}");
    assert!(stored(&env, &hub).is_empty());
    // The next pull downloads fresh bytes.
    hub.set_faults(json!({}));
    assert_exit(&run(hub.olm(&env).args(["pull", MS_SMOL])), 0);
    assert_eq!(
        sha256(&hub.snapshot_file(MS_SMOL_REPO, MS_SMOL_FILE)),
        SMOL_SHA
    );
}

#[test]
fn hostile_listings_write_nothing_outside_the_cache() {
    let env = TestEnv::new();
    let hub = FakeModelScope::start(&env);
    let canary = env.path().join("canary");
    std::fs::create_dir_all(&canary).unwrap();
    std::fs::write(canary.join("keep"), "keep").unwrap();
    for faults in [
        json!({"extra_files": ["../../../../canary/pwned.gguf"]}),
        json!({"extra_files": ["/abs/x.gguf"]}),
        json!({"extra_files": ["a\\..\\b.gguf"]}),
        json!({"extra_files": [format!("{}.gguf", "a".repeat(300))]}),
        json!({"sha256": "../../../../canary/pwned"}),
        json!({"sha256": "A".repeat(64)}),
        json!({"sha256": "a".repeat(63)}),
    ] {
        hub.set_faults(faults.clone());
        let output = run(hub.olm(&env).args(["pull", MS_SMOL]));
        assert_exit(&output, 5);
        assert!(
            stderr(&output).contains("invalid metadata from hub"),
            "{faults}: {}",
            stderr(&output)
        );
    }
    // A size that disagrees with the bytes served: refused, nothing kept.
    hub.set_faults(json!({"size": 1000}));
    let output = run(hub.olm(&env).args(["pull", MS_SMOL]));
    assert!(
        matches!(output.status.code(), Some(4 | 5)),
        "{}",
        stderr(&output)
    );
    assert!(stored(&env, &hub).is_empty());
    assert_eq!(tree(&canary), ["keep"], "canary untouched");
    let beside: Vec<String> = std::fs::read_dir(env.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| {
            !name.starts_with("fakems") && !["canary", "ms-cache"].contains(&name.as_str())
        })
        .collect();
    assert!(
        beside.is_empty(),
        "nothing created beside the cache: {beside:?}"
    );
    assert!(!hub.cache().join("models").join("abs").exists());
}

#[test]
fn a_private_repo_needs_a_token_never_sent_to_another_host() {
    let env = TestEnv::new();
    let hub = FakeModelScope::start(&env);
    let private = "ms://test/private-GGUF:Q4_1";
    let output = run(hub.olm(&env).args(["pull", private]));
    assert_exit(&output, 4);
    let err = stderr(&output);
    assert!(
        err.contains("401") && err.contains("MODELSCOPE_API_TOKEN"),
        "{err}"
    );
    // A token with no access: 403, said as such.
    let output = run(hub
        .olm(&env)
        .args(["pull", "ms://test/denied-GGUF:Q4_1"])
        .env("MODELSCOPE_API_TOKEN", MS_TOKEN));
    assert_exit(&output, 4);
    assert!(stderr(&output).contains("403"), "{}", stderr(&output));
    // With the token, and object storage on another host name.
    hub.set_faults(json!({"oss_host": "localhost"}));
    let output = run(hub
        .olm(&env)
        .args(["pull", private])
        .env("MODELSCOPE_API_TOKEN", MS_TOKEN));
    assert_exit(&output, 0);
    let objects = hub.requests_to("/oss/");
    assert!(!objects.is_empty(), "bytes came from object storage");
    assert!(
        objects.iter().all(|request| request["host"]
            .as_str()
            .unwrap_or("")
            .starts_with("localhost")
            && request["authorization"].is_null()
            && request["cookie"].is_null()),
        "the token leaked to another host: {objects:?}"
    );
    let listing = hub.requests_to("/api/v1/models/test/private-GGUF/repo/files");
    assert!(
        listing.iter().any(
            |request| request["authorization"] == format!("Bearer {MS_TOKEN}")
                && request["cookie"] == format!("m_session_id={MS_TOKEN}")
        ),
        "the hub itself got the token as the client sends it: {listing:?}"
    );
}

#[test]
fn the_login_the_modelscope_client_saved_is_used() {
    let env = TestEnv::new();
    let hub = FakeModelScope::start(&env);
    // `modelscope login` keeps the token as a pickled cookie jar; write it
    // with the client's own code.
    let save = Command::new(crate::fakems::modelscope_python())
        .args([
            "-c",
            "import sys; from modelscope_hub.config import HubConfig; HubConfig(endpoint=sys.argv[1]).save_token(sys.argv[2])",
            &hub.url(),
            MS_TOKEN,
        ])
        .env_clear()
        .env("HOME", env.path())
        .output()
        .unwrap();
    assert!(save.status.success(), "{}", stderr(&save));
    assert!(env.path().join(".modelscope/credentials/cookies").is_file());
    let output = run(hub.olm(&env).args(["pull", "ms://test/private-GGUF:Q4_1"]));
    assert_exit(&output, 0);
    // An empty MODELSCOPE_API_TOKEN means no token, as for the client.
    let output = run(hub
        .olm(&env)
        .args(["pull", "ms://test/private-GGUF:Q4_1", "--force"])
        .env("MODELSCOPE_API_TOKEN", ""));
    assert_exit(&output, 4);
}

#[test]
fn a_missing_quant_lists_what_exists_and_dry_run_downloads_nothing() {
    let env = TestEnv::new();
    let hub = FakeModelScope::start(&env);
    let output = run(hub.olm(&env).args(["pull", "ms://test/SmolLM2-GGUF:q8_0"]));
    assert_exit(&output, 3);
    assert!(
        stderr(&output).contains("Q4_1 (98.4 MB)"),
        "{}",
        stderr(&output)
    );
    let dry = run(hub
        .olm(&env)
        .args(["pull", "ms://test/SmolLM2-GGUF", "--dry-run"]));
    assert_exit(&dry, 0);
    assert!(stdout(&dry).contains("Q4_1"), "{}", stdout(&dry));
    assert!(hub.downloads().is_empty(), "{:?}", hub.downloads());
    assert_exit(
        &run(hub.olm(&env).args(["pull", "ms://test/missing-GGUF"])),
        3,
    );
}

#[test]
fn a_listing_cut_at_3000_entries_is_walked_folder_by_folder() {
    let env = TestEnv::new();
    let hub = FakeModelScope::start(&env);
    let output = run(hub.olm(&env).args(["pull", "ms://test/many-GGUF:Q4_1"]));
    assert_exit(&output, 0);
    let listings = hub.requests_to("/api/v1/models/test/many-GGUF/repo/files");
    assert!(
        listings.iter().any(|request| request["path"]
            .as_str()
            .unwrap()
            .contains("Recursive=False")),
        "the root was listed one level deep: {listings:?}"
    );
    assert!(
        listings
            .iter()
            .any(|request| request["path"].as_str().unwrap().contains("Root=0-many")),
        "the cut folder was listed on its own: {listings:?}"
    );
}

/// The fake Hugging Face hub serves `test/SmolLM2-GGUF` too; with its
/// endpoint on a port nothing listens on, `auto` says so and pulls from
/// ModelScope.
#[test]
fn auto_falls_back_from_an_unreachable_hugging_face_to_modelscope_only() {
    let env = TestEnv::new();
    let hub = FakeModelScope::start(&env);
    write_config(&env, "");
    let started = Instant::now();
    let output = run(hub.olm(&env).args(["pull", "smol"]));
    assert_exit(&output, 0);
    assert!(started.elapsed() < Duration::from_secs(20));
    let err = stderr(&output);
    let notices: Vec<&str> = err
        .lines()
        .filter(|line| line.contains("cannot be reached"))
        .collect();
    assert_eq!(notices.len(), 1, "{err}");
    assert!(
        notices[0].contains("Hugging Face") && notices[0].contains("ModelScope"),
        "{err}"
    );
    assert!(!hub.downloads().is_empty());
    let rows = stored(&env, &hub);
    assert_eq!(rows[0]["name"], "smol");
    assert_eq!(rows[0]["hub"], "modelscope");

    // Hugging Face answers 404: that is the answer, no fallback.
    let hf = FakeHub::start(&env);
    let before = hub.requests().len();
    write_config(&env, "");
    let home = env.path().join("olm-home/config.toml");
    let config = std::fs::read_to_string(&home).unwrap().replace(
        &format!("repo = \"{MS_SMOL_REPO}\""),
        "repo = \"test/missing-GGUF\"",
    );
    std::fs::write(&home, config).unwrap();
    let output = run(hub
        .olm(&env)
        .args(["pull", "smol", "--force"])
        .env("HF_ENDPOINT", hf.url()));
    assert_exit(&output, 3);
    assert!(
        !stderr(&output).contains("cannot be reached"),
        "{}",
        stderr(&output)
    );
    assert_eq!(hub.requests().len(), before, "ModelScope was not asked");
    // A gated Hugging Face repo (401) does not fall back either.
    let config = std::fs::read_to_string(&home)
        .unwrap()
        .replace("repo = \"test/missing-GGUF\"", "repo = \"test/gated-GGUF\"");
    std::fs::write(&home, config).unwrap();
    let output = run(hub
        .olm(&env)
        .args(["pull", "smol", "--force"])
        .env("HF_ENDPOINT", hf.url()));
    assert_exit(&output, 4);
    assert_eq!(hub.requests().len(), before, "ModelScope was not asked");
}

/// A listener whose accept queue is full: connections to it hang until
/// the connect timeout, as to a host that drops packets.
fn black_hole() -> (socket2::Socket, Vec<std::net::TcpStream>, u16) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let address: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&address.into()).unwrap();
    socket.listen(0).unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    let target: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let fillers = (0..4)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&target, Duration::from_millis(300)).ok()
        })
        .collect();
    (socket, fillers, port)
}

#[test]
fn auto_decides_a_silent_hub_is_unreachable_within_seconds() {
    let env = TestEnv::new();
    let hub = FakeModelScope::start(&env);
    write_config(&env, "");
    let (_socket, _fillers, port) = black_hole();
    // The black hole must really not accept (it does not on Linux).
    let probe = std::net::TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_millis(500),
    );
    if probe.is_ok() {
        skip_or_fail(
            "black-hole",
            "a full accept queue still accepts connections here",
        );
        return;
    }
    let started = Instant::now();
    let output = run(hub
        .olm(&env)
        .args(["pull", "smol"])
        .env("HF_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .env("OLM_CONNECT_TIMEOUT", "2"));
    assert_exit(&output, 0);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "decided in {:?}",
        started.elapsed()
    );
    assert!(
        stderr(&output).contains("cannot be reached"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_unreachable_hub_is_one_clear_error_at_once() {
    let env = TestEnv::new();
    let dead = format!("http://127.0.0.1:{}", unused_port());
    let started = Instant::now();
    let output = run(env
        .olm()
        .args(["pull", "test/SmolLM2-GGUF:Q4_1", "--source", "hf"])
        .env_remove("HF_HUB_OFFLINE")
        .env("HF_ENDPOINT", &dead)
        .env("OLM_RETRY_BASE_MS", "500"));
    assert_exit(&output, 4);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no retries: {:?}",
        started.elapsed()
    );
    let err = stderr(&output);
    let error_line = err.lines().find(|line| line.starts_with("error:")).unwrap();
    assert_eq!(error_line.matches(&dead).count(), 1, "{err}");
    let hint = err
        .lines()
        .find(|line| line.starts_with("hint:"))
        .unwrap_or("");
    for word in ["--source", "HF_ENDPOINT", "MODELSCOPE_ENDPOINT"] {
        assert!(hint.contains(word), "{err}");
    }
    // Both hubs dead: auto tries each once, says so once, and fails.
    let output = run(env
        .olm()
        .args(["pull", "test/SmolLM2-GGUF:Q4_1"])
        .env_remove("HF_HUB_OFFLINE")
        .env("HF_ENDPOINT", &dead)
        .env(
            "MODELSCOPE_ENDPOINT",
            format!("http://127.0.0.1:{}", unused_port()),
        ));
    assert_exit(&output, 4);
    assert_eq!(
        stderr(&output).matches("cannot be reached at").count(),
        1,
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_file_the_modelscope_client_downloaded_is_found_without_a_download() {
    let env = TestEnv::new();
    let hub = FakeModelScope::start(&env);
    let client = run(&mut hub.client(
        &env,
        &["download", "--model", MS_SMOL_REPO, "--include", "*.gguf"],
    ));
    assert!(
        client.status.success(),
        "the modelscope client failed against the fake hub\n{}\n{}",
        stdout(&client),
        stderr(&client)
    );
    let file = hub.snapshot_file(MS_SMOL_REPO, MS_SMOL_FILE);
    assert_eq!(
        sha256(&file),
        SMOL_SHA,
        "the client's bytes are the model's"
    );
    // olm list shows it, and olm runs it, with no pull.
    let rows = list_json(&env, &hub);
    let row = rows
        .iter()
        .find(|row| row["source"] == "ms-cache")
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!(row["name"], MS_SMOL);
    let answer = run(env
        .olm()
        .args(["run", MS_SMOL, "hi", "-n", "2", "--temperature", "0"])
        .env("MODELSCOPE_CACHE", hub.cache()));
    assert_exit(&answer, 0);
    // A pull registers it after listing the repo, without fetching a byte.
    let before = hub.downloads().len();
    let output = run(hub.olm(&env).args(["pull", MS_SMOL]));
    assert_exit(&output, 0);
    assert_eq!(hub.downloads().len(), before, "{:?}", hub.requests());
    assert_eq!(stored(&env, &hub).len(), 1);
    // Offline, the same file registers from the cache.
    let other = TestEnv::new();
    let output = run(other
        .olm()
        .args(["pull", MS_SMOL, "--offline"])
        .env("MODELSCOPE_CACHE", hub.cache()));
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("ModelScope cache"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_file_olm_pulled_is_reused_by_the_modelscope_client() {
    let env = TestEnv::new();
    let hub = FakeModelScope::start(&env);
    assert_exit(&run(hub.olm(&env).args(["pull", MS_SMOL])), 0);
    let before = hub.requests().len();
    let client = run(&mut hub.client(
        &env,
        &["download", "--model", MS_SMOL_REPO, "--include", "*.gguf"],
    ));
    assert!(client.status.success(), "{}", stderr(&client));
    let after: Vec<Value> = hub.requests()[before..].to_vec();
    assert!(
        after.iter().any(|request| request["path"]
            .as_str()
            .unwrap_or("")
            .contains("/repo/files")),
        "the client listed the repo (and checked the hash): {after:?}"
    );
    assert!(
        after.iter().all(|request| {
            let path = request["path"].as_str().unwrap_or("");
            !path.starts_with("/oss/") && !path.contains("/repo?")
        }),
        "the client downloaded again: {after:?}"
    );
    assert_eq!(
        sha256(&hub.snapshot_file(MS_SMOL_REPO, MS_SMOL_FILE)),
        SMOL_SHA
    );
}

/// olm and the client both lock the client's per-file lock: pulled at the
/// same time, the file is fetched once.
#[test]
fn olm_and_the_client_at_once_fetch_the_file_once() {
    let env = TestEnv::new();
    let hub = FakeModelScope::start(&env);
    hub.set_faults(json!({"rate": 20_000_000}));
    let olm = hub
        .olm(&env)
        .args(["pull", MS_SMOL])
        .env("OLM_CONNECTIONS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let client = hub
        .client(
            &env,
            &["download", "--model", MS_SMOL_REPO, "--include", "*.gguf"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (olm, client): (Output, Output) = (
        olm.wait_with_output().unwrap(),
        client.wait_with_output().unwrap(),
    );
    assert_exit(&olm, 0);
    assert!(client.status.success(), "{}", stderr(&client));
    let from_zero = hub
        .requests_to("/oss/")
        .iter()
        .filter(|request| {
            request["range"]
                .as_str()
                .is_none_or(|range| range.starts_with("bytes=0-"))
        })
        .count();
    assert_eq!(from_zero, 1, "fetched once: {:?}", hub.requests_to("/oss/"));
    assert_eq!(
        sha256(&hub.snapshot_file(MS_SMOL_REPO, MS_SMOL_FILE)),
        SMOL_SHA
    );
}

#[test]
fn sources_come_from_the_flag_the_environment_or_the_config() {
    let env = TestEnv::new();
    let hub = FakeModelScope::start(&env);
    write_config(&env, "");
    // Explicit: ModelScope only (Hugging Face is never tried).
    let output = run(hub
        .olm(&env)
        .args(["pull", "smol", "--source", "modelscope"]));
    assert_exit(&output, 0);
    assert!(
        !stderr(&output).contains("cannot be reached"),
        "{}",
        stderr(&output)
    );
    // OLM_SOURCE and config.toml say the same.
    let output = run(hub
        .olm(&env)
        .args(["pull", "smol", "--force"])
        .env("OLM_SOURCE", "modelscope"));
    assert_exit(&output, 0);
    assert!(!stderr(&output).contains("cannot be reached"));
    write_config(&env, "source = \"modelscope\"");
    let output = run(hub.olm(&env).args(["pull", "smol", "--force"]));
    assert_exit(&output, 0);
    assert!(!stderr(&output).contains("cannot be reached"));
    // The flag names Hugging Face only: its failure is the answer.
    let output = run(hub
        .olm(&env)
        .args(["pull", "smol", "--force", "--source", "hf"]));
    assert_exit(&output, 4);
    // A reference naming one hub and a flag naming the other: exit 2.
    let output = run(hub.olm(&env).args(["pull", MS_SMOL, "--source", "hf"]));
    assert_exit(&output, 2);
    let output = run(hub.olm(&env).args(["pull", "smol", "--source", "github"]));
    assert_exit(&output, 2);
    let output = run(hub
        .olm(&env)
        .args(["pull", "smol"])
        .env("OLM_SOURCE", "github"));
    assert_exit(&output, 2);
    // An alias without a ModelScope repo cannot come from ModelScope.
    let output = run(hub
        .olm(&env)
        .args(["pull", "phi4-mini", "--source", "modelscope"]));
    assert_exit(&output, 3);
    assert!(
        stderr(&output).contains("--source hf"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn ollamas_names_pull_and_run_and_unknown_names_suggest_close_ones() {
    let env = TestEnv::new();
    let hub = FakeModelScope::start(&env);
    write_config(&env, "");
    let output = run(hub
        .olm(&env)
        .args(["pull", "smollm:tiny", "--source", "modelscope"]));
    assert_exit(&output, 0);
    let answer = run(env
        .olm()
        .args(["run", "smollm:tiny", "hi", "-n", "2"])
        .env("MODELSCOPE_CACHE", hub.cache()));
    assert_exit(&answer, 0);
    // No network for a name nobody knows: exit 3 and the closest names.
    let output = run(env.olm().args(["pull", "qwen7b"]));
    assert_exit(&output, 3);
    let err = stderr(&output);
    assert!(err.starts_with("error: model 'qwen7b'"), "{err}");
    assert!(err.contains("did you mean qwen-7b"), "{err}");
    let output = run(env.olm().args(["run", "qwen7b", "hi"]));
    assert_exit(&output, 3);
    assert!(
        stderr(&output).contains("did you mean qwen-7b"),
        "{}",
        stderr(&output)
    );
    // A catalog alias that is not pulled, without a terminal: exit 3, no download.
    let output = run(env.olm().args(["run", "qwen2.5:7b", "hi"]));
    assert_exit(&output, 3);
    assert!(
        stderr(&output).contains("olm pull qwen2.5:7B"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn hostile_modelscope_references_exit_2_and_create_nothing() {
    let env = TestEnv::new();
    for bad in [
        "ms://../../etc/passwd",
        "ms://owner/../../x",
        "ms://owner/repo:../../x",
        "modelscope.cn/owner/repo\\x",
        "ms://a/b/c",
        "ms://",
        "ms://owner/re po",
        "modelscope.cn/%2e%2e/x",
    ] {
        let output = run(env.olm().args(["pull", bad]));
        assert_exit(&output, 2);
        assert!(stderr(&output).starts_with("error: "), "{bad}");
    }
    let created: Vec<String> = std::fs::read_dir(env.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(created.is_empty(), "{created:?}");
}

#[test]
fn the_catalog_lists_names_sizes_and_sources() {
    let env = TestEnv::new();
    let output = run(env.olm().args(["list", "--available"]));
    assert_exit(&output, 0);
    let table = stdout(&output);
    let qwen = table
        .lines()
        .find(|line| line.starts_with("qwen-7b "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        qwen.contains("hf,modelscope") && qwen.contains("GB") && qwen.contains("qwen2.5:7b"),
        "{qwen}"
    );
    let output = run(env.olm().args(["list", "--available", "--json"]));
    assert_exit(&output, 0);
    let rows: Vec<Value> = serde_json::from_str(&stdout(&output)).unwrap();
    assert!(rows.len() >= 20);
    let qwen = rows.iter().find(|row| row["name"] == "qwen-7b").unwrap();
    assert_eq!(qwen["sources"], json!(["hf", "modelscope"]));
    assert_eq!(qwen["modelscope_repo"], "Qwen/Qwen2.5-7B-Instruct-GGUF");
    assert!(qwen["size"].as_u64().unwrap() > 4_000_000_000);
    let phi = rows.iter().find(|row| row["name"] == "phi4-mini").unwrap();
    assert_eq!(phi["sources"], json!(["hf"]));
    // A user alias appears too.
    write_config(&env, "");
    let output = run(env.olm().args(["list", "--available", "--json"]));
    let rows: Vec<Value> = serde_json::from_str(&stdout(&output)).unwrap();
    assert!(rows.iter().any(|row| row["name"] == "smol"));
}

/// `olm run NAME` on a terminal asks once (default yes), pulls, then runs.
#[test]
fn run_offers_to_pull_on_a_terminal() {
    let env = TestEnv::new();
    let hub = FakeModelScope::start(&env);
    write_config(&env, "");
    // A pseudo-terminal for stdin and stderr; Enter answers the question.
    let driver = r#"
import os, pty, select, subprocess, sys
master, slave = pty.openpty()
child = subprocess.Popen(sys.argv[1:], stdin=slave, stdout=subprocess.PIPE, stderr=slave)
os.close(slave)
seen, answered = b"", 0
while True:
    ready, _, _ = select.select([master], [], [], 0.2)
    if ready:
        try:
            data = os.read(master, 65536)
        except OSError:
            data = b""
        if not data and child.poll() is not None:
            break
        seen += data
        if b"[Y/n]" in seen and not answered:
            os.write(master, b"\n")
            answered += 1
    elif child.poll() is not None:
        break
out = child.stdout.read()
sys.stderr.write(seen.decode(errors="replace"))
sys.stdout.write(out.decode(errors="replace"))
sys.stdout.write("\nANSWERED=%d\n" % answered)
sys.exit(child.returncode)
"#;
    let mut command = hub.olm(&env);
    let olm_env: Vec<(std::ffi::OsString, std::ffi::OsString)> = command
        .get_envs()
        .filter_map(|(key, value)| Some((key.to_owned(), value?.to_owned())))
        .collect();
    command = Command::new("python3");
    command
        .env_clear()
        .envs(olm_env)
        .env("OLM_SOURCE", "modelscope")
        .args(["-c", driver, env!("CARGO_BIN_EXE_olm")])
        .args(["run", "smol", "Say hi", "-n", "3", "--temperature", "0"]);
    let output = run(&mut command);
    assert_exit(&output, 0);
    let out = stdout(&output);
    assert!(
        out.contains("ANSWERED=1"),
        "asked once: {out}\n{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("not in the store; pull"),
        "{}",
        stderr(&output)
    );
    assert!(!hub.downloads().is_empty(), "it pulled");
    let answer = out.replace("ANSWERED=1", "");
    assert!(!answer.trim().is_empty(), "then it answered: {out}");
    let file: PathBuf = hub.snapshot_file(MS_SMOL_REPO, MS_SMOL_FILE);
    assert_eq!(sha256(&file), SMOL_SHA);
}

#[test]
fn a_split_set_comes_whole_and_rm_removes_it_from_the_shared_cache() {
    use olm::gguf::samples;
    use olm::gguf::writer::tiny_model;
    let env = TestEnv::new();
    let mut hub = FakeModelScope::start(&env);
    let dir = env.path().join("fakems-split");
    std::fs::create_dir(&dir).unwrap();
    let parts = samples::write_split(&dir, "tiny-Q8_0", &samples::split_model(&tiny_model(), 3))
        .expect("write split parts");
    let files: serde_json::Map<String, Value> = parts
        .iter()
        .map(|path| {
            let name = format!("Q8_0/{}", path.file_name().unwrap().to_string_lossy());
            (name, json!(path))
        })
        .collect();
    hub.add_repo("test/split-GGUF", Value::Object(files));
    let output = run(hub.olm(&env).args(["pull", "ms://test/split-GGUF:Q8_0"]));
    assert_exit(&output, 0);
    for path in &parts {
        let name = format!("Q8_0/{}", path.file_name().unwrap().to_string_lossy());
        let pulled = hub.snapshot_file("test/split-GGUF", &name);
        assert_eq!(sha256(&pulled), sha256(path), "{name}");
    }
    let cache = hub.cache().to_path_buf();
    let show = run(env
        .olm()
        .args(["show", "test/split-GGUF:Q8_0"])
        .env("MODELSCOPE_CACHE", &cache));
    assert_exit(&show, 0);
    assert_exit(
        &run(env.olm().arg("verify").env("MODELSCOPE_CACHE", &cache)),
        0,
    );
    let removed = run(env
        .olm()
        .args(["rm", "-y", "test/split-GGUF:Q8_0"])
        .env("MODELSCOPE_CACHE", &cache));
    assert_exit(&removed, 0);
    let left = tree(&hub.snapshot_file("test/split-GGUF", "Q8_0"));
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn rate_limits_and_server_errors_are_waited_out() {
    let env = TestEnv::new();
    let hub = FakeModelScope::start(&env);
    // 429 with Retry-After: 1 on the listing, then two 503s from storage.
    hub.set_faults(json!({"status": {"files": 429}, "status_times": 1}));
    let started = Instant::now();
    let output = run(hub.olm(&env).args(["pull", MS_SMOL]));
    assert_exit(&output, 0);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(
        hub.requests_to("/api/v1/models/test/SmolLM2-GGUF/repo/files")
            .len(),
        2
    );
    hub.set_faults(json!({"status": {"oss": 503}, "status_times": 2}));
    assert_exit(&run(hub.olm(&env).args(["pull", MS_SMOL, "--force"])), 0);
    // Always 500: a bounded number of tries, then exit 4.
    hub.set_faults(json!({"status": {"files": 500}}));
    let before = hub.requests().len();
    let output = run(hub.olm(&env).args(["pull", MS_SMOL]));
    assert_exit(&output, 4);
    assert_eq!(hub.requests().len() - before, 6, "six attempts");
}

#[test]
fn kill_9_mid_pull_then_pull_again_resumes() {
    let env = TestEnv::new();
    let hub = FakeModelScope::start(&env);
    // 4 MB/s per connection: after 3 s every part has passed a checkpoint.
    hub.set_faults(json!({"rate": 4_000_000}));
    let mut child = hub
        .olm(&env)
        .args(["pull", MS_SMOL])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        stored(&env, &hub).is_empty(),
        "a half-pulled model is never listed"
    );
    assert!(
        !hub.snapshot_file(MS_SMOL_REPO, MS_SMOL_FILE).exists(),
        "nothing where the client would take it for a download"
    );
    let before = hub.range_starts().len();
    hub.set_faults(json!({}));
    assert_exit(&run(hub.olm(&env).args(["pull", MS_SMOL])), 0);
    let resumed: Vec<u64> = hub.range_starts()[before..].to_vec();
    assert!(
        !resumed.is_empty() && resumed.iter().all(|&start| start > 0),
        "every resumed request starts past zero: {resumed:?}"
    );
    assert_eq!(
        sha256(&hub.snapshot_file(MS_SMOL_REPO, MS_SMOL_FILE)),
        SMOL_SHA
    );
}

#[test]
fn a_full_disk_is_refused_before_the_first_byte() {
    // The ModelScope cache on a 50 MiB tmpfs; the model is 98 MB.
    let env = TestEnv::new();
    let hub = FakeModelScope::start(&env);
    let probe = run(Command::new("unshare").args(["-rm", "true"]));
    if !probe.status.success() {
        skip_or_fail(
            "tmpfs",
            &format!("unshare -rm is not permitted here: {}", stderr(&probe)),
        );
        return;
    }
    let small = env.path().join("small-disk");
    std::fs::create_dir_all(&small).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=50m tmpfs '{dir}' && OLM_HOME='{dir}/olm' MODELSCOPE_CACHE='{dir}/ms' exec '{olm}' pull {MS_SMOL}",
        dir = small.display(),
        olm = env!("CARGO_BIN_EXE_olm"),
    );
    let pull = hub.olm(&env);
    let mut command = Command::new("unshare");
    command.env_clear();
    for (key, value) in pull.get_envs() {
        if let Some(value) = value {
            command.env(key, value);
        }
    }
    command
        .stdin(Stdio::null())
        .args(["-rm", "sh", "-c", &script]);
    let output = run(&mut command);
    assert_exit(&output, 6);
    let err = stderr(&output);
    assert!(
        err.contains("error: not enough disk space") && err.contains("needed"),
        "{err}"
    );
    assert!(hub.downloads().is_empty(), "{:?}", hub.downloads());
}

/// ModelScope names a file by its path, not its hash: a new version
/// upstream replaces the stored file only once it is verified (H7).
#[test]
fn a_new_version_replaces_the_file_only_once_verified() {
    let env = TestEnv::new();
    let mut hub = FakeModelScope::start(&env);
    assert_exit(&run(hub.olm(&env).args(["pull", MS_SMOL])), 0);
    let file = hub.snapshot_file(MS_SMOL_REPO, MS_SMOL_FILE);
    let new_version = crate::common::gemma3();
    hub.replace_file(MS_SMOL_REPO, MS_SMOL_FILE, &new_version);
    hub.set_faults(json!({"flip_byte": 1_000_000}));
    let output = run(hub.olm(&env).args(["pull", MS_SMOL]));
    assert_exit(&output, 5);
    assert_eq!(
        sha256(&file),
        SMOL_SHA,
        "the verified old version is intact"
    );
    let cache = hub.cache().to_path_buf();
    assert_exit(
        &run(env.olm().arg("verify").env("MODELSCOPE_CACHE", &cache)),
        0,
    );
    hub.set_faults(json!({}));
    let output = run(hub.olm(&env).args(["pull", MS_SMOL]));
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("changed on the hub"),
        "{}",
        stderr(&output)
    );
    assert_eq!(sha256(&file), sha256(&new_version));
    assert_exit(
        &run(env.olm().arg("verify").env("MODELSCOPE_CACHE", &cache)),
        0,
    );
}

/// T-B10: listings olm cannot read are an error (exit 4), never a crash or
/// unbounded memory.
#[test]
fn malformed_and_endless_listings_exit_4() {
    let env = TestEnv::new();
    let hub = FakeModelScope::start(&env);
    for faults in [
        json!({"listing_body": "not json"}),
        json!({"listing_body": "{\"Data\": {\"Files\": [{\"Path\": 5, \"Size\": 1}]}}"}),
        json!({"listing_body": "{\"Data\": {\"Files\": [{\"Path\": \"a.gguf\", \"Size\": \"big\"}]}}"}),
        json!({"listing_body": "{\"Data\": {\"Files\": []}}"}),
        json!({"listing_endless": true}),
    ] {
        hub.set_faults(faults.clone());
        let started = Instant::now();
        let output = run(hub.olm(&env).args(["pull", MS_SMOL]));
        let code = output.status.code();
        // An empty listing is an answer: the repo has no GGUF (exit 3).
        let expected = if faults["listing_body"] == "{\"Data\": {\"Files\": []}}" {
            3
        } else {
            4
        };
        assert_eq!(code, Some(expected), "{faults}: {}", stderr(&output));
        assert!(started.elapsed() < Duration::from_secs(60), "{faults}");
        assert!(
            stderr(&output).starts_with("resolving"),
            "{}",
            stderr(&output)
        );
    }
    assert!(stored(&env, &hub).is_empty());
}

/// T-B6 on the ModelScope path: object storage goes silent mid-file; the
/// stall is noticed and the download goes on from where it stopped.
#[test]
fn a_stalled_download_is_retried_with_range() {
    let env = TestEnv::new();
    let hub = FakeModelScope::start(&env);
    hub.set_faults(json!({"stall_after": 3_000_000, "stall_times": 1, "stall_seconds": 20}));
    let started = Instant::now();
    let output = run(hub
        .olm(&env)
        .args(["pull", MS_SMOL])
        .env("OLM_CONNECTIONS", "1")
        .env("OLM_STALL_TIMEOUT", "2"));
    assert_exit(&output, 0);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stall noticed quickly: {:?}",
        started.elapsed()
    );
    let starts = hub.range_starts();
    assert_eq!(
        starts.iter().filter(|&&start| start == 0).count(),
        1,
        "{starts:?}"
    );
    assert!(starts.iter().any(|&start| start >= 3_000_000), "{starts:?}");
    assert_eq!(
        sha256(&hub.snapshot_file(MS_SMOL_REPO, MS_SMOL_FILE)),
        SMOL_SHA
    );
}
