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
    let cpu_has_avx2 = cpuinfo.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "avx2"));
    let env = TestEnv::new();
    let output = run(env.olm().arg("--version"));
    assert_exit(&output, 0);
    let version = stdout(&output);
    assert!(version.contains("llama.cpp"), "{version}");
    if cpu_has_avx2 {
        assert!(version.contains("AVX2 = 1"), "the CPU has AVX2 but llama.cpp was built without it:\n{version}");
    } else {
        eprintln!("this CPU has no AVX2; nothing to check");
    }
}
