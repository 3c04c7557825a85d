//! Work and reads with bounds (T-G3, T-G4; issue 12): a hostile chat
//! template, schema, stdin or file ends fast with one error line and bounded
//! memory; Ctrl-C stops a template mid-render; structured output cut short
//! fails loudly; an abort inside llama.cpp while loading is one error line
//! and exit 5.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{assert_exit, run, smollm2, stderr, stdout, TestEnv};

/// A run's exit code, output, wall time and peak memory.
pub struct Measured {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// Peak resident memory of the process and the children it waited for.
    pub max_rss_mib: u64,
}

/// Run `command` to its end, measuring it with `wait4`.
#[expect(
    clippy::zombie_processes,
    reason = "reaped by wait4, which also reports its peak memory"
)]
pub fn measure(command: &mut Command) -> Measured {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value to be filled in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child with valid out-pointers.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4 failed");
    let elapsed = started.elapsed();
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Measured {
        code,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
        elapsed,
        max_rss_mib: (usage.ru_maxrss as u64) / 1024,
    }
}

impl Measured {
    /// Exit `code`, one `error:` line containing `expected`, within `limit`.
    #[track_caller]
    pub fn assert_refused(&self, code: i32, expected: &str, limit: Duration) {
        assert_eq!(
            self.code,
            Some(code),
            "exit status\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout,
            self.stderr
        );
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|line| line.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "one error line in\n{}", self.stderr);
        assert!(
            errors[0].contains(expected),
            "{expected:?} not in {:?}",
            errors[0]
        );
        assert!(
            self.elapsed < limit,
            "took {:?} (limit {limit:?})",
            self.elapsed
        );
    }
}

fn template_file(env: &TestEnv, name: &str, source: &str) -> PathBuf {
    let path = env.path().join(name);
    std::fs::write(&path, source).expect("write template");
    path
}

fn run_with_template(env: &TestEnv, template: &Path) -> Measured {
    measure(
        env.olm()
            .arg("run")
            .arg(smollm2())
            .arg("--chat-template")
            .arg(template)
            .args(["-n", "4", "hi"]),
    )
}

/// T-G3: a string doubled sixty times would be 2^64 bytes; the template
/// process's memory limit stops it long before.
#[test]
fn a_template_that_doubles_a_string_fails_fast_in_bounded_memory() {
    let env = TestEnv::new();
    let template = template_file(
        &env,
        "double.jinja",
        "{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(60) %}\
         {% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    );
    let run = run_with_template(&env, &template);
    run.assert_refused(1, "chat template", Duration::from_secs(10));
    assert!(run.stderr.contains("memory"), "{}", run.stderr);
    assert!(
        run.max_rss_mib < 1024,
        "peak memory {} MiB",
        run.max_rss_mib
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

/// A loop of ten billion steps runs out of fuel; one of slow steps runs out
/// of time. Both are an error within seconds.
#[test]
fn endless_and_slow_templates_stop_within_seconds() {
    let env = TestEnv::new();
    let endless = template_file(
        &env,
        "endless.jinja",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    );
    run_with_template(&env, &endless).assert_refused(1, "chat template", Duration::from_secs(10));
    let slow = template_file(&env, "slow.jinja", SLOW_TEMPLATE);
    let run = run_with_template(&env, &slow);
    run.assert_refused(1, "longer than", Duration::from_secs(12));
}

/// Each step upper-cases 10 MB: few instructions, much time.
const SLOW_TEMPLATE: &str = "{% set s = 'a' * 10000000 %}{% for i in range(100000) %}\
     {% set t = s|upper %}{% endfor %}{{ t|length }}";

/// Ctrl-C while a template renders: exit 130 at once, not after it ends.
#[test]
fn ctrl_c_stops_a_template_mid_render() {
    let env = TestEnv::new();
    let slow = template_file(&env, "slow.jinja", SLOW_TEMPLATE);
    let mut child = env
        .olm()
        .arg("run")
        .arg(smollm2())
        .arg("--chat-template")
        .arg(&slow)
        .args(["-n", "4", "hi"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn olm");
    // Model load and the template's start; then Ctrl-C to the group, as a
    // terminal sends it.
    std::thread::sleep(Duration::from_millis(2500));
    let interrupted = Instant::now();
    // SAFETY: signals our own process group.
    unsafe {
        libc::kill(-(child.id() as libc::pid_t), libc::SIGINT);
    }
    let status = wait_at_most(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(
        interrupted.elapsed() < Duration::from_secs(2),
        "exit took {:?} after Ctrl-C",
        interrupted.elapsed()
    );
}

fn wait_at_most(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("no exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A FIFO at `path` (no writer: opening it for reading would block).
pub(crate) fn make_fifo(path: &Path) {
    let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo gets a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// T-G4: `--schema` and `--chat-template` read regular files only, with a
/// size bound: a device, a FIFO or a huge file is refused at once.
#[test]
fn schema_and_template_files_are_bounded_regular_files() {
    let env = TestEnv::new();
    let fifo = env.path().join("fifo");
    make_fifo(&fifo);
    let huge = env.path().join("huge.json");
    std::fs::write(&huge, vec![b' '; 3 << 20]).unwrap();
    for (flag, file, expected) in [
        ("--schema", Path::new("/dev/zero"), "not a regular file"),
        ("--schema", fifo.as_path(), "not a regular file"),
        ("--schema", huge.as_path(), "larger than"),
        ("--chat-template", fifo.as_path(), "not a regular file"),
        (
            "--chat-template",
            Path::new("/dev/zero"),
            "not a regular file",
        ),
    ] {
        measure(
            env.olm()
                .arg("run")
                .arg(smollm2())
                .arg(flag)
                .arg(file)
                .arg("hi"),
        )
        .assert_refused(2, expected, Duration::from_secs(3));
    }
}

/// T-G4: `olm pull PATH --name` refuses a FIFO or a folder named like a
/// model as `show` and `run` do (exit 5, "not a regular file"), at once;
/// it said "no such file" (exit 3).
#[test]
fn pull_refuses_a_fifo_or_folder_as_show_does() {
    let env = TestEnv::new();
    let fifo = env.path().join("fifo.gguf");
    make_fifo(&fifo);
    let folder = env.path().join("folder.gguf");
    std::fs::create_dir(&folder).unwrap();
    for path in [&fifo, &folder] {
        measure(env.olm().arg("pull").arg(path).args(["--name", "t"])).assert_refused(
            5,
            "not a regular file",
            Duration::from_secs(3),
        );
        measure(env.olm().arg("show").arg(path)).assert_refused(
            5,
            "not a regular file",
            Duration::from_secs(3),
        );
    }
}

/// T-G4: olm's own `config.toml` is read the same way: a FIFO or a device
/// in its place is refused at once, not read forever.
#[test]
fn the_config_file_is_a_bounded_regular_file() {
    let env = TestEnv::new();
    let home = env.path().join("olm-home");
    std::fs::create_dir_all(&home).unwrap();
    let config = home.join("config.toml");
    make_fifo(&config);
    measure(env.olm().args(["list", "--available"])).assert_refused(
        2,
        "config.toml: not a regular file",
        Duration::from_secs(3),
    );
    std::fs::remove_file(&config).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &config).unwrap();
    measure(env.olm().args(["list", "--available"])).assert_refused(
        2,
        "config.toml: not a regular file",
        Duration::from_secs(3),
    );
}

/// T-G3: a pattern of nested alternations (512 of them in 2 KB) would make
/// every generated token take seconds; it is refused before the model loads.
#[test]
fn a_schema_pattern_of_nested_alternations_is_refused() {
    let env = TestEnv::new();
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"x": {"type": "string", "pattern": format!("^{}$", crate::common::nested_alternations(9))}},
        "required": ["x"],
    });
    let path = env.path().join("schema.json");
    std::fs::write(&path, schema.to_string()).unwrap();
    measure(
        env.olm()
            .arg("run")
            .arg(smollm2())
            .arg("--schema")
            .arg(&path)
            .arg("hi"),
    )
    .assert_refused(2, "alternatives", Duration::from_secs(3));
}

/// T-G4: 50 MB on stdin is refused once more has arrived than the context
/// could hold, not after reading, rendering and tokenizing all of it.
#[test]
fn stdin_beyond_the_context_is_refused_while_it_is_read() {
    let env = TestEnv::new();
    let script = format!(
        "head -c 50000000 /dev/zero | tr '\\0' 'a' | {} run {} -c 512 'Summarize'",
        env!("CARGO_BIN_EXE_olm"),
        smollm2().display()
    );
    let run = measure(env.olm_env(&mut Command::new("sh")).args(["-c", &script]));
    run.assert_refused(
        1,
        "cannot fit a context of 512 tokens",
        Duration::from_secs(5),
    );
    assert!(run.stderr.contains("stdin"), "{}", run.stderr);
    assert!(run.max_rss_mib < 512, "peak memory {} MiB", run.max_rss_mib);
}

/// A `--format json` answer cut by `--max-tokens` is not JSON: exit 1 and
/// say so, also with `--json` (whose object still says `max_tokens`).
#[test]
fn structured_output_cut_short_exits_1() {
    let env = TestEnv::new();
    let plain = run(env.olm().arg("run").arg(smollm2()).args([
        "--format",
        "json",
        "--temperature",
        "0",
        "-n",
        "3",
        "Describe a cat as JSON",
    ]));
    assert_exit(&plain, 1);
    assert!(
        stderr(&plain).contains("error: the JSON is incomplete"),
        "{}",
        stderr(&plain)
    );
    assert!(
        stderr(&plain).contains("--max-tokens"),
        "{}",
        stderr(&plain)
    );
    assert!(
        !stdout(&plain).is_empty(),
        "the partial answer is still shown"
    );

    let json = run(env.olm().arg("run").arg(smollm2()).args([
        "--format",
        "json",
        "--json",
        "--temperature",
        "0",
        "-n",
        "3",
        "Describe a cat as JSON",
    ]));
    assert_exit(&json, 1);
    let report: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("one object");
    assert_eq!(report["stop_reason"], "max_tokens");
}

/// An abort inside llama.cpp while a model loads (a failed `GGML_ASSERT`,
/// or an uncaught C++ exception's `SIGABRT`) ends `olm run` with one error
/// line naming the file and exit 5: no core dump, no backtrace, nothing on
/// stdout. The fault is injected (debug builds only) where llama.cpp loads.
#[test]
fn an_abort_inside_llama_cpp_while_loading_is_one_error_line() {
    let env = TestEnv::new();
    for fault in ["abort", "signal"] {
        let run = measure(
            env.olm()
                .env("OLM_TEST_FAULT", fault)
                .arg("run")
                .arg(smollm2())
                .arg("hi"),
        );
        run.assert_refused(
            5,
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            Duration::from_secs(10),
        );
        assert!(run.stderr.contains("not a usable model"), "{}", run.stderr);
        assert!(run.stdout.is_empty(), "{fault}: stdout {:?}", run.stdout);
        for noise in ["gdb", "backtrace", "core dumped", "#0 "] {
            assert!(
                !run.stderr.contains(noise),
                "{fault}: {noise} in {}",
                run.stderr
            );
        }
    }
}
