//! The store: names that could escape it, local imports, list/show/rm/verify.

use crate::common::{assert_exit, run, smollm2, stderr, stdout, TestEnv};

fn tree(env: &TestEnv) -> Vec<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                out.push(entry.path().display().to_string());
                walk(&entry.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(env.path(), &mut out);
    out.sort();
    out
}

#[test]
fn every_bad_name_is_refused_with_exit_2() {
    let env = TestEnv::new();
    let model = smollm2();
    let long = "a".repeat(1000);
    let bad = [
        "../../etc/passwd",
        "owner/../../x",
        "hf.co/owner/repo:../../x",
        "qwen:../../x",
        "%2e%2e%2f",
        "a\\b",
        "CON",
        "a\rb",
        "a\nb",
        "\x1b[31mred",
        long.as_str(),
        "a/b/c",
    ];
    let before = tree(&env);
    for name in bad {
        for args in [
            vec!["pull", name],
            vec!["run", name, "hi"],
            vec!["show", name],
            vec!["rm", "-y", name],
        ] {
            let output = run(env.olm().args(&args));
            if name.starts_with("../") && (args[0] == "run" || args[0] == "show") {
                // A path: it exists but is no model (exit 5), or does not exist (exit 3).
                assert!(
                    matches!(output.status.code(), Some(3) | Some(5)),
                    "{args:?}: {}",
                    stderr(&output)
                );
                continue;
            }
            assert_exit(&output, 2);
            assert!(
                !stderr(&output).contains('\x1b'),
                "escaped in messages: {}",
                stderr(&output)
            );
        }
        let output = run(env
            .olm()
            .args(["pull", model.to_str().unwrap(), "--name", name]));
        assert_exit(&output, 2);
    }
    // (A NUL cannot reach olm through argv; the unit tests cover it.)
    let output = run(env
        .olm()
        .args(["pull", model.to_str().unwrap(), "--name", "/abs/name"]));
    assert_exit(&output, 2);
    assert_eq!(tree(&env), before, "nothing created anywhere");
}

#[test]
fn import_list_show_run_rm_verify() {
    let env = TestEnv::new();
    let model = smollm2();
    assert_exit(
        &run(env
            .olm()
            .args(["pull", model.to_str().unwrap(), "--name", "smol"])),
        0,
    );
    assert_exit(
        &run(env
            .olm()
            .args(["pull", model.to_str().unwrap(), "--name", "smol-copy"])),
        0,
    );
    let list = run(env.olm().args(["list", "--json"]));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&list)).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2);
    let show = stdout(&run(env.olm().args(["show", "smol"])));
    assert!(
        show.contains("llama") && show.contains("Q4_1") && show.contains("b179c952"),
        "{show}"
    );
    let template = stdout(&run(env.olm().args(["show", "smol", "--template"])));
    assert!(template.contains("im_start"), "{template}");
    assert_exit(&run(env.olm().args(["run", "smol", "hi", "-n", "3"])), 0);
    assert_exit(&run(env.olm().arg("verify")), 0);

    // Shared blob: removing one name keeps the file for the other.
    let blob = env.path().join(
        "olm-home/blobs/sha256-b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    );
    assert_exit(&run(env.olm().args(["rm", "-y", "smol"])), 0);
    assert!(blob.exists());
    assert_exit(&run(env.olm().args(["run", "smol", "hi"])), 3);

    // Tampering is reported.
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[5_000_000] ^= 0xFF;
    std::fs::write(&blob, &bytes).unwrap();
    let verify = run(env.olm().arg("verify"));
    assert_exit(&verify, 1);
    assert!(
        stdout(&verify).contains("CHANGED  smol-copy"),
        "{}",
        stdout(&verify)
    );

    assert_exit(&run(env.olm().args(["rm", "-y", "smol-copy"])), 0);
    assert!(!blob.exists());
    assert!(model.exists(), "the original file is never touched");
    assert_exit(&run(env.olm().args(["rm", "-y", "smol-copy"])), 3);
}

#[test]
fn a_symlinked_blob_is_flagged_and_rm_removes_only_the_link() {
    let env = TestEnv::new();
    let model = smollm2();
    assert_exit(
        &run(env
            .olm()
            .args(["pull", model.to_str().unwrap(), "--name", "smol"])),
        0,
    );
    let blob = env.path().join(
        "olm-home/blobs/sha256-b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    );
    let canary = env.path().join("canary.gguf");
    std::fs::copy(&model, &canary).unwrap();
    std::fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink(&canary, &blob).unwrap();
    assert_exit(&run(env.olm().arg("verify")), 1);
    assert_exit(&run(env.olm().args(["rm", "-y", "smol"])), 0);
    assert!(canary.exists(), "the canary outside the store survives");
    assert!(blob.symlink_metadata().is_err());
}
