//! `olm doctor` (issue 15): the machine and sandbox report, and `--offline`
//! proof that a model's files are local and intact: exit 0 for a good model,
//! 5 for a changed file, 3 for a missing one.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use serde_json::Value;

use crate::common::{assert_exit, run, smollm2, stderr, stdout, TestEnv};

/// A store with SmolLM2 registered as `smol` (a copy, so tests may damage it).
fn store_with_smol() -> TestEnv {
    let env = TestEnv::new();
    let output = run(env
        .olm()
        .arg("pull")
        .arg(smollm2())
        .args(["--name", "smol"]));
    assert_exit(&output, 0);
    env
}

/// The stored copy of SmolLM2.
fn blob(env: &TestEnv) -> PathBuf {
    let blobs = env.path().join("olm-home").join("blobs");
    std::fs::read_dir(&blobs)
        .expect("blobs folder")
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("sha256-"))
        })
        .expect("the stored blob")
}

#[test]
fn doctor_reports_the_build_the_kernel_and_the_sandbox_in_force() {
    let env = TestEnv::new();
    let output = run(env.olm().arg("doctor"));
    assert_exit(&output, 0);
    let text = stdout(&output);
    for expected in [
        "olm           ",
        "llama.cpp     vendored by llama-cpp-sys-2",
        "cpu           ",
        "kernel        ",
        "landlock      ABI ",
        "sandbox       in force: landlock network rules on, seccomp socket filter on",
        "store         ",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }

    let output = run(env.olm().args(["doctor", "--json"]));
    assert_exit(&output, 0);
    let report: Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    assert!(
        report["sandbox"]["landlock_abi"].as_i64() >= Some(4),
        "{report}"
    );
    assert_eq!(
        report["sandbox"]["in_force"]["landlock_network_rules"],
        true
    );
    assert_eq!(report["sandbox"]["in_force"]["seccomp_filter"], true);
    assert_eq!(
        report["sandbox"]["kernel"].as_str().map(str::is_empty),
        Some(false)
    );
    assert!(report.get("models").is_none(), "no model check asked for");

    let output = run(env.olm().args(["doctor", "--allow-network"]));
    assert_exit(&output, 0);
    assert!(
        stdout(&output).contains("sandbox       OFF"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn doctor_offline_passes_a_good_model_and_names_a_changed_or_missing_file() {
    let env = store_with_smol();
    let good = run(env.olm().args(["doctor", "--offline", "smol"]));
    assert_exit(&good, 0);
    assert!(stdout(&good).contains("ready offline"), "{}", stdout(&good));
    // Without a name, --offline checks every stored model.
    let all = run(env.olm().args(["doctor", "--offline", "--json"]));
    assert_exit(&all, 0);
    let report: Value = serde_json::from_str(&stdout(&all)).expect("JSON");
    assert_eq!(report["models"][0]["name"], "smol", "{report}");
    assert_eq!(report["models"][0]["status"], "ok", "{report}");

    // One flipped byte in the middle of the weights.
    let path = blob(&env);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open the stored copy");
    let middle = file.metadata().expect("size").len() / 2;
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(middle)).expect("seek");
    file.read_exact(&mut byte).expect("read");
    byte[0] ^= 0x40;
    file.seek(SeekFrom::Start(middle)).expect("seek");
    file.write_all(&byte).expect("flip a byte");
    drop(file);
    let changed = run(env.olm().args(["doctor", "--offline", "smol"]));
    assert_exit(&changed, 5);
    assert!(stdout(&changed).contains("CHANGED"), "{}", stdout(&changed));
    assert!(stdout(&changed).contains("sha256"), "{}", stdout(&changed));
    let err = stderr(&changed);
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    assert!(
        err.contains("smol") && err.contains("olm pull smol --force"),
        "{err}"
    );

    std::fs::remove_file(&path).expect("remove the stored copy");
    let missing = run(env.olm().args(["doctor", "--offline", "smol"]));
    assert_exit(&missing, 3);
    assert!(stdout(&missing).contains("MISSING"), "{}", stdout(&missing));
    assert!(stderr(&missing).contains("missing"), "{}", stderr(&missing));

    let unknown = run(env.olm().args(["doctor", "--offline", "nope"]));
    assert_exit(&unknown, 3);
}
