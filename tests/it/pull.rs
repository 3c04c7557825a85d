//! `olm pull` against the fake hub: clean pulls, resume, corruption, hostile
//! metadata, missing quants, gated repos, concurrency, kill -9, offline.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{assert_exit, run, skip_or_fail, stderr, stdout, TestEnv};
use crate::fakehub::{FakeHub, SMOL_FILE, SMOL_REPO, SMOL_SHA};

const SMOL: &str = "test/SmolLM2-GGUF:Q4_1";

fn cache(env: &TestEnv) -> PathBuf {
    env.path().join("hf-home/hub/models--test--SmolLM2-GGUF")
}

/// The download started from 0 once and went on with a Range request
/// from at least `offset`, never from the start again.
fn assert_resumed_once(hub: &FakeHub, offset: u64) {
    let starts = hub.range_starts();
    assert_eq!(
        starts.iter().filter(|&&start| start == 0).count(),
        1,
        "only one request from 0: {starts:?}"
    );
    assert!(
        starts.iter().any(|&start| start >= offset),
        "resumed from {offset} or later: {starts:?}"
    );
}

fn blob(env: &TestEnv) -> PathBuf {
    cache(env).join("blobs").join(SMOL_SHA)
}

fn sha256(path: &Path) -> String {
    let output = run(std::process::Command::new("sha256sum").arg(path));
    stdout(&output)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn manifests(env: &TestEnv) -> usize {
    let output = run(env.olm().args(["list", "--json"]));
    assert_exit(&output, 0);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("list --json");
    rows.as_array().map_or(0, |rows| {
        rows.iter()
            .filter(|row| row["source"] != "hf-cache")
            .count()
    })
}

#[test]
fn clean_pull_verifies_registers_and_runs_offline() {
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    let output = run(hub.olm(&env).args(["pull", SMOL]));
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("sha256 verified"),
        "{}",
        stderr(&output)
    );
    assert_eq!(sha256(&blob(&env)), SMOL_SHA);
    let snapshot = cache(&env)
        .join("snapshots/0123456789abcdef0123456789abcdef01234567")
        .join(SMOL_FILE);
    assert!(snapshot
        .symlink_metadata()
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(manifests(&env), 1);
    let list = stdout(&run(env.olm().arg("list")));
    assert!(list.contains(SMOL) && list.contains("Q4_1"), "{list}");
    let show = run(env.olm().args(["show", SMOL, "--json"]));
    assert_exit(&show, 0);
    let details: serde_json::Value = serde_json::from_str(&stdout(&show)).unwrap();
    assert_eq!(details["architecture"], "llama");
    assert_eq!(details["sha256"], SMOL_SHA);
    // A second pull finds the verified blob and downloads nothing.
    let before = hub.range_starts().len();
    assert_exit(&run(hub.olm(&env).args(["pull", SMOL])), 0);
    assert_eq!(hub.range_starts().len(), before, "no bytes fetched again");
    // --force downloads a fresh copy, verified before it replaces the old one.
    let forced = run(hub.olm(&env).args(["pull", SMOL, "--force"]));
    assert_exit(&forced, 0);
    assert!(
        hub.range_starts().len() > before,
        "--force fetched the file again"
    );
    assert_eq!(sha256(&blob(&env)), SMOL_SHA);
    assert_eq!(manifests(&env), 1);
    drop(hub);
    let answer = run(env
        .olm()
        .args(["run", SMOL, "Say hi", "-n", "4", "--temperature", "0"]));
    assert_exit(&answer, 0);
    assert_exit(&run(env.olm().arg("verify")), 0);
}

#[test]
fn a_cut_connection_resumes_with_range() {
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    hub.set_faults(json!({"cut_after": 5_000_000, "cut_times": 3}));
    let output = run(hub
        .olm(&env)
        .args(["pull", SMOL])
        .env("OLM_CONNECTIONS", "1"));
    assert_exit(&output, 0);
    assert_resumed_once(&hub, 5_000_000);
    assert_eq!(sha256(&blob(&env)), SMOL_SHA);
}

#[test]
fn a_flipped_byte_is_rejected_and_nothing_registered() {
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    hub.set_faults(json!({"flip_byte": 1_000_000}));
    let output = run(hub.olm(&env).args(["pull", SMOL]));
    assert_exit(&output, 5);
    assert!(stderr(&output).contains("sha256"), "{}", stderr(&output));
    assert!(!blob(&env).exists());
    assert!(
        !cache(&env)
            .join("blobs")
            .join(format!("{SMOL_SHA}.incomplete"))
            .exists(),
        "bad partial removed"
    );
    assert_eq!(manifests(&env), 0);
    // The next pull fetches fresh bytes and succeeds.
    hub.set_faults(json!({}));
    assert_exit(&run(hub.olm(&env).args(["pull", SMOL])), 0);
    assert_eq!(sha256(&blob(&env)), SMOL_SHA);
}

#[test]
fn hostile_hub_values_write_nothing_outside_the_cache() {
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    for faults in [
        json!({"commit": "../../../../canary"}),
        json!({"commit": "0123456789abcdef0123456789abcdef012345678"}),
        json!({"etag": "../../../../canary/pwned"}),
        json!({"etag": "a".repeat(63)}),
        json!({"extra_files": ["../../x.gguf"]}),
        json!({"extra_files": ["/abs/x.gguf"]}),
        json!({"extra_files": ["a\\..\\b.gguf"]}),
        json!({"extra_files": [format!("{}.gguf", "a".repeat(300))]}),
        json!({"extra_files": ["evil-\u{202E}fuggg.gguf"]}),
        json!({"extra_files": ["a\u{1b}]0;title\u{7}.gguf"]}),
    ] {
        hub.set_faults(faults.clone());
        let output = run(hub.olm(&env).args(["pull", SMOL]));
        assert_exit(&output, 5);
        assert!(
            stderr(&output).contains("invalid metadata from hub"),
            "{faults}: {}",
            stderr(&output)
        );
    }
    assert_eq!(manifests(&env), 0);
    let entries: Vec<String> = std::fs::read_dir(env.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with("fakehub") && name != "hf-home")
        .collect();
    assert!(
        entries.is_empty(),
        "nothing created beside the cache: {entries:?}"
    );
    assert!(!cache(&env).join("snapshots").exists());
}

#[test]
fn missing_quant_lists_what_exists() {
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    let output = run(hub.olm(&env).args(["pull", "test/SmolLM2-GGUF:q8_0"]));
    assert_exit(&output, 3);
    assert!(
        stderr(&output).contains("Q4_1 (98.4 MB)"),
        "{}",
        stderr(&output)
    );
    let dry = run(hub.olm(&env).args(["pull", SMOL_REPO, "--dry-run"]));
    assert_exit(&dry, 0);
    assert!(
        stdout(&dry).contains("Q4_1") && stdout(&dry).contains("yes"),
        "{}",
        stdout(&dry)
    );
    assert!(
        !cache(&env).join("blobs").exists(),
        "dry run downloads nothing"
    );
    assert_exit(&run(hub.olm(&env).args(["pull", "test/missing-GGUF"])), 3);
}

#[test]
fn gated_repo_needs_a_token() {
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    let output = run(hub.olm(&env).args(["pull", "test/gated-GGUF"]));
    assert_exit(&output, 4);
    assert!(stderr(&output).contains("HF_TOKEN"), "{}", stderr(&output));
    let output = run(hub
        .olm(&env)
        .args(["pull", "test/gated-GGUF"])
        .env("HF_TOKEN", "secret-token"));
    assert_exit(&output, 0);
    assert!(
        hub.requests()
            .iter()
            .filter(|r| r["path"].as_str().unwrap_or("").starts_with("/cdn/"))
            .all(|r| r["authorization"].is_string()),
        "same-origin requests carry the token"
    );
}

#[test]
fn server_errors_are_retried_then_exit_4() {
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    hub.set_faults(json!({"status": {"tree": 500}}));
    let started = Instant::now();
    let output = run(hub.olm(&env).args(["pull", SMOL]));
    assert_exit(&output, 4);
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(hub.requests().len(), 6, "six attempts");
    hub.set_faults(json!({"status": {"cdn": 503}, "status_times": 2}));
    assert_exit(&run(hub.olm(&env).args(["pull", SMOL])), 0);
}

#[test]
fn two_concurrent_pulls_share_one_download() {
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    hub.set_faults(json!({"rate": 40_000_000}));
    let first = hub
        .olm(&env)
        .args(["pull", SMOL])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let second = hub
        .olm(&env)
        .args(["pull", SMOL])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (first, second) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    assert_exit(&first, 0);
    assert_exit(&second, 0);
    assert_eq!(sha256(&blob(&env)), SMOL_SHA);
    let blobs = std::fs::read_dir(cache(&env).join("blobs"))
        .unwrap()
        .count();
    assert_eq!(blobs, 1, "exactly one blob, no partial left");
    let fetched_from_zero = hub
        .range_starts()
        .iter()
        .filter(|&&start| start == 0)
        .count();
    assert_eq!(fetched_from_zero, 1, "the file was fetched once");
}

/// Start `olm pull SMOL` at 4 MB/s per connection and kill -9 it after
/// `after`, leaving a partial download (and its resume state) behind.
fn kill_pull_after(env: &TestEnv, hub: &FakeHub, after: Duration) {
    hub.set_faults(json!({"rate": 4_000_000}));
    let mut child = hub
        .olm(env)
        .args(["pull", SMOL])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn kill_9_mid_pull_then_pull_again_resumes() {
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    // After 3 s every part has passed a checkpoint.
    kill_pull_after(&env, &hub, Duration::from_secs(3));
    assert_eq!(manifests(&env), 0, "a half-pulled model is never listed");
    let before = hub.range_starts().len();
    hub.set_faults(json!({}));
    assert_exit(&run(hub.olm(&env).args(["pull", SMOL])), 0);
    let resumed: Vec<u64> = hub.range_starts()[before..].to_vec();
    assert!(
        !resumed.is_empty() && resumed.iter().all(|&start| start > 0),
        "every resumed request starts past zero: {resumed:?}"
    );
    assert_eq!(sha256(&blob(&env)), SMOL_SHA);
    assert_exit(&run(env.olm().arg("verify")), 0);
}

/// Every `*.parts` file (a download's resume state) under `dir`.
fn resume_states(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(resume_states(&path));
        } else if path
            .extension()
            .is_some_and(|extension| extension == "parts")
        {
            found.push(path);
        }
    }
    found
}

/// A parallel download's partial file has holes; its resume state says
/// where. A state that cannot be used (damaged, or a FIFO planted in its
/// place: T-G4) is no state: the pull starts over and completes, never
/// resumes from the partial's length into a corrupt file, and never waits
/// on the FIFO.
#[test]
fn an_unusable_resume_state_starts_the_download_over() {
    type Spoil = fn(&Path);
    let damage: [(&str, Spoil); 2] = [
        ("damaged", |state| {
            std::fs::write(state, "{\"size\": 1").unwrap()
        }),
        ("fifo", |state| {
            std::fs::remove_file(state).unwrap();
            crate::bounds::make_fifo(state);
        }),
    ];
    for (what, spoil) in damage {
        let env = TestEnv::new();
        let hub = FakeHub::start(&env);
        kill_pull_after(&env, &hub, Duration::from_secs(2));
        let states = resume_states(env.path());
        assert_eq!(states.len(), 1, "{what}: one download's state: {states:?}");
        spoil(&states[0]);

        hub.set_faults(json!({}));
        let output = run(hub.olm(&env).args(["pull", SMOL]));
        assert_exit(&output, 0);
        assert!(
            !stderr(&output).contains("resuming"),
            "{what}: {}",
            stderr(&output)
        );
        assert_eq!(sha256(&blob(&env)), SMOL_SHA, "{what}");
        assert_exit(&run(env.olm().arg("verify")), 0);
    }
}

#[test]
fn ctrl_c_keeps_the_partial_and_exits_130() {
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    // 2 MB/s per connection: the pull is far from done when Ctrl-C comes.
    hub.set_faults(json!({"rate": 2_000_000}));
    let mut child = hub
        .olm(&env)
        .args(["pull", SMOL])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: sending SIGINT to our own child process.
    unsafe { libc_kill(child.id() as i32, 2) };
    let started = Instant::now();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(cache(&env)
        .join("blobs")
        .join(format!("{SMOL_SHA}.incomplete"))
        .exists());
    assert_eq!(manifests(&env), 0);
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

#[test]
fn offline_pull_uses_the_cache_only() {
    let env = TestEnv::new();
    let output = run(env.olm().args(["pull", SMOL]));
    assert_exit(&output, 4);
    assert!(stderr(&output).contains("offline"), "{}", stderr(&output));
}

#[test]
fn a_pulled_model_runs_without_any_network() {
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    assert_exit(&run(hub.olm(&env).args(["pull", SMOL])), 0);
    drop(hub);
    let probe = run(std::process::Command::new("unshare").args(["-rn", "true"]));
    if !probe.status.success() {
        skip_or_fail(
            "offline",
            &format!("unshare -rn is not permitted here: {}", stderr(&probe)),
        );
        return;
    }
    let mut command = std::process::Command::new("unshare");
    env.olm_env(&mut command);
    command.args([
        "-rn",
        env!("CARGO_BIN_EXE_olm"),
        "run",
        SMOL,
        "hi",
        "-n",
        "4",
        "--temperature",
        "0",
    ]);
    assert_exit(&run(&mut command), 0);
    let mut pull = std::process::Command::new("unshare");
    env.olm_env(&mut pull);
    pull.env_remove("HF_HUB_OFFLINE")
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env("MODELSCOPE_ENDPOINT", "http://127.0.0.1:9")
        .env("OLM_RETRY_BASE_MS", "10");
    pull.args(["-rn", env!("CARGO_BIN_EXE_olm"), "pull", "test/gemma-GGUF"]);
    let started = Instant::now();
    assert_exit(&run(&mut pull), 4);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn t_b11_a_full_disk_is_refused_before_the_first_byte() {
    // OLM_HOME and the cache on a 50 MiB tmpfs; the model is 98 MB.
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    let probe = run(std::process::Command::new("unshare").args(["-rm", "true"]));
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
        "mount -t tmpfs -o size=50m tmpfs '{dir}' && OLM_HOME='{dir}/olm' HF_HOME='{dir}/hf' exec '{olm}' pull {SMOL}",
        dir = small.display(),
        olm = env!("CARGO_BIN_EXE_olm"),
    );
    // The same environment `hub.olm` gives (it starts from an empty one).
    let pull = hub.olm(&env);
    let mut command = std::process::Command::new("unshare");
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
        err.contains("error: not enough disk space")
            && err.contains("needed")
            && err.contains("free"),
        "{err}"
    );
    assert!(
        hub.range_starts().is_empty(),
        "no byte was downloaded: {:?}",
        hub.range_starts()
    );
}

#[test]
fn t_b6_a_stalled_download_is_retried_with_range() {
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    hub.set_faults(json!({"stall_after": 3_000_000, "stall_times": 1, "stall_seconds": 20}));
    let started = Instant::now();
    let output = run(hub
        .olm(&env)
        .args(["pull", SMOL])
        .env("OLM_CONNECTIONS", "1")
        .env("OLM_STALL_TIMEOUT", "2"));
    assert_exit(&output, 0);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stall noticed quickly: {:?}",
        started.elapsed()
    );
    assert_resumed_once(&hub, 3_000_000);
    assert_eq!(sha256(&blob(&env)), SMOL_SHA);
}

#[test]
fn t_b9_a_redirect_to_another_host_never_gets_the_token() {
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    hub.set_faults(json!({"cdn_host": "localhost"}));
    let output = run(hub
        .olm(&env)
        .args(["pull", "test/gated-GGUF"])
        .env("HF_TOKEN", "secret-token"));
    assert_exit(&output, 0);
    let requests = hub.requests();
    let downloads: Vec<_> = requests
        .iter()
        .filter(|r| r["path"].as_str().unwrap_or("").starts_with("/cdn/"))
        .collect();
    assert!(
        !downloads.is_empty(),
        "the file came from the other host: {requests:?}"
    );
    assert!(
        downloads.iter().all(|r| r["authorization"].is_null()),
        "HF_TOKEN leaked to another host: {downloads:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r["path"].as_str().unwrap_or("").contains("/resolve/")
                && r["authorization"].is_string()),
        "the hub itself still got the token: {requests:?}"
    );
}

/// When the hub's file changed since the last pull (a new sha256), pulling
/// again says so, stores the new version, and removes the old blob that no
/// other name uses.
#[test]
fn a_changed_file_on_the_hub_replaces_the_stored_version() {
    let env = TestEnv::new();
    let mut hub = FakeHub::start(&env);
    assert_exit(&run(hub.olm(&env).args(["pull", SMOL])), 0);
    assert!(blob(&env).exists());

    hub.replace_file(SMOL_REPO, SMOL_FILE, &crate::common::gemma3());
    let again = run(hub.olm(&env).args(["pull", SMOL]));
    assert_exit(&again, 0);
    assert!(
        stderr(&again).contains("changed on the hub"),
        "{}",
        stderr(&again)
    );
    assert!(!blob(&env).exists(), "the old blob is removed");
    let show = run(env.olm().args(["show", SMOL, "--json"]));
    assert_exit(&show, 0);
    let details: serde_json::Value = serde_json::from_str(&stdout(&show)).unwrap();
    assert_eq!(
        details["architecture"], "gemma3",
        "the new version is stored"
    );
    assert_eq!(manifests(&env), 1);
    assert_exit(&run(env.olm().arg("verify")), 0);
}

/// The token the Hugging Face CLI's login saved (`$HF_HOME/token`, or the
/// file `HF_TOKEN_PATH` names) is used when `HF_TOKEN` is not set.
#[test]
fn the_hugging_face_login_token_is_used_without_hf_token() {
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    let hf_home = env.path().join("hf-home");
    std::fs::create_dir_all(&hf_home).unwrap();
    std::fs::write(hf_home.join("token"), "secret-token\n").unwrap();
    let output = run(hub
        .olm(&env)
        .args(["pull", "test/gated-GGUF", "--source", "hf"]));
    assert_exit(&output, 0);
    assert!(
        hub.requests()
            .iter()
            .any(|r| r["authorization"] == "Bearer secret-token"),
        "the saved token was sent"
    );
    // HF_TOKEN_PATH names another file; HF_TOKEN wins over both.
    std::fs::write(hf_home.join("token"), "wrong\n").unwrap();
    let elsewhere = env.path().join("my-token");
    std::fs::write(&elsewhere, "secret-token").unwrap();
    let output = run(hub
        .olm(&env)
        .args(["pull", "test/gated-GGUF", "--source", "hf", "--force"])
        .env("HF_TOKEN_PATH", &elsewhere));
    assert_exit(&output, 0);
    let output = run(hub
        .olm(&env)
        .args(["pull", "test/gated-GGUF", "--source", "hf", "--force"])
        .env("HF_TOKEN_PATH", &elsewhere)
        .env("HF_TOKEN", "wrong"));
    assert_exit(&output, 4);
}

/// The partial file's name is olm's own: a link planted there (to another
/// file in the cache, say another model's blob) is never written through,
/// and a FIFO there never blocks; either is replaced by a fresh download.
#[test]
fn a_link_or_fifo_planted_as_the_partial_is_replaced_not_written_through() {
    type Plant = fn(&Path, &Path);
    let plants: [(&str, Plant); 2] = [
        ("link", |partial, victim| {
            std::os::unix::fs::symlink(victim, partial).unwrap()
        }),
        ("fifo", |partial, _| crate::bounds::make_fifo(partial)),
    ];
    for (what, plant) in plants {
        let env = TestEnv::new();
        let hub = FakeHub::start(&env);
        let blobs = cache(&env).join("blobs");
        std::fs::create_dir_all(&blobs).unwrap();
        let victim = blobs.join("a".repeat(64));
        std::fs::write(&victim, b"another model's bytes").unwrap();
        plant(&blobs.join(format!("{SMOL_SHA}.incomplete")), &victim);

        let started = Instant::now();
        let output = run(hub.olm(&env).args(["pull", SMOL]));
        assert_exit(&output, 0);
        assert!(started.elapsed() < Duration::from_secs(30), "{what}");
        assert_eq!(
            std::fs::read(&victim).unwrap(),
            b"another model's bytes",
            "{what}: the link's target is untouched"
        );
        assert_eq!(sha256(&blob(&env)), SMOL_SHA, "{what}");
    }
}

/// Sizes a hub sends are believed only up to 1 PiB: a listing or header
/// with a larger one (a split set of two 2^64 - 1 byte parts, whose total
/// overflowed: a panic in debug builds, a wrapped small total that passed
/// the disk check in release) is invalid metadata, exit 5.
#[test]
fn sizes_beyond_any_disk_are_invalid_metadata() {
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    let huge = u64::MAX;
    let part = |index: u32| {
        json!({"type": "file", "path": format!("big-Q8_0-0000{index}-of-00002.gguf"),
               "size": huge, "lfs": {"oid": "c".repeat(64), "size": huge}})
    };
    for (faults, model) in [
        (
            json!({"extra_entries": [part(1), part(2)]}),
            "test/SmolLM2-GGUF:Q8_0",
        ),
        (json!({"extra_entries": [part(1), part(2)]}), SMOL),
        (json!({"linked_size": huge.to_string()}), SMOL),
        (json!({"linked_size": "1e3"}), SMOL),
    ] {
        hub.set_faults(faults.clone());
        for args in [vec!["pull", model], vec!["pull", model, "--dry-run"]] {
            let output = run(hub.olm(&env).args(&args));
            if args.len() == 3 && faults.get("linked_size").is_some() {
                continue; // a dry run asks no file's headers
            }
            assert_exit(&output, 5);
            assert!(
                stderr(&output).contains("invalid metadata from hub"),
                "{faults} {args:?}: {}",
                stderr(&output)
            );
        }
    }
    assert_eq!(manifests(&env), 0);
}

/// A mirror's user name and password in `HF_ENDPOINT` are used but never
/// shown: not in the status lines, the retry warnings or the final error
/// (they were printed in full with every URL).
#[test]
fn credentials_in_hf_endpoint_are_never_printed() {
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    let endpoint = format!("http://olm-user:s3cr3t-pw@127.0.0.1:{}", hub.port);
    let pull = |model: &str| {
        run(hub
            .olm(&env)
            .args(["pull", model])
            .env("HF_ENDPOINT", &endpoint))
    };

    let output = pull(SMOL);
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("***@127.0.0.1"),
        "{}",
        stderr(&output)
    );
    hub.set_faults(json!({"status": {"tree": 500}}));
    let failed = pull("test/other-GGUF");
    assert_exit(&failed, 4);
    hub.set_faults(json!({"status": {"tree": 401}}));
    let refused = pull("test/other-GGUF");
    assert_exit(&refused, 4);
    for output in [&output, &failed, &refused] {
        let text = format!("{}{}", stdout(output), stderr(output));
        assert!(
            !text.contains("s3cr3t-pw") && !text.contains("olm-user"),
            "{text}"
        );
    }
}

/// An `HF_ENDPOINT` that is not an http(s) URL with a host is a setting to
/// fix, exit 2 with one line naming it, before any request (it was a
/// "network error" with exit 4 and a hint to run the same command again).
#[test]
fn an_unusable_hf_endpoint_is_exit_2_naming_it() {
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    for endpoint in [
        "not a url".to_owned(),
        format!("127.0.0.1:{}", hub.port),
        format!("ftp://127.0.0.1:{}", hub.port),
        "file:///etc".to_owned(),
        format!("http://127.0.0.1:{}/?x=1", hub.port),
        format!("http://127.0.0.1:{}\u{1b}[31m", hub.port),
    ] {
        let output = run(hub
            .olm(&env)
            .args(["pull", SMOL])
            .env("HF_ENDPOINT", &endpoint));
        assert_exit(&output, 2);
        let text = stderr(&output);
        assert!(
            text.contains("HF_ENDPOINT is not a usable hub address"),
            "{endpoint}: {text}"
        );
        assert!(!text.contains('\u{1b}'), "{endpoint}: {text}");
    }
    assert!(hub.requests().is_empty(), "{:?}", hub.requests());
}

/// A hub that sends a byte now and then, never silent long enough to be a
/// stall, is as stuck as a silent one: a listing must be over within twice
/// the stall timeout, a download must bring 16 KiB per stall window (each
/// slow window a failed attempt, whatever trickled in), and Ctrl-C is seen
/// between the drops. Before, a pull against such a hub never ended, and
/// Ctrl-C did not stop it.
#[test]
fn a_hub_that_drips_bytes_is_given_up_on() {
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    let pull = || {
        let mut command = hub.olm(&env);
        command
            .args(["pull", SMOL])
            .env("OLM_STALL_TIMEOUT", "1")
            .env("OLM_CONNECTIONS", "1");
        command
    };

    hub.set_faults(json!({"drip": {"tree": 0.5}}));
    let started = Instant::now();
    let output = run(&mut pull());
    assert_exit(&output, 4);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    hub.set_faults(json!({"drip": {"cdn": 0.5}, "drip_after": 1_000_000}));
    let started = Instant::now();
    let output = run(&mut pull());
    assert_exit(&output, 4);
    assert!(stderr(&output).contains("too slow"), "{}", stderr(&output));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(manifests(&env), 0);

    // Ctrl-C while the listing drips: exit 130 at once.
    hub.set_faults(json!({"drip": {"tree": 0.2}}));
    let mut child = pull().stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let interrupted = Instant::now();
    // SAFETY: sending SIGINT to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        interrupted.elapsed() < Duration::from_secs(2),
        "{:?}",
        interrupted.elapsed()
    );

    // The pull resumes and completes once the hub sends at a normal pace.
    hub.set_faults(json!({}));
    assert_exit(&run(&mut pull()), 0);
    assert_eq!(sha256(&blob(&env)), SMOL_SHA);
}
