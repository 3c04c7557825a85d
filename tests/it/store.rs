//! The store: names that could escape it, local imports, list/show/rm/verify,
//! and symlinks planted in the store that must never lead olm outside it.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

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
    pull_as(&env, &model, "smol");
    pull_as(&env, &model, "smol-copy");
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

/// A damaged manifest (here a forged digest) is named by every command
/// with the hint `olm rm`, and `olm rm` removes it: only the manifest,
/// nothing its text names.
#[test]
fn rm_removes_a_damaged_manifest() {
    let env = TestEnv::new();
    let model = smollm2();
    pull_as(&env, &model, "smol");
    let manifest = olm_home(&env).join("manifests/smol/_.json");
    let text = fs::read_to_string(&manifest).expect("the manifest");
    let digest = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
    fs::write(&manifest, text.replace(digest, "../../outside")).expect("forge it");
    let show = run(env.olm().args(["show", "smol"]));
    assert!(stderr(&show).contains("olm rm"), "{}", stderr(&show));
    let removed = run(env.olm().args(["rm", "-y", "smol"]));
    assert_exit(&removed, 0);
    assert!(stderr(&removed).contains("damaged"), "{}", stderr(&removed));
    assert!(!manifest.exists());
    assert!(olm_home(&env)
        .join(format!("blobs/sha256-{digest}"))
        .exists());
    assert_exit(&run(env.olm().args(["show", "smol"])), 3);
    assert!(model.exists());
}

#[test]
fn a_symlinked_blob_is_flagged_and_rm_removes_only_the_link() {
    let env = TestEnv::new();
    let model = smollm2();
    pull_as(&env, &model, "smol");
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

// ---------------------------------------------------------------------------
// T-G5 / T-C3: symlinks planted in the store never lead olm outside it.
// A canary folder outside OLM_HOME and the HF cache is hashed (tree and
// contents) before and after every command; each plant must be named by
// `olm verify` (exit 1), refused by `olm run`, skipped by `olm list`, and
// `olm rm` must delete nothing it points to.

const SMOL_SHA: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const HF_NAME: &str = "test/SmolLM2-GGUF:Q4_1";
const HF_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const ESCAPES: &str = "is a symlink that leads outside the store";

/// The test environment's folder with every symlink resolved (paths in
/// olm's messages are resolved ones).
/// `olm pull MODEL --name NAME`, which must succeed.
fn pull_as(env: &TestEnv, model: &Path, name: &str) {
    assert_exit(
        &run(env.olm().arg("pull").arg(model).args(["--name", name])),
        0,
    );
}

fn base(env: &TestEnv) -> PathBuf {
    fs::canonicalize(env.path()).expect("resolve the test folder")
}

fn olm_home(env: &TestEnv) -> PathBuf {
    base(env).join("olm-home")
}

fn hf_repo(env: &TestEnv) -> PathBuf {
    base(env).join("hf-home/hub/models--test--SmolLM2-GGUF")
}

fn snapshot_folder(env: &TestEnv) -> PathBuf {
    hf_repo(env).join("snapshots").join(COMMIT)
}

fn local_blob(env: &TestEnv) -> PathBuf {
    olm_home(env).join(format!("blobs/sha256-{SMOL_SHA}"))
}

/// A fresh copy of the test model at `to`, which must not exist yet (never
/// a hard link: nothing a test or olm does to the copy may reach the
/// shared test model).
fn place_model(to: &Path) {
    assert!(
        fs::symlink_metadata(to).is_err(),
        "{} already exists",
        to.display()
    );
    fs::copy(smollm2(), to).expect("copy the test model");
}

/// Lay the test model out as huggingface_hub does: the blob, a relative
/// snapshot link `../../blobs/<sha256>`, and `refs/main`.
fn lay_out_hf_cache(env: &TestEnv) {
    let repo = hf_repo(env);
    fs::create_dir_all(repo.join("blobs")).unwrap();
    fs::create_dir_all(snapshot_folder(env)).unwrap();
    fs::create_dir_all(repo.join("refs")).unwrap();
    place_model(&repo.join("blobs").join(SMOL_SHA));
    symlink(
        format!("../../blobs/{SMOL_SHA}"),
        snapshot_folder(env).join(HF_FILE),
    )
    .unwrap();
    fs::write(repo.join("refs/main"), COMMIT).unwrap();
}

/// The HF-cache layout, registered offline as `test/SmolLM2-GGUF:Q4_1`.
fn register_hf(env: &TestEnv) {
    lay_out_hf_cache(env);
    register_hf_laid_out(env);
}

/// `olm pull test/SmolLM2-GGUF:Q4_1` offline: registered from the cache.
fn register_hf_laid_out(env: &TestEnv) {
    let output = run(env.olm().args(["pull", HF_NAME]));
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("registered"),
        "{}",
        stderr(&output)
    );
}

/// The test model imported with `olm pull FILE --name smol`.
fn import_smol(env: &TestEnv) {
    pull_as(env, &smollm2(), "smol");
}

/// A folder outside OLM_HOME and the HF cache, and its fingerprint: every
/// entry's path, kind, size, permissions, link target and sha256.
struct Canary {
    dir: PathBuf,
    before: Vec<String>,
}

impl Canary {
    /// A text file plus a copy of the test model under each of `models`.
    fn new(env: &TestEnv, models: &[&str]) -> Self {
        let dir = base(env).join("canary");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("keep.txt"), b"the canary must survive").unwrap();
        for name in models {
            place_model(&dir.join(name));
        }
        Self::around(dir)
    }

    /// Fingerprint a folder that already exists.
    fn around(dir: PathBuf) -> Self {
        let before = fingerprint(&dir);
        assert!(!before.is_empty());
        Self { dir, before }
    }

    #[track_caller]
    fn assert_untouched(&self, after: &str) {
        assert_eq!(
            fingerprint(&self.dir),
            self.before,
            "the canary changed after {after}"
        );
    }
}

fn fingerprint(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .expect("read the canary")
            .map(|entry| entry.expect("canary entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let metadata = fs::symlink_metadata(&path).unwrap();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            let mode = std::os::unix::fs::PermissionsExt::mode(&metadata.permissions());
            if metadata.file_type().is_symlink() {
                let target = fs::read_link(&path).unwrap();
                out.push(format!("link {relative} -> {}", target.display()));
            } else if metadata.is_dir() {
                out.push(format!("dir {relative} {mode:o}"));
                walk(root, &path, out);
            } else {
                let digest = Sha256::digest(fs::read(&path).unwrap());
                let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
                out.push(format!("file {relative} {mode:o} {} {hex}", metadata.len()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

/// Replace the folder or file at `path` by a symlink to `target`.
fn plant(path: &Path, target: &Path) {
    let metadata = fs::symlink_metadata(path).expect("the path to replace exists");
    if metadata.is_dir() {
        fs::remove_dir_all(path).unwrap();
    } else {
        fs::remove_file(path).unwrap();
    }
    symlink(target, path).unwrap();
}

/// `olm verify` exits 1 and names the planted link on an OUTSIDE line.
#[track_caller]
fn assert_verify_names(env: &TestEnv, link: &Path, canary: &Canary) {
    let output = run(env.olm().arg("verify"));
    assert_exit(&output, 1);
    let expected = format!("{} {ESCAPES}", link.display());
    assert!(
        stdout(&output)
            .lines()
            .any(|line| line.starts_with("OUTSIDE") && line.contains(&expected)),
        "verify names {}:\n{}\n{}",
        link.display(),
        stdout(&output),
        stderr(&output)
    );
    assert!(stderr(&output).contains("lead outside the store"));
    canary.assert_untouched("olm verify");
}

/// `olm run NAME` (and `olm show NAME`) refuse with one error naming the link, exit 1.
#[track_caller]
fn assert_run_refused(env: &TestEnv, name: &str, link: &Path, canary: &Canary) {
    for args in [vec!["run", name, "hi", "-n", "2"], vec!["show", name]] {
        let output = run(env.olm().args(&args));
        assert_exit(&output, 1);
        let message = stderr(&output);
        assert!(
            message.contains(&format!("{} {ESCAPES}", link.display())),
            "{args:?}: {message}"
        );
        assert!(
            message
                .lines()
                .filter(|line| line.starts_with("error:"))
                .count()
                == 1,
            "{message}"
        );
        assert!(stdout(&output).is_empty(), "{}", stdout(&output));
    }
    canary.assert_untouched("olm run");
}

/// `olm list` succeeds and shows nothing that lies in the canary.
#[track_caller]
fn assert_list_stays_inside(env: &TestEnv, canary: &Canary) -> serde_json::Value {
    let output = run(env.olm().args(["list", "--json"]));
    assert_exit(&output, 0);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    let canary_path = canary.dir.display().to_string();
    for row in rows.as_array().unwrap() {
        assert!(
            !row["path"]
                .as_str()
                .unwrap_or_default()
                .contains(&canary_path),
            "{row}"
        );
    }
    canary.assert_untouched("olm list");
    rows
}

/// `olm rm -y NAME` removes the name, leaves the canary as it was and says
/// what it left.
#[track_caller]
fn assert_rm_stays_inside(env: &TestEnv, name: &str, link: &Path, canary: &Canary) {
    let output = run(env.olm().args(["rm", "-y", name]));
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains(&format!("{} {ESCAPES}", link.display())),
        "rm says what it left: {}",
        stderr(&output)
    );
    canary.assert_untouched("olm rm");
    let output = run(env.olm().args(["list", "--json"]));
    assert_exit(&output, 0);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|row| row["name"] != name || row["source"] == "hf-cache"),
        "{name} is no longer a store name: {rows}"
    );
}

#[test]
fn t_g5_hf_blobs_folder_linked_out_is_never_followed() {
    let env = TestEnv::new();
    register_hf(&env);
    let canary = Canary::new(&env, &[SMOL_SHA]);
    let blobs = hf_repo(&env).join("blobs");
    plant(&blobs, &canary.dir);
    assert_verify_names(&env, &blobs, &canary);
    assert_run_refused(&env, HF_NAME, &blobs, &canary);
    let rows = assert_list_stays_inside(&env, &canary);
    assert_eq!(
        rows.as_array().unwrap().len(),
        1,
        "only the manifest row: {rows}"
    );
    assert_rm_stays_inside(&env, HF_NAME, &blobs, &canary);
    assert!(
        fs::symlink_metadata(snapshot_folder(&env).join(HF_FILE)).is_err(),
        "the snapshot link inside the store is removed"
    );
    assert!(fs::symlink_metadata(&blobs)
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn t_g5_hf_repo_folder_linked_out_is_never_followed() {
    let env = TestEnv::new();
    register_hf(&env);
    // The attacker moves the whole repo folder out and links it back.
    let repo = hf_repo(&env);
    let moved = base(&env).join("canary");
    fs::rename(&repo, &moved).unwrap();
    symlink(&moved, &repo).unwrap();
    let canary = Canary::around(moved);
    assert_verify_names(&env, &repo, &canary);
    assert_run_refused(&env, HF_NAME, &repo, &canary);
    let rows = assert_list_stays_inside(&env, &canary);
    assert_eq!(
        rows.as_array().unwrap().len(),
        1,
        "only the manifest row: {rows}"
    );
    assert_rm_stays_inside(&env, HF_NAME, &repo, &canary);
}

#[test]
fn t_g5_hf_snapshot_folder_linked_out_is_never_followed() {
    let env = TestEnv::new();
    register_hf(&env);
    let canary = Canary::new(&env, &[HF_FILE]);
    let snapshot = snapshot_folder(&env);
    plant(&snapshot, &canary.dir);
    assert_verify_names(&env, &snapshot, &canary);
    assert_run_refused(&env, HF_NAME, &snapshot, &canary);
    assert_list_stays_inside(&env, &canary);
    assert_rm_stays_inside(&env, HF_NAME, &snapshot, &canary);
    assert!(
        !hf_repo(&env).join("blobs").join(SMOL_SHA).exists(),
        "the blob inside the store, used by no name, is removed"
    );
}

#[test]
fn t_g5_hf_snapshot_file_linked_to_an_absolute_path_outside_is_never_followed() {
    let env = TestEnv::new();
    register_hf(&env);
    let canary = Canary::new(&env, &["model.gguf"]);
    let snapshot_file = snapshot_folder(&env).join(HF_FILE);
    plant(&snapshot_file, &canary.dir.join("model.gguf"));
    assert_verify_names(&env, &snapshot_file, &canary);
    assert_run_refused(&env, HF_NAME, &snapshot_file, &canary);
    assert_list_stays_inside(&env, &canary);
    assert_rm_stays_inside(&env, HF_NAME, &snapshot_file, &canary);
    assert!(
        fs::symlink_metadata(&snapshot_file).is_err(),
        "the link itself is removed"
    );
}

#[test]
fn t_c3_hf_blob_replaced_by_a_link_to_a_canary_file() {
    let env = TestEnv::new();
    register_hf(&env);
    let canary = Canary::new(&env, &["model.gguf"]);
    let blob = hf_repo(&env).join("blobs").join(SMOL_SHA);
    plant(&blob, &canary.dir.join("model.gguf"));
    assert_verify_names(&env, &blob, &canary);
    assert_run_refused(&env, HF_NAME, &blob, &canary);
    assert_list_stays_inside(&env, &canary);
    assert_rm_stays_inside(&env, HF_NAME, &blob, &canary);
    assert!(
        fs::symlink_metadata(&blob).is_err(),
        "the link itself is removed"
    );
}

#[test]
fn t_c3_imported_blob_replaced_by_a_link_to_a_canary_file() {
    let env = TestEnv::new();
    import_smol(&env);
    let canary = Canary::new(&env, &["model.gguf"]);
    let blob = local_blob(&env);
    plant(&blob, &canary.dir.join("model.gguf"));
    assert_verify_names(&env, &blob, &canary);
    assert_run_refused(&env, "smol", &blob, &canary);
    assert_list_stays_inside(&env, &canary);
    assert_rm_stays_inside(&env, "smol", &blob, &canary);
    assert!(
        fs::symlink_metadata(&blob).is_err(),
        "the link itself is removed"
    );
}

#[test]
fn t_g5_imported_blobs_folder_linked_out_is_never_followed() {
    let env = TestEnv::new();
    import_smol(&env);
    // The attacker moves the blobs out and links the folder to them.
    let blobs = olm_home(&env).join("blobs");
    let moved = base(&env).join("canary");
    fs::rename(&blobs, &moved).unwrap();
    symlink(&moved, &blobs).unwrap();
    let canary = Canary::around(moved);
    assert_verify_names(&env, &blobs, &canary);
    assert_run_refused(&env, "smol", &blobs, &canary);
    assert_list_stays_inside(&env, &canary);
    assert_rm_stays_inside(&env, "smol", &blobs, &canary);
    // A new import does not write through the link either.
    let model = smollm2();
    let output = run(env
        .olm()
        .args(["pull", model.to_str().unwrap(), "--name", "again"]));
    assert_exit(&output, 1);
    assert!(stderr(&output).contains(ESCAPES), "{}", stderr(&output));
    canary.assert_untouched("olm pull FILE --name");
}

#[test]
fn t_g5_manifests_folder_linked_out_is_never_followed() {
    let env = TestEnv::new();
    import_smol(&env);
    let manifests = olm_home(&env).join("manifests");
    let moved = base(&env).join("canary");
    fs::rename(&manifests, &moved).unwrap();
    symlink(&moved, &manifests).unwrap();
    let canary = Canary::around(moved);
    assert_verify_names(&env, &manifests, &canary);
    assert_run_refused(&env, "smol", &manifests, &canary);
    // list warns about it and lists nothing from there.
    let output = run(env.olm().args(["list", "--json"]));
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains(&format!("{} {ESCAPES}", manifests.display())),
        "{}",
        stderr(&output)
    );
    assert_eq!(stdout(&output).trim(), "[]");
    canary.assert_untouched("olm list");
    // rm finds nothing it may read: an error naming the link, nothing removed.
    let output = run(env.olm().args(["rm", "-y", "smol"]));
    assert_exit(&output, 1);
    assert!(stderr(&output).contains(ESCAPES), "{}", stderr(&output));
    canary.assert_untouched("olm rm");
    assert!(local_blob(&env).exists(), "nothing was removed");
    // Importing writes no manifest through the link.
    let model = smollm2();
    let output = run(env
        .olm()
        .args(["pull", model.to_str().unwrap(), "--name", "other"]));
    assert_exit(&output, 1);
    canary.assert_untouched("olm pull FILE --name");
}

#[test]
fn t_g5_a_manifest_file_linked_out_is_never_read() {
    let env = TestEnv::new();
    import_smol(&env);
    let manifest = olm_home(&env).join("manifests/smol/_.json");
    let canary = Canary::new(&env, &[]);
    let outside = canary.dir.join("_.json");
    fs::copy(&manifest, &outside).unwrap();
    let canary = Canary::around(canary.dir);
    plant(&manifest, &outside);
    assert_verify_names(&env, &manifest, &canary);
    assert_run_refused(&env, "smol", &manifest, &canary);
    assert_list_stays_inside(&env, &canary);
    let output = run(env.olm().args(["rm", "-y", "smol"]));
    assert_exit(&output, 1);
    assert!(stderr(&output).contains(ESCAPES), "{}", stderr(&output));
    canary.assert_untouched("olm rm");
}

#[test]
fn t_g5_files_other_tools_downloaded_are_listed_only_inside_the_store() {
    let env = TestEnv::new();
    lay_out_hf_cache(&env);
    // A second repo, not registered, whose snapshot folder leads out.
    let canary = Canary::new(&env, &["other-Q8_0.gguf"]);
    let other = base(&env).join("hf-home/hub/models--evil--Other-GGUF");
    fs::create_dir_all(other.join("snapshots")).unwrap();
    fs::create_dir_all(other.join("refs")).unwrap();
    fs::write(other.join("refs/main"), COMMIT).unwrap();
    let other_snapshot = other.join("snapshots").join(COMMIT);
    symlink(&canary.dir, &other_snapshot).unwrap();
    let rows = assert_list_stays_inside(&env, &canary);
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|row| row["name"].as_str())
        .collect();
    assert_eq!(names, vec![HF_NAME], "the good repo only");
    let output = run(env.olm().args(["run", "evil/Other-GGUF:Q8_0", "hi"]));
    assert_exit(&output, 1);
    assert!(
        stderr(&output).contains(&format!("{} {ESCAPES}", other_snapshot.display())),
        "{}",
        stderr(&output)
    );
    canary.assert_untouched("olm run");
    // refs/ leading out: the repo is refused as a whole.
    let refs = other.join("refs");
    plant(&refs, &canary.dir);
    let output = run(env.olm().args(["run", "evil/Other-GGUF:Q8_0", "hi"]));
    assert_exit(&output, 1);
    assert!(
        stderr(&output).contains(&format!("{} {ESCAPES}", refs.display())),
        "{}",
        stderr(&output)
    );
    canary.assert_untouched("olm run");
}

#[test]
fn the_normal_layouts_work_end_to_end() {
    let env = TestEnv::new();
    // Another tool's download, in the HF layout with a relative snapshot link.
    lay_out_hf_cache(&env);
    let rows = {
        let output = run(env.olm().args(["list", "--json"]));
        assert_exit(&output, 0);
        serde_json::from_str::<serde_json::Value>(&stdout(&output)).unwrap()
    };
    assert_eq!(rows[0]["source"], "hf-cache", "{rows}");
    assert_exit(&run(env.olm().args(["run", HF_NAME, "hi", "-n", "2"])), 0);
    // Registered offline, and imported from a file.
    register_hf_laid_out(&env);
    import_smol(&env);
    let output = run(env.olm().args(["list", "--json"]));
    assert_exit(&output, 0);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    let sources: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|row| row["source"].as_str())
        .collect();
    assert_eq!(sources, vec!["local", "hub"], "{rows}");
    let output = run(env.olm().arg("verify"));
    assert_exit(&output, 0);
    assert_eq!(
        stdout(&output)
            .lines()
            .filter(|line| line.starts_with("ok"))
            .count(),
        2,
        "{}",
        stdout(&output)
    );
    assert_exit(&run(env.olm().args(["run", HF_NAME, "hi", "-n", "2"])), 0);
    assert_exit(&run(env.olm().args(["verify", "smol", HF_NAME])), 0);
    // rm removes the snapshot link and the blob, then the import's blob.
    let output = run(env.olm().args(["rm", "-y", HF_NAME]));
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("1 file(s) deleted") && !stderr(&output).contains("warning"),
        "{}",
        stderr(&output)
    );
    assert!(fs::symlink_metadata(snapshot_folder(&env).join(HF_FILE)).is_err());
    assert!(!hf_repo(&env).join("blobs").join(SMOL_SHA).exists());
    assert_exit(&run(env.olm().args(["rm", "-y", "smol"])), 0);
    assert!(!local_blob(&env).exists());
    assert!(!olm_home(&env).join("manifests/smol").exists());
    assert_exit(&run(env.olm().arg("verify")), 0);
    let digest = Sha256::digest(fs::read(smollm2()).unwrap());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    assert_eq!(hex, SMOL_SHA, "the test model is never touched");
    let output = run(env.olm().args(["list", "--json"]));
    assert_eq!(stdout(&output).trim(), "[]");
}

#[test]
fn a_snapshot_link_to_another_blob_of_the_repo_is_a_changed_file() {
    let env = TestEnv::new();
    register_hf(&env);
    let other = hf_repo(&env).join("blobs").join("a".repeat(64));
    place_model(&other);
    let snapshot_file = snapshot_folder(&env).join(HF_FILE);
    fs::remove_file(&snapshot_file).unwrap();
    symlink(format!("../../blobs/{}", "a".repeat(64)), &snapshot_file).unwrap();
    let output = run(env.olm().arg("verify"));
    assert_exit(&output, 1);
    assert!(
        stdout(&output).contains("CHANGED") && stdout(&output).contains("not to this blob"),
        "{}",
        stdout(&output)
    );
}
