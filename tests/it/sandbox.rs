//! The offline sandbox (issue 15): under `strace -f`, `run`, `chat`, `show`,
//! `list`, `bench` and `serve` install the Landlock ruleset and the seccomp
//! filter and make no connect or send to any inet address; from inside the
//! sandbox the kernel refuses a TCP connection, a UDP datagram and a bind
//! (the debug-only `olm __net-probe`); `serve` accepts on its port, cannot
//! connect out, and still pulls through its pull process, the one process
//! that keeps the network; `--allow-network` and `OLM_ALLOW_NETWORK=1` lift it.

use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::server::{http, listening};
use crate::common::{assert_exit, run, skip_or_fail, smollm2, stderr, stdout, TestEnv};
use crate::fakehub::FakeHub;

/// `EACCES`: what Landlock and the seccomp filter answer.
const PERMISSION_DENIED: i64 = 13;

/// Whether strace can trace here; otherwise the test fails unless
/// `OLM_ALLOW_SKIP` names `strace`.
fn strace_works() -> bool {
    let probe = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "true"])
        .output();
    match probe {
        Ok(output) if output.status.success() => true,
        Ok(output) => {
            skip_or_fail(
                "strace",
                &format!("strace cannot trace here: {}", stderr(&output)),
            );
            false
        }
        Err(error) => {
            skip_or_fail(
                "strace",
                &format!("strace is not installed ({error}); run scripts/setup-build-deps.sh"),
            );
            false
        }
    }
}

/// The system calls the trace records.
const TRACED: &str = "trace=socket,connect,sendto,sendmsg,sendmmsg,landlock_restrict_self,seccomp";

/// `strace -f` around `olm ARGS` in `env`: the output and the trace.
fn traced(env: &TestEnv, args: &[&str], input: Option<&str>) -> (Output, String) {
    let trace = env.path().join(format!("trace-{}.txt", args[0]));
    let mut command = Command::new("strace");
    env.olm_env(&mut command);
    command
        .args(["-f", "-qq", "-s", "256", "-e", TRACED, "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_olm"))
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn strace");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(input.as_bytes()).expect("write stdin");
    }
    let output = child.wait_with_output().expect("strace ends");
    let text = std::fs::read_to_string(&trace).expect("read the trace");
    (output, text)
}

/// Lines of a trace that reach an inet address: a connect, or a send with
/// a destination, to AF_INET or AF_INET6.
fn inet_traffic(trace: &str) -> Vec<&str> {
    trace
        .lines()
        .filter(|line| {
            let call = line
                .split_once(' ')
                .map_or(*line, |(_, rest)| rest)
                .trim_start();
            (call.starts_with("connect(") || call.starts_with("send"))
                && (line.contains("AF_INET") || line.contains("AF_INET6"))
        })
        .collect()
}

/// The trace shows the Landlock ruleset and the seccomp filter installed,
/// each successfully, by `processes` processes at least.
#[track_caller]
fn assert_sandbox_installed(trace: &str, processes: usize) {
    let installed = |call: &str| {
        let mut pids: Vec<&str> = trace
            .lines()
            .filter(|line| line.contains(call) && line.trim_end().ends_with("= 0"))
            .filter_map(|line| line.split_whitespace().next())
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids.len()
    };
    assert!(
        installed("landlock_restrict_self(") >= processes,
        "no Landlock ruleset installed:\n{trace}"
    );
    assert!(
        installed("seccomp(SECCOMP_SET_MODE_FILTER") >= processes,
        "no seccomp filter installed:\n{trace}"
    );
}

/// `olm run`, a piped `olm chat`, `show`, `list` and `bench` install the
/// sandbox and send nothing to any inet address.
#[test]
fn run_chat_show_list_and_bench_install_the_sandbox_and_reach_no_address() {
    if !strace_works() {
        return;
    }
    let env = TestEnv::new();
    let model = smollm2();
    let model = model.to_str().expect("utf-8 path");
    let cases: [(&[&str], Option<&str>); 5] = [
        (
            &["run", model, "Say hi", "-n", "4", "--temperature", "0"],
            None,
        ),
        (
            &["chat", model, "-n", "4", "--temperature", "0"],
            Some("Say hi\n/bye\n"),
        ),
        (&["show", model], None),
        (&["list"], None),
        (&["bench", model, "-p", "16", "-n", "4", "-r", "1"], None),
    ];
    for (args, input) in cases {
        let (output, trace) = traced(&env, args, input);
        assert_exit(&output, 0);
        assert_sandbox_installed(&trace, 1);
        let traffic = inet_traffic(&trace);
        assert!(traffic.is_empty(), "olm {}: {traffic:#?}", args[0]);
        if matches!(args[0], "run" | "chat" | "bench") {
            assert!(
                !stdout(&output).trim().is_empty(),
                "olm {}: no output",
                args[0]
            );
        }
    }
}

/// A free TCP port on 127.0.0.1 and a listener that accepts there: the
/// target the probe tries to reach (it is reachable: without the sandbox
/// the same probe connects).
fn target() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind a target")
}

fn probe(env: &TestEnv, args: &[&str], vars: &[(&str, &str)]) -> Value {
    let output = run(env.olm().envs(vars.iter().copied()).args(args));
    assert_exit(&output, 0);
    serde_json::from_str(&stdout(&output)).expect("probe prints JSON")
}

#[track_caller]
fn assert_refused(report: &Value, attempt: &str) {
    assert_eq!(report[attempt]["ok"], false, "{attempt}: {report}");
    assert_eq!(
        report[attempt]["errno"].as_i64(),
        Some(PERMISSION_DENIED),
        "{attempt}: {report}"
    );
}

/// From inside the sandbox the kernel refuses a TCP connection, a UDP
/// datagram and a listener; `--allow-network` and `OLM_ALLOW_NETWORK=1`
/// lift it, and the same attempts succeed.
#[test]
fn the_kernel_refuses_the_network_inside_olm_unless_allowed() {
    let env = TestEnv::new();
    let listener = target();
    let address = listener.local_addr().expect("address").to_string();
    let sandboxed = probe(&env, &["__net-probe", &address], &[]);
    for attempt in ["tcp_connect", "udp_send", "tcp_bind"] {
        assert_refused(&sandboxed, attempt);
    }
    for lifted in [
        probe(&env, &["--allow-network", "__net-probe", &address], &[]),
        probe(
            &env,
            &["__net-probe", &address],
            &[("OLM_ALLOW_NETWORK", "1")],
        ),
    ] {
        for attempt in ["tcp_connect", "udp_send", "tcp_bind"] {
            assert_eq!(lifted[attempt]["ok"], true, "{attempt}: {lifted}");
        }
    }
    // OLM_ALLOW_NETWORK=0 is no escape hatch.
    let off = probe(
        &env,
        &["__net-probe", &address],
        &[("OLM_ALLOW_NETWORK", "0")],
    );
    assert_refused(&off, "tcp_connect");
}

/// The sandbox of `olm serve --port P`: binding P works, binding any other
/// port does not; once listening, a TCP socket made before cannot connect
/// (Landlock alone), and no new socket can be made (seccomp).
#[test]
fn the_serve_sandbox_binds_its_port_only_and_connects_nowhere() {
    let env = TestEnv::new();
    let listener = target();
    let address = listener.local_addr().expect("address").to_string();
    let port = {
        let free = TcpListener::bind("127.0.0.1:0").expect("find a free port");
        free.local_addr().expect("address").port()
    };
    let report = probe(
        &env,
        &["__net-probe", &address, "--listen", &port.to_string()],
        &[],
    );
    assert_eq!(report["listener"]["ok"], true, "{report}");
    assert_eq!(report["close_network"]["ok"], true, "{report}");
    for attempt in [
        "bind_other_port",
        "early_socket_connect",
        "tcp_connect",
        "udp_send",
        "tcp_bind",
    ] {
        assert_refused(&report, attempt);
    }
}

/// `/proc/PID/status` fields of a process.
fn proc_status(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
}

fn status_field(status: &str, field: &str) -> Option<String> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .map(|value| value.trim().to_owned())
}

/// The child processes of `pid` (started by any of its threads) with
/// their command lines.
fn children(pid: u32) -> Vec<(u32, String)> {
    let mut listed = String::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        listed += &std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        listed.push(' ');
    }
    listed
        .split_whitespace()
        .filter_map(|child| child.parse().ok())
        .map(|child: u32| {
            let command = std::fs::read(format!("/proc/{child}/cmdline"))
                .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
                .unwrap_or_default();
            (child, command)
        })
        .collect()
}

/// `olm serve` under `strace -f`: it answers on its port (a generation in a
/// worker included), installs the sandbox in itself and its worker, closes
/// the network in all its threads once listening, and connects nowhere; its
/// pull process is the one process outside the sandbox.
#[test]
fn serve_answers_on_its_port_and_connects_nowhere() {
    if !strace_works() {
        return;
    }
    let env = TestEnv::new();
    let trace = env.path().join("trace-serve.txt");
    let mut command = Command::new("strace");
    env.olm_env(&mut command);
    command
        .args(["-f", "-qq", "-s", "256", "-e", TRACED, "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_olm"))
        .args(["serve", "--port", "0", "-c", "512"])
        .arg(smollm2());
    let (mut child, port, _stderr) = listening(command);
    let reply = http(
        port,
        "POST",
        "/api/generate",
        &[("Host", "127.0.0.1"), ("Content-Type", "application/json")],
        &json!({"model": "SmolLM2-135M-Instruct.Q4_1", "prompt": "Say hi.", "stream": false,
                "options": {"num_predict": 4, "temperature": 0}})
        .to_string(),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);

    let serve = children(child.id())
        .into_iter()
        .find(|(_, command)| command.contains("serve"))
        .map(|(pid, _)| pid)
        .expect("olm serve runs under strace");
    let status = proc_status(serve);
    assert_eq!(
        status_field(&status, "Seccomp:").as_deref(),
        Some("2"),
        "{status}"
    );
    assert_eq!(
        status_field(&status, "NoNewPrivs:").as_deref(),
        Some("1"),
        "{status}"
    );
    let processes = children(serve);
    let worker = processes
        .iter()
        .find(|(_, command)| command.contains("__worker"))
        .expect("a worker runs the model");
    assert_eq!(
        status_field(&proc_status(worker.0), "Seccomp:").as_deref(),
        Some("2")
    );
    let puller = processes
        .iter()
        .find(|(_, command)| command.contains("__pull"))
        .expect("the pull process runs");
    assert_eq!(
        status_field(&proc_status(puller.0), "Seccomp:").as_deref(),
        Some("0"),
        "the pull process keeps the network"
    );

    // SAFETY: kill() with a pid of this test's own grandchild.
    unsafe { libc::kill(serve as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait for strace").is_none() {
        assert!(Instant::now() < deadline, "olm serve did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    let trace = std::fs::read_to_string(&trace).expect("read the trace");
    // The server and its worker (the pull process is exempt by design).
    assert_sandbox_installed(&trace, 2);
    assert!(
        trace
            .lines()
            .any(|line| line.contains("SECCOMP_FILTER_FLAG_TSYNC")
                && line.trim_end().ends_with("= 0")),
        "the network was not closed in every thread once listening:\n{trace}"
    );
    let traffic = inet_traffic(&trace);
    assert!(traffic.is_empty(), "{traffic:#?}");
}

/// A sandboxed server still pulls (its pull process has the network), and
/// the server process itself stays in the sandbox; `--allow-network`
/// serves without a sandbox and without a pull process.
#[test]
fn a_sandboxed_server_pulls_through_its_pull_process() {
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    let mut command = hub.olm(&env);
    command.args(["serve", "--port", "0", "-c", "512"]);
    let (mut child, port, _stderr) = listening(command);
    let pull = http(
        port,
        "POST",
        "/api/pull",
        &[("Host", "127.0.0.1"), ("Content-Type", "application/json")],
        &json!({"model": "test/SmolLM2-GGUF", "stream": false}).to_string(),
    );
    assert_eq!(pull.status, 200, "{}", pull.body);
    assert!(
        !hub.range_starts().is_empty(),
        "the bytes came from the hub"
    );
    assert_eq!(
        status_field(&proc_status(child.id()), "Seccomp:").as_deref(),
        Some("2"),
        "the server process is sandboxed"
    );
    let tags = http(port, "GET", "/api/tags", &[("Host", "127.0.0.1")], "");
    assert!(
        tags.body.contains("\"name\":\"test/SmolLM2-GGUF\""),
        "{}",
        tags.body
    );
    let _ = child.kill();
    let _ = child.wait();

    let mut open = hub.olm(&env);
    open.args(["serve", "--allow-network", "--port", "0", "-c", "512"]);
    let (mut child, _port, _stderr) = listening(open);
    assert_eq!(
        status_field(&proc_status(child.id()), "Seccomp:").as_deref(),
        Some("0")
    );
    assert!(
        !children(child.id())
            .iter()
            .any(|(_, command)| command.contains("__pull")),
        "no pull process without a sandbox"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// `--verbose` names the sandbox in force.
#[test]
fn verbose_says_which_sandbox_is_in_force() {
    let env = TestEnv::new();
    let output = run(env.olm().arg("run").arg(smollm2()).args([
        "hi",
        "-n",
        "2",
        "--temperature",
        "0",
        "--verbose",
    ]));
    assert_exit(&output, 0);
    let err = stderr(&output);
    assert!(
        err.contains("sandbox: landlock network rules on (kernel ABI")
            && err.contains("seccomp socket filter on"),
        "{err}"
    );
}

/// The sandboxed server itself cannot reach the hub: with its pull process
/// left out (a debug-only switch), `/api/pull` fails with a network error
/// and the hub never hears from it.
#[test]
fn the_server_process_itself_cannot_connect_to_the_hub() {
    let env = TestEnv::new();
    let hub = FakeHub::start(&env);
    let mut command = hub.olm(&env);
    command.args(["serve", "--port", "0", "-c", "512", "--test-pull-in-server"]);
    let (mut child, port, stderr_lines) = listening(command);
    let pull = http(
        port,
        "POST",
        "/api/pull",
        &[("Host", "127.0.0.1"), ("Content-Type", "application/json")],
        &json!({"model": "test/SmolLM2-GGUF", "stream": false}).to_string(),
    );
    assert_eq!(pull.status, 502, "{}", pull.body);
    assert!(
        pull.body.to_lowercase().contains("permission denied"),
        "{}",
        pull.body
    );
    assert!(hub.requests().is_empty(), "{:?}", hub.requests());
    let health = http(port, "GET", "/health", &[("Host", "127.0.0.1")], "");
    assert_eq!(health.status, 200, "the server goes on: {}", health.body);
    let _ = child.kill();
    let _ = child.wait();
    drop(stderr_lines);
}
