//! The command line itself: help, version, and the CPU features llama.cpp was built with.

use crate::common::{assert_exit, run, stdout, TestEnv};

#[test]
fn help_lists_run_and_exit_codes() {
    let env = TestEnv::new();
    let output = run(env.olm().arg("--help"));
    assert_exit(&output, 0);
    let help = stdout(&output);
    assert!(help.contains("run"), "{help}");
    assert!(help.contains("Exit codes"), "{help}");
}

#[test]
fn llama_cpp_uses_avx2_when_the_cpu_has_it() {
    // Guards the native CPU build: without `-C target-cpu=native` (or with
    // SOURCE_DATE_EPOCH set) ggml silently falls back to slow SSE code.
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_has_avx2 = cpuinfo
        .lines()
        .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "avx2"));
    let env = TestEnv::new();
    let output = run(env.olm().arg("--version"));
    assert_exit(&output, 0);
    let version = stdout(&output);
    assert!(version.contains("llama.cpp"), "{version}");
    if cpu_has_avx2 {
        assert!(
            version.contains("AVX2 = 1"),
            "the CPU has AVX2 but llama.cpp was built without it:\n{version}"
        );
    } else {
        eprintln!("this CPU has no AVX2; nothing to check");
    }
}

#[test]
fn bash_completion_script_loads_cleanly() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("completions/olm.bash");
    let output = std::process::Command::new("bash")
        .args(["--noprofile", "--norc", "-c"])
        .arg(format!("source '{}' && complete -p olm", script.display()))
        .output()
        .expect("run bash");
    assert_exit(&output, 0);
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout(&output).contains("complete"), "{}", stdout(&output));
}

#[test]
fn completions_command_prints_the_checked_in_script() {
    let env = TestEnv::new();
    for (shell, file) in [("bash", "olm.bash"), ("zsh", "_olm"), ("fish", "olm.fish")] {
        let output = run(env.olm().args(["completions", shell]));
        assert_exit(&output, 0);
        let checked_in = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("completions")
                .join(file),
        )
        .unwrap();
        assert!(
            output.stdout == checked_in,
            "completions/{file} differs from `olm completions {shell}`"
        );
    }
}

#[test]
fn model_names_from_the_store_complete() {
    // ollama/ollama#1653: users want `olm run <TAB>` to offer their models.
    let env = TestEnv::new();
    let import = run(env
        .olm()
        .arg("pull")
        .arg(crate::common::smollm2())
        .args(["--name", "my-smol"]));
    assert_exit(&import, 0);
    for subcommand in ["run", "chat", "show", "rm", "bench"] {
        let output = run(env
            .olm()
            .env("COMPLETE", "fish")
            .args(["--", "olm", subcommand, "my"]));
        assert_exit(&output, 0);
        assert_eq!(stdout(&output).trim(), "my-smol", "olm {subcommand} <TAB>");
    }
    let output = run(env.olm().env("COMPLETE", "fish").args(["--", "olm", "pu"]));
    assert!(stdout(&output).starts_with("pull\t"), "{}", stdout(&output));
}
