//! `olm export` / `olm import` (issue 15): a model moves to a machine with
//! no network as one verified file. The round trip runs the import and the
//! model inside `unshare -rn` (no network at all); every hostile bundle (a
//! flipped byte, cut short, a manifest or entry naming `../x` or an absolute
//! path) is refused with exit 5, registers nothing and writes nothing
//! outside the store; too little disk is exit 6 before anything is written.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::common::{assert_exit, run, skip_or_fail, smollm2, stderr, stdout, TestEnv};
use crate::fakehub::{FakeHub, SMOL_SHA};

/// The store name a pull of the fake hub's SmolLM2 repo with its quant writes.
const HUB_SMOL: &str = "test/SmolLM2-GGUF:Q4_1";

/// A store with SmolLM2 twice: pulled from the (fake) hub, and imported
/// from a local file as `smol`; both share one sha256.
fn store_with_models() -> TestEnv {
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    assert_exit(&run(hub.olm(&env).args(["pull", HUB_SMOL])), 0);
    drop(hub);
    assert_exit(
        &run(env
            .olm()
            .arg("pull")
            .arg(smollm2())
            .args(["--name", "smol"])),
        0,
    );
    env
}

/// Store names `olm list` shows as stored (not merely found in the HF cache).
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

/// Whether `unshare -rn` works here; otherwise fail unless allowed to skip.
fn unshare_works(flags: &str, skip: &str) -> bool {
    let probe = run(Command::new("unshare").args([flags, "true"]));
    if !probe.status.success() {
        skip_or_fail(
            skip,
            &format!("unshare {flags} is not permitted here: {}", stderr(&probe)),
        );
        return false;
    }
    true
}

/// `olm ARGS` in `env` inside a new user and network namespace: no
/// network at all, not even loopback.
fn offline_olm(env: &TestEnv, args: &[&str]) -> Command {
    let mut command = Command::new("unshare");
    env.olm_env(&mut command);
    command.arg("-rn").arg(env!("CARGO_BIN_EXE_olm")).args(args);
    command
}

/// Every file and folder under `root`, relative, except under `skip`.
fn tree(root: &Path, skip: &[&str]) -> BTreeSet<PathBuf> {
    fn walk(root: &Path, dir: &Path, skip: &[&str], found: &mut BTreeSet<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let relative = path.strip_prefix(root).expect("under root").to_path_buf();
            if skip.iter().any(|skipped| relative.starts_with(skipped)) {
                continue;
            }
            found.insert(relative);
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                walk(root, &path, skip, found);
            }
        }
    }
    let mut found = BTreeSet::new();
    walk(root, root, skip, &mut found);
    found
}

#[test]
fn export_then_import_without_any_network_then_run() {
    if !unshare_works("-rn", "offline") {
        return;
    }
    let source = store_with_models();
    let bundle = source.path().join("models.olm");
    let export = run(source
        .olm()
        .args(["export", "smol", HUB_SMOL, "-o"])
        .arg(&bundle));
    assert_exit(&export, 0);
    let model_size = std::fs::metadata(smollm2()).expect("model").len();
    let bundle_size = std::fs::metadata(&bundle).expect("the bundle").len();
    assert!(
        bundle_size > model_size && bundle_size < model_size + (1 << 20),
        "one copy of the shared file: bundle {bundle_size}, model {model_size}"
    );
    assert!(
        std::fs::read_dir(source.path())
            .expect("list")
            .flatten()
            .all(|entry| !entry.file_name().to_string_lossy().ends_with(".partial")),
        "no partial bundle is left"
    );

    let target = TestEnv::new();
    let import = run(&mut offline_olm(
        &target,
        &["import", bundle.to_str().expect("utf-8")],
    ));
    assert_exit(&import, 0);
    assert_eq!(stdout(&import), format!("smol\n{HUB_SMOL}\n"));
    let mut names = stored_names(&target);
    names.sort();
    assert_eq!(names, ["smol", HUB_SMOL]);
    // The same layout as a pull: the HF cache for the hub model, olm's own
    // blobs for the local one.
    let repo = target.path().join("hf-home/hub/models--test--SmolLM2-GGUF");
    assert!(repo.join("blobs").join(SMOL_SHA).is_file());
    assert!(std::fs::read_to_string(repo.join("refs/main")).is_ok_and(|commit| commit.len() == 40));
    assert!(target
        .path()
        .join("olm-home/blobs")
        .join(format!("sha256-{SMOL_SHA}"))
        .is_file());

    for name in ["smol", HUB_SMOL] {
        let answer = run(&mut offline_olm(
            &target,
            &["run", name, "Say hi", "-n", "4", "--temperature", "0"],
        ));
        assert_exit(&answer, 0);
        assert!(!stdout(&answer).trim().is_empty(), "{name}: no answer");
    }
    assert_exit(&run(&mut offline_olm(&target, &["verify"])), 0);
    assert_exit(&run(&mut offline_olm(&target, &["doctor", "--offline"])), 0);
    assert_exit(&run(target.olm().args(["rm", "-y", HUB_SMOL])), 0);
    assert!(!repo.join("blobs").join(SMOL_SHA).exists());
    assert_eq!(stored_names(&target), ["smol"]);

    // Importing the same bundle again changes nothing and succeeds.
    assert_exit(
        &run(&mut offline_olm(
            &target,
            &["import", bundle.to_str().expect("utf-8")],
        )),
        0,
    );
}

#[test]
fn export_to_stdout_streams_into_import_from_stdin() {
    let source = TestEnv::new();
    assert_exit(
        &run(source
            .olm()
            .arg("pull")
            .arg(smollm2())
            .args(["--name", "smol"])),
        0,
    );
    let target = TestEnv::new();
    let script = format!(
        "OLM_HOME='{source}/olm-home' HF_HOME='{source}/hf-home' '{olm}' export smol -o - | '{olm}' import -",
        source = source.path().display(),
        olm = env!("CARGO_BIN_EXE_olm"),
    );
    let mut command = Command::new("sh");
    target.olm_env(&mut command);
    let output = run(command.args(["-c", &script]));
    assert_exit(&output, 0);
    assert_eq!(stdout(&output), "smol\n");
    assert_eq!(stored_names(&target), ["smol"]);
    assert_exit(&run(target.olm().arg("verify")), 0);

    // Never into a terminal-less nowhere: a bundle of an unknown name fails first.
    let unknown = run(source.olm().args(["export", "nope", "-o", "-"]));
    assert_exit(&unknown, 3);
}

/// A tar header for `path` (written as is: a hostile name is not refused
/// here, as `tar::Header::set_path` would) of `size` bytes.
fn raw_header(path: &str, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    let name = &mut header.as_old_mut().name;
    name[..path.len()].copy_from_slice(path.as_bytes());
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    header
}

/// A bundle of one hub model with one file `file_name` of content `data`,
/// the file stored under the entry name `entry`.
fn crafted_bundle(file_name: &str, entry: &str, data: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let sha256: String = Sha256::digest(data)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let manifest = json!({
        "format": "olm-bundle",
        "version": 1,
        "models": [{
            "name": "evil",
            "source": {"kind": "hub", "repo": "test/evil-GGUF", "revision": "a".repeat(40)},
            "quant": null,
            "files": [{"name": file_name, "sha256": sha256, "size": data.len()}],
        }],
    })
    .to_string();
    let entry = entry.replace("SHA", &sha256);
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append(
            &raw_header("olm-bundle.json", manifest.len() as u64),
            manifest.as_bytes(),
        )
        .expect("manifest entry");
    builder
        .append(&raw_header(&entry, data.len() as u64), data)
        .expect("file entry");
    builder.into_inner().expect("finish the bundle")
}

#[test]
fn hostile_bundles_are_refused_whole_and_write_nothing_outside_the_store() {
    let source = TestEnv::new();
    assert_exit(
        &run(source
            .olm()
            .arg("pull")
            .arg(smollm2())
            .args(["--name", "smol"])),
        0,
    );
    let good = source.path().join("good.olm");
    assert_exit(
        &run(source.olm().args(["export", "smol", "-o"]).arg(&good)),
        0,
    );
    let bytes = std::fs::read(&good).expect("read the bundle");

    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x01;
    let truncated = bytes[..bytes.len() / 2].to_vec();
    let absolute = std::env::temp_dir().join(format!("olm-it-abs-{}", std::process::id()));
    let absolute_file = format!("{}/x", absolute.display());
    let data = b"GGUF and then some bytes that are no model".to_vec();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("one flipped byte", flipped),
        ("cut short", truncated),
        (
            "manifest names ../x",
            crafted_bundle("../x", "files/SHA", &data),
        ),
        (
            "manifest names ../../x",
            crafted_bundle("a/../../x", "files/SHA", &data),
        ),
        (
            "manifest names an absolute path",
            crafted_bundle(&absolute_file, "files/SHA", &data),
        ),
        ("entry named ../x", crafted_bundle("m.gguf", "../x", &data)),
        (
            "entry named ../../../x",
            crafted_bundle("m.gguf", "../../../x", &data),
        ),
        (
            "entry named an absolute path",
            crafted_bundle("m.gguf", &absolute_file, &data),
        ),
        (
            "a valid hash of no model",
            crafted_bundle("m.gguf", "files/SHA", &data),
        ),
    ];
    for (what, bundle) in cases {
        let env = TestEnv::new();
        let path = env.path().join("hostile.olm");
        std::fs::write(&path, &bundle).expect("write the bundle");
        let before = tree(env.path(), &["olm-home", "hf-home"]);
        let output = run(env.olm().arg("import").arg(&path));
        assert_exit(&output, 5);
        let err = stderr(&output);
        assert_eq!(err.matches("error:").count(), 1, "{what}: {err}");
        assert!(
            stored_names(&env).is_empty(),
            "{what}: a model was registered"
        );
        assert_eq!(
            tree(env.path(), &["olm-home", "hf-home"]),
            before,
            "{what}: something was written outside the store"
        );
        assert!(!absolute.exists(), "{what}: wrote to an absolute path");
        let leftovers: Vec<PathBuf> = tree(env.path(), &[])
            .into_iter()
            .filter(|path| {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                name.is_some_and(|name| name.ends_with(".import") || name == "x")
                    || path.starts_with("olm-home/manifests")
                        && path.extension().is_some_and(|ext| ext == "json")
            })
            .collect();
        assert!(leftovers.is_empty(), "{what}: left {leftovers:?}");
        // Streamed from stdin it is refused the same way.
        let mut piped = env.olm();
        let piped = run(piped
            .args(["import", "-"])
            .stdin(Stdio::from(std::fs::File::open(&path).expect("open"))));
        assert_exit(&piped, 5);
        assert!(stored_names(&env).is_empty(), "{what} (stdin): registered");
    }
}

#[test]
fn an_import_that_does_not_fit_is_refused_before_the_first_byte() {
    if !unshare_works("-rm", "tmpfs") {
        return;
    }
    let source = TestEnv::new();
    assert_exit(
        &run(source
            .olm()
            .arg("pull")
            .arg(smollm2())
            .args(["--name", "smol"])),
        0,
    );
    let bundle = source.path().join("smol.olm");
    assert_exit(
        &run(source.olm().args(["export", "smol", "-o"]).arg(&bundle)),
        0,
    );
    // OLM_HOME and the cache on a 50 MiB tmpfs; the model is 98 MB.
    let env = TestEnv::new();
    let small = env.path().join("small-disk");
    std::fs::create_dir_all(&small).expect("mount point");
    let script = format!(
        "mount -t tmpfs -o size=50m tmpfs '{dir}' && OLM_HOME='{dir}/olm' HF_HOME='{dir}/hf' '{olm}' import '{bundle}'; code=$?; find '{dir}' -type f; exit $code",
        dir = small.display(),
        olm = env!("CARGO_BIN_EXE_olm"),
        bundle = bundle.display(),
    );
    let mut command = Command::new("unshare");
    env.olm_env(&mut command);
    let output = run(command.args(["-rm", "sh", "-c", &script]));
    assert_exit(&output, 6);
    let err = stderr(&output);
    assert!(
        err.contains("error: not enough disk space") && err.contains("needed"),
        "{err}"
    );
    assert!(
        stdout(&output).trim().is_empty(),
        "files were written: {}",
        stdout(&output)
    );
}
