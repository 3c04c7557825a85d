//! Splitting a model over machines with llama.cpp's RPC backend, on one
//! host: real `olm worker` processes on loopback ports (and, where user
//! namespaces allow, in network namespaces of their own joined by veth
//! pairs), the real test model, and fake workers on 127.0.0.1 that answer
//! the handshake wrongly on purpose.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{assert_exit, run, skip_or_fail, smollm2, stderr, stdout, TestEnv};

/// The RPC protocol this olm speaks (`olm worker --version`).
const PROTOCOL: &str = "7.0.0";
/// The test model's repeating layers.
const N_LAYER: u64 = 30;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("find a free port")
        .port()
}

/// A running `olm worker`, stopped (SIGTERM) when dropped.
struct Worker {
    child: Child,
    port: u16,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Worker {
    fn start(env: &TestEnv) -> Self {
        Self::start_with(env, &[])
    }

    fn start_with(env: &TestEnv, args: &[&str]) -> Self {
        let port = free_port();
        let mut child = env
            .olm()
            .args(["worker", "--bind", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn olm worker");
        let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let captured = Arc::new(Mutex::new(Vec::new()));
        let ready = format!("listening on 127.0.0.1:{port}");
        loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                let seen = captured.lock().map(|l| l.join("\n")).unwrap_or_default();
                panic!(
                    "olm worker exited before listening: {:?}\n{seen}",
                    child.wait()
                );
            };
            let done = line.contains(&ready);
            captured
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(line);
            if done {
                break;
            }
        }
        let sink = Arc::clone(&captured);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });
        Self {
            child,
            port,
            stderr: captured,
        }
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
    }

    /// The `olm __rpc-server` process the worker runs (llama.cpp's server).
    fn server_pid(&self) -> i32 {
        let parent = self.child.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = children(parent).into_iter().next() {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "olm worker has no RPC server child"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if !self.is_running() {
            // Reaped: its pid may be another process's by now.
            return;
        }
        signal(self.child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: i32, signal: i32) {
    // SAFETY: signals a process this test started.
    unsafe { libc::kill(pid, signal) };
}

/// Processes whose parent is `parent`.
fn children(parent: i32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<i32>().ok());
        if ppid == Some(parent) {
            found.push(pid);
        }
    }
    found
}

/// `assert_exit(output, 0)` for a run that used `workers`: when it failed,
/// what the workers said too (a worker whose RPC server ended says why).
#[track_caller]
fn assert_answered(output: &Output, workers: &[&Worker]) {
    if output.status.code() == Some(0) {
        return;
    }
    let said: Vec<String> = workers
        .iter()
        .map(|worker| {
            format!(
                "--- olm worker {} ---\n{}",
                worker.endpoint(),
                worker.stderr()
            )
        })
        .collect();
    panic!(
        "expected exit 0, got {:?}\n--- stderr ---\n{}\n{}",
        output.status,
        stderr(output),
        said.join("\n")
    );
}

/// `olm run` of the test model at temperature 0, as JSON.
fn answer(env: &TestEnv, extra: &[&str]) -> Output {
    let model = smollm2();
    let mut command = env.olm();
    command
        .args(["run", model.to_str().expect("utf-8 path")])
        .args(["--temperature", "0", "-n", "24", "--no-cache", "--json"])
        .args(extra)
        .arg("Name three colors of the rainbow.");
    run(&mut command)
}

/// `olm run` over the worker at `endpoint`, counting on for `tokens`
/// tokens (a long answer that streams from the start, the same each time).
fn counting_run(env: &TestEnv, endpoint: &str, tokens: u32) -> Command {
    let mut command = env.olm();
    command
        .args([
            "run",
            smollm2().to_str().expect("utf-8"),
            "--raw",
            "--no-cache",
        ])
        .args([
            "--temperature",
            "0",
            "-n",
            &tokens.to_string(),
            "--draft",
            "off",
        ])
        .args(["--rpc", endpoint])
        .arg("1, 2, 3, 4, 5, 6, 7, 8,");
    command
}

fn json(output: &Output) -> Value {
    serde_json::from_str(stdout(output).trim()).unwrap_or_else(|error| {
        panic!(
            "stdout is not JSON ({error}):\n{}\n{}",
            stdout(output),
            stderr(output)
        )
    })
}

/// The split as (device, endpoint, layers, output) per device.
fn shares(report: &Value) -> Vec<(String, Option<String>, u64, bool)> {
    report["split"]["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("no split in {report}"))
        .iter()
        .map(|share| {
            (
                share["device"].as_str().unwrap_or_default().to_owned(),
                share["endpoint"].as_str().map(str::to_owned),
                share["layers"].as_u64().unwrap_or(u64::MAX),
                share["output"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

#[test]
fn a_model_split_over_two_workers_answers_as_one_process_does() {
    let env = TestEnv::new();
    let one = Worker::start(&env);
    let two = Worker::start(&env);
    let single = answer(&env, &[]);
    assert_exit(&single, 0);
    let expected = json(&single);
    assert!(expected.get("split").is_none(), "{expected}");

    let list = format!("{},{}", one.endpoint(), two.endpoint());
    let split = answer(&env, &["--rpc", &list]);
    assert_answered(&split, &[&one, &two]);
    let report = json(&split);
    assert_eq!(report["text"], expected["text"], "{}", stderr(&split));
    assert!(
        !expected["text"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .is_empty(),
        "{expected}"
    );
    // This machine has no GPU: its CPU takes a share, as each worker does.
    let shares = shares(&report);
    assert_eq!(shares.len(), 3, "{report}");
    assert_eq!(shares[0].0, "CPU");
    assert_eq!(shares[0].1, None);
    assert_eq!(shares[1].1.as_deref(), Some(one.endpoint().as_str()));
    assert_eq!(shares[2].1.as_deref(), Some(two.endpoint().as_str()));
    assert!(shares.iter().all(|share| share.2 >= 5), "{report}");
    assert_eq!(shares.iter().map(|share| share.2).sum::<u64>(), N_LAYER);
    assert_eq!(shares.iter().filter(|share| share.3).count(), 1);
    assert!(
        shares[2].3,
        "the last worker holds the output layer: {report}"
    );
    // Layers run in order: CPU first, then each worker's in --rpc order.
    let ranges: Vec<(u64, u64)> = report["split"]["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|share| {
            (
                share["first_layer"].as_u64().unwrap_or(u64::MAX),
                share["last_layer"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    assert_eq!(ranges[0].0, 0, "{report}");
    assert_eq!(ranges[1].0, ranges[0].1 + 1, "{report}");
    assert_eq!(ranges[2].0, ranges[1].1 + 1, "{report}");
    assert_eq!(ranges[2].1, N_LAYER - 1, "{report}");
    assert!(
        stderr(&split).contains("split: CPU: layers 0-"),
        "{}",
        stderr(&split)
    );

    // OLM_RPC is --rpc's default; --tensor-split sets the weights.
    let mut command = env.olm();
    command
        .env("OLM_RPC", &list)
        .args(["run", smollm2().to_str().expect("utf-8")])
        .args(["--temperature", "0", "-n", "24", "--no-cache", "--json"])
        .args(["--tensor-split", "0,1,3"])
        .arg("Name three colors of the rainbow.");
    let weighted = run(&mut command);
    assert_answered(&weighted, &[&one, &two]);
    let report = json(&weighted);
    assert_eq!(report["text"], expected["text"]);
    let shares = crate::rpc::shares(&report);
    assert_eq!(shares[0].2, 0, "{report}");
    // 31 layers with the output, a quarter and three quarters.
    assert_eq!((shares[1].2, shares[2].2), (8, 22), "{report}");
}

#[test]
fn the_split_shown_is_the_split_llama_cpp_made() {
    let env = TestEnv::new();
    let one = Worker::start(&env);
    let two = Worker::start(&env);
    let list = format!("{},{}", one.endpoint(), two.endpoint());
    let output = {
        let mut command = env.olm();
        command
            .env("OLM_LOG", "debug")
            .args(["run", smollm2().to_str().expect("utf-8")])
            .args([
                "-n",
                "1",
                "--no-cache",
                "--json",
                "--verbose",
                "--rpc",
                &list,
            ])
            .args(["--tensor-split", "2,1,1"])
            .arg("hi");
        run(&mut command)
    };
    assert_answered(&output, &[&one, &two]);
    let report = json(&output);
    // llama.cpp's own log: "load_tensors: layer  12 assigned to device RPC0, is_swa = 0".
    let mut logged = std::collections::BTreeMap::new();
    for line in stderr(&output).lines() {
        let Some(rest) = line.split("layer ").nth(1) else {
            continue;
        };
        let Some((layer, device)) = rest.split_once(" assigned to device ") else {
            continue;
        };
        let (Ok(layer), Some(device)) = (layer.trim().parse::<u64>(), device.split(',').next())
        else {
            continue;
        };
        logged.insert(layer, device.trim().to_owned());
    }
    assert_eq!(logged.len() as u64, N_LAYER + 1, "{}", stderr(&output));
    for share in report["split"]["devices"].as_array().into_iter().flatten() {
        let device = share["device"].as_str().unwrap_or_default();
        let held: Vec<u64> = logged
            .iter()
            .filter(|(layer, name)| **layer < N_LAYER && name.as_str() == device)
            .map(|(layer, _)| *layer)
            .collect();
        assert_eq!(
            held.len() as u64,
            share["layers"].as_u64().unwrap_or(0),
            "{device}: {report}"
        );
        assert_eq!(
            held.first().copied(),
            share["first_layer"].as_u64(),
            "{device}"
        );
        assert_eq!(
            held.last().copied(),
            share["last_layer"].as_u64(),
            "{device}"
        );
        assert_eq!(
            logged.get(&N_LAYER).map(String::as_str) == Some(device),
            share["output"].as_bool().unwrap_or(false),
            "{device}"
        );
    }
}

#[test]
fn a_worker_that_dies_mid_answer_ends_it_with_an_error_not_a_hang() {
    let env = TestEnv::new();
    let mut worker = Worker::start(&env);
    for (kill, timeout) in [(libc::SIGKILL, "300"), (libc::SIGSTOP, "3")] {
        let server = worker.server_pid();
        let mut client = counting_run(&env, &worker.endpoint(), 4000)
            .env("OLM_RPC_TIMEOUT", timeout)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn olm run");
        // Once the answer streams, the worker goes.
        let mut out = client.stdout.take().expect("piped");
        let mut first = [0u8; 1];
        out.read_exact(&mut first).expect("the answer starts");
        signal(server, kill);
        let stopped = Instant::now();
        let status = loop {
            if let Some(status) = client.try_wait().expect("wait") {
                break status;
            }
            assert!(
                stopped.elapsed() < Duration::from_secs(60),
                "olm run still waits {:?} after the worker got signal {kill}",
                stopped.elapsed()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        client
            .stderr
            .take()
            .expect("piped")
            .read_to_string(&mut err)
            .expect("stderr");
        assert_eq!(status.code(), Some(4), "signal {kill}: {err}");
        assert!(err.contains("error: lost an RPC worker"), "{err}");
        assert!(err.contains(&worker.endpoint()), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        if kill == libc::SIGSTOP {
            // Ended by the answer timeout (3 s), well before a default one.
            assert!(
                stopped.elapsed() < Duration::from_secs(30),
                "{:?}",
                stopped.elapsed()
            );
            signal(server, libc::SIGKILL);
            signal(server, libc::SIGCONT);
        }
        // The worker starts its server again and serves the next client.
        let again = Instant::now();
        while worker.server_pid() == server {
            assert!(
                again.elapsed() < Duration::from_secs(20),
                "{}",
                worker.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(worker.is_running());
        let next = answer(&env, &["--rpc", &worker.endpoint()]);
        assert_answered(&next, &[&worker]);
        assert!(
            worker.stderr().contains("starting it again"),
            "{}",
            worker.stderr()
        );
    }
}

/// Stopping and continuing the client while it waits on its worker (Ctrl-Z
/// then `fg`, a debugger) loses nothing: the answer is the one an
/// undisturbed run gives.
#[test]
fn a_client_stopped_and_continued_keeps_its_worker() {
    let env = TestEnv::new();
    let worker = Worker::start(&env);
    let command = || counting_run(&env, &worker.endpoint(), 600);
    let undisturbed = run(&mut command());
    assert_answered(&undisturbed, &[&worker]);
    let mut client = command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn olm run");
    let mut out = client.stdout.take().expect("piped");
    let mut first = [0u8; 1];
    out.read_exact(&mut first).expect("the answer starts");
    let pid = client.id() as i32;
    const STOPS: usize = 8;
    let mut stops = 0;
    while stops < STOPS && matches!(client.try_wait(), Ok(None)) {
        signal(pid, libc::SIGSTOP);
        std::thread::sleep(Duration::from_millis(150));
        signal(pid, libc::SIGCONT);
        stops += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut rest = Vec::new();
    out.read_to_end(&mut rest).expect("stdout");
    let output = client.wait_with_output().expect("wait");
    let mut text = first.to_vec();
    text.extend(rest);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stops, STOPS, "the answer ended too soon: make it longer");
    assert_eq!(String::from_utf8_lossy(&text), stdout(&undisturbed));
}

#[test]
fn a_worker_that_cannot_be_used_is_refused_before_loading() {
    let env = TestEnv::new();
    // Nothing listens there: exit 4 at once, naming it.
    let closed = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let output = answer(&env, &["--rpc", &closed]);
    assert_exit(&output, 4);
    assert!(started.elapsed() < Duration::from_secs(15));
    let err = stderr(&output);
    assert!(
        err.contains(&format!("cannot reach the RPC worker at {closed}")),
        "{err}"
    );
    assert!(err.contains("connection refused"), "{err}");

    // Fakes on 127.0.0.1 that answer the handshake wrongly.
    let other_version = fake_worker(|stream| {
        read_hello(stream);
        let mut reply = 28u64.to_le_bytes().to_vec();
        reply.extend([6, 1, 0, 0]);
        reply.extend([0u8; 24]);
        let _ = stream.write_all(&reply);
    });
    let output = answer(&env, &["--rpc", &other_version]);
    assert_exit(&output, 1);
    let err = stderr(&output);
    assert!(
        err.contains(&format!(
            "the RPC worker at {other_version} speaks RPC protocol 6.1.0, this olm speaks {PROTOCOL}"
        )),
        "{err}"
    );
    assert!(err.contains("olm worker --version"), "{err}");

    // An older server closes the connection on a handshake it does not know.
    let older = fake_worker(|stream| {
        read_hello(stream);
    });
    let output = answer(&env, &["--rpc", &older]);
    assert_exit(&output, 4);
    assert!(
        stderr(&output).contains("another protocol version"),
        "{}",
        stderr(&output)
    );

    // Accepts, never answers (a worker busy with another client, or stopped).
    let silent = fake_worker(|stream| {
        read_hello(stream);
        std::thread::sleep(Duration::from_secs(30));
    });
    let started = Instant::now();
    let output = answer(&env, &["--rpc", &silent]);
    assert_exit(&output, 4);
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    assert!(
        stderr(&output).contains("did not answer within 10 s"),
        "{}",
        stderr(&output)
    );

    // Addresses are checked before anything connects (exit 2).
    for bad in ["127.0.0.1", "[::1]:50052", "127.0.0.1:0", "a b:1"] {
        let output = answer(&env, &["--rpc", bad]);
        assert_exit(&output, 2);
        assert!(
            stderr(&output).contains("invalid RPC worker"),
            "{}",
            stderr(&output)
        );
    }
    let output = answer(&env, &["--tensor-split", "1,1"]);
    assert_exit(&output, 2);
    assert!(stderr(&output).contains("--tensor-split gives 2 weights for 1 devices (CPU)"));
}

/// A one-connection fake worker on 127.0.0.1 running `serve`; its address.
fn fake_worker(serve: impl FnOnce(&mut TcpStream) + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake worker");
    let address = listener.local_addr().expect("address").to_string();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            serve(&mut stream);
        }
    });
    address
}

fn read_hello(stream: &mut TcpStream) {
    let mut hello = [0u8; 1 + 8 + 24];
    stream.read_exact(&mut hello).expect("a HELLO request");
    assert_eq!(hello[0], 14, "the HELLO command");
}

#[test]
fn a_worker_listens_on_loopback_unless_told_otherwise() {
    let env = TestEnv::new();
    for bind in ["0.0.0.0:50052", "10.1.2.3:50052"] {
        let output = run(env.olm().args(["worker", "--bind", bind]));
        assert_exit(&output, 2);
        let err = stderr(&output);
        assert!(
            err.contains(&format!("refusing to listen on {bind}")),
            "{err}"
        );
        assert!(err.contains("no authentication"), "{err}");
        assert!(err.contains("--allow-unauthenticated-network"), "{err}");
    }
    for bind in ["[::1]:50052", "127.0.0.1", "localhost:1"] {
        let output = run(env.olm().args(["worker", "--bind", bind]));
        assert_exit(&output, 2);
    }
    let help = run(env.olm().args(["worker", "--help"]));
    assert_exit(&help, 0);
    let help = stdout(&help);
    assert!(help.contains("no authentication and no"), "{help}");

    let version = run(env.olm().args(["worker", "--version"]));
    assert_exit(&version, 0);
    assert!(
        stdout(&version).contains(&format!("RPC protocol {PROTOCOL}")),
        "{}",
        stdout(&version)
    );
    let doctor = run(env.olm().args(["doctor", "--json"]));
    let report: Value = serde_json::from_str(&stdout(&doctor)).expect("doctor JSON");
    assert_eq!(report["rpc"]["protocol"], PROTOCOL);
    assert_eq!(report["rpc"]["available"], true);

    // The port is taken: one clear line, not a restart loop.
    let worker = Worker::start(&env);
    let output = run(env.olm().args(["worker", "--bind", &worker.endpoint()]));
    assert_exit(&output, 1);
    assert!(
        stderr(&output).contains("cannot listen on"),
        "{}",
        stderr(&output)
    );
    // What the worker says about itself.
    let said = worker.stderr();
    assert!(said.contains(&format!("RPC protocol {PROTOCOL}")), "{said}");

    // SIGINT or SIGTERM: the worker stops its server and exits 0.
    for stop in [libc::SIGINT, libc::SIGTERM] {
        let mut worker = Worker::start(&env);
        let server = worker.server_pid();
        signal(worker.child.id() as i32, stop);
        let started = Instant::now();
        let status = loop {
            if let Some(status) = worker.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "signal {stop}: still running"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(0), "signal {stop}: {}", worker.stderr());
        assert!(
            !std::path::Path::new(&format!("/proc/{server}")).exists(),
            "signal {stop}: the RPC server {server} outlived its worker"
        );
    }
}

/// A small deterministic generator (xorshift64*), so a failure can be replayed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn bytes(&mut self, count: usize) -> Vec<u8> {
        (0..count).map(|_| self.next() as u8).collect()
    }
}

/// Frames of random content: no handshake, a handshake then random
/// commands with sizes that match and sizes that lie, and plain noise.
fn garbage(random: &mut Random) -> Vec<u8> {
    let mut frame = Vec::new();
    match random.below(4) {
        0 => {
            let length = random.below(512) as usize;
            frame = random.bytes(length);
        }
        _ => {
            frame.push(14);
            frame.extend(24u64.to_le_bytes());
            frame.extend([0u8; 24]);
            for _ in 0..1 + random.below(6) {
                let command = random.below(20) as u8;
                let length = random.below(2048) as usize;
                let payload = random.bytes(length);
                let size = match random.below(4) {
                    0 => random.next() >> random.below(64),
                    _ => payload.len() as u64,
                };
                frame.push(command);
                frame.extend(size.to_le_bytes());
                frame.extend(payload);
            }
        }
    }
    frame
}

#[test]
fn a_worker_fed_garbage_stays_up_and_then_serves_a_real_client() {
    const FRAMES: usize = 3000;
    const TIME: Duration = Duration::from_secs(90);
    let env = TestEnv::new();
    let mut worker = Worker::start_with(&env, &["--mem", "1G"]);
    let mut random = Random(0x0bad_f00d_dead_beef);
    let started = Instant::now();
    let mut sent = 0;
    let mut refused = 0;
    while sent < FRAMES && started.elapsed() < TIME {
        let frame = garbage(&mut random);
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", worker.port)) else {
            // Between a stop and its restart nothing listens.
            refused += 1;
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let _ = stream.write_all(&frame);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut reply = [0u8; 256];
        let _ = stream.read(&mut reply);
        sent += 1;
    }
    assert!(
        sent >= 500,
        "only {sent} frames in {TIME:?} ({refused} refused)"
    );
    assert!(worker.is_running(), "olm worker ended: {}", worker.stderr());
    let restarts = worker.stderr().matches("starting it again").count();
    eprintln!(
        "{sent} garbage frames in {:?}: {restarts} restarts, {refused} refused",
        started.elapsed()
    );
    // The worker still serves a real client, with the same answer.
    let single = answer(&env, &[]);
    let split = answer(&env, &["--rpc", &worker.endpoint()]);
    assert_answered(&split, &[&worker]);
    let report = json(&split);
    assert_eq!(report["text"], json(&single)["text"]);
    // --mem 1G: the worker reports that much memory, and the split weighs it so.
    let worker_share = &report["split"]["devices"][1];
    assert_eq!(worker_share["endpoint"], worker.endpoint().as_str());
    assert_eq!(
        worker_share["weight"].as_f64(),
        Some((1u64 << 30) as f64),
        "{report}"
    );
    assert!(
        worker
            .stderr()
            .contains("(1.1 GB reported, at most 1.1 GB)"),
        "{}",
        worker.stderr()
    );
}

#[test]
fn a_split_across_network_namespaces_answers_as_one_process_does() {
    let probe = run(std::process::Command::new("unshare").args(["-r", "-n", "true"]));
    if !probe.status.success() {
        skip_or_fail(
            "netns",
            &format!("user namespaces refused: {}", stderr(&probe)),
        );
        return;
    }
    let env = TestEnv::new();
    let single = answer(&env, &[]);
    assert_exit(&single, 0);
    let olm = env!("CARGO_BIN_EXE_olm");
    let model = smollm2();
    // This namespace holds the client; each worker gets one of its own, joined
    // to it by a veth pair (10.77.N.1 here, 10.77.N.2 there).
    let script = format!(
        r#"set -eu
ip link set lo up
pids=""
trap 'kill $pids 2>/dev/null || true' EXIT
for n in 1 2; do
  unshare -n sleep 600 &
  holder=$!
  pids="$pids $holder"
  sleep 0.2
  ip link add c$n type veth peer name w$n netns $holder
  ip addr add 10.77.$n.1/24 dev c$n
  ip link set c$n up
  nsenter -t $holder -n sh -c "ip link set lo up; ip addr add 10.77.$n.2/24 dev w$n; ip link set w$n up"
  nsenter -t $holder -n {olm} worker --bind 10.77.$n.2:50052 --allow-unauthenticated-network 2>worker$n.log &
  pids="$pids $!"
done
for n in 1 2; do
  i=0
  until grep -q "listening on 10.77.$n.2:50052" worker$n.log; do
    i=$((i+1)); [ $i -lt 600 ] || {{ cat worker$n.log >&2; exit 9; }}
    sleep 0.1
  done
  grep -q "no authentication" worker$n.log
done
{olm} run {model} --temperature 0 -n 24 --no-cache --json \
  --rpc 10.77.1.2:50052,10.77.2.2:50052 "Name three colors of the rainbow."
cat /proc/net/dev >&2
"#,
        olm = olm,
        model = model.display(),
    );
    let mut command = std::process::Command::new("unshare");
    command
        .args(["-r", "-n", "sh", "-c", &script])
        .current_dir(env.path());
    env.olm_env(&mut command);
    let output = run(&mut command);
    assert_exit(&output, 0);
    let report = json(&output);
    assert_eq!(report["text"], json(&single)["text"]);
    let shares = shares(&report);
    assert_eq!(shares[1].1.as_deref(), Some("10.77.1.2:50052"));
    assert_eq!(shares[2].1.as_deref(), Some("10.77.2.2:50052"));
    // The weights crossed the veth pairs: megabytes sent on each.
    let err = stderr(&output);
    for interface in ["c1", "c2"] {
        let line = err
            .lines()
            .find(|line| line.trim_start().starts_with(&format!("{interface}:")))
            .unwrap_or_else(|| panic!("{interface} in /proc/net/dev:\n{err}"));
        let fields: Vec<u64> = line
            .split_once(':')
            .map(|(_, rest)| {
                rest.split_whitespace()
                    .filter_map(|f| f.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let sent = fields.get(8).copied().unwrap_or(0);
        assert!(sent > 10 << 20, "{interface} sent {sent} bytes:\n{err}");
    }
}

#[test]
fn serve_splits_its_models_too_and_loads_again_after_a_worker_dies() {
    let env = TestEnv::new();
    let worker = Worker::start(&env);
    let server = crate::common::server::Server::start(&["--rpc", &worker.endpoint()]);
    let request = serde_json::json!({
        "model": crate::common::server::MODEL,
        "messages": [{"role": "user", "content": "Name three colors of the rainbow."}],
        "temperature": 0,
        "max_tokens": 24,
    });
    let first = server.post("/v1/chat/completions", &request);
    assert_eq!(first.status, 200, "{}", first.body);
    let ps = server.get("/api/ps");
    assert!(ps.body.contains(&worker.endpoint()), "{}", ps.body);
    // The worker's server dies: the next request fails with an error, the
    // one after loads the model again (the worker restarted its server).
    signal(worker.server_pid(), libc::SIGKILL);
    let failed = server.post("/v1/chat/completions", &request);
    assert!(failed.status >= 500, "{}: {}", failed.status, failed.body);
    let deadline = Instant::now() + Duration::from_secs(60);
    let again = loop {
        let reply = server.post("/v1/chat/completions", &request);
        if reply.status == 200 || Instant::now() > deadline {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(again.status, 200, "{}", again.body);
    let text = |reply: &crate::common::server::Reply| -> Value {
        serde_json::from_str::<Value>(&reply.body).expect("JSON")["choices"][0]["message"]
            ["content"]
            .clone()
    };
    assert_eq!(text(&again), text(&first));
}

/// The sandbox with `--rpc` (issue 15's, widened by exactly what the workers
/// need): the kernel lets olm connect to the workers' ports and to no other
/// (Landlock's rules name ports, not addresses), send no datagram and bind
/// nothing; and `olm run --rpc`, traced, installs it and connects to its
/// worker only.
#[test]
fn with_rpc_the_sandbox_allows_the_workers_ports_only() {
    const PERMISSION_DENIED: i64 = 13;
    let env = TestEnv::new();
    let allowed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let other = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = allowed.local_addr().expect("address").port().to_string();
    let probe = |target: &TcpListener| -> Value {
        let target = target.local_addr().expect("address").to_string();
        let output = run(env
            .olm()
            .args(["__net-probe", &target, "--rpc-port", &port]));
        assert_exit(&output, 0);
        serde_json::from_str(&stdout(&output)).expect("probe prints JSON")
    };
    let reached = probe(&allowed);
    assert_eq!(reached["tcp_connect"]["ok"], true, "{reached}");
    let refused = probe(&other);
    assert_eq!(refused["tcp_connect"]["ok"], false, "{refused}");
    assert_eq!(
        refused["tcp_connect"]["errno"].as_i64(),
        Some(PERMISSION_DENIED)
    );
    for report in [&reached, &refused] {
        for attempt in ["udp_send", "tcp_bind"] {
            assert_eq!(report[attempt]["ok"], false, "{attempt}: {report}");
            assert_eq!(
                report[attempt]["errno"].as_i64(),
                Some(PERMISSION_DENIED),
                "{attempt}: {report}"
            );
        }
    }

    let strace = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "true"])
        .output();
    if !strace.as_ref().is_ok_and(|output| output.status.success()) {
        skip_or_fail("strace", &format!("strace cannot trace here: {strace:?}"));
        return;
    }
    let worker = Worker::start(&env);
    let trace = env.path().join("trace-rpc.txt");
    let mut command = std::process::Command::new("strace");
    env.olm_env(&mut command);
    command
        .args(["-f", "-qq", "-s", "256", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=connect,sendto,sendmsg,landlock_restrict_self,seccomp",
        ])
        .arg(env!("CARGO_BIN_EXE_olm"))
        .args([
            "run",
            smollm2().to_str().expect("utf-8"),
            "-n",
            "4",
            "--no-cache",
        ])
        .args(["--temperature", "0", "--rpc", &worker.endpoint(), "Say hi"]);
    let output = run(&mut command);
    assert_answered(&output, &[&worker]);
    let trace = std::fs::read_to_string(&trace).expect("read the trace");
    for call in ["landlock_restrict_self(", "seccomp(SECCOMP_SET_MODE_FILTER"] {
        assert!(
            trace
                .lines()
                .any(|line| line.contains(call) && line.trim_end().ends_with("= 0")),
            "{call} not installed:\n{trace}"
        );
    }
    let inet: Vec<&str> = trace
        .lines()
        .filter(|line| line.contains("AF_INET"))
        .collect();
    let to_worker = format!(
        "sin_port=htons({}), sin_addr=inet_addr(\"127.0.0.1\")",
        worker.port
    );
    assert!(!inet.is_empty(), "no connection to the worker:\n{trace}");
    assert!(
        inet.iter().all(|line| line.contains(&to_worker)),
        "connections other than to {}: {inet:#?}",
        worker.endpoint()
    );
}
